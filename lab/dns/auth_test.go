package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"labctl/lab/internal/labtest"
)

// sampleZones is a small hierarchy: the root delegates test. (glue
// included), test. delegates shop.test. and holds CNAME chains, an empty
// non-terminal and a loop; shop.test. has a GSLB name and a big RRset.
func sampleZones() []*Zone {
	big := []string{}
	for i := range 40 {
		big = append(big, fmt.Sprintf(`big.shop.test. 60 IN TXT "record %02d of a large answer that will not fit in 512 bytes"`, i))
	}
	return []*Zone{
		{Origin: ".", Records: []string{
			". 86400 IN SOA a.root.test. admin.root.test. 1 7200 3600 1209600 300",
			". 86400 IN NS a.root.test.",
			"test. 172800 IN NS ns1.test.",
			"test. 172800 IN NS ns2.test.",
			"ns1.test. 172800 IN A 10.0.1.1",
			"ns2.test. 172800 IN A 10.0.1.2",
			"ns2.test. 172800 IN AAAA fd00::2",
			"a.root.test. 86400 IN A 10.0.0.1",
		}},
		{Origin: "test.", Records: []string{
			"test. 3600 IN SOA ns1.test. hostmaster.test. 1 3600 600 86400 60",
			"test. 3600 IN NS ns1.test.",
			"ns1.test. 3600 IN A 10.0.1.1",
			"shop.test. 3600 IN NS ns1.shop.test.",
			"shop.test. 3600 IN NS ns.other.example.",
			"ns1.shop.test. 3600 IN A 10.0.2.1",
			"www.test. 300 IN CNAME web.test.",
			"web.test. 300 IN CNAME host.test.",
			"host.test. 300 IN A 10.0.1.10",
			"host.test. 300 IN A 10.0.1.11",
			"out.test. 300 IN CNAME www.example.",
			"deleg.test. 300 IN CNAME www.shop.test.",
			"dangling.test. 300 IN CNAME nothere.test.",
			"loop1.test. 300 IN CNAME loop2.test.",
			"loop2.test. 300 IN CNAME loop1.test.",
			`a.b.c.test. 300 IN TXT "deep"`,
			"multi.test. 300 IN A 10.0.1.20",
			"multi.test. 300 IN AAAA fd00::20",
			`multi.test. 300 IN TXT "multi"`,
			"multi.test. 300 IN MX 10 host.test.",
			"Mixed.Case.test. 300 IN A 10.0.1.30",
		}},
		{Origin: "shop.test.", Records: append([]string{
			"shop.test. 300 IN SOA ns1.shop.test. hostmaster.shop.test. 7 3600 600 86400 600",
			"shop.test. 300 IN NS ns1.shop.test.",
			"ns1.shop.test. 300 IN A 10.0.2.1",
			"www.shop.test. 60 IN CNAME www.gslb.shop.test.",
		}, big...), GSLB: sampleGSLB()},
	}
}

func sampleGSLB() *GSLB {
	return &GSLB{
		Names: []string{"www.gslb.shop.test."},
		TTL:   Duration(5 * time.Second),
		Regions: []*Region{
			{Name: "east", Addresses: []string{"203.0.113.1", "203.0.113.2"}},
			{Name: "west", Addresses: []string{"198.51.100.1"}},
			{Name: "south", Addresses: []string{"192.0.2.1"}},
		},
		Clients: []*ClientRule{
			{From: []string{"10.0.0.0/8"}, Prefer: []string{"east", "west"}},
			{From: []string{"10.1.0.0/16"}, Prefer: []string{"west", "east"}},
			{From: []string{"100.64.0.0/10", "172.16.0.1"}, Prefer: []string{"south", "west"}},
		},
		Default: []string{"east", "west", "south"},
		Check:   HealthCheckSpec{Port: 80, Interval: Duration(10 * time.Millisecond), Timeout: Duration(10 * time.Millisecond), Fall: 2, Rise: 2},
	}
}

