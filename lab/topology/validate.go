package topology

import (
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Limits on names, chosen so that every derived kernel name fits: the
// namespace "<lab>-<node>" and the altname "labctl.<lab>.<node>.<iface>"
// (at most 127 bytes).
const (
	MaxLabName   = 32
	MaxNodeName  = 48
	MaxIfaceName = 15 // IFNAMSIZ - 1
)

var (
	nameRe   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	ifaceRe  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]*$`)
	hostRe   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$`)
	sysctlRe = regexp.MustCompile(`^net(\.[A-Za-z0-9_-]+)+$`)
)

// rootNames are endpoint names that other tools use for the host itself.
var rootNames = map[string]bool{"host": true, "root": true, "default": true, "mgmt-net": true}

type checker struct {
	t     *Topology
	probs Problems
}

func (c *checker) add(p path, format string, args ...any) {
	c.probs = append(c.probs, c.t.src.problem(p, fmt.Sprintf(format, args...)))
}

// addAtKey is add for a problem with the map key p ends in, not its value.
func (c *checker) addAtKey(p path, format string, args ...any) {
	c.probs = append(c.probs, c.t.src.keyProblem(p, fmt.Sprintf(format, args...)))
}

// Validate checks the whole topology and returns every problem found, as
// Problems sorted by position, or nil. It does not change t: the lab as it
// will be built is checked on a copy (see Expand).
func (t *Topology) Validate() error {
	_, err := t.Expand()
	return err
}

// Expand checks the topology and returns the lab as it will be built: a
// copy with the cloud declarations, the BGP speakers, the DNS servers and
// every registered part's blocks resolved into plain nodes, links,
// addresses, routes and services. t is not changed. The error is Problems.
func (t *Topology) Expand() (*Topology, error) {
	x, err := t.clone()
	if err != nil {
		return nil, err
	}
	if err := x.checkExpand(); err != nil {
		return nil, err
	}
	return x, nil
}

