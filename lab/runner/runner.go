// Package runner is the one way labctl runs external programs: every
// command of labctl's own code (ip, curl, ovs-vsctl, ovsdb-tool, the
// PostgreSQL tools, the servers it supervises, labctl itself) is made by a
// Cmder, so a command is built, run inside a lab namespace and reported
// the same way everywhere, and unit tests swap in runnertest.Fake instead
// of starting processes.
//
// A failed command returns an *Error holding the command line, the
// namespace it ran in and what it printed on the way.
package runner

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// Cmder makes commands.
type Cmder interface {
	// Command returns the command name with args. A local command is
	// killed when ctx ends (os/exec's CommandContext); a daemon that must
	// outlive its caller's context is given context.Background().
	Command(ctx context.Context, name string, args ...string) Cmd
}

// Cmd is one command, set up with the Set methods (each returns the
// command, so they chain) and then run once: with Run, Output or
// CombinedOutput, or with Start and Wait.
type Cmd interface {
	// Run runs the command to its end. Unless SetStderr was called, what
	// the command writes on stderr goes into the *Error of a failure.
	Run() error
	// Output runs the command and returns its stdout; unless SetStderr
	// was called, stderr goes into the *Error of a failure.
	Output() ([]byte, error)
	// CombinedOutput runs the command and returns stdout and stderr
	// interleaved, which a failure's *Error also carries.
	CombinedOutput() ([]byte, error)
	// Start starts the command, whose stderr is not collected (a daemon
	// is given its log with SetStderr); Wait waits for its end.
	Start() error
	Wait() error

	// SetEnv adds variables to labctl's own environment, which the
	// command otherwise inherits as it is (of two entries of one name the
	// later wins).
	SetEnv(env ...string) Cmd
	// SetDir sets the working directory (default: labctl's).
	SetDir(dir string) Cmd
	SetStdin(r io.Reader) Cmd
	SetStdout(w io.Writer) Cmd
	SetStderr(w io.Writer) Cmd
	// SetSysProcAttr edits the process attributes: f gets those set so far
	// (zero at first), so callers add what they need (a session, a user,
	// a death signal) without undoing one another.
	SetSysProcAttr(f func(*syscall.SysProcAttr)) Cmd
	// SetExtraFiles gives the child these open files as fds 3, 4, ...
	SetExtraFiles(files ...*os.File) Cmd

	// Args is the command line that runs, a namespace's `ip netns exec NS`
	// included.
	Args() []string
	// Exec is the escape hatch for callers that supervise the process
	// they started: the underlying *exec.Cmd of a local command, for its
	// Process (PID, signals) and ProcessState. It is nil for commands not
	// run by os/exec (runnertest.Fake), so only code that needs a real
	// process uses it, and only after Start; everything else goes through
	// the methods above.
	Exec() *exec.Cmd
}

// Error is a command that could not start or did not succeed.
type Error struct {
	Cmd    []string // the command line, without a namespace's `ip netns exec NS`
	NS     string   // the namespace it ran in; "" for labctl's own
	Output []byte   // what it printed: stderr, or stdout and stderr for CombinedOutput
	Err    error    // *exec.ExitError, or why it did not start
}

