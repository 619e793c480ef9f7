package dns

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func newSampleBalancer(t *testing.T) (*Balancer, *Counters, *logRecorder) {
	t.Helper()
	st, lr := &Counters{}, &logRecorder{}
	b, err := NewGSLB(sampleGSLB(), st, slog.New(lr))
	if err != nil {
		t.Fatal(err)
	}
	b.graceUntil = time.Time{} // long started: every failure counts
	return b, st, lr
}

// Right after it starts, the GSLB does not count failures of an address
// that has never passed a check (its load balancer may start later); once
// it has passed one, or the grace is over, failures count.
func TestGSLBStartupGrace(t *testing.T) {
	b, _, _ := newSampleBalancer(t)
	b.graceUntil = time.Now().Add(time.Hour)
	refused := errors.New("connection refused")
	a, c := b.target("203.0.113.1"), b.target("203.0.113.2")
	for range 5 {
		b.record(a, refused)
	}
	if !a.up || a.fails != 0 {
		t.Fatalf("starting address after 5 failures: up %v, fails %d; want up, none counted", a.up, a.fails)
	}
	b.record(a, nil)
	for range 2 {
		b.record(a, refused)
	}
	if a.up {
		t.Error("an address that passed a check, then failed twice (fall 2), is still up")
	}
	b.graceUntil = time.Now().Add(-time.Second)
	for range 2 {
		b.record(c, refused)
	}
	if c.up {
		t.Error("after the grace, an address never seen up that failed twice is still up")
	}
}

// target finds the state of one address.
func (b *Balancer) target(addr string) *gslbTarget {
	for _, r := range b.regions {
		for _, t := range r.targets {
			if t.addr.String() == addr {
				return t
			}
		}
	}
	panic("no target " + addr)
}

func addrStrings(as []netip.Addr) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

func TestGSLBSelectRules(t *testing.T) {
	b, _, _ := newSampleBalancer(t)
	for _, c := range []struct {
		client string
		addrs  []string
		region string
	}{
		{"10.2.3.4", []string{"203.0.113.1", "203.0.113.2"}, "east"},
		{"10.1.2.3", []string{"198.51.100.1"}, "west"}, // the /16 beats the /8
		{"100.64.1.1", []string{"192.0.2.1"}, "south"},
		{"172.16.0.1", []string{"192.0.2.1"}, "south"}, // a bare address is a /32
		{"172.16.0.2", []string{"203.0.113.1", "203.0.113.2"}, "east"},
		{"8.8.8.8", []string{"203.0.113.1", "203.0.113.2"}, "east"},
		{"::ffff:10.1.0.1", []string{"198.51.100.1"}, "west"},
		{"2001:db8::1", []string{"203.0.113.1", "203.0.113.2"}, "east"},
	} {
		addrs, region := b.Select(netip.MustParseAddr(c.client))
		// The order rotates from answer to answer (TestGSLBRoundRobin).
		if got := slices.Sorted(slices.Values(addrStrings(addrs))); !slices.Equal(got, c.addrs) || region != c.region {
			t.Errorf("Select(%s) = %v %s, want %v %s", c.client, got, region, c.addrs, c.region)
		}
	}
}

// Consecutive answers start one address further each time, so clients
// that take the first address spread over the region.
func TestGSLBRoundRobin(t *testing.T) {
	b, _, _ := newSampleBalancer(t)
	var firsts []string
	for range 4 {
		addrs, _ := b.Select(netip.MustParseAddr("8.8.8.8"))
		if len(addrs) != 2 {
			t.Fatalf("answer %v, want both of east's addresses", addrs)
		}
		firsts = append(firsts, addrs[0].String())
	}
	if want := []string{"203.0.113.1", "203.0.113.2", "203.0.113.1", "203.0.113.2"}; !slices.Equal(firsts, want) {
		t.Errorf("first addresses of 4 answers: %v, want %v", firsts, want)
	}
}

