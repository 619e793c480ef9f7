package service_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"labctl/lab/plan"
	"labctl/lab/service"
	"labctl/lab/topology"
)

// behaviour is what the fake does with one service ("node/svc").
type behaviour struct {
	startErr   error         // Start fails
	dieAtStart bool          // the process exits at once
	dieAfter   int           // dies after this many failed probes (0: never)
	readyAfter int           // probes that fail before one succeeds
	never      bool          // never ready
	readyWhen  []string      // also not ready until these services have started
	ignoreTerm bool          // SIGTERM does not end it
	log        string        // written to the log file by Start
	hold       time.Duration // Start takes this long
}

type startCall struct {
	Key  string
	NS   string
	Argv []string
	Env  []string
	Log  string
	At   time.Time
	Seq  int
}

type sigCall struct {
	PID int
	Sig syscall.Signal
}

type fakeProcess struct {
	key        string
	pid        int
	start      uint64
	alive      bool
	probes     int
	readySeq   int // event number at which it became ready; 0 = not yet
	startedSeq int
	b          *behaviour
}

// fakeProc is a Proc that runs nothing: it records what the supervisor
// asks for and plays each service's behaviour.
type fakeProc struct {
	mu      sync.Mutex
	behave  map[string]*behaviour
	byReady map[*topology.Ready]string // readiness spec -> service key
	procs   map[int]*fakeProcess
	latest  map[string]*fakeProcess
	starts  []startCall
	signals []sigCall
	seq     int
	nextPID int

	starting, maxStarting int // services started but not yet ready
	sigErr                error
}

func newFake(top *topology.Topology, behave map[string]*behaviour) *fakeProc {
	f := &fakeProc{behave: behave, byReady: map[*topology.Ready]string{}, procs: map[int]*fakeProcess{},
		latest: map[string]*fakeProcess{}, nextPID: 4000}
	if f.behave == nil {
		f.behave = map[string]*behaviour{}
	}
	for n, nd := range top.Nodes {
		for sn, s := range nd.Services {
			if s.Ready != nil {
				f.byReady[s.Ready] = n + "/" + sn
			}
		}
	}
	return f
}

func envValue(env []string, k string) string {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, k+"="); ok {
			return v
		}
	}
	return ""
}

func (f *fakeProc) Start(ns string, argv, env []string, logPath string) (int, error) {
	key := envValue(env, "LABCTL_NODE") + "/" + envValue(env, "LABCTL_SERVICE")
	f.mu.Lock()
	b := f.behave[key]
	if b == nil {
		b = &behaviour{}
	}
	f.seq++
	f.starts = append(f.starts, startCall{Key: key, NS: ns, Argv: slices.Clone(argv), Env: slices.Clone(env),
		Log: logPath, At: time.Now(), Seq: f.seq})
	f.mu.Unlock()

	if b.log != "" {
		lf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return 0, err
		}
		fmt.Fprint(lf, b.log)
		lf.Close()
	}
	if b.hold > 0 {
		time.Sleep(b.hold)
	}
	if b.startErr != nil {
		return 0, b.startErr
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextPID++
	p := &fakeProcess{key: key, pid: f.nextPID, start: uint64(f.nextPID) * 7, alive: !b.dieAtStart, b: b, startedSeq: f.seq}
	f.procs[p.pid] = p
	f.latest[key] = p
	if p.alive {
		f.starting++
		f.maxStarting = max(f.maxStarting, f.starting)
	}
	return p.pid, nil
}

func (f *fakeProc) StartTime(pid int) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.procs[pid]
	if p == nil {
		return 0, errors.New("no such process")
	}
	return p.start, nil
}

func (f *fakeProc) Alive(pid int, start uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.procs[pid]
	return p != nil && p.alive && (start == 0 || start == p.start)
}

func (f *fakeProc) Signal(pid int, sig syscall.Signal) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.signals = append(f.signals, sigCall{pid, sig})
	if f.sigErr != nil {
		return f.sigErr
	}
	p := f.procs[pid]
	if p == nil {
		return syscall.ESRCH
	}
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM && !p.b.ignoreTerm {
		f.die(p)
	}
	return nil
}

func (f *fakeProc) die(p *fakeProcess) {
	if p.alive && p.readySeq == 0 {
		f.starting--
	}
	p.alive = false
}

