package topology

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"labctl/lab/dns"
)

// dnsLab is a small DNS world: the root, two TLDs served by one node, the
// shop's zone with a child zone on the same server and a GSLB zone on
// another (named by address), a carrier resolver and an HTTPDNS endpoint.
const dnsLab = `
name: dns-unit
nodes:
  s1: {kind: switch}
  root:
    kind: host
    interfaces: {eth0: {addresses: [192.0.2.1/24]}}
  tld:
    kind: host
    interfaces: {eth0: {addresses: [192.0.2.2/24]}}
  shop:
    kind: host
    interfaces: {eth0: {addresses: [192.0.2.3/24]}}
  gslb:
    kind: host
    interfaces: {eth0: {addresses: [192.0.2.4/24]}}
  dns-a:
    kind: host
    interfaces: {eth0: {addresses: [192.0.2.53/24]}}
    resolver: {allow: [192.0.2.0/24, 198.51.100.0/27], max-ttl: 10m}
  httpdns:
    kind: host
    interfaces: {eth0: {addresses: [192.0.2.80/24]}}
    httpdns: {}
links:
  - endpoints: [root:eth0, s1:p1]
  - endpoints: [tld:eth0, s1:p2]
  - endpoints: [shop:eth0, s1:p3]
  - endpoints: [gslb:eth0, s1:p4]
  - endpoints: [dns-a:eth0, s1:p5]
  - endpoints: [httpdns:eth0, s1:p6]
zones:
  .:
    ns: {a.root-servers.test: root}
  test:
    ns: {ns1.nic.test: tld}
  example.:
    ns: {ns1.nic.test: tld}
  shop.example:
    ns: {ns1: shop}
    ttl: 60s
    records: |
      @       A     192.0.2.100
      www     CNAME www.gslb
      static  300 CNAME static.shop.example.cdn.test.
      mail    MX 10 mx1   ; the shop's mail
      mx1     A     192.0.2.25
  int.shop.example:
    ns: {ns.int.shop.example: shop}
    negative-ttl: 10s
  gslb.shop.example:
    ns: {ns.gslb.shop.example: 192.0.2.4}
    gslb:
      names: [www]
      regions:
        north: [203.0.113.21, 203.0.113.22]
        east:  [203.0.113.12, 203.0.113.11]
      clients:
        - {from: [198.51.100.0/27], prefer: [east, north]}
      check: {port: 80}
`

// rrs writes records as rr.String() does: tabs between the owner, TTL,
// class, type and data, spaces inside the data.
func rrs(lines ...string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = strings.Replace(l, " ", "\t", 4)
	}
	return out
}

