package resolver

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"labctl/lab/dns"

	mdns "github.com/miekg/dns"
)

// The fake internet every test resolves in, all servers on one port:
//
//	127.0.0.2   the root
//	127.0.0.3   example. and net.
//	127.0.0.4   shop.example. (h1 to h10 are a chain of nine CNAMEs),
//	            nog.example., flaky.example.
//	127.0.0.5   gslb.example., answering by client subnet
//	127.0.0.9   nothing listening
//	127.0.0.10  a server that never answers
var worldZones = map[string][]string{
	"127.0.0.2": {`
. 86400 IN SOA a.root. hostmaster.root. 1 3600 600 86400 3600
. 86400 IN NS a.root.
a.root. 86400 IN A 127.0.0.2
example. 3600 IN NS a.nic.example.
net. 3600 IN NS a.nic.example.
a.nic.example. 3600 IN A 127.0.0.3
`},
	"127.0.0.3": {`
example. 3600 IN SOA a.nic.example. hostmaster.example. 1 3600 600 86400 300
example. 3600 IN NS a.nic.example.
a.nic.example. 3600 IN A 127.0.0.3
shop.example. 3600 IN NS ns1.shop.example.
ns1.shop.example. 3600 IN A 127.0.0.4
gslb.example. 3600 IN NS ns.gslb.example.
ns.gslb.example. 3600 IN A 127.0.0.5
nog.example. 3600 IN NS ns.nog.net.
flaky.example. 3600 IN NS ns1.flaky.example.
flaky.example. 3600 IN NS ns2.flaky.example.
flaky.example. 3600 IN NS ns3.flaky.example.
ns1.flaky.example. 3600 IN A 127.0.0.9
ns2.flaky.example. 3600 IN A 127.0.0.10
ns3.flaky.example. 3600 IN A 127.0.0.4
alldead.example. 3600 IN NS ns1.alldead.example.
alldead.example. 3600 IN NS ns2.alldead.example.
ns1.alldead.example. 3600 IN A 127.0.0.9
ns2.alldead.example. 3600 IN A 127.0.0.10
`, `
net. 3600 IN SOA a.nic.example. hostmaster.net. 1 3600 600 86400 300
net. 3600 IN NS a.nic.example.
ns.nog.net. 3600 IN A 127.0.0.4
`},
	"127.0.0.4": {`
shop.example. 3600 IN SOA ns1.shop.example. hostmaster.shop.example. 1 3600 600 86400 60
shop.example. 3600 IN NS ns1.shop.example.
ns1.shop.example. 3600 IN A 127.0.0.4
www.shop.example. 300 IN CNAME www.gslb.example.
api.shop.example. 300 IN A 192.0.2.10
a.shop.example. 300 IN CNAME b.shop.example.
b.shop.example. 300 IN CNAME a.shop.example.
evil.shop.example. 300 IN A 192.0.2.66
big.shop.example. 300 IN TXT "a large record that only TCP carries"
h1.shop.example. 300 IN CNAME h2.shop.example.
h2.shop.example. 300 IN CNAME h3.shop.example.
h3.shop.example. 300 IN CNAME h4.shop.example.
h4.shop.example. 300 IN CNAME h5.shop.example.
h5.shop.example. 300 IN CNAME h6.shop.example.
h6.shop.example. 300 IN CNAME h7.shop.example.
h7.shop.example. 300 IN CNAME h8.shop.example.
h8.shop.example. 300 IN CNAME h9.shop.example.
h9.shop.example. 300 IN CNAME h10.shop.example.
h10.shop.example. 300 IN A 192.0.2.40
vips.shop.example. 300 IN A 192.0.2.51
vips.shop.example. 300 IN A 192.0.2.52
vips.shop.example. 300 IN A 192.0.2.53
`, `
nog.example. 3600 IN SOA ns.nog.net. hostmaster.nog.example. 1 3600 600 86400 60
nog.example. 3600 IN NS ns.nog.net.
www.nog.example. 300 IN A 192.0.2.20
`, `
flaky.example. 3600 IN SOA ns3.flaky.example. hostmaster.flaky.example. 1 3600 600 86400 60
flaky.example. 3600 IN NS ns3.flaky.example.
www.flaky.example. 300 IN A 192.0.2.30
`},
	"127.0.0.5": {`
gslb.example. 3600 IN SOA ns.gslb.example. hostmaster.gslb.example. 1 3600 600 86400 60
gslb.example. 3600 IN NS ns.gslb.example.
www.gslb.example. 60 IN A 192.0.2.99
`},
	"127.0.0.10": nil,
}

type fakeZone struct {
	origin string
	rrs    []mdns.RR
}

// fakeServer is a small authoritative server: referrals with glue, AA
// answers, CNAMEs (not chased), NODATA and NXDOMAIN with the SOA.
type fakeServer struct {
	addr  string
	zones []*fakeZone
	// hook, if set, sees each query first; true means it dealt with it
	// (possibly by never answering).
	hook    func(w mdns.ResponseWriter, req *mdns.Msg) bool
	queries atomic.Int64

	mu   sync.Mutex
	seen []*mdns.Msg
}

