// Package resolver is the lab's caching recursive resolver: it resolves
// iteratively from the root hints (RFC 1034 5.3.3), follows CNAME chains
// across zones, caches answers, delegations and negative answers (RFC
// 2308), keeps to bailiwick, and reports what it did as a trace when a
// query asks for one. httpdns.go serves the same resolver over HTTP.
package resolver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"labctl/lab/dns"

	mdns "github.com/miekg/dns"
)

// Limits of one resolution.
const (
	maxCNAMEs    = 8  // CNAME hops followed
	maxReferrals = 16 // referrals followed, sub-resolutions included
	maxDepth     = 3  // nested sub-resolutions of NS names without glue
	udpSize      = 1232
	// exchangeTimeout bounds one exchange with one server.
	exchangeTimeout = 800 * time.Millisecond
	// maxResolutions bounds the queries resolved (or waiting on a shared
	// resolution) upstream at once; past it, misses get SERVFAIL.
	maxResolutions = 512
)

// Resolver is a caching recursive resolver; it implements dns.Answerer.
type Resolver struct {
	// Name is the node the resolver runs on, written into traces.
	Name string

	hints   []netip.Addr
	allow   []netip.Prefix
	ecs     bool
	maxTTL  time.Duration
	negTTL  time.Duration
	st      *dns.Counters
	log     *slog.Logger
	cache   *cache
	flights group
	// sem holds a slot per query on the non-cached path.
	sem chan struct{}

	// port is where every upstream server is asked; tests move it.
	port uint16
	// timeout bounds one exchange.
	timeout time.Duration
	// now is the cache's clock.
	now func() time.Time
}

