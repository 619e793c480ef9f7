package nat

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"labctl/lab/internal/labtest"
	"labctl/lab/netns"
)

var (
	pub  = netip.MustParseAddr("203.0.113.10")
	priv = netip.MustParseAddr("10.10.1.10")
)

func TestOneToOne(t *testing.T) {
	got := OneToOne(pub, priv, netip.Prefix{})
	want := []string{
		"PREROUTING -d 203.0.113.10/32 -j DNAT --to-destination 10.10.1.10",
		"OUTPUT -d 203.0.113.10/32 -j DNAT --to-destination 10.10.1.10",
		"POSTROUTING -s 10.10.1.10/32 -j SNAT --to-source 203.0.113.10",
	}
	if s := strs(got); !slices.Equal(s, want) {
		t.Fatalf("OneToOne:\n got %q\nwant %q", s, want)
	}
	for _, r := range got {
		if c := Canonical(r); !c.Equal(r) {
			t.Errorf("OneToOne gave a non-canonical rule %q (canonical %q)", r, c)
		}
	}
	// With the VPC given, traffic that stays inside it keeps its source.
	in := OneToOne(pub, priv, netip.MustParsePrefix("10.10.7.7/16"))
	if got := in[2].String(); got != "POSTROUTING -s 10.10.1.10/32 ! -d 10.10.0.0/16 -j SNAT --to-source 203.0.113.10" {
		t.Errorf("inside SNAT: %q", got)
	}
	if c := Canonical(in[2]); !c.Equal(in[2]) {
		t.Errorf("non-canonical %q (canonical %q)", in[2], c)
	}
	// IPv4-mapped addresses are IPv4.
	if s := strs(OneToOne(netip.AddrFrom16(pub.As16()), priv, netip.Prefix{})); s[0] != want[0] {
		t.Errorf("mapped address: %q", s[0])
	}
}

func TestSourceNAT(t *testing.T) {
	got := SourceNAT(netip.MustParsePrefix("10.10.1.7/24"), netip.MustParseAddr("198.51.100.1"))
	want := []string{"POSTROUTING -s 10.10.1.0/24 ! -d 10.10.1.0/24 -j SNAT --to-source 198.51.100.1"}
	if s := strs(got); !slices.Equal(s, want) {
		t.Fatalf("SourceNAT:\n got %q\nwant %q", s, want)
	}
	if c := Canonical(got[0]); !c.Equal(got[0]) {
		t.Errorf("non-canonical: %q", c)
	}
}

func TestPoolNAT(t *testing.T) {
	for _, c := range []struct{ inside, pool, want string }{
		{"100.64.0.0/24", "198.51.100.0/28", "POSTROUTING -s 100.64.0.0/24 ! -d 100.64.0.0/24 -j SNAT --to-source 198.51.100.0-198.51.100.15 --persistent"},
		{"100.64.1.9/24", "198.51.100.64/26", "POSTROUTING -s 100.64.1.0/24 ! -d 100.64.1.0/24 -j SNAT --to-source 198.51.100.64-198.51.100.127 --persistent"},
		{"100.64.0.0/10", "203.0.113.7/32", "POSTROUTING -s 100.64.0.0/10 ! -d 100.64.0.0/10 -j SNAT --to-source 203.0.113.7 --persistent"},
	} {
		got := PoolNAT(netip.MustParsePrefix(c.inside), netip.MustParsePrefix(c.pool))
		if len(got) != 1 || got[0].String() != c.want {
			t.Errorf("PoolNAT(%s, %s) = %q, want %q", c.inside, c.pool, strs(got), c.want)
		}
	}
}

func TestString(t *testing.T) {
	r := Rule{Chain: "POSTROUTING", Args: []string{"-m", "foo", "--bar", "a b", "--baz", ""}}
	if s, want := r.String(), `POSTROUTING -m foo --bar "a b" --baz ""`; s != want {
		t.Fatalf("String = %s, want %s", s, want)
	}
}

