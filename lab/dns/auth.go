package dns

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"

	mdns "github.com/miekg/dns"
)

// maxCNAMEHops bounds how many CNAMEs an authoritative answer follows
// inside its zone.
const maxCNAMEHops = 8

// ednsUDPSize is the UDP payload size the lab's servers advertise (the
// DNS flag day 2020 value, which avoids IP fragmentation).
const ednsUDPSize = 1232

// Authority answers from its zones as an authoritative server, after RFC
// 1034 4.3.2 without wildcards (step 3c is not implemented: the topology
// validator rejects "*" owners): answers with AA set, referrals at
// delegations, NXDOMAIN and NODATA with the zone's SOA, and GSLB names by
// the asker's location.
type Authority struct {
	zones []*zone // longest origin first
	st    *Counters
	log   *slog.Logger
}

// NewAuthority parses zones and starts the health checks of their GSLBs,
// which stop when ctx is done.
func NewAuthority(ctx context.Context, zones []*Zone, st *Counters, log *slog.Logger) (*Authority, error) {
	return newAuthority(ctx, zones, st, log, nil)
}

// newAuthority is NewAuthority with the GSLB health checks' dial
// replaced when dial is not nil.
func newAuthority(ctx context.Context, zones []*Zone, st *Counters, log *slog.Logger, dial func(context.Context, string) error) (*Authority, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Authority{st: st, log: log}
	seen := map[string]bool{}
	for _, zd := range zones {
		z, err := parseZone(zd)
		if err != nil {
			return nil, err
		}
		if seen[z.origin] {
			return nil, fmt.Errorf("zone %s: declared twice", z.origin)
		}
		seen[z.origin] = true
		if zd.GSLB != nil {
			b, err := NewGSLB(zd.GSLB, st, log)
			if err != nil {
				return nil, fmt.Errorf("zone %s: %w", z.origin, err)
			}
			if dial != nil {
				b.dial = dial
			}
			z.gslb = b
			z.gslbNames = map[string]bool{}
			for _, n := range b.names {
				if !z.contains(n) {
					return nil, fmt.Errorf("zone %s: gslb name %s is outside the zone", z.origin, n)
				}
				if c := z.cut(n, mdns.TypeA); c != "" {
					return nil, fmt.Errorf("zone %s: gslb name %s is delegated at %s", z.origin, n, c)
				}
				if nd := z.nodes[n]; nd != nil && nd.sets[mdns.TypeCNAME] != nil {
					return nil, fmt.Errorf("zone %s: gslb name %s has a CNAME", z.origin, n)
				}
				z.gslbNames[n] = true
				// The balanced name exists, and so do the names above it.
				if z.nodes[n] == nil {
					z.nodes[n] = &node{}
				}
				for _, anc := range z.ancestors(n) {
					if z.nodes[anc] == nil {
						z.nodes[anc] = &node{}
					}
				}
			}
		}
		a.zones = append(a.zones, z)
	}
	sort.SliceStable(a.zones, func(i, j int) bool { return a.zones[i].labels > a.zones[j].labels })
	for _, z := range a.zones {
		if z.gslb != nil {
			go z.gslb.Run(ctx)
		}
	}
	return a, nil
}

// Balancer returns the GSLB of the zone with origin, or nil.
func (a *Authority) Balancer(origin string) *Balancer {
	origin = Fqdn(origin)
	for _, z := range a.zones {
		if z.origin == origin {
			return z.gslb
		}
	}
	return nil
}

// zoneFor is the zone whose origin is the longest suffix of name.
func (a *Authority) zoneFor(name string) *zone {
	for _, z := range a.zones {
		if z.contains(name) {
			return z
		}
	}
	return nil
}

// Answer answers req, a query of class IN with one question, for client.
// An EDNS0 client subnet in req (RFC 7871) stands in for client when the
// GSLB picks a region, and is echoed (RFC 7871 7.2.1) with a scope equal
// to its source prefix when a GSLB tailored the answer, 0 otherwise.
func (a *Authority) Answer(ctx context.Context, req *mdns.Msg, client netip.Addr) *mdns.Msg {
	resp := new(mdns.Msg).SetReply(req)
	if len(req.Question) != 1 {
		resp.Rcode = mdns.RcodeFormatError
		return resp
	}
	q := req.Question[0]
	ecs, sel := clientSubnet(req)
	useECS := sel.IsValid()
	if !useECS {
		sel = client
	}
	tailored := false
	z := a.zoneFor(Fqdn(q.Name))
	if z == nil || q.Qclass != mdns.ClassINET {
		resp.Rcode = mdns.RcodeRefused
		a.st.Add("refused", 1)
	} else {
		tailored = a.lookup(resp, z, q.Name, q.Qtype, sel)
	}
	if ecs != nil {
		echo := *ecs
		// Scope 0 says the answer is good for every client. A GSLB answer
		// is good for the client's subnet only: neither the matched rule's
		// prefix (a more specific rule may sit inside it) nor 0 for Default
		// would stop a caching ECS resolver handing it to other subnets.
		echo.SourceScope = 0
		if useECS && tailored {
			echo.SourceScope = ecs.SourceNetmask
		}
		resp.SetEdns0(ednsUDPSize, false)
		opt := resp.IsEdns0()
		opt.Option = append(opt.Option, &echo)
	}
	return resp
}