// New builds a resolver from cfg; counters go to st.
func New(cfg *dns.ResolverConfig, st *dns.Counters, log *slog.Logger) (*Resolver, error) {
	if cfg == nil {
		return nil, errors.New("resolver: no configuration")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Resolver{
		ecs:     cfg.ClientSubnet,
		maxTTL:  time.Duration(cfg.MaxTTL),
		negTTL:  time.Duration(cfg.NegativeTTL),
		st:      st,
		log:     log,
		cache:   newCache(maxEntries),
		sem:     make(chan struct{}, maxResolutions),
		port:    dns.Port,
		timeout: exchangeTimeout,
		now:     time.Now,
	}
	if r.maxTTL <= 0 {
		r.maxTTL = dns.DefaultMaxTTL
	}
	if r.negTTL <= 0 {
		r.negTTL = dns.DefaultNegativeTTL
	}
	if len(cfg.Hints) == 0 {
		return nil, errors.New("resolver: no root hints")
	}
	for _, h := range cfg.Hints {
		a, err := netip.ParseAddr(h.Address)
		if err != nil {
			return nil, fmt.Errorf("resolver: hint %s: %w", h.Name, err)
		}
		r.hints = append(r.hints, a.Unmap())
	}
	for _, s := range cfg.Allow {
		p, err := parseAllow(s)
		if err != nil {
			return nil, fmt.Errorf("resolver: allow %q: %w", s, err)
		}
		r.allow = append(r.allow, p)
	}
	return r, nil
}

// parseAllow reads a prefix or a lone address, IPv4-mapped IPv6 ones
// unmapped (clients are unmapped before they are checked).
func parseAllow(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil {
			return netip.Prefix{}, err
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
	}
	return p.Masked(), nil
}

// Flush empties the cache and says how many entries went.
func (r *Resolver) Flush() int {
	r.st.Add("flushes", 1)
	return r.cache.flush()
}

// Allowed says whether client may use the resolver: any client when
// no Allow list is configured, else those inside one of its prefixes.
func (r *Resolver) Allowed(client netip.Addr) bool {
	if len(r.allow) == 0 {
		return true
	}
	client = client.Unmap()
	for _, p := range r.allow {
		if p.Contains(client) {
			return true
		}
	}
	return false
}

// state is one resolution under way: sub-resolutions share it.
type state struct {
	client    netip.Addr
	cacheOnly bool // answer from memory or not at all
	steps     []dns.Step
	exchanges int
	referrals int
}

// result is what a resolution gives: rcode -1 means the cache alone could
// not answer.
type result struct {
	rcode  int
	answer []mdns.RR
	ns     []mdns.RR
}

// outcome is what one name gave, from the cache or from one server.
type outcome struct {
	kind   string    // dns.Kind*, "" for a cache miss
	chain  []mdns.RR // CNAMEs, in order
	final  []mdns.RR // the RRset asked for
	target string    // where a CNAME kind points
	ns     []mdns.RR // the SOA of a negative answer
}

// referral is a delegation to descend into.
type referral struct {
	zone    string
	ns      []mdns.RR
	servers []netip.Addr
	hosts   []string
}

// Answer resolves req's question on behalf of client.
func (r *Resolver) Answer(ctx context.Context, req *mdns.Msg, client netip.Addr) *mdns.Msg {
	start := time.Now()
	client = client.Unmap()
	m := new(mdns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	m.Authoritative = false
	m.Compress = true
	tr := &dns.Trace{Server: r.Name, Steps: []dns.Step{}}

	if !r.Allowed(client) {
		r.st.Add("refused", 1)
		m.Rcode = mdns.RcodeRefused
		return r.finish(m, req, tr, start)
	}
	if len(req.Question) == 0 {
		m.Rcode = mdns.RcodeFormatError
		return r.finish(m, req, tr, start)
	}
	q := req.Question[0]
	name := dns.Fqdn(q.Name)

	s := &state{client: client, cacheOnly: true}
	res := r.resolve(ctx, s, name, q.Qtype, 0)
	if res.rcode >= 0 {
		r.st.Add("cache_hits", 1)
		tr.Cached = true
		tr.Steps = s.steps
	} else {
		r.st.Add("cache_misses", 1)
		res = r.miss(ctx, tr, name, q.Qtype, client)
	}
	switch res.rcode {
	case mdns.RcodeServerFailure:
		r.st.Add("servfail", 1)
	case mdns.RcodeNameError:
		r.st.Add("nxdomain", 1)
	}
	m.Rcode = res.rcode
	m.Answer = res.answer
	m.Ns = res.ns
	return r.finish(m, req, tr, start)
}

// miss resolves name/qtype upstream, sharing the work with identical
// concurrent misses, unless maxResolutions are under way already: then
// it is SERVFAIL at once.
func (r *Resolver) miss(ctx context.Context, tr *dns.Trace, name string, qtype uint16, client netip.Addr) result {
	select {
	case r.sem <- struct{}{}:
		defer func() { <-r.sem }()
	default:
		r.st.Add("overload", 1)
		return result{rcode: mdns.RcodeServerFailure}
	}
	k := fmt.Sprintf("%s/%d", name, qtype)
	if r.ecs {
		k += "/" + client.String()
	}
	res, steps, exchanges := r.flights.do(ctx, k, func() (result, []dns.Step, int) {
		s := &state{client: client}
		res := r.resolve(ctx, s, name, qtype, 0)
		return res, s.steps, s.exchanges
	})
	tr.Cached = exchanges == 0
	tr.Steps = append(tr.Steps, steps...)
	return res
}

// finish adds the OPT record a query with one expects, and the trace if
// it asked.
func (r *Resolver) finish(m, req *mdns.Msg, tr *dns.Trace, start time.Time) *mdns.Msg {
	ropt := req.IsEdns0()
	if ropt == nil {
		return m
	}
	m.SetEdns0(udpSize, false)
	if !traceAsked(ropt) {
		return m
	}
	tr.Elapsed = ms(time.Since(start))
	b, err := json.Marshal(tr)
	if err != nil {
		r.log.Warn("trace", "err", err)
		return m
	}
	opt := m.IsEdns0()
	opt.Option = append(opt.Option, &mdns.EDNS0_LOCAL{Code: dns.TraceOption, Data: b})
	return m
}

func traceAsked(opt *mdns.OPT) bool {
	for _, o := range opt.Option {
		if l, ok := o.(*mdns.EDNS0_LOCAL); ok && l.Code == dns.TraceOption {
			return true
		}
	}
	return false
}

// resolve answers qname/qtype: the CNAME chain, then the RRset or the
// negative answer's SOA. Each name is looked up in the cache first, then
// upstream unless s.cacheOnly.
func (r *Resolver) resolve(ctx context.Context, s *state, qname string, qtype uint16, depth int) result {
	name := qname
	var chain []mdns.RR
	seen := map[string]bool{name: true}
	for {
		o := r.fromCache(s, name, qtype)
		if o.kind == "" {
			if s.cacheOnly {
				return result{rcode: -1}
			}
			if err := ctx.Err(); err != nil {
				r.log.Debug("resolution abandoned", "name", qname, "err", err)
				return result{rcode: mdns.RcodeServerFailure}
			}
			o = r.iterate(ctx, s, name, qtype, depth)
		}
		for _, rr := range o.chain {
			t := dns.Fqdn(rr.(*mdns.CNAME).Target)
			if len(chain) >= maxCNAMEs || seen[t] {
				r.log.Debug("CNAME chain too long or looping", "name", qname, "at", t)
				return result{rcode: mdns.RcodeServerFailure}
			}
			seen[t] = true
			chain = append(chain, rr)
		}
		switch o.kind {
		case dns.KindAnswer:
			return result{rcode: mdns.RcodeSuccess, answer: append(chain, o.final...)}
		case dns.KindCNAME:
			name = o.target
		case dns.KindNXDomain:
			return result{rcode: mdns.RcodeNameError, answer: chain, ns: o.ns}
		case dns.KindNoData:
			return result{rcode: mdns.RcodeSuccess, answer: chain, ns: o.ns}
		default:
			return result{rcode: mdns.RcodeServerFailure}
		}
	}
}

// fromCache looks name/qtype up in the answer cache.
func (r *Resolver) fromCache(s *state, name string, qtype uint16) outcome {
	now := r.now()
	hit := func(kind string, e *entry, rrs []mdns.RR) {
		st := dns.Step{Cache: true, Name: name, Type: mdns.Type(qtype).String(), Kind: kind,
			Rcode: "NOERROR", Records: rrStrings(rrs), TTL: e.remaining(now)}
		if kind == dns.KindNXDomain {
			st.Rcode = "NXDOMAIN"
		}
		s.steps = append(s.steps, st)
	}
	if e := r.cache.get(key{name: name, qtype: mdns.TypeNone}, now); e != nil {
		ns := []mdns.RR{soaLeft(e, now)}
		hit(dns.KindNXDomain, e, ns)
		return outcome{kind: dns.KindNXDomain, ns: ns}
	}
	if e := r.cache.get(key{name: name, qtype: qtype}, now); e != nil {
		if e.kind == entryNoData {
			ns := []mdns.RR{soaLeft(e, now)}
			hit(dns.KindNoData, e, ns)
			return outcome{kind: dns.KindNoData, ns: ns}
		}
		// Cyclic order, as resolvers rotate cached RRsets: clients that
		// take the first address spread over all of them.
		k := int((e.turn.Add(1) - 1) % uint64(len(e.rrs)))
		rrs := rotated(e.rrs, e.remaining(now), k)
		hit(dns.KindAnswer, e, rrs)
		return outcome{kind: dns.KindAnswer, final: rrs}
	}
	if qtype != mdns.TypeCNAME {
		if e := r.cache.get(key{name: name, qtype: mdns.TypeCNAME}, now); e != nil && e.kind == entryData {
			rrs := withTTL(e.rrs[:1], e.remaining(now))
			hit(dns.KindCNAME, e, rrs)
			return outcome{kind: dns.KindCNAME, chain: rrs, target: dns.Fqdn(rrs[0].(*mdns.CNAME).Target)}
		}
	}
	return outcome{}
}

func soaLeft(e *entry, now time.Time) mdns.RR {
	soa := mdns.Copy(e.soa)
	soa.Header().Ttl = e.remaining(now)
	return soa
}

// iterate asks the servers of the closest known zone cut and descends
// referrals until one answers for name.
func (r *Resolver) iterate(ctx context.Context, s *state, name string, qtype uint16, depth int) outcome {
	zone, servers := r.closest(name)
	for {
		o, ref := r.askZone(ctx, s, zone, servers, name, qtype)
		if ref == nil {
			return o
		}
		s.referrals++
		if s.referrals > maxReferrals {
			r.log.Debug("too many referrals", "name", name)
			return outcome{kind: dns.KindError}
		}
		zone, servers = ref.zone, ref.servers
		if len(servers) == 0 {
			servers = r.resolveHosts(ctx, s, ref.hosts, depth)
		}
		if len(servers) == 0 {
			r.log.Debug("no address for any server", "zone", zone)
			return outcome{kind: dns.KindError}
		}
	}
}

// closest is the deepest zone cut above or at name whose servers'
// addresses are known, the root hints at worst.
func (r *Resolver) closest(name string) (string, []netip.Addr) {
	now := r.now()
	for z := name; ; z = parent(z) {
		if e := r.cache.get(key{name: z, qtype: mdns.TypeNS, infra: true}, now); e != nil {
			if a := r.addrs(nsHosts(e.rrs), now); len(a) > 0 {
				return z, a
			}
		}
		if z == "." {
			return ".", r.hints
		}
	}
}

// addrs are the known addresses of hosts, from glue or answers.
func (r *Resolver) addrs(hosts []string, now time.Time) []netip.Addr {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, h := range hosts {
		for _, k := range []key{
			{name: h, qtype: mdns.TypeA, infra: true},
			{name: h, qtype: mdns.TypeA},
			{name: h, qtype: mdns.TypeAAAA, infra: true},
			{name: h, qtype: mdns.TypeAAAA},
		} {
			e := r.cache.get(k, now)
			if e == nil || e.kind != entryData {
				continue
			}
			for _, a := range rrAddrs(e.rrs) {
				if !seen[a] {
					seen[a] = true
					out = append(out, a)
				}
			}
		}
	}
	return out
}

// resolveHosts finds the addresses of the first of hosts that has any,
// resolving their A records.
func (r *Resolver) resolveHosts(ctx context.Context, s *state, hosts []string, depth int) []netip.Addr {
	if depth >= maxDepth {
		r.log.Debug("sub-resolution too deep", "hosts", hosts)
		return nil
	}
	for _, h := range hosts {
		if ctx.Err() != nil {
			return nil
		}
		res := r.resolve(ctx, s, h, mdns.TypeA, depth+1)
		if a := rrAddrs(res.answer); len(a) > 0 {
			return a
		}
	}
	return nil
}

// askZone asks zone's servers in turn until one gives a usable reply.
func (r *Resolver) askZone(ctx context.Context, s *state, zone string, servers []netip.Addr, name string, qtype uint16) (outcome, *referral) {
	for _, srv := range servers {
		if ctx.Err() != nil {
			break
		}
		resp, step := r.exchange(ctx, s, srv, zone, name, qtype)
		var (
			o   outcome
			ref *referral
			ok  bool
		)
		if resp != nil {
			o, ref, ok = r.classify(resp, r.subnet(s), zone, name, qtype, &step)
		}
		s.steps = append(s.steps, step)
		if ok {
			return o, ref
		}
	}
	return outcome{kind: dns.KindError}, nil
}

// exchange sends one query to srv, over UDP then over TCP if truncated.
// A nil reply means the server failed; step says why.
func (r *Resolver) exchange(ctx context.Context, s *state, srv netip.Addr, zone, name string, qtype uint16) (*mdns.Msg, dns.Step) {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = mdns.Id()
	m.RecursionDesired = false
	m.SetEdns0(udpSize, false)
	if e := r.subnet(s); e != nil {
		opt := m.IsEdns0()
		opt.Option = append(opt.Option, e)
	}
	addr := netip.AddrPortFrom(srv, r.port).String()
	step := dns.Step{Server: srv.String(), Zone: zone, Name: name, Type: mdns.Type(qtype).String()}
	start := time.Now()
	resp, err := r.send(ctx, s, "udp", m, addr)
	if err == nil && resp.Truncated {
		step.TCP = true
		resp, err = r.send(ctx, s, "tcp", m, addr)
	}
	step.Duration = ms(time.Since(start))
	if err != nil {
		step.Kind = dns.KindError
		step.Error = err.Error()
		r.log.Debug("exchange failed", "server", addr, "name", name, "err", err)
		return nil, step
	}
	step.Rcode = dns.RcodeName(resp.Rcode)
	return resp, step
}

// subnet is the client subnet option sent upstream for s's client, nil
// if none is.
func (r *Resolver) subnet(s *state) *mdns.EDNS0_SUBNET {
	if !r.ecs || !s.client.IsValid() {
		return nil
	}
	e := &mdns.EDNS0_SUBNET{Code: mdns.EDNS0SUBNET, Family: 1, SourceNetmask: 32, Address: s.client.AsSlice()}
	if s.client.Is6() {
		e.Family, e.SourceNetmask = 2, 128
	}
	return e
}

// send is one exchange.
func (r *Resolver) send(ctx context.Context, s *state, network string, m *mdns.Msg, addr string) (*mdns.Msg, error) {
	r.st.Add("upstream_queries", 1)
	s.exchanges++
	cctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	c := &mdns.Client{Net: network, Timeout: r.timeout, UDPSize: udpSize}
	resp, _, err := c.ExchangeContext(cctx, m, addr)
	if err != nil {
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
			r.st.Add("upstream_timeouts", 1)
		}
		return nil, err
	}
	q := m.Question[0]
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, q.Name) ||
		resp.Question[0].Qtype != q.Qtype || resp.Question[0].Qclass != q.Qclass {
		return nil, errors.New("reply to another question")
	}
	return resp, nil
}

