package dns

import (
	"fmt"

	mdns "github.com/miekg/dns"
)

// zone is one parsed zone, indexed by lowercase owner name.
type zone struct {
	origin string // fully qualified, lowercase
	labels int    // mdns.CountLabel(origin)
	soa    *mdns.SOA
	// nodes holds every owner name of the zone and every empty
	// non-terminal between an owner name and the origin (a node without
	// RRsets): a name exists exactly when it has a node.
	nodes map[string]*node
	// glue is out-of-zone address records, given only as referral glue
	// (sibling or out-of-bailiwick name servers of a delegation).
	glue map[string]*node

	gslb      *Balancer
	gslbNames map[string]bool
}

// node is the RRsets of one owner name.
type node struct {
	sets  map[uint16][]mdns.RR
	types []uint16 // in order of first appearance: the order of ANY answers
}

func (n *node) add(rr mdns.RR) {
	t := rr.Header().Rrtype
	if n.sets == nil {
		n.sets = map[uint16][]mdns.RR{}
	}
	set, ok := n.sets[t]
	if !ok {
		n.types = append(n.types, t)
	}
	for _, old := range set {
		if mdns.IsDuplicate(old, rr) {
			return
		}
	}
	n.sets[t] = append(set, rr)
}

// parseZone parses and checks zd's records: exactly one SOA, at the
// origin; class IN; every record in the zone, but address records that
// serve as glue; a CNAME alone at its name.
func parseZone(zd *Zone) (*zone, error) {
	if zd == nil {
		return nil, fmt.Errorf("a nil zone")
	}
	if _, ok := mdns.IsDomainName(zd.Origin); !ok || zd.Origin == "" {
		return nil, fmt.Errorf("zone %q: bad origin", zd.Origin)
	}
	z := &zone{
		origin: Fqdn(zd.Origin),
		nodes:  map[string]*node{},
		glue:   map[string]*node{},
	}
	z.labels = mdns.CountLabel(z.origin)
	for _, s := range zd.Records {
		rr, err := mdns.NewRR(s)
		if err != nil {
			return nil, fmt.Errorf("zone %s: record %q: %w", z.origin, s, err)
		}
		if rr == nil {
			continue // blank or a comment
		}
		h := rr.Header()
		if h.Class != mdns.ClassINET {
			return nil, fmt.Errorf("zone %s: record %q: class %s, not IN", z.origin, s, mdns.ClassToString[h.Class])
		}
		switch h.Rrtype {
		case mdns.TypeOPT, mdns.TypeTSIG, mdns.TypeTKEY, mdns.TypeANY, mdns.TypeAXFR, mdns.TypeIXFR:
			return nil, fmt.Errorf("zone %s: record %q: %s is not zone data", z.origin, s, mdns.TypeToString[h.Rrtype])
		}
		owner := Fqdn(h.Name)
		if !mdns.IsSubDomain(z.origin, owner) {
			if h.Rrtype != mdns.TypeA && h.Rrtype != mdns.TypeAAAA {
				return nil, fmt.Errorf("zone %s: record %q is outside the zone", z.origin, s)
			}
			n := z.glue[owner]
			if n == nil {
				n = &node{}
				z.glue[owner] = n
			}
			n.add(rr)
			continue
		}
		if h.Rrtype == mdns.TypeSOA {
			if owner != z.origin {
				return nil, fmt.Errorf("zone %s: record %q: SOA away from the origin", z.origin, s)
			}
			if z.soa != nil && !mdns.IsDuplicate(z.soa, rr) {
				return nil, fmt.Errorf("zone %s: record %q: a second SOA", z.origin, s)
			}
			z.soa = rr.(*mdns.SOA)
		}
		n := z.nodes[owner]
		if n == nil {
			n = &node{}
			z.nodes[owner] = n
		}
		n.add(rr)
	}
	if z.soa == nil {
		return nil, fmt.Errorf("zone %s: no SOA record", z.origin)
	}
	for name, n := range z.nodes {
		if c := n.sets[mdns.TypeCNAME]; c != nil {
			if len(c) > 1 {
				return nil, fmt.Errorf("zone %s: %s has %d CNAME records", z.origin, name, len(c))
			}
			if len(n.types) > 1 {
				return nil, fmt.Errorf("zone %s: %s has a CNAME and other data", z.origin, name)
			}
			if name == z.origin {
				return nil, fmt.Errorf("zone %s: a CNAME at the origin", z.origin)
			}
		}
	}
	// Empty non-terminals: every name between an owner and the origin.
	var names []string
	for name := range z.nodes {
		names = append(names, name)
	}
	for _, name := range names {
		for _, anc := range z.ancestors(name) {
			if z.nodes[anc] == nil {
				z.nodes[anc] = &node{}
			}
		}
	}
	return z, nil
}

// ancestors are the names strictly between the origin and name (name
// excluded), nearest the origin first.
func (z *zone) ancestors(name string) []string {
	idx := mdns.Split(name)
	var out []string
	for i := len(idx) - 1; i >= 1; i-- {
		if len(idx)-i > z.labels {
			out = append(out, name[idx[i]:])
		}
	}
	return out
}

// cut returns the delegation point at or above name (strictly below the
// origin) closest to the origin, or "". The parent side of a cut is
// authoritative for its DS RRset (RFC 4035 3.1.4.1), so a DS query at a
// cut is not referred.
func (z *zone) cut(name string, qtype uint16) string {
	for _, anc := range z.ancestors(name) {
		if n := z.nodes[anc]; n != nil && n.sets[mdns.TypeNS] != nil {
			return anc
		}
	}
	if name != z.origin && (qtype != mdns.TypeDS) {
		if n := z.nodes[name]; n != nil && n.sets[mdns.TypeNS] != nil {
			return name
		}
	}
	return ""
}

// contains tells whether name is at or below the origin.
func (z *zone) contains(name string) bool { return mdns.IsSubDomain(z.origin, name) }

// addresses returns the A and AAAA records of name held by the zone,
// occluded glue and out-of-zone glue included.
func (z *zone) addresses(name string) []mdns.RR {
	n := z.nodes[name]
	if n == nil {
		n = z.glue[name]
	}
	if n == nil {
		return nil
	}
	var out []mdns.RR
	out = append(out, n.sets[mdns.TypeA]...)
	out = append(out, n.sets[mdns.TypeAAAA]...)
	return out
}

// negativeSOA is the SOA for the authority section of a negative answer,
// its TTL lowered to the SOA minimum (RFC 2308 3).
func (z *zone) negativeSOA() mdns.RR {
	soa := mdns.Copy(z.soa).(*mdns.SOA)
	soa.Hdr.Ttl = min(soa.Hdr.Ttl, soa.Minttl)
	return soa
}

// CopyRRs deep-copies rrs (nil stays nil), so that a reply never shares
// records with a zone or a cache.
func CopyRRs(rrs []mdns.RR) []mdns.RR {
	if rrs == nil {
		return nil
	}
	out := make([]mdns.RR, len(rrs))
	for i, rr := range rrs {
		out[i] = mdns.Copy(rr)
	}
	return out
}