// checkExpand checks t, expands it in place once the declarations are
// sound, and checks the expanded lab: the two steps of Expand on a
// topology the caller owns (Parse's).
func (t *Topology) checkExpand() error {
	c := &checker{t: t}
	c.lab()
	for _, name := range t.NodeNames() {
		c.node(name, t.Nodes[name])
	}
	used := c.links()
	c.region()
	c.dns()
	c.checkParts()
	if len(c.probs) == 0 {
		// The rest checks the lab as it will be built, with the cloud
		// declarations and the BGP speakers resolved; the new links are
		// checked like written ones.
		c.underlay()
		if len(c.probs) == 0 && !t.expanded {
			t.expand()
			t.expandDNS()
			t.expandParts()
			c.links()
		}
	}
	c.unlinked(used)
	c.segments()
	c.routes()
	c.services()
	c.duplicateAddresses()
	if len(c.probs) == 0 {
		return nil
	}
	sort.SliceStable(c.probs, func(i, j int) bool {
		a, b := c.probs[i], c.probs[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	return c.probs
}

func (c *checker) lab() {
	switch {
	case c.t.Name == "":
		c.add(path{"name"}, "the lab needs a name")
	case len(c.t.Name) > MaxLabName:
		c.add(path{"name"}, "%q is longer than %d characters", c.t.Name, MaxLabName)
	case !nameRe.MatchString(c.t.Name):
		c.add(path{"name"}, "%q must be lowercase letters, digits and inner dashes", c.t.Name)
	}
	if len(c.t.Nodes) == 0 {
		c.add(path{"nodes"}, "the lab has no nodes")
	}
}

func (c *checker) node(name string, n *Node) {
	p := path{"nodes", name}
	switch {
	case len(name) > MaxNodeName:
		c.add(p, "node name is longer than %d characters", MaxNodeName)
	case !nameRe.MatchString(name):
		c.add(p, "node name %q must be lowercase letters, digits and inner dashes", name)
	}
	kind, ok := KindOf(n.Kind)
	if !ok {
		if n.Kind == "" {
			c.add(p.with("kind"), "missing kind (one of %s)", strings.Join(KindNames(), ", "))
		} else {
			c.add(p.with("kind"), "unknown kind %q (one of %s)", n.Kind, strings.Join(KindNames(), ", "))
		}
	}
	for _, ifn := range sortedKeys(n.Interfaces) {
		ip := p.with("interfaces", ifn)
		c.ifaceName(ip, ifn)
		if kind.Bridge && ifn == BridgeName {
			c.add(ip, "%q is the bridge of every switch node; name the port otherwise", BridgeName)
		}
		iface := n.Interfaces[ifn]
		if iface == nil {
			continue
		}
		if kind.Bridge && len(iface.Addresses) > 0 {
			c.add(ip.with("addresses"), "a switch port carries no addresses")
		}
		for i, a := range iface.Addresses {
			pr, err := netip.ParsePrefix(a)
			if err != nil {
				c.add(ip.with("addresses", i), "%q is not an address with a prefix length (like 10.0.0.1/24 or fd00::1/64)", a)
				continue
			}
			if pr.Addr().Is4In6() || pr.Addr().IsLoopback() && ifn != "lo" || pr.Addr().IsMulticast() || pr.Addr().IsUnspecified() {
				c.add(ip.with("addresses", i), "%q cannot be an interface address", a)
			}
			if pr.Addr().Is6() && pr.Addr().IsLinkLocalUnicast() {
				c.add(ip.with("addresses", i), "%q is link-local: the kernel gives every interface one by itself", a)
			}
		}
		if iface.MTU != 0 {
			c.mtu(ip.with("mtu"), iface.MTU, iface.Addresses)
		}
	}
	for _, k := range sortedKeys(n.Sysctls) {
		if !sysctlRe.MatchString(k) {
			c.addAtKey(p.with("sysctls", k), "%q is not a per-namespace sysctl: only net.* keys are allowed, others would change the host", k)
		} else if n.Sysctls[k] == "" {
			c.addAtKey(p.with("sysctls", k), "sysctl %s has no value", k)
		}
	}
	if n.DNS != nil {
		if len(n.DNS.Nameservers) == 0 {
			c.add(p.with("dns"), "dns needs at least one nameserver")
		}
		for i, ns := range n.DNS.Nameservers {
			if _, err := netip.ParseAddr(ns); err != nil {
				c.add(p.with("dns", "nameservers", i), "%q is not an IP address", ns)
			}
		}
		for i, s := range n.DNS.Search {
			if !hostRe.MatchString(s) {
				c.add(p.with("dns", "search", i), "%q is not a domain name", s)
			}
		}
	}
	size := 0
	for _, a := range sortedKeys(n.Hosts) {
		if _, err := netip.ParseAddr(a); err != nil {
			c.add(p.with("hosts", a), "%q is not an IP address", a)
		}
		size += len(a) + 1
		for i, h := range n.Hosts[a] {
			if !hostRe.MatchString(h) {
				c.add(p.with("hosts", a, i), "%q is not a host name", h)
			}
			size += len(h) + 1
		}
	}
	if size > MaxHostsFile {
		c.add(p.with("hosts"), "makes a hosts file of %d bytes, over the limit of %d", size, MaxHostsFile)
	}
}

func (c *checker) ifaceName(p path, n string) {
	switch {
	case len(n) > MaxIfaceName:
		c.add(p, "interface name %q is %d characters; Linux allows at most %d", n, len(n), MaxIfaceName)
	case !ifaceRe.MatchString(n):
		c.add(p, "interface name %q may hold only letters, digits, _ and -", n)
	}
}

func (c *checker) mtu(p path, mtu int, addrs []string) {
	min := 68
	for _, a := range addrs {
		if strings.Contains(a, ":") {
			min = 1280
		}
	}
	if mtu < min || mtu > 65535 {
		c.add(p, "mtu %d is outside %d..65535", mtu, min)
	}
}

// links checks every link and returns the endpoints in use.
func (c *checker) links() map[Endpoint]path {
	used := map[Endpoint]path{}
	for i, l := range c.t.Links {
		p := path{"links", i}
		if l == nil || len(l.Endpoints) != 2 {
			c.add(p.with("endpoints"), "a link joins exactly two endpoints (node:iface)")
			continue
		}
		var ends [2]Endpoint
		for j, s := range l.Endpoints {
			ep := p.with("endpoints", j)
			e, err := ParseEndpoint(s)
			if err != nil {
				c.add(ep, "%v", err)
				continue
			}
			ends[j] = e
			n, ok := c.t.Nodes[e.Node]
			switch {
			case !ok && rootNames[e.Node]:
				c.add(ep, "%q would wire the host's root namespace; labctl only connects namespaces it creates", s)
				continue
			case !ok:
				c.add(ep, "no node named %q", e.Node)
				continue
			}
			c.ifaceName(ep, e.Iface)
			if e.Iface == "lo" {
				c.add(ep, "lo cannot be a link endpoint")
			}
			if k, _ := KindOf(n.Kind); k.Bridge && e.Iface == BridgeName {
				c.add(ep, "%q is the bridge of every switch node; name the port otherwise", BridgeName)
			}
			if prev, dup := used[e]; dup {
				c.add(ep, "%s is already used by %s", s, prev)
				continue
			}
			used[e] = ep
		}
		if ends[0].Node != "" && ends[0].Node == ends[1].Node {
			c.add(p.with("endpoints"), "a link must join two different nodes")
		}
		if l.MTU != 0 && (l.MTU < 68 || l.MTU > 65535) {
			c.add(p.with("mtu"), "mtu %d is outside 68..65535", l.MTU)
		}
	}
	return used
}

// unlinked reports configured interfaces that no link creates.
func (c *checker) unlinked(used map[Endpoint]path) {
	for _, name := range c.t.NodeNames() {
		if k, _ := KindOf(c.t.Nodes[name].Kind); k.Attached {
			continue // plugged into its host's switch
		}
		for _, ifn := range sortedKeys(c.t.Nodes[name].Interfaces) {
			if ifn == "lo" {
				continue
			}
			if _, ok := used[Endpoint{name, ifn}]; !ok {
				c.add(path{"nodes", name, "interfaces", ifn}, "interface %s:%s is on no link", name, ifn)
			}
		}
	}
}

// segments checks that all addresses on one layer-2 segment (links joined
// through switch nodes) share one subnet per address family.
func (c *checker) segments() {
	seg := c.t.Segments()
	type first struct {
		pr netip.Prefix
		at string
	}
	for _, members := range seg {
		var v4, v6 *first
		for _, e := range members {
			n := c.t.Nodes[e.Node]
			if n == nil || n.Interfaces[e.Iface] == nil {
				continue
			}
			iface := n.Interfaces[e.Iface]
			for i, a := range iface.Addresses {
				pr, err := netip.ParsePrefix(a)
				if err != nil {
					continue
				}
				if pr.IsSingleIP() {
					continue // an extra address (a VIP) in no subnet of its own
				}
				f := &v4
				if pr.Addr().Is6() {
					if pr.Addr().IsLinkLocalUnicast() {
						continue
					}
					f = &v6
				}
				if *f == nil {
					*f = &first{pr.Masked(), e.String()}
					continue
				}
				if pr.Masked() != (*f).pr {
					c.add(path{"nodes", e.Node, "interfaces", e.Iface, "addresses", i},
						"%s is in %s but %s on the same segment is in %s", a, pr.Masked(), (*f).at, (*f).pr)
				}
			}
		}
	}
}

// Segments groups the lab's endpoints into layer-2 segments: the two ends of
// a link are one segment, and all ports of a switch node are one segment.
// Every segment's endpoints are sorted; segments are ordered by first member.
func (t *Topology) Segments() [][]Endpoint {
	parent := map[Endpoint]Endpoint{}
	var find func(Endpoint) Endpoint
	find = func(e Endpoint) Endpoint {
		p, ok := parent[e]
		if !ok || p == e {
			parent[e] = e
			return e
		}
		r := find(p)
		parent[e] = r
		return r
	}
	union := func(a, b Endpoint) { parent[find(a)] = find(b) }
	switches := map[string]Endpoint{}
	for _, l := range t.Links {
		if l == nil || len(l.Endpoints) != 2 {
			continue
		}
		a, errA := ParseEndpoint(l.Endpoints[0])
		b, errB := ParseEndpoint(l.Endpoints[1])
		if errA != nil || errB != nil {
			continue
		}
		union(a, b)
		for _, e := range []Endpoint{a, b} {
			n, ok := t.Nodes[e.Node]
			if !ok {
				continue
			}
			if k, _ := KindOf(n.Kind); k.Bridge {
				if first, ok := switches[e.Node]; ok {
					union(e, first)
				} else {
					switches[e.Node] = e
				}
			}
		}
	}
	groups := map[Endpoint][]Endpoint{}
	for e := range parent {
		r := find(e)
		groups[r] = append(groups[r], e)
	}
	out := make([][]Endpoint, 0, len(groups))
	for _, g := range groups {
		sort.Slice(g, func(i, j int) bool { return g[i].String() < g[j].String() })
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0].String() < out[j][0].String() })
	return out
}

// routes checks destinations, gateways and devices.
func (c *checker) routes() {
	for _, name := range c.t.NodeNames() {
		n := c.t.Nodes[name]
		seen := map[string]int{}
		for i, r := range n.Routes {
			p := path{"nodes", name, "routes", i}
			if r == nil {
				c.add(p, "empty route")
				continue
			}
			dst, err := ParseRouteDst(r.To)
			if err != nil {
				c.add(p.with("to"), "%v", err)
				continue
			}
			key := dst.String() + "/" + strconv.Itoa(r.Metric)
			if j, dup := seen[key]; dup {
				c.add(p.with("to"), "route to %s (metric %d) is already given by routes[%d]", dst, r.Metric, j)
			}
			seen[key] = i
			if r.Via == "" && r.Dev == "" {
				c.add(p, "a route needs via (a gateway) or dev (an interface)")
			}
			if r.Dev != "" {
				if _, ok := n.Interfaces[r.Dev]; !ok && !c.t.hasEndpoint(name, r.Dev) && r.Dev != "lo" {
					c.add(p.with("dev"), "node %s has no interface %q", name, r.Dev)
				}
			}
			if r.Metric < 0 {
				c.add(p.with("metric"), "metric must be 0 or more")
			}
			if r.Via == "" {
				continue
			}
			gw, err := netip.ParseAddr(r.Via)
			if err != nil {
				c.add(p.with("via"), "%q is not an IP address", r.Via)
				continue
			}
			if gw.Is4() != dst.Addr().Is4() {
				c.add(p.with("via"), "gateway %s and destination %s are of different IP families", gw, dst)
				continue
			}
			if !c.connected(n, r.Dev, gw) {
				c.add(p.with("via"), "gateway %s is in no subnet connected to node %s", gw, name)
			}
		}
	}
}

// connected reports whether gw is inside a subnet on one of n's interfaces
// (only on dev, when given). Link-local IPv6 gateways need dev.
func (c *checker) connected(n *Node, dev string, gw netip.Addr) bool {
	if gw.Is6() && gw.IsLinkLocalUnicast() {
		return dev != ""
	}
	for ifn, iface := range n.Interfaces {
		if iface == nil || (dev != "" && ifn != dev) {
			continue
		}
		for _, a := range iface.Addresses {
			if pr, err := netip.ParsePrefix(a); err == nil && pr.Masked().Contains(gw) && pr.Addr() != gw {
				return true
			}
		}
	}
	return false
}

func (t *Topology) hasEndpoint(node, iface string) bool {
	for _, l := range t.Links {
		if l == nil {
			continue
		}
		for _, s := range l.Endpoints {
			if e, err := ParseEndpoint(s); err == nil && e.Node == node && e.Iface == iface {
				return true
			}
		}
	}
	return false
}

// ParseRouteDst parses a route destination: a CIDR with no host bits,
// "default" (0.0.0.0/0) or "default6" (::/0).
func ParseRouteDst(s string) (netip.Prefix, error) {
	switch s {
	case "default":
		return netip.MustParsePrefix("0.0.0.0/0"), nil
	case "default6":
		return netip.MustParsePrefix("::/0"), nil
	case "":
		return netip.Prefix{}, fmt.Errorf("missing destination (a CIDR, default or default6)")
	}
	pr, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR, default or default6", s)
	}
	if pr.Masked() != pr {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %s?", s, pr.Masked())
	}
	return pr, nil
}

