package topology

// The DNS world (stage 3 of docs/double11-story.md): zones served by
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
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
	mdns "github.com/miekg/dns"

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
	DefaultCheckFall     = dns.DefaultCheckFall
	DefaultCheckRise     = dns.DefaultCheckRise
	DefaultResolverMax   = int(dns.DefaultMaxTTL / time.Second)      // seconds
	DefaultResolverNeg   = int(dns.DefaultNegativeTTL / time.Second) // seconds
	DefaultHTTPDNSListen = ":80"
)

// ReservedTLDs are the top-level domains lab zones may live under (RFC
// 2606 and RFC 6761).
var ReservedTLDs = []string{"test", "example", "invalid", "localhost"}

// SOA timers of every generated zone, in seconds. Lab zones are never
// transferred: only the minimum (negative-ttl) matters, to resolvers.
const (
	soaSerial  = 1
	soaRefresh = 3600
	soaRetry   = 600
	soaExpire  = 86400
)

// Health-check defaults and limits.
const (
	defaultCheckInterval = Duration(dns.DefaultCheckInterval)
	defaultCheckTimeout  = Duration(dns.DefaultCheckTimeout)
	minCheckInterval     = Duration(100 * time.Millisecond)
)

// maxDomainName is the longest domain name, final dot aside (RFC 1035).
const maxDomainName = 253

var (
	labelRe     = regexp.MustCompile(`^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$`)
	reservedWhy = "lab names live under the reserved TLDs ." + strings.Join(ReservedTLDs, ", .") + " so that nothing real is shadowed"
)

// checkDomain checks a domain name written in the topology and returns it
// fully qualified, or a message saying what is wrong.
func checkDomain(s string) (string, string) {
	if s == "." {
		return ".", ""
	}
	low := strings.ToLower(s)
	bad := fmt.Sprintf("%q is not a domain name: dot-separated labels of letters, digits, - and _, at most 63 characters each and %d in all", s, maxDomainName)
	fq := mdns.Fqdn(low)
	if _, ok := mdns.IsDomainName(fq); !ok || s == "" || len(fq)-1 > maxDomainName {
		return "", bad
	}
	for _, l := range strings.Split(strings.TrimSuffix(fq, "."), ".") {
		if len(l) > 63 || !labelRe.MatchString(l) {
			return "", bad
		}
	}
	if low != s {
		return "", fmt.Sprintf("%q must be lowercase (write %q)", s, low)
	}
	return fq, ""
}

// CheckDomain checks a domain name written in the topology and returns it
// fully qualified, or a message saying what is wrong (for the parts'
// checks).
func CheckDomain(s string) (fq, msg string) { return checkDomain(s) }

// UnderReserved reports whether the fully qualified name fq is one of the
// reserved TLDs or lies under one; ReservedWhy says why lab names must be.
func UnderReserved(fq string) bool { return underReserved(fq) }

// ReservedWhy explains why lab names live under reserved TLDs.
func ReservedWhy() string { return reservedWhy }

// underReserved reports whether the fully qualified name fq is one of the
// reserved TLDs or lies under one.
func underReserved(fq string) bool {
	labels := mdns.SplitDomainName(fq)
	return len(labels) > 0 && slices.Contains(ReservedTLDs, strings.ToLower(labels[len(labels)-1]))
}

// zoneName checks a key of zones: and returns the zone's name.
func zoneName(key string) (string, string) {
	fq, msg := checkDomain(key)
	if msg != "" {
		return "", "zone name " + msg
	}
	if fq != "." && !underReserved(fq) {
		return "", fmt.Sprintf("zone %s is not under a reserved TLD: %s", fq, reservedWhy)
	}
	return fq, ""
}

// labName resolves a name written in an ns or gslb block of zone: "@" is
// the zone itself; a name that ends in a dot or in a reserved TLD is fully
// qualified, any other is relative to the zone. With zone "" (a zone whose
// own name is wrong) only the spelling is checked.
func labName(s, zone string) (string, string) {
	if s == "@" && zone != "" {
		return zone, ""
	}
	fq, msg := checkDomain(s)
	switch {
	case msg != "" || zone == "":
		return fq, msg
	case fq == ".":
		return "", `"." is the root, not a host name`
	case !strings.HasSuffix(s, ".") && !underReserved(fq) && zone != ".":
		fq += zone
	}
	if !underReserved(fq) {
		return "", fmt.Sprintf("%s is not under a reserved TLD: %s", fq, reservedWhy)
	}
	return fq, ""
}

// dnsAddr is the address node name serves DNS on: its lowest IPv4 address.
func dnsAddr(name string, n *Node) (netip.Addr, string) {
	if k, _ := KindOf(n.Kind); k.Bridge {
		return netip.Addr{}, fmt.Sprintf("node %s is a switch: it has no addresses to serve DNS on", name)
	}
	a, ok := LowestIPv4(n)
	if !ok {
		return netip.Addr{}, fmt.Sprintf("node %s has no IPv4 address to serve DNS on", name)
	}
	return a, ""
}

