// Package plan turns a topology and what is observed in the kernel into an
// ordered list of steps. It is pure data and touches nothing: `labctl plan`
// prints a plan against an empty world, `labctl up` applies a plan against
// the observed one, which makes re-up converge (and a no-op when nothing
// changed).
package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"labctl/lab/component"
	"labctl/lab/nat"
	"labctl/lab/topology"
)

// Phases, in the order they are applied. Removal comes first so that a
// re-used name is free before it is created again.
const (
	PhaseStop       = "stop services"
	PhasePrune      = "prune"
	PhaseNamespaces = "namespaces"
	PhaseLinks      = "links"
	PhaseOffloads   = "offloads"
	PhaseOVS        = "open vswitch"
	PhaseBridges    = "bridges"
	PhaseSysctls    = "sysctls"
	PhaseAddresses  = "addresses"
	PhaseRoutes     = "routes"
	PhaseNAT        = "nat"
	PhaseFilters    = "packet filters"
	PhaseFiles      = "files"
	PhaseServices   = "services"
)

// Phases lists every phase in order.
var Phases = []string{PhaseStop, PhasePrune, PhaseNamespaces, PhaseLinks, PhaseOffloads, PhaseOVS,
	PhaseBridges, PhaseSysctls, PhaseAddresses, PhaseRoutes, PhaseNAT, PhaseFilters, PhaseFiles, PhaseServices}

// Ops.
const (
	OpNetnsAdd     = "netns.add"
	OpNetnsDel     = "netns.del"
	OpVethAdd      = "veth.add"
	OpLinkDel      = "link.del"
	OpLinkSet      = "link.set"
	OpBridgeAdd    = "bridge.add"
	OpPortAttach   = "port.attach"
	OpSysctlSet    = "sysctl.set"
	OpAddrAdd      = "addr.add"
	OpAddrDel      = "addr.del"
	OpRouteAdd     = "route.add"
	OpRouteDel     = "route.del"
	OpFileWrite    = "file.write"
	OpFileDel      = "file.del"
	OpServiceStart = "service.start"
	OpServiceStop  = "service.stop"
	OpTxOff        = "link.txoff"
	OpOVSConfig    = "ovs.config"
	OpNATSync      = "nat.sync"
)

// IPv6DefaultMetric is the metric the kernel gives an IPv6 route without one.
const IPv6DefaultMetric = 1024

// RouteProto marks the routes labctl installs (shown as "proto 76" by ip
// route), so converge removes only its own.
const RouteProto = 76

// Step is one change to the kernel or to a node's processes and files.
type Step struct {
	Phase string `json:"phase"`
	Op    string `json:"op"`
	Node  string `json:"node,omitempty"`
	NS    string `json:"netns,omitempty"`
	Iface string `json:"iface,omitempty"`

	PeerNode  string `json:"peer_node,omitempty"`
	PeerNS    string `json:"peer_netns,omitempty"`
	PeerIface string `json:"peer_iface,omitempty"`
	Mark      string `json:"mark,omitempty"`      // altname of Iface
	PeerMark  string `json:"peer_mark,omitempty"` // altname of PeerIface
	MTU       int    `json:"mtu,omitempty"`
	PeerMTU   int    `json:"peer_mtu,omitempty"`
	// Sysctls of netns.add, written before any link exists.
	Sysctls map[string]string `json:"sysctls,omitempty"`

	Addr   string `json:"addr,omitempty"`
	Route  *Route `json:"route,omitempty"`
	Key    string `json:"key,omitempty"`
	Value  string `json:"value,omitempty"`
	Path   string `json:"path,omitempty"`
	Data   string `json:"data,omitempty"`
	Svc    string `json:"service,omitempty"`
	Reason string `json:"reason,omitempty"`

	// OVS is an ovs-host's whole switch configuration (ovs.config), Value
	// its hash and Ports the ports whose device was recreated.
	OVS   *topology.OVS `json:"ovs,omitempty"`
	Ports []string      `json:"ports,omitempty"`
	// NAT is a node's complete set of the lab's NAT rules (nat.sync).
	NAT []nat.Rule `json:"nat,omitempty"`

	// Part is the lab part (lab/component) whose step this is; its driver
	// applies it. Payload is the part's own plain data for the step, and
	// Text how `labctl plan` shows it.
	Part    string `json:"part,omitempty"`
	Payload any    `json:"payload,omitempty"`
	Text    string `json:"text,omitempty"`
}

// Route is a route as planned and as observed.
type Route struct {
	Dst    string `json:"dst"`
	Via    string `json:"via,omitempty"`
	Dev    string `json:"dev,omitempty"`
	Metric int    `json:"metric,omitempty"`
}

