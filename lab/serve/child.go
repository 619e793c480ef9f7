package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"runtime"
	"syscall"
	"time"
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
// itself before ctx ends is an error.
func RunChild(ctx context.Context, cmd *exec.Cmd, stop syscall.Signal, grace time.Duration, log *slog.Logger) error {
	// The death signal follows the thread that started the child: keep it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	log.Info("started", "cmd", cmd.Path, "pid", cmd.Process.Pid)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			err = errors.New("exited")
		}
		return fmt.Errorf("%s (pid %d): %w", cmd.Path, cmd.Process.Pid, err)
	case <-ctx.Done():
	}
	cmd.Process.Signal(stop)
	select {
	case <-done:
	case <-time.After(grace):
		log.Warn("did not stop in time; killing", "pid", cmd.Process.Pid, "grace", grace)
		cmd.Process.Kill()
		<-done
	}
	log.Info("stopped", "cmd", cmd.Path, "pid", cmd.Process.Pid)
	return nil
}
