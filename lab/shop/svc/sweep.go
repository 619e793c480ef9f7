package svc

import (
	"context"
	"log/slog"
	"time"
)

// Expirer gives back the stock of deductions whose order was not stored
// before their deadline; store.Store is one.
type Expirer interface {
	ReleaseExpired(ctx context.Context) (int64, error)
}

// SweepEvery is how often every inventory and order instance gives back
// the expired deductions: a deduction left without its order (its order
// service died, or lost the database or the inventory's answer) is
// released at most store.DefaultHold + SweepEvery after it was made, or
// that long after the database is back.
const SweepEvery = time.Second

// sweepTimeout bounds one sweep, so a database that stopped answering
// does not stall the loop.
const sweepTimeout = 5 * time.Second

// Sweep releases expired deductions at once, then every interval, until
// ctx ends. A failed sweep (the database is down) is logged, at most once
// a second, and the next one tries again: nothing but this loop has to
// survive for an orphaned deduction to be given back.
func Sweep(ctx context.Context, st Expirer, every time.Duration, log *slog.Logger) {
	errs := newErrorLog(log.With("sweeper", "deductions"), time.Second)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		sctx, cancel := context.WithTimeout(ctx, sweepTimeout)
		n, err := st.ReleaseExpired(sctx)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			errs.Error("release expired deductions failed", "err", err)
		case n > 0:
			log.Warn("released deductions whose order was never stored", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