func TestDNSExpands(t *testing.T) {
	top, err := Parse([]byte(dnsLab), "dns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sec := func(n int) dns.Duration { return dns.Duration(time.Duration(n) * time.Second) }
	hints := []dns.Hint{{Name: "a.root-servers.test.", Address: "192.0.2.1"}}
	root := &dns.Zone{Origin: ".", Records: rrs(
		". 300 IN SOA a.root-servers.test. hostmaster. 1 3600 600 86400 30",
		". 300 IN NS a.root-servers.test.",
		// The root server's own address, below the delegation of test.
		"a.root-servers.test. 300 IN A 192.0.2.1",
		"example. 300 IN NS ns1.nic.test.",
		"ns1.nic.test. 300 IN A 192.0.2.2",
		"test. 300 IN NS ns1.nic.test.",
	)}
	example := &dns.Zone{Origin: "example.", Records: rrs(
		"example. 300 IN SOA ns1.nic.test. hostmaster.example. 1 3600 600 86400 30",
		"example. 300 IN NS ns1.nic.test.",
		"shop.example. 300 IN NS ns1.shop.example.",
		"ns1.shop.example. 300 IN A 192.0.2.3",
	)}
	test := &dns.Zone{Origin: "test.", Records: rrs(
		"test. 300 IN SOA ns1.nic.test. hostmaster.test. 1 3600 600 86400 30",
		"test. 300 IN NS ns1.nic.test.",
		// Every name server named under test has its address there, the
		// root's included.
		"a.root-servers.test. 300 IN A 192.0.2.1",
		"ns1.nic.test. 300 IN A 192.0.2.2",
	)}
	shop := &dns.Zone{Origin: "shop.example.", Records: rrs(
		"shop.example. 60 IN SOA ns1.shop.example. hostmaster.shop.example. 1 3600 600 86400 30",
		"shop.example. 60 IN NS ns1.shop.example.",
		"ns1.shop.example. 60 IN A 192.0.2.3",
		"gslb.shop.example. 60 IN NS ns.gslb.shop.example.",
		"ns.gslb.shop.example. 60 IN A 192.0.2.4",
		"int.shop.example. 60 IN NS ns.int.shop.example.",
		"ns.int.shop.example. 60 IN A 192.0.2.3",
		"shop.example. 60 IN A 192.0.2.100",
		"www.shop.example. 60 IN CNAME www.gslb.shop.example.",
		"static.shop.example. 300 IN CNAME static.shop.example.cdn.test.",
		// The zone's ttl stays the default after a record with its own.
		"mail.shop.example. 60 IN MX 10 mx1.shop.example.",
		"mx1.shop.example. 60 IN A 192.0.2.25",
	)}
	internal := &dns.Zone{Origin: "int.shop.example.", Records: rrs(
		"int.shop.example. 300 IN SOA ns.int.shop.example. hostmaster.int.shop.example. 1 3600 600 86400 10",
		"int.shop.example. 300 IN NS ns.int.shop.example.",
		"ns.int.shop.example. 300 IN A 192.0.2.3",
	)}
	gslb := &dns.Zone{Origin: "gslb.shop.example.", Records: rrs(
		"gslb.shop.example. 300 IN SOA ns.gslb.shop.example. hostmaster.gslb.shop.example. 1 3600 600 86400 30",
		"gslb.shop.example. 300 IN NS ns.gslb.shop.example.",
		"ns.gslb.shop.example. 300 IN A 192.0.2.4",
	), GSLB: &dns.GSLB{
		Names: []string{"www.gslb.shop.example."},
		TTL:   sec(DefaultGSLBTTL),
		Regions: []*dns.Region{
			{Name: "east", Addresses: []string{"203.0.113.12", "203.0.113.11"}},
			{Name: "north", Addresses: []string{"203.0.113.21", "203.0.113.22"}},
		},
		Clients: []*dns.ClientRule{{From: []string{"198.51.100.0/27"}, Prefer: []string{"east", "north"}}},
		Default: []string{"east", "north"},
		Check: dns.HealthCheckSpec{Port: 80, Interval: dns.Duration(time.Second), Timeout: dns.Duration(500 * time.Millisecond),
			Fall: DefaultCheckFall, Rise: DefaultCheckRise},
	}}
	want := map[string]*dns.Config{
		"root": {Node: "root", Zones: []*dns.Zone{root}},
		"tld":  {Node: "tld", Zones: []*dns.Zone{example, test}},
		"shop": {Node: "shop", Zones: []*dns.Zone{internal, shop}},
		"gslb": {Node: "gslb", Zones: []*dns.Zone{gslb}},
		"dns-a": {Node: "dns-a", Resolver: &dns.ResolverConfig{
			Hints: hints, Allow: []string{"192.0.2.0/24", "198.51.100.0/27"},
			MaxTTL: sec(600), NegativeTTL: sec(DefaultResolverNeg),
		}},
		"httpdns": {Node: "httpdns", HTTPDNS: &dns.HTTPDNSConfig{Listen: DefaultHTTPDNSListen, Resolver: dns.ResolverConfig{
			Hints: hints, MaxTTL: sec(DefaultResolverMax), NegativeTTL: sec(DefaultResolverNeg), ClientSubnet: true,
		}}},
	}
	for _, name := range top.NodeNames() {
		svc := top.Nodes[name].Services[DNSService]
		w := want[name]
		if w == nil {
			if svc != nil {
				t.Errorf("%s serves no DNS but has service %+v", name, svc)
			}
			continue
		}
		if svc == nil {
			t.Fatalf("%s has no %s service", name, DNSService)
		}
		if !slices.Equal(svc.Command, []string{"labctl", "serve", "dns"}) || svc.Config == nil {
			t.Fatalf("%s: command %q, config %s", name, svc.Command, svc.Config)
		}
		var got dns.Config
		if err := json.Unmarshal(svc.Config, &got); err != nil {
			t.Fatalf("%s: config does not decode: %v\n%s", name, err, svc.Config)
		}
		if !reflect.DeepEqual(&got, w) {
			g, _ := json.MarshalIndent(got, "", "  ")
			e, _ := json.MarshalIndent(w, "", "  ")
			t.Errorf("%s: config\n got %s\nwant %s", name, g, e)
		}
		ready := "53"
		if name == "httpdns" {
			ready = "80"
		}
		if svc.Ready == nil || svc.Ready.TCP != ready || svc.Early || len(svc.After) != 0 {
			t.Errorf("%s: service %+v ready %+v, want ready tcp %s", name, svc, svc.Ready, ready)
		}
	}
	if got := top.Zones["example."].Name; got != "example." {
		t.Errorf("zone example.'s Name = %q", got)
	}

	// Validating again, expanding again and reading the expanded lab back
	// from JSON (as the state does) change nothing.
	before, _ := json.Marshal(top)
	for i := range 2 {
		if err := top.Validate(); err != nil {
			t.Fatalf("Validate #%d: %v", i+2, err)
		}
	}
	top.expandDNS()
	if after, _ := json.Marshal(top); string(after) != string(before) {
		t.Fatalf("validating or expanding again changed the lab:\n was %s\n now %s", before, after)
	}
	var back Topology
	if err := json.Unmarshal(before, &back); err != nil {
		t.Fatal(err)
	}
	if err := back.Validate(); err != nil {
		t.Fatalf("the lab read back from JSON does not validate: %v", err)
	}
	if again, _ := json.Marshal(&back); string(again) != string(before) {
		t.Fatalf("validating the lab read back from JSON changed it:\n was %s\n now %s", before, again)
	}
	// The file as written survives Marshal: parsed back, it expands to
	// the same lab. (The expanded lab is not a file: its daemons'
	// configurations are not part of the language.)
	raw, err := Decode([]byte(dnsLab), "dns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	back2, err := Parse(b, "marshalled.yaml")
	if err != nil {
		t.Fatalf("marshalled topology does not parse: %v\n%s", err, b)
	}
	if again, _ := json.Marshal(back2); string(again) != string(before) {
		t.Errorf("round trip changed the lab:\n was %s\n now %s", before, again)
	}
}

// TestDNSServiceNameAfterExpansion: a file's own service named dns on a
// node serving DNS is an error, the generated one is not.
func TestDNSServiceNameAfterExpansion(t *testing.T) {
	src := strings.Replace(dnsLab, "    httpdns: {}\n", "    httpdns: {}\n    services:\n      dns: {command: [dnsmasq, -k]}\n", 1)
	_, err := Parse([]byte(src), "dns.yaml")
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Field != "nodes.httpdns.services.dns" {
		t.Fatalf("want one problem at nodes.httpdns.services.dns, got %v", err)
	}
	// On a node that serves no DNS, dns is a name like any other.
	src = strings.Replace(dnsLab, "  s1: {kind: switch}\n", "  s1: {kind: switch}\n  web:\n    kind: host\n    services:\n      dns: {command: [dnsmasq, -k]}\n", 1)
	if _, err := Parse([]byte(src), "dns.yaml"); err != nil {
		t.Fatal(err)
	}
}

// TestDNSRecordsLines: a problem in records is reported at its line of the
// file and the column of the field, whatever comes before it in the block:
// comments, blank lines, directives, records over several lines, a
// $GENERATE.
func TestDNSRecordsLines(t *testing.T) {
	const head = `name: lines
nodes:
  ns1:
    kind: host
    interfaces: {lo: {addresses: [192.0.2.1/32]}}
zones:
  shop.example:
    ns: {ns1: ns1}
    records: |
`
	const recordsLine = 9 // the line of "records: |"
	for _, tc := range []struct {
		name, block string
		line, col   int // of the problem: the line in the file, the column in the block
		msg         string
	}{
		{"syntax on the third line", "www A 192.0.2.10\napi A 192.0.2.11\nbad A 192.0.2.999\n", recordsLine + 3, 7, `bad A A: "192.0.2.999"`},
		{"missing data", "www A 192.0.2.10\napi A 192.0.2.11\nbad CNAME\n", recordsLine + 3, 5, "the CNAME record of bad.shop.example. has no data"},
		{"owner after a multi-line record", "; the shop\n\ntxt TXT ( \"a\"\n          \"b\" )\n$TTL 60\nshop.test. A 192.0.2.1\n", recordsLine + 6, 1, "shop.test. is outside zone shop.example."},
		{"type after $GENERATE", "$GENERATE 1-3 h$ A 192.0.2.$\nwww 60 IN SOA a b 1 2 3 4 5\n", recordsLine + 2, 11, "SOA records are generated"},
		{"target of an MX", "mail MX 10 mx.shop.com.\n", recordsLine + 1, 12, "MX points to mx.shop.com."},
		{"blank continues the owner", "www A 192.0.2.10\n    CNAME www.cdn.test.\n", recordsLine + 2, 5, "www.shop.example. has a CNAME and other records"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			block := ""
			for _, l := range strings.SplitAfter(tc.block, "\n") {
				if l != "" {
					block += "      " + l
				}
			}
			_, err := Parse([]byte(head+block), "lines.yaml")
			var ps Problems
			if !errors.As(err, &ps) || len(ps) != 1 {
				t.Fatalf("want one problem, got %v", err)
			}
			p := ps[0]
			wantCol := tc.col + 6 // the block's indentation
			if p.Line != tc.line || p.Col != wantCol || p.Field != "zones.shop.example.records" || !strings.Contains(p.Msg, tc.msg) {
				t.Errorf("got %v\nwant lines.yaml:%d:%d: zones.shop.example.records: …%s…", p, tc.line, wantCol, tc.msg)
			}
		})
	}
}

func TestDNSNames(t *testing.T) {
	for _, tc := range []struct {
		s, zone, want string // want "" means an error
	}{
		{"ns1", "shop.example.", "ns1.shop.example."},
		{"ns1.nic.test", "example.", "ns1.nic.test."},
		{"ns1.nic.test.", "example.", "ns1.nic.test."},
		{"www.gslb", "shop.example.", "www.gslb.shop.example."},
		{"@", "shop.example.", "shop.example."},
		{"a.root-servers.test", ".", "a.root-servers.test."},
		{"a", ".", ""},                 // the root: a. shadows a real TLD
		{"ns1.shop.com.", "test.", ""}, // fully qualified outside the reserved TLDs
		{"NS1", "test.", ""},
		{"ns_1", "test.", "ns_1.test."},
		{"-ns", "test.", ""},
		{"a..b", "test.", ""},
		{".", "test.", ""},
		{strings.Repeat("a", 64), "test.", ""},
		{strings.Repeat("a.", 126) + "test", "test.", ""},
	} {
		got, msg := labName(tc.s, tc.zone)
		switch {
		case tc.want == "" && msg == "":
			t.Errorf("labName(%q, %q) = %q, want an error", tc.s, tc.zone, got)
		case tc.want != "" && got != tc.want:
			t.Errorf("labName(%q, %q) = %q, %q; want %q", tc.s, tc.zone, got, msg, tc.want)
		}
	}
}

// TestSchemaZoneName checks the schema's zone name pattern against the
// validator's.
func TestSchemaZoneName(t *testing.T) {
	root := loadSchema(t)
	defs := root["$defs"].(map[string]any)
	re := regexp.MustCompile(defs["zoneName"].(map[string]any)["pattern"].(string))
	for _, s := range []string{".", "test", "test.", "example", "shop.example", "shop.example.", "gslb.shop.example",
		"a-b.invalid", "_tcp.shop.example", "localhost", "shop.com", "com", "Shop.example", "shop..example",
		"-a.test", "a-.test", "a!.test", "", ".test", "testx", "xtest"} {
		_, msg := zoneName(s)
		if re.MatchString(s) != (msg == "") {
			t.Errorf("zone name %q: schema matches %v, validator says %q", s, re.MatchString(s), msg)
		}
	}
}

// TestDocsDNSExample parses the example of the DNS section of the language
// reference and checks what the text says labctl generates.
func TestDocsDNSExample(t *testing.T) {
	b, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "\n## DNS")
	if ok {
		_, rest, ok = strings.Cut(rest, "```yaml\n")
	}
	example, _, ok2 := strings.Cut(rest, "```\n")
	if !ok || !ok2 {
		t.Fatalf("%s: no yaml block under ## DNS", referencePath)
	}
	top, err := Parse([]byte(example), "docs/topology.md#dns")
	if err != nil {
		t.Fatalf("the DNS example does not parse:\n%v", err)
	}
	cfg := func(node string) dns.Config {
		t.Helper()
		svc := top.Nodes[node].Services[DNSService]
		if svc == nil {
			t.Fatalf("%s has no dns service", node)
		}
		var c dns.Config
		if err := json.Unmarshal(svc.Config, &c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, want := range []string{
		"shop.example.\t300\tIN\tSOA\tns1.shop.example. hostmaster.shop.example. 1 3600 600 86400 30",
		"gslb.shop.example.\t300\tIN\tNS\tns.gslb.shop.example.",
		"ns.gslb.shop.example.\t300\tIN\tA\t198.51.100.12",
		"www.shop.example.\t60\tIN\tCNAME\twww.gslb.shop.example.",
	} {
		if !slices.Contains(cfg("shop").Zones[1].Records, want) {
			t.Errorf("shop.example. lacks %q: %q", want, cfg("shop").Zones[1].Records)
		}
	}
	if r := cfg("dns-a").Resolver; r == nil || fmt.Sprint(r.Hints) != "[{a.root-servers.test. 198.51.100.2}]" {
		t.Errorf("dns-a's resolver %+v", r)
	}
	if g := cfg("shop").Zones[0].GSLB; g == nil || !slices.Equal(g.Default, []string{"east", "north"}) || g.Check.Fall != DefaultCheckFall {
		t.Errorf("the GSLB %+v", g)
	}
}
