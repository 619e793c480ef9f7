package doctor

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"labctl/lab/internal/labtest"
	"labctl/lab/netns"
	"labctl/lab/runner"
)

func fakeLookPath(t *testing.T, missing ...string) {
	t.Helper()
	old := lookPath
	lookPath = func(name string) (string, error) {
		if slices.Contains(missing, name) {
			return "", exec.ErrNotFound
		}
		return "/usr/bin/" + name, nil
	}
	t.Cleanup(func() { lookPath = old })
}

func TestMissingBinaryHasFix(t *testing.T) {
	fakeLookPath(t, "tcpdump", "ovs-vswitchd")
	for _, b := range binaries {
		c := bounded(context.Background(), b.probe())
		switch b.name {
		case "tcpdump":
			if c.OK || !c.Required || c.Fix != "apt-get install -y tcpdump" {
				t.Errorf("tcpdump: %+v", c)
			}
		case "ovs-vswitchd":
			if c.OK || c.Required || c.Fix != "apt-get install -y openvswitch-switch" ||
				!strings.Contains(c.Detail, "needed by cloud region labs") {
				t.Errorf("ovs-vswitchd: %+v", c)
			}
		default:
			if !c.OK || c.Fix != "" || c.Detail != "/usr/bin/"+b.name {
				t.Errorf("%s: %+v", b.name, c)
			}
		}
		if c.Group != "binaries" {
			t.Errorf("%s: group %q", b.name, c.Group)
		}
	}
}

func TestOnlyIPAndTcpdumpRequired(t *testing.T) {
	for _, b := range binaries {
		if b.required != (b.name == "ip" || b.name == "tcpdump") {
			t.Errorf("%s: required=%v", b.name, b.required)
		}
	}
}

func TestFindBinaryLooksInSbin(t *testing.T) {
	t.Setenv("PATH", "/nonexistent")
	if _, err := os.Stat("/usr/sbin/ip"); err != nil {
		t.Skip("no /usr/sbin/ip here")
	}
	if p, err := findBinary("ip"); err != nil || !strings.HasSuffix(p, "/ip") {
		t.Fatalf("findBinary(ip) = %q, %v", p, err)
	}
	if _, err := findBinary("no-such-program-labctl"); !errors.Is(err, exec.ErrNotFound) {
		t.Fatalf("missing program: %v", err)
	}
}

func TestBoundedTimesOut(t *testing.T) {
	old := checkTimeout
	checkTimeout = 50 * time.Millisecond
	t.Cleanup(func() { checkTimeout = old })
	release := make(chan struct{})
	defer close(release)
	p := probe{
		Check: Check{Name: "slow", Group: "kernel", Required: true, Fix: "wait"},
		run: func(_ context.Context, c *Check) error {
			<-release // ignores ctx, like a stuck netlink call
			return nil
		},
	}
	start := time.Now()
	c := bounded(context.Background(), p)
	if c.OK || !strings.Contains(c.Detail, "timed out") || c.Fix != "wait" {
		t.Fatalf("got %+v", c)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("took %s", d)
	}
}

func TestBoundedCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := bounded(ctx, binaries[0].probe())
	if c.OK {
		t.Fatalf("cancelled check passed: %+v", c)
	}
}

func TestNetemMissingText(t *testing.T) {
	d := netemMissing(errors.New("no such file or directory"))
	for _, want := range []string{"no netem here", "no such file or directory", "delay and loss"} {
		if !strings.Contains(d, want) {
			t.Errorf("%q lacks %q", d, want)
		}
	}
}

// TestRunShape needs no root: without it the kernel checks just fail.
func TestRunShape(t *testing.T) {
	checks := Run(context.Background())
	seen := map[string]bool{}
	groups := []string{}
	for _, c := range checks {
		if seen[c.Name] {
			t.Errorf("duplicate check %q", c.Name)
		}
		seen[c.Name] = true
		if c.Detail == "" {
			t.Errorf("%s: empty detail", c.Name)
		}
		if c.OK && c.Fix != "" {
			t.Errorf("%s: fix on a passing check", c.Name)
		}
		if len(groups) == 0 || groups[len(groups)-1] != c.Group {
			groups = append(groups, c.Group)
		}
	}
	// The CLI prints a group header whenever the group changes.
	if !slices.Equal(groups, []string{"system", "kernel", "binaries"}) {
		t.Errorf("groups not contiguous: %v", groups)
	}
	for _, n := range []string{"root", "netns", "veth", "bridge", "vxlan", "macvlan", "tbf", "netem", "nat", "openvswitch", "ipv6", "ip", "tcpdump"} {
		if !seen[n] {
			t.Errorf("no %q check", n)
		}
	}
}

// snapshot is what must not change on the host: links and named namespaces.
func snapshot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "-br", "link").Output()
	if err != nil {
		t.Fatalf("ip -br link: %v", err)
	}
	names, err := netns.List()
	if err != nil {
		t.Fatal(err)
	}
	return string(out) + "\n--- /run/netns\n" + strings.Join(names, "\n")
}

func TestRunLeavesNothing(t *testing.T) {
	labtest.NeedRoot(t)
	// Other packages' root tests may change the host meanwhile; a leak by
	// doctor shows up on every attempt, their noise hardly ever three times.
	var before, after string
	for attempt := 0; attempt < 3; attempt++ {
		before = snapshot(t)
		checks := Run(context.Background())
		after = snapshot(t)
		if strings.Contains(after, "ldoc-") {
			t.Fatalf("probe link left on the host:\n%s", after)
		}
		if before == after {
			for _, c := range checks {
				if c.Group == "kernel" && c.Required && !c.OK {
					t.Errorf("required kernel check failed as root: %+v", c)
				}
			}
			return
		}
	}
	t.Fatalf("host changed across Run:\nbefore:\n%s\nafter:\n%s", before, after)
}

// TestExecInTempNamespace backs nat.Probe's assumption: a child started
// by the runner from inside netns.Temp runs in the temp namespace, not the
// host's.
func TestExecInTempNamespace(t *testing.T) {
	labtest.NeedRoot(t)
	host, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	var thread, child string
	err = netns.Temp(func() error {
		var err error
		if thread, err = os.Readlink("/proc/thread-self/ns/net"); err != nil {
			return err
		}
		out, err := runner.Default.Command(context.Background(), "readlink", "/proc/self/ns/net").Output()
		child = strings.TrimSpace(string(out))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if thread == host || child != thread {
		t.Fatalf("host %s, temp thread %s, child %s", host, thread, child)
	}
}