func (f *fakeProc) Probe(ctx context.Context, ns string, r *topology.Ready) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	key, ok := f.byReady[r]
	if !ok {
		return fmt.Errorf("fake: unknown readiness spec %+v", r)
	}
	p := f.latest[key]
	if p == nil || !p.alive {
		return fmt.Errorf("fake: %s not running", key)
	}
	p.probes++
	b := p.b
	if b.dieAfter > 0 && p.probes > b.dieAfter {
		f.die(p)
		return errors.New("connection refused")
	}
	if b.never || p.probes <= b.readyAfter {
		return errors.New("connection refused")
	}
	for _, k := range b.readyWhen {
		if f.latest[k] == nil {
			return fmt.Errorf("waiting for %s to start", k)
		}
	}
	if p.readySeq == 0 {
		f.seq++
		p.readySeq = f.seq
		f.starting--
	}
	return nil
}

// kill makes a service's process exit.
func (f *fakeProc) kill(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.latest[key]; p != nil {
		f.die(p)
	}
}

func (f *fakeProc) startCalls() []startCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.starts)
}

func (f *fakeProc) startKeys() []string {
	var out []string
	for _, s := range f.startCalls() {
		out = append(out, s.Key)
	}
	return out
}

func (f *fakeProc) signalsTo(pid int) []syscall.Signal {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []syscall.Signal
	for _, s := range f.signals {
		if s.PID == pid {
			out = append(out, s.Sig)
		}
	}
	return out
}

// ---------------------------------------------------------------------------

// svc builds a service with a readiness check of its own (the fake tells
// probes apart by the *Ready they are given).
func svc(argv []string, after ...string) *topology.Service {
	return &topology.Service{Command: argv, After: after, Ready: &topology.Ready{TCP: "80", Timeout: topology.Duration(2 * time.Second)}}
}

func lab(t *testing.T, nodes map[string]map[string]*topology.Service) *topology.Topology {
	t.Helper()
	top := &topology.Topology{Name: "tl", Nodes: map[string]*topology.Node{}}
	for n, ss := range nodes {
		top.Nodes[n] = &topology.Node{Kind: "host", Name: n, Services: ss}
	}
	if err := top.Validate(); err != nil {
		t.Fatalf("test topology invalid: %v", err)
	}
	return top
}

func supervisor(t *testing.T, f *fakeProc) *service.Supervisor {
	dir := t.TempDir()
	return &service.Supervisor{Lab: "tl", Dir: filepath.Join(dir, "services"), LogDir: filepath.Join(dir, "logs"),
		Self: "/opt/labctl/bin/labctl", Proc: f, Poll: time.Millisecond, StopGrace: 30 * time.Millisecond}
}

type doneCall struct {
	rec service.Record
	err error
}

func collect() (func(service.Record, error), func() map[string]doneCall) {
	var mu sync.Mutex
	got := map[string]doneCall{}
	return func(r service.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			got[r.Key()] = doneCall{r, err}
		}, func() map[string]doneCall {
			mu.Lock()
			defer mu.Unlock()
			return got
		}
}

