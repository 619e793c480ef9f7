package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"labctl/lab/links"
	"labctl/lab/plan"
	"labctl/lab/state"
	"labctl/lab/topology"
)

// Link cuts (up false) or mends the link between a and b of a running lab.
//
// A cut sets both ends administratively down and records it, so that
// later reconvergence keeps it down; the kernel drops the routes through
// those interfaces and their IPv6 addresses, as it would. Mending removes
// the record and re-converges the two nodes from the lab's recorded
// topology (observe → plan → apply, restricted to them): the links come
// up, and what the kernel dropped is put back. `Up` mends every cut.
func (e *Engine) Link(ctx context.Context, lab string, a, b topology.Endpoint, up bool) (*Result, error) {
	start := time.Now()
	unlock, err := state.Lock(lab)
	if err != nil {
		return nil, err
	}
	defer unlock()
	rec, err := state.Load(lab)
	if err != nil {
		return nil, err
	}
	t := rec.Topology
	if t == nil {
		return nil, fmt.Errorf("lab %s: record has no topology", lab)
	}
	pair := [2]string{a.String(), b.String()}
	same := func(c [2]string) bool { return c == pair || c == [2]string{pair[1], pair[0]} }
	res := &Result{Lab: lab, Plan: &plan.Plan{Lab: lab, File: t.File}}
	if !up {
		// Recorded even when only one end went down: `link up` (or up)
		// then mends it, routes included.
		var err error
		for _, ep := range []topology.Endpoint{a, b} {
			if err = links.SetLinkUp(topology.Namespace(lab, ep.Node), ep.Iface, false); err != nil {
				break
			}
		}
		if !slices.ContainsFunc(rec.Cut, same) {
			rec.Cut = append(rec.Cut, pair)
		}
		res.Elapsed = time.Since(start)
		if err != nil {
			return res, errors.Join(err, state.Save(rec))
		}
		return res, state.Save(rec)
	}

	// Forget the cut first: the plan then wants the link up again.
	rec.Cut = slices.DeleteFunc(rec.Cut, same)
	if err := state.Save(rec); err != nil {
		return res, err
	}
	drv := links.New()
	defer drv.Close()
	sup := e.Supervisor(lab)
	t0 := time.Now()
	obs, err := e.observe(ctx, drv, sup, t, e.ownedNamespaces(lab, rec))
	if err != nil {
		return res, fmt.Errorf("observe lab %s: %w", lab, err)
	}
	obs.Cut = cutEnds(rec.Cut)
	// Only the two ends lost anything: other nodes are not this verb's to
	// change (a service someone stopped stays stopped until `up`).
	full := plan.Compute(t, obs)
	p := &plan.Plan{Lab: full.Lab, File: full.File, Nodes: full.Nodes, Links: full.Links}
	for _, s := range full.Steps {
		if s.Node == a.Node || s.Node == b.Node {
			p.Steps = append(p.Steps, s)
		}
	}
	res.Plan, res.Changes = p, len(p.Steps)
	e.report(Event{Lab: lab, Phase: "observe", Status: "ok", Elapsed: time.Since(t0),
		Message: fmt.Sprintf("%d changes planned for %s and %s", len(p.Steps), a.Node, b.Node)})
	if err := e.apply(ctx, drv, sup, t, p); err != nil {
		return res, err
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// cutEnds is the set of interfaces of the cut links.
func cutEnds(cut [][2]string) map[string]bool {
	if len(cut) == 0 {
		return nil
	}
	out := map[string]bool{}
	for _, c := range cut {
		out[c[0]], out[c[1]] = true, true
	}
	return out
}

// Drift is one difference between a lab's kernel state and its recorded
// topology: one step `up` would take.
type Drift struct {
	Node string `json:"node,omitempty"`
	Kind string `json:"kind"` // "route missing", "link down", …
	Item string `json:"item"` // "default via 100.64.0.1", "eth0", …
	Step string `json:"step"` // the step, as `up -v` prints it
}

// drift is what a plan against the observed kernel would change, leaving
// the deliberately cut links alone.
func (e *Engine) drift(ctx context.Context, rec *state.Lab, owned []string) ([]Drift, error) {
	drv := links.New()
	defer drv.Close()
	obs, err := e.observe(ctx, drv, e.Supervisor(rec.Name), rec.Topology, owned)
	if err != nil {
		return nil, err
	}
	obs.Cut = cutEnds(rec.Cut)
	out := []Drift{}
	for _, s := range plan.Compute(rec.Topology, obs).Steps {
		out = append(out, describe(s, obs))
	}
	return out, nil
}

// describe says what a step would mend, for people.
func describe(s plan.Step, obs *plan.Observed) Drift {
	d := Drift{Node: s.Node, Step: s.String(), Item: s.Iface}
	if s.Part != "" {
		d.Kind, d.Item = s.Part+" changed", ""
		return d
	}
	switch s.Op {
	case plan.OpRouteAdd:
		d.Kind, d.Item = "route missing", s.Route.String()
	case plan.OpRouteDel:
		d.Kind, d.Item = "route not in the file", s.Route.String()
	case plan.OpAddrAdd:
		d.Kind, d.Item = "address missing", s.Iface+" "+s.Addr
	case plan.OpAddrDel:
		d.Kind, d.Item = "address not in the file", s.Iface+" "+s.Addr
	case plan.OpLinkSet:
		d.Kind = "link with another mtu"
		if st := obs.Namespaces[s.NS]; st != nil && st.Links[s.Iface] != nil && !st.Links[s.Iface].Up {
			d.Kind = "link down"
		}
	case plan.OpVethAdd:
		d.Kind, d.Item = "link missing", s.Iface+" ── "+s.PeerNode+":"+s.PeerIface
	case plan.OpLinkDel:
		d.Kind = "link to remove"
	case plan.OpNetnsAdd:
		d.Kind, d.Item = "namespace missing", s.NS
	case plan.OpNetnsDel:
		d.Kind, d.Item = "namespace not in the file", s.NS
	case plan.OpBridgeAdd:
		d.Kind = "bridge missing"
	case plan.OpPortAttach:
		d.Kind = "port detached"
	case plan.OpSysctlSet:
		d.Kind, d.Item = "sysctl changed", s.Key+"="+s.Value
	case plan.OpNATSync:
		d.Kind, d.Item = "nat table changed", ""
	case plan.OpOVSConfig:
		d.Kind, d.Item = "switch configuration changed", ""
	case plan.OpFileWrite, plan.OpFileDel:
		d.Kind, d.Item = "file changed", s.Path
	case plan.OpServiceStart:
		d.Kind, d.Item = "service not running", s.Svc
	case plan.OpServiceStop:
		d.Kind, d.Item = "service to stop", s.Svc+" ("+s.Reason+")"
	default:
		d.Kind, d.Item = s.Op, s.String()
	}
	return d
}
