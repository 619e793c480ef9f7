package topology

// The DNS world (stage 3 of the Double-11 story): zones served by
// authoritative nodes, a GSLB zone, caching recursive resolvers and an
// HTTPDNS endpoint.
//
// A topology declares zones at the top level, by name, each with the
// nodes serving it (ns: NS host name → node). expandDNS derives what a
// zone administrator would otherwise write by hand and could get wrong:
// the SOA, the apex NS records, the NS host addresses, and in every parent
// zone the delegation and its glue. Resolvers and HTTPDNS take their root
// hints from the root zone. Each serving node gets one service, `dns` =
// `labctl serve dns --config JSON` (a dns.Config).

import (
	"labctl/lab/dns"
)

// Zone is one DNS zone of the lab. Its name (the key under zones:) is "."
// for the root or a name under a reserved TLD (.test, .example, .invalid,
// .localhost), so that nothing real is ever shadowed.
type Zone struct {
	// NS maps each name server's host name (fully qualified or relative
	// to the zone) to the node serving the zone under that name, or to an
	// IPv4 address of that node.
	NS map[string]string `yaml:"ns" json:"ns"`
	// TTL is the TTL of records written without one (default 300s).
	TTL Duration `yaml:"ttl,omitempty" json:"ttl,omitempty"`
	// NegativeTTL is the SOA minimum: how long resolvers cache "no such
	// name" (default 30s).
	NegativeTTL Duration `yaml:"negative-ttl,omitempty" json:"negative_ttl,omitempty"`
	// Records are resource records in zone-file syntax (RFC 1035), with
	// the zone as $ORIGIN: "www 60 CNAME www.gslb". SOA and NS records are
	// generated; child zones declared under zones: are delegated
	// automatically.
	Records string `yaml:"records,omitempty" json:"records,omitempty"`
	// GSLB makes the zone's servers answer Names by resolver location.
	GSLB *GSLB `yaml:"gslb,omitempty" json:"gslb,omitempty"`

	Name string `yaml:"-" json:"-"` // fully qualified, lowercase
}

// GSLB is global server load balancing: A queries for Names are answered
// with the healthy public addresses of the region nearest to the asker.
type GSLB struct {
	// Names are the balanced names, relative to the zone or fully
	// qualified.
	Names []string `yaml:"names" json:"names"`
	// TTL of the answers (default 5s): short, so that a failover reaches
	// clients quickly.
	TTL Duration `yaml:"ttl,omitempty" json:"ttl,omitempty"`
	// Regions maps a region name to its load balancers' public addresses.
	Regions map[string][]string `yaml:"regions" json:"regions"`
	// Clients map asker prefixes (a carrier's resolvers and subscribers)
	// to the order in which regions are tried; the longest prefix wins.
	Clients []*GSLBClients `yaml:"clients,omitempty" json:"clients,omitempty"`
	// Default is the region order for everyone else (default: all
	// regions, by name).
	Default []string `yaml:"default,omitempty" json:"default,omitempty"`
	// Check is the TCP health check of every region address.
	Check *HealthCheck `yaml:"check" json:"check"`
}

// GSLBClients is one asker-prefixes → region-order rule.
type GSLBClients struct {
	From   []string `yaml:"from" json:"from"`
	Prefer []string `yaml:"prefer" json:"prefer"`
}

// HealthCheck is a TCP connect check.
type HealthCheck struct {
	Port     int      `yaml:"port" json:"port"`
	Interval Duration `yaml:"interval,omitempty" json:"interval,omitempty"` // default 1s
	Timeout  Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`   // default 500ms, below interval
	Fall     int      `yaml:"fall,omitempty" json:"fall,omitempty"`         // default 2
	Rise     int      `yaml:"rise,omitempty" json:"rise,omitempty"`         // default 2
}

// Resolver makes a node a caching recursive resolver, iterating from the
// root zone's servers.
type Resolver struct {
	// Allow lists the client prefixes served (default: everyone); others
	// are REFUSED, as an open resolver should not be.
	Allow       []string `yaml:"allow,omitempty" json:"allow,omitempty"`
	MaxTTL      Duration `yaml:"max-ttl,omitempty" json:"max_ttl,omitempty"`           // cap on cached TTLs (default 1h)
	NegativeTTL Duration `yaml:"negative-ttl,omitempty" json:"negative_ttl,omitempty"` // cap on negative caching (default 5m)
}

// HTTPDNS makes a node answer GET /resolve?name=N over HTTP, resolving
// for the HTTP client's own address (sent upstream as an EDNS0 client
// subnet), bypassing the client's resolver.
type HTTPDNS struct {
	Listen string `yaml:"listen,omitempty" json:"listen,omitempty"` // default ":80"
}

// DNS names and defaults.
const (
	DNSService           = "dns" // the service of every node serving DNS
	DefaultZoneTTL       = 300   // seconds
	DefaultNegativeTTL   = 30    // seconds
	DefaultGSLBTTL       = 5     // seconds
	DefaultCheckFall     = 2
	DefaultCheckRise     = 2
	DefaultResolverMax   = 3600 // seconds
	DefaultResolverNeg   = 300  // seconds
	DefaultHTTPDNSListen = ":80"
)

// ReservedTLDs are the top-level domains lab zones may live under (RFC
// 2606 and RFC 6761).
var ReservedTLDs = []string{"test", "example", "invalid", "localhost"}

var _ = dns.Config{}