// fakeNet is a health-check dial whose answers the test sets.
type fakeNet struct {
	mu   sync.Mutex
	down map[string]bool // host → refuse
}

func newFakeNet() *fakeNet { return &fakeNet{down: map[string]bool{}} }

func (f *fakeNet) dial(ctx context.Context, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down[host] {
		return errors.New("connection refused")
	}
	return nil
}

func (f *fakeNet) set(host string, down bool) {
	f.mu.Lock()
	f.down[host] = down
	f.mu.Unlock()
}

// logRecorder is a slog handler that keeps what it is given.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.recs = append(l.recs, r.Clone())
	l.mu.Unlock()
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// count is how many records have a message containing msg and every
// key=value of kv among their attributes.
func (l *logRecorder) count(msg string, kv ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.recs {
		if !strings.Contains(r.Message, msg) {
			continue
		}
		attrs := map[string]string{}
		r.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		ok := true
		for i := 0; i+1 < len(kv); i += 2 {
			if attrs[kv[i]] != kv[i+1] {
				ok = false
			}
		}
		if ok {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	labtest.WaitEvery(t, 10*time.Second, 2*time.Millisecond, cond, what)
}

func newSampleAuthority(t testing.TB, fn *fakeNet) (*Authority, *Counters) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st := &Counters{}
	a, err := newAuthority(ctx, sampleZones(), st, nil, fn.dial)
	if err != nil {
		t.Fatal(err)
	}
	return a, st
}

func query(name string, qtype uint16) *mdns.Msg {
	m := new(mdns.Msg).SetQuestion(name, qtype)
	m.RecursionDesired = false
	return m
}

var someClient = netip.MustParseAddr("192.0.2.200")

func ask(t *testing.T, a *Authority, name string, qtype uint16) *mdns.Msg {
	t.Helper()
	req := query(name, qtype)
	r := a.Answer(context.Background(), req, someClient)
	if r == nil || r.Id != req.Id || !r.Response {
		t.Fatalf("%s %s: bad reply %v", name, mdns.Type(qtype).String(), r)
	}
	if _, err := r.Pack(); err != nil {
		t.Fatalf("%s %s: reply does not pack: %v", name, mdns.Type(qtype).String(), err)
	}
	return r
}

// rrs is the presentation form of records, without TTLs' influence on
// order.
func rrs(list []mdns.RR) []string {
	var out []string
	for _, rr := range list {
		out = append(out, rr.String())
	}
	return out
}

func names(list []mdns.RR) []string {
	var out []string
	for _, rr := range list {
		out = append(out, rr.Header().Name+" "+mdns.Type(rr.Header().Rrtype).String())
	}
	return out
}

func wantRcode(t *testing.T, r *mdns.Msg, rcode int) {
	t.Helper()
	if r.Rcode != rcode {
		t.Fatalf("rcode %s, want %s\n%v", RcodeName(r.Rcode), RcodeName(rcode), r)
	}
}

func wantNegative(t *testing.T, r *mdns.Msg, rcode int, origin string, ttl uint32) {
	t.Helper()
	wantRcode(t, r, rcode)
	if !r.Authoritative {
		t.Errorf("AA not set on a negative answer")
	}
	if len(r.Ns) != 1 {
		t.Fatalf("authority %v, want the SOA of %s", r.Ns, origin)
	}
	soa, ok := r.Ns[0].(*mdns.SOA)
	if !ok || soa.Hdr.Name != origin {
		t.Fatalf("authority %v, want the SOA of %s", r.Ns, origin)
	}
	if soa.Hdr.Ttl != ttl {
		t.Errorf("negative SOA TTL %d, want %d", soa.Hdr.Ttl, ttl)
	}
}

func TestAuthorityReferral(t *testing.T) {
	a, st := newSampleAuthority(t, newFakeNet())

	r := ask(t, a, "foo.", mdns.TypeA)
	wantNegative(t, r, mdns.RcodeNameError, ".", 300)

	// test. is served here too, so a query for a test. name is answered
	// by the closest zone, not referred by the root.
	r = ask(t, a, "host.test.", mdns.TypeA)
	wantRcode(t, r, mdns.RcodeSuccess)
	if !r.Authoritative || len(r.Answer) != 2 {
		t.Fatalf("host.test. A: %v", r)
	}

	// The root alone refers test. with glue, AA clear.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root, err := NewAuthority(ctx, sampleZones()[:1], st, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"test.", "www.shop.test.", "NS1.Test."} {
		r = ask(t, root, q, mdns.TypeA)
		wantRcode(t, r, mdns.RcodeSuccess)
		if r.Authoritative || len(r.Answer) != 0 {
			t.Errorf("%s: referral with AA or answers: %v", q, r)
		}
		if got, want := names(r.Ns), []string{"test. NS", "test. NS"}; !slices.Equal(got, want) {
			t.Errorf("%s: authority %v, want %v", q, got, want)
		}
		if got, want := names(r.Extra), []string{"ns1.test. A", "ns2.test. A", "ns2.test. AAAA"}; !slices.Equal(got, want) {
			t.Errorf("%s: glue %v, want %v", q, got, want)
		}
	}
	// The root's own NS query is answered, and the occluded-looking glue
	// of its own server is data at the root.
	r = ask(t, root, ".", mdns.TypeNS)
	if !r.Authoritative || len(r.Answer) != 1 {
		t.Errorf(". NS: %v", r)
	}

	// With shop.test. served here, its own zone answers.
	r = ask(t, a, "x.y.shop.test.", mdns.TypeA)
	wantNegative(t, r, mdns.RcodeNameError, "shop.test.", 300)

	// test. refers shop.test.: the in-bailiwick server has glue, the
	// other one none; NS at the cut is a referral too.
	testOnly, err := NewAuthority(ctx, sampleZones()[1:2], st, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, qt := range []uint16{mdns.TypeA, mdns.TypeNS, mdns.TypeSOA} {
		r = ask(t, testOnly, "www.shop.test.", qt)
		if r.Authoritative || r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 0 {
			t.Errorf("www.shop.test. %s: not a referral: %v", mdns.Type(qt).String(), r)
		}
		if got, want := names(r.Ns), []string{"shop.test. NS", "shop.test. NS"}; !slices.Equal(got, want) {
			t.Errorf("authority %v, want %v", got, want)
		}
		if got, want := rrs(r.Extra), []string{"ns1.shop.test.\t3600\tIN\tA\t10.0.2.1"}; !slices.Equal(got, want) {
			t.Errorf("glue %v, want %v", got, want)
		}
	}
	r = ask(t, testOnly, "shop.test.", mdns.TypeNS)
	if r.Authoritative || len(r.Ns) != 2 {
		t.Errorf("shop.test. NS at the parent: %v", r)
	}
	// DS belongs to the parent side of the cut (RFC 4035): NODATA here.
	r = ask(t, testOnly, "shop.test.", mdns.TypeDS)
	wantNegative(t, r, mdns.RcodeSuccess, "test.", 60)
	// A CNAME whose target is below a cut is not chased.
	r = ask(t, testOnly, "deleg.test.", mdns.TypeA)
	if got, want := names(r.Answer), []string{"deleg.test. CNAME"}; !r.Authoritative || !slices.Equal(got, want) || len(r.Ns) != 0 {
		t.Errorf("deleg.test. A: %v", r)
	}
	if st.Get("referrals") == 0 {
		t.Errorf("no referrals counted: %v", st.Strings())
	}
}

func TestAuthorityAnswers(t *testing.T) {
	a, st := newSampleAuthority(t, newFakeNet())

	r := ask(t, a, "www.test.", mdns.TypeA)
	wantRcode(t, r, mdns.RcodeSuccess)
	if got, want := names(r.Answer), []string{"www.test. CNAME", "web.test. CNAME", "host.test. A", "host.test. A"}; !r.Authoritative || !slices.Equal(got, want) {
		t.Errorf("www.test. A: %v, want %v", got, want)
	}
	// CNAME asked: the CNAME alone, not chased.
	r = ask(t, a, "www.test.", mdns.TypeCNAME)
	if got, want := names(r.Answer), []string{"www.test. CNAME"}; !slices.Equal(got, want) {
		t.Errorf("www.test. CNAME: %v", got)
	}
	// Out of zone: the chain stops at the zone's edge.
	r = ask(t, a, "out.test.", mdns.TypeA)
	if got, want := names(r.Answer), []string{"out.test. CNAME"}; r.Rcode != mdns.RcodeSuccess || !slices.Equal(got, want) || len(r.Ns) != 0 {
		t.Errorf("out.test. A: %v", r)
	}
	// Into another zone served here: the chain also stops (the asker
	// asks again).
	r = ask(t, a, "www.shop.test.", mdns.TypeA)
	if got, want := names(r.Answer), []string{"www.shop.test. CNAME", "www.gslb.shop.test. A", "www.gslb.shop.test. A"}; !slices.Equal(got, want) {
		t.Errorf("www.shop.test. A: %v, want %v", got, want)
	}
	// A dangling CNAME: NXDOMAIN for the target, the chain in the answer.
	r = ask(t, a, "dangling.test.", mdns.TypeA)
	wantNegative(t, r, mdns.RcodeNameError, "test.", 60)
	if got, want := names(r.Answer), []string{"dangling.test. CNAME"}; !slices.Equal(got, want) {
		t.Errorf("dangling.test. A: %v", got)
	}
	// A chain that ends without data of the type: NODATA with the chain.
	r = ask(t, a, "www.test.", mdns.TypeTXT)
	wantNegative(t, r, mdns.RcodeSuccess, "test.", 60)
	if len(r.Answer) != 2 {
		t.Errorf("www.test. TXT: %v", r)
	}
	// A loop ends.
	r = ask(t, a, "loop1.test.", mdns.TypeA)
	wantRcode(t, r, mdns.RcodeSuccess)
	if got, want := names(r.Answer), []string{"loop1.test. CNAME", "loop2.test. CNAME"}; !slices.Equal(got, want) {
		t.Errorf("loop1.test. A: %v", got)
	}

	// NODATA and NXDOMAIN, the SOA TTL capped by its minimum.
	r = ask(t, a, "host.test.", mdns.TypeAAAA)
	wantNegative(t, r, mdns.RcodeSuccess, "test.", 60)
	if len(r.Answer) != 0 {
		t.Errorf("NODATA with answers: %v", r)
	}
	r = ask(t, a, "host.test.", 65280)
	wantNegative(t, r, mdns.RcodeSuccess, "test.", 60)
	r = ask(t, a, "nothere.test.", mdns.TypeA)
	wantNegative(t, r, mdns.RcodeNameError, "test.", 60)
	r = ask(t, a, "nothere.shop.test.", mdns.TypeA)
	wantNegative(t, r, mdns.RcodeNameError, "shop.test.", 300)
	// Empty non-terminals exist: NODATA, and names under a leaf do not.
	for _, n := range []string{"c.test.", "b.c.test."} {
		r = ask(t, a, n, mdns.TypeA)
		wantNegative(t, r, mdns.RcodeSuccess, "test.", 60)
	}
	r = ask(t, a, "a.b.c.test.", mdns.TypeTXT)
	if len(r.Answer) != 1 || !r.Authoritative {
		t.Errorf("a.b.c.test. TXT: %v", r)
	}
	r = ask(t, a, "x.a.b.c.test.", mdns.TypeTXT)
	wantNegative(t, r, mdns.RcodeNameError, "test.", 60)

	// ANY: every RRset at the name.
	r = ask(t, a, "multi.test.", mdns.TypeANY)
	if got, want := names(r.Answer), []string{"multi.test. A", "multi.test. AAAA", "multi.test. TXT", "multi.test. MX"}; !slices.Equal(got, want) {
		t.Errorf("multi.test. ANY: %v", got)
	}
	r = ask(t, a, "c.test.", mdns.TypeANY)
	wantNegative(t, r, mdns.RcodeSuccess, "test.", 60)

	// Case does not matter, in the question or in the zone data.
	for _, n := range []string{"HOST.TEST.", "Host.Test.", "mixed.case.test.", "MIXED.CASE.TEST."} {
		r = ask(t, a, n, mdns.TypeA)
		if r.Rcode != mdns.RcodeSuccess || len(r.Answer) == 0 || !r.Authoritative {
			t.Errorf("%s A: %v", n, r)
		}
		if r.Question[0].Name != n {
			t.Errorf("question rewritten: %v", r.Question[0])
		}
	}
	r = ask(t, a, "WWW.Test.", mdns.TypeA)
	if len(r.Answer) != 4 {
		t.Errorf("WWW.Test. A: %v", r)
	}

	// SOA and apex NS.
	r = ask(t, a, "test.", mdns.TypeSOA)
	if len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 3600 {
		t.Errorf("test. SOA: %v", r)
	}

	// Out of every zone... there is none out of the root; a root-less
	// authority refuses.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	shop, err := newAuthority(ctx, sampleZones()[2:], st, nil, newFakeNet().dial)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"test.", "example.", "shop.test.example.", "hop.test."} {
		r = ask(t, shop, n, mdns.TypeA)
		wantRcode(t, r, mdns.RcodeRefused)
		if r.Authoritative || len(r.Answer)+len(r.Ns)+len(r.Extra) != 0 {
			t.Errorf("%s: REFUSED with data: %v", n, r)
		}
	}
	for _, k := range []string{"answers", "nxdomain", "nodata", "refused"} {
		if st.Get(k) == 0 {
			t.Errorf("counter %s is 0: %v", k, st.Strings())
		}
	}
}

