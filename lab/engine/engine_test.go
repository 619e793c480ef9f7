package engine_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"labctl/lab/engine"
	"labctl/lab/internal/labtest"
	"labctl/lab/netns"
	"labctl/lab/plan"
	"labctl/lab/state"
	"labctl/lab/topology"
)

// labctlBin is a labctl built for these tests: services run it, and the
// crash tests kill it.
var labctlBin string

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "labctl-test")
		if err != nil {
			panic(err)
		}
		labctlBin = filepath.Join(dir, "labctl")
		if err := labtest.BuildLabctlAt(labctlBin); err != nil {
			panic("build labctl: " + err.Error())
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// whyRoot is the skip message of the tests that build real labs.
const whyRoot = "needs root: builds real namespaces"

const sampleTmpl = `name: %s
nodes:
  h1:
    kind: host
    interfaces:
      eth0: {addresses: [10.0.1.10/24, "fd00:1::10/64"]}
    routes:
      - {to: default, via: 10.0.1.1}
      - {to: default6, via: "fd00:1::1"}
    hosts:
      10.0.2.10: [h2.lab.test]
  s1:
    kind: switch
  r1:
    kind: router
    interfaces:
      eth0: {addresses: [10.0.1.1/24, "fd00:1::1/64"]}
      eth1: {addresses: [10.0.2.1/24, "fd00:2::1/64"]}
  h2:
    kind: host
    interfaces:
      eth0: {addresses: [%s, "fd00:2::10/64"]}
    routes:
      - {to: default, via: 10.0.2.1}
      - {to: default6, via: "fd00:2::1"}
    services:
      echo:
        command: [labctl, serve, echo, --listen, ":7"]
        ready: {tcp: 7, timeout: 5s}
links:
  - endpoints: [h1:eth0, s1:p1]
  - endpoints: [r1:eth0, s1:p2]
  - endpoints: [r1:eth1, h2:eth0]
`

func sample(t *testing.T, lab, h2addr string) *topology.Topology {
	t.Helper()
	tp, err := topology.Parse([]byte(fmt.Sprintf(sampleTmpl, lab, h2addr)), lab+".yaml")
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

func newEngine(retain bool) *engine.Engine {
	return engine.New(engine.Options{Self: labctlBin, Retain: retain})
}

// rootSnapshot is everything of the root namespace labctl must not change.
func rootSnapshot(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"-d", "link", "show"}, {"addr", "show"}, {"route", "show", "table", "all"},
		{"-6", "route", "show", "table", "all"}, {"rule", "show"}, {"-6", "rule", "show"},
	} {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v", args, err)
		}
		b.Write(out)
	}
	return b.String()
}

// leftovers lists what of lab still exists: namespaces, state, processes.
func leftovers(t *testing.T, lab string) []string {
	t.Helper()
	var out []string
	for _, n := range labtest.Namespaces(lab + "-") {
		out = append(out, "netns "+n)
	}
	if _, err := os.Stat(state.Dir(lab)); err == nil {
		out = append(out, "state "+state.Dir(lab))
	}
	if ents, _ := os.ReadDir(plan.EtcNetns); len(ents) > 0 {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), lab+"-") {
				out = append(out, "etc "+e.Name())
			}
		}
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		env, err := os.ReadFile("/proc/" + p.Name() + "/environ")
		if err == nil && strings.Contains(string(env), "LABCTL_LAB="+lab+"\x00") {
			out = append(out, "process "+p.Name())
		}
	}
	return out
}

// downClean takes lab down and fails unless nothing of it is left.
func downClean(t *testing.T, e *engine.Engine, lab, when string) {
	t.Helper()
	if err := e.Down(context.Background(), lab); err != nil {
		t.Fatalf("down %s: %v", when, err)
	}
	if l := leftovers(t, lab); len(l) > 0 {
		t.Fatalf("down %s left: %v", when, l)
	}
}

func inNS(t *testing.T, ns string, argv ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...).CombinedOutput()
	return string(out), err
}