func TestGSLBFailover(t *testing.T) {
	b, st, lr := newSampleBalancer(t)
	refused := errors.New("connection refused")
	down := func(addr string) { // fall 2
		for range 2 {
			b.record(b.target(addr), refused)
		}
	}
	up := func(addr string) {
		for range 2 {
			b.record(b.target(addr), nil)
		}
	}
	client := netip.MustParseAddr("10.2.3.4") // east, then west

	down("203.0.113.1")
	if got, _ := b.Select(client); !slices.Equal(addrStrings(got), []string{"203.0.113.2"}) {
		t.Errorf("one east address down: %v", got)
	}
	down("203.0.113.2")
	if got, region := b.Select(client); region != "west" || !slices.Equal(addrStrings(got), []string{"198.51.100.1"}) {
		t.Errorf("east down: %v %s", got, region)
	}
	// south is not in this rule's order: with east and west down the
	// client's order fails open to east, though south is up.
	down("198.51.100.1")
	got, region := b.Select(client)
	if region != "east" || !slices.Equal(addrStrings(got), []string{"203.0.113.1", "203.0.113.2"}) {
		t.Errorf("all down: %v %s, want every east address", got, region)
	}
	b.Select(client)
	if n := st.Get("gslb_fail_open"); n != 2 {
		t.Errorf("gslb_fail_open = %d, want 2", n)
	}
	if n := lr.count("failing open"); n != 1 {
		t.Errorf("%d fail-open logs, want 1 per transition", n)
	}
	// The default order reaches south.
	if got, region := b.Select(netip.MustParseAddr("8.8.8.8")); region != "south" || len(got) != 1 {
		t.Errorf("default order with east and west down: %v %s", got, region)
	}
	if n := lr.count("no longer failing open"); n != 1 {
		t.Errorf("%d recovery logs, want 1", n)
	}
	up("198.51.100.1")
	if _, region := b.Select(client); region != "west" {
		t.Errorf("west back: %s", region)
	}
	if st.Get("gslb_up_east") != 0 || st.Get("gslb_up_west") != 1 || st.Get("gslb_up_south") != 1 {
		t.Errorf("gauges: %v", st.Strings())
	}
}

func TestGSLBStateMachine(t *testing.T) {
	b, st, lr := newSampleBalancer(t) // fall 2, rise 2
	tg := b.target("198.51.100.1")
	fail := errors.New("connection refused")
	steps := []struct {
		err error
		up  bool
	}{
		{nil, true},   // first result: up (it was unknown, counted up)
		{fail, true},  // 1 failure
		{nil, true},   // reset
		{fail, true},  // 1
		{fail, false}, // 2: down
		{fail, false},
		{nil, false}, // 1 success
		{fail, false},
		{nil, false},
		{nil, true}, // 2: up
	}
	for i, s := range steps {
		b.record(tg, s.err)
		if got := statusOf(b, "198.51.100.1"); got.Up != s.up {
			t.Fatalf("step %d: up=%v, want %v", i, got.Up, s.up)
		}
		if want := map[bool]int64{true: 1, false: 0}[s.up]; st.Get("gslb_up_west") != want {
			t.Fatalf("step %d: gslb_up_west=%d, want %d", i, st.Get("gslb_up_west"), want)
		}
	}
	if st.Get("health_checks") != int64(len(steps)) || st.Get("health_failures") != 5 {
		t.Errorf("counters: %v", st.Strings())
	}
	if lr.count("health changed", "address", "198.51.100.1", "state", "down", "region", "west", "error", "connection refused") != 1 ||
		lr.count("health changed", "state", "up") != 1 || lr.count("first check", "state", "up") != 1 {
		t.Errorf("transition logs: %v", lr.recs)
	}

	// An address starts up: a first failure alone does not take it down.
	tg = b.target("192.0.2.1")
	b.record(tg, fail)
	s := statusOf(b, "192.0.2.1")
	if !s.Up || s.LastError != "connection refused" || s.Region != "south" || st.Get("gslb_up_south") != 1 {
		t.Errorf("first failure: %+v", s)
	}
	b.record(tg, fail)
	if s := statusOf(b, "192.0.2.1"); s.Up || st.Get("gslb_up_south") != 0 {
		t.Errorf("second failure: %+v", s)
	}
}

