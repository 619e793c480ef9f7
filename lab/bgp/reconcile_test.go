package bgp

import (
	"net/netip"
	"reflect"
	"slices"
	"testing"

	api "github.com/osrg/gobgp/v3/api"

	"labctl/lab/internal/labtest"
)

// routerKernel is a router with two connected subnets, a static route and
// a default route: 10.0.1.0/24 on dev 2, 10.0.2.0/24 on dev 3,
// 10.9.0.0/16 via 10.0.1.254, default via 10.0.2.1 (metric 100).
func routerKernel() *fakeKernel {
	k := newFake()
	k.add("10.0.1.0/24", "", 2, protoKernel, 0)
	k.add("10.0.2.0/24", "", 3, protoKernel, 0)
	k.add("10.9.0.0/16", "10.0.1.254", 2, protoStatic, 0)
	return k
}

func want(kv ...string) map[netip.Prefix]netip.Addr {
	m := map[netip.Prefix]netip.Addr{}
	for i := 0; i < len(kv); i += 2 {
		m[pfx(kv[i])] = ip(kv[i+1])
	}
	return m
}

func expectRoutes(t *testing.T, k *fakeKernel, exp ...string) {
	t.Helper()
	got := k.bgpRoutes()
	slices.Sort(exp)
	if !slices.Equal(got, exp) {
		t.Fatalf("proto bgp routes:\n got %q\nwant %q", got, exp)
	}
}

func TestReconcileInstallsReplacesAndDeletes(t *testing.T) {
	k := routerKernel()
	f := newFIB(k, testLog(t))

	// Install: a next hop on a connected subnet is the gateway itself.
	if err := f.reconcile(want("192.0.2.0/24", "10.0.1.7", "198.51.100.0/24", "10.0.2.9")); err != nil {
		t.Fatal(err)
	}
	expectRoutes(t, k, "192.0.2.0/24 via 10.0.1.7 dev 2", "198.51.100.0/24 via 10.0.2.9 dev 3")

	// A pass with nothing changed touches nothing.
	k.takeOps()
	if err := f.reconcile(want("192.0.2.0/24", "10.0.1.7", "198.51.100.0/24", "10.0.2.9")); err != nil {
		t.Fatal(err)
	}
	if ops := k.takeOps(); len(ops) != 0 {
		t.Fatalf("an unchanged pass changed the kernel: %q", ops)
	}

	// The next hop of one prefix changes: its route is replaced in place.
	if err := f.reconcile(want("192.0.2.0/24", "10.0.2.20", "198.51.100.0/24", "10.0.2.9")); err != nil {
		t.Fatal(err)
	}
	expectRoutes(t, k, "192.0.2.0/24 via 10.0.2.20 dev 3", "198.51.100.0/24 via 10.0.2.9 dev 3")
	if ops := k.takeOps(); len(ops) != 1 || ops[0] != "replace 192.0.2.0/24 via 10.0.2.20 dev 3 proto 186 metric 20" {
		t.Fatalf("next-hop change: ops %q, want one replace", ops)
	}

	// A route removed behind the speaker's back comes back on the next pass.
	k.del("198.51.100.0/24", Metric)
	if err := f.reconcile(want("192.0.2.0/24", "10.0.2.20", "198.51.100.0/24", "10.0.2.9")); err != nil {
		t.Fatal(err)
	}
	expectRoutes(t, k, "192.0.2.0/24 via 10.0.2.20 dev 3", "198.51.100.0/24 via 10.0.2.9 dev 3")

	// A withdrawn prefix loses its route.
	if err := f.reconcile(want("192.0.2.0/24", "10.0.2.20")); err != nil {
		t.Fatal(err)
	}
	expectRoutes(t, k, "192.0.2.0/24 via 10.0.2.20 dev 3")
	if err := f.reconcile(want()); err != nil {
		t.Fatal(err)
	}
	expectRoutes(t, k)
}

func TestReconcileRecursiveResolution(t *testing.T) {
	k := routerKernel()
	f := newFIB(k, testLog(t))
	// 10.9.3.3 is not on a connected subnet: the kernel reaches it via
	// 10.0.1.254 on dev 2, so the BGP route goes there too.
	if err := f.reconcile(want("203.0.113.0/24", "10.9.3.3")); err != nil {
		t.Fatal(err)
	}
	expectRoutes(t, k, "203.0.113.0/24 via 10.0.1.254 dev 2")

	// The static route moves: the next pass follows it.
	k.add("10.9.0.0/16", "10.0.2.254", 3, protoStatic, 0)
	if err := f.reconcile(want("203.0.113.0/24", "10.9.3.3")); err != nil {
		t.Fatal(err)
	}
	expectRoutes(t, k, "203.0.113.0/24 via 10.0.2.254 dev 3")
}

