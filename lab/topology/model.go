// Package topology is labctl's topology language: the model, its strict
// decoder (every error carries file:line:col and the field), validation that
// collects every problem before anything touches the kernel, and generators
// for the Mininet shapes used by tests and benchmarks.
package topology

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
)

// Topology is one lab as written in a topology file.
type Topology struct {
	Name  string           `yaml:"name" json:"name"`
	Nodes map[string]*Node `yaml:"nodes" json:"nodes"`
	Links []*Link          `yaml:"links" json:"links,omitempty"`
	// VPCs are the cloud region's virtual networks (see region.go).
	VPCs map[string]*VPC `yaml:"vpcs,omitempty" json:"vpcs,omitempty"`
	// Zones are the lab's DNS zones by name, "." for the root (see dns.go).
	Zones map[string]*Zone `yaml:"zones,omitempty" json:"zones,omitempty"`
	// Parts holds the top-level blocks of registered lab parts (parts.go).
	Parts Blocks `yaml:"-" json:"parts,omitempty"`

	// File is the path the topology was read from ("" when generated).
	File     string `yaml:"-" json:"-"`
	src      *source
	expanded bool // the cloud declarations are resolved (region.go)
}

// Node is one network namespace of the lab.
type Node struct {
	Kind       string                `yaml:"kind" json:"kind"`
	Interfaces map[string]*Interface `yaml:"interfaces,omitempty" json:"interfaces,omitempty"`
	Routes     []*Route              `yaml:"routes,omitempty" json:"routes,omitempty"`
	Sysctls    map[string]Scalar     `yaml:"sysctls,omitempty" json:"sysctls,omitempty"`
	Services   map[string]*Service   `yaml:"services,omitempty" json:"services,omitempty"`
	DNS        *DNS                  `yaml:"dns,omitempty" json:"dns,omitempty"`
	Hosts      map[string][]string   `yaml:"hosts,omitempty" json:"hosts,omitempty"`

	// Cloud region (kinds ovs-host, vm, vrouter; see region.go).
	Host     string `yaml:"host,omitempty" json:"host,omitempty"`         // vm, vrouter: the ovs-host it runs on
	VPC      string `yaml:"vpc,omitempty" json:"vpc,omitempty"`           // vm, vrouter: its VPC
	Subnet   string `yaml:"subnet,omitempty" json:"subnet,omitempty"`     // vm: the VPC subnet (an AZ name) of its NIC
	NAT      []*NAT `yaml:"nat,omitempty" json:"nat,omitempty"`           // vrouter: 1:1 public IPs
	SNAT     string `yaml:"snat,omitempty" json:"snat,omitempty"`         // vrouter: source address of the VPC's other outbound traffic
	Datapath string `yaml:"datapath,omitempty" json:"datapath,omitempty"` // ovs-host: auto (default), netdev or system

	// The DNS world (see dns.go); a node serving zones is named in their ns.
	Resolver *Resolver `yaml:"resolver,omitempty" json:"resolver,omitempty"` // a caching recursive resolver
	HTTPDNS  *HTTPDNS  `yaml:"httpdns,omitempty" json:"httpdns,omitempty"`   // an HTTPDNS endpoint

	// OVS is an ovs-host's switch configuration, resolved from the VPCs
	// and the nodes attached to it.
	OVS *OVS `yaml:"-" json:"ovs,omitempty"`

	// Parts holds the node's blocks of registered lab parts (parts.go).
	Parts Blocks `yaml:"-" json:"parts,omitempty"`

	Name string `yaml:"-" json:"-"`
}

// Interface holds the layer-3 settings of one end of a link.
type Interface struct {
	Addresses []string `yaml:"addresses,omitempty" json:"addresses,omitempty"`
	MTU       int      `yaml:"mtu,omitempty" json:"mtu,omitempty"`
	// Bridge is the Open vSwitch bridge the interface is a port of: on an
	// ovs-host one of its NICs (br-phy by default); on a vm or vrouter an
	// interface plugged into its host (br-int, in its VPC, by default).
	Bridge string `yaml:"bridge,omitempty" json:"bridge,omitempty"`
}

// Route is a static route; To is a CIDR or "default" (IPv4) / "default6".
type Route struct {
	To     string `yaml:"to" json:"to"`
	Via    string `yaml:"via,omitempty" json:"via,omitempty"`
	Dev    string `yaml:"dev,omitempty" json:"dev,omitempty"`
	Metric int    `yaml:"metric,omitempty" json:"metric,omitempty"`
}