func TestAuthorityRecordsAreCopies(t *testing.T) {
	a, _ := newSampleAuthority(t, newFakeNet())
	r := ask(t, a, "host.test.", mdns.TypeA)
	r.Answer[0].Header().Ttl = 1
	r.Answer[0].Header().Name = "changed."
	r = ask(t, a, "host.test.", mdns.TypeA)
	if r.Answer[0].Header().Ttl != 300 || r.Answer[0].Header().Name != "host.test." {
		t.Errorf("the zone data changed with an answer: %v", r.Answer[0])
	}
}

func TestAuthorityGSLB(t *testing.T) {
	fn := newFakeNet()
	a, st := newSampleAuthority(t, fn)
	b := a.Balancer("shop.test.")
	if b == nil {
		t.Fatal("no balancer")
	}
	b.mu.Lock()
	b.graceUntil = time.Time{} // failures count at once (TestGSLBStartupGrace)
	b.mu.Unlock()

	r := ask(t, a, "www.gslb.shop.test.", mdns.TypeA)
	if got, want := rrs(r.Answer), []string{
		"www.gslb.shop.test.\t5\tIN\tA\t203.0.113.1",
		"www.gslb.shop.test.\t5\tIN\tA\t203.0.113.2",
	}; !r.Authoritative || !slices.Equal(got, want) {
		t.Errorf("gslb A: %v, want %v", got, want)
	}
	for _, qt := range []uint16{mdns.TypeAAAA, mdns.TypeTXT, mdns.TypeMX, mdns.TypeANY} {
		r = ask(t, a, "WWW.GSLB.shop.test.", qt)
		wantNegative(t, r, mdns.RcodeSuccess, "shop.test.", 300)
	}
	// The name above the balanced one exists (an empty non-terminal).
	r = ask(t, a, "gslb.shop.test.", mdns.TypeA)
	wantNegative(t, r, mdns.RcodeSuccess, "shop.test.", 300)

	// The client's address picks the rule.
	req := query("www.gslb.shop.test.", mdns.TypeA)
	r = a.Answer(context.Background(), req, netip.MustParseAddr("10.1.9.9"))
	if got, want := rrs(r.Answer), []string{"www.gslb.shop.test.\t5\tIN\tA\t198.51.100.1"}; !slices.Equal(got, want) {
		t.Errorf("gslb A for 10.1.9.9: %v", got)
	}
	if r.IsEdns0() != nil {
		t.Errorf("an OPT in the reply to a query without one")
	}

	// An ECS option stands in for the client, and a GSLB answer echoes it
	// with a scope of its source prefix (RFC 7871): never the rule's
	// prefix, which may hold more specific rules, nor 0 for Default.
	ecsQuery := func(prefix string) *mdns.Msg {
		m := query("www.gslb.shop.test.", mdns.TypeA)
		m.SetEdns0(1232, false)
		p := netip.MustParsePrefix(prefix)
		e := &mdns.EDNS0_SUBNET{Code: mdns.EDNS0SUBNET, Family: 1, SourceNetmask: uint8(p.Bits()), Address: p.Addr().AsSlice()}
		if p.Addr().Is6() {
			e.Family = 2
		}
		m.IsEdns0().Option = append(m.IsEdns0().Option, e)
		return m
	}
	for _, c := range []struct {
		prefix string
		addrs  []string
		scope  uint8
	}{
		{"10.1.2.0/24", []string{"198.51.100.1"}, 24},
		{"10.200.0.0/24", []string{"203.0.113.1", "203.0.113.2"}, 24}, // the /8 rule holds the /16 one
		{"10.0.0.0/12", []string{"203.0.113.1", "203.0.113.2"}, 12},
		{"100.100.100.0/24", []string{"192.0.2.1"}, 24},
		{"172.16.0.1/32", []string{"192.0.2.1"}, 32},
		{"8.8.8.0/24", []string{"203.0.113.1", "203.0.113.2"}, 24}, // Default: still this subnet only
		{"0.0.0.0/0", []string{"198.51.100.1"}, 0},                 // ECS declined: the client's own address, scope 0
	} {
		r = a.Answer(context.Background(), ecsQuery(c.prefix), netip.MustParseAddr("10.1.0.53"))
		var got []string
		for _, rr := range r.Answer {
			got = append(got, rr.(*mdns.A).A.String())
		}
		if slices.Sort(got); !slices.Equal(got, c.addrs) {
			t.Errorf("ECS %s: %v, want %v", c.prefix, got, c.addrs)
		}
		opt := r.IsEdns0()
		if opt == nil || len(opt.Option) != 1 {
			t.Fatalf("ECS %s: no option echoed: %v", c.prefix, r)
		}
		e := opt.Option[0].(*mdns.EDNS0_SUBNET)
		if e.SourceScope != c.scope || int(e.SourceNetmask) != netip.MustParsePrefix(c.prefix).Bits() {
			t.Errorf("ECS %s: echoed %v, want scope %d", c.prefix, e, c.scope)
		}
		if _, err := r.Pack(); err != nil {
			t.Errorf("ECS %s: %v", c.prefix, err)
		}
	}
	// Any answer echoes ECS, scope 0 when the answer is not tailored.
	m := query("host.test.", mdns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().Option = []mdns.EDNS0{&mdns.EDNS0_SUBNET{Code: mdns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(10, 1, 2, 0)}}
	r = a.Answer(context.Background(), m, someClient)
	if opt := r.IsEdns0(); opt == nil || opt.Option[0].(*mdns.EDNS0_SUBNET).SourceScope != 0 {
		t.Errorf("no ECS echo with scope 0: %v", r)
	}

	// Region failover as addresses go down.
	fn.set("203.0.113.1", true)
	waitFor(t, "203.0.113.1 down", func() bool { return !statusOf(b, "203.0.113.1").Up })
	r = ask(t, a, "www.gslb.shop.test.", mdns.TypeA)
	if got, want := rrs(r.Answer), []string{"www.gslb.shop.test.\t5\tIN\tA\t203.0.113.2"}; !slices.Equal(got, want) {
		t.Errorf("one east address down: %v", got)
	}
	fn.set("203.0.113.2", true)
	waitFor(t, "east down", func() bool { return st.Get("gslb_up_east") == 0 })
	r = ask(t, a, "www.gslb.shop.test.", mdns.TypeA)
	if got, want := rrs(r.Answer), []string{"www.gslb.shop.test.\t5\tIN\tA\t198.51.100.1"}; !slices.Equal(got, want) {
		t.Errorf("east down: %v", got)
	}
	if st.Get("gslb_region_west") == 0 || st.Get("gslb_answers") == 0 {
		t.Errorf("counters: %v", st.Strings())
	}
	fn.set("203.0.113.1", false)
	fn.set("203.0.113.2", false)
	waitFor(t, "east up", func() bool { return st.Get("gslb_up_east") == 2 })
	r = ask(t, a, "www.gslb.shop.test.", mdns.TypeA)
	if len(r.Answer) != 2 {
		t.Errorf("east back: %v", r.Answer)
	}
}

func statusOf(b *Balancer, addr string) AddrStatus {
	for _, s := range b.Status() {
		if s.Address.String() == addr {
			return s
		}
	}
	panic("no status of " + addr)
}

func TestNewAuthorityErrors(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	soa := "test. 60 IN SOA ns1.test. h.test. 1 2 3 4 5"
	for _, c := range []struct {
		zones []*Zone
		want  string
	}{
		{[]*Zone{{Origin: "test.", Records: []string{soa, "www.test. 60 IN A 10.0.0.300"}}}, `zone test.: record "www.test. 60 IN A 10.0.0.300"`},
		{[]*Zone{{Origin: "test.", Records: []string{soa, "www.test. 60 IN BOGUS x"}}}, "BOGUS"},
		{[]*Zone{{Origin: "test.", Records: []string{"www.test. 60 IN A 10.0.0.1"}}}, "no SOA"},
		{[]*Zone{{Origin: "test.", Records: []string{soa, "www.example. 60 IN TXT x"}}}, "outside the zone"},
		{[]*Zone{{Origin: "test.", Records: []string{soa, "www.test. 60 IN CNAME a.test.", "www.test. 60 IN A 10.0.0.1"}}}, "CNAME and other data"},
		{[]*Zone{{Origin: "test.", Records: []string{soa, "www.test. 60 CH TXT x"}}}, "not IN"},
		{[]*Zone{{Origin: "test.", Records: []string{soa}}, {Origin: "TEST.", Records: []string{soa}}}, "declared twice"},
		{[]*Zone{{Origin: "test.", Records: []string{soa}, GSLB: &GSLB{Names: []string{"www.example."}, Regions: []*Region{{Name: "r", Addresses: []string{"10.0.0.1"}}}}}}, "outside the zone"},
		{[]*Zone{{Origin: "test.", Records: []string{soa}, GSLB: &GSLB{Names: []string{"www.test."}, Regions: []*Region{{Name: "r", Addresses: []string{"10.0.0.1"}}}, Default: []string{"x"}}}}, `unknown region "x"`},
	} {
		_, err := NewAuthority(ctx, c.zones, nil, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want one with %q", err, c.want)
		}
	}
	// Out-of-zone address records are kept as glue.
	a, err := NewAuthority(ctx, []*Zone{{Origin: "test.", Records: []string{soa,
		"shop.test. 60 IN NS ns.example.", "ns.example. 60 IN A 10.9.9.9"}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := ask(t, a, "shop.test.", mdns.TypeA)
	if len(r.Extra) != 1 {
		t.Errorf("no out-of-zone glue: %v", r)
	}
	r = ask(t, a, "ns.example.", mdns.TypeA)
	wantRcode(t, r, mdns.RcodeRefused)
}
