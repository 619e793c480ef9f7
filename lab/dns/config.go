// Package dns is the lab's DNS world, built on github.com/miekg/dns: the
// authoritative servers of the root, the TLDs and the shop (with glue and
// delegations), a GSLB that answers with the addresses of the region
// nearest to whoever asked and health-checks them over TCP, caching
// recursive resolvers that resolve iteratively from the root hints, and an
// HTTPDNS endpoint.
//
// Every server is one `labctl serve dns --config JSON` process inside its
// node's namespace (see Serve); the topology package writes its Config.
//
// Two lab conventions ride on real DNS packets:
//   - a query carrying the EDNS0 option TraceOption asks a resolver to
//     return, in the same option of its answer, the steps it took (Trace as
//     JSON): which server it asked, what came back, and what the cache gave;
//   - CHAOS-class TXT queries, like BIND's version.bind, read a server's
//     counters (StatsName) or empty a resolver's cache (FlushName).
package dns

import (
	"time"

	mdns "github.com/miekg/dns"
)

// Config is what one node serves. Zones and Resolver never both appear:
// a node is either authoritative or recursive, as operators keep them.
type Config struct {
	Node string `json:"node"`
	// Listen is the DNS address, ":53" unless a test says otherwise.
	Listen   string          `json:"listen,omitempty"`
	Zones    []*Zone         `json:"zones,omitempty"`
	Resolver *ResolverConfig `json:"resolver,omitempty"`
	HTTPDNS  *HTTPDNSConfig  `json:"httpdns,omitempty"`
}

// Zone is one zone this node is authoritative for. Records are complete
// resource records in presentation format ("www.shop.example. 60 IN CNAME
// www.gslb.shop.example."), the SOA and apex NS records, delegations to
// child zones and their glue included: the topology package generates them.
type Zone struct {
	Origin  string   `json:"origin"` // fully qualified, "." for the root
	Records []string `json:"records"`
	GSLB    *GSLB    `json:"gslb,omitempty"`
}

// GSLB answers A queries for Names with the healthy addresses of the first
// region, in the order the asker's rule prefers, that has any.
type GSLB struct {
	Names   []string        `json:"names"` // fully qualified
	TTL     Duration        `json:"ttl"`
	Regions []*Region       `json:"regions"`
	Clients []*ClientRule   `json:"clients,omitempty"`
	Default []string        `json:"default"` // region order for everyone else
	Check   HealthCheckSpec `json:"check"`
}

// Region is one region's public load-balancer addresses.
type Region struct {
	Name      string   `json:"name"`
	Addresses []string `json:"addresses"`
}

// ClientRule maps the askers in From (the resolver's address, or the
// EDNS0 client subnet when the query carries one) to a region order. The
// longest matching prefix wins.
type ClientRule struct {
	From   []string `json:"from"`
	Prefer []string `json:"prefer"`
}

// HealthCheckSpec is a TCP connect check of every region address.
type HealthCheckSpec struct {
	Port     int      `json:"port"`
	Interval Duration `json:"interval"`
	Timeout  Duration `json:"timeout"`
	Fall     int      `json:"fall"` // consecutive failures that mark an address down
	Rise     int      `json:"rise"` // consecutive successes that mark it up again
}

// ResolverConfig is a caching recursive resolver.
type ResolverConfig struct {
	// Hints are the root servers (RFC 1034 "SBELT").
	Hints []Hint `json:"hints"`
	// Allow lists the client prefixes served; others get REFUSED. Empty
	// allows everyone.
	Allow []string `json:"allow,omitempty"`
	// MaxTTL caps what is cached, NegativeTTL caps negative answers
	// (which RFC 2308 keeps for the lesser of the SOA's TTL and minimum).
	MaxTTL      Duration `json:"max_ttl,omitempty"`
	NegativeTTL Duration `json:"negative_ttl,omitempty"`
	// ClientSubnet sends the client's address upstream as an EDNS0 client
	// subnet option (RFC 7871). HTTPDNS uses it; carrier resolvers do not.
	ClientSubnet bool `json:"client_subnet,omitempty"`
}