func TestStartAllDependencyOrderAndConcurrency(t *testing.T) {
	top := lab(t, map[string]map[string]*topology.Service{
		"db":  {"pg": svc([]string{"pg"})},
		"app": {"cache": svc([]string{"cache"}), "api": svc([]string{"api"}, "cache", "db/pg")},
		"edge": {
			"proxy": svc([]string{"proxy"}, "app/api"),
			"mon":   svc([]string{"mon"}, "db/pg", "app/cache", "proxy"),
		},
		// Two independent services, each ready only once the other has
		// started: they can only both become ready if started together.
		"x": {"left": svc([]string{"left"}), "right": svc([]string{"right"})},
	})
	f := newFake(top, map[string]*behaviour{
		"db/pg":     {readyAfter: 5},
		"app/cache": {readyAfter: 2},
		"app/api":   {readyAfter: 1},
		"x/left":    {readyWhen: []string{"x/right"}},
		"x/right":   {readyWhen: []string{"x/left"}},
	})
	s := supervisor(t, f)
	onDone, results := collect()
	keys := plan.ServiceOrder(top)
	if err := s.StartAll(context.Background(), top, keys, onDone); err != nil {
		t.Fatalf("StartAll: %v", err)
	}

	calls := f.startCalls()
	if len(calls) != len(keys) {
		t.Fatalf("started %v, want each of %v once", f.startKeys(), keys)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range calls {
		node, name, _ := strings.Cut(c.Key, "/")
		for _, d := range top.Nodes[node].Services[name].After {
			dn, ds := topology.SplitServiceRef(node, d)
			dep := f.latest[dn+"/"+ds]
			if dep == nil || dep.readySeq == 0 || dep.readySeq > c.Seq {
				t.Errorf("%s started (event %d) before %s/%s was ready (%+v)", c.Key, c.Seq, dn, ds, dep)
			}
		}
	}
	// x/left and x/right both became ready, so each was started while the
	// other was still starting.
	if f.maxStarting < 2 {
		t.Errorf("no two services were starting at once (max %d): independent services run one by one", f.maxStarting)
	}
	for _, k := range []string{"x/left", "x/right"} {
		if p := f.latest[k]; p == nil || p.readySeq == 0 {
			t.Errorf("%s never became ready", k)
		}
	}
	got := results()
	for _, k := range keys {
		if r, ok := got[k]; !ok || r.err != nil || r.rec.PID == 0 {
			t.Errorf("onDone for %s: %+v", k, r)
		}
	}
}

// Services not passed to StartAll count as running: their dependents do
// not wait for them.
func TestStartAllSubset(t *testing.T) {
	top := lab(t, map[string]map[string]*topology.Service{
		"a": {"base": svc([]string{"base"}), "top": svc([]string{"top"}, "base")},
	})
	f := newFake(top, nil)
	s := supervisor(t, f)
	if err := s.StartAll(context.Background(), top, []string{"a/top"}, nil); err != nil {
		t.Fatal(err)
	}
	if got := f.startKeys(); !reflect.DeepEqual(got, []string{"a/top"}) {
		t.Errorf("started %v", got)
	}
}

func TestReadinessTimeoutFailsDependents(t *testing.T) {
	top := lab(t, map[string]map[string]*topology.Service{
		"a": {"slow": {Command: []string{"slow"}, Ready: &topology.Ready{File: "/run/slow.ready", Timeout: topology.Duration(40 * time.Millisecond)}}},
		"b": {"mid": svc([]string{"mid"}, "a/slow")},
		"c": {"last": svc([]string{"last"}, "b/mid"), "free": svc([]string{"free"})},
	})
	f := newFake(top, map[string]*behaviour{
		"a/slow": {never: true, log: "booting\nstill booting\nport 80 in use\n"},
	})
	s := supervisor(t, f)
	onDone, results := collect()
	start := time.Now()
	err := s.StartAll(context.Background(), top, plan.ServiceOrder(top), onDone)
	if err == nil {
		t.Fatal("StartAll succeeded with a service that never becomes ready")
	}
	if !errors.Is(err, service.ErrNotReady) {
		t.Errorf("error %v does not wrap ErrNotReady", err)
	}
	if errors.Is(err, service.ErrExited) {
		t.Errorf("error %v wraps ErrExited for a running service", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("StartAll took %s with a 40ms readiness timeout", d)
	}
	for _, want := range []string{"a/slow", "port 80 in use", "40ms"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	started := f.startKeys()
	slices.Sort(started)
	if want := []string{"a/slow", "c/free"}; !reflect.DeepEqual(started, want) {
		t.Errorf("started %v, want %v (dependents of a failed service must not start)", started, want)
	}
	got := results()
	if r := got["b/mid"]; r.err == nil || !strings.Contains(r.err.Error(), "a/slow failed") {
		t.Errorf("b/mid reported %v, want the failure of a/slow", r.err)
	}
	if r := got["c/last"]; r.err == nil || !strings.Contains(r.err.Error(), "b/mid failed") {
		t.Errorf("c/last reported %v, want the failure of b/mid", r.err)
	}
	if r := got["c/free"]; r.err != nil {
		t.Errorf("c/free: %v", r.err)
	}
	if r := got["a/slow"]; !errors.Is(r.err, service.ErrNotReady) || r.rec.PID == 0 {
		t.Errorf("a/slow reported %+v", r)
	}
	// The failed service was started, so it keeps its record (for down).
	recs, err := s.Records()
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range recs {
		keys = append(keys, r.Key())
	}
	if want := []string{"a/slow", "c/free"}; !reflect.DeepEqual(keys, want) {
		t.Errorf("records %v, want %v", keys, want)
	}
}

func TestExitWhileStarting(t *testing.T) {
	top := lab(t, map[string]map[string]*topology.Service{
		"a": {
			"crash":  svc([]string{"crash"}),
			"later":  svc([]string{"later"}),
			"noprob": {Command: []string{"noprob"}},
		},
	})
	f := newFake(top, map[string]*behaviour{
		"a/crash":  {dieAtStart: true, log: "panic: cannot bind\n"},
		"a/later":  {readyAfter: 100, dieAfter: 3},
		"a/noprob": {dieAtStart: true},
	})
	s := supervisor(t, f)
	for _, name := range []string{"crash", "later", "noprob"} {
		_, err := s.Start(context.Background(), top, "a", name)
		if !errors.Is(err, service.ErrExited) {
			t.Errorf("%s: error %v does not wrap ErrExited", name, err)
		}
		if errors.Is(err, service.ErrNotReady) {
			t.Errorf("%s: error %v wraps ErrNotReady", name, err)
		}
	}
	_, err := s.Start(context.Background(), top, "a", "crash")
	if err == nil || !strings.Contains(err.Error(), "panic: cannot bind") || !strings.Contains(err.Error(), s.LogPath("a", "crash")) {
		t.Errorf("error %q lacks the log tail", err)
	}
}

func TestStartErrorAndLogTail(t *testing.T) {
	top := lab(t, map[string]map[string]*topology.Service{"a": {"x": svc([]string{"x"})}})
	boom := errors.New("exec: no such file")
	f := newFake(top, map[string]*behaviour{"a/x": {startErr: boom}})
	s := supervisor(t, f)
	if _, err := s.Start(context.Background(), top, "a", "x"); !errors.Is(err, boom) {
		t.Errorf("error %v does not wrap the Proc's", err)
	}
	if recs, _ := s.Records(); len(recs) != 0 {
		t.Errorf("a service that never started has records %v", recs)
	}

	// Only the last lines of a long log are quoted.
	var log strings.Builder
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&log, "line %02d\n", i)
	}
	f.behave["a/x"] = &behaviour{never: true, log: log.String()}
	top.Nodes["a"].Services["x"].Ready.Timeout = topology.Duration(10 * time.Millisecond)
	_, err := s.Start(context.Background(), top, "a", "x")
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	if !strings.Contains(msg, "line 20") || !strings.Contains(msg, "line 16") || strings.Contains(msg, "line 15") {
		t.Errorf("error should quote the last 5 log lines:\n%s", msg)
	}
}

func TestArgvAndEnv(t *testing.T) {
	top := lab(t, map[string]map[string]*topology.Service{
		"h": {
			"web": {Command: []string{"labctl", "serve", "http", "--listen", ":80"}, Env: map[string]string{"B": "2", "A": "x=y"}},
			"sh":  {Command: []string{"sh", "-c", "labctl"}},
		},
	})
	f := newFake(top, nil)
	s := supervisor(t, f)
	rec, err := s.Start(context.Background(), top, "h", "web")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(context.Background(), top, "h", "sh"); err != nil {
		t.Fatal(err)
	}
	calls := f.startCalls()
	web, sh := calls[0], calls[1]
	if want := []string{"/opt/labctl/bin/labctl", "serve", "http", "--listen", ":80"}; !reflect.DeepEqual(web.Argv, want) {
		t.Errorf("argv %v, want %v", web.Argv, want)
	}
	if !reflect.DeepEqual(rec.Command, web.Argv) {
		t.Errorf("record command %v", rec.Command)
	}
	if got := top.Nodes["h"].Services["web"].Command[0]; got != "labctl" {
		t.Errorf("Start changed the topology's command to %q", got)
	}
	if want := []string{"sh", "-c", "labctl"}; !reflect.DeepEqual(sh.Argv, want) {
		t.Errorf("only argv[0] is replaced: %v", sh.Argv)
	}
	if web.NS != "tl-h" || web.Log != s.LogPath("h", "web") {
		t.Errorf("ns %q log %q", web.NS, web.Log)
	}
	for _, e := range []string{"LABCTL_LAB=tl", "LABCTL_NODE=h", "LABCTL_SERVICE=web", "A=x=y", "B=2"} {
		if !slices.Contains(web.Env, e) {
			t.Errorf("env %v lacks %s", web.Env, e)
		}
	}
	if slices.Index(web.Env, "A=x=y") > slices.Index(web.Env, "B=2") {
		t.Errorf("service env not in a stable (sorted) order: %v", web.Env)
	}
	if envValue(sh.Env, "LABCTL_SERVICE") != "sh" || len(sh.Env) != 3 {
		t.Errorf("env %v", sh.Env)
	}

	// Without Self, argv[0] stays as written.
	s.Self = ""
	if _, err := s.Start(context.Background(), top, "h", "web"); err != nil {
		t.Fatal(err)
	}
	if got := f.startCalls()[2].Argv[0]; got != "labctl" {
		t.Errorf("argv[0] %q with no Self", got)
	}
}

func TestRecordsAndObserve(t *testing.T) {
	top := lab(t, map[string]map[string]*topology.Service{
		"b": {"two": {Command: []string{"two"}}},
		"a": {"one": {Command: []string{"one"}, Env: map[string]string{"K": "V"}}},
	})
	f := newFake(top, nil)
	s := supervisor(t, f)
	if recs, err := s.Records(); err != nil || recs != nil {
		t.Errorf("Records before anything started: %v, %v", recs, err)
	}
	if obs, err := s.Observe(); err != nil || len(obs) != 0 {
		t.Errorf("Observe before anything started: %v, %v", obs, err)
	}
	before := time.Now().Add(-time.Second)
	if err := s.StartAll(context.Background(), top, plan.ServiceOrder(top), nil); err != nil {
		t.Fatal(err)
	}
	// Stray files in the directory are ignored.
	os.WriteFile(filepath.Join(s.Dir, "notes.txt"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(s.Dir, "broken.json"), []byte("{"), 0o644)

	recs, err := s.Records()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Key() != "a/one" || recs[1].Key() != "b/two" {
		t.Fatalf("records %+v", recs)
	}
	for _, r := range recs {
		sv := top.Nodes[r.Node].Services[r.Service]
		st, _ := f.StartTime(r.PID)
		if r.NS != topology.Namespace("tl", r.Node) || r.PID == 0 || r.Start != st || r.Hash != plan.ServiceHash(sv) ||
			!reflect.DeepEqual(r.Command, sv.Command) || r.Log != s.LogPath(r.Node, r.Service) || r.Started.Before(before) {
			t.Errorf("record %+v", r)
		}
		if _, err := os.Stat(filepath.Join(s.Dir, r.Node+"."+r.Service+".json")); err != nil {
			t.Errorf("record file: %v", err)
		}
		if !s.Alive(r) {
			t.Errorf("%s not alive", r.Key())
		}
	}

	obs, err := s.Observe()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]plan.ServiceState{
		"a/one": {PID: recs[0].PID, Hash: recs[0].Hash, Alive: true},
		"b/two": {PID: recs[1].PID, Hash: recs[1].Hash, Alive: true},
	}
	if !reflect.DeepEqual(obs, want) {
		t.Errorf("Observe = %+v, want %+v", obs, want)
	}

	// The process dies: the record stays, no longer alive.
	f.kill("b/two")
	obs, _ = s.Observe()
	if st := obs["b/two"]; st.Alive || st.PID != recs[1].PID {
		t.Errorf("after death: %+v", st)
	}
	if !obs["a/one"].Alive {
		t.Error("a/one died with b/two")
	}

	// A PID reused by another process is not the service.
	r := recs[0]
	r.Start++
	if s.Alive(r) {
		t.Error("a record with another start time counts as alive")
	}
	if s.Alive(service.Record{}) {
		t.Error("a record without PID counts as alive")
	}

	// The planner takes what Observe reports: a/one is left running, the
	// dead b/two (changed meanwhile) is started without a stop.
	top.Nodes["b"].Services["two"].Env = map[string]string{"NEW": "1"}
	p := plan.Compute(top, &plan.Observed{Services: obs, Namespaces: map[string]*plan.NSState{
		"tl-a": {Sysctls: plan.NodeSysctls(top.Nodes["a"])}, "tl-b": {Sysctls: plan.NodeSysctls(top.Nodes["b"])},
	}})
	var got []string
	for _, st := range p.Steps {
		got = append(got, st.String())
	}
	if want := []string{"+ service b/two"}; !reflect.DeepEqual(got, want) {
		t.Errorf("plan %v, want %v", got, want)
	}
}

func TestStop(t *testing.T) {
	top := lab(t, map[string]map[string]*topology.Service{
		"a": {"nice": {Command: []string{"nice"}}, "stubborn": {Command: []string{"stubborn"}}, "gone": {Command: []string{"gone"}}},
	})
	f := newFake(top, map[string]*behaviour{"a/stubborn": {ignoreTerm: true}})
	s := supervisor(t, f)
	if err := s.StartAll(context.Background(), top, plan.ServiceOrder(top), nil); err != nil {
		t.Fatal(err)
	}
	recs, _ := s.Records()
	pid := map[string]int{}
	for _, r := range recs {
		pid[r.Service] = r.PID
	}

	if err := s.Stop("a", "nice"); err != nil {
		t.Fatal(err)
	}
	if got := f.signalsTo(pid["nice"]); !reflect.DeepEqual(got, []syscall.Signal{syscall.SIGTERM}) {
		t.Errorf("nice got %v, want SIGTERM only", got)
	}

	start := time.Now()
	if err := s.Stop("a", "stubborn"); err != nil {
		t.Fatal(err)
	}
	if got := f.signalsTo(pid["stubborn"]); !reflect.DeepEqual(got, []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}) {
		t.Errorf("stubborn got %v, want SIGTERM then SIGKILL", got)
	}
	if d := time.Since(start); d < s.StopGrace {
		t.Errorf("SIGKILL after %s, before the grace of %s", d, s.StopGrace)
	}
	if f.Alive(pid["stubborn"], 0) {
		t.Error("stubborn survived SIGKILL")
	}

	// A service that already died gets no signal; its record goes.
	f.kill("a/gone")
	if err := s.Stop("a", "gone"); err != nil {
		t.Fatal(err)
	}
	if got := f.signalsTo(pid["gone"]); len(got) != 0 {
		t.Errorf("dead service signalled %v", got)
	}

	if recs, _ := s.Records(); len(recs) != 0 {
		t.Errorf("records left after Stop: %v", recs)
	}
	if err := s.Stop("a", "nice"); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := s.Stop("zz", "unknown"); err != nil {
		t.Errorf("Stop of an unknown service: %v", err)
	}
}

