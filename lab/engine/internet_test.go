package engine_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"labctl/lab/bgp"
	"labctl/lab/engine"
	"labctl/lab/internal/labtest"
	"labctl/lab/packets"
	"labctl/lab/topology"
)

// The internet end to end with real BGP sessions: two carriers and a
// transit AS learn the multihomed cloud's prefix, subscribers behind CGNAT
// reach it, and cutting one carrier's link moves the traffic to the other.
// The lab is topologies/internet.yaml under another name.

// traceroute returns the nodes a UDP traceroute from node to dst passes,
// by the address each hop answered from.
func traceroute(t *testing.T, lab, node, dst string, who map[netip.Addr]string) []string {
	t.Helper()
	out := mustRun(t, lab, node, "traceroute", "-n", "-q", "1", "-w", "2", "-m", "12", dst)
	var hops []string
	for _, l := range strings.Split(out, "\n")[1:] {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		if a, err := netip.ParseAddr(f[1]); err == nil && who[a] != "" {
			hops = append(hops, who[a])
		} else {
			hops = append(hops, f[1])
		}
	}
	return hops
}

// fibVia returns the next hop a node's kernel uses for prefix by BGP ("" if
// it has no such route).
func fibVia(t *testing.T, lab, node, prefix string) string {
	t.Helper()
	rs, err := bgp.FIB(topology.Namespace(lab, node))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Prefix == prefix {
			return r.Via
		}
	}
	return ""
}

func mac(t *testing.T, lab, node, iface string) string {
	return strings.TrimSpace(mustRun(t, lab, node, "cat", "/sys/class/net/"+iface+"/address"))
}