// Link is a point-to-point cable (a veth pair) between two node:iface ends.
type Link struct {
	Endpoints []string `yaml:"endpoints" json:"endpoints"`
	MTU       int      `yaml:"mtu,omitempty" json:"mtu,omitempty"`
}

// Service is a process supervised inside the node's namespace.
type Service struct {
	// Command is the argv; an argv[0] of "labctl" runs this labctl binary
	// (its hidden "serve" verbs are labctl's own in-namespace daemons).
	Command []string          `yaml:"command" json:"command"`
	After   []string          `yaml:"after,omitempty" json:"after,omitempty"`
	Env     map[string]string `yaml:"env,omitempty" json:"env,omitempty"`
	Ready   *Ready            `yaml:"ready,omitempty" json:"ready,omitempty"`
	// Restart is what the lab's watcher does when the process ends:
	// on-failure (the default; any end but exit status 0), always, or
	// never. At most MaxRestarts restarts within RestartWindow, then the
	// service is marked failed. Empty fields keep the defaults (and the
	// hash of services written before these fields existed).
	Restart       string   `yaml:"restart,omitempty" json:"restart,omitempty"`
	MaxRestarts   *int     `yaml:"max-restarts,omitempty" json:"max_restarts,omitempty"`
	RestartWindow Duration `yaml:"restart-window,omitempty" json:"restart_window,omitempty"`
	// Early services are part of the node's network (an ovs-host's Open
	// vSwitch daemons): they start before addresses are set.
	Early bool `yaml:"-" json:"early,omitempty"`
	// Config is the daemon's typed configuration as JSON, set by the part
	// whose expansion made the service (never written in a file): the
	// supervisor writes it to a file in the lab's state directory and
	// passes `--config FILE` after Command. It is part of the service's
	// hash, so a changed configuration restarts the daemon.
	Config json.RawMessage `yaml:"-" json:"config,omitempty"`
}

// ConfigFlag is the flag that passes a service's Config file.
const ConfigFlag = "--config"

// Ready says when a service counts as started. At most one of TCP, Exec
// and File is set; with none, a service is ready once its process runs.
type Ready struct {
	TCP     string   `yaml:"tcp,omitempty" json:"tcp,omitempty"` // "PORT" or "HOST:PORT", dialled inside the namespace
	Exec    []string `yaml:"exec,omitempty" json:"exec,omitempty"`
	File    string   `yaml:"file,omitempty" json:"file,omitempty"`
	Timeout Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
}

// Restart policies of a service.
const (
	RestartOnFailure = "on-failure"
	RestartAlways    = "always"
	RestartNever     = "never"
)

// The default bound on restarts: more than DefaultMaxRestarts within
// DefaultRestartWindow and the watcher gives up on the service.
const (
	DefaultMaxRestarts   = 5
	DefaultRestartWindow = 60 * time.Second
)

// RestartPolicy returns the service's policy with its defaults filled in.
func (s *Service) RestartPolicy() (policy string, max int, window time.Duration) {
	policy, max, window = s.Restart, DefaultMaxRestarts, DefaultRestartWindow
	if policy == "" {
		policy = RestartOnFailure
	}
	if s.MaxRestarts != nil {
		max = *s.MaxRestarts
	}
	if s.RestartWindow > 0 {
		window = time.Duration(s.RestartWindow)
	}
	return policy, max, window
}

// DNS is written to /etc/netns/<namespace>/resolv.conf.
type DNS struct {
	Nameservers []string `yaml:"nameservers" json:"nameservers"`
	Search      []string `yaml:"search,omitempty" json:"search,omitempty"`
}

// Kind describes what a node kind is built from.
type Kind struct {
	Name       string
	Forwarding bool // IPv4/IPv6 forwarding switched on
	Bridge     bool // its interfaces are ports of one Linux bridge; no addresses
	OVS        bool // runs its own Open vSwitch; its NICs are OVS ports
	Attached   bool // lives on an ovs-host: its interfaces plug into the host's OVS
	Doc        string
	Part       string // the lab part that declares it ("" for the base kinds)
}