// nsTarget resolves the value of an ns entry: a node, or an IPv4 address
// of one.
func (t *Topology) nsTarget(v string, holders map[netip.Addr]string) (string, netip.Addr, string) {
	const how = "write a node name or one of its IPv4 addresses"
	if v == "" {
		return "", netip.Addr{}, "missing name server: write the node serving the zone under this name, or one of its IPv4 addresses"
	}
	if a, err := netip.ParseAddr(v); err == nil {
		node, ok := holders[a]
		switch {
		case !a.Is4():
			return "", a, fmt.Sprintf("%s is not an IPv4 address: lab DNS is served over IPv4 (%s)", v, how)
		case a.IsLoopback():
			return "", a, fmt.Sprintf("%s is a loopback address, which no other node reaches (%s)", v, how)
		case !ok:
			return "", a, fmt.Sprintf("no node has %s (%s)", v, how)
		}
		return node, a, ""
	}
	n := t.Nodes[v]
	if n == nil {
		return "", netip.Addr{}, fmt.Sprintf("no node named %q (%s)", v, how)
	}
	a, msg := dnsAddr(v, n)
	return v, a, msg
}

// ttlSeconds is a validated TTL in seconds, def when not written.
func ttlSeconds(d Duration, def int) uint32 {
	if d <= 0 {
		return uint32(def)
	}
	return uint32(time.Duration(d) / time.Second)
}

// seconds is a dns.Duration of n seconds.
func seconds(n uint32) dns.Duration { return dns.Duration(time.Duration(n) * time.Second) }

// dnsWorld is the zones of a lab resolved: what validation checks against
// and what expansion generates from. Whatever is wrong is left out of it;
// validation reports it.
type dnsWorld struct {
	zones  []*dnsZone            // sorted by name
	byName map[string]*dnsZone   // by name
	hosts  map[string]netip.Addr // name server host name → address
	hostOf map[string]*dnsZone   // name server host name → the first zone naming it
	served map[string][]*dnsZone // node → the zones it serves, sorted by name
}

// dnsZone is one declared zone, resolved.
type dnsZone struct {
	key     string // as written under zones:
	name    string // fully qualified, lowercase
	z       *Zone
	ns      []nsEntry // sorted by host
	records []mdns.RR // the zone's own records
	recErr  error     // why records do not parse
	owners  map[string]bool
}

// nsEntry is one name server of a zone.
type nsEntry struct {
	host, node string
	addr       netip.Addr
}

// dnsWorld resolves the zones of t and sets their Name.
func (t *Topology) dnsWorld() *dnsWorld {
	w := &dnsWorld{
		byName: map[string]*dnsZone{},
		hosts:  map[string]netip.Addr{},
		hostOf: map[string]*dnsZone{},
		served: map[string][]*dnsZone{},
	}
	for _, key := range sortedKeys(t.Zones) {
		z := t.Zones[key]
		fq, msg := zoneName(key)
		if z == nil || msg != "" || w.byName[fq] != nil {
			continue
		}
		z.Name = fq
		dz := &dnsZone{key: key, name: fq, z: z, owners: map[string]bool{}}
		w.zones = append(w.zones, dz)
		w.byName[fq] = dz
	}
	slices.SortFunc(w.zones, func(a, b *dnsZone) int { return strings.Compare(a.name, b.name) })
	holders := t.IPv4Owners()
	for _, dz := range w.zones {
		for _, h := range sortedKeys(dz.z.NS) {
			host, msg := labName(h, dz.name)
			if msg != "" || slices.ContainsFunc(dz.ns, func(e nsEntry) bool { return e.host == host }) {
				continue
			}
			node, a, msg := t.nsTarget(dz.z.NS[h], holders)
			if msg != "" {
				continue
			}
			dz.ns = append(dz.ns, nsEntry{host, node, a})
			if _, ok := w.hosts[host]; !ok {
				w.hosts[host], w.hostOf[host] = a, dz
			}
			if s := w.served[node]; len(s) == 0 || s[len(s)-1] != dz {
				w.served[node] = append(s, dz)
			}
		}
		slices.SortFunc(dz.ns, func(a, b nsEntry) int { return strings.Compare(a.host, b.host) })
		dz.records, dz.recErr = parseRecords(dz.z.Records, dz.name, t.File, ttlSeconds(dz.z.TTL, DefaultZoneTTL))
		for _, rr := range dz.records {
			dz.owners[mdns.CanonicalName(rr.Header().Name)] = true
		}
	}
	return w
}

// parseRecords reads the records of a zone in zone-file syntax.
func parseRecords(text, origin, file string, ttl uint32) ([]mdns.RR, error) {
	if text == "" {
		return nil, nil
	}
	if !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	// A $TTL directive, unlike SetDefaultTTL, keeps the default when a
	// record gives its own TTL (RFC 2308). It is line 0 of the text: see
	// zoneParseError.
	text = "$TTL " + strconv.FormatUint(uint64(ttl), 10) + "\n" + text
	zp := mdns.NewZoneParser(strings.NewReader(text), origin, file)
	var out []mdns.RR
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		out = append(out, rr)
	}
	return out, zp.Err()
}

// parentName is the name one label up from a fully qualified name, "" above
// the root.
func parentName(n string) string {
	if n == "." || n == "" {
		return ""
	}
	off, end := mdns.NextLabel(n, 0)
	if end || off >= len(n) {
		return "."
	}
	return n[off:]
}

// zoneOf is the declared zone a fully qualified name lies in: the nearest
// at or above it.
func (w *dnsWorld) zoneOf(name string) *dnsZone {
	for n := name; n != ""; n = parentName(n) {
		if dz := w.byName[n]; dz != nil {
			return dz
		}
	}
	return nil
}

// parent is the nearest declared zone above dz, which delegates it.
func (w *dnsWorld) parent(dz *dnsZone) *dnsZone { return w.zoneOf(parentName(dz.name)) }

