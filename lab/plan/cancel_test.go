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
	// Cancelled while it plans: it stops at its next check, not at the end.
	for k := 1; k <= 3; k++ {
		c := &cancelAfter{Context: context.Background(), left: k}
		if p, err := plan.ComputeContext(c, big, nil); !errors.Is(err, context.Canceled) || p != nil {
			t.Fatalf("cancelled after %d checks: %v, %v; want nil, context.Canceled", k, p, err)
		}
		if c.calls != k+1 {
			t.Errorf("cancelled after %d checks, it asked %d times: it did not stop at the next one", k, c.calls)
		}
	}
	// Not cancelled, it plans every namespace.
	small, _ := topology.Generate("small", "linear", 3, 0)
	if err := small.Validate(); err != nil {
		t.Fatal(err)
	}
	p, err = plan.ComputeContext(context.Background(), small, nil)
	if err != nil {
		t.Fatal(err)
	}
	ns := 0
	for _, s := range p.Steps {
		if s.Op == plan.OpNetnsAdd {
			ns++
		}
	}
	if ns != 6 {
		t.Fatalf("plan of linear 3 creates %d namespaces, want 6:\n%s", ns, p)
	}
}

// cancelAfter is a context that is cancelled once Err has been asked left
// times: a cancellation in the middle of the work, at a known point.
type cancelAfter struct {
	context.Context
	left, calls int
}

func (c *cancelAfter) Err() error {
	c.calls++
	if c.calls > c.left {
		return context.Canceled
	}
	return nil
}