// kinds is the one place node kinds are registered.
var kinds = map[string]Kind{
	"host":   {Name: "host", Doc: "an end host: interfaces, addresses, routes, services"},
	"router": {Name: "router", Forwarding: true, Doc: "a host with IPv4 and IPv6 forwarding on"},
	"switch": {Name: "switch", Bridge: true, Doc: "a Linux bridge segment in its own namespace; its interfaces are bridge ports"},
	"ovs-host": {Name: "ovs-host", OVS: true,
		Doc: "a compute server running its own Open vSwitch; its NICs are ports of OVS bridges (br-phy by default), vms and vrouters plug into br-int"},
	"vm": {Name: "vm", Attached: true,
		Doc: "a virtual machine of a VPC on an ovs-host; its unlinked interfaces are ports of the host's br-int in the VPC's VXLAN segment"},
	"vrouter": {Name: "vrouter", Attached: true, Forwarding: true,
		Doc: "a VPC's virtual router on an ovs-host (like Neutron's qrouter): a leg per subnet holding its gateway address; with nat: the gateway of public IPs"},
}

// KindOf returns the registered kind of a node: a base kind or one a
// registered lab part declares.
func KindOf(name string) (Kind, bool) {
	if k, ok := kinds[name]; ok {
		return k, true
	}
	k, ok := partKinds()[name]
	return k, ok
}

// KindNames lists the registered node kinds, sorted.
func KindNames() []string {
	out := make([]string, 0, len(kinds))
	for k := range kinds {
		out = append(out, k)
	}
	for k := range partKinds() {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// BridgeName is the bridge device inside every switch node.
const BridgeName = "br0"

// Endpoint is one parsed "node:iface" link end.
type Endpoint struct{ Node, Iface string }

func (e Endpoint) String() string { return e.Node + ":" + e.Iface }

// ParseEndpoint splits "node:iface".
func ParseEndpoint(s string) (Endpoint, error) {
	n, i, ok := strings.Cut(s, ":")
	if !ok || n == "" || i == "" {
		return Endpoint{}, fmt.Errorf("endpoint %q is not node:iface", s)
	}
	return Endpoint{n, i}, nil
}

// Ends returns the two parsed endpoints of a validated link.
func (l *Link) Ends() (Endpoint, Endpoint) {
	a, _ := ParseEndpoint(l.Endpoints[0])
	b, _ := ParseEndpoint(l.Endpoints[1])
	return a, b
}

// NodeNames returns the node names sorted, the order every plan uses.
func (t *Topology) NodeNames() []string {
	out := make([]string, 0, len(t.Nodes))
	for n := range t.Nodes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Namespace is the name of a node's namespace under /run/netns.
func Namespace(lab, node string) string { return lab + "-" + node }

// Scalar is a YAML scalar kept as text (sysctl values may be written as
// numbers or strings).
type Scalar string

// UnmarshalYAML accepts any scalar. It takes the node rather than bytes so
// that its error carries the position in the file.
func (s *Scalar) UnmarshalYAML(n ast.Node) error {
	v, err := scalarText(n)
	if err != nil {
		return err
	}
	*s = Scalar(v)
	return nil
}

// scalarText is the text of a scalar node: unquoted for strings, as written
// for numbers and booleans, "" for null.
func scalarText(n ast.Node) (string, error) {
	switch v := n.(type) {
	case *ast.TagNode:
		return scalarText(v.Value)
	case *ast.AnchorNode:
		return scalarText(v.Value)
	case *ast.NullNode:
		return "", nil
	case *ast.StringNode:
		return v.Value, nil
	case *ast.LiteralNode, *ast.AliasNode:
	case ast.ScalarNode:
		return v.GetToken().Value, nil
	}
	return "", &yaml.SyntaxError{Message: "must be a single value (a string, number or boolean)", Token: n.GetToken()}
}

// Duration is a time.Duration written as "5s" or "250ms".
type Duration time.Duration

// UnmarshalYAML parses Go duration syntax; see Scalar for why a node.
func (d *Duration) UnmarshalYAML(n ast.Node) error {
	if n.Type() == ast.NullType {
		return nil // "timeout:" with no value leaves the default
	}
	v, err := scalarText(n)
	if err != nil {
		return err
	}
	x, err := time.ParseDuration(v)
	if err != nil {
		return &yaml.SyntaxError{Message: fmt.Sprintf("%q is not a duration like 10s or 500ms", v), Token: n.GetToken()}
	}
	*d = Duration(x)
	return nil
}

// MarshalYAML writes the Go duration syntax back.
func (d Duration) MarshalYAML() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// MarshalText lets JSON show "10s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads "10s" back (state files are JSON).
func (d *Duration) UnmarshalText(b []byte) error {
	x, err := time.ParseDuration(string(b))
	*d = Duration(x)
	return err
}