// children are the zones dz delegates, sorted by name.
func (w *dnsWorld) children(dz *dnsZone) []*dnsZone {
	var out []*dnsZone
	for _, c := range w.zones {
		if c != dz && w.parent(c) == dz {
			out = append(out, c)
		}
	}
	return out
}

// hints are the root servers, sorted by name.
func (w *dnsWorld) hints() []dns.Hint {
	root := w.byName["."]
	if root == nil {
		return nil
	}
	out := make([]dns.Hint, 0, len(root.ns))
	for _, e := range root.ns {
		out = append(out, dns.Hint{Name: e.host, Address: e.addr.String()})
	}
	return out
}

// dnsService reports whether s is the service expandDNS writes.
func dnsService(s *Service) bool {
	return s != nil && s.Config != nil && slices.Equal(s.Command, []string{"labctl", "serve", "dns"})
}

// servesDNS reports whether a node gets the dns service.
func (w *dnsWorld) servesDNS(name string, n *Node) bool {
	return len(w.served[name]) > 0 || n.Resolver != nil || n.HTTPDNS != nil
}

// dns checks the zones and the resolver and httpdns blocks. Like bgp, it
// runs before the lab is expanded and again on the expanded lab.
func (c *checker) dns() {
	t := c.t
	w := t.dnsWorld()
	holders := t.IPv4Owners()
	first := map[string]string{} // zone name → the key written first
	for _, key := range sortedKeys(t.Zones) {
		p := path{"zones", key}
		z := t.Zones[key]
		fq, msg := zoneName(key)
		switch {
		case msg != "":
			c.addAtKey(p, "%s", msg)
		case first[fq] != "":
			c.addAtKey(p, "zone %s is already written as %q", fq, first[fq])
		default:
			first[fq] = key
		}
		if z == nil {
			c.addAtKey(p, "zone %s has no settings: write at least ns: (its name servers)", key)
			continue
		}
		c.zoneNS(p, fq, z, w, holders)
		c.dnsSeconds(p.with("ttl"), "ttl", z.TTL)
		c.dnsSeconds(p.with("negative-ttl"), "negative-ttl", z.NegativeTTL)
		if dz := w.byName[fq]; dz != nil && dz.key == key {
			c.records(p, dz, w)
			if z.GSLB != nil {
				c.gslb(p.with("gslb"), dz, w)
			}
		}
	}
	_, hasRoot := w.byName["."]
	for _, name := range t.NodeNames() {
		n := t.Nodes[name]
		p := path{"nodes", name}
		for _, block := range []string{"resolver", "httpdns"} {
			if (block == "resolver" && n.Resolver == nil || block == "httpdns" && n.HTTPDNS == nil) && t.src.null(p.with(block)) {
				c.add(p.with(block), "%s: with nothing after it sets nothing; write %s: {} for the defaults", block, block)
			}
		}
		if n.Resolver != nil {
			c.resolver(p, name, n, w, hasRoot)
		}
		if n.HTTPDNS != nil {
			c.httpdns(p, name, n, w, hasRoot)
		}
		// Once expanded, the service is the server itself.
		if s, ok := n.Services[DNSService]; ok && w.servesDNS(name, n) && !t.expanded && !dnsService(s) {
			c.addAtKey(p.with("services", DNSService), "%s is the DNS server labctl starts on a node that serves zones, a resolver or HTTPDNS; name the service otherwise", DNSService)
		}
	}
}

// zoneNS checks the name servers of one zone (named fq, "" when its name
// is wrong).
func (c *checker) zoneNS(p path, fq string, z *Zone, w *dnsWorld, holders map[netip.Addr]string) {
	np := p.with("ns")
	if len(z.NS) == 0 {
		c.add(np, "a zone needs at least one name server: ns: {HOST: NODE}, the host name it is served under and the node serving it")
		return
	}
	seen := map[string]string{}
	for _, h := range sortedKeys(z.NS) {
		hp := np.with(h)
		host, msg := labName(h, fq)
		if msg != "" {
			c.addAtKey(hp, "name server %s", msg)
		} else if prev, dup := seen[host]; dup && fq != "" {
			c.addAtKey(hp, "name server %s is already ns %q", host, prev)
		} else {
			seen[host] = h
		}
		_, a, msg := c.t.nsTarget(z.NS[h], holders)
		if msg != "" {
			c.add(hp, "%s", msg)
			continue
		}
		if prev, ok := w.hosts[host]; ok && fq != "" && host != "" && prev != a {
			c.add(hp, "name server %s is %s in zone %s: one host name, one address", host, prev, w.hostOf[host].name)
		}
	}
}

// dnsSeconds checks a TTL: 0 (the default) or whole seconds, at least 1s.
func (c *checker) dnsSeconds(p path, field string, d Duration) {
	switch {
	case d == 0:
	case d < Duration(time.Second):
		c.add(p, "%s %s must be at least 1s", field, time.Duration(d))
	case time.Duration(d)%time.Second != 0:
		c.add(p, "%s %s is not a whole number of seconds: DNS counts TTLs in seconds", field, time.Duration(d))
	}
}

// ztok is one token of a records text, at its 1-based line and column.
type ztok struct {
	s         string
	line, col int
}

// zentry is one logical line of a zone file: a record or a directive.
type zentry struct {
	toks        []ztok
	blank       bool // no owner: the line starts with a blank
	first, last int  // the text lines (0-based) it spans
}

// tok is the i-th token, the first for i < 0, none without an entry.
func (e *zentry) tok(i int) ztok {
	switch {
	case e == nil || len(e.toks) == 0:
		return ztok{}
	case i < 0 || i >= len(e.toks):
		return e.toks[0]
	}
	return e.toks[i]
}