// classify reads resp, the answer of a server asked as authoritative for
// zone (with sent as client subnet option, if any), caches what it may,
// and says what it means. ok false means the server was of no use and
// the next one should be asked.
func (r *Resolver) classify(resp *mdns.Msg, sent *mdns.EDNS0_SUBNET, zone, name string, qtype uint16, step *dns.Step) (outcome, *referral, bool) {
	if resp.Rcode != mdns.RcodeSuccess && resp.Rcode != mdns.RcodeNameError {
		step.Kind = dns.KindError
		return outcome{}, nil, false
	}
	now := r.now()
	inZone := func(rr mdns.RR) bool {
		h := rr.Header()
		return h.Class == mdns.ClassINET && mdns.IsSubDomain(zone, dns.Fqdn(h.Name))
	}
	// What goes into the cache: the answer section's in-zone CNAMEs and
	// RRset (not for ANY) of an authoritative reply that is not scoped; the negative
	// answer of a reply that is not scoped, authoritative or not, when it
	// carries an SOA of zone at or above name; and the NS set and glue of
	// any referral, scoped or not (delegations are not per client).
	// Scoped means tailored to a client subnet (scope > 0), or carrying a
	// client subnet option that is not the one sent (RFC 7871 7.3): such
	// a reply is used for this query only.
	scoped := ecsScoped(resp, sent)
	cacheable := resp.Authoritative && !scoped

	var ans []mdns.RR
	for _, rr := range resp.Answer {
		if inZone(rr) {
			ans = append(ans, rr)
		}
	}
	chain, final, cur := walk(ans, name, qtype)
	if cacheable {
		for _, c := range chain {
			r.cacheData(key{name: dns.Fqdn(c.Header().Name), qtype: mdns.TypeCNAME}, []mdns.RR{c}, now)
		}
		if len(final) > 0 && qtype != mdns.TypeANY {
			r.cacheData(key{name: cur, qtype: qtype}, final, now)
		}
	}
	chain, final = r.capTTL(chain), r.capTTL(final)
	if len(final) > 0 {
		step.Kind = dns.KindAnswer
		step.Records = rrStrings(append(append([]mdns.RR{}, chain...), final...))
		return outcome{kind: dns.KindAnswer, chain: chain, final: final}, nil, true
	}
	if len(chain) > 0 {
		// NXDOMAIN or NODATA here is about the chain's end: asking for it
		// from the top says so and caches it.
		step.Kind = dns.KindCNAME
		step.Records = rrStrings(chain)
		return outcome{kind: dns.KindCNAME, chain: chain, target: cur}, nil, true
	}

	var soa *mdns.SOA
	for _, rr := range resp.Ns {
		if x, isSOA := rr.(*mdns.SOA); isSOA && inZone(rr) && mdns.IsSubDomain(dns.Fqdn(x.Hdr.Name), name) {
			soa = x
			break
		}
	}
	if resp.Rcode == mdns.RcodeNameError {
		step.Kind = dns.KindNXDomain
		return outcome{kind: dns.KindNXDomain, ns: r.cacheNegative(key{name: name, qtype: mdns.TypeNone}, entryNXDom, soa, !scoped, now)}, nil, true
	}
	if ref := r.referral(resp, zone, name, now); ref != nil {
		step.Kind = dns.KindReferral
		step.Records = rrStrings(ref.ns)
		return outcome{}, ref, true
	}
	if resp.Authoritative || soa != nil {
		step.Kind = dns.KindNoData
		return outcome{kind: dns.KindNoData, ns: r.cacheNegative(key{name: name, qtype: qtype}, entryNoData, soa, !scoped, now)}, nil, true
	}
	step.Kind = dns.KindError
	step.Error = "lame: neither answer nor referral"
	return outcome{}, nil, false
}

