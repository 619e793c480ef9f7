package nat

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"labctl/lab/runner"
)

// hostNS creates a namespace for the tests of this file and deletes it
// when the test ends.
func hostNS(t *testing.T, what string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, b := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("needs %s", b)
		}
	}
	ns := fmt.Sprintf("nat-host-%s-%d", what, os.Getpid())
	ctx := context.Background()
	if err := runner.Default.Command(ctx, "ip", "netns", "add", ns).Run(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { runner.Default.Command(ctx, "ip", "netns", "del", ns).Run() })
	return ns
}

func filterRules(t *testing.T, ns string) []string {
	t.Helper()
	lines, err := runner.OutputLines(runner.InNetns(ns).Command(context.Background(), "iptables", "-S"))
	if err != nil {
		t.Fatal(err)
	}
	var rules []string
	for _, l := range lines {
		if strings.HasPrefix(l, "-A ") {
			rules = append(rules, l)
		}
	}
	return rules
}

func TestDropAllRoot(t *testing.T) {
	ns := hostNS(t, "drop")
	ctx := context.Background()
	in := runner.InNetns(ns)
	if err := in.Command(ctx, "ip", "link", "set", "lo", "up").Run(); err != nil {
		t.Fatal(err)
	}
	_, noPing := exec.LookPath("ping")
	ping := func() error { return in.Command(ctx, "ping", "-c1", "-W1", "127.0.0.1").Run() }
	if noPing == nil {
		if err := ping(); err != nil {
			t.Fatalf("before DropAll: %v", err)
		}
	}
	// A rule of the host's stays below ours and survives UndropAll.
	if err := in.Command(ctx, "iptables", "-A", "INPUT", "-i", "lo", "-j", "ACCEPT").Run(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := DropAll(ns, "lo"); err != nil {
			t.Fatal(err)
		}
	}
	// Each DropAll inserts at the top: FORWARD -i, then -o above it.
	want := []string{
		"-A INPUT -i lo -j DROP", "-A INPUT -i lo -j DROP", "-A INPUT -i lo -j ACCEPT",
		"-A FORWARD -o lo -j DROP", "-A FORWARD -i lo -j DROP", "-A FORWARD -o lo -j DROP", "-A FORWARD -i lo -j DROP",
		"-A OUTPUT -o lo -j DROP", "-A OUTPUT -o lo -j DROP",
	}
	if got := filterRules(t, ns); !slices.Equal(got, want) {
		t.Fatalf("after DropAll twice:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if noPing == nil {
		if err := ping(); err == nil {
			t.Fatal("lo still passes packets after DropAll")
		}
	}
	if err := UndropAll(ns, "lo"); err != nil {
		t.Fatal(err)
	}
	if got := filterRules(t, ns); !slices.Equal(got, []string{"-A INPUT -i lo -j ACCEPT"}) {
		t.Fatalf("after UndropAll: %q", got)
	}
	if err := UndropAll(ns, "lo"); err != nil {
		t.Fatalf("UndropAll with nothing to undo: %v", err)
	}
	if noPing == nil {
		if err := ping(); err != nil {
			t.Fatalf("after UndropAll: %v", err)
		}
	}
}

func TestDropAllErrors(t *testing.T) {
	for _, iface := range []string{"", "-j", "a b"} {
		if err := DropAll("nat-host-none", iface); err == nil || !strings.Contains(err.Error(), "bad name") {
			t.Errorf("DropAll(%q) = %v", iface, err)
		}
	}
	if os.Geteuid() == 0 {
		if err := DropAll(fmt.Sprintf("nat-host-missing-%d", os.Getpid()), "eth0"); err == nil {
			t.Error("DropAll in a missing namespace succeeded")
		}
	}
}

func TestProbeRoot(t *testing.T) {
	hostNS(t, "probe") // root and iptables, nothing else: Probe makes its own
	ipt, _ := exec.LookPath("iptables")
	before, _ := runner.Default.Command(context.Background(), ipt, "-w", "3", "-t", "nat", "-S").Output()
	version, err := Probe(context.Background(), ipt)
	if err != nil {
		t.Fatalf("Probe: %v (version %q)", err, version)
	}
	if !strings.HasPrefix(version, "iptables v") {
		t.Errorf("version %q", version)
	}
	after, _ := runner.Default.Command(context.Background(), ipt, "-w", "3", "-t", "nat", "-S").Output()
	if string(before) != string(after) {
		t.Errorf("the host's nat table changed:\n%s\n->\n%s", before, after)
	}
	if _, err := Probe(context.Background(), "/nonexistent/iptables"); err == nil || !strings.Contains(err.Error(), "/nonexistent/iptables -w 3 -t nat -L -n: ") {
		t.Errorf("Probe of a missing binary: %v", err)
	}
}
