// Package labtest holds the helpers that the tests of several labctl
// packages share: skipping without root or a tool, polling until a
// condition holds, free loopback ports, per-run names, scratch network
// namespaces and a labctl binary built for the test.
//
// It is imported by _test.go files only. It uses the standard library and
// nothing of labctl, so that the tests of any package (lab/netns's
// included) may import it without a cycle.
package labtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Poll is how often WaitFor and WaitState test their condition.
const Poll = 50 * time.Millisecond

// NeedRoot skips the test unless it runs as root. The skip message is
// "needs root", or msg when given (to say what root is needed for).
func NeedRoot(t testing.TB, msg ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if len(msg) > 0 {
			t.Skip(strings.Join(msg, " "))
		}
		t.Skip("needs root")
	}
}

// NeedTool skips the test, with "needs NAME", at the first of names that
// is not on PATH.
func NeedTool(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("needs %s", n)
		}
	}
}

// RequireTool fails the test at the first of names that is not on PATH:
// for the tests that scripts/setup.sh provides the tools of, where a
// missing one is a broken machine rather than a reason to skip.
func RequireTool(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Fatalf("%s is not installed (scripts/setup.sh installs it)", n)
		}
	}
}

// WaitFor tests cond every Poll until it holds and returns how long that
// took; if timeout passes first the test fails with "WHAT: not within
// TIMEOUT".
func WaitFor(t testing.TB, timeout time.Duration, cond func() bool, what string) time.Duration {
	t.Helper()
	return WaitEvery(t, timeout, Poll, cond, what)
}

// WaitEvery is WaitFor testing cond every interval instead of every Poll.
func WaitEvery(t testing.TB, timeout, interval time.Duration, cond func() bool, what string) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(interval)
	}
	return time.Since(start)
}

// WaitState is WaitFor for a condition that also describes the state it
// saw: the failure message ends with the last description, as
// "WHAT: not within TIMEOUT (last: STATE)".
func WaitState(t testing.TB, timeout time.Duration, cond func() (bool, string), what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (last: %s)", what, timeout, state)
		}
		time.Sleep(Poll)
	}
}

// FreeAddr returns an address "127.0.0.1:PORT" whose TCP port was free a
// moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", FreePort(t))
}

// FreePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// LabName is a lab name of this test run: "t", tag, then the PID modulo
// 100000, short enough for the interface names derived from it. Tests
// that give each of their labs its own tag never meet, neither do runs.
func LabName(tag string) string {
	return fmt.Sprintf("t%s%d", tag, os.Getpid()%100000)
}

// TempName is prefix, "-" and the PID: a name of this test run for a
// namespace or file that parallel runs must not share.
func TempName(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, os.Getpid())
}

// Netns creates the network namespace TempName(prefix) with `ip netns add`,
// deletes it when the test ends, and returns its name. It fails the test
// when the namespace cannot be made.
func Netns(t testing.TB, prefix string) string {
	t.Helper()
	name := TempName(prefix)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	return name
}

// NetnsDir is where named network namespaces are mounted.
const NetnsDir = "/run/netns"

// Namespaces lists, sorted, the named network namespaces whose names start
// with prefix (a lab's are "LAB-"). Without NetnsDir there are none.
func Namespaces(prefix string) []string {
	ents, _ := os.ReadDir(NetnsDir)
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// BuildLabctlAt builds labctl (cmd/labctl) into the file bin. Its error
// carries the compiler's output.
func BuildLabctlAt(bin string) error {
	out, err := exec.Command("go", "build", "-o", bin, "labctl/cmd/labctl").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	return nil
}

// BuildLabctl builds labctl into dir/labctl and returns its path; the test
// fails with "build: ERROR" when it does not build.
func BuildLabctl(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "labctl")
	if err := BuildLabctlAt(bin); err != nil {
		t.Fatalf("build: %v", err)
	}
	return bin
}

// BadFiles runs a corpus of malformed files: each file matching glob must
// fail to load with exactly the text of the .err file beside it (a final
// newline added), and there must be at least min of them.
func BadFiles(t *testing.T, glob string, min int, load func(file string) error) {
	t.Helper()
	files, err := filepath.Glob(glob)
	if err != nil || len(files) < min {
		t.Fatalf("corpus %s: %d files (want at least %d), %v", glob, len(files), min, err)
	}
	for _, file := range files {
		err := load(file)
		if err == nil {
			t.Errorf("%s loaded without error", file)
			continue
		}
		want, rerr := os.ReadFile(strings.TrimSuffix(file, filepath.Ext(file)) + ".err")
		if rerr != nil {
			t.Fatal(rerr)
		}
		if got := err.Error() + "\n"; got != string(want) {
			t.Errorf("%s:\n got %s\nwant %s", file, got, want)
		}
	}
}