// walk follows the CNAMEs of ans from name: the chain, the RRset of
// qtype at its end if ans has it, and the name the chain ends at.
func walk(ans []mdns.RR, name string, qtype uint16) (chain, final []mdns.RR, cur string) {
	cur = name
	seen := map[string]bool{}
	for !seen[cur] {
		seen[cur] = true
		var cname mdns.RR
		for _, rr := range ans {
			h := rr.Header()
			if dns.Fqdn(h.Name) != cur {
				continue
			}
			if h.Rrtype == qtype || qtype == mdns.TypeANY {
				final = append(final, rr)
			} else if h.Rrtype == mdns.TypeCNAME && cname == nil {
				cname = rr
			}
		}
		if len(final) > 0 || cname == nil {
			return chain, final, cur
		}
		chain = append(chain, cname)
		cur = dns.Fqdn(cname.(*mdns.CNAME).Target)
	}
	return chain, final, cur
}

// referral reads a delegation to a child of zone above or at name from
// resp's authority section, caches its NS set and glue, and gives the
// servers' known addresses.
func (r *Resolver) referral(resp *mdns.Msg, zone, name string, now time.Time) *referral {
	var child string
	var nss []mdns.RR
	for _, rr := range resp.Ns {
		ns, isNS := rr.(*mdns.NS)
		if !isNS || ns.Hdr.Class != mdns.ClassINET {
			continue
		}
		owner := dns.Fqdn(ns.Hdr.Name)
		if owner == zone || !mdns.IsSubDomain(zone, owner) || !mdns.IsSubDomain(owner, name) {
			continue
		}
		if child == "" {
			child = owner
		}
		if owner == child {
			nss = append(nss, ns)
		}
	}
	if child == "" {
		return nil
	}
	ref := &referral{zone: child, ns: r.capTTL(nss), hosts: nsHosts(nss)}
	r.cacheData(key{name: child, qtype: mdns.TypeNS, infra: true}, nss, now)

	isHost := map[string]bool{}
	for _, h := range ref.hosts {
		isHost[h] = true
	}
	glue := map[key][]mdns.RR{}
	for _, rr := range resp.Extra {
		h := rr.Header()
		owner := dns.Fqdn(h.Name)
		if (h.Rrtype != mdns.TypeA && h.Rrtype != mdns.TypeAAAA) || h.Class != mdns.ClassINET ||
			!isHost[owner] || !mdns.IsSubDomain(zone, owner) {
			continue
		}
		k := key{name: owner, qtype: h.Rrtype, infra: true}
		glue[k] = append(glue[k], rr)
	}
	for k, rrs := range glue {
		r.cacheData(k, rrs, now)
	}
	// Addresses from this very reply come first, whatever their TTL.
	seen := map[netip.Addr]bool{}
	for _, h := range ref.hosts {
		for _, t := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
			for _, a := range rrAddrs(glue[key{name: h, qtype: t, infra: true}]) {
				if !seen[a] {
					seen[a] = true
					ref.servers = append(ref.servers, a)
				}
			}
		}
	}
	for _, a := range r.addrs(ref.hosts, now) {
		if !seen[a] {
			seen[a] = true
			ref.servers = append(ref.servers, a)
		}
	}
	return ref
}

