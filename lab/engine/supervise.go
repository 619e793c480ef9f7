package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"labctl/lab/runner"
	"labctl/lab/service"
	"labctl/lab/state"
	"labctl/lab/topology"
)

// The watcher is one process per lab, `labctl serve supervise --lab LAB`,
// in the root namespace (it only watches and starts processes; it adds no
// address or route). It holds watcherLock for as long as it runs, which is
// how up knows one runs, and records its PID in watcherFile, which is how
// status reports it; down finds it, and any whose record was lost, by its
// command line in /proc.
const (
	watcherLock = "supervise.lock"
	watcherFile = "supervise.json"
	watcherLog  = "supervise.log"
)

// WatcherInfo is the watcher's record.
type WatcherInfo struct {
	PID     int       `json:"pid"`
	Start   uint64    `json:"start_ticks"`
	Started time.Time `json:"started"`
}

// Supervise is the watcher's body: it restarts the lab's services by their
// restart policies until ctx ends or the lab's state is gone. A second
// watcher of the same lab returns at once.
func (e *Engine) Supervise(ctx context.Context, lab string) error {
	logger := log.New(os.Stderr, "", log.LstdFlags)
	f, err := os.OpenFile(filepath.Join(state.Dir(lab), watcherLock), os.O_RDWR|os.O_CREATE, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // down got here first
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil // another watcher runs
		}
		return err
	}
	// down may have removed the file between open and lock: then this lock
	// guards nothing and the lab is being (or was) taken down.
	var a, b syscall.Stat_t
	if syscall.Fstat(int(f.Fd()), &a) != nil || syscall.Stat(f.Name(), &b) != nil || a.Ino != b.Ino {
		return nil
	}
	// Listening before it records itself: up returns once the record is
	// there, and an end from then on is seen with its status.
	mon := service.NewExitMonitor(ctx, logger.Printf)
	start, _ := service.OSProc{}.StartTime(os.Getpid())
	if err := state.WriteJSON(filepath.Join(state.Dir(lab), watcherFile), WatcherInfo{PID: os.Getpid(), Start: start, Started: time.Now().UTC()}); err != nil {
		return err
	}
	logger.Printf("watching lab %s (pid %d)", lab, os.Getpid())
	w := &service.Watcher{
		Sup: e.Supervisor(lab),
		Load: func() (*topology.Topology, error) {
			rec, err := state.Load(lab)
			if errors.Is(err, state.ErrNoLab) {
				return nil, service.ErrLabGone
			}
			if err != nil {
				return nil, err
			}
			return rec.Topology, nil
		},
		Lock:  func(ctx context.Context) (func(), error) { return lockCtx(ctx, lab) },
		Exit:  mon.Exit,
		Track: mon.Track,
		Wake:  mon.Wake(),
		Log:   logger.Printf,
	}
	err = w.Run(ctx)
	logger.Printf("watcher of lab %s ends", lab)
	return err
}

// lockCtx takes the lab's lock unless ctx ends first (down's SIGTERM while
// up holds the lock).
func lockCtx(ctx context.Context, lab string) (func(), error) {
	type res struct {
		unlock func()
		err    error
	}
	ch := make(chan res, 1)
	go func() {
		u, err := state.Lock(lab)
		ch <- res{u, err}
	}()
	select {
	case r := <-ch:
		return r.unlock, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.err == nil {
				r.unlock()
			}
		}()
		return nil, ctx.Err()
	}
}