// clientSubnet returns the query's EDNS0 client subnet option and, when
// it may be used (a non-zero source prefix), the address it stands for.
func clientSubnet(req *mdns.Msg) (*mdns.EDNS0_SUBNET, netip.Addr) {
	opt := req.IsEdns0()
	if opt == nil {
		return nil, netip.Addr{}
	}
	for _, o := range opt.Option {
		e, ok := o.(*mdns.EDNS0_SUBNET)
		if !ok {
			continue
		}
		var a netip.Addr
		switch e.Family {
		case 1:
			if ip4 := e.Address.To4(); ip4 != nil {
				a = netip.AddrFrom4([4]byte(ip4))
			}
		case 2:
			if len(e.Address) == 16 {
				a = netip.AddrFrom16([16]byte(e.Address))
			}
		}
		if !a.IsValid() || e.SourceNetmask == 0 || int(e.SourceNetmask) > a.BitLen() {
			return e, netip.Addr{}
		}
		p, _ := a.Prefix(int(e.SourceNetmask))
		return e, p.Addr()
	}
	return nil, netip.Addr{}
}

// lookup fills resp from zone z for qname and qtype (RFC 1034 4.3.2
// step 3, without the wildcards of 3c) and reports whether a GSLB
// tailored the answer to client.
func (a *Authority) lookup(resp *mdns.Msg, z *zone, qname string, qtype uint16, client netip.Addr) bool {
	name := Fqdn(qname)
	if cut := z.cut(name, qtype); cut != "" {
		a.referral(resp, z, cut)
		return false
	}
	resp.Authoritative = true
	visited := make([]string, 0, 4)
	nodata := false
	for hops := 0; ; hops++ {
		visited = append(visited, name)
		owner := name
		if hops == 0 {
			owner = qname // as asked
		}
		if z.gslbNames[name] {
			return a.gslbAnswer(resp, z, owner, qtype, client)
		}
		n := z.nodes[name]
		if n == nil {
			resp.Rcode = mdns.RcodeNameError
			resp.Ns = append(resp.Ns, z.negativeSOA())
			a.st.Add("nxdomain", 1)
			return false
		}
		if qtype == mdns.TypeANY {
			for _, t := range n.types {
				resp.Answer = append(resp.Answer, CopyRRs(n.sets[t])...)
			}
			nodata = len(n.types) == 0
			break
		}
		if set := n.sets[qtype]; set != nil {
			resp.Answer = append(resp.Answer, CopyRRs(set)...)
			break
		}
		cname := n.sets[mdns.TypeCNAME]
		if cname == nil {
			nodata = true
			break
		}
		resp.Answer = append(resp.Answer, CopyRRs(cname)...)
		target := Fqdn(cname[0].(*mdns.CNAME).Target)
		if hops+1 > maxCNAMEHops || slices.Contains(visited, target) || !z.contains(target) || z.cut(target, qtype) != "" {
			break // the asker follows the rest of the chain itself
		}
		name = target
	}
	if nodata {
		resp.Ns = append(resp.Ns, z.negativeSOA())
		a.st.Add("nodata", 1)
		return false
	}
	a.st.Add("answers", 1)
	return false
}

// referral answers with the delegation at cut: its NS RRset in the
// authority section and the glue the zone holds for the name servers.
func (a *Authority) referral(resp *mdns.Msg, z *zone, cut string) {
	resp.Authoritative = false
	ns := z.nodes[cut].sets[mdns.TypeNS]
	resp.Ns = append(resp.Ns, CopyRRs(ns)...)
	done := map[string]bool{}
	for _, rr := range ns {
		target := Fqdn(rr.(*mdns.NS).Ns)
		if done[target] {
			continue
		}
		done[target] = true
		resp.Extra = append(resp.Extra, CopyRRs(z.addresses(target))...)
	}
	a.st.Add("referrals", 1)
}

// gslbAnswer answers a GSLB name: A records of the addresses the
// balancer selects for client, NODATA for any other type. It reports
// whether the answer was tailored to client (an A answer).
func (a *Authority) gslbAnswer(resp *mdns.Msg, z *zone, owner string, qtype uint16, client netip.Addr) bool {
	if qtype != mdns.TypeA {
		resp.Ns = append(resp.Ns, z.negativeSOA())
		a.st.Add("nodata", 1)
		return false
	}
	addrs, region := z.gslb.Select(client)
	for _, ad := range addrs {
		resp.Answer = append(resp.Answer, &mdns.A{
			Hdr: mdns.RR_Header{Name: owner, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: z.gslb.ttl},
			A:   ad.AsSlice(),
		})
	}
	a.st.Add("answers", 1)
	a.st.Add("gslb_answers", 1)
	a.st.Add("gslb_region_"+region, 1)
	return true
}