// services checks commands, readiness and the dependency graph.
func (c *checker) services() {
	for _, name := range c.t.NodeNames() {
		n := c.t.Nodes[name]
		for _, sn := range sortedKeys(n.Services) {
			p := path{"nodes", name, "services", sn}
			if !nameRe.MatchString(sn) {
				c.add(p, "service name %q must be lowercase letters, digits and inner dashes", sn)
			}
			s := n.Services[sn]
			if s == nil || len(s.Command) == 0 || s.Command[0] == "" {
				c.add(p.with("command"), "a service needs a command (an argv list)")
				continue
			}
			for _, k := range sortedKeys(s.Env) {
				// exec would pass "" or "A=B" on as a malformed or
				// different variable.
				switch {
				case k == "":
					c.addAtKey(p.with("env", k), "an environment variable needs a name")
				case strings.ContainsAny(k, "=\x00"):
					c.addAtKey(p.with("env", k), "environment variable name %q cannot hold '=' or NUL", k)
				}
			}
			for i, dep := range s.After {
				dn, ds := SplitServiceRef(name, dep)
				if dn == name && ds == sn {
					c.add(p.with("after", i), "a service cannot wait for itself")
				} else if other, ok := c.t.Nodes[dn]; !ok || other.Services[ds] == nil {
					c.add(p.with("after", i), "no service %q (write SERVICE or NODE/SERVICE)", dep)
				}
			}
			if r := s.Ready; r != nil {
				set := 0
				for _, b := range []bool{r.TCP != "", len(r.Exec) > 0, r.File != ""} {
					if b {
						set++
					}
				}
				if set > 1 {
					c.add(p.with("ready"), "choose one readiness check: tcp, exec or file")
				}
				if r.TCP != "" {
					if _, err := ReadyAddr(r.TCP); err != nil {
						c.add(p.with("ready", "tcp"), "%v", err)
					}
				}
				if r.File != "" && !strings.HasPrefix(r.File, "/") {
					c.add(p.with("ready", "file"), "%q must be an absolute path", r.File)
				}
				if r.Timeout < 0 {
					c.add(p.with("ready", "timeout"), "timeout must not be negative")
				}
			}
			c.restart(p, s)
		}
	}
	if cyc := c.t.serviceCycle(); cyc != nil {
		node, svc := SplitServiceRef("", cyc[0])
		c.add(path{"nodes", node, "services", svc, "after"}, "services wait for each other in a cycle: %s", strings.Join(cyc, " → "))
	}
}

