package bgp

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"labctl/lab/internal/labtest"
	"labctl/lab/topology"
)

// These tests run real GoBGP speakers on loopback addresses (127.0.0.1,
// .2, ... all live on lo), all on one unprivileged port, each with a fake
// kernel: nothing outside the test process changes.

type speaker struct {
	cfg    *Config
	k      *fakeKernel
	cancel context.CancelFunc
	done   chan error
	err    error
	ended  bool
}

// loKernel is a fake kernel where 127.0.0.0/8 is connected on dev 1.
func loKernel() *fakeKernel {
	k := newFake()
	k.add("127.0.0.0/8", "", 1, protoKernel, 0)
	return k
}

// group starts speakers one after the other, then lets them all run
// (see options.gate).
type group struct {
	t    *testing.T
	port int
	gate chan struct{}
}

func newGroup(t *testing.T) *group {
	return &group{t: t, port: labtest.FreePort(t), gate: make(chan struct{})}
}

func (g *group) start(cfg *Config, k *fakeKernel, addr string) *speaker {
	g.t.Helper()
	return startSpeaker(g.t, cfg, k, addr, g.port, g.gate)
}

// run lets the group's speakers go on.
func (g *group) run() { close(g.gate) }

// startSpeaker runs a speaker listening on addr:port and returns once it
// has started (waiting at gate, if not nil). It is stopped when the test
// ends.
func startSpeaker(t *testing.T, cfg *Config, k *fakeKernel, addr string, port int, gate chan struct{}) *speaker {
	t.Helper()
	if cfg.API == "" {
		dir, err := os.MkdirTemp("", "bgp")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		cfg.API = "unix://" + filepath.Join(dir, "api", addr+".sock")
	}
	ctx, cancel := context.WithCancel(context.Background())
	sp := &speaker{cfg: cfg, k: k, cancel: cancel, done: make(chan error, 1)}
	started := make(chan struct{})
	log := testLog(t).With("speaker", addr)
	go func() {
		sp.done <- run(ctx, cfg, k, log, options{port: port, address: addr, started: func() { close(started) }, gate: gate})
	}()
	select {
	case <-started:
	case err := <-sp.done:
		cancel()
		t.Fatalf("speaker %s: %v", addr, err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatalf("speaker %s did not start", addr)
	}
	t.Cleanup(func() { sp.stop(t) })
	return sp
}

// stop ends the speaker and checks it exits cleanly and removes its socket.
func (sp *speaker) stop(t *testing.T) {
	t.Helper()
	if sp.ended {
		return
	}
	sp.ended = true
	sp.cancel()
	select {
	case sp.err = <-sp.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("speaker %s did not stop", sp.cfg.RouterID)
	}
	if sp.err != nil {
		t.Errorf("speaker %s: %v", sp.cfg.RouterID, sp.err)
	}
	if _, err := os.Stat(socketPath(sp.cfg.API)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("speaker %s left its socket behind (%v)", sp.cfg.RouterID, err)
	}
}

func (sp *speaker) client(t *testing.T) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var c *Client
	waitFor(t, "api of "+sp.cfg.RouterID, func() (bool, string) {
		var err error
		c, err = Dial(ctx, sp.cfg.API)
		return err == nil, fmt.Sprint(err)
	})
	t.Cleanup(func() { c.Close() })
	return c
}

func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	labtest.WaitState(t, 20*time.Second, cond, what)
}

func join(s []string) string { return "[" + strings.Join(s, "; ") + "]" }

// waitRoutes waits until a fake kernel's proto-bgp routes are exactly exp.
func waitRoutes(t *testing.T, k *fakeKernel, what string, exp ...string) {
	t.Helper()
	slices.Sort(exp)
	waitFor(t, what, func() (bool, string) {
		got := k.bgpRoutes()
		return slices.Equal(got, exp), "routes " + join(got)
	})
}

func neighborState(t *testing.T, c *Client, addr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ns, err := c.Neighbors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		if n.Address == addr {
			return n.State
		}
	}
	t.Fatalf("no neighbor %s in %+v", addr, ns)
	return ""
}

