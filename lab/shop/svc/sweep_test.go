package svc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

// expirerFunc is an Expirer from a function.
type expirerFunc func(context.Context) (int64, error)

func (f expirerFunc) ReleaseExpired(ctx context.Context) (int64, error) { return f(ctx) }

// Sweep sweeps as soon as it starts (an instance back after a fault does
// not wait an interval), goes on after a failed sweep (the database down),
// and stops with its context.
func TestSweepAtStartAndAfterFailures(t *testing.T) {
	// calls gets each sweep's number without ever blocking Sweep.
	calls := make(chan int, 1)
	var n atomic.Int64
	st := expirerFunc(func(context.Context) (int64, error) {
		i := n.Add(1)
		select {
		case calls <- int(i):
		default:
		}
		if i <= 2 {
			return 0, errors.New("database down")
		}
		return 1, nil
	})
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	wait := func(what string, until func(int) bool) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case i := <-calls:
				if until(i) {
					return
				}
			case <-timeout:
				t.Fatalf("%s: not within 10s (%d sweeps)", what, n.Load())
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Sweep(ctx, st, time.Hour, quiet)
	}()
	wait("the first sweep, before any tick of an hour", func(int) bool { return true })
	cancel()
	<-done

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	done = make(chan struct{})
	go func() {
		defer close(done)
		Sweep(ctx, st, time.Millisecond, quiet)
	}()
	// The second sweep fails too; Sweep goes on to a succeeding one.
	wait("a sweep after the failures", func(i int) bool { return i >= 4 })
	cancel()
	<-done
}
