package runnertest_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"labctl/lab/runner"
	"labctl/lab/runner/runnertest"
)

func TestFakeRecords(t *testing.T) {
	var f runnertest.Fake
	ctx := context.Background()
	var c runner.Cmder = &f
	if err := c.Command(ctx, "ovs-vsctl", "add-br", "br0").SetEnv("OVS_RUNDIR=/x").SetDir("/").Run(); err != nil {
		t.Fatal(err)
	}
	if out, err := c.Command(ctx, "cat").SetStdin(strings.NewReader("body")).Output(); err != nil || len(out) != 0 {
		t.Fatalf("unscripted: %q, %v", out, err)
	}
	d := c.Command(ctx, "daemon").SetSysProcAttr(func(a *syscall.SysProcAttr) { a.Setsid = true })
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	if d.Exec() != nil {
		t.Error("a faked command has an exec.Cmd")
	}
	if err := d.Wait(); err != nil {
		t.Fatal(err)
	}
	c.Command(ctx, "built", "never-run") // not run: not recorded

	calls := f.Calls()
	if got := f.Commands(); !slices.Equal(got, []string{"ovs-vsctl add-br br0", "cat", "daemon"}) {
		t.Fatalf("commands %q", got)
	}
	if !slices.Equal(calls[0].Env, []string{"OVS_RUNDIR=/x"}) || calls[0].Dir != "/" {
		t.Errorf("call 0: %+v", calls[0])
	}
	if string(calls[1].Stdin) != "body" {
		t.Errorf("stdin %q", calls[1].Stdin)
	}
	if a := calls[2].SysProcAttr; a == nil || !a.Setsid {
		t.Errorf("attr %+v", a)
	}
}

func TestFakeScript(t *testing.T) {
	f := &runnertest.Fake{}
	f.On("ip", runnertest.Reply{Stdout: "any ip\n"}).
		On("ip netns exec ns1", runnertest.Reply{Stdout: "in ns1\n"}).
		On("ip netns exec ns1 false", runnertest.Reply{Stderr: "no\n", Err: runnertest.ExitStatus(1)}).
		On("ip netns exec ns1", runnertest.Reply{Stdout: "in ns1, again\n"})
	f.Handler = func(c runnertest.Call) runnertest.Reply { return runnertest.Reply{Stdout: "handled " + c.String()} }
	ctx := context.Background()
	for _, c := range []struct {
		argv []string
		out  string
		err  string
	}{
		{[]string{"ip", "link"}, "any ip\n", ""},
		{[]string{"ip", "netns", "exec", "ns1", "true"}, "in ns1, again\n", ""},
		{[]string{"ip", "netns", "exec", "ns10", "true"}, "any ip\n", ""}, // words, not characters
		{[]string{"ip", "netns", "exec", "ns1", "false", "-x"}, "", "ip netns exec ns1 false -x: exit status 1: no"},
		{[]string{"curl", "-s"}, "handled curl -s", ""},
	} {
		out, err := f.Command(ctx, c.argv[0], c.argv[1:]...).Output()
		if string(out) != c.out || (err == nil) != (c.err == "") || (err != nil && err.Error() != c.err) {
			t.Errorf("%q: %q, %v; want %q, %q", c.argv, out, err, c.out, c.err)
		}
	}
	_, err := f.Command(ctx, "ip", "netns", "exec", "ns1", "false").Output()
	var e *runner.Error
	if !errors.As(err, &e) || e.ExitCode() != 1 || !errors.Is(err, runnertest.ExitStatus(1)) {
		t.Errorf("err %#v", err)
	}
	// Run writes to the caller's writers.
	var out, errb strings.Builder
	err = f.Command(ctx, "ip", "netns", "exec", "ns1", "false").SetStdout(&out).SetStderr(&errb).Run()
	if err == nil || err.Error() != "ip netns exec ns1 false: exit status 1" || errb.String() != "no\n" {
		t.Errorf("Run: %v, stderr %q", err, errb.String())
	}
}

func TestFakeCancelled(t *testing.T) {
	var f runnertest.Fake
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.Command(ctx, "sleep", "1").Run(); !errors.Is(err, context.Canceled) {
		t.Errorf("err %v", err)
	}
	if len(f.Calls()) != 0 {
		t.Errorf("a command whose context ended is recorded: %q", f.Commands())
	}
}

func TestFakeConcurrent(t *testing.T) {
	var f runnertest.Fake
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.On("x", runnertest.Reply{Stdout: "y"})
			f.Command(context.Background(), "x").Output()
		}()
	}
	wg.Wait()
	if n := len(f.Calls()); n != 20 {
		t.Errorf("%d calls", n)
	}
}
