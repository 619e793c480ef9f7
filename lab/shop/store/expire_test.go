package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pastDeadline waits until the database's clock is past every deadline
// of a deduction made with Hold d before the call.
func pastDeadline(t *testing.T, s *Store, d time.Duration) {
	t.Helper()
	time.Sleep(d + 10*time.Millisecond)
	var left int64
	if err := s.pool.QueryRow(context.Background(),
		"SELECT count(*) FROM reservations WHERE expires_at > now() AND expires_at <= now() + $1::bigint * interval '1 microsecond'",
		d.Microseconds()).Scan(&left); err != nil || left != 0 {
		t.Fatalf("deadlines still ahead: %d, %v", left, err)
	}
}

// A deduction whose order is never written (its order service died
// between the two) is given back once its deadline has passed, without
// the order id being ordered again; a late insert of that order then
// fails, and ordering again deducts anew, once.
func TestReleaseExpired(t *testing.T) {
	s := newStore(t, Catalog{Products: []Product{phone}}) // stock 10
	ctx := context.Background()
	order := func(id string, qty int32) Order {
		return Order{ID: id, User: "ann", SKU: "phone-x", Quantity: qty, PriceCents: 6800, TotalCents: 6800 * int64(qty)}
	}
	// Before its deadline a deduction without its order stays.
	s.Hold = time.Hour
	if _, err := s.Deduct(ctx, "young", "phone-x", 1); err != nil {
		t.Fatal(err)
	}
	if n, err := s.ReleaseExpired(ctx); n != 0 || err != nil {
		t.Fatalf("sweep before any deadline: %d, %v; want 0", n, err)
	}

	const hold = 5 * time.Millisecond
	s.Hold = hold
	if _, err := s.Deduct(ctx, "crashed", "phone-x", 2); err != nil { // its order is never inserted
		t.Fatal(err)
	}
	if _, err := s.Deduct(ctx, "done", "phone-x", 3); err != nil {
		t.Fatal(err)
	}
	if _, created, err := s.InsertOrder(ctx, order("done", 3)); !created || err != nil {
		t.Fatalf("insert done: %v %v", created, err)
	}
	pastDeadline(t, s, hold)

	if n, err := s.ReleaseExpired(ctx); n != 1 || err != nil {
		t.Fatalf("sweep: released %d, %v; want 1 (crashed: not young, whose deadline is ahead, nor done, whose order is stored)", n, err)
	}
	// young 1 + done 3 taken; crashed's 2 back. Versions: 3 deductions, 1 release.
	if p, _ := s.Product(ctx, "phone-x"); p.Stock != 6 || p.Version != 4 {
		t.Fatalf("after the sweep: stock %d version %d, want 6 and 4", p.Stock, p.Version)
	}
	if n, err := s.ReleaseExpired(ctx); n != 0 || err != nil {
		t.Fatalf("second sweep: %d, %v; want 0", n, err)
	}
	if ok, err := s.Release(ctx, "crashed"); ok || err != nil {
		t.Fatalf("compensating release after the sweep: %v %v; want false (given back once)", ok, err)
	}
	if ok, err := s.Release(ctx, "done"); ok || err != nil {
		t.Fatalf("release of a stored order: %v %v; want false", ok, err)
	}
	// The crashed attempt's insert, arriving late, is refused.
	if _, _, err := s.InsertOrder(ctx, order("crashed", 2)); !errors.Is(err, ErrNoDeduction) {
		t.Fatalf("late insert of crashed: %v, want ErrNoDeduction", err)
	}
	if p, _ := s.Product(ctx, "phone-x"); p.Stock != 6 || p.Version != 4 {
		t.Fatalf("after the late insert: stock %d version %d, want 6 and 4", p.Stock, p.Version)
	}
	// Ordering crashed again deducts anew, once.
	s.Hold = time.Hour
	if d, err := s.Deduct(ctx, "crashed", "phone-x", 2); err != nil || d.Replayed || d.StockLeft != 4 {
		t.Fatalf("crashed again: %+v %v; want a new deduction leaving 4", d, err)
	}
	if d, err := s.Deduct(ctx, "crashed", "phone-x", 2); err != nil || !d.Replayed || d.StockLeft != 4 {
		t.Fatalf("crashed a third time: %+v %v; want the second deduction replayed", d, err)
	}
	if _, created, err := s.InsertOrder(ctx, order("crashed", 2)); !created || err != nil {
		t.Fatalf("insert crashed: %v %v", created, err)
	}
	var pending, orphans int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE expires_at IS NOT NULL),
		count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = r.order_id)) FROM reservations r`).
		Scan(&pending, &orphans); err != nil {
		t.Fatal(err)
	}
	if pending != 1 || orphans != 1 { // young
		t.Fatalf("%d pending deductions, %d without an order; want 1 and 1 (young)", pending, orphans)
	}
}

// Order inserts racing sweeps, on deductions all past their deadline:
// each order is either stored with its deduction or refused with its
// stock given back, never both, never neither; no stock is lost or made.
func TestReleaseExpiredRacesInserts(t *testing.T) {
	const rounds, per, stock = 20, 10, 1000
	s := newStore(t, Catalog{Products: []Product{{SKU: "a", Name: "A", PriceCents: 1, Stock: stock}, {SKU: "b", Name: "B", PriceCents: 1, Stock: stock}}})
	ctx := context.Background()
	const hold = 5 * time.Millisecond
	s.Hold = hold
	sku := func(i int) string { return []string{"a", "b"}[i%2] }
	const n = rounds * per
	stored := make([]bool, n)
	var released atomic.Int64
	errs := make(chan error, 2*n)
	for r := range rounds {
		for i := r * per; i < (r+1)*per; i++ {
			if _, err := s.Deduct(ctx, fmt.Sprint("o", i), sku(i), 1); err != nil {
				t.Fatal(err)
			}
		}
		pastDeadline(t, s, hold)
		// The inserts and two sweeps start together.
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := r * per; i < (r+1)*per; i++ {
			wg.Go(func() {
				<-start
				_, created, err := s.InsertOrder(ctx, Order{ID: fmt.Sprint("o", i), User: "u", SKU: sku(i), Quantity: 1, PriceCents: 1, TotalCents: 1})
				switch {
				case err == nil && created:
					stored[i] = true
				case !errors.Is(err, ErrNoDeduction):
					errs <- fmt.Errorf("insert o%d: %v %v", i, created, err)
				}
			})
		}
		for range 2 {
			wg.Go(func() {
				<-start
				k, err := s.ReleaseExpired(ctx)
				if err != nil {
					errs <- err
				}
				released.Add(k)
			})
		}
		close(start)
		wg.Wait()
	}
	k, err := s.ReleaseExpired(ctx)
	if err != nil {
		t.Fatal(err)
	}
	released.Add(k)
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	var orders int64
	for i := range n {
		var order, reservation bool
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM orders WHERE id = $1), EXISTS (SELECT 1 FROM reservations WHERE order_id = $1)`,
			fmt.Sprint("o", i)).Scan(&order, &reservation); err != nil {
			t.Fatal(err)
		}
		if order != stored[i] || reservation != stored[i] {
			t.Errorf("o%d: insert stored it %v; order stored %v, deduction kept %v", i, stored[i], order, reservation)
		}
		if order {
			orders++
		}
	}
	if orders+released.Load() != n {
		t.Errorf("%d orders stored and %d deductions released, of %d", orders, released.Load(), n)
	}
	ps, err := s.Products(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var left, versions int64
	for _, p := range ps {
		left += p.Stock
		versions += p.Version
	}
	if left+orders != 2*stock || versions != n+released.Load() {
		t.Errorf("stock %d + %d ordered, want %d; versions %d, want %d deductions + %d releases",
			left, orders, 2*stock, versions, n, released.Load())
	}
	t.Logf("%d stored, %d released", orders, released.Load())
}