func waitEstablished(t *testing.T, c *Client, addrs ...string) {
	t.Helper()
	for _, a := range addrs {
		waitFor(t, "session to "+a, func() (bool, string) {
			st := neighborState(t, c, a)
			return st == "established", st
		})
	}
}

func prefixes(ps []Path) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Prefix)
	}
	return out
}

var fastTimers = &Timers{
	ConnectRetry: topology.Duration(time.Second),
	Hold:         topology.Duration(3 * time.Second),
	Keepalive:    topology.Duration(time.Second),
}

func TestTwoSpeakersEBGP(t *testing.T) {
	g := newGroup(t)
	ka, kb := loKernel(), loKernel()
	a := g.start(&Config{ASN: 65001, RouterID: "127.0.0.1", Networks: []string{"10.1.0.0/24"}, Timers: fastTimers,
		Neighbors: []*Peer{{Address: "127.0.0.2", ASN: 65002}}}, ka, "127.0.0.1")
	b := g.start(&Config{ASN: 65002, RouterID: "127.0.0.2", Networks: []string{"10.2.0.0/24"}, Timers: fastTimers,
		Neighbors: []*Peer{{Address: "127.0.0.1", ASN: 65001}}}, kb, "127.0.0.2")
	g.run()
	ca, cb := a.client(t), b.client(t)
	waitEstablished(t, ca, "127.0.0.2")
	waitEstablished(t, cb, "127.0.0.1")

	// Each installs the other's network via the other's address.
	waitRoutes(t, kb, "A's network in B's kernel", "10.1.0.0/24 via 127.0.0.1 dev 1")
	waitRoutes(t, ka, "B's network in A's kernel", "10.2.0.0/24 via 127.0.0.2 dev 1")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ns, err := cb.Neighbors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) != 1 || ns[0].Uptime < 0 || ns[0].Uptime > time.Minute {
		t.Fatalf("neighbors of B: %+v", ns)
	}
	ns[0].Uptime = 0
	if exp := (Neighbor{Address: "127.0.0.1", ASN: 65001, Type: "ebgp", State: "established", Received: 1, Accepted: 1, Advertised: 1}); ns[0] != exp {
		t.Errorf("neighbor of B:\n got %+v\nwant %+v", ns[0], exp)
	}

	rib, err := cb.RIB(ctx)
	if err != nil {
		t.Fatal(err)
	}
	expRIB := []Path{
		{Prefix: "10.1.0.0/24", NextHop: "127.0.0.1", ASPath: []uint32{65001}, Best: true, LocalPref: 100, From: "127.0.0.1"},
		{Prefix: "10.2.0.0/24", NextHop: "0.0.0.0", Best: true, Local: true, LocalPref: 100},
	}
	if !reflect.DeepEqual(rib, expRIB) {
		t.Errorf("RIB of B:\n got %+v\nwant %+v", rib, expRIB)
	}

	out, err := cb.AdjOut(ctx, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	expOut := []Path{{Prefix: "10.2.0.0/24", NextHop: "127.0.0.2", ASPath: []uint32{65002}, Local: true, LocalPref: 100}}
	if !reflect.DeepEqual(out, expOut) {
		t.Errorf("B's Adj-RIB-Out to A:\n got %+v\nwant %+v", out, expOut)
	}
	if _, err := cb.AdjOut(ctx, "127.0.0.9"); err == nil {
		t.Error("AdjOut of an unknown neighbor: no error")
	}

	// A plain path works as well as unix://; a missing socket fails.
	if c, err := Dial(ctx, socketPath(b.cfg.API)); err != nil {
		t.Errorf("dial plain path: %v", err)
	} else {
		c.Close()
	}
	if _, err := Dial(ctx, filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Error("dial of a missing socket succeeded")
	}

	// A stops: its own kernel is cleaned, B withdraws A's network at once
	// (A closes the session with a CEASE).
	a.stop(t)
	expectRoutes(t, ka)
	waitRoutes(t, kb, "A's network withdrawn from B's kernel")
	if st := neighborState(t, cb, "127.0.0.1"); st == "established" {
		t.Errorf("B's session to a stopped A is %s", st)
	}
}