func (r Route) String() string {
	s := r.Dst
	if s == "0.0.0.0/0" || s == "::/0" {
		s = "default"
		if r.Dst == "::/0" {
			s = "default6"
		}
	}
	if r.Via != "" {
		s += " via " + r.Via
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	if r.Metric != 0 {
		s += " metric " + strconv.Itoa(r.Metric)
	}
	return s
}

// String renders a step for people: "+" creates, "-" removes, "~" changes.
func (s Step) String() string {
	at := s.Node + ":" + s.Iface
	var out string
	switch s.Op {
	case OpNetnsAdd:
		out = "+ netns " + s.NS
	case OpNetnsDel:
		out = "- netns " + s.NS
	case OpVethAdd:
		out = fmt.Sprintf("+ veth %s <-> %s:%s mtu %d", at, s.PeerNode, s.PeerIface, s.MTU)
		if s.PeerMTU != 0 && s.PeerMTU != s.MTU {
			out += fmt.Sprintf("/%d", s.PeerMTU)
		}
	case OpLinkDel:
		out = "- link " + at
	case OpLinkSet:
		out = fmt.Sprintf("~ link %s mtu %d up", at, s.MTU)
	case OpBridgeAdd:
		out = "+ bridge " + at
	case OpPortAttach:
		out = fmt.Sprintf("+ port %s master %s", at, topology.BridgeName)
	case OpSysctlSet:
		out = fmt.Sprintf("~ sysctl %s %s=%s", s.Node, s.Key, s.Value)
	case OpAddrAdd:
		out = "+ addr " + at + " " + s.Addr
	case OpAddrDel:
		out = "- addr " + at + " " + s.Addr
	case OpRouteAdd:
		out = "+ route " + s.Node + " " + s.Route.String()
	case OpRouteDel:
		out = "- route " + s.Node + " " + s.Route.String()
	case OpFileWrite:
		out = "+ file " + s.Path
	case OpFileDel:
		out = "- file " + s.Path
	case OpServiceStart:
		out = "+ service " + s.Node + "/" + s.Svc
	case OpServiceStop:
		out = "- service " + s.Node + "/" + s.Svc
	case OpTxOff:
		out = "~ offload " + at + " tx off"
	case OpOVSConfig:
		ports, tunnels := 0, 0
		for _, b := range s.OVS.Bridges {
			for _, p := range b.Ports {
				if p.Tunnel != nil {
					tunnels++
				} else {
					ports++
				}
			}
		}
		out = fmt.Sprintf("~ ovs %s: %d bridges, %d ports, %d vxlan tunnels", s.Node, len(s.OVS.Bridges), ports, tunnels)
	case OpNATSync:
		out = fmt.Sprintf("~ nat %s: %d rules", s.Node, len(s.NAT))
	default:
		out = s.Op
		if s.Text != "" {
			out = s.Text
		}
	}
	if s.Reason != "" {
		out += " (" + s.Reason + ")"
	}
	return out
}

// Plan is the ordered list of steps for one lab.
type Plan struct {
	Lab   string `json:"lab"`
	File  string `json:"file,omitempty"`
	Nodes int    `json:"nodes"`
	Links int    `json:"links"`
	Steps []Step `json:"steps"`
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool { return len(p.Steps) == 0 }

// Phase returns the steps of one phase, in order.
func (p *Plan) Phase(name string) []Step {
	var out []Step
	for _, s := range p.Steps {
		if s.Phase == name {
			out = append(out, s)
		}
	}
	return out
}

// String renders the plan grouped by phase.
func (p *Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "lab %s: %d nodes, %d links, %d steps\n", p.Lab, p.Nodes, p.Links, len(p.Steps))
	for _, ph := range Phases {
		steps := p.Phase(ph)
		if len(steps) == 0 {
			continue
		}
		fmt.Fprintf(&b, "%s (%d)\n", ph, len(steps))
		for _, s := range steps {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	return b.String()
}

// Mark is the altname labctl puts on an interface: the lab and the far end
// of its link, so the pair can be recognised after a crash.
func Mark(lab, peerNode, peerIface string) string {
	return "labctl." + lab + "." + peerNode + "." + peerIface
}

// BridgeMark is the altname of a switch node's bridge.
func BridgeMark(lab string) string { return "labctl." + lab + ".bridge" }

// NSMark is the altname put on lo of every namespace of the lab.
func NSMark(lab string) string { return "labctl." + lab }

// LabOfNSMark returns the lab a namespace's lo mark names.
func LabOfNSMark(m string) (string, bool) {
	lab, ok := strings.CutPrefix(m, "labctl.")
	return lab, ok && lab != "" && !strings.Contains(lab, ".")
}

// MarkPrefix is what every altname of the lab starts with.
func MarkPrefix(lab string) string { return "labctl." + lab + "." }

// ServiceHash identifies a service's definition, so a changed service is
// restarted on re-up and an unchanged one is left running.
func ServiceHash(s *topology.Service) string {
	b, _ := json.Marshal(s)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// EarlySysctls are set when a node's namespace is created, before any
// link exists, so that new interfaces inherit them. Labs route statically,
// so no router solicitations (and fewer packets in every capture); a
// switch is pure layer 2, so IPv6 is off on its ports and bridge (no
// link-local addresses, no MLD reports from thousands of ports).
func EarlySysctls(n *topology.Node) map[string]string {
	out := map[string]string{
		"net.ipv6.conf.all.accept_dad":               "0",
		"net.ipv6.conf.default.accept_dad":           "0",
		"net.ipv6.conf.default.router_solicitations": "0",
	}
	if k, _ := topology.KindOf(n.Kind); k.Bridge || k.OVS {
		// An ovs-host's bridges switch frames for its VMs; only its
		// underlay speaks IP, and it is IPv4.
		out["net.ipv6.conf.all.disable_ipv6"] = "1"
		out["net.ipv6.conf.default.disable_ipv6"] = "1"
	}
	return out
}

// NATRules is every NAT rule a node should have: each 1:1 translation, then
// the VPC's source NAT, then the lab parts' (carrier-grade NAT).
func NATRules(t *topology.Topology, n *topology.Node) []nat.Rule {
	var out []nat.Rule
	var inside netip.Prefix
	if v := t.VPCs[n.VPC]; v != nil {
		inside = netip.MustParsePrefix(v.CIDR)
	}
	for _, x := range n.NAT {
		out = append(out, nat.OneToOne(netip.MustParseAddr(x.Public), netip.MustParseAddr(x.Private), inside)...)
	}
	if n.SNAT != "" && t.VPCs[n.VPC] != nil {
		out = append(out, nat.SourceNAT(netip.MustParsePrefix(t.VPCs[n.VPC].CIDR), netip.MustParseAddr(n.SNAT))...)
	}
	for _, p := range component.Implementing[NATPart]() { // carrier-grade NAT
		out = append(out, p.NATRules(t, n)...)
	}
	// As nat.List reports them, so that a synced router compares equal;
	// within a chain the order above is kept (1:1 SNATs before the VPC's).
	return nat.TableOrder(out)
}

// NodeSysctls is every sysctl a node should have, its kind's included.
func NodeSysctls(n *topology.Node) map[string]string {
	out := EarlySysctls(n)
	if k, _ := topology.KindOf(n.Kind); k.Forwarding {
		out["net.ipv4.ip_forward"] = "1"
		out["net.ipv6.conf.all.forwarding"] = "1"
	}
	for k, v := range n.Sysctls {
		out[k] = string(v)
	}
	return out
}

// FileHeader starts every file labctl writes under /etc/netns; it is how
// those files are recognised as the lab's own.
const FileHeader = "# written by labctl: removed by labctl down\n"

// NodeFiles is the content of /etc/netns/<ns>/{resolv.conf,hosts}.
func NodeFiles(n *topology.Node) map[string]string {
	out := map[string]string{}
	if n.DNS != nil {
		var b strings.Builder
		b.WriteString(FileHeader)
		for _, s := range n.DNS.Nameservers {
			fmt.Fprintf(&b, "nameserver %s\n", s)
		}
		if len(n.DNS.Search) > 0 {
			fmt.Fprintf(&b, "search %s\n", strings.Join(n.DNS.Search, " "))
		}
		out["resolv.conf"] = b.String()
	}
	if len(n.Hosts) > 0 {
		var b strings.Builder
		b.WriteString(FileHeader + "127.0.0.1 localhost\n::1 localhost\n")
		addrs := make([]string, 0, len(n.Hosts))
		for a := range n.Hosts {
			addrs = append(addrs, a)
		}
		sort.Strings(addrs)
		for _, a := range addrs {
			fmt.Fprintf(&b, "%s %s\n", a, strings.Join(n.Hosts[a], " "))
		}
		out["hosts"] = b.String()
	}
	return out
}

// normAddr canonicalises a CIDR ("10.0.0.1/24", "fd00::1/64").
func normAddr(s string) string {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.String()
	}
	return s
}