func TestInternet(t *testing.T) {
	labtest.NeedRoot(t, whyRoot)
	labtest.RequireTool(t, "iptables", "tcpdump", "curl", "ping", "traceroute", "conntrack")
	before := rootSnapshot(t)
	lab := labtest.LabName("inet")
	tp := labTopology(t, "internet", lab)
	who := tp.IPv4Owners()
	e, downed := upForTest(t, tp)
	ctx := context.Background()
	sp, took, err := bgp.Wait(ctx, lab, time.Minute)
	if err != nil {
		for _, s := range sp {
			t.Logf("%s: %d/%d established, %d best learned, %d in kernel, %s", s.Node, s.Established(), len(s.Neighbors), s.Learned(), len(s.FIB), s.Error)
		}
		t.Fatal(err)
	}
	t.Logf("BGP converged %s after up returned", took)

	const cloud, poolA, poolB = "203.0.113.0/24", "198.51.100.0/28", "198.51.100.64/28"
	speakers := map[string]*bgp.Speaker{}
	for _, s := range sp {
		speakers[s.Node] = s
	}

	t.Run("the cloud's prefix is in every carrier router's kernel", func(t *testing.T) {
		if len(sp) != 9 {
			t.Fatalf("%d speakers, want 9", len(sp))
		}
		for _, s := range sp {
			if s.Established() != len(s.Neighbors) || len(s.Neighbors) != len(bgp.Of(tp.Nodes[s.Node]).Neighbors) {
				t.Errorf("%s: %d of %d sessions established (%d declared)", s.Node, s.Established(), len(s.Neighbors), len(bgp.Of(tp.Nodes[s.Node]).Neighbors))
			}
		}
		// The next hop each kernel uses towards the cloud: the neighbor on
		// the way, resolved through the carrier's IGP where the BGP next
		// hop is a router further away (iBGP).
		want := map[string]string{
			"cgnat": "100.65.0.2", "a2": "100.65.0.6", "c1": "100.65.0.10", "c2": "198.51.100.34",
			"b1": "100.66.0.2", "b2": "198.51.100.98",
		}
		for node, via := range want {
			if got := fibVia(t, lab, node, cloud); got != via {
				t.Errorf("%s: %s via %q (proto bgp), want via %s (%s)", node, cloud, got, via, who[netip.MustParseAddr(via)])
			}
		}
		if got := fibVia(t, lab, "t1", cloud); got != "198.51.100.129" && got != "198.51.100.134" {
			t.Errorf("t1: %s via %q, want c2 or b2", cloud, got)
		}
		// iproute2 sees the same: proto bgp.
		if out := mustRun(t, lab, "a2", "ip", "route", "show", "proto", "bgp"); !strings.Contains(out, cloud+" via 100.65.0.6 dev c1") {
			t.Errorf("ip route show proto bgp on a2:\n%s", out)
		}
	})

	t.Run("the multihomed cloud carries no traffic between its carriers", func(t *testing.T) {
		for _, c := range []struct{ border, carrier string }{{"border1", "198.51.100.33"}, {"border2", "198.51.100.97"}} {
			cl, err := bgp.Dial(ctx, bgp.Of(tp.Nodes[c.border]).API)
			if err != nil {
				t.Fatal(err)
			}
			out, err := cl.AdjOut(ctx, c.carrier)
			cl.Close()
			if err != nil {
				t.Fatal(err)
			}
			var sent []string
			for _, p := range out {
				sent = append(sent, p.Prefix)
			}
			if !slices.Equal(sent, []string{cloud}) {
				t.Errorf("%s tells %s %v, want only %s", c.border, who[netip.MustParseAddr(c.carrier)], sent, cloud)
			}
		}
		// No carrier or transit router has a path through AS 64500 to
		// the other carrier's subscribers.
		for _, node := range []string{"b1", "b2", "t1", "cgnat", "a2", "c1", "c2"} {
			for _, p := range speakers[node].RIB {
				if (p.Prefix == poolA || p.Prefix == poolB) && slices.Contains(p.ASPath, 64500) {
					t.Errorf("%s has %s through the cloud: AS path %v", node, p.Prefix, p.ASPath)
				}
			}
		}
		// But each carrier does reach the other through the transit AS.
		if via := fibVia(t, lab, "b2", poolA); via != "198.51.100.133" {
			t.Errorf("b2: carrier A's pool via %q, want t1 (198.51.100.133)", via)
		}
	})

	poolOf := func(p string) netip.Prefix { return netip.MustParsePrefix(p) }
	from := regexp.MustCompile(`^web GET / from ([0-9.]+):\d+`)
	t.Run("subscribers reach the cloud from their carrier's public pool", func(t *testing.T) {
		for _, c := range []struct{ node, pool, inside, edge string }{{"ue1", poolA, "100.64.0.10", "cgnat"}, {"home1", poolB, "100.64.1.10", "b1"}} {
			out := mustRun(t, lab, c.node, "curl", "-sS", "-m5", "http://203.0.113.10/")
			m := from.FindStringSubmatch(out)
			if m == nil || !poolOf(c.pool).Contains(netip.MustParseAddr(m[1])) {
				t.Errorf("%s: answer %q, want a source in %s", c.node, out, c.pool)
			}
			ct := mustRun(t, lab, c.edge, "conntrack", "-L", "-s", c.inside)
			if !strings.Contains(ct, "dst=203.0.113.10") || m != nil && !strings.Contains(ct, "dst="+m[1]) {
				t.Errorf("conntrack on %s has no translation of %s to %v:\n%s", c.edge, c.inside, m, ct)
			}
		}
	})

	t.Run("traceroute follows carrier A's routers to the cloud", func(t *testing.T) {
		want := []string{"cgnat", "a2", "c1", "c2", "border1", "web"}
		if got := traceroute(t, lab, "ue1", "203.0.113.10", who); !slices.Equal(got, want) {
			t.Fatalf("traceroute from ue1: %v, want %v", got, want)
		}
	})

	t.Run("between routers only the MACs change; CGNAT changes the source", func(t *testing.T) {
		const filter = "icmp and host 203.0.113.10"
		var inside, outside, a2c1, c2b1 []packets.Packet
		inside = capture(t, lab, "cgnat", "ue", filter, func() {
			outside = capture(t, lab, "cgnat", "a2", filter, func() {
				a2c1 = capture(t, lab, "c1", "a2", filter, func() {
					c2b1 = capture(t, lab, "c2", "border1", filter, func() {
						mustRun(t, lab, "ue1", "ping", "-c3", "-W2", "203.0.113.10")
					})
				})
			})
		})
		echo := func(pk []packets.Packet) []packets.Packet {
			var out []packets.Packet
			for _, p := range pk {
				if p.Proto == "icmp" && p.DstIP == addr("203.0.113.10") {
					out = append(out, p)
				}
			}
			return out
		}
		in, out, h1, h2 := echo(inside), echo(outside), echo(a2c1), echo(c2b1)
		if len(in) != 3 || len(out) != 3 || len(h1) != 3 || len(h2) != 3 {
			t.Fatalf("echo requests seen: %d at cgnat:ue, %d at cgnat:a2, %d at c1:a2, %d at c2:border1; want 3 each", len(in), len(out), len(h1), len(h2))
		}
		if in[0].SrcIP != addr("100.64.0.10") {
			t.Errorf("before CGNAT the source is %s, want the subscriber's 100.64.0.10", in[0].SrcIP)
		}
		if !poolOf(poolA).Contains(out[0].SrcIP) {
			t.Errorf("after CGNAT the source is %s, want one of carrier A's pool %s", out[0].SrcIP, poolA)
		}
		for i := range 3 {
			if h1[i].SrcIP != out[0].SrcIP || h2[i].SrcIP != out[0].SrcIP || h1[i].DstIP != h2[i].DstIP {
				t.Errorf("packet %d: %s → %s on a2–c1 but %s → %s on c2–border1: IPs must not change between routers", i, h1[i].SrcIP, h1[i].DstIP, h2[i].SrcIP, h2[i].DstIP)
			}
		}
		wantMACs := [][2]string{{mac(t, lab, "a2", "c1"), mac(t, lab, "c1", "a2")}, {mac(t, lab, "c2", "border1"), mac(t, lab, "border1", "c2")}}
		for i, h := range [][]packets.Packet{h1, h2} {
			if got := [2]string{h[0].SrcMAC, h[0].DstMAC}; got != wantMACs[i] {
				t.Errorf("hop %d: MACs %s → %s, want %s → %s", i+1, got[0], got[1], wantMACs[i][0], wantMACs[i][1])
			}
		}
		if h1[0].SrcMAC == h2[0].SrcMAC || h1[0].DstMAC == h2[0].DstMAC {
			t.Errorf("the MACs did not change between hops: %s → %s and %s → %s", h1[0].SrcMAC, h1[0].DstMAC, h2[0].SrcMAC, h2[0].DstMAC)
		}
	})

	t.Run("cutting carrier A's link moves traffic to carrier B and back", func(t *testing.T) {
		labctl := func(args ...string) string {
			out, err := exec.Command(labctlBin, append(args, "--lab", lab)...).CombinedOutput()
			if err != nil {
				t.Fatalf("labctl %v: %v\n%s", args, err, out)
			}
			return string(out)
		}
		labctl("link", "down", "c2", "border1")
		d := labtest.WaitFor(t, 30*time.Second, func() bool {
			return fibVia(t, lab, "c2", cloud) == "198.51.100.130"
		}, "c2 reroutes the cloud's prefix through t1")
		t.Logf("link down → c2's route to %s through the transit AS: %s", cloud, d)
		d = labtest.WaitFor(t, 30*time.Second, func() bool {
			_, err := run(lab, "ue1", "curl", "-sS", "-m1", "http://203.0.113.10/")
			return err == nil
		}, "ue1 reaches the cloud again")
		t.Logf("… and ue1's request is answered %s later", d)
		for _, p := range mustBGP(t, e, lab, "border1").RIB {
			if p.From == "198.51.100.33" {
				t.Errorf("border1 still has a path from c2 after the link went down: %+v", p)
			}
		}
		want := []string{"cgnat", "a2", "c1", "c2", "t1", "b2", "border2", "web"}
		if got := traceroute(t, lab, "ue1", "203.0.113.10", who); !slices.Equal(got, want) {
			t.Errorf("traceroute with the link down: %v, want %v", got, want)
		}

		labctl("link", "up", "c2", "border1")
		d = labtest.WaitFor(t, 30*time.Second, func() bool {
			return fibVia(t, lab, "c2", cloud) == "198.51.100.34"
		}, "c2 routes the cloud's prefix directly again")
		t.Logf("link up → c2's direct route back: %s", d)
		want = []string{"cgnat", "a2", "c1", "c2", "border1", "web"}
		if got := traceroute(t, lab, "ue1", "203.0.113.10", who); !slices.Equal(got, want) {
			t.Errorf("traceroute with the link back: %v, want %v", got, want)
		}
	})

	t.Run("labctl bgp shows sessions, paths and kernel routes", func(t *testing.T) {
		out, err := exec.Command(labctlBin, "bgp", "c2", "--lab", lab).CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, re := range []string{
			`198\.51\.100\.34 \(border1\)\s+64500\s+ebgp\s+established`,           // the session
			`\*>\s+203\.0\.113\.0/24\s+198\.51\.100\.34\s+64500\s`,                // the best path
			`\n203\.0\.113\.0/24\s+198\.51\.100\.34 \(border1\)\s+border1\s+20\n`, // the kernel route
		} {
			if !regexp.MustCompile(re).Match(out) {
				t.Errorf("labctl bgp c2 has no line matching %s:\n%s", re, out)
			}
		}
		out, err = exec.Command(labctlBin, "bgp", "--wait", "30s", "--format", "json", "--lab", lab).Output()
		if err != nil {
			t.Fatal(err)
		}
		var all []bgp.Speaker
		if err := json.Unmarshal(out, &all); err != nil || len(all) != 9 {
			t.Fatalf("labctl bgp --format json: %d speakers, %v\n%s", len(all), err, out)
		}
	})

	t.Run("unchanged re-up changes nothing", func(t *testing.T) {
		res, err := e.Up(ctx, labTopology(t, "internet", lab))
		if err != nil {
			t.Fatal(err)
		}
		if res.Changes != 0 {
			t.Fatalf("re-up planned %d changes:\n%s", res.Changes, res.Plan)
		}
	})

	downClean(t, e, lab, "after the internet test")
	*downed = true
	if after := rootSnapshot(t); after != before {
		t.Errorf("root namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func mustBGP(t *testing.T, e *engine.Engine, lab, node string) *bgp.Speaker {
	t.Helper()
	sp, err := bgp.Status(context.Background(), lab, []string{node})
	if err != nil || sp[0].Error != "" {
		t.Fatalf("bgp %s: %v %v", node, err, sp)
	}
	return sp[0]
}
