package cli

import (
	"github.com/spf13/cobra"

	"labctl/lab/component"
	"labctl/lab/doctor"
	"labctl/lab/engine"
	"labctl/lab/plan"
	"labctl/lab/topology"
)

// hooksOf names the steps of a lab's life a part takes part in.
func hooksOf(p component.Part) []string {
	var out []string
	for _, h := range []struct {
		name string
		ok   bool
	}{
		{"check", is[topology.CheckPart](p)},
		{"expand", is[topology.ExpandPart](p)},
		{"plan", is[plan.StepsPart](p)},
		{"prepare", is[engine.PreparePart](p)},
		{"apply", is[engine.ApplyPart](p)},
		{"observe", is[engine.ObservePart](p)},
		{"inspect", is[engine.DescribePart](p)},
		{"doctor", is[doctor.ProbesPart](p)},
		{"verbs", is[CommandsPart](p)},
	} {
		if h.ok {
			out = append(out, h.name)
		}
	}
	return out
}

func is[T any](p component.Part) bool { _, ok := p.(T); return ok }

// partCommands are the verbs the registered parts add.
func partCommands(g *globals) []*cobra.Command {
	var out []*cobra.Command
	for _, p := range component.Implementing[CommandsPart]() {
		out = append(out, p.Commands(Output{W: g.out, JSON: func() bool { return g.format == "json" }})...)
	}
	return out
}