// watcherRunning reports whether a watcher holds the lab's watcher lock.
func watcherRunning(lab string) bool {
	f, err := os.OpenFile(filepath.Join(state.Dir(lab), watcherLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// ensureWatcher starts the lab's watcher unless one runs or the lab has no
// service to watch. Called with the lab's lock held, after the lab's
// record exists.
func (e *Engine) ensureWatcher(t *topology.Topology) error {
	lab := t.Name
	services := false
	for _, n := range t.Nodes {
		services = services || len(n.Services) > 0
	}
	if !services || e.opt.Self == "" || watcherRunning(lab) {
		return nil
	}
	lf, err := os.OpenFile(filepath.Join(state.Dir(lab), watcherLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	// Not up's context: the watcher outlives up.
	watcher := runner.Default.Command(context.Background(), e.opt.Self, "serve", "supervise", "--lab", lab).
		SetEnv("LABCTL_LAB=" + lab). // marks it as the lab's, like its services
		SetStdout(lf).SetStderr(lf).SetDir("/").
		// Its own session: it outlives up and ignores up's terminal.
		SetSysProcAttr(func(a *syscall.SysProcAttr) { a.Setsid = true })
	if err := watcher.Start(); err != nil {
		return fmt.Errorf("lab %s: start the service watcher: %w", lab, err)
	}
	cmd := watcher.Exec() // its Process, for the PID
	exited := make(chan struct{})
	go func() { watcher.Wait(); close(exited) }() // reaped if it ends while this labctl runs
	// Wait until it has recorded itself: then down finds it even if this
	// up is killed right after, and status reports it.
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if w, ok := Watcher(lab); ok && w.PID == cmd.Process.Pid {
			break
		}
		select {
		case <-exited:
			if watcherRunning(lab) {
				return nil // another one won the lock meanwhile
			}
			return fmt.Errorf("lab %s: the service watcher exited at once (%s)", lab, filepath.Join(state.Dir(lab), watcherLog))
		default:
		}
		if time.Now().After(end) {
			return fmt.Errorf("lab %s: the service watcher (pid %d) did not record itself within 5s", lab, cmd.Process.Pid)
		}
	}
	e.report(Event{Lab: lab, Status: "info", Message: fmt.Sprintf("service watcher started (pid %d)", cmd.Process.Pid)})
	return nil
}

// Watcher returns the lab's watcher record and whether it runs.
func Watcher(lab string) (WatcherInfo, bool) {
	var w WatcherInfo
	b, err := os.ReadFile(filepath.Join(state.Dir(lab), watcherFile))
	if err != nil || json.Unmarshal(b, &w) != nil {
		return w, false
	}
	return w, w.PID > 0 && service.OSProc{}.Alive(w.PID, w.Start) && isWatcher(w.PID, lab)
}

// isWatcher checks that pid is the lab's watcher: `serve supervise --lab
// LAB` with the lab's LABCTL_LAB (a record outlives its process, and the
// PID may belong to something else by now).
func isWatcher(pid int, lab string) bool {
	p := "/proc/" + strconv.Itoa(pid)
	cmd, err := os.ReadFile(p + "/cmdline")
	if err != nil || !strings.HasSuffix(string(cmd), "\x00serve\x00supervise\x00--lab\x00"+lab+"\x00") {
		return false
	}
	env, err := os.ReadFile(p + "/environ")
	if errors.Is(err, fs.ErrPermission) {
		return true // another user's process (status run without root): its command line must do
	}
	return err == nil && slices.Contains(strings.Split(string(env), "\x00"), "LABCTL_LAB="+lab)
}

// watchers finds the lab's watchers in /proc: the recorded one, and one
// down would otherwise miss (its state lost, or started by an up killed
// before it recorded itself).
func watchers(lab string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid != os.Getpid() && isWatcher(pid, lab) {
			out = append(out, pid)
		}
	}
	return out
}

// stopWatcher ends the lab's watchers (SIGTERM, then SIGKILL) and waits
// until they are gone, so nothing restarts what down stops next.
func stopWatcher(lab string) error {
	var errs []error
	for _, pid := range watchers(lab) {
		start, err := service.OSProc{}.StartTime(pid)
		if err != nil {
			continue // gone already
		}
		if err := service.Terminate(service.OSProc{}, pid, start, 2*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("stop the service watcher (pid %d): %w", pid, err))
		}
	}
	return errors.Join(errs...)
}
