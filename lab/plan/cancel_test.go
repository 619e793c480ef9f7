package plan_test

import (
	"context"
	"errors"
	"testing"

	"labctl/lab/plan"
	"labctl/lab/topology"
)

// TestComputeCancelled: a cancelled context stops the plan of a large lab
// (SIGTERM used to be ignored until the whole plan was printed).
func TestComputeCancelled(t *testing.T) {
	big, err := topology.Generate("big", "linear", 20000, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p, err := plan.ComputeContext(ctx, big, nil)
	if !errors.Is(err, context.Canceled) || p != nil {
		t.Fatalf("ComputeContext with a cancelled context = %v, %v; want nil, context.Canceled", p, err)
	}
	// Not cancelled, it plans as Compute does.
	small, _ := topology.Generate("small", "linear", 3, 0)
	if err := small.Validate(); err != nil {
		t.Fatal(err)
	}
	p, err = plan.ComputeContext(context.Background(), small, nil)
	if err != nil || p.String() != plan.Compute(small, nil).String() {
		t.Fatalf("ComputeContext = %v, want Compute's plan", err)
	}
}
