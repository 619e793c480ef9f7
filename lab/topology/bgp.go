package topology

// The internet (stages 2 and 7 of docs/double11-story.md): routers that speak
// BGP, and carrier-grade NAT at a carrier's edge.
//
// A router's bgp block declares its autonomous system, its neighbors and
// the prefixes it originates. Each speaker is a `labctl serve bgp` service
// in the router's namespace (GoBGP as a library) that installs its best
// paths in the kernel with proto bgp. expand resolves the block into that
// service; BGP.Own lists the AS's own prefixes for an `export: own` speaker.

import (
	"encoding/json"
	"math"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// BGP is a router's BGP speaker.
type BGP struct {
	ASN uint32 `yaml:"asn" json:"asn"`
	// RouterID defaults to the router's lowest IPv4 address.
	RouterID string `yaml:"router-id,omitempty" json:"router_id,omitempty"`
	// Networks are the prefixes this router originates.
	Networks []string `yaml:"networks,omitempty" json:"networks,omitempty"`
	// Export says what eBGP neighbors are told: "all" (a transit AS, the
	// default) or "own" (only prefixes originated inside this AS: a
	// multihomed AS that never carries traffic between its upstreams).
	Export    string         `yaml:"export,omitempty" json:"export,omitempty"`
	Neighbors []*BGPNeighbor `yaml:"neighbors" json:"neighbors"`
	Timers    *BGPTimers     `yaml:"timers,omitempty" json:"timers,omitempty"`

	// Resolved by expand (not written in files):
	// Own is every prefix originated by a router of this AS (export: own).
	Own []string `yaml:"-" json:"own,omitempty"`
	// API is the speaker's gRPC socket (unix://…).
	API string `yaml:"-" json:"api,omitempty"`
}

// BGPNeighbor is one session. A neighbor with the router's own ASN is iBGP,
// any other eBGP.
type BGPNeighbor struct {
	Address string `yaml:"address" json:"address"`
	ASN     uint32 `yaml:"asn" json:"asn"`
	// NextHopSelf rewrites the next hop of routes sent to this neighbor to
	// the router's own address (a border router towards its iBGP peers).
	NextHopSelf bool `yaml:"next-hop-self,omitempty" json:"next_hop_self,omitempty"`
	// RouteReflectorClient makes this router reflect iBGP routes to the
	// neighbor (and from it to the other clients).
	RouteReflectorClient bool `yaml:"route-reflector-client,omitempty" json:"route_reflector_client,omitempty"`

	// Node is the lab node holding Address, and Local the address of
	// this router that Node's entry names: the session's source, so that
	// the peer recognises it even when it is not the outgoing interface's
	// (resolved by expand).
	Node  string `yaml:"-" json:"node,omitempty"`
	Local string `yaml:"-" json:"local,omitempty"`
}

// BGPTimers are a speaker's session timers, in whole seconds. Short
// defaults make a lab converge in seconds.
type BGPTimers struct {
	ConnectRetry Duration `yaml:"connect-retry,omitempty" json:"connect_retry,omitempty"`
	Hold         Duration `yaml:"hold,omitempty" json:"hold,omitempty"`
	Keepalive    Duration `yaml:"keepalive,omitempty" json:"keepalive,omitempty"`
}

// CGNAT is carrier-grade NAT on a carrier's edge router: traffic from the
// subscriber range Inside (in 100.64.0.0/10) leaves with a source from
// Pool, a public prefix of the carrier.
type CGNAT struct {
	Inside string `yaml:"inside" json:"inside"`
	Pool   string `yaml:"pool" json:"pool"`
}

// BGP defaults and names.
const (
	BGPService       = "bgp" // the speaker's service name on a router
	ExportAll        = "all"
	ExportOwn        = "own"
	CarrierSpace     = "100.64.0.0/10" // RFC 6598 shared address space
	DefaultHold      = 3               // seconds
	DefaultKeepalive = 1
	DefaultRetry     = 1
)

// BGPSocket is the unix socket of a router's speaker API.
func BGPSocket(lab, node string) string { return filepath.Join(RunDir, lab, "bgp", node+".sock") }

// maxASN is the highest usable AS number: 4294967295 is reserved (RFC 7300).
const maxASN = math.MaxUint32 - 1

var carrierSpace = netip.MustParsePrefix(CarrierSpace)

// bgp checks the bgp and cgnat blocks. It runs before the lab is expanded
// and again on the expanded lab (a second Validate): what expand fills in
// (defaults, the speaker's service) passes these checks.
func (c *checker) bgp() {
	t := c.t
	holders := t.IPv4Owners()
	for _, name := range t.NodeNames() {
		n := t.Nodes[name]
		if n.BGP != nil {
			c.speaker(name, n, holders)
		}
		if n.CGNAT != nil {
			c.cgnat(name, n)
		}
	}
	c.routerIDs()
}

// onRouter reports a block on a node of another kind; an unknown kind is
// reported by node already.
func (c *checker) onRouter(p path, block, name string, n *Node) bool {
	if n.Kind == "router" {
		return true
	}
	if _, ok := KindOf(n.Kind); ok {
		c.add(p, "%s needs kind router; node %s is %s %s", block, name, article(n.Kind), n.Kind)
	}
	return false
}

func article(w string) string {
	if strings.ContainsRune("aeiou", rune(w[0])) {
		return "an"
	}
	return "a"
}

func (c *checker) asn(p path, asn uint32, missing string) {
	switch {
	case asn == 0:
		c.add(p, "%s", missing)
	case asn > maxASN:
		c.add(p, "asn %d is outside 1..%d", asn, uint32(maxASN))
	}
}

// speaker checks one router's bgp block.
func (c *checker) speaker(name string, n *Node, holders map[netip.Addr]string) {
	t := c.t
	p := path{"nodes", name}
	bp := p.with("bgp")
	b := n.BGP
	if !c.onRouter(bp, "bgp", name, n) {
		return
	}
	// Once expanded, the service is the speaker itself.
	if _, ok := n.Services[BGPService]; ok && !t.expanded {
		c.addAtKey(p.with("services", BGPService), "%s is the BGP speaker labctl starts on a router with a bgp block; name the service otherwise", BGPService)
	}
	if l := len(BGPSocket(t.Name, name)); l > maxSocketPath {
		c.add(bp, "the BGP speaker's socket path for this router would be %d bytes (Unix sockets allow %d): shorten the lab or node name", l, maxSocketPath)
	}
	c.asn(bp.with("asn"), b.ASN, "the speaker needs an asn")
	if b.RouterID != "" {
		if a, err := netip.ParseAddr(b.RouterID); err != nil || !a.Is4() {
			c.add(bp.with("router-id"), "%q is not an IPv4 address", b.RouterID)
		}
	}
	seen := map[netip.Prefix]int{}
	for i, s := range b.Networks {
		np := bp.with("networks", i)
		pr, ok := c.ipv4CIDR(np, s, "")
		if !ok {
			continue
		}
		if j, dup := seen[pr]; dup {
			c.add(np, "%s is already networks[%d]", pr, j)
			continue
		}
		seen[pr] = i
	}
	switch b.Export {
	case "", ExportAll, ExportOwn:
	default:
		c.add(bp.with("export"), "unknown export %q (all or own)", b.Export)
	}
	if len(b.Neighbors) == 0 {
		c.add(bp.with("neighbors"), "a speaker needs at least one neighbor (address and asn)")
	}
	addrs := map[netip.Addr]int{}
	for i, nb := range b.Neighbors {
		np := bp.with("neighbors", i)
		if nb == nil {
			c.add(np, "a neighbor needs address and asn")
			continue
		}
		c.asn(np.with("asn"), nb.ASN, "the neighbor needs an asn")
		ap := np.with("address")
		a, err := netip.ParseAddr(nb.Address)
		switch {
		case nb.Address == "":
			c.add(ap, "missing address (the neighbor's IPv4 address)")
			continue
		case err != nil || !a.Is4():
			c.add(ap, "%q is not an IPv4 address", nb.Address)
			continue
		case ownAddr(n, a):
			c.add(ap, "%s is this router's own address", a)
			continue
		}
		if j, dup := addrs[a]; dup {
			c.add(ap, "%s is already neighbors[%d]", a, j)
			continue
		}
		addrs[a] = i
		peer, ok := holders[a]
		if !ok {
			c.add(ap, "no node has %s", a)
			continue
		}
		if b.ASN != 0 && nb.ASN != 0 {
			direct := c.connected(n, "", a)
			if nb.ASN != b.ASN {
				if !direct {
					c.add(ap, "eBGP neighbor %s is on no subnet connected to node %s (eBGP sessions are single-hop)", a, name)
				}
				if nb.RouteReflectorClient {
					c.add(np.with("route-reflector-client"), "route-reflector-client applies to iBGP neighbors; asn %d is not this router's (%d)", nb.ASN, b.ASN)
				}
			} else if !direct && !routed(n, netip.PrefixFrom(a, 32)) {
				c.add(ap, "iBGP neighbor %s is on no subnet connected to node %s and covered by none of its routes (they stand in for the carrier's IGP)", a, name)
			}
		}
		pb := t.Nodes[peer].BGP
		switch {
		case pb == nil:
			c.add(ap, "%s is node %s, which has no bgp block", a, peer)
		case nb.ASN != 0 && pb.ASN != 0 && pb.ASN != nb.ASN:
			c.add(np.with("asn"), "%s is node %s, whose asn is %d, not %d", a, peer, pb.ASN, nb.ASN)
		case b.ASN != 0 && !peersWith(pb, n):
			// Said here, at the entry that exists; a wrong asn in the
			// peer's entry is reported there, by the case above. A router
			// without IPv4 addresses is told so by routerIDs.
			if local := localAddr(n, a); local.IsValid() {
				c.add(np, "%s has no neighbor entry for %s (%s, asn %d)", peer, name, local, b.ASN)
			}
		}
	}
	if tm := b.Timers; tm != nil {
		c.timers(bp.with("timers"), tm)
	}
}

// timers checks a speaker's timers; a zero field takes its default.
func (c *checker) timers(p path, tm *BGPTimers) {
	whole := func(field string, d Duration) bool {
		if time.Duration(d)%time.Second != 0 {
			c.add(p.with(field), "%s %s is not a whole number of seconds", field, time.Duration(d))
			return false
		}
		return true
	}
	if whole("connect-retry", tm.ConnectRetry) && tm.ConnectRetry < 0 {
		c.add(p.with("connect-retry"), "connect-retry %s must be at least 1s", time.Duration(tm.ConnectRetry))
	}
	holdOK := whole("hold", tm.Hold)
	if holdOK && tm.Hold != 0 && tm.Hold < Duration(3*time.Second) {
		c.add(p.with("hold"), "hold %s must be 0 (the default, %ds) or at least 3s", time.Duration(tm.Hold), DefaultHold)
		holdOK = false
	}
	kaOK := whole("keepalive", tm.Keepalive)
	if kaOK && tm.Keepalive < 0 {
		c.add(p.with("keepalive"), "keepalive %s must be at least 1s", time.Duration(tm.Keepalive))
		kaOK = false
	}
	if !holdOK || !kaOK {
		return
	}
	hold, ka := orDefault(tm.Hold, DefaultHold), orDefault(tm.Keepalive, DefaultKeepalive)
	switch {
	case ka >= hold && tm.Hold == 0:
		c.add(p.with("keepalive"), "keepalive %s must be shorter than hold %s (the default)", time.Duration(ka), time.Duration(hold))
	case ka >= hold:
		c.add(p.with("keepalive"), "keepalive %s must be shorter than hold %s", time.Duration(ka), time.Duration(hold))
	}
}

func orDefault(d Duration, seconds int) Duration {
	if d == 0 {
		return Duration(time.Duration(seconds) * time.Second)
	}
	return d
}

// cgnat checks a router's carrier-grade NAT.
func (c *checker) cgnat(name string, n *Node) {
	p := path{"nodes", name, "cgnat"}
	if !c.onRouter(p, "cgnat", name, n) {
		return
	}
	g := n.CGNAT
	if in, ok := c.ipv4CIDR(p.with("inside"), g.Inside, "missing inside (the subscribers' range, in "+CarrierSpace+")"); ok {
		switch {
		case !within(carrierSpace, in):
			c.add(p.with("inside"), "%s is not inside %s, the carrier space (RFC 6598) subscribers are numbered from", in, CarrierSpace)
		case !connectedPrefix(n, in) && !routed(n, in):
			c.add(p.with("inside"), "%s is on no subnet of node %s and covered by none of its routes", in, name)
		}
	}
	if pool, ok := c.ipv4CIDR(p.with("pool"), g.Pool, "missing pool (the public prefix subscribers leave with)"); ok && pool.Overlaps(carrierSpace) {
		c.add(p.with("pool"), "%s overlaps %s: the pool is public addresses, not carrier space", pool, CarrierSpace)
	}
}

// ipv4CIDR parses an IPv4 CIDR written without host bits.
func (c *checker) ipv4CIDR(p path, s, missing string) (netip.Prefix, bool) {
	if s == "" && missing != "" {
		c.add(p, "%s", missing)
		return netip.Prefix{}, false
	}
	pr, err := netip.ParsePrefix(s)
	switch {
	case err != nil || !pr.Addr().Is4():
		c.add(p, "%q is not an IPv4 CIDR", s)
		return netip.Prefix{}, false
	case pr.Masked() != pr:
		c.add(p, "%s has host bits set; write %s", s, pr.Masked())
		return netip.Prefix{}, false
	}
	return pr, true
}

// routerIDs checks that no two speakers share a router ID, the written
// ones and those expand will take.
func (c *checker) routerIDs() {
	type owner struct {
		node     string
		explicit bool
	}
	ids := map[netip.Addr]owner{}
	var written []string
	for _, name := range c.t.NodeNames() {
		n := c.t.Nodes[name]
		if n.BGP == nil || n.Kind != "router" {
			continue
		}
		if n.BGP.RouterID != "" {
			written = append(written, name)
			continue
		}
		a, ok := defaultRouterID(n)
		if !ok {
			c.add(path{"nodes", name, "bgp"}, "node %s has no IPv4 address to take a router-id from; give router-id", name)
			continue
		}
		if _, dup := ids[a]; !dup { // a duplicate address, reported as such
			ids[a] = owner{name, false}
		}
	}
	for _, name := range written {
		a, err := netip.ParseAddr(c.t.Nodes[name].BGP.RouterID)
		if err != nil || !a.Is4() {
			continue
		}
		prev, dup := ids[a]
		switch {
		case dup && prev.explicit:
			c.add(path{"nodes", name, "bgp", "router-id"}, "router-id %s is also the router-id of node %s", a, prev.node)
		case dup:
			c.add(path{"nodes", name, "bgp", "router-id"}, "router-id %s is also the router-id of node %s (its lowest IPv4 address)", a, prev.node)
		default:
			ids[a] = owner{name, true}
		}
	}
}

// IPv4Owners maps every IPv4 interface address of the lab to its node (the
// first by name when an address is written twice).
func (t *Topology) IPv4Owners() map[netip.Addr]string {
	out := map[netip.Addr]string{}
	for _, name := range t.NodeNames() {
		n := t.Nodes[name]
		for _, ifn := range sortedKeys(n.Interfaces) {
			if n.Interfaces[ifn] == nil {
				continue
			}
			for _, s := range n.Interfaces[ifn].Addresses {
				pr, err := netip.ParsePrefix(s)
				if err != nil || !pr.Addr().Is4() {
					continue
				}
				if _, ok := out[pr.Addr()]; !ok {
					out[pr.Addr()] = name
				}
			}
		}
	}
	return out
}

// SessionEnds are the interfaces that hold the two addresses of node's
// session with nb: node's source address (nb.Local, else its address in a
// subnet holding nb.Address) and nb.Address on the neighbor's node. For
// routers on one link (or one switch) these are the ends of that link; an
// address on no interface (a session from an unknown peer) gives no end.
func (t *Topology) SessionEnds(node string, nb *BGPNeighbor) []Endpoint {
	n := t.Nodes[node]
	if n == nil || nb == nil {
		return nil
	}
	peer, err := netip.ParseAddr(nb.Address)
	if err != nil {
		return nil
	}
	local, err := netip.ParseAddr(nb.Local)
	if err != nil {
		local, _ = addrOnSubnet(n, "", peer)
	}
	var out []Endpoint
	if ifn, ok := ifaceHolding(n, local); ok {
		out = append(out, Endpoint{node, ifn})
	}
	if p := t.Nodes[nb.Node]; p != nil {
		if ifn, ok := ifaceHolding(p, peer); ok {
			out = append(out, Endpoint{nb.Node, ifn})
		}
	}
	return out
}

// ifaceHolding is the interface of n that has address a.
func ifaceHolding(n *Node, a netip.Addr) (string, bool) {
	if !a.IsValid() {
		return "", false
	}
	for _, ifn := range sortedKeys(n.Interfaces) {
		if ifc := n.Interfaces[ifn]; ifc != nil && hasAddr(ifc.Addresses, a) {
			return ifn, true
		}
	}
	return "", false
}

// peersWith reports whether speaker b has a neighbor entry for one of n's
// addresses.
func peersWith(b *BGP, n *Node) bool {
	for _, nb := range b.Neighbors {
		if nb == nil {
			continue
		}
		if a, err := netip.ParseAddr(nb.Address); err == nil && ownAddr(n, a) {
			return true
		}
	}
	return false
}

// localAddr is the address n's session towards peer starts from: its own
// in peer's subnet, else the one towards the gateway of the narrowest route
// that covers peer, else its lowest IPv4 address.
func localAddr(n *Node, peer netip.Addr) netip.Addr {
	if a, ok := addrOnSubnet(n, "", peer); ok {
		return a
	}
	best := -1
	var via netip.Addr
	var dev string
	for _, r := range n.Routes {
		if r == nil {
			continue
		}
		dst, err := ParseRouteDst(r.To)
		if err != nil || !dst.Addr().Is4() || !dst.Contains(peer) || dst.Bits() <= best {
			continue
		}
		best, via, dev = dst.Bits(), netip.Addr{}, r.Dev
		if gw, err := netip.ParseAddr(r.Via); err == nil {
			via = gw
		}
	}
	if via.IsValid() {
		if a, ok := addrOnSubnet(n, dev, via); ok {
			return a
		}
	}
	if dev != "" && n.Interfaces[dev] != nil {
		for _, s := range n.Interfaces[dev].Addresses {
			if pr, err := netip.ParsePrefix(s); err == nil && pr.Addr().Is4() {
				return pr.Addr()
			}
		}
	}
	a, _ := defaultRouterID(n)
	return a
}

// addrOnSubnet is n's address (on dev, when given) in a subnet holding a.
func addrOnSubnet(n *Node, dev string, a netip.Addr) (netip.Addr, bool) {
	for _, ifn := range sortedKeys(n.Interfaces) {
		ifc := n.Interfaces[ifn]
		if ifc == nil || dev != "" && ifn != dev {
			continue
		}
		for _, s := range ifc.Addresses {
			if pr, err := netip.ParsePrefix(s); err == nil && pr.Addr().Is4() && pr.Masked().Contains(a) && pr.Addr() != a {
				return pr.Addr(), true
			}
		}
	}
	return netip.Addr{}, false
}

// connectedPrefix reports whether p lies inside a subnet on one of n's
// interfaces.
func connectedPrefix(n *Node, p netip.Prefix) bool {
	for _, ifc := range n.Interfaces {
		if ifc == nil {
			continue
		}
		for _, s := range ifc.Addresses {
			if pr, err := netip.ParsePrefix(s); err == nil && pr.Addr().Is4() && within(pr.Masked(), p) {
				return true
			}
		}
	}
	return false
}

// routed reports whether one of n's static routes covers p.
func routed(n *Node, p netip.Prefix) bool {
	for _, r := range n.Routes {
		if r == nil {
			continue
		}
		if dst, err := ParseRouteDst(r.To); err == nil && dst.Addr().Is4() && within(dst, p) {
			return true
		}
	}
	return false
}

// within reports whether inner lies inside outer.
func within(outer, inner netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

// defaultRouterID is n's numerically lowest IPv4 interface address
// (loopback 127/8 aside).
func defaultRouterID(n *Node) (netip.Addr, bool) {
	var low netip.Addr
	for _, ifc := range n.Interfaces {
		if ifc == nil {
			continue
		}
		for _, s := range ifc.Addresses {
			pr, err := netip.ParsePrefix(s)
			if err != nil || !pr.Addr().Is4() || pr.Addr().IsLoopback() {
				continue
			}
			if !low.IsValid() || pr.Addr().Less(low) {
				low = pr.Addr()
			}
		}
	}
	return low, low.IsValid()
}

// expandBGP resolves every bgp block of a validated lab: the defaults, the
// AS's own prefixes, each neighbor's node, and the speaker's service with
// the resolved block as its configuration. Running it again changes
// nothing.
func (t *Topology) expandBGP() {
	holders := t.IPv4Owners()
	own := map[uint32][]netip.Prefix{}
	for _, name := range t.NodeNames() {
		if b := t.Nodes[name].BGP; b != nil {
			for _, s := range b.Networks {
				if pr, err := netip.ParsePrefix(s); err == nil {
					own[b.ASN] = append(own[b.ASN], pr)
				}
			}
		}
	}
	for asn, prs := range own {
		slices.SortFunc(prs, func(a, b netip.Prefix) int {
			if c := a.Addr().Compare(b.Addr()); c != 0 {
				return c
			}
			return a.Bits() - b.Bits()
		})
		own[asn] = slices.Compact(prs)
	}
	for _, name := range t.NodeNames() {
		n := t.Nodes[name]
		b := n.BGP
		if b == nil {
			continue
		}
		if b.Export == "" {
			b.Export = ExportAll
		}
		if b.Timers == nil {
			b.Timers = &BGPTimers{}
		}
		b.Timers.ConnectRetry = orDefault(b.Timers.ConnectRetry, DefaultRetry)
		b.Timers.Hold = orDefault(b.Timers.Hold, DefaultHold)
		b.Timers.Keepalive = orDefault(b.Timers.Keepalive, DefaultKeepalive)
		if b.RouterID == "" {
			if a, ok := defaultRouterID(n); ok {
				b.RouterID = a.String()
			}
		}
		b.Own = nil
		if b.Export == ExportOwn {
			for _, pr := range own[b.ASN] {
				b.Own = append(b.Own, pr.String())
			}
		}
		for _, nb := range b.Neighbors {
			if a, err := netip.ParseAddr(nb.Address); err == nil {
				nb.Node = holders[a]
			}
			nb.Local = ""
			if p := t.Nodes[nb.Node]; p != nil && p.BGP != nil {
				for _, back := range p.BGP.Neighbors {
					if a, err := netip.ParseAddr(back.Address); err == nil && ownAddr(n, a) {
						nb.Local = a.String()
						break
					}
				}
			}
		}
		sock := BGPSocket(t.Name, name)
		b.API = "unix://" + sock
		cfg, err := json.Marshal(b)
		if err != nil {
			panic(err) // plain strings and numbers: cannot fail
		}
		if n.Services == nil {
			n.Services = map[string]*Service{}
		}
		n.Services[BGPService] = &Service{
			Command: []string{"labctl", "serve", "bgp", "--config", string(cfg)},
			Ready:   &Ready{File: sock},
		}
	}
}