func TestCanonical(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"PREROUTING -d 203.0.113.10 -j DNAT --to-destination 10.1.1.1", "PREROUTING -d 203.0.113.10/32 -j DNAT --to-destination 10.1.1.1"},
		{"PREROUTING --destination 203.0.113.10/24 --jump RETURN", "PREROUTING -d 203.0.113.0/24 -j RETURN"},
		{"PREROUTING -p TCP -i eth0 -d 10.2.2.2 -s 10.1.1.1 --dport 80 -j DNAT --to-destination 10.3.3.3:8080",
			"PREROUTING -s 10.1.1.1/32 -d 10.2.2.2/32 -i eth0 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.3.3.3:8080"},
		{"PREROUTING -p udp -m udp --sport 53 -j RETURN", "PREROUTING -p udp -m udp --sport 53 -j RETURN"},
		{"PREROUTING -p tcp -m multiport --dports 80,443 -j RETURN", "PREROUTING -p tcp -m multiport --dports 80,443 -j RETURN"},
		{"POSTROUTING ! -d 10.0.0.0/8 -s 10.1.0.0/16 -j MASQUERADE", "POSTROUTING -s 10.1.0.0/16 ! -d 10.0.0.0/8 -j MASQUERADE"},
		{"PREROUTING -p tcp ! --dport 22 -j RETURN", "PREROUTING -p tcp -m tcp ! --dport 22 -j RETURN"},
		{"PREROUTING -j DNAT --to-destination 10.1.1.1 -d 1.2.3.4", "PREROUTING -j DNAT --to-destination 10.1.1.1 -d 1.2.3.4"}, // after -j: the target's
	} {
		in := mustParse(t, c.in)
		if got := Canonical(in).String(); got != c.want {
			t.Errorf("Canonical(%s)\n got %s\nwant %s", c.in, got, c.want)
		}
	}
}

func mustParse(t *testing.T, s string) Rule {
	tok, err := split(s)
	if err != nil {
		t.Fatal(err)
	}
	return Rule{Chain: tok[0], Args: tok[1:]}
}

func TestSplitStrip(t *testing.T) {
	for _, c := range []struct {
		line   string
		args   []string
		marked bool
	}{
		// iptables-nft quotes every comment.
		{`-A PREROUTING -d 203.0.113.10/32 -m comment --comment "labctl.region" -j DNAT --to-destination 10.10.1.10`,
			[]string{"-d", "203.0.113.10/32", "-j", "DNAT", "--to-destination", "10.10.1.10"}, true},
		// iptables-legacy does not.
		{`-A POSTROUTING -s 10.0.0.0/24 -m comment --comment labctl.region -j MASQUERADE`,
			[]string{"-s", "10.0.0.0/24", "-j", "MASQUERADE"}, true},
		{`-A POSTROUTING -m comment --comment "labctl.regional" -j RETURN`,
			[]string{"-m", "comment", "--comment", "labctl.regional", "-j", "RETURN"}, false},
		{`-A POSTROUTING -m comment --comment "a \"b\" c" -j RETURN`,
			[]string{"-m", "comment", "--comment", `a "b" c`, "-j", "RETURN"}, false},
		{`-A POSTROUTING -j RETURN`, []string{"-j", "RETURN"}, false},
	} {
		tok, err := split(c.line)
		if err != nil {
			t.Fatal(err)
		}
		args, marked := stripMark(tok[2:], "labctl.region")
		if !slices.Equal(args, c.args) || marked != c.marked {
			t.Errorf("%s: got %q %v, want %q %v", c.line, args, marked, c.args, c.marked)
		}
	}
	if _, err := split(`-A X -m comment --comment "open`); err == nil {
		t.Error("unterminated quote accepted")
	}
}

func TestLCS(t *testing.T) {
	a, b := strings.Split("ABCBDAB", ""), strings.Split("BDCABA", "")
	inA, inB := lcs(len(a), len(b), func(i, j int) bool { return a[i] == b[j] })
	var sa, sb string
	for i, ok := range inA {
		if ok {
			sa += a[i]
		}
	}
	for j, ok := range inB {
		if ok {
			sb += b[j]
		}
	}
	if sa != sb || len(sa) != 4 {
		t.Fatalf("lcs: %q %q", sa, sb)
	}
}