// cacheData caches an RRset for its smallest TTL, capped at MaxTTL.
func (r *Resolver) cacheData(k key, rrs []mdns.RR, now time.Time) {
	if len(rrs) == 0 {
		return
	}
	ttl := min(time.Duration(minTTL(rrs))*time.Second, r.maxTTL)
	r.cache.put(k, &entry{kind: entryData, rrs: rrs, expires: now.Add(ttl)}, now)
}

// cacheNegative caches a negative answer for min(SOA TTL, SOA minimum),
// capped at NegativeTTL (RFC 2308), and gives the authority section to
// return. Without an SOA nothing is cached.
func (r *Resolver) cacheNegative(k key, kind int, soa *mdns.SOA, cacheable bool, now time.Time) []mdns.RR {
	if soa == nil {
		return nil
	}
	ttl := min(soa.Hdr.Ttl, soa.Minttl)
	ttl = min(ttl, uint32(r.negTTL/time.Second))
	c := mdns.Copy(soa).(*mdns.SOA)
	c.Hdr.Ttl = ttl
	if cacheable {
		r.cache.put(k, &entry{kind: kind, soa: c, expires: now.Add(time.Duration(ttl) * time.Second)}, now)
	}
	return []mdns.RR{mdns.Copy(c)}
}

// capTTL copies rrs with their TTLs capped at MaxTTL.
func (r *Resolver) capTTL(rrs []mdns.RR) []mdns.RR {
	if len(rrs) == 0 {
		return nil
	}
	max := uint32(r.maxTTL / time.Second)
	out := make([]mdns.RR, len(rrs))
	for i, rr := range rrs {
		out[i] = mdns.Copy(rr)
		if out[i].Header().Ttl > max {
			out[i].Header().Ttl = max
		}
	}
	return out
}

