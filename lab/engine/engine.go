// Package engine owns a lab's life: up (observe → plan → apply, with
// rollback), down (by ownership marks, without the topology file), status
// and inspect. Drivers do the work; the engine orders it, runs independent
// nodes concurrently and reports one line per phase.
package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"labctl/lab/component"
	"labctl/lab/links"
	"labctl/lab/nat"
	"labctl/lab/netns"
	"labctl/lab/ovs"
	"labctl/lab/plan"
	"labctl/lab/service"
	"labctl/lab/state"
	"labctl/lab/topology"
)

// Event is one progress report.
type Event struct {
	Time    time.Time     `json:"time"`
	Lab     string        `json:"lab"`
	Phase   string        `json:"phase,omitempty"`
	Status  string        `json:"status"` // ok, fail, step, info
	Steps   int           `json:"steps,omitempty"`
	Elapsed time.Duration `json:"elapsed_ns,omitempty"`
	Step    string        `json:"step,omitempty"`
	Message string        `json:"message,omitempty"`
	Error   string        `json:"error,omitempty"`
}

// Options tune an engine.
type Options struct {
	Workers int         // concurrent nodes; default 4 × CPUs
	Retain  bool        // keep a half-made lab after a failed up
	Report  func(Event) // progress; nil discards
	Self    string      // labctl binary for "labctl" service commands
}

// Engine runs labs.
type Engine struct{ opt Options }

// New returns an engine.
func New(o Options) *Engine {
	if o.Workers <= 0 {
		o.Workers = 4 * runtime.NumCPU()
	}
	if o.Report == nil {
		o.Report = func(Event) {}
	}
	if o.Self == "" {
		o.Self, _ = os.Executable()
	}
	return &Engine{opt: o}
}

func (e *Engine) report(ev Event) {
	ev.Time = time.Now()
	e.opt.Report(ev)
}

// Supervisor returns the service supervisor of a lab.
func (e *Engine) Supervisor(lab string) *service.Supervisor {
	return &service.Supervisor{Lab: lab, Dir: state.ServiceDir(lab), LogDir: state.LogDir(lab), Self: e.opt.Self, Proc: service.OSProc{}}
}

// Result summarises an up.
type Result struct {
	Lab     string        `json:"lab"`
	Changes int           `json:"changes"`
	Elapsed time.Duration `json:"elapsed_ns"`
	Plan    *plan.Plan    `json:"plan"`
}

// ErrCollision is returned when a namespace the lab needs belongs to
// someone else.
var ErrCollision = errors.New("namespace belongs to something else")

