package bgp

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"labctl/lab/component"
	"labctl/lab/internal/labtest"
	"labctl/lab/topology"
)

// bgpLab is three routers in two ASes. a1 and a2 (AS 64500, export own)
// are an iBGP pair: a1 reaches a2's loopback by a static route (the IGP),
// and a2 lists the address a1's session comes from. a2 peers with b1 (AS
// 64501) over their link.
const bgpLab = `
name: bgp-unit
nodes:
  a1:
    kind: router
    interfaces:
      lo: {addresses: [192.0.2.1/32]}
      eth0: {addresses: [10.0.0.1/30]}
    routes: [{to: 192.0.2.2/32, via: 10.0.0.2}]
    bgp:
      asn: 64500
      networks: [203.0.113.0/24]
      export: own
      neighbors:
        - {address: 192.0.2.2, asn: 64500}
      timers: {hold: 9s}
  a2:
    kind: router
    interfaces:
      lo: {addresses: [192.0.2.2/32]}
      eth0: {addresses: [10.0.0.2/30]}
      eth1: {addresses: [198.51.100.1/30]}
    bgp:
      asn: 64500
      networks: [203.0.113.0/24, 192.0.2.0/24]
      export: own
      neighbors:
        - {address: 10.0.0.1, asn: 64500, next-hop-self: true}
        - {address: 198.51.100.2, asn: 64501}
  b1:
    kind: router
    interfaces:
      eth0: {addresses: [198.51.100.2/30]}
    bgp:
      asn: 64501
      router-id: 192.0.2.99
      networks: [198.18.0.0/15]
      neighbors:
        - {address: 198.51.100.1, asn: 64500}
links:
  - endpoints: [a1:eth0, a2:eth0]
  - endpoints: [a2:eth1, b1:eth0]
`