// A failed signal is returned and the record kept, so a later down retries.
func TestStopSignalError(t *testing.T) {
	top := lab(t, map[string]map[string]*topology.Service{"a": {"x": {Command: []string{"x"}}}})
	f := newFake(top, nil)
	s := supervisor(t, f)
	if _, err := s.Start(context.Background(), top, "a", "x"); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.sigErr = syscall.EPERM
	f.mu.Unlock()
	if err := s.Stop("a", "x"); !errors.Is(err, syscall.EPERM) {
		t.Errorf("Stop = %v, want EPERM", err)
	}
	if recs, _ := s.Records(); len(recs) != 1 {
		t.Errorf("record dropped after a failed stop: %v", recs)
	}
	f.mu.Lock()
	f.sigErr = nil
	f.mu.Unlock()
	if err := s.Stop("a", "x"); err != nil {
		t.Fatal(err)
	}
}

// A cancelled context ends the readiness wait.
func TestStartCancelled(t *testing.T) {
	top := lab(t, map[string]map[string]*topology.Service{"a": {"x": svc([]string{"x"})}})
	top.Nodes["a"].Services["x"].Ready.Timeout = topology.Duration(time.Hour)
	f := newFake(top, map[string]*behaviour{"a/x": {never: true}})
	s := supervisor(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.Start(ctx, top, "a", "x")
	if !errors.Is(err, service.ErrNotReady) {
		t.Errorf("error %v does not wrap ErrNotReady", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("cancelled Start took %s", d)
	}
}

// A service with a Config gets it as a file and `--config FILE` after its
// command; the file is not mistaken for a record, and a changed config
// changes the service's hash (so up restarts it).
func TestConfigFile(t *testing.T) {
	s := svc([]string{"labctl", "serve", "bgp"})
	s.Ready = nil
	s.Config = json.RawMessage(`{"asn":64500}`)
	top := lab(t, map[string]map[string]*topology.Service{"r": {"bgp": s}})
	f := newFake(top, nil)
	sup := supervisor(t, f)
	if _, err := sup.Start(context.Background(), top, "r", "bgp"); err != nil {
		t.Fatal(err)
	}
	path := sup.ConfigPath("r", "bgp")
	if got := f.starts[0].Argv; !slices.Equal(got, []string{"/opt/labctl/bin/labctl", "serve", "bgp", topology.ConfigFlag, path}) {
		t.Errorf("argv %q", got)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]int
	if err := json.Unmarshal(b, &back); err != nil || back["asn"] != 64500 {
		t.Errorf("config file %s: %v %s", path, err, b)
	}
	recs, err := sup.Records()
	if err != nil || len(recs) != 1 || recs[0].Key() != "r/bgp" {
		t.Errorf("records %+v %v", recs, err)
	}
	h := plan.ServiceHash(s)
	s.Config = json.RawMessage(`{"asn":64501}`)
	if plan.ServiceHash(s) == h {
		t.Error("a changed config keeps the service's hash")
	}
}