// Up makes the kernel match t: creates what is missing, fixes what
// changed, removes what the lab owns but t no longer has, and mends the
// links Link cut. If a fresh lab fails, everything it made is removed
// unless Retain is set.
func (e *Engine) Up(ctx context.Context, t *topology.Topology) (*Result, error) {
	start := time.Now()
	unlock, err := state.Lock(t.Name)
	if err != nil {
		return nil, err
	}
	defer func() { unlock() }()

	prev, err := state.Load(t.Name)
	fresh := errors.Is(err, state.ErrNoLab)
	if err != nil && !fresh {
		return nil, err
	}
	owned := e.ownedNamespaces(t.Name, prev)
	if err := checkCollisions(t, owned); err != nil {
		return nil, err
	}

	drv := links.New()
	defer drv.Close()
	sup := e.Supervisor(t.Name)

	t0 := time.Now()
	obs, err := e.observe(ctx, drv, sup, t, owned)
	if err != nil {
		return nil, fmt.Errorf("observe lab %s: %w", t.Name, err)
	}
	p := plan.Compute(t, obs)
	e.report(Event{Lab: t.Name, Phase: "observe", Status: "ok", Elapsed: time.Since(t0),
		Message: fmt.Sprintf("%d namespaces found, %d changes planned", len(obs.Namespaces), len(p.Steps))})
	// Before anything changes: no file under /etc/netns that is not the
	// lab's is written over, nor any through a symlink.
	if err := links.CheckFiles(p); err != nil {
		return nil, fmt.Errorf("lab %s: %w", t.Name, err)
	}
	res := &Result{Lab: t.Name, Changes: len(p.Steps), Plan: p}
	if p.Empty() && prev != nil && prev.Status == "up" {
		// Its names may have changed; the lab's record exists already.
		if err := e.prepare(ctx, t); err != nil {
			return res, err
		}
		if len(prev.Cut) > 0 { // mended by hand: up mends every cut
			prev.Cut = nil
			if err := state.Save(prev); err != nil {
				return res, err
			}
		}
		res.Elapsed = time.Since(start)
		e.report(Event{Lab: t.Name, Status: "info", Message: "lab is up to date"})
		return res, e.ensureWatcher(t) // up restarts a watcher that was killed
	}

	// Record intent first: every namespace about to exist is listed before
	// it is created, so down finds it even after kill -9.
	rec := &state.Lab{Name: t.Name, File: t.File, Status: "applying", Topology: t}
	if prev != nil {
		// The cuts stay recorded until apply has mended them: a failed up
		// may stop before the links.
		rec.Created, rec.Cut = prev.Created, prev.Cut
	}
	rec.Namespaces = union(owned, desiredNamespaces(t))
	if err := state.Save(rec); err != nil {
		return nil, err
	}

	// The parts' preparations (the lab CA) come after the record (down
	// removes what they make with the state directory) and before any
	// service that serves a certificate.
	applyErr := e.prepare(ctx, t)
	if applyErr == nil {
		applyErr = e.apply(ctx, drv, sup, t, p)
	}
	if applyErr != nil {
		if fresh && !e.opt.Retain {
			e.report(Event{Lab: t.Name, Status: "info", Message: "rolling back (use --retain to keep the half-made lab)"})
			unlock()
			unlock = func() {}
			if derr := e.Down(context.WithoutCancel(ctx), t.Name); derr != nil {
				applyErr = errors.Join(applyErr, fmt.Errorf("rollback: %w", derr))
			}
			return res, applyErr
		}
		rec.Status = "failed"
		rec.Namespaces = union(desiredNamespaces(t), e.ownedNamespaces(t.Name, rec))
		state.Save(rec)
		return res, applyErr
	}
	rec.Status, rec.Cut = "up", nil
	rec.Namespaces = desiredNamespaces(t)
	if err := state.Save(rec); err != nil {
		return res, err
	}
	// After the record: the watcher reads the applied topology from it.
	if err := e.ensureWatcher(t); err != nil {
		return res, err
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// apply runs the plan phase by phase.
func (e *Engine) apply(ctx context.Context, drv *links.Driver, sup *service.Supervisor, t *topology.Topology, p *plan.Plan) error {
	for _, ph := range plan.Phases {
		steps := p.Phase(ph)
		if len(steps) == 0 {
			continue
		}
		t0 := time.Now()
		var err error
		switch ph {
		case plan.PhaseServices:
			err = e.startServices(ctx, sup, t, steps)
		case plan.PhaseOVS:
			// The daemons first (in dependency order), then every host's
			// configuration concurrently.
			var daemons, configs []plan.Step
			for _, s := range steps {
				if s.Op == plan.OpServiceStart {
					daemons = append(daemons, s)
				} else {
					configs = append(configs, s)
				}
			}
			if len(daemons) > 0 {
				err = e.startServices(ctx, sup, t, daemons)
			}
			if err == nil {
				err = e.runPhase(ctx, drv, t.Name, configs, true)
			}
		case plan.PhaseStop:
			var errs []error
			for _, s := range steps {
				errs = append(errs, sup.Stop(s.Node, s.Svc))
			}
			err = errors.Join(errs...)
		default:
			err = e.runPhase(ctx, drv, t.Name, steps, ph == plan.PhaseLinks || ph == plan.PhasePrune || ph == plan.PhaseOffloads || ph == plan.PhaseNAT || ph == plan.PhaseFilters)
		}
		ev := Event{Lab: t.Name, Phase: ph, Status: "ok", Steps: len(steps), Elapsed: time.Since(t0)}
		if err != nil {
			ev.Status, ev.Error = "fail", err.Error()
			e.report(ev)
			return err
		}
		e.report(ev)
	}
	return nil
}

// runPhase applies steps with a bounded pool. Steps of one node run in
// order (a bridge before its ports, an address removal before its
// replacement); different nodes, or every step when independent, run
// concurrently. All errors are collected.
func (e *Engine) runPhase(ctx context.Context, drv *links.Driver, lab string, steps []plan.Step, independent bool) error {
	var groups [][]plan.Step
	if independent {
		for _, s := range steps {
			groups = append(groups, []plan.Step{s})
		}
	} else {
		idx := map[string]int{}
		for _, s := range steps {
			k := s.NS
			i, ok := idx[k]
			if !ok {
				i = len(groups)
				idx[k] = i
				groups = append(groups, nil)
			}
			groups[i] = append(groups[i], s)
		}
	}
	errs := e.each(ctx, len(groups), func(i int) error {
		for _, s := range groups[i] {
			err := applyStep(ctx, drv, lab, s)
			ev := Event{Status: "step", Step: s.String()}
			if err != nil {
				ev.Error = err.Error()
			}
			e.report(ev)
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return joinSorted(errs)
}

// applyStep hands a step to the driver of its component.
func applyStep(ctx context.Context, drv *links.Driver, lab string, s plan.Step) error {
	if s.Part != "" {
		return applyPart(ctx, lab, s)
	}
	switch s.Op {
	case plan.OpTxOff:
		return links.SetTxChecksum(s.NS, s.Iface, false)
	case plan.OpOVSConfig:
		return ovs.Apply(ctx, lab, s)
	case plan.OpNATSync:
		_, err := nat.Sync(s.NS, s.Mark, s.NAT)
		return err
	}
	return drv.Apply(ctx, s)
}

// each runs fn(0..n-1) on at most Workers goroutines and returns every
// error. Items not started when ctx ends are skipped.
func (e *Engine) each(ctx context.Context, n int, fn func(i int) error) []error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	sem := make(chan struct{}, e.opt.Workers)
	for i := 0; i < n && ctx.Err() == nil; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(i); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errs
}

func (e *Engine) startServices(ctx context.Context, sup *service.Supervisor, t *topology.Topology, steps []plan.Step) error {
	keys := make([]string, len(steps))
	for i, s := range steps {
		keys[i] = s.Node + "/" + s.Svc
	}
	return sup.StartAll(ctx, t, keys, func(r service.Record, err error) {
		ev := Event{Lab: t.Name, Status: "step", Step: fmt.Sprintf("+ service %s (pid %d)", r.Key(), r.PID)}
		if err != nil {
			ev.Error = err.Error()
		}
		e.report(ev)
	})
}

// observe reads every owned namespace that exists, concurrently.
func (e *Engine) observe(ctx context.Context, drv *links.Driver, sup *service.Supervisor, t *topology.Topology, owned []string) (*plan.Observed, error) {
	obs := &plan.Observed{Namespaces: map[string]*plan.NSState{}}
	var err error
	if obs.Services, err = sup.Observe(); err != nil {
		return nil, err
	}
	sysctls := map[string][]string{}
	for _, n := range t.Nodes {
		ns := topology.Namespace(t.Name, n.Name)
		sysctls[ns] = slices.Collect(maps.Keys(plan.NodeSysctls(n)))
	}
	var present []string
	for _, ns := range owned {
		if netns.Exists(ns) {
			present = append(present, ns)
		}
	}
	byNS := map[string]*topology.Node{}
	for _, n := range t.Nodes {
		byNS[topology.Namespace(t.Name, n.Name)] = n
	}
	states := make([]*plan.NSState, len(present))
	errs := e.each(ctx, len(present), func(i int) (err error) {
		ns := present[i]
		if states[i], err = drv.Observe(ns, sysctls[ns]); err != nil {
			return fmt.Errorf("%s: %w", ns, err)
		}
		n := byNS[ns]
		if n == nil {
			return nil
		}
		if n.OVS != nil {
			states[i].OVSHash = ovs.Hash(ctx, n.OVS.Dir)
		}
		if k, _ := topology.KindOf(n.Kind); k.Forwarding { // routers: nat, snat, cgnat
			if states[i].NAT, err = nat.List(ns, plan.NSMark(t.Name)); err != nil {
				return fmt.Errorf("%s: %w", ns, err)
			}
		}
		if err := observeParts(ctx, t.Name, n, ns, states[i]); err != nil {
			return fmt.Errorf("%s: %w", ns, err)
		}
		return nil
	})
	for i, st := range states {
		if st != nil {
			obs.Namespaces[present[i]] = st
		}
	}
	return obs, errors.Join(errs...)
}

// ownedNamespaces is every namespace of the lab: those its state lists and
// those carrying its mark on lo (found even if the state was lost).
func (e *Engine) ownedNamespaces(lab string, rec *state.Lab) []string {
	set := map[string]bool{}
	if rec != nil {
		for _, ns := range rec.Namespaces {
			set[ns] = true
		}
	}
	names, _ := netns.List()
	for _, ns := range names {
		if set[ns] || !strings.HasPrefix(ns, lab+"-") {
			continue
		}
		for _, l := range links.LabMarks(ns) {
			if l == lab {
				set[ns] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for ns := range set {
		out = append(out, ns)
	}
	sort.Strings(out)
	return out
}

// checkCollisions refuses to adopt a namespace the lab does not own.
func checkCollisions(t *topology.Topology, owned []string) error {
	own := map[string]bool{}
	for _, ns := range owned {
		own[ns] = true
	}
	var errs []error
	for _, ns := range desiredNamespaces(t) {
		if own[ns] || !netns.Exists(ns) {
			continue
		}
		who := "not labctl"
		if labs := links.LabMarks(ns); len(labs) > 0 {
			who = "lab " + strings.Join(labs, ",")
		}
		errs = append(errs, fmt.Errorf("%s (%s): %w; rename the lab or node", ns, who, ErrCollision))
	}
	return errors.Join(errs...)
}

func desiredNamespaces(t *topology.Topology) []string {
	out := make([]string, 0, len(t.Nodes))
	for _, n := range t.NodeNames() {
		out = append(out, topology.Namespace(t.Name, n))
	}
	return out
}

func union(a, b []string) []string {
	set := map[string]bool{}
	for _, x := range append(append([]string{}, a...), b...) {
		set[x] = true
	}
	out := make([]string, 0, len(set))
	for x := range set {
		out = append(out, x)
	}
	sort.Strings(out)
	return out
}

// joinSorted joins errors in a stable order.
func joinSorted(errs []error) error {
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}

// prepare runs every part's preparation (the lab CA makes its
// certificates) after the lab's record is written and before any service
// needs what it makes.
func (e *Engine) prepare(ctx context.Context, t *topology.Topology) error {
	for _, p := range component.Implementing[PreparePart]() {
		t0 := time.Now()
		msg, err := p.Prepare(ctx, t)
		if err != nil {
			return err
		}
		if msg != "" {
			e.report(Event{Lab: t.Name, Phase: p.Name(), Status: "ok", Steps: 1, Elapsed: time.Since(t0), Message: msg})
		}
	}
	return nil
}