func (f *fakeServer) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	f.queries.Add(1)
	f.mu.Lock()
	f.seen = append(f.seen, req.Copy())
	hook := f.hook
	f.mu.Unlock()
	if hook != nil && hook(w, req) {
		return
	}
	if f.zones == nil {
		return // never answers
	}
	_ = w.WriteMsg(f.answer(req))
}

func (f *fakeServer) setHook(h func(w mdns.ResponseWriter, req *mdns.Msg) bool) {
	f.mu.Lock()
	f.hook = h
	f.mu.Unlock()
}

// asked is how many queries f received for name/qtype.
func (f *fakeServer) asked(name string, qtype uint16) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range f.seen {
		if q := m.Question[0]; strings.EqualFold(q.Name, name) && q.Qtype == qtype {
			n++
		}
	}
	return n
}

// subnets are the client subnet options f received.
func (f *fakeServer) subnets() []*mdns.EDNS0_SUBNET {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*mdns.EDNS0_SUBNET
	for _, m := range f.seen {
		if e := subnetOf(m); e != nil {
			out = append(out, e)
		}
	}
	return out
}

func subnetOf(m *mdns.Msg) *mdns.EDNS0_SUBNET {
	if opt := m.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if e, ok := o.(*mdns.EDNS0_SUBNET); ok {
				return e
			}
		}
	}
	return nil
}

func (f *fakeServer) answer(req *mdns.Msg) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetReply(req)
	if req.IsEdns0() != nil {
		m.SetEdns0(1232, false)
	}
	q := req.Question[0]
	qname := dns.Fqdn(q.Name)
	var z *fakeZone
	for _, c := range f.zones {
		if mdns.IsSubDomain(c.origin, qname) && (z == nil || len(c.origin) > len(z.origin)) {
			z = c
		}
	}
	if z == nil {
		m.Rcode = mdns.RcodeRefused
		return m
	}
	// The deepest delegation at or above qname.
	var cut string
	for _, rr := range z.rrs {
		o := dns.Fqdn(rr.Header().Name)
		if rr.Header().Rrtype == mdns.TypeNS && o != z.origin && mdns.IsSubDomain(o, qname) && len(o) > len(cut) {
			cut = o
		}
	}
	if cut != "" {
		for _, rr := range z.rrs {
			if ns, ok := rr.(*mdns.NS); ok && dns.Fqdn(ns.Hdr.Name) == cut {
				m.Ns = append(m.Ns, rr)
				for _, g := range z.rrs {
					if g.Header().Rrtype == mdns.TypeA && dns.Fqdn(g.Header().Name) == dns.Fqdn(ns.Ns) {
						m.Extra = append(m.Extra, g)
					}
				}
			}
		}
		return m
	}
	m.Authoritative = true
	var soa mdns.RR
	exists := false
	for _, rr := range z.rrs {
		h := rr.Header()
		o := dns.Fqdn(h.Name)
		if h.Rrtype == mdns.TypeSOA {
			soa = rr
		}
		if o == qname && (h.Rrtype == q.Qtype || h.Rrtype == mdns.TypeCNAME) {
			m.Answer = append(m.Answer, rr)
		}
		if mdns.IsSubDomain(qname, o) {
			exists = true
		}
	}
	if len(m.Answer) > 0 {
		return m
	}
	m.Ns = []mdns.RR{soa}
	if !exists {
		m.Rcode = mdns.RcodeNameError
	}
	return m
}

type world struct {
	port    uint16
	servers map[string]*fakeServer
}

// newWorld starts the fake servers on one free port of 127.0.0.x.
func newWorld(t *testing.T) *world {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		w, ok := tryWorld(t)
		if ok {
			return w
		}
	}
	t.Fatal("no port free on every fake server address")
	return nil
}

