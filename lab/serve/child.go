package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"syscall"
	"time"

	"labctl/lab/runner"
)

// ChildGrace is how long a server gets to stop before SIGKILL: shorter
// than the supervisor's grace for the labctl process around it, so the
// server stops cleanly rather than dying with its parent.
const ChildGrace = 1500 * time.Millisecond

// RunChild runs cmd (a server from the distribution: haproxy, etcd, redis,
// postgres) as this process's child until it exits or ctx ends. The child
// dies with its parent (PR_SET_PDEATHSIG), so a SIGKILLed labctl never
// leaves it behind; when ctx ends it gets stop (each server has its own
// "shut down now" signal) and, after grace, SIGKILL. A child that exits by
// itself before ctx ends is an error. cmd is a local command (its Exec
// gives the process to signal) made with a context that does not end
// with ctx, since RunChild stops it itself.
func RunChild(ctx context.Context, cmd runner.Cmd, stop syscall.Signal, grace time.Duration, log *slog.Logger) error {
	// The death signal follows the thread that started the child: keep it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd.SetSysProcAttr(func(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL })
	c := cmd.Exec()
	if c == nil {
		return fmt.Errorf("%s: not a local command", strings.Join(cmd.Args(), " "))
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", c.Path, errors.Unwrap(err))
	}
	log.Info("started", "cmd", c.Path, "pid", c.Process.Pid)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err = errors.Unwrap(err); err == nil {
			err = errors.New("exited")
		}
		return fmt.Errorf("%s (pid %d): %w", c.Path, c.Process.Pid, err)
	case <-ctx.Done():
	}
	c.Process.Signal(stop)
	select {
	case <-done:
	case <-time.After(grace):
		log.Warn("did not stop in time; killing", "pid", c.Process.Pid, "grace", grace)
		c.Process.Kill()
		<-done
	}
	log.Info("stopped", "cmd", c.Path, "pid", c.Process.Pid)
	return nil
}