// ecsScoped says whether reply m, to a query that carried sent as its
// client subnet option (nil for none), is only good for that client: its
// option has a scope above 0, or does not echo the family, source prefix
// length and source address sent (RFC 7871 7.3), or came unasked.
func ecsScoped(m *mdns.Msg, sent *mdns.EDNS0_SUBNET) bool {
	opt := m.IsEdns0()
	if opt == nil {
		return false
	}
	for _, o := range opt.Option {
		e, ok := o.(*mdns.EDNS0_SUBNET)
		if !ok {
			continue
		}
		return e.SourceScope > 0 || !sameSubnet(e, sent)
	}
	return false
}

// sameSubnet says whether got echoes sent's family, source prefix length
// and address (within that length).
func sameSubnet(got, sent *mdns.EDNS0_SUBNET) bool {
	if sent == nil || got.Family != sent.Family || got.SourceNetmask != sent.SourceNetmask {
		return false
	}
	a, ok1 := netip.AddrFromSlice(got.Address)
	b, ok2 := netip.AddrFromSlice(sent.Address)
	if !ok1 || !ok2 {
		return false
	}
	pa, err1 := a.Unmap().Prefix(int(got.SourceNetmask))
	pb, err2 := b.Unmap().Prefix(int(sent.SourceNetmask))
	return err1 == nil && err2 == nil && pa == pb
}

