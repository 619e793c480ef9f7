package engine_test

import (
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"labctl/lab/bgp"
	"labctl/lab/internal/labtest"
	"labctl/lab/netns"
	"labctl/lab/plan"
	"labctl/lab/topology"
)

// `labctl link down` is an administrative down, and the kernel drops every
// route through the interface (and its IPv6 addresses) with it; `link up`
// must give them back, and `status` must see what is missing.

// statusJSON is the part of `labctl status --format json` these tests read.
type statusJSON struct {
	Name    string `json:"name"`
	Healthy bool   `json:"healthy"`
	Drift   []struct {
		Node string `json:"node"`
		Kind string `json:"kind"`
		Item string `json:"item"`
	} `json:"drift"`
	Cut [][2]string `json:"cut"`
}

func labctlStatus(t *testing.T, lab string) statusJSON {
	t.Helper()
	out, err := exec.Command(labctlBin, "status", "--format", "json").Output()
	if err != nil {
		t.Fatalf("labctl status: %v\n%s", err, out)
	}
	var all []statusJSON
	if err := json.Unmarshal(out, &all); err != nil {
		t.Fatalf("labctl status: %v\n%s", err, out)
	}
	for _, s := range all {
		if s.Name == lab {
			return s
		}
	}
	t.Fatalf("labctl status does not list %s:\n%s", lab, out)
	return statusJSON{}
}