func TestValidation(t *testing.T) {
	for _, m := range []string{"", "a b", `a"b`, strings.Repeat("x", 256)} {
		if checkMark(m) == nil {
			t.Errorf("mark %q accepted", m)
		}
	}
	if err := checkMark("labctl.region"); err != nil {
		t.Error(err)
	}
	for _, r := range []Rule{
		{Chain: "", Args: []string{"-j", "RETURN"}},
		{Chain: "POSTROUTING"},
		{Chain: "POSTROUTING", Args: []string{"-m", "comment", "--comment", "x", "-j", "RETURN"}},
		{Chain: "POSTROUTING", Args: []string{"-A", "POSTROUTING", "-j", "RETURN"}},
	} {
		if checkRule(r) == nil {
			t.Errorf("rule %q accepted", r)
		}
	}
	// Bad marks and rules fail before any namespace is entered.
	if _, err := Sync("nat-test-none", "bad mark", nil); err == nil {
		t.Error("Sync accepted a bad mark")
	}
	_, err := Sync("nat-test-none", "labctl.x", []Rule{{Chain: "POSTROUTING", Args: []string{"--comment", "x"}}})
	if err == nil || !strings.Contains(err.Error(), "nat-test-none") || !strings.Contains(err.Error(), "POSTROUTING --comment x") {
		t.Errorf("Sync of a rule with a comment: %v", err)
	}
}

func strs(rs []Rule) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}

// --- root only ---

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// dump is `iptables -t nat -S` of ns: every rule, marked or not.
func dump(t *testing.T, ns string) []string {
	t.Helper()
	return strings.Split(strings.TrimSpace(run(t, "ip", "netns", "exec", ns, "iptables", "-t", "nat", "-S")), "\n")
}

func mustSync(t *testing.T, ns, mark string, want []Rule, wantChanged bool) {
	t.Helper()
	changed, err := Sync(ns, mark, want)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if changed != wantChanged {
		t.Fatalf("Sync reported changed=%v, want %v", changed, wantChanged)
	}
	got, err := List(ns, mark)
	if err != nil {
		t.Fatal(err)
	}
	exp := sortByChain(want, []string{"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"})
	if !slices.EqualFunc(got, exp, Rule.Equal) {
		t.Fatalf("List after Sync:\n got %q\nwant %q", strs(got), strs(exp))
	}
}

const mark = "labctl.nattest"