func TestGSLBRunFakeDial(t *testing.T) {
	b, st, lr := newSampleBalancer(t)
	fn := newFakeNet()
	b.dial = fn.dial
	fn.set("198.51.100.1", true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		b.Run(ctx)
		close(done)
	}()
	waitFor(t, "west down", func() bool { return st.Get("gslb_up_west") == 0 })
	waitFor(t, "every address checked", func() bool { return st.Get("health_checks") >= 8 })
	if st.Get("gslb_up_east") != 2 || st.Get("gslb_up_south") != 1 {
		t.Errorf("gauges: %v", st.Strings())
	}
	fn.set("198.51.100.1", false)
	waitFor(t, "west up", func() bool { return st.Get("gslb_up_west") == 1 })
	fn.set("203.0.113.2", true)
	waitFor(t, "203.0.113.2 down", func() bool { return !statusOf(b, "203.0.113.2").Up })
	if got, _ := b.Select(netip.MustParseAddr("10.2.0.1")); !slices.Equal(addrStrings(got), []string{"203.0.113.1"}) {
		t.Errorf("Select: %v", got)
	}
	// At least Fall failures preceded the transition.
	if f := st.Get("health_failures"); f < 1+2 {
		t.Errorf("health_failures = %d", f)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
	if lr.count("health changed", "address", "203.0.113.2", "state", "down") != 1 {
		t.Errorf("no transition log")
	}
}

// TestGSLBRealTCP checks real listeners: one port on two loopback
// addresses; closing one listener takes its address down, opening it
// again brings it back.
func TestGSLBRealTCP(t *testing.T) {
	var lnA, lnB net.Listener
	var port int
	for try := 0; ; try++ {
		a, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Skipf("no 127.0.0.2: %v", err)
		}
		port = a.Addr().(*net.TCPAddr).Port
		b, err := net.Listen("tcp", net.JoinHostPort("127.0.0.3", strconv.Itoa(port)))
		if err == nil {
			lnA, lnB = a, b
			break
		}
		a.Close()
		if try == 10 {
			t.Fatalf("no common port: %v", err)
		}
	}
	var wg sync.WaitGroup
	serve := func(ln net.Listener) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	serve(lnA)
	serve(lnB)
	defer func() {
		lnA.Close()
		lnB.Close()
		wg.Wait()
	}()

	st := &Counters{}
	b, err := NewGSLB(&GSLB{
		Names:   []string{"www.test."},
		Regions: []*Region{{Name: "a", Addresses: []string{"127.0.0.2"}}, {Name: "b", Addresses: []string{"127.0.0.3"}}},
		Default: []string{"b", "a"},
		Check:   HealthCheckSpec{Port: port, Interval: Duration(10 * time.Millisecond), Timeout: Duration(time.Second), Fall: 2, Rise: 2},
	}, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		b.Run(ctx)
		close(done)
	}()
	defer func() {
		cancel()
		<-done
	}()
	checked := func(n int64) func() bool {
		return func() bool { return st.Get("health_checks") >= n }
	}
	waitFor(t, "checks", checked(4))
	if _, region := b.Select(netip.MustParseAddr("192.0.2.1")); region != "b" || statusOf(b, "127.0.0.3").LastError != "" {
		t.Fatalf("b is up (its checks pass) and first: %s (%+v)", region, b.Status())
	}

	lnB.Close()
	waitFor(t, "127.0.0.3 down", func() bool { return !statusOf(b, "127.0.0.3").Up })
	s := statusOf(b, "127.0.0.3")
	if !strings.Contains(s.LastError, "refused") {
		t.Errorf("last error %q", s.LastError)
	}
	if _, region := b.Select(netip.MustParseAddr("192.0.2.1")); region != "a" {
		t.Errorf("b down: got %s", region)
	}

	lnB, err = net.Listen("tcp", net.JoinHostPort("127.0.0.3", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	serve(lnB)
	waitFor(t, "127.0.0.3 up", func() bool { return statusOf(b, "127.0.0.3").Up })
	if _, region := b.Select(netip.MustParseAddr("192.0.2.1")); region != "b" {
		t.Errorf("b back: got %s", region)
	}
	if !statusOf(b, "127.0.0.2").Up {
		t.Errorf("127.0.0.2 went down")
	}
}

func TestNewGSLBErrors(t *testing.T) {
	for _, c := range []struct {
		edit func(*GSLB)
		want string
	}{
		{func(g *GSLB) { g.Default = []string{"east", "north"} }, `default: unknown region "north"`},
		{func(g *GSLB) { g.Clients[0].Prefer = []string{"nowhere"} }, `client rule 1: unknown region "nowhere"`},
		{func(g *GSLB) { g.Clients[1].From = []string{"10.1.0.0/33"} }, `bad prefix "10.1.0.0/33"`},
		{func(g *GSLB) { g.Regions[1].Addresses = []string{"198.51.100.300"} }, `region "west"`},
		{func(g *GSLB) { g.Regions[1].Addresses = []string{"2001:db8::1"} }, "not an IPv4 address"},
		{func(g *GSLB) { g.Regions[1].Addresses = nil }, "no addresses"},
		{func(g *GSLB) { g.Regions[2].Name = "east" }, "declared twice"},
		{func(g *GSLB) { g.Regions[2].Addresses = []string{"203.0.113.1"} }, "is in regions"},
		{func(g *GSLB) { g.Names = nil }, "no names"},
		{func(g *GSLB) { g.Check.Port = 70000 }, "port"},
	} {
		g := sampleGSLB()
		c.edit(g)
		_, err := NewGSLB(g, nil, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want one with %q", err, c.want)
		}
	}
	// Defaults: every region in order, checks off without a port.
	g := sampleGSLB()
	g.Default, g.Check = nil, HealthCheckSpec{}
	b, err := NewGSLB(g, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, region := b.Select(netip.MustParseAddr("8.8.8.8")); region != "east" {
		t.Errorf("default order starts with %s", region)
	}
	b.Run(context.Background()) // returns at once: no checks
}
