package topology

import "net/netip"

// Address helpers the lab parts' checks share (the internet's BGP
// sessions, the DNS world's servers, the region's gateways).

// MaxSocketPath is the longest Unix socket path (sun_path holds 108 bytes
// with the NUL).
const MaxSocketPath = maxSocketPath

// OwnAddr reports whether a is written on one of n's interfaces.
func OwnAddr(n *Node, a netip.Addr) bool { return ownAddr(n, a) }

// HasAddr reports whether one of the CIDRs is a itself.
func HasAddr(addrs []string, a netip.Addr) bool { return hasAddr(addrs, a) }

// Connected reports whether gw is inside a subnet on one of n's
// interfaces (only on dev, when given).
func Connected(n *Node, dev string, gw netip.Addr) bool { return (&checker{}).connected(n, dev, gw) }

// LowestIPv4 is n's numerically lowest IPv4 interface address (loopback
// 127/8 aside): the default BGP router ID.
func LowestIPv4(n *Node) (netip.Addr, bool) {
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

// Expanded reports whether the lab is the expanded form (its parts'
// services are in it already).
func (t *Topology) Expanded() bool { return t.expanded }

// KindRouter is the base kind of a forwarding host.
const KindRouter = "router"

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

// IPv4CIDR parses an IPv4 CIDR written without host bits at p, reporting
// a problem when it is not one (or missing, when missing says so).
func (k *Check) IPv4CIDR(p Path, s, missing string) (netip.Prefix, bool) {
	return k.c.ipv4CIDR(p, s, missing)
}