func TestSyncRoot(t *testing.T) {
	labtest.NeedRoot(t)
	labtest.NeedTool(t, "ip", "iptables")
	ns := labtest.Netns(t, "nat-test-sync")

	if got, err := List(ns, mark); err != nil || len(got) != 0 {
		t.Fatalf("List of a fresh namespace: %q %v", strs(got), err)
	}
	a := OneToOne(pub, priv, netip.Prefix{})
	b := OneToOne(netip.MustParseAddr("203.0.113.11"), netip.MustParseAddr("10.10.1.11"), netip.Prefix{})
	snat := SourceNAT(netip.MustParsePrefix("10.10.1.0/24"), netip.MustParseAddr("198.51.100.1"))
	cgn := PoolNAT(netip.MustParsePrefix("100.64.0.0/24"), netip.MustParsePrefix("198.51.100.0/28"))
	want := slices.Concat(a, snat, cgn)
	mustSync(t, ns, mark, want, true)
	mustSync(t, ns, mark, want, false)
	if got, _ := List(ns, mark); !slices.EqualFunc(got, want, Rule.Equal) {
		t.Fatalf("List = %q, want exactly %q", strs(got), strs(want))
	}

	// A rule of the host and one of another lab are never touched.
	run(t, "ip", "netns", "exec", ns, "iptables", "-t", "nat", "-A", "POSTROUTING", "-j", "RETURN")
	other := OneToOne(netip.MustParseAddr("203.0.113.50"), netip.MustParseAddr("10.20.0.5"), netip.Prefix{})
	mustSync(t, ns, "labctl.other", other, true)

	// A different set: all of ours replaced, the rest stays.
	mustSync(t, ns, mark, b, true)
	mustSync(t, ns, mark, b, false)
	if d := dump(t, ns); !slices.Contains(d, "-A POSTROUTING -j RETURN") {
		t.Fatalf("unmarked rule gone:\n%s", strings.Join(d, "\n"))
	}
	if got, err := List(ns, "labctl.other"); err != nil || !slices.EqualFunc(got, other, Rule.Equal) {
		t.Fatalf("other lab's rules: %q %v", strs(got), err)
	}

	// Removing one entry of want deletes that rule and nothing else.
	want = slices.Concat(a, b, snat) // PREROUTING a, b; OUTPUT a, b; ...
	mustSync(t, ns, mark, want, true)
	before := dump(t, ns)
	gone := a[0] // the first of two marked PREROUTING rules
	mustSync(t, ns, mark, slices.Concat(a[1:], b, snat), true)
	after := dump(t, ns)
	removed := "-A PREROUTING -d 203.0.113.10/32 -m comment --comment \"" + mark + "\" -j DNAT --to-destination 10.10.1.10"
	if i := slices.Index(before, removed); i < 0 || !slices.Equal(slices.Delete(slices.Clone(before), i, i+1), after) {
		t.Fatalf("removing %q:\nbefore:\n%s\nafter:\n%s", gone, strings.Join(before, "\n"), strings.Join(after, "\n"))
	}
	// Putting it back inserts it where it was (before b's PREROUTING rule).
	mustSync(t, ns, mark, want, true)
	if d := dump(t, ns); !slices.Equal(d, before) {
		t.Fatalf("re-adding:\n got\n%s\nwant\n%s", strings.Join(d, "\n"), strings.Join(before, "\n"))
	}

	// A bare address is made canonical; the second Sync has nothing to do.
	bare := []Rule{{Chain: "PREROUTING", Args: []string{"-p", "tcp", "-d", "203.0.113.20", "--dport", "80", "-j", "DNAT", "--to-destination", "10.10.1.20:8080"}}}
	if _, err := Sync(ns, mark, bare); err != nil {
		t.Fatal(err)
	}
	mustSync(t, ns, mark, []Rule{Canonical(bare[0])}, false)

	// Duplicates: the extra one is deleted (by position), in want's order.
	dup := slices.Concat(snat, b[2:], snat)
	mustSync(t, ns, mark, dup, true)
	mustSync(t, ns, mark, dup[:2], true)
	mustSync(t, ns, mark, dup[:2], false)

	// Nothing wanted: all of ours go, the rest stays.
	mustSync(t, ns, mark, nil, true)
	if d := dump(t, ns); !slices.Contains(d, "-A POSTROUTING -j RETURN") {
		t.Fatalf("unmarked rule gone:\n%s", strings.Join(d, "\n"))
	}
	if got, _ := List(ns, "labctl.other"); len(got) != len(other) {
		t.Fatalf("other lab's rules: %q", strs(got))
	}
}

func TestSyncErrorsRoot(t *testing.T) {
	labtest.NeedRoot(t)
	labtest.NeedTool(t, "ip", "iptables")
	ns := labtest.Netns(t, "nat-test-err")

	bad := Rule{Chain: "NOSUCHCHAIN", Args: []string{"-j", "RETURN"}}
	_, err := Sync(ns, mark, []Rule{bad})
	if err == nil || !strings.Contains(err.Error(), ns) || !strings.Contains(err.Error(), bad.String()) {
		t.Fatalf("Sync of a rule for a missing chain: %v", err)
	}
	bad = Rule{Chain: "PREROUTING", Args: []string{"-d", "203.0.113.10/32", "-j", "DNAT", "--to-destination", "not-an-address"}}
	_, err = Sync(ns, mark, []Rule{bad})
	if err == nil || !strings.Contains(err.Error(), ns) || !strings.Contains(err.Error(), bad.String()) {
		t.Fatalf("Sync of a bad rule: %v", err)
	}
	t.Log(err)

	// A rule iptables prints differently is an error, not endless churn.
	odd := Rule{Chain: "PREROUTING", Args: []string{"-d", "203.0.113.10/32", "-j", "DNAT", "--to", "10.10.1.10"}}
	if _, err := Sync(ns, mark, []Rule{odd}); err == nil || !strings.Contains(err.Error(), "prints") {
		t.Fatalf("Sync of a non-canonical rule: %v", err)
	}

	if _, err := List("nat-test-missing-ns", mark); !errors.Is(err, netns.ErrNotExist) {
		t.Fatalf("List of a missing namespace: %v", err)
	}
	if _, err := Sync("nat-test-missing-ns", mark, nil); !errors.Is(err, netns.ErrNotExist) {
		t.Fatalf("Sync of a missing namespace: %v", err)
	}
}