func parent(z string) string {
	i, end := mdns.NextLabel(z, 0)
	if end || i >= len(z) {
		return "."
	}
	return z[i:]
}

func nsHosts(rrs []mdns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if ns, ok := rr.(*mdns.NS); ok {
			out = append(out, dns.Fqdn(ns.Ns))
		}
	}
	return out
}

func rrAddrs(rrs []mdns.RR) []netip.Addr {
	var out []netip.Addr
	for _, rr := range rrs {
		var ip net.IP
		switch x := rr.(type) {
		case *mdns.A:
			ip = x.A
		case *mdns.AAAA:
			ip = x.AAAA
		default:
			continue
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func rrStrings(rrs []mdns.RR) []string {
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.String())
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// group shares one resolution among identical concurrent misses.
type group struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done      chan struct{}
	res       result
	steps     []dns.Step
	exchanges int
	dups      int // waiters besides the one resolving
}

// do runs fn once for every concurrent caller with the same key; a
// waiter whose ctx ends gives up with SERVFAIL.
func (g *group) do(ctx context.Context, k string, fn func() (result, []dns.Step, int)) (result, []dns.Step, int) {
	g.mu.Lock()
	if g.m == nil {
		g.m = map[string]*flight{}
	}
	if f, ok := g.m[k]; ok {
		f.dups++
		g.mu.Unlock()
		select {
		case <-f.done:
			res := f.res
			res.answer, res.ns = dns.CopyRRs(res.answer), dns.CopyRRs(res.ns)
			return res, append([]dns.Step(nil), f.steps...), f.exchanges
		case <-ctx.Done():
			return result{rcode: mdns.RcodeServerFailure}, nil, 0
		}
	}
	// Should fn panic, the waiters get SERVFAIL and the key is free again.
	f := &flight{done: make(chan struct{}), res: result{rcode: mdns.RcodeServerFailure}}
	g.m[k] = f
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.m, k)
		g.mu.Unlock()
		close(f.done)
	}()

	f.res, f.steps, f.exchanges = fn()
	res := f.res
	res.answer, res.ns = dns.CopyRRs(res.answer), dns.CopyRRs(res.ns)
	return res, f.steps, f.exchanges
}

// waiting is how many callers wait on k's resolution.
func (g *group) waiting(k string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f := g.m[k]; f != nil {
		return f.dups
	}
	return 0
}