func TestBGPExpands(t *testing.T) {
	top, err := topology.Parse([]byte(bgpLab), "bgp.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sec := func(n int) topology.Duration { return topology.Duration(time.Duration(n) * time.Second) }
	want := map[string]*Config{
		"a1": {ASN: 64500, RouterID: "10.0.0.1", Networks: []string{"203.0.113.0/24"}, Export: ExportOwn,
			Neighbors: []*Peer{{Address: "192.0.2.2", ASN: 64500, Node: "a2", Local: "10.0.0.1"}},
			Timers:    &Timers{ConnectRetry: sec(DefaultRetry), Hold: sec(9), Keepalive: sec(DefaultKeepalive)},
			Own:       []string{"192.0.2.0/24", "203.0.113.0/24"}},
		"a2": {ASN: 64500, RouterID: "10.0.0.2", Networks: []string{"203.0.113.0/24", "192.0.2.0/24"}, Export: ExportOwn,
			Neighbors: []*Peer{
				// a1 knows a2 by its loopback: the session starts from there.
				{Address: "10.0.0.1", ASN: 64500, NextHopSelf: true, Node: "a1", Local: "192.0.2.2"},
				{Address: "198.51.100.2", ASN: 64501, Node: "b1", Local: "198.51.100.1"},
			},
			Timers: &Timers{ConnectRetry: sec(DefaultRetry), Hold: sec(DefaultHold), Keepalive: sec(DefaultKeepalive)},
			Own:    []string{"192.0.2.0/24", "203.0.113.0/24"}},
		"b1": {ASN: 64501, RouterID: "192.0.2.99", Networks: []string{"198.18.0.0/15"}, Export: ExportAll,
			Neighbors: []*Peer{{Address: "198.51.100.1", ASN: 64500, Node: "a2", Local: "198.51.100.2"}},
			Timers:    &Timers{ConnectRetry: sec(DefaultRetry), Hold: sec(DefaultHold), Keepalive: sec(DefaultKeepalive)}},
	}
	for _, name := range []string{"a1", "a2", "b1"} {
		n := top.Nodes[name]
		w := want[name]
		w.API = "unix://" + Socket("bgp-unit", name)
		if !reflect.DeepEqual(Of(n), w) {
			g, _ := json.Marshal(Of(n))
			e, _ := json.Marshal(w)
			t.Errorf("%s: resolved bgp\n got %s\nwant %s", name, g, e)
		}
		svc := n.Services[Service]
		if svc == nil {
			t.Fatalf("%s has no %s service: %v", name, Service, slices.Collect(func(yield func(string) bool) {
				for k := range n.Services {
					if !yield(k) {
						return
					}
				}
			}))
		}
		if !slices.Equal(svc.Command, []string{"labctl", "serve", "bgp"}) || svc.Config == nil {
			t.Fatalf("%s: command %q, config %s", name, svc.Command, svc.Config)
		}
		var cfg Config
		if err := json.Unmarshal(svc.Config, &cfg); err != nil {
			t.Fatalf("%s: config does not decode: %v\n%s", name, err, svc.Config)
		}
		if !reflect.DeepEqual(&cfg, w) {
			t.Errorf("%s: config decodes to %+v, want %+v", name, cfg, *w)
		}
		if svc.Ready == nil || svc.Ready.File != Socket("bgp-unit", name) || svc.Early || len(svc.After) != 0 {
			t.Errorf("%s: service %+v ready %+v", name, svc, svc.Ready)
		}
	}

	// Validating the expanded lab again passes and changes nothing: the
	// speaker's service and the defaults are not mistaken for the file's.
	before, _ := json.Marshal(top)
	if err := top.Validate(); err != nil {
		t.Fatalf("second Validate: %v", err)
	}
	if err := top.Validate(); err != nil {
		t.Fatalf("third Validate: %v", err)
	}
	expand(top)
	after, _ := json.Marshal(top)
	if string(before) != string(after) {
		t.Fatalf("validating again changed the lab:\n was %s\n now %s", before, after)
	}
	// a1's static route is what makes a2's loopback an iBGP neighbor.
	noRoute := strings.Replace(bgpLab, "    routes: [{to: 192.0.2.2/32, via: 10.0.0.2}]\n", "", 1)
	if _, err := topology.Parse([]byte(noRoute), "bgp.yaml"); err == nil || !strings.Contains(err.Error(), "nodes.a1.bgp.neighbors[0].address: iBGP neighbor 192.0.2.2 is on no subnet connected to node a1") {
		t.Errorf("without the static route: %v", err)
	}
	again, err := topology.Parse([]byte(bgpLab), "bgp.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(again); string(b) != string(before) {
		t.Fatal("two parses of one file differ")
	}
}

// TestBGPServiceNameAfterExpansion: a file's own service named bgp is an
// error, the speaker's is not.
func TestBGPServiceNameAfterExpansion(t *testing.T) {
	src := strings.Replace(bgpLab, "  b1:\n    kind: router\n    interfaces:\n      eth0: {addresses: [198.51.100.2/30]}\n    bgp:", "  b1:\n    kind: router\n    interfaces:\n      eth0: {addresses: [198.51.100.2/30]}\n    services:\n      bgp: {command: [bird]}\n    bgp:", 1)
	_, err := topology.Parse([]byte(src), "bgp.yaml")
	var ps topology.Problems
	if !errors.As(err, &ps) || len(ps) != 1 || ps[0].Field != "nodes.b1.services.bgp" {
		t.Fatalf("want one problem at nodes.b1.services.bgp, got %v", err)
	}
}

func TestBGPSocketPathLimit(t *testing.T) {
	old := topology.RunDir
	t.Cleanup(func() { topology.RunDir = old })
	topology.RunDir = "/" + strings.Repeat("d", 100)
	_, err := topology.Parse([]byte(bgpLab), "bgp.yaml")
	var ps topology.Problems
	if !errors.As(err, &ps) {
		t.Fatalf("want topology.Problems, got %v", err)
	}
	var fields []string
	for _, p := range ps {
		fields = append(fields, p.Field)
		if !strings.Contains(p.Msg, "socket path") {
			t.Errorf("unexpected problem %v", p)
		}
	}
	if want := []string{"nodes.a1.bgp", "nodes.a2.bgp", "nodes.b1.bgp"}; !slices.Equal(fields, want) {
		t.Errorf("fields %q, want %q", fields, want)
	}
}

// TestBGPSocketFits: with the name limits and the default topology.RunDir, every
// speaker's socket fits.
func TestBGPSocketFits(t *testing.T) {
	if l := len(Socket(strings.Repeat("l", topology.MaxLabName), strings.Repeat("n", topology.MaxNodeName))); l > topology.MaxSocketPath {
		t.Fatalf("longest socket path is %d bytes", l)
	}
}

// TestInternetTopology checks the example internet, when it is there.
func TestInternetTopology(t *testing.T) {
	const file = "../../topologies/internet.yaml"
	if _, err := os.Stat(file); err != nil {
		t.Skip(err)
	}
	top, err := topology.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range top.NodeNames() {
		n := top.Nodes[name]
		if Of(n) == nil {
			continue
		}
		if n.Services[Service] == nil || Of(n).RouterID == "" || Of(n).API == "" {
			t.Errorf("%s: not expanded: %+v", name, Of(n))
		}
		for _, nb := range Of(n).Neighbors {
			if nb.Node == "" || Of(top.Nodes[nb.Node]) == nil {
				t.Errorf("%s: neighbor %s resolves to %q", name, nb.Address, nb.Node)
			}
		}
		if (Of(n).Export == ExportOwn) != (Of(n).Own != nil) {
			t.Errorf("%s: export %s with own %v", name, Of(n).Export, Of(n).Own)
		}
	}
	if err := top.Validate(); err != nil {
		t.Fatalf("second Validate: %v", err)
	}
}

// TestDocsBGPExample parses the example of "Routers that speak BGP" in the
// language reference and checks what the text says labctl resolves.
func TestDocsBGPExample(t *testing.T) {
	b, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "## Routers that speak BGP")
	if ok {
		_, rest, ok = strings.Cut(rest, "```yaml\n")
	}
	example, _, ok2 := strings.Cut(rest, "```\n")
	if !ok || !ok2 {
		t.Fatalf("%s: no yaml block under Routers that speak BGP", referencePath)
	}
	top, err := topology.Parse([]byte(example), "docs/topology.md#bgp")
	if err != nil {
		t.Fatalf("the BGP example does not parse:\n%v", err)
	}
	a1, a2 := Of(top.Nodes["a1"]), Of(top.Nodes["a2"])
	if a1.RouterID != "10.0.0.1" || a2.RouterID != "10.0.0.2" {
		t.Errorf("router IDs %s, %s", a1.RouterID, a2.RouterID)
	}
	for _, x := range []*Config{a1, a2} {
		if !slices.Equal(x.Own, []string{"203.0.113.0/24"}) {
			t.Errorf("own %v", x.Own)
		}
	}
	if cfg := top.Nodes["a1"].Services[Service].Config; !strings.HasPrefix(string(cfg), `{"asn":64500,"router_id":"10.0.0.1",`) {
		t.Errorf("a1's config %s", cfg)
	}
}

const referencePath = "../../docs/topology.md"

func TestMain(m *testing.M) {
	component.Register(Part{})
	os.Exit(m.Run())
}

// The bgp and cgnat blocks' malformed files fail with exactly the problems
// recorded beside them.
func TestBadBlocks(t *testing.T) {
	labtest.BadFiles(t, "testdata/bad/*.yaml", 30, func(f string) error { _, err := topology.Load(f); return err })
}
