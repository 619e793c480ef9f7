package bgp

import (
	"net/netip"

	"labctl/lab/nat"
	"labctl/lab/topology"
)

// Part is the internet as a lab part (stages 2 and 7): the bgp and cgnat
// blocks of routers, their checks, the speaker service each bgp block
// expands into, and the carrier-grade NAT rules of a cgnat block.
// lab/parts registers it.
type Part struct{}

// Block keys of the part.
const (
	Block      = "bgp"
	CGNATBlock = "cgnat"
)

// Name is the part's registry key.
func (Part) Name() string { return "bgp" }

// Stage is the story stages it recreates.
func (Part) Stage() string {
	return "stages 2 and 7: the internet's BGP speakers (eBGP between ASes, iBGP inside) and the carriers' CGNAT"
}

// Blocks declares a router's bgp and cgnat blocks.
func (Part) Blocks() []topology.Block {
	return []topology.Block{
		{Name: Block, New: func() any { return new(Config) }, Doc: "a router's BGP speaker: asn, neighbors, networks, export, timers"},
		{Name: CGNATBlock, New: func() any { return new(CGNAT) }, Doc: "carrier-grade NAT: subscribers' inside range and public pool"},
	}
}

// Of is a node's bgp block, nil if it has none.
func Of(n *topology.Node) *Config {
	if n == nil {
		return nil
	}
	c, _ := n.Block(Block).(*Config)
	return c
}

// CGNATOf is a node's cgnat block, nil if it has none.
func CGNATOf(n *topology.Node) *CGNAT {
	if n == nil {
		return nil
	}
	c, _ := n.Block(CGNATBlock).(*CGNAT)
	return c
}

// Check checks every bgp and cgnat block. It also runs on an expanded lab:
// what expansion fills in (defaults, the speaker's service) passes.
func (Part) Check(k *topology.Check) {
	c := &checker{k: k, t: k.Topology()}
	c.all()
}

// Expand resolves every bgp block into its speaker's service.
func (Part) Expand(t *topology.Topology) { expand(t) }

// NATRules are a cgnat router's pool NAT rules.
func (Part) NATRules(_ *topology.Topology, n *topology.Node) []nat.Rule {
	g := CGNATOf(n)
	if g == nil {
		return nil
	}
	return nat.PoolNAT(netip.MustParsePrefix(g.Inside), netip.MustParsePrefix(g.Pool))
}
