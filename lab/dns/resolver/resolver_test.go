package resolver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"labctl/lab/dns"

	mdns "github.com/miekg/dns"
)

// steps summarises a trace: "server zone name kind" for exchanges,
// "cache name type kind" for cache hits.
func steps(tr *dns.Trace) []string {
	var out []string
	for _, s := range tr.Steps {
		if s.Cache {
			out = append(out, fmt.Sprintf("cache %s %s %s", s.Name, s.Type, s.Kind))
		} else {
			out = append(out, fmt.Sprintf("%s %s %s %s", s.Server, s.Zone, s.Name, s.Kind))
		}
	}
	return out
}

func sameSteps(t *testing.T, tr *dns.Trace, want ...string) {
	t.Helper()
	if got := steps(tr); !reflect.DeepEqual(got, want) {
		t.Fatalf("steps:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// records is the answer as "name TTL TYPE data" strings.
func records(rrs []mdns.RR) []string {
	var out []string
	for _, rr := range rrs {
		h := rr.Header()
		out = append(out, fmt.Sprintf("%s %d %s %s", h.Name, h.Ttl, mdns.TypeToString[h.Rrtype],
			strings.TrimPrefix(rr.String(), h.String())))
	}
	return out
}

func sameAnswer(t *testing.T, m *mdns.Msg, want ...string) {
	t.Helper()
	if got := records(m.Answer); !reflect.DeepEqual(got, want) {
		t.Fatalf("answer %q, want %q", got, want)
	}
}

func counter(t *testing.T, r *testResolver, k string, want int64) {
	t.Helper()
	if got := r.st.Get(k); got != want {
		t.Fatalf("counter %s = %d, want %d (%v)", k, got, want, r.st.Strings())
	}
}

func TestChainAcrossZonesThenCache(t *testing.T) {
	w := newWorld(t)
	r := newResolver(t, w, dns.ResolverConfig{})

	reply, tr := r.query(t, "www.shop.example.", mdns.TypeA, "127.0.0.1")
	if reply.Rcode != mdns.RcodeSuccess || !reply.RecursionAvailable || reply.Authoritative {
		t.Fatalf("header: %v", reply.MsgHdr)
	}
	sameAnswer(t, reply, "www.shop.example. 300 CNAME www.gslb.example.", "www.gslb.example. 60 A 192.0.2.99")
	if tr.Server != "resolver-1" || tr.Cached {
		t.Fatalf("trace: %+v", tr)
	}
	sameSteps(t, tr,
		"127.0.0.2 . www.shop.example. referral",
		"127.0.0.3 example. www.shop.example. referral",
		"127.0.0.4 shop.example. www.shop.example. cname",
		"127.0.0.3 example. www.gslb.example. referral",
		"127.0.0.5 gslb.example. www.gslb.example. answer",
	)
	if s := tr.Steps[0]; s.Type != "A" || s.Rcode != "NOERROR" || len(s.Records) != 1 || !strings.Contains(s.Records[0], "a.nic.example.") {
		t.Fatalf("referral step: %+v", s)
	}
	if s := tr.Steps[4]; len(s.Records) != 1 || !strings.Contains(s.Records[0], "192.0.2.99") {
		t.Fatalf("answer step: %+v", s)
	}
	counter(t, r, "upstream_queries", 5)
	counter(t, r, "cache_misses", 1)

	// Warm: wholly from memory.
	r.clk.advance(30 * time.Second)
	reply, tr = r.query(t, "WWW.shop.example.", mdns.TypeA, "127.0.0.1")
	sameAnswer(t, reply, "www.shop.example. 270 CNAME www.gslb.example.", "www.gslb.example. 30 A 192.0.2.99")
	if !tr.Cached {
		t.Fatalf("warm query not cached: %+v", tr)
	}
	sameSteps(t, tr, "cache www.shop.example. A cname", "cache www.gslb.example. A answer")
	if tr.Steps[1].TTL != 30 {
		t.Fatalf("cache step TTL %d, want 30", tr.Steps[1].TTL)
	}
	counter(t, r, "upstream_queries", 5)
	counter(t, r, "cache_hits", 1)

	// The A record expires before the CNAME: only its zone is asked again.
	r.clk.advance(40 * time.Second)
	reply, tr = r.query(t, "www.shop.example.", mdns.TypeA, "127.0.0.1")
	sameAnswer(t, reply, "www.shop.example. 230 CNAME www.gslb.example.", "www.gslb.example. 60 A 192.0.2.99")
	if tr.Cached {
		t.Fatal("an expired record came from the cache")
	}
	sameSteps(t, tr, "cache www.shop.example. A cname", "127.0.0.5 gslb.example. www.gslb.example. answer")
	counter(t, r, "upstream_queries", 6)
	counter(t, r, "cache_misses", 2)
}

// Answers from the cache rotate the RRset (cyclic order), each name on its
// own, so clients that take the first address spread over all of them.
func TestCachedRRsetsRotate(t *testing.T) {
	w := newWorld(t)
	r := newResolver(t, w, dns.ResolverConfig{})
	first := func(name string) string {
		reply, _ := r.query(t, name, mdns.TypeA, "127.0.0.1")
		if len(reply.Answer) == 0 {
			t.Fatalf("%s: no answer", name)
		}
		var all []string
		for _, rr := range reply.Answer {
			all = append(all, rr.(*mdns.A).A.String())
		}
		if slices.Sort(all); !slices.Equal(all, []string{"192.0.2.51", "192.0.2.52", "192.0.2.53"}) && name == "vips.shop.example." {
			t.Fatalf("%s: answer %v, want all three addresses", name, all)
		}
		return reply.Answer[0].(*mdns.A).A.String()
	}
	first("vips.shop.example.") // the miss, as received
	var got []string
	for range 4 {
		got = append(got, first("vips.shop.example."))
		first("api.shop.example.") // another name in between does not disturb the cycle
	}
	if want := []string{"192.0.2.51", "192.0.2.52", "192.0.2.53", "192.0.2.51"}; !slices.Equal(got, want) {
		t.Errorf("first addresses of 4 cached answers: %v, want %v", got, want)
	}
}

func TestMaxTTL(t *testing.T) {
	w := newWorld(t)
	r := newResolver(t, w, dns.ResolverConfig{MaxTTL: dns.Duration(100 * time.Second)})
	reply, _ := r.query(t, "api.shop.example.", mdns.TypeA, "127.0.0.1")
	sameAnswer(t, reply, "api.shop.example. 100 A 192.0.2.10")
	r.clk.advance(99 * time.Second)
	_, tr := r.query(t, "api.shop.example.", mdns.TypeA, "127.0.0.1")
	if !tr.Cached {
		t.Fatal("not cached")
	}
	r.clk.advance(2 * time.Second)
	_, tr = r.query(t, "api.shop.example.", mdns.TypeA, "127.0.0.1")
	if tr.Cached {
		t.Fatal("cached past MaxTTL")
	}
	// Delegations are capped too: the root is asked again.
	sameSteps(t, tr,
		"127.0.0.2 . api.shop.example. referral",
		"127.0.0.3 example. api.shop.example. referral",
		"127.0.0.4 shop.example. api.shop.example. answer")
}

func TestNegativeCaching(t *testing.T) {
	w := newWorld(t)
	shop := w.servers["127.0.0.4"]
	r := newResolver(t, w, dns.ResolverConfig{})

	// NXDOMAIN: min(SOA TTL 3600, minimum 60).
	reply, tr := r.query(t, "nope.shop.example.", mdns.TypeA, "127.0.0.1")
	if reply.Rcode != mdns.RcodeNameError || len(reply.Answer) != 0 {
		t.Fatalf("reply: %v", reply)
	}
	if len(reply.Ns) != 1 || reply.Ns[0].Header().Rrtype != mdns.TypeSOA || reply.Ns[0].Header().Ttl != 60 {
		t.Fatalf("authority: %v", reply.Ns)
	}
	if k := tr.Steps[len(tr.Steps)-1]; k.Kind != dns.KindNXDomain || k.Rcode != "NXDOMAIN" {
		t.Fatalf("last step %+v", k)
	}
	// NXDOMAIN covers every type of the name.
	r.clk.advance(59 * time.Second)
	reply, tr = r.query(t, "nope.shop.example.", mdns.TypeAAAA, "127.0.0.1")
	if reply.Rcode != mdns.RcodeNameError || !tr.Cached || reply.Ns[0].Header().Ttl != 1 {
		t.Fatalf("cached NXDOMAIN: %v %+v", reply, tr)
	}
	sameSteps(t, tr, "cache nope.shop.example. AAAA nxdomain")
	r.clk.advance(2 * time.Second)
	reply, _ = r.query(t, "nope.shop.example.", mdns.TypeA, "127.0.0.1")
	if reply.Rcode != mdns.RcodeNameError || shop.asked("nope.shop.example.", mdns.TypeA) != 2 {
		t.Fatalf("expired NXDOMAIN not asked again: %d", shop.asked("nope.shop.example.", mdns.TypeA))
	}
	counter(t, r, "nxdomain", 3)

	// NODATA.
	reply, tr = r.query(t, "api.shop.example.", mdns.TypeAAAA, "127.0.0.1")
	if reply.Rcode != mdns.RcodeSuccess || len(reply.Answer) != 0 || len(reply.Ns) != 1 || reply.Ns[0].Header().Ttl != 60 {
		t.Fatalf("NODATA: %v", reply)
	}
	if k := tr.Steps[len(tr.Steps)-1]; k.Kind != dns.KindNoData {
		t.Fatalf("last step %+v", k)
	}
	_, tr = r.query(t, "api.shop.example.", mdns.TypeAAAA, "127.0.0.1")
	sameSteps(t, tr, "cache api.shop.example. AAAA nodata")
	// NODATA is per type: A still resolves.
	reply, _ = r.query(t, "api.shop.example.", mdns.TypeA, "127.0.0.1")
	sameAnswer(t, reply, "api.shop.example. 300 A 192.0.2.10")

	// The TLD's SOA minimum is 300.
	reply, _ = r.query(t, "nothing.example.", mdns.TypeA, "127.0.0.1")
	if reply.Rcode != mdns.RcodeNameError || reply.Ns[0].Header().Ttl != 300 {
		t.Fatalf("TLD NXDOMAIN: %v", reply)
	}

	// NegativeTTL caps it.
	r2 := newResolver(t, w, dns.ResolverConfig{NegativeTTL: dns.Duration(10 * time.Second)})
	reply, _ = r2.query(t, "gone.shop.example.", mdns.TypeA, "127.0.0.1")
	if reply.Ns[0].Header().Ttl != 10 {
		t.Fatalf("capped negative TTL %d", reply.Ns[0].Header().Ttl)
	}
	r2.clk.advance(9 * time.Second)
	if _, tr := r2.query(t, "gone.shop.example.", mdns.TypeA, "127.0.0.1"); !tr.Cached {
		t.Fatal("not cached")
	}
	r2.clk.advance(time.Second)
	if _, tr := r2.query(t, "gone.shop.example.", mdns.TypeA, "127.0.0.1"); tr.Cached {
		t.Fatal("cached past NegativeTTL")
	}
}

func TestTruncatedRetriesOverTCP(t *testing.T) {
	w := newWorld(t)
	w.servers["127.0.0.4"].setHook(func(rw mdns.ResponseWriter, req *mdns.Msg) bool {
		if rw.RemoteAddr().Network() != "udp" || req.Question[0].Name != "big.shop.example." {
			return false
		}
		m := new(mdns.Msg)
		m.SetReply(req)
		m.Authoritative, m.Truncated = true, true
		_ = rw.WriteMsg(m)
		return true
	})
	r := newResolver(t, w, dns.ResolverConfig{})
	reply, tr := r.query(t, "big.shop.example.", mdns.TypeTXT, "127.0.0.1")
	if len(reply.Answer) != 1 || !strings.Contains(reply.Answer[0].String(), "only TCP carries") {
		t.Fatalf("answer %v", reply.Answer)
	}
	last := tr.Steps[len(tr.Steps)-1]
	if !last.TCP || last.Kind != dns.KindAnswer || tr.Steps[0].TCP {
		t.Fatalf("steps %+v", tr.Steps)
	}
	counter(t, r, "upstream_queries", 4)
}

func TestDeadServers(t *testing.T) {
	w := newWorld(t)
	r := newResolver(t, w, dns.ResolverConfig{})
	reply, tr := r.query(t, "www.flaky.example.", mdns.TypeA, "127.0.0.1")
	sameAnswer(t, reply, "www.flaky.example. 300 A 192.0.2.30")
	sameSteps(t, tr,
		"127.0.0.2 . www.flaky.example. referral",
		"127.0.0.3 example. www.flaky.example. referral",
		"127.0.0.9 flaky.example. www.flaky.example. error",
		"127.0.0.10 flaky.example. www.flaky.example. error",
		"127.0.0.4 flaky.example. www.flaky.example. answer",
	)
	if tr.Steps[2].Error == "" || tr.Steps[3].Error == "" {
		t.Fatalf("errors not traced: %+v", tr.Steps)
	}
	if r.st.Get("upstream_timeouts") < 1 {
		t.Fatal("timeout not counted")
	}

	reply, tr = r.query(t, "www.alldead.example.", mdns.TypeA, "127.0.0.1")
	if reply.Rcode != mdns.RcodeServerFailure || len(reply.Answer) != 0 {
		t.Fatalf("reply %v", reply)
	}
	sameSteps(t, tr,
		"127.0.0.3 example. www.alldead.example. referral",
		"127.0.0.9 alldead.example. www.alldead.example. error",
		"127.0.0.10 alldead.example. www.alldead.example. error",
	)
	counter(t, r, "servfail", 1)
	if r.st.Get("upstream_timeouts") < 2 {
		t.Fatal("timeout not counted")
	}
}

func TestRefusingServerSkipped(t *testing.T) {
	w := newWorld(t)
	st := new(dns.Counters)
	res, err := New(&dns.ResolverConfig{Hints: []dns.Hint{
		{Name: "x.root.", Address: "127.0.0.5"}, // not a root: REFUSED
		{Name: "a.root.", Address: "127.0.0.2"},
	}}, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	res.port, res.timeout = w.port, 200*time.Millisecond
	r := &testResolver{Resolver: res, st: st, clk: &clock{}}
	reply, tr := r.query(t, "api.shop.example.", mdns.TypeA, "127.0.0.1")
	sameAnswer(t, reply, "api.shop.example. 300 A 192.0.2.10")
	if s := tr.Steps[0]; s.Server != "127.0.0.5" || s.Kind != dns.KindError || s.Rcode != "REFUSED" {
		t.Fatalf("first step %+v", s)
	}
	if s := tr.Steps[1]; s.Server != "127.0.0.2" || s.Kind != dns.KindReferral {
		t.Fatalf("second step %+v", s)
	}
}

func TestBailiwick(t *testing.T) {
	w := newWorld(t)
	root, shop := w.servers["127.0.0.2"], w.servers["127.0.0.4"]
	rr := func(s string) mdns.RR {
		x, err := mdns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	// The root slips an address for a name that is no NS host into its
	// referral.
	root.setHook(func(rw mdns.ResponseWriter, req *mdns.Msg) bool {
		m := root.answer(req)
		m.Extra = append(m.Extra, rr("www.shop.example. 3600 IN A 6.6.6.6"))
		_ = rw.WriteMsg(m)
		return true
	})
	// The shop answers for names outside its zone and tries to take over
	// example.
	shop.setHook(func(rw mdns.ResponseWriter, req *mdns.Msg) bool {
		if n := req.Question[0].Name; n != "evil.shop.example." && n != "www.shop.example." {
			return false
		}
		m := shop.answer(req)
		m.Answer = append(m.Answer, rr("bank.example. 300 IN A 6.6.6.6"), rr("www.gslb.example. 300 IN A 6.6.6.6"))
		m.Ns = append(m.Ns, rr("example. 3600 IN NS ns.attacker.net."))
		m.Extra = append(m.Extra, rr("ns.attacker.net. 3600 IN A 6.6.6.6"), rr("a.nic.example. 3600 IN A 6.6.6.6"))
		_ = rw.WriteMsg(m)
		return true
	})
	r := newResolver(t, w, dns.ResolverConfig{})
	reply, tr := r.query(t, "evil.shop.example.", mdns.TypeA, "127.0.0.1")
	sameAnswer(t, reply, "evil.shop.example. 300 A 192.0.2.66")
	if recs := tr.Steps[len(tr.Steps)-1].Records; len(recs) != 1 {
		t.Fatalf("step records %q", recs)
	}
	now := r.now()
	for _, k := range []key{
		{name: "bank.example.", qtype: mdns.TypeA},
		{name: "bank.example.", qtype: mdns.TypeA, infra: true},
		{name: "ns.attacker.net.", qtype: mdns.TypeA, infra: true},
		{name: "ns.attacker.net.", qtype: mdns.TypeA},
		{name: "www.shop.example.", qtype: mdns.TypeA, infra: true},
		{name: "www.shop.example.", qtype: mdns.TypeA},
	} {
		if e := r.cache.get(k, now); e != nil {
			t.Errorf("%+v cached: %v", k, e.rrs)
		}
	}
	if e := r.cache.get(key{name: "example.", qtype: mdns.TypeNS, infra: true}, now); e == nil ||
		!reflect.DeepEqual(nsHosts(e.rrs), []string{"a.nic.example."}) {
		t.Fatalf("example. delegation: %v", e)
	}
	if got := r.addrs([]string{"a.nic.example."}, now); !reflect.DeepEqual(got, []netip.Addr{netip.MustParseAddr("127.0.0.3")}) {
		t.Fatalf("a.nic.example. addresses %v", got)
	}

	reply, _ = r.query(t, "bank.example.", mdns.TypeA, "127.0.0.1")
	if reply.Rcode != mdns.RcodeNameError {
		t.Fatalf("bank.example.: %v", reply)
	}
	// The CNAME's target is asked of its own zone, whatever the shop said.
	reply, tr = r.query(t, "www.shop.example.", mdns.TypeA, "127.0.0.1")
	sameAnswer(t, reply, "www.shop.example. 300 CNAME www.gslb.example.", "www.gslb.example. 60 A 192.0.2.99")
	if s := tr.Steps[len(tr.Steps)-1]; s.Server != "127.0.0.5" {
		t.Fatalf("last step %+v", s)
	}
}

func TestCNAMELoop(t *testing.T) {
	w := newWorld(t)
	r := newResolver(t, w, dns.ResolverConfig{})
	reply, tr := r.query(t, "a.shop.example.", mdns.TypeA, "127.0.0.1")
	if reply.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("reply %v", reply)
	}
	sameSteps(t, tr,
		"127.0.0.2 . a.shop.example. referral",
		"127.0.0.3 example. a.shop.example. referral",
		"127.0.0.4 shop.example. a.shop.example. cname",
		"127.0.0.4 shop.example. b.shop.example. cname",
	)
	counter(t, r, "servfail", 1)
	// Both links are cached now: the loop is found in memory too.
	reply, _ = r.query(t, "b.shop.example.", mdns.TypeA, "127.0.0.1")
	if reply.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("reply %v", reply)
	}
}

func TestLongCNAMEChain(t *testing.T) {
	w := newWorld(t)
	r := newResolver(t, w, dns.ResolverConfig{})
	// Eight hops are followed, nine are not.
	reply, _ := r.query(t, "h2.shop.example.", mdns.TypeA, "127.0.0.1")
	if reply.Rcode != mdns.RcodeSuccess || len(reply.Answer) != 9 {
		t.Fatalf("8 hops: %v", reply)
	}
	reply, _ = r.query(t, "h1.shop.example.", mdns.TypeA, "127.0.0.1")
	if reply.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("9 hops: %v", reply)
	}
}

func TestNSWithoutGlue(t *testing.T) {
	w := newWorld(t)
	r := newResolver(t, w, dns.ResolverConfig{})
	reply, tr := r.query(t, "www.nog.example.", mdns.TypeA, "127.0.0.1")
	sameAnswer(t, reply, "www.nog.example. 300 A 192.0.2.20")
	sameSteps(t, tr,
		"127.0.0.2 . www.nog.example. referral",
		"127.0.0.3 example. www.nog.example. referral",
		"127.0.0.2 . ns.nog.net. referral",
		"127.0.0.3 net. ns.nog.net. answer",
		"127.0.0.4 nog.example. www.nog.example. answer",
	)
	// The delegation and its server's address are remembered.
	_, tr = r.query(t, "mail.nog.example.", mdns.TypeA, "127.0.0.1")
	sameSteps(t, tr, "127.0.0.4 nog.example. mail.nog.example. nxdomain")
}

func TestAllow(t *testing.T) {
	w := newWorld(t)
	r := newResolver(t, w, dns.ResolverConfig{Allow: []string{"10.0.0.0/8", "192.0.2.7"}})
	reply, tr := r.query(t, "api.shop.example.", mdns.TypeA, "127.0.0.1")
	if reply.Rcode != mdns.RcodeRefused || len(tr.Steps) != 0 {
		t.Fatalf("reply %v", reply)
	}
	counter(t, r, "refused", 1)
	counter(t, r, "upstream_queries", 0)
	for _, c := range []string{"10.1.2.3", "192.0.2.7", "::ffff:10.9.9.9"} {
		if reply, _ := r.query(t, "api.shop.example.", mdns.TypeA, c); reply.Rcode != mdns.RcodeSuccess {
			t.Fatalf("%s: %v", c, reply)
		}
	}

	for _, cfg := range []dns.ResolverConfig{
		{},
		{Hints: []dns.Hint{{Name: "a.root.", Address: "nowhere"}}},
		{Hints: []dns.Hint{{Name: "a.root.", Address: "127.0.0.2"}}, Allow: []string{"10.0.0.0/33"}},
	} {
		if _, err := New(&cfg, nil, nil); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

func TestOPTAndTraceOnlyWhenAsked(t *testing.T) {
	w := newWorld(t)
	r := newResolver(t, w, dns.ResolverConfig{})
	m := new(mdns.Msg)
	m.SetQuestion("api.shop.example.", mdns.TypeA)
	if reply := r.ask(t, m, "127.0.0.1"); reply.IsEdns0() != nil || len(reply.Answer) != 1 {
		t.Fatalf("no OPT asked: %v", reply)
	}
	m.SetEdns0(4096, false)
	reply := r.ask(t, m, "127.0.0.1")
	opt := reply.IsEdns0()
	if opt == nil || opt.UDPSize() != 1232 || len(opt.Option) != 0 {
		t.Fatalf("OPT: %v", opt)
	}
	if traceOf(t, reply) != nil {
		t.Fatal("trace not asked for")
	}
}

func TestClientSubnet(t *testing.T) {
	t.Run("off", func(t *testing.T) {
		w := newWorld(t)
		r := newResolver(t, w, dns.ResolverConfig{})
		reply, _ := r.query(t, "www.gslb.example.", mdns.TypeA, "198.51.100.3")
		sameAnswer(t, reply, "www.gslb.example. 60 A 192.0.2.99")
		for a, f := range w.servers {
			if s := f.subnets(); len(s) != 0 {
				t.Fatalf("%s got client subnets %v", a, s)
			}
		}
	})
	t.Run("on", func(t *testing.T) {
		w := newWorld(t)
		gslb := w.servers["127.0.0.5"]
		r := newResolver(t, w, dns.ResolverConfig{ClientSubnet: true})
		reply, _ := r.query(t, "www.gslb.example.", mdns.TypeA, "198.51.100.3")
		sameAnswer(t, reply, "www.gslb.example. 60 A 192.0.2.1")
		s := gslb.subnets()
		if len(s) != 1 || s[0].Family != 1 || s[0].SourceNetmask != 32 || !s[0].Address.Equal(netip.MustParseAddr("198.51.100.3").AsSlice()) {
			t.Fatalf("subnets %v", s)
		}
		reply, _ = r.query(t, "www.gslb.example.", mdns.TypeA, "203.0.113.7")
		sameAnswer(t, reply, "www.gslb.example. 60 A 192.0.2.2")
		// Scoped answers are not cached.
		reply, tr := r.query(t, "www.gslb.example.", mdns.TypeA, "198.51.100.3")
		sameAnswer(t, reply, "www.gslb.example. 60 A 192.0.2.1")
		if tr.Cached || gslb.asked("www.gslb.example.", mdns.TypeA) != 3 {
			t.Fatalf("scoped answer cached: %+v", tr)
		}
		// Unscoped ones are.
		r.query(t, "api.shop.example.", mdns.TypeA, "198.51.100.3")
		if _, tr := r.query(t, "api.shop.example.", mdns.TypeA, "203.0.113.7"); !tr.Cached {
			t.Fatal("unscoped answer not cached")
		}
	})
}

func TestConcurrentMissesShareOneResolution(t *testing.T) {
	w := newWorld(t)
	shop := w.servers["127.0.0.4"]
	gate := make(chan struct{})
	shop.setHook(func(rw mdns.ResponseWriter, req *mdns.Msg) bool {
		<-gate
		return false
	})
	r := newResolver(t, w, dns.ResolverConfig{})
	r.timeout = 10 * time.Second
	const n = 20
	var wg sync.WaitGroup
	replies := make([]*mdns.Msg, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := new(mdns.Msg)
			m.SetQuestion("api.shop.example.", mdns.TypeA)
			m.SetEdns0(1232, false)
			opt := m.IsEdns0()
			opt.Option = append(opt.Option, &mdns.EDNS0_LOCAL{Code: dns.TraceOption})
			replies[i] = r.Answer(context.Background(), m, netip.MustParseAddr("127.0.0.1"))
		}()
	}
	k := fmt.Sprintf("api.shop.example./%d", mdns.TypeA)
	deadline := time.Now().Add(5 * time.Second)
	for r.flights.waiting(k) < n-1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(gate)
	wg.Wait()
	if got := r.flights.waiting(k); got != 0 {
		t.Fatalf("flight still there: %d", got)
	}
	for i := range n {
		sameAnswer(t, replies[i], "api.shop.example. 300 A 192.0.2.10")
		if tr := traceOf(t, replies[i]); tr == nil || tr.Cached || len(tr.Steps) != 3 {
			t.Fatalf("trace %d: %+v", i, tr)
		}
	}
	if got := shop.asked("api.shop.example.", mdns.TypeA); got != 1 {
		t.Fatalf("shop asked %d times", got)
	}
	counter(t, r, "upstream_queries", 3)
	counter(t, r, "cache_misses", n)
}

func TestFlush(t *testing.T) {
	w := newWorld(t)
	r := newResolver(t, w, dns.ResolverConfig{})
	r.query(t, "api.shop.example.", mdns.TypeA, "127.0.0.1")
	if n := r.Flush(); n == 0 {
		t.Fatal("nothing flushed")
	}
	if r.cache.len() != 0 {
		t.Fatal("cache not empty")
	}
	counter(t, r, "flushes", 1)
	_, tr := r.query(t, "api.shop.example.", mdns.TypeA, "127.0.0.1")
	if tr.Cached || len(tr.Steps) != 3 {
		t.Fatalf("after flush: %v", steps(tr))
	}
	if r.Flush() == 0 {
		t.Fatal("nothing flushed")
	}
	if r.Flush() != 0 {
		t.Fatal("an empty cache flushed entries")
	}
}

func TestCacheEviction(t *testing.T) {
	c := newCache(10)
	now := time.Unix(0, 0)
	rr, _ := mdns.NewRR("x. 60 IN A 192.0.2.1")
	for i := range 10 {
		exp := now.Add(time.Minute)
		if i < 3 {
			exp = now.Add(time.Second)
		}
		c.put(key{name: fmt.Sprintf("n%d.", i), qtype: mdns.TypeA}, &entry{rrs: []mdns.RR{rr}, expires: exp}, now)
	}
	later := now.Add(2 * time.Second)
	c.put(key{name: "new.", qtype: mdns.TypeA}, &entry{rrs: []mdns.RR{rr}, expires: later.Add(time.Minute)}, later)
	if c.len() != 8 {
		t.Fatalf("%d entries after evicting the expired ones", c.len())
	}
	for i := range 5 {
		c.put(key{name: fmt.Sprintf("more%d.", i), qtype: mdns.TypeA}, &entry{rrs: []mdns.RR{rr}, expires: later.Add(time.Minute)}, later)
	}
	if c.len() > 10 {
		t.Fatalf("%d entries", c.len())
	}
	if c.get(key{name: "more4.", qtype: mdns.TypeA}, later) == nil {
		t.Fatal("the newest entry went")
	}
}

func TestAllowed(t *testing.T) {
	w := newWorld(t)
	r := newResolver(t, w, dns.ResolverConfig{Allow: []string{"::ffff:10.0.0.0/104", "::ffff:192.0.2.7", "2001:db8::/32"}})
	for c, want := range map[string]bool{
		"10.1.2.3": true, "::ffff:10.9.9.9": true, "192.0.2.7": true, "192.0.2.8": false,
		"11.0.0.1": false, "2001:db8::1": true, "2001:db9::1": false,
	} {
		if got := r.Allowed(netip.MustParseAddr(c)); got != want {
			t.Errorf("Allowed(%s) = %v, want %v", c, got, want)
		}
	}
	if open := newResolver(t, w, dns.ResolverConfig{}); !open.Allowed(netip.MustParseAddr("203.0.113.1")) {
		t.Error("no Allow list refused a client")
	}
}

func TestOverload(t *testing.T) {
	w := newWorld(t)
	shop := w.servers["127.0.0.4"]
	gate := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(open)
	shop.setHook(func(rw mdns.ResponseWriter, req *mdns.Msg) bool {
		if req.Question[0].Name == "api.shop.example." {
			<-gate
		}
		return false
	})
	r := newResolver(t, w, dns.ResolverConfig{})
	r.timeout = 10 * time.Second
	r.sem = make(chan struct{}, 1)
	// Cache what the second query needs before the slot is taken.
	r.query(t, "www.nog.example.", mdns.TypeA, "127.0.0.1")

	done := make(chan *mdns.Msg)
	go func() {
		m := new(mdns.Msg)
		m.SetQuestion("api.shop.example.", mdns.TypeA)
		done <- r.Answer(context.Background(), m, netip.MustParseAddr("127.0.0.1"))
	}()
	deadline := time.Now().Add(5 * time.Second)
	for shop.asked("api.shop.example.", mdns.TypeA) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	// The one slot is busy: another miss fails at once, a hit is served.
	start := time.Now()
	reply, _ := r.query(t, "mail.nog.example.", mdns.TypeA, "127.0.0.1")
	if reply.Rcode != mdns.RcodeServerFailure || time.Since(start) > time.Second {
		t.Fatalf("miss while overloaded: %v after %v", reply, time.Since(start))
	}
	counter(t, r, "overload", 1)
	reply, tr := r.query(t, "www.nog.example.", mdns.TypeA, "127.0.0.1")
	if reply.Rcode != mdns.RcodeSuccess || !tr.Cached {
		t.Fatalf("hit while overloaded: %v", reply)
	}
	open()
	if reply := <-done; reply.Rcode != mdns.RcodeSuccess {
		t.Fatalf("blocked query: %v", reply)
	}
	// The slot is free again.
	if reply, _ := r.query(t, "mail.nog.example.", mdns.TypeA, "127.0.0.1"); reply.Rcode != mdns.RcodeNameError {
		t.Fatalf("after the overload: %v", reply)
	}
	counter(t, r, "overload", 1)
}

func TestFlightPanic(t *testing.T) {
	var g group
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("no panic")
			}
		}()
		g.do(context.Background(), "k", func() (result, []dns.Step, int) { panic("boom") })
	}()
	if len(g.m) != 0 {
		t.Fatalf("flight left behind: %v", g.m)
	}
	res, _, _ := g.do(context.Background(), "k", func() (result, []dns.Step, int) {
		return result{rcode: mdns.RcodeSuccess}, nil, 1
	})
	if res.rcode != mdns.RcodeSuccess {
		t.Fatalf("after the panic: %+v", res)
	}

	// A waiter on a flight that panics gets SERVFAIL, not a hang.
	started, release := make(chan struct{}), make(chan struct{})
	go func() {
		defer func() { _ = recover() }()
		g.do(context.Background(), "p", func() (result, []dns.Step, int) {
			close(started)
			<-release
			panic("boom")
		})
	}()
	<-started
	got := make(chan result)
	go func() {
		res, _, _ := g.do(context.Background(), "p", func() (result, []dns.Step, int) {
			return result{rcode: mdns.RcodeSuccess}, nil, 1
		})
		got <- res
	}()
	for g.waiting("p") == 0 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	select {
	case res := <-got:
		if res.rcode != mdns.RcodeServerFailure {
			t.Fatalf("waiter got %+v", res)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter hangs")
	}
}

// TestClientSubnetRegions: the GSLB answers an outsider, then a client a
// rule covers; the second gets its own region, not the outsider's.
func TestClientSubnetRegions(t *testing.T) {
	w := newWorld(t)
	gslb := w.servers["127.0.0.5"]
	r := newResolver(t, w, dns.ResolverConfig{ClientSubnet: true})
	reply, _ := r.query(t, "www.gslb.example.", mdns.TypeA, "10.7.7.7")
	sameAnswer(t, reply, "www.gslb.example. 60 A 192.0.2.99")
	reply, tr := r.query(t, "www.gslb.example.", mdns.TypeA, "198.51.100.3")
	sameAnswer(t, reply, "www.gslb.example. 60 A 192.0.2.1")
	if tr.Cached || gslb.asked("www.gslb.example.", mdns.TypeA) != 2 {
		t.Fatalf("the outsider's answer was reused: %v", steps(tr))
	}
}

// TestClientSubnetMismatch: a reply whose client subnet option is not the
// one sent is used but not cached (RFC 7871 7.3), even with scope 0; one
// that echoes it with scope 0 is cached.
func TestClientSubnetMismatch(t *testing.T) {
	for _, c := range []struct {
		name   string
		echo   func(sent *mdns.EDNS0_SUBNET) *mdns.EDNS0_SUBNET
		cached bool
	}{
		{"echo", func(e *mdns.EDNS0_SUBNET) *mdns.EDNS0_SUBNET { return e }, true},
		{"address", func(e *mdns.EDNS0_SUBNET) *mdns.EDNS0_SUBNET {
			return &mdns.EDNS0_SUBNET{Code: mdns.EDNS0SUBNET, Family: 1, SourceNetmask: 32, Address: net.IPv4(192, 0, 2, 200)}
		}, false},
		{"length", func(e *mdns.EDNS0_SUBNET) *mdns.EDNS0_SUBNET {
			return &mdns.EDNS0_SUBNET{Code: mdns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: e.Address}
		}, false},
		{"family", func(e *mdns.EDNS0_SUBNET) *mdns.EDNS0_SUBNET {
			return &mdns.EDNS0_SUBNET{Code: mdns.EDNS0SUBNET, Family: 2, SourceNetmask: 0, Address: net.IPv6zero}
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			shop := w.servers["127.0.0.4"]
			shop.setHook(func(rw mdns.ResponseWriter, req *mdns.Msg) bool {
				m := shop.answer(req)
				if e := subnetOf(req); e != nil {
					x := *c.echo(e)
					x.SourceScope = 0
					m.IsEdns0().Option = append(m.IsEdns0().Option, &x)
				}
				_ = rw.WriteMsg(m)
				return true
			})
			r := newResolver(t, w, dns.ResolverConfig{ClientSubnet: true})
			reply, _ := r.query(t, "api.shop.example.", mdns.TypeA, "198.51.100.3")
			sameAnswer(t, reply, "api.shop.example. 300 A 192.0.2.10")
			_, tr := r.query(t, "api.shop.example.", mdns.TypeA, "203.0.113.7")
			if tr.Cached != c.cached {
				t.Fatalf("cached %v, want %v: %v", tr.Cached, c.cached, steps(tr))
			}
		})
	}
}