func labctlLink(t *testing.T, lab string, args ...string) {
	t.Helper()
	if out, err := exec.Command(labctlBin, append([]string{"link", "--lab", lab}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("labctl link %v: %v\n%s", args, err, out)
	}
}

func nsHandle(t *testing.T, lab, node string) *netlink.Handle {
	t.Helper()
	h, err := netns.Handle(topology.Namespace(lab, node))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// labRoutes is a node's labctl routes (proto 76) as the kernel lists them.
func labRoutes(t *testing.T, lab, node string) []netlink.Route {
	t.Helper()
	rs, err := nsHandle(t, lab, node).RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: plan.RouteProto}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func routeStrings(rs []netlink.Route) []string {
	var out []string
	for _, r := range rs {
		dst := "default"
		if !isDefault(r) {
			dst = r.Dst.String()
		}
		out = append(out, dst+" via "+r.Gw.String())
	}
	slices.Sort(out)
	return out
}

func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

func linkUp(t *testing.T, lab, node, iface string) bool {
	t.Helper()
	l, err := nsHandle(t, lab, node).LinkByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Flags&net.FlagUp != 0
}

func addrsOn(t *testing.T, lab, node, iface string) []string {
	t.Helper()
	h := nsHandle(t, lab, node)
	l, err := h.LinkByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	as, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range as {
		if !a.IP.IsLinkLocalUnicast() {
			out = append(out, a.IPNet.String())
		}
	}
	slices.Sort(out)
	return out
}

func TestLinkDownUpRestoresRoutes(t *testing.T) {
	labtest.NeedRoot(t, whyRoot)
	lab := labtest.LabName("lk")
	tp := sample(t, lab, "10.0.2.10/24")
	upForTest(t, tp)

	h1Routes, h1Addrs := routeStrings(labRoutes(t, lab, "h1")), addrsOn(t, lab, "h1", "eth0")
	h2Routes := routeStrings(labRoutes(t, lab, "h2"))
	if len(h1Routes) != 2 || len(h2Routes) != 2 || len(h1Addrs) != 2 {
		t.Fatalf("after up: h1 routes %v addresses %v, h2 routes %v", h1Routes, h1Addrs, h2Routes)
	}
	if s := labctlStatus(t, lab); !s.Healthy || len(s.Drift) != 0 {
		t.Fatalf("status after up: %+v", s)
	}

	// The cut: the kernel takes h1's routes (and its IPv6 address) away.
	// That is what a cut means, so status lists the cut, not drift.
	labctlLink(t, lab, "down", "h1", "s1")
	if linkUp(t, lab, "h1", "eth0") || linkUp(t, lab, "s1", "p1") {
		t.Fatal("link down h1 s1: an end is still up")
	}
	if rs := labRoutes(t, lab, "h1"); len(rs) != 0 {
		t.Logf("the kernel kept h1's routes over a down link: %v", routeStrings(rs))
	}
	s := labctlStatus(t, lab)
	if !slices.Equal(s.Cut, [][2]string{{"h1:eth0", "s1:p1"}}) || len(s.Drift) != 0 {
		t.Errorf("status while h1 ── s1 is cut: cut %v, drift %+v; want the cut and no drift", s.Cut, s.Drift)
	}

	// A second cut, mended while the first stays: the reconvergence of h2
	// gives h2 its routes back and leaves h1 ── s1 down.
	labctlLink(t, lab, "down", "r1", "h2")
	labctlLink(t, lab, "up", "r1", "h2")
	if got := routeStrings(labRoutes(t, lab, "h2")); !slices.Equal(got, h2Routes) {
		t.Errorf("h2's routes after link down/up r1 h2: %v, want %v", got, h2Routes)
	}
	if linkUp(t, lab, "h1", "eth0") || linkUp(t, lab, "s1", "p1") {
		t.Error("link up r1 h2 brought the cut link h1 ── s1 up")
	}

	labctlLink(t, lab, "up", "h1", "s1")
	if !linkUp(t, lab, "h1", "eth0") || !linkUp(t, lab, "s1", "p1") {
		t.Fatal("link up h1 s1: an end is still down")
	}
	if got := routeStrings(labRoutes(t, lab, "h1")); !slices.Equal(got, h1Routes) {
		t.Errorf("h1's routes after link down/up h1 s1: %v, want %v", got, h1Routes)
	}
	if got := addrsOn(t, lab, "h1", "eth0"); !slices.Equal(got, h1Addrs) {
		t.Errorf("h1's addresses after link down/up h1 s1: %v, want %v", got, h1Addrs)
	}
	if s := labctlStatus(t, lab); !s.Healthy || len(s.Drift) != 0 || len(s.Cut) != 0 {
		t.Errorf("status after link up: %+v, want healthy with no drift and no cut", s)
	}
	if out, err := run(lab, "h1", "ping", "-c1", "-W2", "10.0.2.10"); err != nil {
		t.Errorf("h1 → h2 after link up: %v\n%s", err, out)
	}

	// A route deleted by hand is drift, named; up puts it back.
	for _, r := range labRoutes(t, lab, "h2") {
		if isDefault(r) && r.Gw.To4() != nil {
			if err := nsHandle(t, lab, "h2").RouteDel(&r); err != nil {
				t.Fatal(err)
			}
		}
	}
	s = labctlStatus(t, lab)
	if s.Healthy || len(s.Drift) != 1 || s.Drift[0].Node != "h2" || s.Drift[0].Kind != "route missing" || s.Drift[0].Item != "default via 10.0.2.1" {
		t.Errorf("status with h2's default route deleted: healthy %v, drift %+v; want one route missing (h2: default via 10.0.2.1)", s.Healthy, s.Drift)
	}
	// `up` mends every cut and puts the route back.
	labctlLink(t, lab, "down", "h1", "s1")
	if _, err := newEngine(false).Up(context.Background(), tp); err != nil {
		t.Fatal(err)
	}
	if got := routeStrings(labRoutes(t, lab, "h2")); !slices.Equal(got, h2Routes) {
		t.Errorf("h2's routes after up: %v, want %v", got, h2Routes)
	}
	if !linkUp(t, lab, "h1", "eth0") || !slices.Equal(routeStrings(labRoutes(t, lab, "h1")), h1Routes) {
		t.Error("up left the cut link h1 ── s1 down or without its routes")
	}
	if s := labctlStatus(t, lab); !s.Healthy || len(s.Drift) != 0 || len(s.Cut) != 0 {
		t.Errorf("status after up: %+v, want healthy with no drift and no cut", s)
	}
}

// On double11: a subscriber whose link flapped orders again, and a VIP
// whose HAProxy VM's port flapped answers again.
func TestLinkDownUpDouble11(t *testing.T) {
	labtest.NeedRoot(t, whyRoot)
	lab := labtest.LabName("lkd")
	upForTest(t, labTopology(t, "double11", lab))
	if _, _, err := bgp.Wait(context.Background(), lab, time.Minute); err != nil {
		t.Fatal(err)
	}

	labctlLink(t, lab, "down", "ue1", "cgnat")
	labctlLink(t, lab, "up", "ue1", "cgnat")
	if got := routeStrings(labRoutes(t, lab, "ue1")); !slices.Equal(got, []string{"default via 100.64.0.1"}) {
		t.Errorf("ue1's routes after link down/up ue1 cgnat: %v", got)
	}
	if r := labctlOrder(t, lab, "--from", "ue1"); r.Status != 201 || r.Order == nil {
		t.Errorf("order from ue1 after link down/up ue1 cgnat: HTTP %d %+v", r.Status, r.Error)
	}

	labctlLink(t, lab, "down", "east-slb1", "east-a")
	labctlLink(t, lab, "up", "east-slb1", "east-a")
	err := netns.Do(topology.Namespace(lab, "ue1"), func() error {
		c, err := net.DialTimeout("tcp", "203.0.113.11:443", 3*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		t.Errorf("ue1 → VIP 203.0.113.11:443 after link down/up east-slb1 east-a: %v", err)
	}
	if s := labctlStatus(t, lab); !s.Healthy || len(s.Drift) != 0 {
		t.Errorf("status after the flaps: %+v", s)
	}
}