// find is the index of the token among the owner, TTL, class and type
// fields that is want, or -1.
func (e *zentry) find(want string) int {
	if e == nil {
		return -1
	}
	start := 1
	if e.blank {
		start = 0
	}
	for j := start; j < len(e.toks) && j <= start+2; j++ {
		if strings.EqualFold(e.toks[j].s, want) {
			return j
		}
	}
	return -1
}

// zoneEntries splits a zone-file text into its records and directives:
// comments run from ';' to the end of the line, parentheses continue a
// record over several lines.
func zoneEntries(text string) []zentry {
	var out []zentry
	var cur zentry
	depth := 0
	for li, line := range strings.Split(text, "\n") {
		if depth == 0 {
			if len(cur.toks) > 0 {
				out = append(out, cur)
			}
			cur = zentry{blank: line != "" && (line[0] == ' ' || line[0] == '\t'), first: li}
		}
		cur.last = li
		for i := 0; i < len(line); {
			switch ch := line[i]; {
			case ch == ';':
				i = len(line)
			case ch == ' ' || ch == '\t' || ch == '\r':
				i++
			case ch == '(':
				depth++
				i++
			case ch == ')':
				depth = max(depth-1, 0)
				i++
			case ch == '"':
				start := i
				for i++; i < len(line) && line[i] != '"'; i++ {
					if line[i] == '\\' {
						i++
					}
				}
				cur.toks = append(cur.toks, ztok{line[start+1 : min(i, len(line))], li + 1, start + 1})
				i++
			default:
				start := i
				for ; i < len(line) && !strings.ContainsRune(" \t\r;()\"", rune(line[i])); i++ {
					if line[i] == '\\' {
						i++
					}
				}
				i = min(i, len(line))
				cur.toks = append(cur.toks, ztok{line[start:i], li + 1, start + 1})
			}
		}
	}
	if len(cur.toks) > 0 {
		out = append(out, cur)
	}
	return out
}

// recordEntries pairs each of the parsed records rrs of text with the
// entry it was written on (a $GENERATE gives several records), or with nil
// when they cannot be paired.
func recordEntries(text, origin string, rrs []mdns.RR) []*zentry {
	entries := zoneEntries(text)
	lines := strings.Split(text, "\n")
	var out []*zentry
	for i := range entries {
		e := &entries[i]
		n := 1
		if d := e.toks[0].s; !e.blank && strings.HasPrefix(d, "$") {
			n = 0
			if strings.EqualFold(d, "$GENERATE") {
				got, _ := parseRecords(strings.Join(lines[e.first:e.last+1], "\n"), origin, "", 0)
				n = len(got)
			}
		}
		for range n {
			out = append(out, e)
		}
	}
	if len(out) != len(rrs) {
		return make([]*zentry, len(rrs))
	}
	return out
}

var zoneErrRe = regexp.MustCompile(`^(.*): ("(?:[^"\\]|\\.)*") at line: (\d+):(\d+)$`)

// zoneParseError turns the zone parser's error into a message and the
// token it is about.
func zoneParseError(err error, text, file string) (ztok, string) {
	const syntax = " (records are zone-file lines: NAME [TTL] [IN] TYPE DATA, names relative to the zone unless they end in a dot)"
	s := err.Error()
	if file != "" {
		s = strings.TrimPrefix(s, file+": ")
	}
	s = strings.TrimPrefix(s, "dns: ")
	m := zoneErrRe.FindStringSubmatch(s)
	if m == nil {
		return ztok{}, s + syntax
	}
	tok, _ := strconv.Unquote(m[2])
	line, _ := strconv.Atoi(m[3])
	line-- // below the $TTL line parseRecords adds
	col, _ := strconv.Atoi(m[4])
	// The parser gives the column where it stopped reading: find the
	// token's start.
	if lines := strings.Split(text, "\n"); line >= 1 && line <= len(lines) && tok != "" {
		l := lines[line-1]
		if i := strings.LastIndex(l[:min(max(col, 0), len(l))], tok); i >= 0 {
			col = i + 1
		} else if i := strings.Index(l, tok); i >= 0 {
			col = i + 1
		}
	}
	msg := m[1]
	if tok != "" {
		msg = fmt.Sprintf("%s: %q", m[1], tok)
	}
	return ztok{tok, line, max(col, 1)}, msg + syntax
}

// addText is add for a problem inside the text at p, located at tok when
// it is known.
func (c *checker) addText(p path, tok ztok, format string, args ...any) {
	pr := c.t.src.problem(p, fmt.Sprintf(format, args...))
	if tok.line > 0 {
		if line, col, ok := c.t.src.textPos(p, tok.line, tok.col); ok {
			pr.Line, pr.Col = line, col
		}
	}
	c.probs = append(c.probs, pr)
}

// value is the YAML node at p, tags and anchors unwrapped, or nil.
func (s *source) value(p path) ast.Node {
	if s == nil || s.ast == nil || len(s.ast.Docs) == 0 {
		return nil
	}
	n := s.ast.Docs[0].Body
	for _, seg := range p {
		if n == nil {
			return nil
		}
		n, _ = step(n, seg)
	}
	for {
		switch v := n.(type) {
		case *ast.TagNode:
			n = v.Value
		case *ast.AnchorNode:
			n = v.Value
		default:
			return n
		}
	}
}

// null reports whether p is written with no value.
func (s *source) null(p path) bool {
	n := s.value(p)
	return n != nil && n.Type() == ast.NullType
}

