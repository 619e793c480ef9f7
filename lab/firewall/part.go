package firewall

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"labctl/lab/doctor"
	"labctl/lab/engine"
	"labctl/lab/plan"
	"labctl/lab/topology"
)

// Part is the firewall lab part. Its methods are the registry's optional
// interfaces; lab/parts registers it.
type Part struct{}

// Name is the part's registry key.
func (Part) Name() string { return "firewall" }

// Stage is the story stage it recreates.
func (Part) Stage() string {
	return "stage 2: the security device between a region's core and the border router"
}

// Kinds declares the firewall node kind: a router whose forwarding is
// filtered.
func (Part) Kinds() []topology.Kind {
	return []topology.Kind{{Name: Kind, Forwarding: true, Part: "firewall",
		Doc: "a stateful firewall between a region and the border: routes, lets what its firewall block allows in, drops and counts the rest"}}
}

// Blocks declares the firewall block of a node.
func (Part) Blocks() []topology.Block {
	return []topology.Block{{Name: Block, New: func() any { return new(Firewall) },
		Doc: "a firewall node's rules: inside interfaces, allow rules for new connections from outside, proxy-arp"}}
}

// Of returns a node's firewall block, nil if it has none.
func Of(n *topology.Node) *Firewall {
	fw, _ := n.Block(Block).(*Firewall)
	return fw
}

// Check checks every firewall block and every firewall node.
func (Part) Check(c *topology.Check) {
	t := c.Topology()
	for _, name := range t.NodeNames() {
		n := t.Nodes[name]
		p := topology.Path{"nodes", name}
		fw := Of(n)
		switch {
		case fw == nil && n.Kind == Kind:
			c.Add(p.With("kind"), "a firewall node needs a firewall block (inside: and allow:)")
			continue
		case fw == nil:
			continue
		case n.Kind != Kind:
			c.Add(p.With(Block), "only a node of kind firewall has a firewall block (this one is %s)", article(n.Kind))
			continue
		}
		checkBlock(c, p.With(Block), n, fw)
	}
}

func checkBlock(c *topology.Check, p topology.Path, n *topology.Node, fw *Firewall) {
	if len(fw.Inside) == 0 {
		c.Add(p.With("inside"), "name the interfaces facing what the firewall protects")
	}
	seen := map[string]bool{}
	for i, ifn := range fw.Inside {
		switch {
		case !hasIface(n, ifn):
			c.Add(p.With("inside", i), "%q is not an interface of this node (it has %s)", ifn, strings.Join(ifaceNames(n), ", "))
		case seen[ifn]:
			c.Add(p.With("inside", i), "%q is listed twice", ifn)
		default:
			seen[ifn] = true
		}
	}
	if len(fw.Inside) > 0 && len(seen) >= len(ifaceNames(n)) {
		c.Add(p.With("inside"), "every interface is inside: a firewall needs an outside one")
	}
	for i, r := range fw.Allow {
		checkRule(c, p.With("allow", i), r)
	}
}

func checkRule(c *topology.Check, p topology.Path, r *Rule) {
	if r == nil {
		c.Add(p, "empty allow rule (give to:, from:, proto: or ports:)")
		return
	}
	for _, f := range []struct {
		name string
		vals []string
	}{{"from", r.From}, {"to", r.To}} {
		for i, s := range f.vals {
			if _, err := parsePrefix(s); err != nil {
				c.Add(p.With(f.name, i), "%v", err)
			}
		}
	}
	if r.Proto != "" && !slices.Contains(protocols, r.Proto) {
		c.Add(p.With("proto"), "unknown protocol %q (one of %s)", r.Proto, strings.Join(protocols, ", "))
	}
	if len(r.Ports) > 0 && r.Proto != "tcp" && r.Proto != "udp" {
		c.Add(p.With("ports"), "ports need proto: tcp or udp")
	}
	for i, port := range r.Ports {
		if port < 1 || port > 65535 {
			c.Add(p.With("ports", i), "%d is not a port (1-65535)", port)
		}
	}
	if r.Name != "" && strings.ContainsAny(r.Name, "\"\\\n") {
		c.Add(p.With("name"), "a rule name cannot hold quotes, backslashes or newlines")
	}
}

// hasIface reports an interface written with no settings ("eth0:").
func hasIface(n *topology.Node, ifn string) bool {
	_, ok := n.Interfaces[ifn]
	return ok
}