// SplitServiceRef resolves "svc" (on node) or "node/svc".
func SplitServiceRef(node, ref string) (string, string) {
	if n, s, ok := strings.Cut(ref, "/"); ok {
		return n, s
	}
	return node, ref
}

// ReadyAddr normalises a tcp readiness target to host:port.
func ReadyAddr(s string) (string, error) {
	if !strings.Contains(s, ":") || strings.HasPrefix(s, ":") {
		port := strings.TrimPrefix(s, ":")
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("%q is not a port or host:port", s)
		}
		return "127.0.0.1:" + port, nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return "", fmt.Errorf("%q is not a port or host:port", s)
	}
	return ap.String(), nil
}

// serviceCycle returns one dependency cycle as "node/svc" refs, or nil.
func (t *Topology) serviceCycle() []string {
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var cycle []string
	var visit func(string) bool
	visit = func(ref string) bool {
		color[ref] = grey
		stack = append(stack, ref)
		node, svc := SplitServiceRef("", ref)
		s := t.Nodes[node].Services[svc]
		for _, dep := range s.After {
			dn, ds := SplitServiceRef(node, dep)
			if other, ok := t.Nodes[dn]; !ok || other.Services[ds] == nil {
				continue
			}
			d := dn + "/" + ds
			if d == ref {
				continue // reported by services as waiting for itself
			}
			switch color[d] {
			case grey:
				for i, r := range stack {
					if r == d {
						cycle = append(append([]string{}, stack[i:]...), d)
					}
				}
				return true
			case white:
				if visit(d) {
					return true
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[ref] = black
		return false
	}
	for _, name := range t.NodeNames() {
		for _, sn := range sortedKeys(t.Nodes[name].Services) {
			if t.Nodes[name].Services[sn] == nil {
				continue
			}
			if ref := name + "/" + sn; color[ref] == white && visit(ref) {
				return cycle
			}
		}
	}
	return nil
}

// duplicateAddresses reports one IP configured twice in the lab. Inside a
// VPC addresses are the tenant's own: two VPCs may use the same ones.
func (c *checker) duplicateAddresses() {
	type scoped struct {
		vpc  string
		addr netip.Addr
	}
	seen := map[scoped]string{}
	for _, name := range c.t.NodeNames() {
		n := c.t.Nodes[name]
		k, _ := KindOf(n.Kind)
		for _, ifn := range sortedKeys(n.Interfaces) {
			if n.Interfaces[ifn] == nil {
				continue
			}
			scope := ""
			if k.Attached && bridgeOf(n.Interfaces[ifn]) == BrInt {
				scope = n.VPC
			}
			for i, a := range n.Interfaces[ifn].Addresses {
				pr, err := netip.ParsePrefix(a)
				if err != nil {
					continue
				}
				at := name + ":" + ifn
				key := scoped{scope, pr.Addr()}
				if prev, dup := seen[key]; dup {
					c.add(path{"nodes", name, "interfaces", ifn, "addresses", i}, "%s is also on %s", pr.Addr(), prev)
					continue
				}
				seen[key] = at
			}
		}
	}
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
