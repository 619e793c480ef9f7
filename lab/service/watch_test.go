package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"labctl/lab/internal/labtest"
	"labctl/lab/plan"
	"labctl/lab/service"
	"labctl/lab/topology"
)

// watchRig runs a Watcher over the fake with a lock the test can hold and
// exit statuses the test sets.
type watchRig struct {
	t    *testing.T
	top  *topology.Topology
	f    *fakeProc
	s    *service.Supervisor
	lock sync.Mutex // the lab's lock
	mu   sync.Mutex
	ws   map[int]syscall.WaitStatus
	gone bool
	// locking is sent to when the watcher asks for the lock.
	locking chan struct{}
	unlocks chan struct{}
	stop    func()
	done    chan struct{}
}

func newRig(t *testing.T, top *topology.Topology, behave map[string]*behaviour) *watchRig {
	r := &watchRig{t: t, top: top, ws: map[int]syscall.WaitStatus{}, locking: make(chan struct{}, 100), unlocks: make(chan struct{}, 100)}
	r.f = newFake(top, behave)
	r.s = supervisor(t, r.f)
	return r
}

func (r *watchRig) run() {
	ctx, cancel := context.WithCancel(context.Background())
	w := &service.Watcher{
		Sup: r.s,
		Load: func() (*topology.Topology, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.gone {
				return nil, service.ErrLabGone
			}
			return r.top, nil
		},
		Lock: func(ctx context.Context) (func(), error) {
			r.locking <- struct{}{}
			r.lock.Lock()
			return func() { r.lock.Unlock(); r.unlocks <- struct{}{} }, nil
		},
		Exit: func(pid int, _ time.Time) (syscall.WaitStatus, bool) {
			r.mu.Lock()
			defer r.mu.Unlock()
			ws, ok := r.ws[pid]
			return ws, ok
		},
		Poll: time.Millisecond, Backoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond,
		Log: r.t.Logf,
	}
	r.done = make(chan struct{})
	go func() { defer close(r.done); w.Run(ctx) }()
	r.stop = func() { cancel(); <-r.done }
	r.t.Cleanup(r.stop)
}

// end makes a service's current process end with the given wait status.
func (r *watchRig) end(key string, ws syscall.WaitStatus) int {
	r.f.mu.Lock()
	pid := r.f.latest[key].pid
	r.f.mu.Unlock()
	r.mu.Lock()
	r.ws[pid] = ws
	r.mu.Unlock()
	r.f.kill(key)
	return pid
}

func (r *watchRig) record(key string) service.Record {
	recs, err := r.s.Records()
	if err != nil {
		r.t.Fatal(err)
	}
	for _, rec := range recs {
		if rec.Key() == key {
			return rec
		}
	}
	return service.Record{}
}

func (r *watchRig) waitFor(what string, cond func() bool) {
	r.t.Helper()
	labtest.WaitEvery(r.t, 10*time.Second, time.Millisecond, cond, what)
}

func (r *watchRig) starts(key string) []startCall {
	var out []startCall
	for _, c := range r.f.startCalls() {
		if c.Key == key {
			out = append(out, c)
		}
	}
	return out
}

const sigkill = syscall.WaitStatus(syscall.SIGKILL)

// writeRecord replaces a record as the supervisor keeps it.
func writeRecord(t *testing.T, s *service.Supervisor, r service.Record) {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir, r.Node+"."+r.Service+".json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWatcherRestartsAKilledService(t *testing.T) {
	top := lab(t, map[string]map[string]*topology.Service{
		"a": {"web": {Command: []string{"labctl", "serve", "http"}, Env: map[string]string{"K": "V"},
			Ready: &topology.Ready{TCP: "80", Timeout: topology.Duration(2 * time.Second)}}},
	})
	r := newRig(t, top, map[string]*behaviour{"a/web": {readyAfter: 2}})
	if err := r.s.StartAll(context.Background(), top, plan.ServiceOrder(top), nil); err != nil {
		t.Fatal(err)
	}
	first := r.record("a/web")
	r.run()
	killedAt := time.Now()
	killed := r.end("a/web", sigkill)
	r.waitFor("a/web restarted and ready", func() bool {
		rec := r.record("a/web")
		r.f.mu.Lock()
		defer r.f.mu.Unlock()
		p := r.f.procs[rec.PID]
		return rec.PID != killed && p != nil && p.alive && p.readySeq != 0
	})
	rec := r.record("a/web")
	if rec.Restarts != 1 || len(rec.Recent) != 1 || rec.State != "" {
		t.Errorf("record after one restart: %+v", rec)
	}
	if want := "killed by SIGKILL"; !strings.Contains(rec.LastExit, want) {
		t.Errorf("last exit %q lacks %q", rec.LastExit, want)
	}
	if !r.s.Alive(rec) || rec.Hash != first.Hash || rec.Log != first.Log {
		t.Errorf("restarted record %+v vs first %+v", rec, first)
	}
	calls := r.starts("a/web")
	if len(calls) != 2 {
		t.Fatalf("started %d times, want 2", len(calls))
	}
	// The same start: argv (labctl resolved), environment, namespace, log.
	if strings.Join(calls[0].Argv, " ") != strings.Join(calls[1].Argv, " ") ||
		strings.Join(calls[0].Env, " ") != strings.Join(calls[1].Env, " ") || calls[0].NS != calls[1].NS || calls[0].Log != calls[1].Log {
		t.Errorf("restart differs from the first start:\n%+v\n%+v", calls[0], calls[1])
	}
	if d := calls[1].At.Sub(killedAt); d < 10*time.Millisecond {
		t.Errorf("restarted %s after the kill, before the 10ms backoff", d)
	}
	b, _ := os.ReadFile(rec.Log)
	if !strings.Contains(string(b), "labctl: restart 1 after exit: pid ") {
		t.Errorf("log lacks the restart line:\n%s", b)
	}
}

