package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"labctl/lab/topology"
)

// ErrLabGone is returned by a Watcher's Load once the lab's state is gone:
// the watcher then ends.
var ErrLabGone = errors.New("lab is gone")

// Watcher restarts a lab's services when their processes end, by their
// restart policy, with exponential backoff and a bound. It only decides and
// spawns while holding the lab's lock, after reading the record again:
// up and down take the same lock to stop services, so it never restarts
// what they stop, and up never meets a half-made restart.
type Watcher struct {
	Sup *Supervisor
	// Load returns the lab's applied topology, or ErrLabGone.
	Load func() (*topology.Topology, error)
	// Lock takes the lab's lock; it fails when ctx ends first.
	Lock func(ctx context.Context) (unlock func(), err error)
	// Exit says how the process of a PID, started at the given time,
	// ended, when that was seen (nil: never).
	Exit func(pid int, started time.Time) (syscall.WaitStatus, bool)
	// Track is told the PIDs being watched (for Exit); Wake is nudged when
	// one of them ends, so the watcher need not wait for its next poll.
	Track func(pids []int)
	Wake  <-chan struct{}
	// Poll is how often records are checked (default 500ms); Backoff is the
	// first restart's delay (default 200ms), doubled by each restart in the
	// window up to MaxBackoff (default 10s).
	Poll, Backoff, MaxBackoff time.Duration
	// Log reports decisions (nil: dropped).
	Log func(format string, args ...any)
}

// Backoff is the delay before a restart when n restarts happened within
// the window: base doubled n times, at most max.
func Backoff(n int, base, max time.Duration) time.Duration {
	d := base
	for range n {
		if d >= max/2 {
			return max
		}
		d *= 2
	}
	return min(d, max)
}