// Error reads "NS: cmd args...: exit status 1: output" (without "NS: "
// outside a namespace, without ": output" when it printed nothing).
func (e *Error) Error() string {
	var b strings.Builder
	if e.NS != "" {
		b.WriteString(e.NS)
		b.WriteString(": ")
	}
	b.WriteString(strings.Join(e.Cmd, " "))
	b.WriteString(": ")
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString("failed")
	}
	if out := bytes.TrimSpace(e.Output); len(out) > 0 {
		b.WriteString(": ")
		b.Write(out)
	}
	return b.String()
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// ExitCode is the command's exit status, -1 if it did not exit by itself
// (it did not start or was killed by a signal).
func (e *Error) ExitCode() int {
	var ee interface{ ExitCode() int }
	if errors.As(e.Err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// Local runs commands on this machine with os/exec.
type Local struct{}

// Default is the Cmder of labctl's own commands.
var Default Cmder = Local{}

// Command implements Cmder.
func (Local) Command(ctx context.Context, name string, args ...string) Cmd {
	if ctx == nil {
		ctx = context.Background()
	}
	return &localCmd{cmd: exec.CommandContext(ctx, name, args...), argv: append([]string{name}, args...)}
}

type localCmd struct {
	cmd  *exec.Cmd
	argv []string
	// errOut collects stderr for the error when the caller did not take it.
	errOut *bytes.Buffer
}

func (c *localCmd) fail(err error, out []byte) error {
	if err == nil {
		return nil
	}
	return &Error{Cmd: c.argv, Output: out, Err: err}
}

// takeStderr collects stderr for the error unless the caller has a use
// for it.
func (c *localCmd) takeStderr() {
	if c.cmd.Stderr == nil {
		c.errOut = &bytes.Buffer{}
		c.cmd.Stderr = c.errOut
	}
}

func (c *localCmd) stderr() []byte {
	if c.errOut == nil {
		return nil
	}
	return c.errOut.Bytes()
}

func (c *localCmd) Run() error {
	c.takeStderr()
	return c.fail(c.cmd.Run(), c.stderr())
}

func (c *localCmd) Output() ([]byte, error) {
	if c.cmd.Stdout != nil {
		return nil, c.fail(errors.New("exec: Stdout already set"), nil)
	}
	var out bytes.Buffer
	c.cmd.Stdout = &out
	c.takeStderr()
	err := c.cmd.Run()
	return out.Bytes(), c.fail(err, c.stderr())
}

func (c *localCmd) CombinedOutput() ([]byte, error) {
	out, err := c.cmd.CombinedOutput()
	return out, c.fail(err, out)
}

// Start leaves stderr alone: a daemon's would grow without end.
func (c *localCmd) Start() error { return c.fail(c.cmd.Start(), nil) }

func (c *localCmd) Wait() error { return c.fail(c.cmd.Wait(), c.stderr()) }

func (c *localCmd) SetEnv(env ...string) Cmd {
	if c.cmd.Env == nil {
		c.cmd.Env = os.Environ()
	}
	c.cmd.Env = append(c.cmd.Env, env...)
	return c
}

func (c *localCmd) SetDir(dir string) Cmd           { c.cmd.Dir = dir; return c }
func (c *localCmd) SetStdin(r io.Reader) Cmd        { c.cmd.Stdin = r; return c }
func (c *localCmd) SetStdout(w io.Writer) Cmd       { c.cmd.Stdout = w; return c }
func (c *localCmd) SetStderr(w io.Writer) Cmd       { c.cmd.Stderr = w; return c }
func (c *localCmd) SetExtraFiles(f ...*os.File) Cmd { c.cmd.ExtraFiles = f; return c }

func (c *localCmd) SetSysProcAttr(f func(*syscall.SysProcAttr)) Cmd {
	if c.cmd.SysProcAttr == nil {
		c.cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	f(c.cmd.SysProcAttr)
	return c
}

func (c *localCmd) Args() []string  { return c.argv }
func (c *localCmd) Exec() *exec.Cmd { return c.cmd }

// NetnsArgv is the command line that runs argv inside the named
// namespace: `ip netns exec NS argv...`, which also bind-mounts the
// namespace's /etc/netns/NS files over /etc and remounts /sys, so the
// command sees the node as its services do; it execs argv, so the PID is
// the command's.
func NetnsArgv(ns string, argv ...string) []string {
	return append([]string{"ip", "netns", "exec", ns}, argv...)
}

// InNetns is the Cmder of commands run inside the named lab namespace
// (NetnsArgv) on this machine.
func InNetns(ns string) Cmder { return Netns(Default, ns) }

// Netns is base's Cmder of commands run inside the named namespace
// through `ip netns exec`. Their errors name the namespace and the
// command, not ip.
func Netns(base Cmder, ns string) Cmder { return netnsCmder{base: base, ns: ns} }

type netnsCmder struct {
	base Cmder
	ns   string
}

func (n netnsCmder) Command(ctx context.Context, name string, args ...string) Cmd {
	argv := append([]string{name}, args...)
	full := NetnsArgv(n.ns, argv...)
	return &netnsCmd{Cmd: n.base.Command(ctx, full[0], full[1:]...), ns: n.ns, argv: argv}
}

// netnsCmd is base's command with its errors told in the namespace's
// terms; every method returns the wrapper, not the base command.
type netnsCmd struct {
	Cmd
	ns   string
	argv []string
}

func (c *netnsCmd) fix(err error) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	return &Error{Cmd: c.argv, NS: c.ns, Output: e.Output, Err: e.Err}
}

func (c *netnsCmd) Run() error   { return c.fix(c.Cmd.Run()) }
func (c *netnsCmd) Start() error { return c.fix(c.Cmd.Start()) }
func (c *netnsCmd) Wait() error  { return c.fix(c.Cmd.Wait()) }

func (c *netnsCmd) Output() ([]byte, error) {
	out, err := c.Cmd.Output()
	return out, c.fix(err)
}

func (c *netnsCmd) CombinedOutput() ([]byte, error) {
	out, err := c.Cmd.CombinedOutput()
	return out, c.fix(err)
}

func (c *netnsCmd) SetEnv(env ...string) Cmd        { c.Cmd.SetEnv(env...); return c }
func (c *netnsCmd) SetDir(dir string) Cmd           { c.Cmd.SetDir(dir); return c }
func (c *netnsCmd) SetStdin(r io.Reader) Cmd        { c.Cmd.SetStdin(r); return c }
func (c *netnsCmd) SetStdout(w io.Writer) Cmd       { c.Cmd.SetStdout(w); return c }
func (c *netnsCmd) SetStderr(w io.Writer) Cmd       { c.Cmd.SetStderr(w); return c }
func (c *netnsCmd) SetExtraFiles(f ...*os.File) Cmd { c.Cmd.SetExtraFiles(f...); return c }
func (c *netnsCmd) SetSysProcAttr(f func(*syscall.SysProcAttr)) Cmd {
	c.Cmd.SetSysProcAttr(f)
	return c
}

// OutputLines runs cmd and returns its stdout line by line.
func OutputLines(cmd Cmd) ([]string, error) {
	out, err := cmd.Output()
	return lines(out), err
}

// CombinedOutputLines runs cmd and returns its stdout and stderr line by
// line.
func CombinedOutputLines(cmd Cmd) ([]string, error) {
	out, err := cmd.CombinedOutput()
	return lines(out), err
}

func lines(b []byte) []string {
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