// textPos is where line and col (1-based) of the string at p are in the
// file: exact for a literal block (|) and a one-line string, unknown for
// other forms, whose lines are folded.
func (s *source) textPos(p path, line, col int) (int, int, bool) {
	switch v := s.value(p).(type) {
	case *ast.LiteralNode:
		if v.Start == nil || v.Start.Position == nil || v.Value == nil || v.Value.Token == nil || !strings.HasPrefix(v.Start.Value, "|") {
			return 0, 0, false
		}
		// The block's lines, as written and without their indentation.
		raw := strings.Split(v.Value.Token.Origin, "\n")
		text := strings.Split(v.Value.Value, "\n")
		if line < 1 || line > len(raw) || line > len(text) {
			return 0, 0, false
		}
		indent := max(len(raw[line-1])-len(text[line-1]), 0)
		return v.Start.Position.Line + line, indent + col, true
	case *ast.StringNode:
		tk := v.Token
		if tk == nil || tk.Position == nil || line != 1 || strings.Contains(v.Value, "\n") {
			return 0, 0, false
		}
		switch strings.TrimSpace(tk.Origin) {
		case v.Value:
			return tk.Position.Line, tk.Position.Column + col - 1, true
		case `"` + v.Value + `"`, `'` + v.Value + `'`:
			return tk.Position.Line, tk.Position.Column + col, true
		}
	}
	return 0, 0, false
}

// records checks the records of one zone.
func (c *checker) records(p path, dz *dnsZone, w *dnsWorld) {
	rp := p.with("records")
	if dz.recErr != nil {
		tok, msg := zoneParseError(dz.recErr, dz.z.Records, c.t.File)
		c.addText(rp, tok, "%s", msg)
		return
	}
	entries := recordEntries(dz.z.Records, dz.name, dz.records)
	count := map[string]int{} // owner → records kept
	cname := map[string]int{} // owner → its first CNAME
	for i, rr := range dz.records {
		e := entries[i]
		h := rr.Header()
		owner := mdns.CanonicalName(h.Name)
		ti := e.find(mdns.TypeToString[h.Rrtype])
		last := ti >= 0 && ti == len(e.toks)-1 // nothing after the type
		if ti < 0 {
			ti = 0
		}
		switch {
		case h.Name == "":
			c.addText(rp, e.tok(0), "the first record has no name: a line that starts with a blank continues the name of the record above it")
			continue
		case h.Class != mdns.ClassINET:
			c.addText(rp, e.tok(e.find(mdns.ClassToString[h.Class])), "class %s: lab zones hold class IN records only", mdns.ClassToString[h.Class])
			continue
		case h.Rrtype == mdns.TypeSOA:
			c.addText(rp, e.tok(ti), "SOA records are generated (from ns, ttl and negative-ttl): remove this one")
			continue
		case h.Rrtype == mdns.TypeNS && owner == dz.name:
			c.addText(rp, e.tok(ti), "the zone's NS records are generated from its ns: remove this one")
			continue
		case h.Rrtype == mdns.TypeNS:
			c.addText(rp, e.tok(ti), "NS records are generated: to delegate %s, declare it as a zone under zones: with its ns", owner)
			continue
		case slices.Contains(mdns.SplitDomainName(owner), "*"):
			c.addText(rp, e.tok(0), "%s is a wildcard: lab servers answer names literally and would never match it; write each name", owner)
			continue
		}
		if last || e == nil && rr.String() == h.String() {
			c.addText(rp, e.tok(ti), "the %s record of %s has no data after its type", mdns.TypeToString[h.Rrtype], owner)
			continue
		}
		switch oz := w.zoneOf(owner); {
		case !mdns.IsSubDomain(dz.name, owner):
			c.addText(rp, e.tok(0), "%s is outside zone %s", owner, dz.name)
			continue
		case oz != dz:
			c.addText(rp, e.tok(0), "%s is in zone %s, declared under zones:; write the record there", owner, oz.name)
			continue
		case dz.name == "." && owner != "." && !underReserved(owner):
			c.addText(rp, e.tok(0), "%s is not under a reserved TLD: %s", owner, reservedWhy)
			continue
		}
		if hz := w.hostOf[owner]; hz != nil && (h.Rrtype == mdns.TypeA || h.Rrtype == mdns.TypeCNAME) {
			c.addText(rp, e.tok(ti), "%s is a name server (ns: of zone %s): its address record is generated from there", owner, hz.name)
			continue
		}
		if h.Rrtype == mdns.TypeCNAME {
			if owner == dz.name {
				c.addText(rp, e.tok(ti), "a CNAME cannot be at the zone apex, which holds the SOA and NS records")
				continue
			}
			if _, ok := cname[owner]; !ok {
				cname[owner] = i
			}
		}
		count[owner]++
		var target string
		k := 1 // the target's place after the type
		switch v := rr.(type) {
		case *mdns.CNAME:
			target = v.Target
		case *mdns.DNAME:
			target = v.Target
		case *mdns.PTR:
			target = v.Ptr
		case *mdns.MX:
			target, k = v.Mx, 2
		case *mdns.SRV:
			target, k = v.Target, 4
		}
		if target == "" {
			continue
		}
		target = mdns.CanonicalName(target)
		if none := target == "." && (h.Rrtype == mdns.TypeMX || h.Rrtype == mdns.TypeSRV); !none && !underReserved(target) {
			tk := e.tok(ti + k)
			if ti+k >= len(e.toks) {
				tk = e.tok(ti)
			}
			c.addText(rp, tk, "%s points to %s, which is not under a reserved TLD: %s", mdns.TypeToString[h.Rrtype], target, reservedWhy)
		}
	}
	for i, rr := range dz.records {
		owner := mdns.CanonicalName(rr.Header().Name)
		if j, ok := cname[owner]; ok && j == i && count[owner] > 1 {
			c.addText(rp, entries[i].tok(0), "%s has a CNAME and other records: the name of a CNAME holds nothing else (RFC 1034)", owner)
		}
	}
}