func TestReconcileUnresolvableThenResolvable(t *testing.T) {
	k := routerKernel()
	f := newFIB(k, testLog(t))
	w := want("203.0.113.0/24", "172.16.5.5", "192.0.2.0/24", "10.0.1.7")
	if err := f.reconcile(w); err != nil {
		t.Fatal(err)
	}
	// 172.16.5.5 is unreachable: skipped, the other prefix installed.
	expectRoutes(t, k, "192.0.2.0/24 via 10.0.1.7 dev 2")

	// The kernel learns a way there: the next pass installs it.
	k.add("172.16.0.0/12", "10.0.2.1", 3, protoStatic, 0)
	if err := f.reconcile(w); err != nil {
		t.Fatal(err)
	}
	expectRoutes(t, k, "192.0.2.0/24 via 10.0.1.7 dev 2", "203.0.113.0/24 via 10.0.2.1 dev 3")

	// And loses it again: the route goes (it would black-hole traffic).
	k.del("172.16.0.0/12", 0)
	if err := f.reconcile(w); err != nil {
		t.Fatal(err)
	}
	expectRoutes(t, k, "192.0.2.0/24 via 10.0.1.7 dev 2")
}

func TestReconcileLeavesOtherRoutesAlone(t *testing.T) {
	k := routerKernel()
	// A static route for a prefix BGP also knows, at BGP's metric, and one
	// at another metric.
	k.add("192.0.2.0/24", "10.0.2.1", 3, protoStatic, Metric)
	k.add("198.51.100.0/24", "10.0.2.1", 3, protoStatic, 50)
	before := k.all()
	f := newFIB(k, testLog(t))
	if err := f.reconcile(want("192.0.2.0/24", "10.0.1.7", "198.51.100.0/24", "10.0.1.8")); err != nil {
		t.Fatal(err)
	}
	// The static route at metric 20 keeps its slot; the other prefix is
	// installed next to the metric-50 static route.
	expectRoutes(t, k, "198.51.100.0/24 via 10.0.1.8 dev 2")
	if err := f.reconcile(want()); err != nil {
		t.Fatal(err)
	}
	if err := f.flush(); err != nil {
		t.Fatal(err)
	}
	if after := k.all(); !slices.Equal(before, after) {
		t.Fatalf("non-bgp routes changed:\nbefore %q\n after %q", before, after)
	}
}

func TestFlushAtStartAndExit(t *testing.T) {
	k := routerKernel()
	// Leftovers of a crashed speaker, one at a foreign metric.
	k.add("192.0.2.0/24", "10.0.1.7", 2, Protocol, Metric)
	k.add("198.51.100.0/24", "10.0.1.7", 2, Protocol, 99)
	f := newFIB(k, testLog(t))
	if err := f.flush(); err != nil {
		t.Fatal(err)
	}
	expectRoutes(t, k)
	if len(k.all()) != 3 {
		t.Fatalf("flush removed more than proto bgp: %q", k.all())
	}
	// A leftover at another metric is also removed by reconcile.
	k.add("198.51.100.0/24", "10.0.1.7", 2, Protocol, 99)
	if err := f.reconcile(want("198.51.100.0/24", "10.0.1.7")); err != nil {
		t.Fatal(err)
	}
	expectRoutes(t, k, "198.51.100.0/24 via 10.0.1.7 dev 2")
}

// TestRunCleansKernel runs a speaker with no neighbors on a fake kernel:
// it flushes leftovers at start and removes every route at exit.
func TestRunCleansKernel(t *testing.T) {
	k := routerKernel()
	k.add("192.0.2.0/24", "10.0.1.7", 2, Protocol, Metric)
	cfg := &Config{ASN: 65001, RouterID: "10.0.1.1", Networks: []string{"10.50.0.0/24"}}
	sp := startSpeaker(t, cfg, k, "127.0.0.1", labtest.FreePort(t), nil)
	waitFor(t, "leftover flushed", func() (bool, string) {
		r := k.bgpRoutes()
		return len(r) == 0, "routes " + join(r)
	})
	// Something the speaker installed itself, as if learned.
	k.Replace(KernelRoute{Prefix: pfx("203.0.113.0/24"), Via: ip("10.0.1.9"), Dev: 2, Protocol: Protocol, Metric: Metric})
	sp.stop(t)
	expectRoutes(t, k)
	if len(k.all()) != 3 {
		t.Fatalf("exit removed more than proto bgp: %q", k.all())
	}
}

