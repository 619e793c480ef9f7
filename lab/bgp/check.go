package bgp

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"labctl/lab/topology"
)

// checker checks the internet's blocks through the topology's Check, so
// that every problem is located in the file.
type checker struct {
	k *topology.Check
	t *topology.Topology
}

func (c *checker) add(p topology.Path, format string, args ...any) { c.k.Add(p, format, args...) }

func (c *checker) addAtKey(p topology.Path, format string, args ...any) {
	c.k.AddAtKey(p, format, args...)
}

// bgp checks the bgp and cgnat blocks. It runs before the lab is expanded
// and again on the expanded lab (a second Validate): what expand fills in
// (defaults, the speaker's service) passes these checks.
func (c *checker) all() {
	t := c.t
	holders := t.IPv4Owners()
	for _, name := range t.NodeNames() {
		n := t.Nodes[name]
		if Of(n) != nil {
			c.speaker(name, n, holders)
		}
		if CGNATOf(n) != nil {
			c.cgnat(name, n)
		}
	}
	c.routerIDs()
}

// onRouter reports a block on a node of another kind; an unknown kind is
// reported by node already.
func (c *checker) onRouter(p topology.Path, block, name string, n *topology.Node) bool {
	if n.Kind == topology.KindRouter {
		return true
	}
	if _, ok := topology.KindOf(n.Kind); ok {
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

func (c *checker) asn(p topology.Path, asn uint32, missing string) {
	switch {
	case asn == 0:
		c.add(p, "%s", missing)
	case asn > maxASN:
		c.add(p, "asn %d is outside 1..%d", asn, uint32(maxASN))
	}
}

// speaker checks one router's bgp block.
func (c *checker) speaker(name string, n *topology.Node, holders map[netip.Addr]string) {
	t := c.t
	p := topology.Path{"nodes", name}
	bp := p.With("bgp")
	b := Of(n)
	if !c.onRouter(bp, "bgp", name, n) {
		return
	}
	// Once expanded, the service is the speaker itself.
	if _, ok := n.Services[Service]; ok && !t.Expanded() {
		c.addAtKey(p.With("services", Service), "%s is the BGP speaker labctl starts on a router with a bgp block; name the service otherwise", Service)
	}
	if l := len(Socket(t.Name, name)); l > topology.MaxSocketPath {
		c.add(bp, "the BGP speaker's socket path for this router would be %d bytes (Unix sockets allow %d): shorten the lab or node name", l, topology.MaxSocketPath)
	}
	c.asn(bp.With("asn"), b.ASN, "the speaker needs an asn")
	if b.RouterID != "" {
		if a, err := netip.ParseAddr(b.RouterID); err != nil || !a.Is4() {
			c.add(bp.With("router-id"), "%q is not an IPv4 address", b.RouterID)
		}
	}
	seen := map[netip.Prefix]int{}
	for i, s := range b.Networks {
		np := bp.With("networks", i)
		pr, ok := c.k.IPv4CIDR(np, s, "")
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
		c.add(bp.With("export"), "unknown export %q (all or own)", b.Export)
	}
	if len(b.Neighbors) == 0 {
		c.add(bp.With("neighbors"), "a speaker needs at least one neighbor (address and asn)")
	}
	addrs := map[netip.Addr]int{}
	for i, nb := range b.Neighbors {
		np := bp.With("neighbors", i)
		if nb == nil {
			c.add(np, "a neighbor needs address and asn")
			continue
		}
		c.asn(np.With("asn"), nb.ASN, "the neighbor needs an asn")
		ap := np.With("address")
		a, err := netip.ParseAddr(nb.Address)
		switch {
		case nb.Address == "":
			c.add(ap, "missing address (the neighbor's IPv4 address)")
			continue
		case err != nil || !a.Is4():
			c.add(ap, "%q is not an IPv4 address", nb.Address)
			continue
		case topology.OwnAddr(n, a):
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
			direct := topology.Connected(n, "", a)
			if nb.ASN != b.ASN {
				if !direct {
					c.add(ap, "eBGP neighbor %s is on no subnet connected to node %s (eBGP sessions are single-hop)", a, name)
				}
				if nb.RouteReflectorClient {
					c.add(np.With("route-reflector-client"), "route-reflector-client applies to iBGP neighbors; asn %d is not this router's (%d)", nb.ASN, b.ASN)
				}
			} else if !direct && !routed(n, netip.PrefixFrom(a, 32)) {
				c.add(ap, "iBGP neighbor %s is on no subnet connected to node %s and covered by none of its routes (they stand in for the carrier's IGP)", a, name)
			}
		}
		pb := Of(t.Nodes[peer])
		switch {
		case pb == nil:
			c.add(ap, "%s is node %s, which has no bgp block", a, peer)
		case nb.ASN != 0 && pb.ASN != 0 && pb.ASN != nb.ASN:
			c.add(np.With("asn"), "%s is node %s, whose asn is %d, not %d", a, peer, pb.ASN, nb.ASN)
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
		c.timers(bp.With("timers"), tm)
	}
}

// timers checks a speaker's timers; a zero field takes its default.
func (c *checker) timers(p topology.Path, tm *Timers) {
	whole := func(field string, d topology.Duration) bool {
		if time.Duration(d)%time.Second != 0 {
			c.add(p.With(field), "%s %s is not a whole number of seconds", field, time.Duration(d))
			return false
		}
		return true
	}
	if whole("connect-retry", tm.ConnectRetry) && tm.ConnectRetry < 0 {
		c.add(p.With("connect-retry"), "connect-retry %s must be at least 1s", time.Duration(tm.ConnectRetry))
	}
	holdOK := whole("hold", tm.Hold)
	if holdOK && tm.Hold != 0 && tm.Hold < topology.Duration(3*time.Second) {
		c.add(p.With("hold"), "hold %s must be 0 (the default, %ds) or at least 3s", time.Duration(tm.Hold), DefaultHold)
		holdOK = false
	}
	kaOK := whole("keepalive", tm.Keepalive)
	if kaOK && tm.Keepalive < 0 {
		c.add(p.With("keepalive"), "keepalive %s must be at least 1s", time.Duration(tm.Keepalive))
		kaOK = false
	}
	if !holdOK || !kaOK {
		return
	}
	hold, ka := orDefault(tm.Hold, DefaultHold), orDefault(tm.Keepalive, DefaultKeepalive)
	switch {
	case ka >= hold && tm.Hold == 0:
		c.add(p.With("keepalive"), "keepalive %s must be shorter than hold %s (the default)", time.Duration(ka), time.Duration(hold))
	case ka >= hold:
		c.add(p.With("keepalive"), "keepalive %s must be shorter than hold %s", time.Duration(ka), time.Duration(hold))
	}
}

func orDefault(d topology.Duration, seconds int) topology.Duration {
	if d == 0 {
		return topology.Duration(time.Duration(seconds) * time.Second)
	}
	return d
}

// cgnat checks a router's carrier-grade NAT.
func (c *checker) cgnat(name string, n *topology.Node) {
	p := topology.Path{"nodes", name, "cgnat"}
	if !c.onRouter(p, "cgnat", name, n) {
		return
	}
	g := CGNATOf(n)
	if in, ok := c.k.IPv4CIDR(p.With("inside"), g.Inside, "missing inside (the subscribers' range, in "+CarrierSpace+")"); ok {
		switch {
		case !within(carrierSpace, in):
			c.add(p.With("inside"), "%s is not inside %s, the carrier space (RFC 6598) subscribers are numbered from", in, CarrierSpace)
		case !connectedPrefix(n, in) && !routed(n, in):
			c.add(p.With("inside"), "%s is on no subnet of node %s and covered by none of its routes", in, name)
		}
	}
	if pool, ok := c.k.IPv4CIDR(p.With("pool"), g.Pool, "missing pool (the public prefix subscribers leave with)"); ok && pool.Overlaps(carrierSpace) {
		c.add(p.With("pool"), "%s overlaps %s: the pool is public addresses, not carrier space", pool, CarrierSpace)
	}
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
		if Of(n) == nil || n.Kind != topology.KindRouter {
			continue
		}
		if Of(n).RouterID != "" {
			written = append(written, name)
			continue
		}
		a, ok := topology.LowestIPv4(n)
		if !ok {
			c.add(topology.Path{"nodes", name, "bgp"}, "node %s has no IPv4 address to take a router-id from; give router-id", name)
			continue
		}
		if _, dup := ids[a]; !dup { // a duplicate address, reported as such
			ids[a] = owner{name, false}
		}
	}
	for _, name := range written {
		a, err := netip.ParseAddr(Of(c.t.Nodes[name]).RouterID)
		if err != nil || !a.Is4() {
			continue
		}
		prev, dup := ids[a]
		switch {
		case dup && prev.explicit:
			c.add(topology.Path{"nodes", name, "bgp", "router-id"}, "router-id %s is also the router-id of node %s", a, prev.node)
		case dup:
			c.add(topology.Path{"nodes", name, "bgp", "router-id"}, "router-id %s is also the router-id of node %s (its lowest IPv4 address)", a, prev.node)
		default:
			ids[a] = owner{name, true}
		}
	}
}

// SessionEnds are the interfaces that hold the two addresses of node's
// session with nb: node's source address (nb.Local, else its address in a
// subnet holding nb.Address) and nb.Address on the neighbor's node. For
// routers on one link (or one switch) these are the ends of that link; an
// address on no interface (a session from an unknown peer) gives no end.
func SessionEnds(t *topology.Topology, node string, nb *Peer) []topology.Endpoint {
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
	var out []topology.Endpoint
	if ifn, ok := ifaceHolding(n, local); ok {
		out = append(out, topology.Endpoint{Node: node, Iface: ifn})
	}
	if p := t.Nodes[nb.Node]; p != nil {
		if ifn, ok := ifaceHolding(p, peer); ok {
			out = append(out, topology.Endpoint{Node: nb.Node, Iface: ifn})
		}
	}
	return out
}

// ifaceHolding is the interface of n that has address a.
func ifaceHolding(n *topology.Node, a netip.Addr) (string, bool) {
	if !a.IsValid() {
		return "", false
	}
	for _, ifn := range slices.Sorted(maps.Keys(n.Interfaces)) {
		if ifc := n.Interfaces[ifn]; ifc != nil && topology.HasAddr(ifc.Addresses, a) {
			return ifn, true
		}
	}
	return "", false
}

// peersWith reports whether speaker b has a neighbor entry for one of n's
// addresses.
func peersWith(b *Config, n *topology.Node) bool {
	for _, nb := range b.Neighbors {
		if nb == nil {
			continue
		}
		if a, err := netip.ParseAddr(nb.Address); err == nil && topology.OwnAddr(n, a) {
			return true
		}
	}
	return false
}

// localAddr is the address n's session towards peer starts from: its own
// in peer's subnet, else the one towards the gateway of the narrowest route
// that covers peer, else its lowest IPv4 address.
func localAddr(n *topology.Node, peer netip.Addr) netip.Addr {
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
		dst, err := topology.ParseRouteDst(r.To)
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
	a, _ := topology.LowestIPv4(n)
	return a
}

// addrOnSubnet is n's address (on dev, when given) in a subnet holding a.
func addrOnSubnet(n *topology.Node, dev string, a netip.Addr) (netip.Addr, bool) {
	for _, ifn := range slices.Sorted(maps.Keys(n.Interfaces)) {
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
func connectedPrefix(n *topology.Node, p netip.Prefix) bool {
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
func routed(n *topology.Node, p netip.Prefix) bool {
	for _, r := range n.Routes {
		if r == nil {
			continue
		}
		if dst, err := topology.ParseRouteDst(r.To); err == nil && dst.Addr().Is4() && within(dst, p) {
			return true
		}
	}
	return false
}

// within reports whether inner lies inside outer.
func within(outer, inner netip.Prefix) bool {
	return outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}
