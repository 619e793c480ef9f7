package plan

import (
	"slices"
	"sort"

	"labctl/lab/component"
	"labctl/lab/nat"
	"labctl/lab/topology"
)

// StepsPart is a lab part (lab/component) that adds steps to a plan: what
// its nodes should have against what the engine observed for it
// (NSState.Parts). Its steps name the part, carry its payload, and go in
// one of the Phases; the engine hands them to the part's driver.
type StepsPart interface {
	component.Part
	Steps(t *topology.Topology, obs *Observed) []Step
}

// NATPart is a lab part that adds NAT rules to a node (the internet's
// carrier-grade NAT); they are synced with the node's other NAT rules.
type NATPart interface {
	component.Part
	NATRules(t *topology.Topology, n *topology.Node) []nat.Rule
}

// PartState is what a part observed in a namespace, by part name: a
// summary its Steps compares with what it wants (a hash, say).
func (st *NSState) PartState(part string) string {
	if st == nil {
		return ""
	}
	return st.Parts[part]
}

// partSteps adds every registered part's steps, each in its phase: the
// plan's steps stay in phase order, the parts' after the core's of the
// same phase.
func partSteps(p *Plan, t *topology.Topology, obs *Observed) {
	var extra []Step
	for _, sp := range component.Implementing[StepsPart]() {
		for _, s := range sp.Steps(t, obs) {
			s.Part = sp.Name()
			extra = append(extra, s)
		}
	}
	if len(extra) == 0 {
		return
	}
	p.Steps = append(p.Steps, extra...)
	sort.SliceStable(p.Steps, func(i, j int) bool {
		return slices.Index(Phases, p.Steps[i].Phase) < slices.Index(Phases, p.Steps[j].Phase)
	})
}