func TestWatcherPolicies(t *testing.T) {
	never, always := "never", "always"
	top := lab(t, map[string]map[string]*topology.Service{
		"a": {
			"never":   {Command: []string{"n"}, Restart: never},
			"clean":   {Command: []string{"c"}},                   // on-failure, exits 0
			"failing": {Command: []string{"f"}},                   // on-failure, exits 1
			"unknown": {Command: []string{"u"}},                   // on-failure, status not seen
			"always":  {Command: []string{"al"}, Restart: always}, // exits 0
		},
	})
	r := newRig(t, top, nil)
	if err := r.s.StartAll(context.Background(), top, plan.ServiceOrder(top), nil); err != nil {
		t.Fatal(err)
	}
	r.run()
	r.end("a/never", sigkill)
	r.end("a/clean", 0)
	r.end("a/failing", 1<<8)
	r.end("a/always", 0)
	r.f.kill("a/unknown")
	restarted := []string{"a/failing", "a/unknown", "a/always"}
	down := map[string]string{"a/never": service.StateExited, "a/clean": service.StateExited}
	r.waitFor("every end settled", func() bool {
		for _, k := range restarted {
			if r.record(k).Restarts != 1 {
				return false
			}
		}
		for k, st := range down {
			if r.record(k).State != st {
				return false
			}
		}
		return true
	})
	r.stop()
	for k := range down {
		if n := len(r.starts(k)); n != 1 {
			t.Errorf("%s started %d times, want once", k, n)
		}
		if rec := r.record(k); rec.Restarts != 0 || r.s.Alive(rec) {
			t.Errorf("%s: %+v", k, rec)
		}
	}
	for _, k := range restarted {
		if n := len(r.starts(k)); n != 2 {
			t.Errorf("%s started %d times, want twice", k, n)
		}
	}
	for k, want := range map[string]string{"a/clean": "exited with status 0", "a/failing": "exited with status 1",
		"a/unknown": "status not seen", "a/never": "killed by SIGKILL"} {
		if got := r.record(k).LastExit; !strings.Contains(got, want) {
			t.Errorf("%s last exit %q lacks %q", k, got, want)
		}
	}
}

// A service that dies at once every time is restarted max-restarts times,
// each after a longer backoff, then marked failed and left alone.
func TestWatcherBound(t *testing.T) {
	three := 3
	top := lab(t, map[string]map[string]*topology.Service{
		"a": {"crash": {Command: []string{"crash"}, MaxRestarts: &three, Ready: &topology.Ready{TCP: "80"}}},
	})
	r := newRig(t, top, map[string]*behaviour{"a/crash": {dieAtStart: true}})
	if _, err := r.s.Start(context.Background(), top, "a", "crash"); !errors.Is(err, service.ErrExited) {
		t.Fatalf("first start: %v", err)
	}
	r.run()
	r.waitFor("a/crash failed", func() bool { return r.record("a/crash").State == service.StateFailed })
	r.stop()
	calls := r.starts("a/crash")
	if len(calls) != 1+three {
		t.Fatalf("started %d times, want 1 + %d restarts", len(calls), three)
	}
	// Backoff 10ms, doubled per restart in the window.
	for i, min := range []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond} {
		if gap := calls[i+1].At.Sub(calls[i].At); gap < min {
			t.Errorf("restart %d came %s after the previous start, before its backoff %s", i+1, gap, min)
		}
	}
	rec := r.record("a/crash")
	if rec.Restarts != three || len(rec.Recent) != three {
		t.Errorf("failed record %+v", rec)
	}
}