// TestExportOwnAndNextHopSelf: M (AS 65030, export own) sits between two
// upstreams T1 and T2 and has an iBGP neighbor I (next-hop-self) that
// originates 10.31.0.0/24 (an own prefix) and 10.30.0.0/25 (a more
// specific of one, not itself own).
func TestExportOwnAndNextHopSelf(t *testing.T) {
	g := newGroup(t)
	kt1, kt2, km, ki := loKernel(), loKernel(), loKernel(), loKernel()
	nbr := func(addr string, asn uint32) *Peer {
		return &Peer{Address: addr, ASN: asn}
	}
	t1 := g.start(&Config{ASN: 65010, RouterID: "127.0.0.1", Networks: []string{"10.10.0.0/24"}, Timers: fastTimers,
		Neighbors: []*Peer{nbr("127.0.0.3", 65030)}}, kt1, "127.0.0.1")
	t2 := g.start(&Config{ASN: 65020, RouterID: "127.0.0.2", Networks: []string{"10.20.0.0/24"}, Timers: fastTimers,
		Neighbors: []*Peer{nbr("127.0.0.3", 65030)}}, kt2, "127.0.0.2")
	m := g.start(&Config{ASN: 65030, RouterID: "127.0.0.3", Networks: []string{"10.30.0.0/24"}, Timers: fastTimers,
		Export: ExportOwn, Own: []string{"10.30.0.0/24", "10.31.0.0/24"},
		Neighbors: []*Peer{nbr("127.0.0.1", 65010), nbr("127.0.0.2", 65020),
			{Address: "127.0.0.4", ASN: 65030, NextHopSelf: true}}}, km, "127.0.0.3")
	i := g.start(&Config{ASN: 65030, RouterID: "127.0.0.4", Networks: []string{"10.31.0.0/24", "10.30.0.0/25"}, Timers: fastTimers,
		Neighbors: []*Peer{nbr("127.0.0.3", 65030)}}, ki, "127.0.0.4")
	g.run()
	cm, ct2, ci := m.client(t), t2.client(t), i.client(t)
	waitEstablished(t, cm, "127.0.0.1", "127.0.0.2", "127.0.0.4")

	// M learns everything...
	waitRoutes(t, km, "M's kernel",
		"10.10.0.0/24 via 127.0.0.1 dev 1", "10.20.0.0/24 via 127.0.0.2 dev 1",
		"10.31.0.0/24 via 127.0.0.4 dev 1", "10.30.0.0/25 via 127.0.0.4 dev 1")
	// ...I, its iBGP neighbor, gets the upstreams' routes with M as the
	// next hop (next-hop-self), not the upstreams' addresses...
	waitRoutes(t, ki, "I's kernel (next-hop-self)",
		"10.10.0.0/24 via 127.0.0.3 dev 1", "10.20.0.0/24 via 127.0.0.3 dev 1", "10.30.0.0/24 via 127.0.0.3 dev 1")
	// ...but the upstreams only get the AS's own prefixes, at their exact
	// lengths: not each other's, not the more specific /25.
	own := []string{"10.30.0.0/24 via 127.0.0.3 dev 1", "10.31.0.0/24 via 127.0.0.3 dev 1"}
	waitRoutes(t, kt2, "T2's kernel (export own)", own...)
	waitRoutes(t, kt1, "T1's kernel (export own)", own...)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, up := range []string{"127.0.0.1", "127.0.0.2"} {
		out, err := cm.AdjOut(ctx, up)
		if err != nil {
			t.Fatal(err)
		}
		if got := prefixes(out); !slices.Equal(got, []string{"10.30.0.0/24", "10.31.0.0/24"}) {
			t.Errorf("M sends %s %v, want only the own prefixes", up, got)
		}
		for _, p := range out {
			if p.NextHop != "127.0.0.3" || !slices.Equal(p.ASPath, []uint32{65030}) {
				t.Errorf("M sends %s %+v", up, p)
			}
		}
	}
	out, err := cm.AdjOut(ctx, "127.0.0.4")
	if err != nil {
		t.Fatal(err)
	}
	if got := prefixes(out); !slices.Equal(got, []string{"10.10.0.0/24", "10.20.0.0/24", "10.30.0.0/24"}) {
		t.Errorf("M sends I %v", got)
	}
	for _, p := range out {
		if p.NextHop != "127.0.0.3" {
			t.Errorf("M sends I %+v: next hop not self", p)
		}
	}
	// I's RIB agrees: the upstream's route arrives with M as next hop and
	// the upstream's AS path.
	rib, err := ci.RIB(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range rib {
		if p.Prefix == "10.10.0.0/24" {
			found = true
			if p.NextHop != "127.0.0.3" || !slices.Equal(p.ASPath, []uint32{65010}) || p.From != "127.0.0.3" || !p.Best {
				t.Errorf("I's path to 10.10.0.0/24: %+v", p)
			}
		}
	}
	if !found {
		t.Errorf("I's RIB has no 10.10.0.0/24: %+v", rib)
	}
	// T2 never heard of T1's prefix (checked after M's Adj-RIB-Out settled).
	rib, err = ct2.RIB(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := prefixes(rib); !slices.Equal(got, []string{"10.20.0.0/24", "10.30.0.0/24", "10.31.0.0/24"}) {
		t.Errorf("T2's RIB %v", got)
	}
	n, err := ct2.Neighbors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(n) != 1 || n[0].Received != 2 || n[0].Type != "ebgp" {
		t.Errorf("T2's neighbors %+v", n)
	}
	n, err = ci.Neighbors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(n) != 1 || n[0].Type != "ibgp" || n[0].Received != 3 || n[0].Advertised != 2 {
		t.Errorf("I's neighbors %+v", n)
	}
	_ = t1
}

// TestFastFallover: with a 30 s hold time, a link going down still ends
// the session over it (and withdraws what was learned there) at once; the
// link coming back brings the session back.
func TestFastFallover(t *testing.T) {
	g := newGroup(t)
	slow := &Timers{ConnectRetry: topology.Duration(time.Second), Hold: topology.Duration(30 * time.Second), Keepalive: topology.Duration(10 * time.Second)}
	ka, kb := loKernel(), loKernel()
	eth := Link{Index: 1, Name: "eth0", Up: true, Addrs: []netip.Prefix{pfx("127.0.0.1/8")}}
	ka.setLinks(eth)
	a := g.start(&Config{ASN: 65001, RouterID: "127.0.0.1", Networks: []string{"10.1.0.0/24"}, Timers: slow,
		Neighbors: []*Peer{{Address: "127.0.0.2", ASN: 65002}}}, ka, "127.0.0.1")
	b := g.start(&Config{ASN: 65002, RouterID: "127.0.0.2", Networks: []string{"10.2.0.0/24"}, Timers: slow,
		Neighbors: []*Peer{{Address: "127.0.0.1", ASN: 65001}}}, kb, "127.0.0.2")
	g.run()
	ca := a.client(t)
	_ = b
	waitEstablished(t, ca, "127.0.0.2")
	waitRoutes(t, ka, "B's network in A's kernel", "10.2.0.0/24 via 127.0.0.2 dev 1")

	down := time.Now()
	eth.Up = false
	ka.setLinks(eth)
	labtest.WaitState(t, 3*time.Second, func() (bool, string) {
		st := neighborState(t, ca, "127.0.0.2")
		return st != "established" && len(ka.bgpRoutes()) == 0, st + " " + join(ka.bgpRoutes())
	}, "session down after link down")
	t.Logf("session down and route withdrawn %s after the link (hold time 30s)", time.Since(down).Round(time.Millisecond))
	// It stays down while the link is down.
	if st := neighborState(t, ca, "127.0.0.2"); st == "established" {
		t.Fatalf("session %s with the link down", st)
	}

	eth.Up = true
	ka.setLinks(eth)
	waitEstablished(t, ca, "127.0.0.2")
	waitRoutes(t, ka, "B's network back in A's kernel", "10.2.0.0/24 via 127.0.0.2 dev 1")
}
