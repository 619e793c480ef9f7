package runner_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"labctl/lab/internal/labtest"
	"labctl/lab/runner"
	"labctl/lab/runner/runnertest"
)

func sh(script string) runner.Cmd {
	return runner.Default.Command(context.Background(), "sh", "-c", script)
}

// A failure says which command failed, how, and what it printed.
func TestErrorCarriesCommandAndOutput(t *testing.T) {
	script := "echo to-stdout; echo to-stderr >&2; exit 3"
	want := "sh -c " + script + ": exit status 3: "

	err := sh(script).Run()
	var e *runner.Error
	if !errors.As(err, &e) {
		t.Fatalf("Run = %v (%T), want *runner.Error", err, err)
	}
	if got := err.Error(); got != want+"to-stderr" {
		t.Errorf("Run error %q, want %q", got, want+"to-stderr")
	}
	if !slices.Equal(e.Cmd, []string{"sh", "-c", script}) || e.NS != "" || e.ExitCode() != 3 {
		t.Errorf("Error %+v, exit code %d", e, e.ExitCode())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Errorf("%v does not unwrap to *exec.ExitError", err)
	}

	out, err := sh(script).Output()
	if string(out) != "to-stdout\n" || err == nil || err.Error() != want+"to-stderr" {
		t.Errorf("Output = %q, %v", out, err)
	}
	out, err = sh(script).CombinedOutput()
	if string(out) != "to-stdout\nto-stderr\n" || err == nil || err.Error() != want+"to-stdout\nto-stderr" {
		t.Errorf("CombinedOutput = %q, %v", out, err)
	}
	// Stderr the caller takes is the caller's: the error does not repeat it.
	var b strings.Builder
	if err := sh(script).SetStderr(&b).Run(); err == nil || err.Error() != "sh -c "+script+": exit status 3" || b.String() != "to-stderr\n" {
		t.Errorf("Run with stderr set = %v, stderr %q", err, b.String())
	}
	if err := sh("exit 0").Run(); err != nil {
		t.Errorf("success: %v", err)
	}
}

func TestErrorText(t *testing.T) {
	for _, c := range []struct {
		e    runner.Error
		want string
	}{
		{runner.Error{Cmd: []string{"iptables", "-L"}, NS: "lab-r1", Output: []byte("  no table\n"), Err: errors.New("exit status 1")},
			"lab-r1: iptables -L: exit status 1: no table"},
		{runner.Error{Cmd: []string{"true"}, Err: errors.New("exit status 1")}, "true: exit status 1"},
		{runner.Error{Cmd: []string{"x"}, Output: []byte(" \n")}, "x: failed"},
	} {
		if got := c.e.Error(); got != c.want {
			t.Errorf("%q, want %q", got, c.want)
		}
	}
}

// A program that is not there is an *Error too, and still exec.ErrNotFound.
func TestNotFound(t *testing.T) {
	err := runner.Default.Command(context.Background(), "no-such-program-labctl", "a").Run()
	var e *runner.Error
	if !errors.As(err, &e) || !errors.Is(err, exec.ErrNotFound) || e.ExitCode() != -1 {
		t.Fatalf("err %v", err)
	}
	if !strings.HasPrefix(err.Error(), "no-such-program-labctl a: ") {
		t.Errorf("%q", err)
	}
}

func TestEnvDirStdin(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("RUNNER_TEST_KEEP", "kept")
	out, err := sh(`echo "$RUNNER_TEST_A $RUNNER_TEST_KEEP"; pwd; cat`).
		SetEnv("RUNNER_TEST_A=first").SetEnv("RUNNER_TEST_A=second").
		SetDir(dir).SetStdin(strings.NewReader("from stdin")).Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "second kept\n" + dir + "\nfrom stdin"; string(out) != want {
		t.Errorf("got %q, want %q", out, want)
	}
}

// Process attributes accumulate, so callers add theirs without undoing
// another's.
func TestSysProcAttrAccumulates(t *testing.T) {
	c := sh("exit 0").
		SetSysProcAttr(func(a *syscall.SysProcAttr) { a.Setsid = true }).
		SetSysProcAttr(func(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL })
	if a := c.Exec().SysProcAttr; a == nil || !a.Setsid || a.Pdeathsig != syscall.SIGKILL {
		t.Errorf("SysProcAttr %+v", a)
	}
}

func TestStartWaitExtraFiles(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := sh("echo through-fd3 >&3").SetExtraFiles(w)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if c.Exec().Process == nil || c.Exec().Process.Pid <= 0 {
		t.Fatal("no process after Start")
	}
	buf := make([]byte, 64)
	n, _ := r.Read(buf)
	if err := c.Wait(); err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "through-fd3\n" || !c.Exec().ProcessState.Success() {
		t.Errorf("read %q, state %v", buf[:n], c.Exec().ProcessState)
	}
}