// TestOneToOneTrafficRoot builds client — gw — server, puts a floating IP
// 203.0.113.10 for the server's 10.99.0.2 on gw and checks both ways:
// the server sees the client's own address, and the client sees the
// server's outbound connection come from the floating IP.
func TestOneToOneTrafficRoot(t *testing.T) {
	labtest.NeedRoot(t)
	labtest.NeedTool(t, "ip", "iptables")
	client, gw, server := labtest.Netns(t, "nat-test-c"), labtest.Netns(t, "nat-test-gw"), labtest.Netns(t, "nat-test-s")
	run(t, "ip", "link", "add", "c0", "netns", client, "type", "veth", "peer", "name", "g0", "netns", gw)
	run(t, "ip", "link", "add", "g1", "netns", gw, "type", "veth", "peer", "name", "s0", "netns", server)
	for _, c := range [][]string{
		{client, "addr add 198.51.100.2/24 dev c0", "link set c0 up", "link set lo up", "route add default via 198.51.100.1"},
		{gw, "addr add 198.51.100.1/24 dev g0", "addr add 203.0.113.10/32 dev g0", "addr add 10.99.0.1/24 dev g1",
			"link set g0 up", "link set g1 up", "link set lo up"},
		{server, "addr add 10.99.0.2/24 dev s0", "link set s0 up", "link set lo up", "route add default via 10.99.0.1"},
	} {
		for _, cmd := range c[1:] {
			run(t, append([]string{"ip", "-n", c[0]}, strings.Fields(cmd)...)...)
		}
	}
	if err := netns.Do(gw, func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) }); err != nil {
		t.Fatal(err)
	}
	floating, private := netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("10.99.0.2")
	mustSync(t, gw, mark, OneToOne(floating, private, netip.Prefix{}), true)

	// Inbound: client -> 203.0.113.10 reaches the server, which sees the
	// client's address.
	if got := peerSeen(t, server, client, "203.0.113.10"); got != "198.51.100.2" {
		t.Fatalf("server saw %s, want 198.51.100.2", got)
	}
	// Outbound: server -> client leaves as the floating IP.
	if got := peerSeen(t, client, server, "198.51.100.2"); got != floating.String() {
		t.Fatalf("client saw %s, want %s", got, floating)
	}
	// gw's own traffic to the floating IP (OUTPUT DNAT) reaches the server.
	if got := peerSeen(t, server, gw, "203.0.113.10"); got == "" {
		t.Fatal("gw's own connection saw nothing")
	}
	// Without the rules the floating IP is gw's own address again.
	mustSync(t, gw, mark, nil, true)
	var l net.Listener
	if err := netns.Do(server, func() (err error) { l, err = net.Listen("tcp4", ":8080"); return }); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			io.WriteString(c, "hi")
			c.Close()
		}
	}()
	if err := dialIn(client, "203.0.113.10:8080"); err == nil {
		t.Fatal("the floating IP still reaches the server after the rules are gone")
	}
}

// peerSeen listens on port 8080 in lns, connects from dns to dst:8080 and
// returns the address the listener saw the connection come from.
func peerSeen(t *testing.T, lns, dns, dst string) string {
	t.Helper()
	var l net.Listener
	if err := netns.Do(lns, func() (err error) { l, err = net.Listen("tcp4", ":8080"); return }); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	seen := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			seen <- ""
			return
		}
		defer c.Close()
		seen <- c.RemoteAddr().(*net.TCPAddr).IP.String()
		io.WriteString(c, "hi")
	}()
	if err := dialIn(dns, dst+":8080"); err != nil {
		t.Fatalf("connect from %s to %s: %v", dns, dst, err)
	}
	select {
	case s := <-seen:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("listener saw no connection")
		return ""
	}
}

// dialIn connects from ns to addr and reads the greeting.
func dialIn(ns, addr string) error {
	var c net.Conn
	err := netns.Do(ns, func() (err error) { c, err = net.DialTimeout("tcp4", addr, 2*time.Second); return })
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 2)
	_, err = io.ReadFull(c, b)
	return err
}
