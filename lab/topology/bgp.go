package topology

// The internet (stages 2 and 7 of the Double-11 story): routers that speak
// BGP, and carrier-grade NAT at a carrier's edge.
//
// A router's bgp block declares its autonomous system, its neighbors and
// the prefixes it originates. Each speaker is a `labctl serve bgp` service
// in the router's namespace (GoBGP as a library) that installs its best
// paths in the kernel with proto bgp. expand resolves the block into that
// service; BGP.Own lists the AS's own prefixes for an `export: own` speaker.

import (
	"path/filepath"
)

// BGP is a router's BGP speaker.
type BGP struct {
	ASN uint32 `yaml:"asn" json:"asn"`
	// RouterID defaults to the router's lowest IPv4 address.
	RouterID string `yaml:"router-id,omitempty" json:"router_id,omitempty"`
	// Networks are the prefixes this router originates.
	Networks []string `yaml:"networks,omitempty" json:"networks,omitempty"`
	// Export says what eBGP neighbors are told: "all" (a transit AS, the
	// default) or "own" (only prefixes originated inside this AS: a
	// multihomed AS that never carries traffic between its upstreams).
	Export    string         `yaml:"export,omitempty" json:"export,omitempty"`
	Neighbors []*BGPNeighbor `yaml:"neighbors" json:"neighbors"`
	Timers    *BGPTimers     `yaml:"timers,omitempty" json:"timers,omitempty"`

	// Resolved by expand (not written in files):
	// Own is every prefix originated by a router of this AS (export: own).
	Own []string `yaml:"-" json:"own,omitempty"`
	// API is the speaker's gRPC socket (unix://…).
	API string `yaml:"-" json:"api,omitempty"`
}

// BGPNeighbor is one session. A neighbor with the router's own ASN is iBGP,
// any other eBGP.
type BGPNeighbor struct {
	Address string `yaml:"address" json:"address"`
	ASN     uint32 `yaml:"asn" json:"asn"`
	// NextHopSelf rewrites the next hop of routes sent to this neighbor to
	// the router's own address (a border router towards its iBGP peers).
	NextHopSelf bool `yaml:"next-hop-self,omitempty" json:"next_hop_self,omitempty"`
	// RouteReflectorClient makes this router reflect iBGP routes to the
	// neighbor (and from it to the other clients).
	RouteReflectorClient bool `yaml:"route-reflector-client,omitempty" json:"route_reflector_client,omitempty"`

	// Node is the lab node holding Address (resolved by expand).
	Node string `yaml:"-" json:"node,omitempty"`
}

// BGPTimers are a speaker's session timers, in whole seconds. Short
// defaults make a lab converge in seconds.
type BGPTimers struct {
	ConnectRetry Duration `yaml:"connect-retry,omitempty" json:"connect_retry,omitempty"`
	Hold         Duration `yaml:"hold,omitempty" json:"hold,omitempty"`
	Keepalive    Duration `yaml:"keepalive,omitempty" json:"keepalive,omitempty"`
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
	BGPService       = "bgp" // the speaker's service name on a router
	ExportAll        = "all"
	ExportOwn        = "own"
	CarrierSpace     = "100.64.0.0/10" // RFC 6598 shared address space
	DefaultHold      = 3               // seconds
	DefaultKeepalive = 1
	DefaultRetry     = 1
)

// BGPSocket is the unix socket of a router's speaker API.
func BGPSocket(lab, node string) string { return filepath.Join(RunDir, lab, "bgp", node+".sock") }