// gslb checks the GSLB of zone dz.
func (c *checker) gslb(p path, dz *dnsZone, w *dnsWorld) {
	g := dz.z.GSLB
	if len(g.Names) == 0 {
		c.add(p.with("names"), "gslb needs names: the names it answers for, relative to the zone or fully qualified")
	}
	seen := map[string]int{}
	for i, s := range g.Names {
		np := p.with("names", i)
		fq, msg := labName(s, dz.name)
		switch oz := w.zoneOf(fq); {
		case msg != "":
			c.add(np, "%s", msg)
		case !mdns.IsSubDomain(dz.name, fq):
			c.add(np, "%s is outside zone %s", fq, dz.name)
		case oz != dz:
			c.add(np, "%s is in zone %s, declared under zones:; balance it there", fq, oz.name)
		case seen[fq] > 0:
			c.add(np, "%s is already names[%d]", fq, seen[fq]-1)
		case dz.owners[fq]:
			c.add(np, "%s also has records under records: a GSLB name is answered by the GSLB alone", fq)
		case w.hostOf[fq] != nil:
			c.add(np, "%s is a name server (ns: of zone %s), whose address is generated: it cannot be balanced", fq, w.hostOf[fq].name)
		default:
			seen[fq] = i + 1
		}
	}
	c.dnsSeconds(p.with("ttl"), "ttl", g.TTL)
	rp := p.with("regions")
	if len(g.Regions) == 0 {
		c.add(rp, "gslb needs regions: region name → the public addresses of its load balancers")
	}
	where := map[netip.Addr]string{}
	for _, r := range sortedKeys(g.Regions) {
		if !nameRe.MatchString(r) {
			c.addAtKey(rp.with(r), "region name %q must be lowercase letters, digits and inner dashes", r)
		}
		if len(g.Regions[r]) == 0 {
			c.add(rp.with(r), "region %s needs at least one address: the public IPv4 addresses of its load balancers", r)
		}
		for i, s := range g.Regions[r] {
			ap := rp.with(r, i)
			a, err := netip.ParseAddr(s)
			if err != nil || !a.Is4() {
				c.add(ap, "%q is not an IPv4 address", s)
				continue
			}
			if prev, dup := where[a]; dup {
				c.add(ap, "%s is already in region %s: an address belongs to one region", a, prev)
				continue
			}
			where[a] = r
		}
	}
	from := map[netip.Prefix]int{}
	for i, cl := range g.Clients {
		cp := p.with("clients", i)
		if cl == nil {
			c.add(cp, "a clients entry needs from (the askers' prefixes) and prefer (the order of regions for them)")
			continue
		}
		if len(cl.From) == 0 {
			c.add(cp.with("from"), "from needs at least one IPv4 prefix: the resolvers or subscribers this rule is for")
		}
		for j, s := range cl.From {
			pr, ok := c.ipv4CIDR(cp.with("from", j), s, "")
			if !ok {
				continue
			}
			if k, dup := from[pr]; dup {
				c.add(cp.with("from", j), "%s is already in clients[%d]: the longest prefix decides, so one prefix has one rule", pr, k)
				continue
			}
			from[pr] = i
		}
		c.regionOrder(cp.with("prefer"), "prefer", cl.Prefer, g.Regions)
	}
	if g.Default != nil {
		c.regionOrder(p.with("default"), "default", g.Default, g.Regions)
	}
	c.healthCheck(p, g.Check)
}

// regionOrder checks a prefer or default list.
func (c *checker) regionOrder(p path, field string, order []string, regions map[string][]string) {
	if len(order) == 0 {
		c.add(p, "%s needs at least one region: the order to try them in", field)
	}
	seen := map[string]int{}
	for i, r := range order {
		if _, ok := regions[r]; !ok {
			c.add(p.with(i), "no region %q (the regions are %s)", r, strings.Join(sortedKeys(regions), ", "))
			continue
		}
		if j, dup := seen[r]; dup {
			c.add(p.with(i), "region %s is already %s[%d]", r, field, j)
			continue
		}
		seen[r] = i
	}
}

// healthCheck checks a GSLB's check (p is the gslb block).
func (c *checker) healthCheck(p path, hc *HealthCheck) {
	if hc == nil {
		c.add(p.with("check"), "gslb needs check: the TCP health check of the region addresses, like {port: 80}")
		return
	}
	p = p.with("check")
	switch {
	case hc.Port == 0:
		c.add(p.with("port"), "check needs a port: the TCP port of the load balancers")
	case hc.Port < 0 || hc.Port > 65535:
		c.add(p.with("port"), "port %d is outside 1..65535", hc.Port)
	}
	intervalOK := true
	if hc.Interval != 0 && hc.Interval < minCheckInterval {
		c.add(p.with("interval"), "interval %s must be at least %s", time.Duration(hc.Interval), time.Duration(minCheckInterval))
		intervalOK = false
	}
	interval, timeout := hc.Interval, hc.Timeout
	if interval == 0 {
		interval = defaultCheckInterval
	}
	if timeout == 0 {
		timeout = defaultCheckTimeout
	}
	switch {
	case hc.Timeout < 0:
		c.add(p.with("timeout"), "timeout %s must be more than 0", time.Duration(hc.Timeout))
	case !intervalOK || timeout < interval:
	case hc.Timeout == 0:
		c.add(p.with("interval"), "interval %s must be longer than timeout %s (the default)", time.Duration(interval), time.Duration(timeout))
	case hc.Interval == 0:
		c.add(p.with("timeout"), "timeout %s must be shorter than interval %s (the default)", time.Duration(timeout), time.Duration(interval))
	default:
		c.add(p.with("timeout"), "timeout %s must be shorter than interval %s", time.Duration(timeout), time.Duration(interval))
	}
	if hc.Fall < 0 {
		c.add(p.with("fall"), "fall %d must be at least 1 (failures in a row that mark an address down)", hc.Fall)
	}
	if hc.Rise < 0 {
		c.add(p.with("rise"), "rise %d must be at least 1 (successes in a row that mark an address up again)", hc.Rise)
	}
}