// Run watches until ctx ends or the lab is gone.
func (w *Watcher) Run(ctx context.Context) error {
	poll := cmp(w.Poll, 500*time.Millisecond)
	base, maxDelay := cmp(w.Backoff, 200*time.Millisecond), cmp(w.MaxBackoff, 10*time.Second)
	logf := w.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	// due is when the restart of a dead incarnation ("node/svc@pid") is to
	// be decided; kept across polls, forgotten once the record moves on.
	due := map[string]time.Time{}
	timer := time.NewTimer(0)
	defer timer.Stop()
	// Readiness of restarted services is waited for aside, so one slow
	// restart holds up no other; Run returns only after those waits.
	var ready sync.WaitGroup
	defer ready.Wait()
	for {
		t, err := w.Load()
		if errors.Is(err, ErrLabGone) {
			return nil
		}
		now := time.Now()
		next := now.Add(poll)
		if err == nil && t != nil {
			recs, _ := w.Sup.Records()
			seen := map[string]bool{}
			var pids []int
			// A service waits for its restart while one it starts after
			// (`after:`) is dead too: that one comes back first.
			dead := map[string]bool{}
			for _, r := range recs {
				if r.State == "" && serviceOf(t, r.Node, r.Service) != nil && !w.Sup.Alive(r) {
					dead[r.Key()] = true
				}
			}
			for _, r := range recs {
				if r.State != "" {
					continue
				}
				pids = append(pids, r.PID)
				svc := serviceOf(t, r.Node, r.Service)
				if svc == nil || !dead[r.Key()] {
					continue // alive; or a service t no longer has, up's to stop
				}
				k := fmt.Sprintf("%s@%d", r.Key(), r.PID)
				seen[k] = true
				at, ok := due[k]
				if !ok {
					at = now.Add(w.delay(r, svc, now, base, maxDelay))
					due[k] = at
				}
				if at.After(now) {
					next = minTime(next, at)
					continue
				}
				if slices.ContainsFunc(svc.After, func(d string) bool { return dead[d] }) {
					continue // decided again at the next poll
				}
				if err := w.settle(ctx, r, &ready); err != nil {
					if ctx.Err() != nil {
						return nil
					}
					logf("%s: %v", r.Key(), err)
				}
				// The record has moved on (new PID or a state) either way;
				// if it has not, the next poll decides afresh.
				delete(due, k)
			}
			for k := range due {
				if !seen[k] {
					delete(due, k)
				}
			}
			if w.Track != nil {
				w.Track(pids)
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return nil
		case <-w.Wake:
		case <-timer.C:
		}
	}
}

// delay is how long after its end a service's restart is decided: no wait
// when it will not be restarted, else the backoff for the restarts in its
// window.
func (w *Watcher) delay(r Record, svc *topology.Service, now time.Time, base, max time.Duration) time.Duration {
	policy, bound, window := svc.RestartPolicy()
	n := len(recent(r.Recent, now, window))
	if policy == topology.RestartNever || n >= bound {
		return 0
	}
	return Backoff(n, base, max)
}

// settle decides, under the lab's lock, what becomes of a service whose
// process ended: restarted, or marked exited or failed. The restarted
// process's readiness is waited for in a goroutine of ready.
func (w *Watcher) settle(ctx context.Context, seen Record, ready *sync.WaitGroup) error {
	unlock, err := w.Lock(ctx)
	if err != nil {
		return err
	}
	locked := true
	defer func() {
		if locked {
			unlock()
		}
	}()
	// Whatever happened while the lock was elsewhere wins: a record up or
	// down removed or replaced, or the lab itself gone.
	t, err := w.Load()
	if err != nil {
		return err
	}
	r, ok, err := w.Sup.load(seen.Node, seen.Service)
	if err != nil || !ok || r.PID != seen.PID || r.Start != seen.Start || r.State != "" || w.Sup.Alive(r) {
		return err
	}
	svc := serviceOf(t, r.Node, r.Service)
	if svc == nil {
		return nil
	}
	policy, bound, window := svc.RestartPolicy()
	now := time.Now()
	var ws syscall.WaitStatus
	known := false
	if w.Exit != nil {
		ws, known = w.Exit(r.PID, r.Started)
	}
	if r.PID != 0 { // else LastExit says why it could not start
		r.LastExit = fmt.Sprintf("pid %d %s", r.PID, describeExit(ws, known))
	}
	r.Recent = recent(r.Recent, now, window)
	clean := known && ws.Exited() && ws.ExitStatus() == 0
	logf := w.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	switch {
	case policy == topology.RestartNever || policy == topology.RestartOnFailure && clean:
		r.State = StateExited
		logf("%s: %s; restart: %s keeps it down", r.Key(), r.LastExit, policy)
		return w.Sup.write(r)
	case len(r.Recent) >= bound:
		r.State = StateFailed
		logf("%s: %s; %d restarts within %s: giving up (failed)", r.Key(), r.LastExit, len(r.Recent), window)
		return w.Sup.write(r)
	}
	nr, err := w.Sup.spawn(t, r.Node, r.Service, &r)
	if err != nil {
		// Counted, so a service that cannot even start reaches its bound.
		r.Restarts, r.Recent, r.PID, r.Start = r.Restarts+1, append(r.Recent, now), 0, 0
		r.LastExit = "restart failed: " + err.Error()
		w.Sup.write(r)
		return err
	}
	logf("%s: %s; restart %d as pid %d", r.Key(), r.LastExit, nr.Restarts, nr.PID)
	// Readiness is waited for without the lock: up and down may stop the
	// new process meanwhile, which is theirs to do.
	unlock()
	locked = false
	ready.Add(1)
	go func() {
		defer ready.Done()
		if err := w.Sup.waitReady(ctx, nr, svc.Ready); err != nil && ctx.Err() == nil {
			logf("%s: restart %d: %v%s", nr.Key(), nr.Restarts, err, logTail(nr.Log))
		}
	}()
	return nil
}

// recent keeps the times within window before now.
func recent(ts []time.Time, now time.Time, window time.Duration) []time.Time {
	var out []time.Time
	for _, x := range ts {
		if now.Sub(x) < window {
			out = append(out, x)
		}
	}
	return out
}

// describeExit says how a process ended.
func describeExit(ws syscall.WaitStatus, known bool) string {
	switch {
	case !known:
		return "ended (status not seen: counted as a failure)"
	case ws.Signaled():
		return "killed by " + unix.SignalName(ws.Signal())
	case ws.Exited():
		return fmt.Sprintf("exited with status %d", ws.ExitStatus())
	}
	return fmt.Sprintf("ended (wait status %#x)", uint32(ws))
}

func serviceOf(t *topology.Topology, node, name string) *topology.Service {
	if n := t.Nodes[node]; n != nil {
		return n.Services[name]
	}
	return nil
}

func cmp(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