func TestUpConvergeDown(t *testing.T) {
	labtest.NeedRoot(t, whyRoot)
	ctx := context.Background()
	before := rootSnapshot(t)
	lab := labtest.LabName("c")
	e := newEngine(false)
	t.Cleanup(func() { e.Down(ctx, lab) })

	res, err := e.Up(ctx, sample(t, lab, "10.0.2.10/24"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Changes == 0 {
		t.Fatal("a fresh up made no changes")
	}
	h1 := topology.Namespace(lab, "h1")
	for _, dst := range []string{"10.0.2.10", "fd00:2::10", "h2.lab.test"} {
		if out, err := inNS(t, h1, "ping", "-c1", "-W2", dst); err != nil {
			t.Fatalf("ping %s from h1 through r1: %v\n%s", dst, err, out)
		}
	}
	// The service answers through the router.
	if out, err := inNS(t, h1, "bash", "-c", "exec 3<>/dev/tcp/10.0.2.10/7; echo hi >&3; head -c3 <&3"); err != nil || out != "hi\n" {
		t.Fatalf("echo service: %q %v", out, err)
	}

	res, err = e.Up(ctx, sample(t, lab, "10.0.2.10/24"))
	if err != nil || res.Changes != 0 {
		t.Fatalf("unchanged re-up: %d changes (%v), plan:\n%s", res.Changes, err, res.Plan)
	}

	res, err = e.Up(ctx, sample(t, lab, "10.0.2.20/24"))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Plan.String(); !strings.Contains(got, "- addr h2:eth0 10.0.2.10/24") || !strings.Contains(got, "+ addr h2:eth0 10.0.2.20/24") || len(res.Plan.Phase(plan.PhaseAddresses)) != 2 {
		t.Fatalf("converge after an address change planned:\n%s", got)
	}
	if out, err := inNS(t, h1, "ping", "-c1", "-W2", "10.0.2.20"); err != nil {
		t.Fatalf("ping new address: %v\n%s", err, out)
	}
	if out, err := inNS(t, h1, "ping", "-c1", "-W1", "10.0.2.10"); err == nil {
		t.Fatalf("old address still answers:\n%s", out)
	}

	downClean(t, e, lab, "after converge")
	if after := rootSnapshot(t); after != before {
		t.Fatalf("root namespace changed:\n--- before\n%s\n--- after\n%s", before, after)
	}
	// Down of a lab that is gone is fine.
	if err := e.Down(ctx, lab); err != nil {
		t.Fatalf("second down: %v", err)
	}
}

func TestTwoLabsSideBySide(t *testing.T) {
	labtest.NeedRoot(t, whyRoot)
	ctx := context.Background()
	a, b := labtest.LabName("a"), labtest.LabName("b")
	e := newEngine(false)
	t.Cleanup(func() { e.Down(ctx, a); e.Down(ctx, b) })
	for _, lab := range []string{a, b} {
		if _, err := e.Up(ctx, sample(t, lab, "10.0.2.10/24")); err != nil {
			t.Fatal(err)
		}
	}
	downClean(t, e, a, "of one lab beside another")
	if out, err := inNS(t, topology.Namespace(b, "h1"), "ping", "-c1", "-W2", "10.0.2.10"); err != nil {
		t.Fatalf("lab %s broken by down of %s: %v\n%s", b, a, err, out)
	}
	st, err := e.Status()
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, s := range st {
		if s.Name == a {
			t.Fatalf("status still lists %s", a)
		}
		if s.Name == b {
			found = s.Healthy && s.Nodes == 4 && s.Running == 1
		}
	}
	if !found {
		t.Fatalf("status of %s not healthy: %+v", b, st)
	}
}

func TestFailedUpRollsBack(t *testing.T) {
	labtest.NeedRoot(t, whyRoot)
	ctx := context.Background()
	lab := labtest.LabName("f")
	bad := sample(t, lab, "10.0.2.10/24")
	// Valid in the file, refused by the kernel: fails half way through up.
	bad.Nodes["r1"].Sysctls = map[string]topology.Scalar{"net.ipv4.no_such_sysctl": "1"}
	e := newEngine(false)
	t.Cleanup(func() { e.Down(ctx, lab) })
	if _, err := e.Up(ctx, bad); err == nil {
		t.Fatal("up with a bad sysctl succeeded")
	}
	if l := leftovers(t, lab); len(l) > 0 {
		t.Fatalf("rollback left: %v", l)
	}

	// With retain the half-made lab stays, and down removes it.
	if _, err := newEngine(true).Up(ctx, bad); err == nil {
		t.Fatal("up with a bad sysctl succeeded")
	}
	if !netns.Exists(topology.Namespace(lab, "h1")) {
		t.Fatal("--retain kept nothing")
	}
	downClean(t, e, lab, "after a retained failure")
}

func TestCollisionChangesNothing(t *testing.T) {
	labtest.NeedRoot(t, whyRoot)
	ctx := context.Background()
	lab := labtest.LabName("x")
	foreign := topology.Namespace(lab, "r1")
	if err := netns.Create(foreign); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Delete(foreign) })
	e := newEngine(false)
	t.Cleanup(func() { e.Down(ctx, lab) })
	_, err := e.Up(ctx, sample(t, lab, "10.0.2.10/24"))
	if !errors.Is(err, engine.ErrCollision) {
		t.Fatalf("up over a foreign namespace: %v", err)
	}
	for _, n := range labtest.Namespaces(lab + "-") {
		if n != foreign {
			t.Fatalf("refused up still created %s", n)
		}
	}
	// Down does not touch what the lab does not own.
	if err := e.Down(ctx, lab); err != nil {
		t.Fatal(err)
	}
	if !netns.Exists(foreign) {
		t.Fatal("down removed a namespace the lab did not make")
	}
}