func TestContextKills(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := runner.Default.Command(ctx, "sleep", "10").Run()
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}
}

func TestLines(t *testing.T) {
	got, err := runner.OutputLines(sh("printf 'a\\nb\\n'"))
	if err != nil || !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("OutputLines = %q, %v", got, err)
	}
	got, err = runner.CombinedOutputLines(sh("echo a; echo b >&2; exit 1"))
	if err == nil || !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("CombinedOutputLines = %q, %v", got, err)
	}
	if got, _ := runner.OutputLines(sh("true")); got != nil {
		t.Errorf("no output: %q", got)
	}
}

// InNetns runs `ip netns exec NS cmd...` and reports errors as the
// command's in NS, not ip's.
func TestInNetnsInvocation(t *testing.T) {
	c := runner.InNetns("lab-h1").Command(context.Background(), "ping", "-c1", "10.0.0.1")
	if want := []string{"ip", "netns", "exec", "lab-h1", "ping", "-c1", "10.0.0.1"}; !slices.Equal(c.Args(), want) {
		t.Errorf("Args %q, want %q", c.Args(), want)
	}
	if c.Exec() == nil || !slices.Equal(c.Exec().Args, c.Args()) {
		t.Errorf("exec.Cmd args %q", c.Exec().Args)
	}
	if got := runner.NetnsArgv("n", "a", "b"); !slices.Equal(got, []string{"ip", "netns", "exec", "n", "a", "b"}) {
		t.Errorf("NetnsArgv %q", got)
	}

	f := &runnertest.Fake{}
	f.On("ip netns exec lab-h1 ping", runnertest.Reply{Stdout: "1 sent\n", Stderr: "unreachable\n", Err: runnertest.ExitStatus(1)})
	ns := runner.Netns(f, "lab-h1")
	out, err := ns.Command(context.Background(), "ping", "-c1", "10.0.0.1").SetEnv("A=b").Output()
	if string(out) != "1 sent\n" {
		t.Errorf("stdout %q", out)
	}
	var e *runner.Error
	if !errors.As(err, &e) || e.NS != "lab-h1" || !slices.Equal(e.Cmd, []string{"ping", "-c1", "10.0.0.1"}) || e.ExitCode() != 1 {
		t.Fatalf("err %#v", err)
	}
	if want := "lab-h1: ping -c1 10.0.0.1: exit status 1: unreachable"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	calls := f.Calls()
	if len(calls) != 1 || calls[0].String() != "ip netns exec lab-h1 ping -c1 10.0.0.1" || !slices.Equal(calls[0].Env, []string{"A=b"}) {
		t.Errorf("calls %+v", calls)
	}
	// Every way of running goes through the namespace's error.
	if err := ns.Command(context.Background(), "ping", "x").Run(); err == nil || !strings.HasPrefix(err.Error(), "lab-h1: ping x: ") {
		t.Errorf("Run: %v", err)
	}
	if _, err := ns.Command(context.Background(), "ping", "x").CombinedOutput(); err == nil || err.Error() != "lab-h1: ping x: exit status 1: 1 sent\nunreachable" {
		t.Errorf("CombinedOutput: %v", err)
	}
	c = ns.Command(context.Background(), "ping", "y")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(); err == nil || !strings.HasPrefix(err.Error(), "lab-h1: ping y: exit status 1") {
		t.Errorf("Wait: %v", err)
	}
}

// As root: the command really runs inside the namespace, with its
// /etc/netns files over /etc.
func TestInNetnsRoot(t *testing.T) {
	labtest.NeedRoot(t)
	labtest.NeedTool(t, "ip")
	ctx := context.Background()
	ns := labtest.Netns(t, "runner-test")
	etc := "/etc/netns/" + ns
	t.Cleanup(func() { os.RemoveAll(etc) })
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(etc+"/hosts", []byte("192.0.2.1 runner-test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	host, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	lines, err := runner.OutputLines(runner.InNetns(ns).Command(ctx, "sh", "-c", "readlink /proc/self/ns/net; cat /etc/hosts"))
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 || lines[0] == host || lines[1] != "192.0.2.1 runner-test" {
		t.Errorf("inside %s: %q (host %s)", ns, lines, host)
	}
	err = runner.InNetns(ns).Command(ctx, "sh", "-c", "echo bad >&2; exit 4").Run()
	if err == nil || err.Error() != ns+": sh -c echo bad >&2; exit 4: exit status 4: bad" {
		t.Errorf("error %v", err)
	}
}
