package bgp

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"labctl/lab/internal/labtest"
	"labctl/lab/netns"
)

// TestNetlinkKernel drives the netlink Kernel inside a scratch namespace
// (never the root one): resolution, install, FIB, link events, flush.
func TestNetlinkKernel(t *testing.T) {
	labtest.NeedRoot(t)
	name := labtest.TempName("bgptest")
	if err := netns.Create(name); err != nil {
		t.Skipf("cannot create a namespace: %v", err)
	}
	t.Cleanup(func() { netns.Delete(name) })
	in := func(fn func() error) {
		t.Helper()
		if err := netns.Do(name, fn); err != nil {
			t.Fatal(err)
		}
	}
	k := NetlinkKernel()
	var eth int
	in(func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth1"}, PeerName: "peer1"}); err != nil {
			return err
		}
		p, err := netlink.LinkByName("peer1")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(p); err != nil {
			return err
		}
		l, err := netlink.LinkByName("eth1")
		if err != nil {
			return err
		}
		eth = l.Attrs().Index
		a, _ := netlink.ParseAddr("10.0.1.1/24")
		if err := netlink.AddrAdd(l, a); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		_, dst, _ := net.ParseCIDR("10.9.0.0/16")
		return netlink.RouteAdd(&netlink.Route{Dst: dst, Gw: net.ParseIP("10.0.1.254"), LinkIndex: eth})
	})

	in(func() error {
		for _, c := range []struct {
			nh, gw string
			ok     bool
		}{
			{"10.0.1.7", "", true},           // connected: the next hop itself
			{"10.9.3.3", "10.0.1.254", true}, // recursive: the static route's gateway
			{"172.16.0.1", "", false},        // no route
			{"10.0.1.1", "", false},          // our own address
		} {
			gw, dev, ok := k.Resolve(ip(c.nh))
			if ok != c.ok || ok && (dev != eth || gw.String() != c.gw && !(c.gw == "" && !gw.IsValid())) {
				return fmt.Errorf("Resolve(%s) = %v, %d, %v; want %q, %d, %v", c.nh, gw, dev, ok, c.gw, eth, c.ok)
			}
		}
		return newFIB(k, testLog(t)).reconcile(want("192.0.2.0/24", "10.9.3.3", "198.51.100.0/24", "10.0.1.7"))
	})
	rs, err := FIB(name)
	if err != nil {
		t.Fatal(err)
	}
	exp := []Route{
		{Prefix: "192.0.2.0/24", Via: "10.0.1.254", Dev: "eth1", Metric: Metric},
		{Prefix: "198.51.100.0/24", Via: "10.0.1.7", Dev: "eth1", Metric: Metric},
	}
	if !reflect.DeepEqual(rs, exp) {
		t.Fatalf("FIB = %+v, want %+v", rs, exp)
	}

	// A link going down is reported, and Links sees it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var events <-chan struct{}
	in(func() (err error) { events, err = k.Watch(ctx); return })
	in(func() error { return netlink.LinkSetDown(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: eth}}) })
	select {
	case <-events:
	case <-time.After(5 * time.Second):
		t.Fatal("no event for a link going down")
	}
	in(func() error {
		ls, err := k.Links()
		if err != nil {
			return err
		}
		for _, l := range ls {
			if l.Name == "eth1" && (l.Up || len(l.Addrs) != 1 || l.Addrs[0] != pfx("10.0.1.1/24")) {
				return fmt.Errorf("eth1 after down: %+v", l)
			}
		}
		return nil
	})

	// Flush removes proto bgp only.
	in(func() error {
		if err := netlink.LinkSetUp(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: eth}}); err != nil {
			return err
		}
		if err := k.Replace(KernelRoute{Prefix: pfx("203.0.113.0/24"), Via: ip("10.0.1.9"), Dev: eth, Protocol: Protocol, Metric: Metric}); err != nil {
			return err
		}
		_, dst, _ := net.ParseCIDR("10.9.0.0/16")
		if err := netlink.RouteReplace(&netlink.Route{Dst: dst, Gw: net.ParseIP("10.0.1.254"), LinkIndex: eth}); err != nil {
			return err
		}
		return newFIB(k, testLog(t)).flush()
	})
	if rs, err := FIB(name); err != nil || len(rs) != 0 {
		t.Fatalf("FIB after flush = %+v, %v", rs, err)
	}
	in(func() error {
		rs, err := k.Routes()
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Prefix == pfx("10.9.0.0/16") {
				return nil
			}
		}
		return fmt.Errorf("flush removed the static route: %v", rs)
	})
}