// Hint is one root server.
type Hint struct {
	Name    string `json:"name"` // fully qualified
	Address string `json:"address"`
}

// HTTPDNSConfig serves GET /resolve?name=N[&type=A] over HTTP, resolving
// with Resolver on behalf of the HTTP client's own address.
type HTTPDNSConfig struct {
	Listen   string         `json:"listen"`
	Resolver ResolverConfig `json:"resolver"`
}

// Defaults for what a Config leaves out. The topology package writes them
// into every Config; the servers fall back on them for a zero value.
const (
	DefaultCheckInterval = time.Second
	DefaultCheckTimeout  = 500 * time.Millisecond
	DefaultCheckFall     = 2
	DefaultCheckRise     = 2
	// StartupGrace: an address that has not yet passed a check is not
	// marked down for this long after the GSLB starts (its load balancer
	// may start later in the same lab), like a startup probe.
	StartupGrace       = 10 * time.Second
	DefaultMaxTTL      = time.Hour       // a resolver's cap on cached TTLs
	DefaultNegativeTTL = 5 * time.Minute // a resolver's cap on negative caching
)

// Duration is a time.Duration that JSON writes as "5s".
type Duration time.Duration

// MarshalText writes Go duration syntax.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads Go duration syntax.
func (d *Duration) UnmarshalText(b []byte) error {
	x, err := time.ParseDuration(string(b))
	*d = Duration(x)
	return err
}

// Lab conventions on the wire.
const (
	// TraceOption is the EDNS0 local option code (RFC 6891 keeps
	// 65001-65534 for local use) of the resolution trace. A query sends it
	// empty; the resolver answers with the Trace as JSON.
	TraceOption = 65430
	// StatsName, asked as CHAOS TXT, returns the server's counters, one
	// "key=value" string each.
	StatsName = "stats.labctl."
	// FlushName, asked as CHAOS TXT, empties a resolver's cache and
	// answers "flushed=N".
	FlushName = "flush.labctl."
	// Port is where every lab DNS server listens.
	Port = 53
)

// Trace is what a resolver did for one query.
type Trace struct {
	Server  string  `json:"server"`  // the resolver's node
	Cached  bool    `json:"cached"`  // answered wholly from the cache
	Elapsed float64 `json:"elapsed"` // milliseconds
	Steps   []Step  `json:"steps"`
}

// Step is one upstream exchange or one cache hit.
type Step struct {
	// Cache is set for a cache hit: the answer came from memory and
	// Server is empty.
	Cache    bool     `json:"cache,omitempty"`
	Server   string   `json:"server,omitempty"` // address asked
	Zone     string   `json:"zone,omitempty"`   // the zone the server was asked as authoritative for
	Name     string   `json:"name"`
	Type     string   `json:"type"`
	Rcode    string   `json:"rcode"`
	Kind     string   `json:"kind"`              // "answer", "cname", "referral", "nxdomain", "nodata", "error"
	Records  []string `json:"records,omitempty"` // answer or referral records, presentation format
	TTL      uint32   `json:"ttl,omitempty"`     // remaining TTL of a cache hit
	Error    string   `json:"error,omitempty"`
	Duration float64  `json:"duration,omitempty"` // milliseconds
	TCP      bool     `json:"tcp,omitempty"`      // retried over TCP after a truncated answer
}

// Step kinds.
const (
	KindAnswer   = "answer"
	KindCNAME    = "cname"
	KindReferral = "referral"
	KindNXDomain = "nxdomain"
	KindNoData   = "nodata"
	KindError    = "error"
)

// Fqdn is mdns.Fqdn lowercased: the form every lookup uses.
func Fqdn(s string) string { return mdns.CanonicalName(s) }