// Restarts older than the window do not count toward the bound.
func TestWatcherWindow(t *testing.T) {
	one := 1
	top := lab(t, map[string]map[string]*topology.Service{
		"a": {"x": {Command: []string{"x"}, MaxRestarts: &one, RestartWindow: topology.Duration(time.Minute)}},
	})
	r := newRig(t, top, nil)
	if _, err := r.s.Start(context.Background(), top, "a", "x"); err != nil {
		t.Fatal(err)
	}
	r.run()
	r.end("a/x", sigkill)
	r.waitFor("first restart", func() bool { return r.record("a/x").Restarts == 1 })
	// Age that restart past the window: the next end restarts again.
	rec := r.record("a/x")
	r.lock.Lock()
	rec.Recent[0] = rec.Recent[0].Add(-2 * time.Minute)
	writeRecord(t, r.s, rec)
	r.lock.Unlock()
	r.end("a/x", sigkill)
	r.waitFor("second restart", func() bool { return r.record("a/x").Restarts == 2 })
	if rec := r.record("a/x"); len(rec.Recent) != 1 || rec.State != "" {
		t.Errorf("record %+v: the old restart should have left the window", rec)
	}
	r.end("a/x", sigkill)
	r.waitFor("failed", func() bool { return r.record("a/x").State == service.StateFailed })
}

// A service up or down stops while the watcher waits for the lab's lock
// is not brought back.
func TestWatcherDoesNotResurrectStopped(t *testing.T) {
	top := lab(t, map[string]map[string]*topology.Service{"a": {"x": {Command: []string{"x"}}}})
	r := newRig(t, top, nil)
	if _, err := r.s.Start(context.Background(), top, "a", "x"); err != nil {
		t.Fatal(err)
	}
	r.run()
	// up holds the lock and stops the service; its process ends first.
	r.lock.Lock()
	r.end("a/x", sigkill)
	<-r.locking // the watcher saw the end and waits for the lock
	if err := r.s.Stop("a", "x"); err != nil {
		t.Fatal(err)
	}
	r.lock.Unlock()
	<-r.unlocks // it has decided
	r.stop()
	if n := len(r.starts("a/x")); n != 1 {
		t.Errorf("started %d times: the watcher restarted a stopped service", n)
	}
	if recs, _ := r.s.Records(); len(recs) != 0 {
		t.Errorf("records %+v after stop", recs)
	}

	// Same when up restarted it itself meanwhile: the new process stays.
	r2 := newRig(t, top, nil)
	if _, err := r2.s.Start(context.Background(), top, "a", "x"); err != nil {
		t.Fatal(err)
	}
	r2.run()
	r2.lock.Lock()
	r2.end("a/x", sigkill)
	<-r2.locking
	rec, err := r2.s.Start(context.Background(), top, "a", "x")
	if err != nil {
		t.Fatal(err)
	}
	r2.lock.Unlock()
	<-r2.unlocks
	r2.stop()
	if n := len(r2.starts("a/x")); n != 2 {
		t.Errorf("started %d times, want 2 (up's start, no restart)", n)
	}
	if got := r2.record("a/x"); got.PID != rec.PID || got.Restarts != 0 {
		t.Errorf("record %+v, want up's %+v", got, rec)
	}
}

func TestWatcherEndsWithTheLab(t *testing.T) {
	top := lab(t, map[string]map[string]*topology.Service{"a": {"x": {Command: []string{"x"}}}})
	r := newRig(t, top, nil)
	r.run()
	r.mu.Lock()
	r.gone = true
	r.mu.Unlock()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher outlived its lab")
	}
}

func TestBackoff(t *testing.T) {
	base, max := 200*time.Millisecond, 10*time.Second
	var got []time.Duration
	for n := range 9 {
		got = append(got, service.Backoff(n, base, max))
	}
	want := []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond,
		3200 * time.Millisecond, 6400 * time.Millisecond, 10 * time.Second, 10 * time.Second, 10 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Backoff(%d) = %s, want %s", i, got[i], want[i])
		}
	}
}

// Services that died together come back dependencies first, and one
// restart that is slow to become ready holds up no other.
func TestWatcherRestartOrder(t *testing.T) {
	top := lab(t, map[string]map[string]*topology.Service{
		"a": {
			// Sorts first; once restarted it is not ready for a minute.
			"aaa": {Command: []string{"slow"}, Ready: &topology.Ready{TCP: "80", Timeout: topology.Duration(time.Minute)}},
			"app": {Command: []string{"app"}, After: []string{"a/db"}},
			"db":  {Command: []string{"db"}},
		},
	})
	behave := map[string]*behaviour{"a/aaa": {}}
	r := newRig(t, top, behave)
	if err := r.s.StartAll(context.Background(), top, plan.ServiceOrder(top), nil); err != nil {
		t.Fatal(err)
	}
	r.f.mu.Lock()
	behave["a/aaa"].never = true
	r.f.mu.Unlock()
	r.run()
	// db first: once app is seen dead, so is db.
	for _, k := range []string{"a/db", "a/app", "a/aaa"} {
		r.end(k, sigkill)
	}
	r.waitFor("a/app and a/db restarted while a/aaa is not ready", func() bool {
		return len(r.starts("a/app")) == 2 && len(r.starts("a/db")) == 2
	})
	if app, db := r.starts("a/app")[1].At, r.starts("a/db")[1].At; app.Before(db) {
		t.Errorf("a/app restarted %s before a/db, which it starts after", db.Sub(app))
	}
	if n := len(r.starts("a/aaa")); n != 2 {
		t.Errorf("a/aaa started %d times, want twice", n)
	}
}