func TestDesired(t *testing.T) {
	got := desired([]Path{
		{Prefix: "10.1.0.0/24", NextHop: "10.0.0.1", Best: true, From: "10.0.0.1"},
		{Prefix: "10.1.0.0/24", NextHop: "10.0.0.2", From: "10.0.0.2"}, // not best
		{Prefix: "10.2.0.0/24", NextHop: "0.0.0.0", Best: true, Local: true},
		{Prefix: "10.3.0.0/24", NextHop: "0.0.0.0", Best: true, From: "10.0.0.3"}, // unspecified
		{Prefix: "10.4.0.0/24", NextHop: "10.0.0.4", Best: true, Local: true},     // ours
		{Prefix: "2001:db8::/32", NextHop: "2001:db8::1", Best: true, From: "2001:db8::1"},
	})
	if exp := want("10.1.0.0/24", "10.0.0.1"); !reflect.DeepEqual(got, exp) {
		t.Fatalf("desired = %v, want %v", got, exp)
	}
}

func TestFalloverUpdate(t *testing.T) {
	fo := newFallover([]netip.Addr{ip("10.0.1.2"), ip("10.0.2.2"), ip("10.255.0.9")})
	eth1 := Link{Index: 2, Name: "eth1", Up: true, Addrs: []netip.Prefix{pfx("10.0.1.1/24")}}
	eth2 := Link{Index: 3, Name: "eth2", Up: true, Addrs: []netip.Prefix{pfx("10.0.2.1/30")}}
	lo := Link{Index: 1, Name: "lo", Up: true, Addrs: []netip.Prefix{pfx("127.0.0.1/8"), pfx("10.255.0.1/32")}}
	if c := fo.update([]Link{lo, eth1, eth2}); len(c) != 0 {
		t.Fatalf("all up: changes %v", c)
	}
	eth1.Up = false
	c := fo.update([]Link{lo, eth1, eth2})
	if len(c) != 1 || c[0].Neighbor != ip("10.0.1.2") || !c[0].Down || !slices.Equal(c[0].Links, []string{"eth1"}) {
		t.Fatalf("eth1 down: changes %+v", c)
	}
	if c := fo.update([]Link{lo, eth1, eth2}); len(c) != 0 {
		t.Fatalf("no news: changes %v", c)
	}
	eth1.Up = true
	if c := fo.update([]Link{lo, eth1, eth2}); len(c) != 1 || c[0].Down {
		t.Fatalf("eth1 up: changes %+v", c)
	}
	// The subnet disappears (address removed): the neighbor is down too;
	// the multihop neighbor 10.255.0.9 is never touched.
	eth2.Addrs = nil
	if c := fo.update([]Link{lo, eth1, eth2}); len(c) != 1 || c[0].Neighbor != ip("10.0.2.2") || !c[0].Down {
		t.Fatalf("subnet gone: changes %+v", c)
	}
}

func TestExportPolicy(t *testing.T) {
	cfg := &Config{ASN: 65030, Export: ExportOwn, Networks: []string{"10.30.0.0/24"},
		Own: []string{"10.30.0.0/24", "10.31.0.5/24"},
		Neighbors: []*Peer{
			{Address: "10.0.0.1", ASN: 65010},
			{Address: "10.0.0.5", ASN: 65030, NextHopSelf: true},
		}}
	sets, pol, err := exportPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 3 || len(pol.Statements) != 2 {
		t.Fatalf("sets %v, statements %v", sets, pol.Statements)
	}
	if sets[0].Name != setEBGP || !slices.Equal(sets[0].List, []string{"10.0.0.1/32"}) {
		t.Errorf("ebgp set %v", sets[0])
	}
	var own []string
	for _, p := range sets[1].Prefixes {
		if p.MaskLengthMin != p.MaskLengthMax {
			t.Errorf("own prefix %v is not exact", p)
		}
		own = append(own, p.IpPrefix)
	}
	if !slices.Equal(own, []string{"10.30.0.0/24", "10.31.0.0/24"}) {
		t.Errorf("own prefixes %v", own)
	}
	s0, s1 := pol.Statements[0], pol.Statements[1]
	if s0.Actions.RouteAction != api.RouteAction_REJECT || s0.Conditions.PrefixSet.Type != api.MatchSet_INVERT {
		t.Errorf("export-own statement %v", s0)
	}
	if s1.Actions.RouteAction != api.RouteAction_NONE || !s1.Actions.Nexthop.Self || s1.Conditions.NeighborSet.Name != setNextHopSelf {
		t.Errorf("next-hop-self statement %v", s1)
	}

	// Export all without next-hop-self: no policy at all (an empty
	// neighbor set would match every neighbor).
	cfg.Export, cfg.Neighbors[1].NextHopSelf = "", false
	if _, pol, _ := exportPolicy(cfg); pol != nil {
		t.Errorf("export all: policy %v", pol)
	}
	// Export own with only iBGP neighbors: nothing to filter.
	cfg.Export, cfg.Neighbors = ExportOwn, cfg.Neighbors[1:]
	if _, pol, _ := exportPolicy(cfg); pol != nil {
		t.Errorf("export own, no eBGP: policy %v", pol)
	}
}
