package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"labctl/lab/netns"
	"labctl/lab/runner"
	"labctl/lab/topology"
)

// OSProc is the real process layer. Services run through `ip netns exec`
// (runner.InNetns), which enters the namespace, bind-mounts
// /etc/netns/<ns>/ files over /etc and remounts /sys, then execs the
// command (so the PID is the service's).
type OSProc struct {
	// Cmder makes the commands (nil: runner.Default). Start needs real
	// processes; Probe's exec check also runs on runnertest.Fake.
	Cmder runner.Cmder
}

func (p OSProc) in(ns string) runner.Cmder {
	if p.Cmder == nil {
		return runner.InNetns(ns)
	}
	return runner.Netns(p.Cmder, ns)
}

// Start implements Proc.
func (p OSProc) Start(ns string, argv, env []string, logPath string) (int, error) {
	if len(argv) == 0 {
		return 0, fmt.Errorf("namespace %s: no command to start", ns)
	}
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer log.Close()
	fmt.Fprintf(log, "--- %s labctl: starting %s in %s\n", time.Now().UTC().Format(time.RFC3339), strings.Join(argv, " "), ns)
	// Not a caller's context: the service outlives labctl.
	svc := p.in(ns).Command(context.Background(), argv[0], argv[1:]...).
		SetEnv(env...).SetStdout(log).SetStderr(log).SetDir("/").
		// Its own session: the service outlives labctl and ignores its terminal.
		SetSysProcAttr(func(a *syscall.SysProcAttr) { a.Setsid = true })
	if err := svc.Start(); err != nil {
		return 0, err
	}
	cmd := svc.Exec() // the process, for its PID and how it ended
	if cmd == nil {
		return 0, fmt.Errorf("namespace %s: %s: not a local command", ns, strings.Join(argv, " "))
	}
	pid := cmd.Process.Pid
	// Reap it if it ends while labctl still runs, and say how it ended:
	// a service that dies while starting is otherwise a silent log.
	go func() {
		svc.Wait()
		if f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0); err == nil {
			fmt.Fprintf(f, "--- %s labctl: pid %d ended: %s\n", time.Now().UTC().Format(time.RFC3339), pid, cmd.ProcessState)
			f.Close()
		}
	}()
	return pid, nil
}

// StartTime reads field 22 of /proc/PID/stat.
func (OSProc) StartTime(pid int) (uint64, error) {
	st, err := procStat(pid)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(st[19], 10, 64)
}

// Alive implements Proc: running, same incarnation. A zombie (Z) in
// /proc/PID/stat is only the thread-group leader's state: the process
// lives while another of its threads does. A multithreaded program that
// calls execve from another thread, as Go's `labctl serve ovsdb` does,
// shows a zombie leader until the kernel hands that thread the PID.
func (p OSProc) Alive(pid int, start uint64) bool {
	st, err := procStat(pid)
	if err != nil {
		return false
	}
	if dead(st[0]) && !liveThread(pid) {
		// The exec may have completed between the two reads, taking the
		// exec'ing thread out of the task list: a zombie that is still
		// one now is dead.
		if st, err = procStat(pid); err != nil || dead(st[0]) {
			return false
		}
	}
	if start == 0 {
		return true
	}
	got, err := strconv.ParseUint(st[19], 10, 64)
	return err == nil && got == start
}

func dead(state string) bool { return state == "Z" || state == "X" }

// liveThread reports whether a task of pid's thread group (the leader
// included) is neither a zombie nor dead.
func liveThread(pid int) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if st, err := readStat(dir + e.Name() + "/stat"); err == nil && !dead(st[0]) {
			return true
		}
	}
	return false
}

// procStat returns the fields of /proc/PID/stat after the command name,
// starting with the state.
func procStat(pid int) ([]string, error) { return readStat("/proc/" + strconv.Itoa(pid) + "/stat") }

// readStat splits a stat file of /proc (a process's or a task's).
func readStat(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, errors.New("bad /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return nil, errors.New("short /proc stat")
	}
	return f, nil
}

// Signal implements Proc.
func (OSProc) Signal(pid int, sig syscall.Signal) error { return netns.Signal(pid, sig) }

// Probe implements Proc.
func (p OSProc) Probe(ctx context.Context, ns string, r *topology.Ready) error {
	switch {
	case r.TCP != "":
		addr, err := topology.ReadyAddr(r.TCP)
		if err != nil {
			return err
		}
		return netns.Do(ns, func() error {
			// The socket is created on this thread, so it lives in ns.
			c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
			if err != nil {
				return err
			}
			return c.Close()
		})
	case len(r.Exec) > 0:
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := p.in(ns).Command(ctx, r.Exec[0], r.Exec[1:]...).CombinedOutput()
		return err // the command, its exit status and its output
	case r.File != "":
		_, err := os.Stat(r.File)
		return err
	}
	return nil
}