func ifaceNames(n *topology.Node) []string {
	var out []string
	for k := range n.Interfaces {
		if k != "lo" {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func article(w string) string {
	if w == "" {
		return "a node without a kind"
	}
	if strings.ContainsRune("aeiou", rune(w[0])) {
		return "an " + w
	}
	return "a " + w
}

// Expand turns proxy-arp into the sysctls of the outside interfaces.
func (Part) Expand(t *topology.Topology) {
	for _, name := range t.NodeNames() {
		n := t.Nodes[name]
		fw := Of(n)
		if fw == nil || !fw.ProxyARP {
			continue
		}
		if n.Sysctls == nil {
			n.Sysctls = map[string]topology.Scalar{}
		}
		for _, ifn := range ifaceNames(n) {
			if !slices.Contains(fw.Inside, ifn) {
				n.Sysctls["net.ipv4.conf."+ifn+".proxy_arp"] = "1"
			}
		}
	}
}

// Op is the plan op of a firewall's rule set.
const (
	OpSync   = "firewall.sync"
	OpRemove = "firewall.remove"
)

// Payload is what a firewall step carries: the nft script and its hash.
type Payload struct {
	Script string `json:"script"`
	Hash   string `json:"hash"`
	Rules  int    `json:"rules"`
}

// Steps plans each firewall's rule set where the observed hash differs,
// and the table's removal from a node that no longer has a block.
func (Part) Steps(t *topology.Topology, obs *plan.Observed) []plan.Step {
	var out []plan.Step
	for _, name := range t.NodeNames() {
		n := t.Nodes[name]
		ns := topology.Namespace(t.Name, name)
		var have string
		if obs != nil {
			have = obs.Namespaces[ns].PartState("firewall")
		}
		fw := Of(n)
		if fw == nil {
			if have != "" {
				out = append(out, plan.Step{Phase: plan.PhaseFilters, Op: OpRemove, Node: name, NS: ns,
					Text: "- firewall " + name, Reason: "removed"})
			}
			continue
		}
		script, hash := Ruleset(t.Name, fw)
		if have == hash {
			continue
		}
		rules := len(fw.Allow) + 4
		st := plan.Step{Phase: plan.PhaseFilters, Op: OpSync, Node: name, NS: ns,
			Payload: &Payload{Script: script, Hash: hash, Rules: rules},
			Text:    fmt.Sprintf("~ firewall %s: %d rules, inside %s", name, rules, strings.Join(fw.Inside, ","))}
		if have != "" {
			st.Reason = "changed"
		}
		out = append(out, st)
	}
	return out
}

// Apply loads or removes a firewall's table.
func (Part) Apply(ctx context.Context, lab string, s plan.Step) error {
	switch s.Op {
	case OpSync:
		pl, err := payloadOf(s)
		if err != nil {
			return err
		}
		return load(ctx, s.NS, pl.Script)
	case OpRemove:
		return remove(ctx, s.NS)
	}
	return fmt.Errorf("firewall: unknown op %q", s.Op)
}

// payloadOf is the step's payload (a plan the engine computed).
func payloadOf(s plan.Step) (*Payload, error) {
	if pl, ok := s.Payload.(*Payload); ok {
		return pl, nil
	}
	return nil, fmt.Errorf("%s: the step carries no firewall rule set", s)
}

// Observe reads the hash of the lab's rule set in a firewall namespace.
func (Part) Observe(ctx context.Context, lab string, n *topology.Node, ns string) (string, error) {
	if n.Kind != Kind && Of(n) == nil {
		return "", nil
	}
	c, ok, err := tableComment(ctx, ns)
	if err != nil || !ok {
		return "", err
	}
	if h := hashOf(lab, c); h != "" {
		return h, nil
	}
	return "foreign", nil // a table of that name the lab did not write: replaced
}

// Describe is the inspect section: every rule of every firewall with its
// counters, read from the kernel.
func (Part) Describe(ctx context.Context, lab string, t *topology.Topology) (*engine.Section, error) {
	var fws []Info
	sec := &engine.Section{Title: "FIREWALLS (nftables table inet labctl, chain forward, policy drop)",
		Columns: []string{"FIREWALL", "RULE", "MATCH", "VERDICT", "PACKETS", "BYTES"}}
	for _, name := range t.NodeNames() {
		n := t.Nodes[name]
		if Of(n) == nil {
			continue
		}
		info, err := Read(ctx, lab, name)
		if err != nil {
			info = &Info{Node: name, Error: err.Error()}
			sec.Rows = append(sec.Rows, []string{name, "(" + err.Error() + ")", "", "", "", ""})
		}
		for i, r := range info.Rules {
			head := ""
			if i == 0 {
				head = name
			}
			sec.Rows = append(sec.Rows, []string{head, r.Name, r.Match, r.Verdict, fmt.Sprint(r.Packets), fmt.Sprint(r.Bytes)})
		}
		fws = append(fws, *info)
	}
	if fws == nil {
		return nil, nil
	}
	sec.Data = fws
	return sec, nil
}

// Probes checks that nftables can build a stateful, counting filter.
func (Part) Probes() []doctor.Probe {
	return []doctor.Probe{{
		Check: doctor.Check{Name: "nftables", Group: "kernel", Fix: "apt-get install -y nftables"},
		Run: func(ctx context.Context, c *doctor.Check) error {
			return doctor.InTemp(func() error {
				if err := probe(ctx); err != nil {
					return err
				}
				c.Detail = "stateful filter with counters loaded (nft)"
				return nil
			})
		},
	}}
}
