package service

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// ExitMonitor learns how processes end from the kernel's process events
// connector: a lab's services are not the watcher's children (up started
// them), so it cannot wait for them, and /proc forgets a process once its
// parent has reaped it.
type ExitMonitor struct {
	mu    sync.Mutex
	track map[int]bool
	exits map[int]syscall.WaitStatus
	// The last untracked ends and when they were seen: a restarted
	// process can end before the watcher tracks its PID.
	recent map[int]exitSeen
	order  []int
	wake   chan struct{}
}

// recentExits bounds the untracked ends kept.
const recentExits = 4096

// NewExitMonitor listens until ctx ends; it returns once it listens, so
// every process that ends after it returns is seen. Without the connector
// (no CAP_NET_ADMIN, an old kernel) it reports nothing and ends are found
// by polling alone, their status unknown.
func NewExitMonitor(ctx context.Context, logf func(string, ...any)) *ExitMonitor {
	m := &ExitMonitor{track: map[int]bool{}, exits: map[int]syscall.WaitStatus{}, recent: map[int]exitSeen{}, wake: make(chan struct{}, 1)}
	if sub, err := subscribe(); err != nil {
		logf("process events unavailable (%v): exit statuses are not seen", err)
	} else {
		go m.run(ctx, logf, sub)
	}
	return m
}

// subscription is one listening of the proc connector.
type subscription struct {
	ch   chan netlink.ProcEvent
	errs chan error
	done chan struct{}
}

func subscribe() (subscription, error) {
	s := subscription{make(chan netlink.ProcEvent, 1024), make(chan error, 1), make(chan struct{})}
	return s, netlink.ProcEventMonitor(s.ch, s.done, s.errs)
}

func (m *ExitMonitor) run(ctx context.Context, logf func(string, ...any), sub subscription) {
	for {
	read:
		for {
			select {
			case <-ctx.Done():
				close(sub.done)
				return
			case err := <-sub.errs:
				// Usually ENOBUFS: events came faster than they were read.
				// Those lost count as failures; listen again.
				logf("process events: %v; listening again", err)
				break read
			case ev, ok := <-sub.ch:
				if !ok {
					break read
				}
				if e, ok := ev.Msg.(*netlink.ExitProcEvent); ok && e.ProcessPid == e.ProcessTgid {
					m.ended(int(e.ProcessTgid), syscall.WaitStatus(e.ExitCode))
				}
			}
		}
		close(sub.done)
		time.Sleep(100 * time.Millisecond)
		if ctx.Err() != nil {
			return
		}
		var err error
		if sub, err = subscribe(); err != nil {
			logf("process events unavailable (%v): exit statuses are not seen", err)
			return
		}
	}
}

func (m *ExitMonitor) ended(pid int, ws syscall.WaitStatus) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.track[pid] {
		if _, ok := m.recent[pid]; ok { // the PID ended before: the newer end replaces it
			m.recent[pid] = exitSeen{ws, time.Now()}
			return
		}
		if len(m.order) >= recentExits {
			delete(m.recent, m.order[0])
			m.order = m.order[1:]
		}
		m.recent[pid] = exitSeen{ws, time.Now()}
		m.order = append(m.order, pid)
		return
	}
	m.exits[pid] = ws
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Track sets the PIDs whose ends are kept; others are forgotten.
func (m *ExitMonitor) Track(pids []int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.track = map[int]bool{}
	for _, p := range pids {
		m.track[p] = true
	}
	for p := range m.exits {
		if !m.track[p] {
			delete(m.exits, p)
		}
	}
}

// exitSeen is an untracked end.
type exitSeen struct {
	ws syscall.WaitStatus
	at time.Time
}

// Exit reports how the process of pid started at since ended, if that was
// seen: an untracked end seen before since was another process's, one that
// had the PID before.
func (m *ExitMonitor) Exit(pid int, since time.Time) (syscall.WaitStatus, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ws, ok := m.exits[pid]; ok {
		return ws, true
	}
	e, ok := m.recent[pid]
	return e.ws, ok && !e.at.Before(since)
}

// Wake is nudged when a tracked process ends.
func (m *ExitMonitor) Wake() <-chan struct{} { return m.wake }