func tryWorld(t *testing.T) (*world, bool) {
	var pcs []net.PacketConn
	var ls []net.Listener
	closeAll := func() {
		for _, pc := range pcs {
			pc.Close()
		}
		for _, l := range ls {
			l.Close()
		}
	}
	pc, err := net.ListenPacket("udp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	pcs = append(pcs, pc)
	port := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	w := &world{port: port, servers: map[string]*fakeServer{}}
	addrs := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.10"}
	conns := map[string][2]any{}
	for _, a := range addrs {
		hp := netip.AddrPortFrom(netip.MustParseAddr(a), port).String()
		if a != "127.0.0.2" {
			pc, err := net.ListenPacket("udp", hp)
			if err != nil {
				closeAll()
				return nil, false
			}
			pcs = append(pcs, pc)
		}
		l, err := net.Listen("tcp", hp)
		if err != nil {
			closeAll()
			return nil, false
		}
		ls = append(ls, l)
		conns[a] = [2]any{pcs[len(pcs)-1], l}
	}
	for _, a := range addrs {
		f := &fakeServer{addr: a}
		for _, text := range worldZones[a] {
			f.zones = append(f.zones, parseZone(t, text))
		}
		w.servers[a] = f
		if a == "127.0.0.5" {
			f.hook = gslbHook(f)
		}
		c := conns[a]
		for _, srv := range []*mdns.Server{
			{PacketConn: c[0].(net.PacketConn), Handler: f},
			{Listener: c[1].(net.Listener), Handler: f},
		} {
			started := make(chan struct{})
			srv.NotifyStartedFunc = func() { close(started) }
			go func() { _ = srv.ActivateAndServe() }()
			<-started
			t.Cleanup(func() { _ = srv.Shutdown() })
		}
	}
	return w, true
}

// gslbHook answers www.gslb.example. A by the client subnet, when the
// query carries one: 198.51.100.0/24 gets 192.0.2.1, 203.0.113.0/24
// 192.0.2.2, anyone else 192.0.2.99, all with the scope the source
// prefix length, as the lab's GSLB does.
func gslbHook(f *fakeServer) func(w mdns.ResponseWriter, req *mdns.Msg) bool {
	return func(w mdns.ResponseWriter, req *mdns.Msg) bool {
		q := req.Question[0]
		e := subnetOf(req)
		if e == nil || dns.Fqdn(q.Name) != "www.gslb.example." || q.Qtype != mdns.TypeA {
			return false
		}
		m := f.answer(req)
		ip := "192.0.2.99"
		a, _ := netip.AddrFromSlice(e.Address)
		switch a = a.Unmap(); {
		case netip.MustParsePrefix("198.51.100.0/24").Contains(a):
			ip = "192.0.2.1"
		case netip.MustParsePrefix("203.0.113.0/24").Contains(a):
			ip = "192.0.2.2"
		}
		rr, _ := mdns.NewRR("www.gslb.example. 60 IN A " + ip)
		m.Answer = []mdns.RR{rr}
		opt := m.IsEdns0()
		opt.Option = append(opt.Option, &mdns.EDNS0_SUBNET{Code: mdns.EDNS0SUBNET, Family: 1,
			SourceNetmask: e.SourceNetmask, SourceScope: e.SourceNetmask, Address: e.Address})
		_ = w.WriteMsg(m)
		return true
	}
}

func parseZone(t *testing.T, text string) *fakeZone {
	z := &fakeZone{}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		rr, err := mdns.NewRR(line)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if rr.Header().Rrtype == mdns.TypeSOA {
			z.origin = dns.Fqdn(rr.Header().Name)
		}
		z.rrs = append(z.rrs, rr)
	}
	return z
}

// clock is the resolver's clock in tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type testResolver struct {
	*Resolver
	st  *dns.Counters
	clk *clock
}

// newResolver is a resolver of w with the root hint, cfg's other fields,
// a fake clock and a short exchange timeout.
func newResolver(t *testing.T, w *world, cfg dns.ResolverConfig) *testResolver {
	t.Helper()
	cfg.Hints = []dns.Hint{{Name: "a.root.", Address: "127.0.0.2"}}
	st := new(dns.Counters)
	r, err := New(&cfg, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Name = "resolver-1"
	clk := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	r.port = w.port
	r.timeout = 200 * time.Millisecond
	r.now = clk.now
	return &testResolver{Resolver: r, st: st, clk: clk}
}

// query asks r for name/qtype from client, with an OPT record and the
// trace option, and reads the reply the way a client would.
func (r *testResolver) query(t *testing.T, name string, qtype uint16, client string) (*mdns.Msg, *dns.Trace) {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(1232, false)
	opt := m.IsEdns0()
	opt.Option = append(opt.Option, &mdns.EDNS0_LOCAL{Code: dns.TraceOption})
	reply := r.ask(t, m, client)
	tr := traceOf(t, reply)
	if tr == nil {
		t.Fatalf("%s %s: no trace in the reply", name, mdns.Type(qtype).String())
	}
	return reply, tr
}

// ask sends m to r from client and packs and unpacks the reply.
func (r *testResolver) ask(t *testing.T, m *mdns.Msg, client string) *mdns.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply := r.Answer(ctx, m, netip.MustParseAddr(client))
	if reply.Id != m.Id || !reply.Response {
		t.Fatalf("not a reply to the query: %v", reply)
	}
	b, err := reply.Pack()
	if err != nil {
		t.Fatalf("pack: %v", err)
	}
	out := new(mdns.Msg)
	if err := out.Unpack(b); err != nil {
		t.Fatalf("unpack: %v", err)
	}
	return out
}

func traceOf(t *testing.T, m *mdns.Msg) *dns.Trace {
	t.Helper()
	opt := m.IsEdns0()
	if opt == nil {
		return nil
	}
	for _, o := range opt.Option {
		if l, ok := o.(*mdns.EDNS0_LOCAL); ok && l.Code == dns.TraceOption {
			tr := new(dns.Trace)
			if err := json.Unmarshal(l.Data, tr); err != nil {
				t.Fatalf("trace: %v", err)
			}
			return tr
		}
	}
	return nil
}
