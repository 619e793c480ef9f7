package firewall_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"labctl/lab/component"
	"labctl/lab/engine"
	"labctl/lab/firewall"
	"labctl/lab/internal/labtest"
	"labctl/lab/netns"
	"labctl/lab/plan"
	"labctl/lab/topology"
)

func TestMain(m *testing.M) {
	component.Register(firewall.Part{})
	os.Exit(m.Run())
}

func load(t *testing.T, lab string) *topology.Topology {
	t.Helper()
	b, err := os.ReadFile("testdata/fw.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src := regexp.MustCompile(`(?m)^name: fwtest$`).ReplaceAllString(string(b), "name: "+lab)
	tp, err := topology.Parse([]byte(src), "fw.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

func TestPlanCarriesTheRuleset(t *testing.T) {
	tp := load(t, "fwtest")
	p := plan.Compute(tp, nil)
	steps := p.Phase(plan.PhaseFilters)
	if len(steps) != 1 {
		t.Fatalf("want one firewall step, got %v", steps)
	}
	s := steps[0]
	if s.Part != "firewall" || s.Op != firewall.OpSync || s.Node != "fw" {
		t.Fatalf("step %+v", s)
	}
	pl := s.Payload.(*firewall.Payload)
	for _, want := range []string{
		"policy drop;",
		`ct state established,related counter accept comment "established"`,
		`iifname "in" counter accept comment "inside"`,
		`ct state new ip daddr 203.0.113.10 tcp dport 443 counter accept comment "web"`,
		`ct state new meta l4proto icmp counter accept comment "ping"`,
		`counter drop comment "dropped"`,
	} {
		if !strings.Contains(pl.Script, want) {
			t.Errorf("script lacks %q:\n%s", want, pl.Script)
		}
	}
	if got := s.String(); got != "~ firewall fw: 6 rules, inside in" {
		t.Errorf("String() = %q", got)
	}
	// The plan is plain data: it survives JSON (what `labctl plan --format
	// json` prints and what a step read back carries).
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back plan.Step
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if m, _ := back.Payload.(map[string]any); m["hash"] != pl.Hash {
		t.Errorf("payload after JSON: %v", back.Payload)
	}
	// The same rule set observed: nothing to do; another: replaced.
	obs := &plan.Observed{Namespaces: map[string]*plan.NSState{
		"fwtest-fw": {Parts: map[string]string{"firewall": pl.Hash}},
	}}
	fw := firewall.Part{}
	if st := fw.Steps(tp, obs); len(st) != 0 {
		t.Errorf("rule set in place, still planned: %v", st)
	}
	obs.Namespaces["fwtest-fw"].Parts["firewall"] = "0123"
	if st := fw.Steps(tp, obs); len(st) != 1 || st[0].Reason != "changed" {
		t.Errorf("changed rule set: %v", st)
	}
	// A node that lost its block has its table removed.
	delete(tp.Nodes["fw"].Parts, firewall.Block)
	if st := fw.Steps(tp, obs); len(st) != 1 || st[0].Op != firewall.OpRemove {
		t.Errorf("removed block: %v", st)
	}
}

// Validate does not change the topology: the blocks are still there and
// proxy-arp's sysctls appear only in the expanded copy.
func TestExpandDoesNotMutate(t *testing.T) {
	src := strings.Replace(mustRead(t), "inside: [in]", "inside: [in]\n      proxy-arp: true", 1)
	tp, err := topology.Decode([]byte(src), "fw.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(tp.Nodes["fw"].Sysctls) != 0 {
		t.Fatalf("Validate changed the topology: %v", tp.Nodes["fw"].Sysctls)
	}
	x, err := tp.Expand()
	if err != nil {
		t.Fatal(err)
	}
	if got := x.Nodes["fw"].Sysctls["net.ipv4.conf.out.proxy_arp"]; got != "1" {
		t.Errorf("expanded sysctls %v", x.Nodes["fw"].Sysctls)
	}
	if _, ok := x.Nodes["fw"].Sysctls["net.ipv4.conf.in.proxy_arp"]; ok {
		t.Error("proxy ARP on an inside interface")
	}
	if firewall.Of(x.Nodes["fw"]) == nil {
		t.Error("the expanded copy lost the block")
	}
}

func mustRead(t *testing.T) string {
	b, err := os.ReadFile("testdata/fw.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Bad blocks are reported at their place in the file, all at once.
func TestCheck(t *testing.T) {
	for _, c := range []struct{ from, to, want string }{
		{"inside: [in]", "inside: [in, eth9]", `fw.yaml:16:20: nodes.fw.firewall.inside[1]: "eth9" is not an interface of this node (it has in, out)`},
		{"inside: [in]", "inside: [in, out]", `fw.yaml:16:7: nodes.fw.firewall.inside: every interface is inside: a firewall needs an outside one`},
		{"to: [203.0.113.10]", "to: [203.0.113.300]", `nodes.fw.firewall.allow[0].to[0]: "203.0.113.300" is not an IPv4 address or CIDR`},
		{"proto: tcp, ports: [443]", "proto: sctp, ports: [443]", `nodes.fw.firewall.allow[0].proto: unknown protocol "sctp" (one of tcp, udp, icmp)`},
		{"proto: tcp, ports: [443]", "proto: tcp, ports: [0]", `nodes.fw.firewall.allow[0].ports[0]: 0 is not a port (1-65535)`},
		{"{name: ping, proto: icmp}", "{name: ping, proto: icmp, ports: [1]}", `nodes.fw.firewall.allow[1].ports: ports need proto: tcp or udp`},
		{"inside: [in]", "inside: [in]\n      deny: [all]", `fw.yaml:17:7: deny: unknown field "deny"`},
		{"kind: firewall", "kind: router", `nodes.fw.firewall: only a node of kind firewall has a firewall block (this one is a router)`},
	} {
		src := strings.Replace(mustRead(t), c.from, c.to, 1)
		_, err := topology.Parse([]byte(src), "fw.yaml")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s → %s:\n got %v\nwant %s", c.from, c.to, err, c.want)
		}
	}
	// A firewall node without its block.
	src := regexp.MustCompile(`(?s)    firewall:\n.*?  server:`).ReplaceAllString(mustRead(t), "  server:")
	if _, err := topology.Parse([]byte(src), "fw.yaml"); err == nil || !strings.Contains(err.Error(), "nodes.fw.kind: a firewall node needs a firewall block") {
		t.Errorf("no block: %v", err)
	}
}

// listen accepts connections inside a namespace and echoes what it reads.
func listen(t *testing.T, ns, addr string) {
	t.Helper()
	var l net.Listener
	if err := netns.Do(ns, func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64)
				n, _ := c.Read(buf)
				c.Write(buf[:n])
			}()
		}
	}()
}

// echo dials addr from a namespace and returns the error of a round trip.
func echo(ns, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := netns.Dial(ctx, ns, &net.Dialer{}, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("order")); err != nil {
		return err
	}
	buf := make([]byte, 5)
	_, err = c.Read(buf)
	return err
}

// The rule set in the kernel: the allowed port passes, the other one is
// dropped and counted, the inside may connect out, a second up changes
// nothing, and down leaves nothing.
func TestFirewallEndToEnd(t *testing.T) {
	labtest.NeedRoot(t)
	labtest.NeedTool(t, "nft")
	lab := "fwtest"
	tp := load(t, lab)
	e := engine.New(engine.Options{})
	ctx := context.Background()
	if _, err := e.Up(ctx, tp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Down(context.Background(), lab) })

	server, client := topology.Namespace(lab, "server"), topology.Namespace(lab, "client")
	listen(t, server, "203.0.113.10:443")
	listen(t, server, "203.0.113.10:22")
	listen(t, client, "198.51.100.2:8080")

	before, err := firewall.Read(ctx, lab, "fw")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := echo(client, "203.0.113.10:443", 2*time.Second); err != nil {
			t.Fatalf("allowed port 443: %v", err)
		}
	}
	if err := echo(client, "203.0.113.10:22", 700*time.Millisecond); err == nil {
		t.Fatal("port 22 is not allowed, yet a connection passed")
	}
	if err := echo(server, "198.51.100.2:8080", 2*time.Second); err != nil {
		t.Fatalf("a connection from inside: %v", err)
	}
	after, err := firewall.Read(ctx, lab, "fw")
	if err != nil {
		t.Fatal(err)
	}
	delta := func(name string) uint64 {
		a, ok1 := after.Counter(name)
		b, ok2 := before.Counter(name)
		if !ok1 || !ok2 {
			t.Fatalf("no counter %q in %+v", name, after.Rules)
		}
		return a - b
	}
	if d := delta("web"); d != 3 {
		t.Errorf("web counted %d new connections, want 3", d)
	}
	if d := delta(firewall.Dropped); d < 1 {
		t.Errorf("the SYN to port 22 was not counted as dropped (%d)", d)
	}
	if d := delta(firewall.Inside); d != 1 {
		t.Errorf("inside counted %d new connections, want 1", d)
	}
	if d := delta(firewall.Established); d < 10 {
		t.Errorf("established counted %d packets, want the replies of 4 connections", d)
	}

	// Converged: a second up plans nothing.
	res, err := e.Up(ctx, load(t, lab))
	if err != nil {
		t.Fatal(err)
	}
	if res.Changes != 0 {
		t.Errorf("second up changed %d things: %v", res.Changes, res.Plan.Steps)
	}
	// inspect shows the counters.
	ins, err := e.Inspect(lab)
	if err != nil {
		t.Fatal(err)
	}
	if len(ins.Parts) != 1 || ins.Parts[0].Part != "firewall" || len(ins.Parts[0].Rows) != 6 {
		t.Fatalf("inspect parts: %+v", ins.Parts)
	}
	// The file changes: port 443 is no longer allowed; up replaces the set.
	src := strings.Replace(mustRead(t), "ports: [443]", "ports: [8443]", 1)
	tp2, err := topology.Parse([]byte(src), "fw.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if res, err = e.Up(ctx, tp2); err != nil {
		t.Fatal(err)
	}
	if res.Changes != 1 {
		t.Errorf("changed rule: %d changes: %v", res.Changes, res.Plan.Steps)
	}
	if err := echo(client, "203.0.113.10:443", 700*time.Millisecond); err == nil {
		t.Error("443 still passes after the rule moved to 8443")
	}
	if err := e.Down(ctx, lab); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{server, client, topology.Namespace(lab, "fw")} {
		if netns.Exists(ns) {
			t.Errorf("%s left after down", ns)
		}
	}
}
