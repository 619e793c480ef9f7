// Package service is the process supervisor: it starts a node's services
// inside the node's namespace in dependency order, waits for each to be
// ready, keeps PID records and logs under the lab's state directory, and
// stops them. The process layer (Proc) is an interface so the logic is
// tested without root.
package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"labctl/lab/plan"
	"labctl/lab/state"
	"labctl/lab/topology"
)

// DefaultTimeout bounds a service's readiness wait when none is given.
const DefaultTimeout = 10 * time.Second

// Proc starts, probes and signals processes inside namespaces.
type Proc interface {
	// Start runs argv inside ns with env added, output appended to logPath.
	Start(ns string, argv, env []string, logPath string) (pid int, err error)
	// StartTime identifies a process incarnation (guards against PID reuse).
	StartTime(pid int) (uint64, error)
	// Alive reports whether pid still runs the incarnation started at start.
	Alive(pid int, start uint64) bool
	Signal(pid int, sig syscall.Signal) error
	// Probe makes one readiness attempt.
	Probe(ctx context.Context, ns string, r *topology.Ready) error
}

// Record is what is kept of a started service.
type Record struct {
	Node    string    `json:"node"`
	Service string    `json:"service"`
	NS      string    `json:"netns"`
	PID     int       `json:"pid"`
	Start   uint64    `json:"start_ticks"`
	Hash    string    `json:"hash"`
	Command []string  `json:"command"`
	Log     string    `json:"log"`
	Started time.Time `json:"started"`
	// Restarts counts the watcher's restarts since up started it; Recent
	// holds those within the restart window (the bound), LastExit how the
	// process before this one ended.
	Restarts int         `json:"restarts,omitempty"`
	Recent   []time.Time `json:"recent_restarts,omitempty"`
	LastExit string      `json:"last_exit,omitempty"`
	// State is empty while the watcher keeps the service running,
	// StateExited once it ended and its policy keeps it down, StateFailed
	// once it ended more often than its bound allows.
	State string `json:"state,omitempty"`
}

// Record states set by the watcher.
const (
	StateExited = "exited"
	StateFailed = "failed"
)

// Key is "node/service".
func (r Record) Key() string { return r.Node + "/" + r.Service }

// Supervisor manages one lab's services.
type Supervisor struct {
	Lab    string
	Dir    string // records
	LogDir string
	Self   string // this labctl binary, for argv[0] "labctl"
	Proc   Proc
	// Poll is the readiness probe interval.
	Poll time.Duration
	// StopGrace is the wait between SIGTERM and SIGKILL.
	StopGrace time.Duration
}

func (s *Supervisor) recordPath(node, svc string) string {
	return filepath.Join(s.Dir, node+"."+svc+".json")
}

// ConfigPath is where a service's Config is written for it to read: a
// directory of its own beside the records (Records reads every JSON file
// of Dir as one).
func (s *Supervisor) ConfigPath(node, svc string) string {
	return filepath.Join(s.Dir, "config", node+"."+svc+".json")
}

// LogPath is where a service's output goes.
func (s *Supervisor) LogPath(node, svc string) string {
	return filepath.Join(s.LogDir, node+"."+svc+".log")
}

// Records returns every service record, sorted by key.
func (s *Supervisor) Records() ([]Record, error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.Dir, e.Name()))
		if err != nil {
			continue
		}
		var r Record
		if json.Unmarshal(b, &r) == nil {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out, nil
}

// Alive reports whether a record's process still runs.
func (s *Supervisor) Alive(r Record) bool { return r.PID > 0 && s.Proc.Alive(r.PID, r.Start) }

// Observe reports the recorded services for planning.
func (s *Supervisor) Observe() (map[string]plan.ServiceState, error) {
	recs, err := s.Records()
	if err != nil {
		return nil, err
	}
	out := map[string]plan.ServiceState{}
	for _, r := range recs {
		out[r.Key()] = plan.ServiceState{PID: r.PID, Hash: r.Hash, Alive: s.Alive(r)}
	}
	return out, nil
}

// ErrNotReady is wrapped by readiness failures.
var ErrNotReady = errors.New("service not ready")

// ErrExited is wrapped when a service's process ends while starting.
var ErrExited = errors.New("service exited")

// Start starts one service and waits until it is ready.
func (s *Supervisor) Start(ctx context.Context, t *topology.Topology, node, name string) (Record, error) {
	rec, err := s.spawn(t, node, name, nil)
	if err != nil {
		return rec, err
	}
	if err := s.waitReady(ctx, rec, t.Nodes[node].Services[name].Ready); err != nil {
		return rec, fmt.Errorf("%s/%s: %w%s", node, name, err, logTail(rec.Log))
	}
	return rec, nil
}

