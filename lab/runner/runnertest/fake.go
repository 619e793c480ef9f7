// Package runnertest is a runner.Cmder for unit tests: it starts nothing,
// records every command run through it and answers with scripted output
// and errors chosen by the command line's leading words.
package runnertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"

	"labctl/lab/runner"
)

// Call is one command run through the fake.
type Call struct {
	Args        []string // the command line, a namespace's `ip netns exec NS` included
	Env         []string // what SetEnv added
	Dir         string
	Stdin       []byte // all it was given on stdin
	SysProcAttr *syscall.SysProcAttr
	ExtraFiles  []*os.File
}

// String is the command line, words joined by spaces.
func (c Call) String() string { return strings.Join(c.Args, " ") }

// Reply is what a faked command prints and how it ends.
type Reply struct {
	Stdout, Stderr string
	Err            error // nil: success; ExitStatus(n): exit status n
}

// ExitStatus is the error of a faked command that exits with this status.
type ExitStatus int

func (e ExitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// ExitCode is the status, as *exec.ExitError has it.
func (e ExitStatus) ExitCode() int { return int(e) }

// Fake is a runner.Cmder; its zero value answers every command with
// success and no output. It is safe for concurrent use.
type Fake struct {
	// Handler answers the commands no On prefix matches (nil: success,
	// no output).
	Handler func(Call) Reply

	mu      sync.Mutex
	calls   []Call
	replies []scripted
}

type scripted struct {
	prefix []string
	reply  Reply
}

var _ runner.Cmder = (*Fake)(nil)

// On makes the commands whose command line starts with prefix's words
// (split as strings.Fields does) answer r. The longest matching prefix
// wins; of equal ones, the one given last.
func (f *Fake) On(prefix string, r Reply) *Fake {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.replies = append(f.replies, scripted{prefix: strings.Fields(prefix), reply: r})
	return f
}

// Calls returns the commands run so far, in order.
func (f *Fake) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Call(nil), f.calls...)
}

// Commands returns the command lines run so far, in order.
func (f *Fake) Commands() []string {
	var out []string
	for _, c := range f.Calls() {
		out = append(out, c.String())
	}
	return out
}

// Command implements runner.Cmder.
func (f *Fake) Command(ctx context.Context, name string, args ...string) runner.Cmd {
	if ctx == nil {
		ctx = context.Background()
	}
	return &cmd{f: f, ctx: ctx, call: Call{Args: append([]string{name}, args...)}}
}

// answer records c and finds its reply.
func (f *Fake) answer(c Call) Reply {
	f.mu.Lock()
	f.calls = append(f.calls, c)
	best := -1
	for i, s := range f.replies {
		if hasPrefix(c.Args, s.prefix) && (best < 0 || len(s.prefix) >= len(f.replies[best].prefix)) {
			best = i
		}
	}
	h := f.Handler
	var r Reply
	if best >= 0 {
		r = f.replies[best].reply
	}
	f.mu.Unlock()
	if best < 0 && h != nil {
		return h(c)
	}
	return r
}

func hasPrefix(args, prefix []string) bool {
	if len(prefix) > len(args) {
		return false
	}
	for i, w := range prefix {
		if args[i] != w {
			return false
		}
	}
	return true
}

type cmd struct {
	f                      *Fake
	ctx                    context.Context
	call                   Call
	stdin                  io.Reader
	stdout, stderr         io.Writer
	started                bool
	reply                  Reply
	collectOut, collectErr strings.Builder
}

func (c *cmd) fail(err error, out string) error {
	if err == nil {
		return nil
	}
	return &runner.Error{Cmd: c.call.Args, Output: []byte(out), Err: err}
}

func (c *cmd) Start() error {
	if c.started {
		return c.fail(errors.New("exec: already started"), "")
	}
	c.started = true
	if err := c.ctx.Err(); err != nil {
		return c.fail(err, "")
	}
	if c.stdin != nil {
		c.call.Stdin, _ = io.ReadAll(c.stdin)
	}
	c.reply = c.f.answer(c.call)
	return nil
}

func (c *cmd) Wait() error {
	if !c.started {
		return c.fail(errors.New("exec: not started"), "")
	}
	out, errOut := io.Writer(&c.collectOut), io.Writer(&c.collectErr)
	if c.stdout != nil {
		out = c.stdout
	}
	if c.stderr != nil {
		errOut = c.stderr
	}
	io.WriteString(out, c.reply.Stdout)
	io.WriteString(errOut, c.reply.Stderr)
	return c.fail(c.reply.Err, c.collectErr.String())
}

func (c *cmd) Run() error {
	if err := c.Start(); err != nil {
		return err
	}
	return c.Wait()
}

func (c *cmd) Output() ([]byte, error) {
	if c.stdout != nil {
		return nil, c.fail(errors.New("exec: Stdout already set"), "")
	}
	err := c.Run()
	return []byte(c.collectOut.String()), err
}

func (c *cmd) CombinedOutput() ([]byte, error) {
	if c.stdout != nil || c.stderr != nil {
		return nil, c.fail(errors.New("exec: Stdout or Stderr already set"), "")
	}
	if err := c.Start(); err != nil {
		return nil, err
	}
	out := c.reply.Stdout + c.reply.Stderr
	return []byte(out), c.fail(c.reply.Err, out)
}

func (c *cmd) SetEnv(env ...string) runner.Cmd {
	c.call.Env = append(c.call.Env, env...)
	return c
}

func (c *cmd) SetDir(dir string) runner.Cmd     { c.call.Dir = dir; return c }
func (c *cmd) SetStdin(r io.Reader) runner.Cmd  { c.stdin = r; return c }
func (c *cmd) SetStdout(w io.Writer) runner.Cmd { c.stdout = w; return c }
func (c *cmd) SetStderr(w io.Writer) runner.Cmd { c.stderr = w; return c }

func (c *cmd) SetExtraFiles(files ...*os.File) runner.Cmd {
	c.call.ExtraFiles = files
	return c
}

func (c *cmd) SetSysProcAttr(f func(*syscall.SysProcAttr)) runner.Cmd {
	if c.call.SysProcAttr == nil {
		c.call.SysProcAttr = &syscall.SysProcAttr{}
	}
	f(c.call.SysProcAttr)
	return c
}

func (c *cmd) Args() []string { return c.call.Args }

// Exec is nil: a faked command has no process.
func (c *cmd) Exec() *exec.Cmd { return nil }
