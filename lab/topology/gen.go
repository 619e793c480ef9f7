package topology

import (
	"fmt"
	"net/netip"

	"github.com/goccy/go-yaml"
)

// Shapes lists the generators, named as Mininet names its topologies.
var Shapes = []string{"linear", "tree", "star"}

// Generate builds a Mininet-shaped lab: "linear" (n switches in a chain,
// one host each: n hosts, n switches, 2n-1 links), "star" (Mininet's
// "single": one switch, n hosts) or "tree" (depth n, fanout f; hosts at the
// leaves). Hosts get 10.0.0.i/8 as in Mininet.
func Generate(name, shape string, n, fanout int) (*Topology, error) {
	if n < 1 {
		return nil, fmt.Errorf("size must be at least 1, got %d", n)
	}
	g := &gen{t: &Topology{Name: name, Nodes: map[string]*Node{}}}
	switch shape {
	case "linear":
		for i := 1; i <= n; i++ {
			s := g.sw(i)
			g.host(s)
			if i > 1 {
				g.link(fmt.Sprintf("s%d", i-1), s)
			}
		}
	case "star", "single":
		s := g.sw(1)
		for i := 0; i < n; i++ {
			g.host(s)
		}
	case "tree":
		if fanout < 1 {
			return nil, fmt.Errorf("fanout must be at least 1, got %d", fanout)
		}
		g.tree(n, fanout)
	default:
		return nil, fmt.Errorf("unknown shape %q (one of linear, tree, star)", shape)
	}
	if g.hosts > 1<<24-2 {
		return nil, fmt.Errorf("%d hosts do not fit in 10.0.0.0/8", g.hosts)
	}
	for _, nd := range g.t.Nodes {
		if nd.Interfaces == nil {
			nd.Interfaces = map[string]*Interface{}
		}
	}
	return g.t, nil
}

type gen struct {
	t          *Topology
	hosts, sws int
	ports      map[string]int
}

func (g *gen) sw(i int) string {
	name := fmt.Sprintf("s%d", i)
	g.t.Nodes[name] = &Node{Kind: "switch", Name: name}
	g.sws++
	return name
}

// host adds the next host, wired to switch s.
func (g *gen) host(s string) {
	g.hosts++
	h := fmt.Sprintf("h%d", g.hosts)
	a := netip.AddrFrom4([4]byte{10, byte(g.hosts >> 16), byte(g.hosts >> 8), byte(g.hosts)})
	g.t.Nodes[h] = &Node{Kind: "host", Name: h, Interfaces: map[string]*Interface{
		"eth0": {Addresses: []string{netip.PrefixFrom(a, 8).String()}},
	}}
	g.t.Links = append(g.t.Links, &Link{Endpoints: []string{h + ":eth0", s + ":" + g.port(s)}})
}

func (g *gen) link(a, b string) {
	g.t.Links = append(g.t.Links, &Link{Endpoints: []string{a + ":" + g.port(a), b + ":" + g.port(b)}})
}

// port names a switch's next port eth1, eth2, ... as Mininet does.
func (g *gen) port(s string) string {
	if g.ports == nil {
		g.ports = map[string]int{}
	}
	g.ports[s]++
	return fmt.Sprintf("eth%d", g.ports[s])
}

// tree adds a switch subtree of the given depth and returns its root.
func (g *gen) tree(depth, fanout int) string {
	s := g.sw(g.sws + 1)
	for i := 0; i < fanout; i++ {
		if depth <= 1 {
			g.host(s)
			continue
		}
		g.link(s, g.tree(depth-1, fanout))
	}
	return s
}

// Marshal renders a topology as YAML.
func Marshal(t *Topology) ([]byte, error) {
	return yaml.MarshalWithOptions(t, yaml.IndentSequence(true))
}
