package engine

import (
	"context"
	"fmt"

	"labctl/lab/component"
	"labctl/lab/plan"
	"labctl/lab/topology"
)

// What a lab part (lab/component) adds to a lab's life. The engine orders
// and runs it like its own work; it never needs to know what the part is.

// ApplyPart applies the part's plan steps (those whose Part is its name).
type ApplyPart interface {
	component.Part
	Apply(ctx context.Context, lab string, s plan.Step) error
}

// ObservePart reads what the part made in a node's namespace, as the
// summary its plan steps compare against ("" when it made nothing there).
type ObservePart interface {
	component.Part
	Observe(ctx context.Context, lab string, n *topology.Node, ns string) (string, error)
}

// DescribePart adds the part's section to `labctl inspect`, read back
// from the kernel and its daemons; nil when the lab has none of it.
type DescribePart interface {
	component.Part
	Describe(ctx context.Context, lab string, t *topology.Topology) (*Section, error)
}

// PreparePart makes what the part's services need before any starts, in
// the lab's state directory (the lab CA's certificates): after the lab's
// record, at every up. The message says what changed ("" for nothing).
type PreparePart interface {
	component.Part
	Prepare(ctx context.Context, t *topology.Topology) (string, error)
}

// Section is one part's block of `labctl inspect`: a table for people and
// the part's own data for scripts.
type Section struct {
	Part    string     `json:"part"`
	Title   string     `json:"title"`
	Columns []string   `json:"-"`
	Rows    [][]string `json:"-"`
	Data    any        `json:"data"`
	Error   string     `json:"error,omitempty"`
}

// applyPart hands a part's step to its driver.
func applyPart(ctx context.Context, lab string, s plan.Step) error {
	p, ok := component.Get(s.Part)
	if !ok {
		return fmt.Errorf("%s: no lab part %q is registered", s, s.Part)
	}
	a, ok := p.(ApplyPart)
	if !ok {
		return fmt.Errorf("%s: lab part %s cannot apply steps", s, s.Part)
	}
	return a.Apply(ctx, lab, s)
}

// observeParts fills st.Parts with what each part finds in the namespace.
func observeParts(ctx context.Context, lab string, n *topology.Node, ns string, st *plan.NSState) error {
	for _, p := range component.Implementing[ObservePart]() {
		v, err := p.Observe(ctx, lab, n, ns)
		if err != nil {
			return fmt.Errorf("%s: %w", p.Name(), err)
		}
		if v == "" {
			continue
		}
		if st.Parts == nil {
			st.Parts = map[string]string{}
		}
		st.Parts[p.Name()] = v
	}
	return nil
}

// describeParts collects every part's inspect section.
func describeParts(ctx context.Context, lab string, t *topology.Topology) []Section {
	var out []Section
	for _, p := range component.Implementing[DescribePart]() {
		s, err := p.Describe(ctx, lab, t)
		if err != nil {
			out = append(out, Section{Part: p.Name(), Title: p.Name(), Error: err.Error()})
			continue
		}
		if s != nil {
			s.Part = p.Name()
			out = append(out, *s)
		}
	}
	return out
}