// resolver checks a node's resolver block.
func (c *checker) resolver(p path, name string, n *Node, w *dnsWorld, hasRoot bool) {
	rp := p.with("resolver")
	r := n.Resolver
	if _, msg := dnsAddr(name, n); msg != "" {
		c.add(rp, "%s", msg)
	}
	if zs := w.served[name]; len(zs) > 0 {
		var names []string
		for _, z := range zs {
			names = append(names, z.name)
		}
		c.add(rp, "node %s serves zones (%s) and cannot also be a resolver: operators keep authoritative and recursive servers apart, and both would need port %d", name, strings.Join(names, ", "), dns.Port)
	}
	if !hasRoot {
		c.add(rp, `a resolver iterates from the root zone's servers, but zones: declares no root zone "."`)
	}
	for i, s := range r.Allow {
		ap := rp.with("allow", i)
		pr, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			c.add(ap, "%q is not a CIDR (like 198.51.100.0/24 or 2001:db8::/32)", s)
		case pr.Masked() != pr:
			c.add(ap, "%s has host bits set; write %s", s, pr.Masked())
		}
	}
	c.dnsSeconds(rp.with("max-ttl"), "max-ttl", r.MaxTTL)
	c.dnsSeconds(rp.with("negative-ttl"), "negative-ttl", r.NegativeTTL)
}

// httpdns checks a node's httpdns block.
func (c *checker) httpdns(p path, name string, n *Node, w *dnsWorld, hasRoot bool) {
	hp := p.with("httpdns")
	if _, msg := dnsAddr(name, n); msg != "" {
		c.add(hp, "%s", msg)
	}
	if !hasRoot {
		c.add(hp, `HTTPDNS resolves from the root zone's servers, but zones: declares no root zone "."`)
	}
	if n.HTTPDNS.Listen == "" {
		return
	}
	lp := hp.with("listen")
	port, ok := httpdnsPort(n.HTTPDNS.Listen)
	if !ok {
		c.add(lp, "%q is not :PORT or IPv4:PORT (like :80 or 192.0.2.80:8053)", n.HTTPDNS.Listen)
		return
	}
	if ap, err := netip.ParseAddrPort(n.HTTPDNS.Listen); err == nil && !ownAddr(n, ap.Addr()) {
		c.add(lp, "%s is not an address of node %s", ap.Addr(), name)
	}
	if port == dns.Port && (len(w.served[name]) > 0 || n.Resolver != nil) {
		c.add(lp, "port %d is taken by the node's DNS server (its zones or resolver): HTTPDNS needs another port", port)
	}
}

// httpdnsPort parses an HTTPDNS listen address.
func httpdnsPort(s string) (int, bool) {
	if ps, ok := strings.CutPrefix(s, ":"); ok {
		port, err := strconv.Atoi(ps)
		return port, err == nil && port >= 1 && port <= 65535 && strconv.Itoa(port) == ps
	}
	ap, err := netip.ParseAddrPort(s)
	return int(ap.Port()), err == nil && ap.Addr().Is4() && ap.Port() != 0
}

// expandDNS gives every node that serves DNS its service: the zones it is
// a name server of, with their generated records, and its resolver and
// HTTPDNS. Running it again changes nothing.
func (t *Topology) expandDNS() {
	w := t.dnsWorld()
	zones := map[*dnsZone]*dns.Zone{}
	for _, dz := range w.zones {
		zones[dz] = w.zoneConfig(dz)
	}
	hints := w.hints()
	for _, name := range t.NodeNames() {
		n := t.Nodes[name]
		if !w.servesDNS(name, n) {
			continue
		}
		cfg := dns.Config{Node: name}
		for _, dz := range w.served[name] {
			cfg.Zones = append(cfg.Zones, zones[dz])
		}
		ready := strconv.Itoa(dns.Port)
		if r := n.Resolver; r != nil {
			cfg.Resolver = &dns.ResolverConfig{
				Hints:       hints,
				Allow:       slices.Clone(r.Allow),
				MaxTTL:      seconds(ttlSeconds(r.MaxTTL, DefaultResolverMax)),
				NegativeTTL: seconds(ttlSeconds(r.NegativeTTL, DefaultResolverNeg)),
			}
		}
		if h := n.HTTPDNS; h != nil {
			listen := h.Listen
			if listen == "" {
				listen = DefaultHTTPDNSListen
			}
			cfg.HTTPDNS = &dns.HTTPDNSConfig{Listen: listen, Resolver: dns.ResolverConfig{
				Hints:        hints,
				MaxTTL:       dns.Duration(dns.DefaultMaxTTL),
				NegativeTTL:  dns.Duration(dns.DefaultNegativeTTL),
				ClientSubnet: true,
			}}
			if len(cfg.Zones) == 0 && cfg.Resolver == nil {
				ready = strings.TrimPrefix(listen, ":")
			}
		}
		b, err := json.Marshal(cfg)
		if err != nil {
			panic(err) // strings, numbers and lists: cannot fail
		}
		if n.Services == nil {
			n.Services = map[string]*Service{}
		}
		n.Services[DNSService] = &Service{
			Command: []string{"labctl", "serve", "dns"},
			Config:  b,
			Ready:   &Ready{TCP: ready},
		}
	}
}

