// Package firewall is the lab's security device (story stage 2: "outside
// the core switch sits the security equipment, then the border router"): a
// node kind `firewall` that routes between the border's segment and a
// region, with a stateful nftables rule set declared in the topology —
// new connections from its inside interfaces pass, replies come back as
// established or related, new connections from outside pass only where an
// allow rule says so (the shop's public VIPs), and everything else is
// dropped and counted. `labctl inspect` shows every rule's counters.
//
// It is a lab part (lab/component) and holds all of itself: the block's
// model and checks, the expansion (proxy ARP on the outside interfaces),
// the plan step that carries the rule set, the driver (nft in the node's
// namespace), the inspect section and the doctor probe. The core knows
// nothing of it; lab/parts registers it with one line.
package firewall

import (
	"fmt"
	"net/netip"
	"strings"
)

// Kind is the node kind this part owns.
const Kind = "firewall"

// Block is the key of the firewall block under a node.
const Block = "firewall"

// Firewall is a firewall node's block.
type Firewall struct {
	// Inside lists the interfaces facing what the firewall protects: new
	// connections from them pass; every other interface is outside.
	Inside []string `yaml:"inside" json:"inside"`
	// Allow lists the new connections from outside that pass.
	Allow []*Rule `yaml:"allow,omitempty" json:"allow,omitempty"`
	// ProxyARP makes the outside interfaces answer ARP for the addresses
	// routed inside, so that a firewall can be put in front of part of a
	// segment without renumbering its neighbours.
	ProxyARP bool `yaml:"proxy-arp,omitempty" json:"proxy_arp,omitempty"`
}

// Rule is one allow rule: new connections to To (from From, when given)
// of Proto to Ports. Empty From or To match any address; an empty Proto
// matches every protocol; Ports need tcp or udp.
type Rule struct {
	Name  string   `yaml:"name,omitempty" json:"name,omitempty"`
	From  []string `yaml:"from,omitempty" json:"from,omitempty"`
	To    []string `yaml:"to,omitempty" json:"to,omitempty"`
	Proto string   `yaml:"proto,omitempty" json:"proto,omitempty"`
	Ports []int    `yaml:"ports,omitempty" json:"ports,omitempty"`
}

// Protocols an allow rule may name.
var protocols = []string{"tcp", "udp", "icmp"}

// label is how the rule is named in counters: its name, or allow[i].
func (r *Rule) label(i int) string {
	if r.Name != "" {
		return r.Name
	}
	return fmt.Sprintf("allow[%d]", i)
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			return netip.Prefix{}, fmt.Errorf("%q is not an IPv4 address or CIDR", s)
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Errorf("%q has host bits set (the network is %s)", s, p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Prefix{}, fmt.Errorf("%q is not an IPv4 address or CIDR", s)
	}
	return netip.PrefixFrom(a, 32), nil
}
