package loadgen

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestRunCountsAndPercentiles(t *testing.T) {
	var started atomic.Int64
	res := Run(context.Background(), 4, 200*time.Millisecond, func(ctx context.Context, w, seq int) (bool, string) {
		started.Add(1)
		time.Sleep(time.Millisecond)
		if seq%5 == 4 {
			return false, "409 out_of_stock"
		}
		return true, "201"
	})
	if res.Workers != 4 || res.OK+res.Errors != int(started.Load()) {
		t.Fatalf("workers %d, ok %d + errors %d != %d requests", res.Workers, res.OK, res.Errors, started.Load())
	}
	if res.Outcomes["201"] != res.OK || res.Outcomes["409 out_of_stock"] != res.Errors || res.Errors == 0 {
		t.Errorf("outcomes %v, ok %d, errors %d", res.Outcomes, res.OK, res.Errors)
	}
	if !(res.P50 >= time.Millisecond && res.P50 <= res.P90 && res.P90 <= res.P99 && res.P99 <= res.Max) {
		t.Errorf("percentiles out of order: %v %v %v %v", res.P50, res.P90, res.P99, res.Max)
	}
	if res.Duration < 200*time.Millisecond || res.Rate <= 0 {
		t.Errorf("duration %v, rate %v", res.Duration, res.Rate)
	}
}

// The last request of each worker finishes: none is cut off by the end.
func TestRunLetsTheLastRequestFinish(t *testing.T) {
	var finished atomic.Int64
	res := Run(context.Background(), 3, 50*time.Millisecond, func(ctx context.Context, w, seq int) (bool, string) {
		time.Sleep(40 * time.Millisecond)
		if ctx.Err() != nil {
			return false, "cut off"
		}
		finished.Add(1)
		return true, "ok"
	})
	if res.OK != int(finished.Load()) || res.Errors != 0 {
		t.Errorf("ok %d of %d finished, errors %d (%v)", res.OK, finished.Load(), res.Errors, res.Outcomes)
	}
}