// spawn starts a service's process and writes its record. A restart (prev
// set) carries the previous record's restart history and says so in the log.
func (s *Supervisor) spawn(t *topology.Topology, node, name string, prev *Record) (Record, error) {
	svc := t.Nodes[node].Services[name]
	ns := topology.Namespace(t.Name, node)
	argv := append([]string{}, svc.Command...)
	if argv[0] == "labctl" && s.Self != "" {
		argv[0] = s.Self
	}
	env := make([]string, 0, len(svc.Env)+3)
	env = append(env, "LABCTL_LAB="+t.Name, "LABCTL_NODE="+node, "LABCTL_SERVICE="+name)
	for _, k := range sortedKeys(svc.Env) {
		env = append(env, k+"="+svc.Env[k])
	}
	for _, d := range []string{s.Dir, s.LogDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return Record{}, err
		}
	}
	if svc.Config != nil {
		path := s.ConfigPath(node, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return Record{}, err
		}
		if err := state.WriteJSON(path, svc.Config); err != nil {
			return Record{}, fmt.Errorf("start %s/%s: config: %w", node, name, err)
		}
		argv = append(argv, topology.ConfigFlag, path)
	}
	rec := Record{Node: node, Service: name, NS: ns, Hash: plan.ServiceHash(svc), Command: argv,
		Log: s.LogPath(node, name), Started: time.Now().UTC()}
	if prev != nil {
		rec.Restarts, rec.Recent, rec.LastExit = prev.Restarts+1, append(slices.Clone(prev.Recent), rec.Started), prev.LastExit
		if f, err := os.OpenFile(rec.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err == nil {
			fmt.Fprintf(f, "--- %s labctl: restart %d after exit: %s\n", rec.Started.Format(time.RFC3339), rec.Restarts, rec.LastExit)
			f.Close()
		}
	}
	pid, err := s.Proc.Start(ns, argv, env, rec.Log)
	if err != nil {
		return rec, fmt.Errorf("start %s/%s: %w", node, name, err)
	}
	rec.PID = pid
	rec.Start, _ = s.Proc.StartTime(pid)
	if err := s.write(rec); err != nil {
		return rec, err
	}
	return rec, nil
}

// write replaces a record atomically: the watcher reads records while up
// writes them.
func (s *Supervisor) write(r Record) error {
	return state.WriteJSON(s.recordPath(r.Node, r.Service), r)
}

// load reads one service's record; ok is false when there is none.
func (s *Supervisor) load(node, name string) (r Record, ok bool, err error) {
	p := s.recordPath(node, name)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return r, false, nil
	}
	if err != nil {
		return r, false, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, false, fmt.Errorf("%s: %w", p, err)
	}
	return r, true, nil
}

func (s *Supervisor) waitReady(ctx context.Context, r Record, ready *topology.Ready) error {
	timeout := DefaultTimeout
	if ready != nil && ready.Timeout > 0 {
		timeout = time.Duration(ready.Timeout)
	}
	poll := s.Poll
	if poll == 0 {
		poll = 50 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if !s.Proc.Alive(r.PID, r.Start) {
			return fmt.Errorf("%w (pid %d)", ErrExited, r.PID)
		}
		if ready == nil || (ready.TCP == "" && len(ready.Exec) == 0 && ready.File == "") {
			return nil
		}
		if last = s.Proc.Probe(ctx, r.NS, ready); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w after %s: %v", ErrNotReady, timeout, last)
		case <-time.After(poll):
		}
	}
}

// StartAll starts the given services ("node/svc"), each once everything it
// waits for is ready; independent services start concurrently. Services
// not in keys are taken as already running. The first failure fails every
// service waiting on it; all errors are returned together.
func (s *Supervisor) StartAll(ctx context.Context, t *topology.Topology, keys []string, onDone func(Record, error)) error {
	type result struct {
		done chan struct{}
		err  error
	}
	res := map[string]*result{}
	for _, k := range keys {
		res[k] = &result{done: make(chan struct{})}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, k := range keys {
		node, name, _ := strings.Cut(k, "/")
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := res[k]
			defer close(r.done)
			for _, d := range t.Nodes[node].Services[name].After {
				dn, ds := topology.SplitServiceRef(node, d)
				dep, ok := res[dn+"/"+ds]
				if !ok {
					continue
				}
				<-dep.done
				if dep.err != nil {
					r.err = fmt.Errorf("%s not started: %s/%s failed", k, dn, ds)
					if onDone != nil {
						onDone(Record{Node: node, Service: name}, r.err)
					}
					mu.Lock()
					errs = append(errs, r.err)
					mu.Unlock()
					return
				}
			}
			rec, err := s.Start(ctx, t, node, name)
			r.err = err
			if onDone != nil {
				onDone(rec, err)
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Stop ends one service (SIGTERM, then SIGKILL after StopGrace) and drops
// its record. A service that is not running is no error.
func (s *Supervisor) Stop(node, name string) error {
	r, ok, err := s.load(node, name)
	if !ok || err != nil {
		return err
	}
	if err := s.kill(r); err != nil {
		return err
	}
	return os.Remove(s.recordPath(node, name))
}

func (s *Supervisor) kill(r Record) error {
	grace := s.StopGrace
	if grace == 0 {
		grace = 2 * time.Second
	}
	return Terminate(s.Proc, r.PID, r.Start, grace)
}

// Terminate ends the incarnation of pid started at start: SIGTERM, SIGKILL
// if it still runs after grace, and it waits (as long again) until the
// process is gone. One that is not running is no error.
func Terminate(p Proc, pid int, start uint64, grace time.Duration) error {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if !p.Alive(pid, start) {
			return nil
		}
		if err := p.Signal(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
		for end := time.Now().Add(grace); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if !p.Alive(pid, start) {
				return nil
			}
		}
	}
	return fmt.Errorf("pid %d survived SIGKILL", pid)
}

// logTail returns the last lines of a log for an error message.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return "\n  log " + path + ":\n    " + strings.Join(lines, "\n    ")
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