func TestDownWithoutState(t *testing.T) {
	labtest.NeedRoot(t, whyRoot)
	ctx := context.Background()
	lab := labtest.LabName("s")
	e := newEngine(false)
	t.Cleanup(func() { e.Down(ctx, lab) })
	if _, err := e.Up(ctx, sample(t, lab, "10.0.2.10/24")); err != nil {
		t.Fatal(err)
	}
	// Lose the state: down must still find the lab by its marks.
	if err := os.RemoveAll(state.Dir(lab)); err != nil {
		t.Fatal(err)
	}
	downClean(t, e, lab, "without state")
}

// TestKill9DuringUp kills `labctl up` at several points and checks that
// `labctl down` then leaves nothing of the lab.
func TestKill9DuringUp(t *testing.T) {
	labtest.NeedRoot(t, whyRoot)
	dir := t.TempDir()
	before := rootSnapshot(t)
	tp, err := topology.Generate(labtest.LabName("k"), "linear", 40, 0)
	if err != nil {
		t.Fatal(err)
	}
	tp.Nodes["h1"].Services = map[string]*topology.Service{
		"echo": {Command: []string{"labctl", "serve", "echo", "--listen", ":7"}, Ready: &topology.Ready{TCP: "7"}},
	}
	b, err := topology.Marshal(tp)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "lab.yaml")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, delay := range []time.Duration{0, 2 * time.Millisecond, 10 * time.Millisecond, 30 * time.Millisecond, 60 * time.Millisecond, 120 * time.Millisecond, 400 * time.Millisecond} {
		t.Run(delay.String(), func(t *testing.T) {
			up := exec.Command(labctlBin, "up", "-t", file)
			if err := up.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(delay)
			up.Process.Signal(syscall.SIGKILL)
			up.Wait()
			out, err := exec.Command(labctlBin, "down", tp.Name).CombinedOutput()
			if err != nil {
				t.Fatalf("down after kill -9 at %s: %v\n%s", delay, err, out)
			}
			if l := leftovers(t, tp.Name); len(l) > 0 {
				t.Fatalf("down after kill -9 at %s left: %v", delay, l)
			}
		})
	}
	if after := rootSnapshot(t); after != before {
		t.Fatalf("root namespace changed:\n--- before\n%s\n--- after\n%s", before, after)
	}
}
