package doctor

import (
	"context"

	"labctl/lab/component"
	"labctl/lab/netns"
)

// ProbesPart is a lab part (lab/component) with checks of its own: the
// kernel features and programs it needs. Doctor runs them with its own,
// bounded by the same time limit.
type ProbesPart interface {
	component.Part
	Probes() []Probe
}

// Probe is one check a part adds: its fixed fields (Group "kernel" or
// "binaries") and the function that tries the feature, returning nil when
// it works; it may set Detail and Fix.
type Probe struct {
	Check
	Run func(ctx context.Context, c *Check) error
}

// InTemp runs fn inside a fresh network namespace that is deleted after
// it: a part's probe tries its feature there, and leaves nothing behind.
func InTemp(fn func() error) error { return netns.Temp(fn) }

func partProbes() []probe {
	var out []probe
	for _, p := range component.Implementing[ProbesPart]() {
		for _, pr := range p.Probes() {
			out = append(out, probe{Check: pr.Check, run: pr.Run})
		}
	}
	return out
}
