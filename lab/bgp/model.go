package bgp

// The model of the internet's blocks (stages 2 and 7 of
// docs/double11-story.md): a router's bgp block declares its autonomous
// system, its neighbors and the prefixes it originates; the cgnat block is
// carrier-grade NAT at a carrier's edge. Each speaker is a `labctl serve
// bgp` service in the router's namespace (GoBGP as a library, speaker.go)
// that installs its best paths in the kernel with proto bgp; expansion
// (part.go) resolves the block into that service, whose configuration is
// the resolved block.

import (
	"math"
	"net/netip"
	"path/filepath"

	"labctl/lab/topology"
)

// Config is a router's bgp block: its BGP speaker.
type Config struct {
	ASN uint32 `yaml:"asn" json:"asn"`
	// RouterID defaults to the router's lowest IPv4 address.
	RouterID string `yaml:"router-id,omitempty" json:"router_id,omitempty"`
	// Networks are the prefixes this router originates.
	Networks []string `yaml:"networks,omitempty" json:"networks,omitempty"`
	// Export says what eBGP neighbors are told: "all" (a transit AS, the
	// default) or "own" (only prefixes originated inside this AS: a
	// multihomed AS that never carries traffic between its upstreams).
	Export    string  `yaml:"export,omitempty" json:"export,omitempty"`
	Neighbors []*Peer `yaml:"neighbors" json:"neighbors"`
	Timers    *Timers `yaml:"timers,omitempty" json:"timers,omitempty"`

	// Resolved by expansion (not written in files):
	// Own is every prefix originated by a router of this AS (export: own).
	Own []string `yaml:"-" json:"own,omitempty"`
	// API is the speaker's gRPC socket (unix://…).
	API string `yaml:"-" json:"api,omitempty"`
}

// Peer is one session (a neighbor entry). A neighbor with the router's own ASN is iBGP,
// any other eBGP.
type Peer struct {
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

// Timers are a speaker's session timers, in whole seconds. Short
// defaults make a lab converge in seconds.
type Timers struct {
	ConnectRetry topology.Duration `yaml:"connect-retry,omitempty" json:"connect_retry,omitempty"`
	Hold         topology.Duration `yaml:"hold,omitempty" json:"hold,omitempty"`
	Keepalive    topology.Duration `yaml:"keepalive,omitempty" json:"keepalive,omitempty"`
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
	Service          = "bgp" // the speaker's service name on a router
	ExportAll        = "all"
	ExportOwn        = "own"
	CarrierSpace     = "100.64.0.0/10" // RFC 6598 shared address space
	DefaultHold      = 3               // seconds
	DefaultKeepalive = 1
	DefaultRetry     = 1
)

// Socket is the unix socket of a router's speaker API.
func Socket(lab, node string) string { return filepath.Join(topology.RunDir, lab, "bgp", node+".sock") }

// maxASN is the highest usable AS number: 4294967295 is reserved (RFC 7300).
const maxASN = math.MaxUint32 - 1

var carrierSpace = netip.MustParsePrefix(CarrierSpace)