// zoneConfig is what the servers of dz serve: the generated records (SOA,
// apex NS, the addresses of name servers, delegations with their glue),
// then the zone's own, and its GSLB.
func (w *dnsWorld) zoneConfig(dz *dnsZone) *dns.Zone {
	ttl := ttlSeconds(dz.z.TTL, DefaultZoneTTL)
	out := &dns.Zone{Origin: dz.name, Records: []string{}}
	seen := map[string]bool{}
	emit := func(rr mdns.RR) {
		if s := rr.String(); !seen[s] {
			seen[s] = true
			out.Records = append(out.Records, s)
		}
	}
	hdr := func(name string, tp uint16) mdns.RR_Header {
		return mdns.RR_Header{Name: name, Rrtype: tp, Class: mdns.ClassINET, Ttl: ttl}
	}
	a := func(name string, addr netip.Addr) *mdns.A {
		return &mdns.A{Hdr: hdr(name, mdns.TypeA), A: addr.AsSlice()}
	}
	if len(dz.ns) > 0 {
		mbox := "hostmaster." + dz.name
		if dz.name == "." {
			mbox = "hostmaster."
		}
		emit(&mdns.SOA{Hdr: hdr(dz.name, mdns.TypeSOA), Ns: dz.ns[0].host, Mbox: mbox,
			Serial: soaSerial, Refresh: soaRefresh, Retry: soaRetry, Expire: soaExpire,
			Minttl: ttlSeconds(dz.z.NegativeTTL, DefaultNegativeTTL)})
	}
	for _, e := range dz.ns {
		emit(&mdns.NS{Hdr: hdr(dz.name, mdns.TypeNS), Ns: e.host})
	}
	// The addresses of the zone's own name servers inside it (glue, when
	// below a delegation), and of every name server whose name is the
	// zone's.
	addrs := map[string]netip.Addr{}
	for _, e := range dz.ns {
		if mdns.IsSubDomain(dz.name, e.host) {
			addrs[e.host] = e.addr
		}
	}
	for h, addr := range w.hosts {
		if w.zoneOf(h) == dz {
			addrs[h] = addr
		}
	}
	for _, h := range sortedKeys(addrs) {
		emit(a(h, addrs[h]))
	}
	for _, ch := range w.children(dz) {
		for _, e := range ch.ns {
			emit(&mdns.NS{Hdr: hdr(ch.name, mdns.TypeNS), Ns: e.host})
		}
		for _, e := range ch.ns {
			if mdns.IsSubDomain(dz.name, e.host) {
				emit(a(e.host, e.addr))
			}
		}
	}
	for _, rr := range dz.records {
		emit(rr)
	}
	if g := dz.z.GSLB; g != nil {
		out.GSLB = gslbConfig(g, dz.name)
	}
	return out
}

// gslbConfig resolves a validated GSLB of zone origin.
func gslbConfig(g *GSLB, origin string) *dns.GSLB {
	out := &dns.GSLB{TTL: seconds(ttlSeconds(g.TTL, DefaultGSLBTTL))}
	for _, s := range g.Names {
		fq, _ := labName(s, origin)
		out.Names = append(out.Names, fq)
	}
	for _, r := range sortedKeys(g.Regions) {
		out.Regions = append(out.Regions, &dns.Region{Name: r, Addresses: slices.Clone(g.Regions[r])})
		if len(g.Default) == 0 {
			out.Default = append(out.Default, r)
		}
	}
	for _, cl := range g.Clients {
		out.Clients = append(out.Clients, &dns.ClientRule{From: slices.Clone(cl.From), Prefer: slices.Clone(cl.Prefer)})
	}
	if len(g.Default) > 0 {
		out.Default = slices.Clone(g.Default)
	}
	if hc := g.Check; hc != nil {
		out.Check = dns.HealthCheckSpec{
			Port:     hc.Port,
			Interval: dns.Duration(cmp.Or(hc.Interval, defaultCheckInterval)),
			Timeout:  dns.Duration(cmp.Or(hc.Timeout, defaultCheckTimeout)),
			Fall:     cmp.Or(hc.Fall, DefaultCheckFall),
			Rise:     cmp.Or(hc.Rise, DefaultCheckRise),
		}
	}
	return out
}

// NameServer is one server of a zone.
type NameServer struct {
	Host string     // its host name, fully qualified
	Node string     // the node serving the zone
	Addr netip.Addr // the address the zone's NS records lead to
}

// ZoneServers maps every valid zone (fully qualified) to its servers,
// sorted by host name.
func (t *Topology) ZoneServers() map[string][]NameServer {
	out := map[string][]NameServer{}
	for _, dz := range t.dnsWorld().zones {
		for _, e := range dz.ns {
			out[dz.name] = append(out[dz.name], NameServer{Host: e.host, Node: e.node, Addr: e.addr})
		}
	}
	return out
}