// waitingOnLock waits until some backend of s waits for a lock.
func waitingOnLock(t *testing.T, s *Store) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		var n int64
		if err := s.pool.QueryRow(context.Background(),
			"SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
	}
	t.Fatal("no backend waits for a lock")
}

// The two orders of a sweep and an order insert on one expired deduction,
// each held open in a transaction: the insert that comes second waits for
// the sweep and fails; the sweep that comes second skips the deduction.
func TestReleaseExpiredInterleavings(t *testing.T) {
	s := newStore(t, Catalog{Products: []Product{phone}})
	ctx := context.Background()
	const hold = 5 * time.Millisecond
	s.Hold = hold
	for _, id := range []string{"swept", "kept"} {
		if _, err := s.Deduct(ctx, id, "phone-x", 1); err != nil {
			t.Fatal(err)
		}
	}
	pastDeadline(t, s, hold)
	order := func(id string) Order {
		return Order{ID: id, User: "ann", SKU: "phone-x", Quantity: 1, PriceCents: 6800, TotalCents: 6800}
	}

	// The sweep first, uncommitted: it holds both; the insert waits, then
	// finds the deduction gone.
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := tx.QueryRow(ctx, releaseExpired, 1).Scan(&n); err != nil || n != 1 {
		t.Fatalf("sweep in a transaction: %d %v", n, err)
	}
	var first string
	if err := tx.QueryRow(ctx, "SELECT order_id FROM reservations WHERE order_id IN ('swept', 'kept') AND expires_at IS NOT NULL").Scan(&first); err != nil {
		t.Fatal(err) // the one it did not take (LIMIT 1)
	}
	taken := map[string]string{"swept": "kept", "kept": "swept"}[first]
	inserted := make(chan error, 1)
	go func() { _, _, err := s.InsertOrder(ctx, order(taken)); inserted <- err }()
	waitingOnLock(t, s)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-inserted; !errors.Is(err, ErrNoDeduction) {
		t.Fatalf("insert of %s after the sweep took it: %v, want ErrNoDeduction", taken, err)
	}

	// The insert first, uncommitted: the sweep passes the deduction by
	// without waiting; once committed, the order stands on it.
	tx, err = s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	o := order(first)
	if _, err := tx.Exec(ctx, insertOrder, o.ID, o.User, o.SKU, o.Quantity, o.PriceCents, o.DiscountCents, o.TotalCents, o.Coupon,
		o.Region, o.Controller, o.OrderInstance, o.InventoryInstance, o.ClientAddr, o.StockLeft, o.CASAttempts); err != nil {
		t.Fatal(err)
	}
	if n, err := s.ReleaseExpired(ctx); n != 0 || err != nil {
		t.Fatalf("sweep while %s's insert is open: %d %v, want 0", first, n, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := s.ReleaseExpired(ctx); n != 0 || err != nil {
		t.Fatalf("sweep after %s's insert: %d %v, want 0", first, n, err)
	}
	if _, err := s.GetOrder(ctx, first); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.Product(ctx, "phone-x"); p.Stock != 9 || p.Version != 3 {
		t.Fatalf("stock %d version %d, want 9 and 3 (two deductions, one release)", p.Stock, p.Version)
	}
}

// The coupon use of an order never stored goes back with its stock: the
// coupon's remaining count is as before, and ordering the id again takes
// the coupon anew, once. A stored order keeps its use.
func TestReleaseExpiredGivesBackCoupon(t *testing.T) {
	s := newStore(t, Catalog{Products: []Product{phone}, Coupons: []Coupon{{Code: "D11-10", DiscountCents: 1000, MinTotalCents: 5000, Remaining: 3}}})
	ctx := context.Background()
	remaining := func() (n int64) {
		t.Helper()
		if err := s.pool.QueryRow(ctx, "SELECT remaining FROM coupons WHERE code = 'D11-10'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	const hold = 5 * time.Millisecond
	s.Hold = hold
	for _, id := range []string{"crashed", "done"} {
		if _, err := s.Deduct(ctx, id, "phone-x", 1); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Redeem(ctx, id, "D11-10", "ann", 6800); err != nil {
			t.Fatal(err)
		}
	}
	done := Order{ID: "done", User: "ann", SKU: "phone-x", Quantity: 1, PriceCents: 6800, DiscountCents: 1000, TotalCents: 5800, Coupon: "D11-10"}
	if _, created, err := s.InsertOrder(ctx, done); !created || err != nil {
		t.Fatalf("insert done: %v %v", created, err)
	}
	if n := remaining(); n != 1 {
		t.Fatalf("remaining %d after two uses, want 1", n)
	}
	pastDeadline(t, s, hold)
	if n, err := s.ReleaseExpired(ctx); n != 1 || err != nil {
		t.Fatalf("sweep: %d, %v; want 1", n, err)
	}
	if n := remaining(); n != 2 {
		t.Fatalf("remaining %d after the sweep, want 2 (crashed's use given back, done's kept)", n)
	}
	var uses int64
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM coupon_uses").Scan(&uses); err != nil || uses != 1 {
		t.Fatalf("%d coupon uses (%v), want 1 (done's)", uses, err)
	}
	// Ordering crashed again redeems anew, not a replay of the given-back use.
	s.Hold = time.Hour
	if _, err := s.Deduct(ctx, "crashed", "phone-x", 1); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Redeem(ctx, "crashed", "D11-10", "ann", 6800); err != nil || r.Replayed {
		t.Fatalf("redeem crashed again: %+v %v; want a new use", r, err)
	}
	if n := remaining(); n != 1 {
		t.Fatalf("remaining %d, want 1", n)
	}
}
