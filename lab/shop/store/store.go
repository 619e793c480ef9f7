// Package store is the shop's PostgreSQL database: products and their
// stock, coupons, and orders, with the queries the shop's services run.
// Stock is taken by compare-and-set on a product's version and at most once
// per order id; a coupon is used at most once per order id. Money is in
// cents.
package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Product is one thing the shop sells. Version counts the changes of its
// stock: Deduct's compare-and-set compares it.
type Product struct {
	SKU        string `json:"sku"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
	Stock      int64  `json:"stock"`
	Version    int64  `json:"version"`
}

// Coupon is a discount code: DiscountCents off an order of at least
// MinTotalCents, for Remaining more orders.
type Coupon struct {
	Code          string `json:"code"`
	DiscountCents int64  `json:"discount_cents"`
	MinTotalCents int64  `json:"min_total_cents"`
	Remaining     int64  `json:"remaining"`
}

// Order is a placed order and the way it went through the lab.
type Order struct {
	ID            string `json:"id"`
	User          string `json:"user"`
	SKU           string `json:"sku"`
	Quantity      int32  `json:"quantity"`
	PriceCents    int64  `json:"price_cents"`
	DiscountCents int64  `json:"discount_cents"`
	TotalCents    int64  `json:"total_cents"`
	Coupon        string `json:"coupon,omitempty"` // "" for none
	// The region and instances that served it, and the client's address.
	Region            string `json:"region"`
	Controller        string `json:"controller"`
	OrderInstance     string `json:"order_instance"`
	InventoryInstance string `json:"inventory_instance"`
	ClientAddr        string `json:"client_addr"`

	StockLeft   int64     `json:"stock_left"`   // the product's stock after its deduction
	CASAttempts int32     `json:"cas_attempts"` // compare-and-sets its deduction ran
	Created     time.Time `json:"created"`      // by the database's clock, set by InsertOrder
}

// Deduction is the outcome of Deduct: the product's stock, version and
// price after it, and how many compare-and-sets it ran. Replayed means the
// order id had its stock already: nothing was taken this time.
type Deduction struct {
	StockLeft, Version, PriceCents int64
	Attempts                       int32
	Replayed                       bool
}

// Redemption is the outcome of Redeem. Replayed means the order id had
// used the coupon already: no use was taken this time.
type Redemption struct {
	DiscountCents int64
	Replayed      bool
}

// The store's refusals, wrapped with details; test with errors.Is.
var (
	ErrUnknownSKU      = errors.New("unknown sku")
	ErrOutOfStock      = errors.New("out of stock")
	ErrContention      = errors.New("stock contended: every compare-and-set lost")
	ErrOrderMismatch   = errors.New("order id already used with other contents")
	ErrUnknownCoupon   = errors.New("unknown coupon")
	ErrCouponExhausted = errors.New("coupon exhausted")
	ErrCouponMinimum   = errors.New("order total below the coupon's minimum")
	ErrNoOrder         = errors.New("no such order")
	// ErrNoDeduction: the order has no stock deduction behind it (another
	// attempt with the same id gave it back); ordering again deducts anew.
	ErrNoDeduction = errors.New("no stock deduction for this order id (given back by a failed attempt): order again")
)

// DefaultMaxRetries is Open's Store.MaxRetries.
const DefaultMaxRetries = 16

// After its n-th lost compare-and-set, Deduct pauses a random time up to
// casPause << min(n, casPauseDoublings) (0.5 to 32 ms): the losers spread
// out and collide less. BenchmarkDeduct, 64 goroutines on one product, 2
// cores: 2-9 % ErrContention and 1,000-5,600 orders/s, against 17 % and
// 900/s with a linear pause of 0.2 ms × n.
const (
	casPause          = 250 * time.Microsecond
	casPauseDoublings = 7
)

// schemaTimeout bounds Open's wait for the schema.
const schemaTimeout = 30 * time.Second

// Store runs the shop's queries on a pool of connections.
type Store struct {
	pool *pgxpool.Pool
	// MaxRetries is how many lost compare-and-sets make one Deduct give
	// up with ErrContention (less than 1 counts as 1).
	MaxRetries int
}

// Open connects to the database at dsn with at most maxConns connections
// (0: pgxpool's default) and waits, up to 30 s, until it has the shop's
// schema, so that a service started with its database is ready only when
// the database is.
func Open(ctx context.Context, dsn string, maxConns int32) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	s := &Store{pool: pool, MaxRetries: DefaultMaxRetries}
	where := fmt.Sprintf("database %s at %s:%d", cfg.ConnConfig.Database, cfg.ConnConfig.Host, cfg.ConnConfig.Port)
	if err := s.waitSchema(ctx, where); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// waitSchema polls until table products exists.
func (s *Store) waitSchema(ctx context.Context, where string) error {
	ctx, cancel := context.WithTimeout(ctx, schemaTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last := errors.New("no answer")
	for {
		var ok bool
		err := s.pool.QueryRow(ctx, "SELECT to_regclass('products') IS NOT NULL").Scan(&ok)
		switch {
		case err == nil && ok:
			return nil
		case err == nil:
			last = errors.New("table products does not exist yet")
		case ctx.Err() == nil:
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("store: %s has no shop schema (waited up to %v): %w", where, schemaTimeout, last)
		case <-tick.C:
		}
	}
}

// Close closes the pool's connections.
func (s *Store) Close() { s.pool.Close() }

const productColumns = "sku, name, price_cents, stock, version"

// Product returns the product sku.
func (s *Store) Product(ctx context.Context, sku string) (Product, error) {
	var p Product
	err := s.pool.QueryRow(ctx, "SELECT "+productColumns+" FROM products WHERE sku = $1", sku).
		Scan(&p.SKU, &p.Name, &p.PriceCents, &p.Stock, &p.Version)
	if errors.Is(err, pgx.ErrNoRows) {
		return Product{}, fmt.Errorf("sku %s: %w", sku, ErrUnknownSKU)
	}
	if err != nil {
		return Product{}, fmt.Errorf("product %s: %w", sku, err)
	}
	return p, nil
}

// Products returns every product, by sku.
func (s *Store) Products(ctx context.Context) ([]Product, error) {
	rows, _ := s.pool.Query(ctx, "SELECT "+productColumns+" FROM products ORDER BY sku")
	ps, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Product, error) {
		var p Product
		err := row.Scan(&p.SKU, &p.Name, &p.PriceCents, &p.Stock, &p.Version)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("products: %w", err)
	}
	return ps, nil
}

// deductRead reads, in one snapshot, the product's stock and the order's
// reservation if it has one (NULLs for what is missing).
const deductRead = `SELECT p.stock, p.version, p.price_cents, r.sku, r.quantity
FROM (VALUES (1)) AS one
LEFT JOIN products p ON p.sku = $2
LEFT JOIN reservations r ON r.order_id = $1`

// deductCAS takes $3 of sku $2 for order $1 if the product's version is
// still $4, and records the reservation, atomically: no row back means
// the compare-and-set lost.
const deductCAS = `WITH taken AS (
	UPDATE products SET stock = stock - $3, version = version + 1
	WHERE sku = $2 AND version = $4 AND stock >= $3
	RETURNING stock, version, price_cents
), reserved AS (
	INSERT INTO reservations (order_id, sku, quantity) SELECT $1, $2, $3 FROM taken
)
SELECT stock, version, price_cents FROM taken`

// Deduct takes qty of sku for the order orderID, once: a second call for
// the same order returns the first's reservation as Replayed
// (ErrOrderMismatch if it was for another sku or quantity). It reads the
// product's stock and version, then, in one statement (its own
// transaction), sets stock-qty only if the version is unchanged and
// records the reservation, whose key admits one per order. A lost
// compare-and-set is retried after a random pause; after MaxRetries lost
// ones, ErrContention. Not enough stock is ErrOutOfStock, no such product
// ErrUnknownSKU. Two round trips when uncontended.
func (s *Store) Deduct(ctx context.Context, orderID, sku string, qty int32) (Deduction, error) {
	if qty <= 0 {
		return Deduction{}, fmt.Errorf("order %s: quantity %d is not positive", orderID, qty)
	}
	var attempts, lost int32 // compare-and-sets run, and lost
	for {
		var stock, version, price *int64
		var heldSKU *string
		var heldQty *int32
		err := s.pool.QueryRow(ctx, deductRead, orderID, sku).Scan(&stock, &version, &price, &heldSKU, &heldQty)
		if err != nil {
			return Deduction{}, fmt.Errorf("deduct for order %s: %w", orderID, err)
		}
		switch {
		case heldSKU != nil && (*heldSKU != sku || *heldQty != qty):
			return Deduction{}, fmt.Errorf("order %s reserved %d of %s, not %d of %s: %w",
				orderID, *heldQty, *heldSKU, qty, sku, ErrOrderMismatch)
		case stock == nil:
			return Deduction{}, fmt.Errorf("sku %s: %w", sku, ErrUnknownSKU)
		case heldSKU != nil:
			return Deduction{StockLeft: *stock, Version: *version, PriceCents: *price, Attempts: attempts, Replayed: true}, nil
		case *stock < int64(qty):
			return Deduction{}, fmt.Errorf("sku %s: %d left, %d asked: %w", sku, *stock, qty, ErrOutOfStock)
		}
		attempts++
		d := Deduction{Attempts: attempts}
		err = s.pool.QueryRow(ctx, deductCAS, orderID, sku, qty, *version).Scan(&d.StockLeft, &d.Version, &d.PriceCents)
		switch {
		case err == nil:
			return d, nil
		case uniqueViolation(err, "reservations_pkey"):
			continue // a concurrent call for this order won: the next read replays it
		case !errors.Is(err, pgx.ErrNoRows):
			return Deduction{}, fmt.Errorf("deduct for order %s: %w", orderID, err)
		}
		if lost++; int(lost) >= max(s.MaxRetries, 1) {
			return Deduction{}, fmt.Errorf("sku %s: lost %d compare-and-sets for order %s: %w", sku, lost, orderID, ErrContention)
		}
		select {
		case <-ctx.Done():
			return Deduction{}, ctx.Err()
		case <-time.After(rand.N(casPause << min(lost, casPauseDoublings))):
		}
	}
}

// releaseStock gives an order's reserved stock back, as one statement.
const releaseStock = `WITH released AS (
	DELETE FROM reservations WHERE order_id = $1
	AND NOT EXISTS (SELECT 1 FROM orders WHERE id = $1)
	RETURNING sku, quantity
)
UPDATE products p SET stock = p.stock + r.quantity, version = p.version + 1
FROM released r WHERE p.sku = r.sku`

// Release undoes the reservation of order orderID: its stock goes back and
// the product's version moves on. It reports whether there was one to
// undo, so calling it again is harmless. A reservation whose order is
// stored (by another attempt with the same id) stays.
func (s *Store) Release(ctx context.Context, orderID string) (bool, error) {
	tag, err := s.pool.Exec(ctx, releaseStock, orderID)
	if isFKViolation(err) { // the order was stored while we deleted
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("release order %s: %w", orderID, err)
	}
	return tag.RowsAffected() > 0, nil
}

// redeemRead reads, in one snapshot, the coupon and the order's use of a
// coupon if it has one (NULLs for what is missing).
const redeemRead = `SELECT c.discount_cents, c.min_total_cents, c.remaining, u.code, u.user_id, u.discount_cents
FROM (VALUES (1)) AS one
LEFT JOIN coupons c ON c.code = $2
LEFT JOIN coupon_uses u ON u.order_id = $1`

// redeemTake takes one use of coupon $2 for order $1 of user $3 and
// records it, atomically: no row back means none was left.
const redeemTake = `WITH taken AS (
	UPDATE coupons SET remaining = remaining - 1 WHERE code = $2 AND remaining > 0
	RETURNING discount_cents
), used AS (
	INSERT INTO coupon_uses (order_id, code, user_id, discount_cents) SELECT $1, $2, $3, discount_cents FROM taken
)
SELECT discount_cents FROM taken`

// Redeem uses coupon code for order orderID of user, whose total before
// the discount is totalCents, once: a second call for the same order
// returns the first's discount as Replayed (ErrOrderMismatch if it was
// for another code or user). ErrUnknownCoupon, ErrCouponMinimum and
// ErrCouponExhausted say why a coupon does not apply.
func (s *Store) Redeem(ctx context.Context, orderID, code, user string, totalCents int64) (Redemption, error) {
	// A second pass happens only when a concurrent call for the same order
	// took the use first; the pass then replays it.
	for range 2 {
		var discount, minimum, remaining, usedDiscount *int64
		var usedCode, usedUser *string
		err := s.pool.QueryRow(ctx, redeemRead, orderID, code).Scan(&discount, &minimum, &remaining, &usedCode, &usedUser, &usedDiscount)
		if err != nil {
			return Redemption{}, fmt.Errorf("redeem %s for order %s: %w", code, orderID, err)
		}
		switch {
		case usedCode != nil && (*usedCode != code || *usedUser != user):
			return Redemption{}, fmt.Errorf("order %s used coupon %s for user %s, not %s for %s: %w",
				orderID, *usedCode, *usedUser, code, user, ErrOrderMismatch)
		case usedCode != nil:
			return Redemption{DiscountCents: *usedDiscount, Replayed: true}, nil
		case discount == nil:
			return Redemption{}, fmt.Errorf("coupon %s: %w", code, ErrUnknownCoupon)
		case totalCents < *minimum:
			return Redemption{}, fmt.Errorf("coupon %s needs a total of %s, order %s has %s: %w",
				code, FormatCents(*minimum), orderID, FormatCents(totalCents), ErrCouponMinimum)
		case *remaining == 0:
			return Redemption{}, fmt.Errorf("coupon %s: no uses left: %w", code, ErrCouponExhausted)
		}
		var r Redemption
		err = s.pool.QueryRow(ctx, redeemTake, orderID, code, user).Scan(&r.DiscountCents)
		switch {
		case err == nil:
			return r, nil
		case errors.Is(err, pgx.ErrNoRows):
			return Redemption{}, fmt.Errorf("coupon %s: no uses left: %w", code, ErrCouponExhausted)
		case !uniqueViolation(err, "coupon_uses_pkey"):
			return Redemption{}, fmt.Errorf("redeem %s for order %s: %w", code, orderID, err)
		}
	}
	return Redemption{}, fmt.Errorf("redeem %s for order %s: its use vanished while replaying it", code, orderID)
}

const orderColumns = `id, user_id, sku, quantity, price_cents, discount_cents, total_cents, coupon,
	region, controller, order_instance, inventory_instance, client_addr, stock_left, cas_attempts, created_at`

// scanOrder reads one row of orderColumns.
func scanOrder(row pgx.Row) (Order, error) {
	var o Order
	err := row.Scan(&o.ID, &o.User, &o.SKU, &o.Quantity, &o.PriceCents, &o.DiscountCents, &o.TotalCents, &o.Coupon,
		&o.Region, &o.Controller, &o.OrderInstance, &o.InventoryInstance, &o.ClientAddr, &o.StockLeft, &o.CASAttempts, &o.Created)
	return o, err
}

// InsertOrder stores o (its Created is the database's clock) unless an
// order with its id exists. It returns the stored order and whether this
// call stored it.
func (s *Store) InsertOrder(ctx context.Context, o Order) (Order, bool, error) {
	err := s.pool.QueryRow(ctx, `INSERT INTO orders (`+orderColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, now())
		ON CONFLICT (id) DO NOTHING RETURNING created_at`,
		o.ID, o.User, o.SKU, o.Quantity, o.PriceCents, o.DiscountCents, o.TotalCents, o.Coupon,
		o.Region, o.Controller, o.OrderInstance, o.InventoryInstance, o.ClientAddr, o.StockLeft, o.CASAttempts,
	).Scan(&o.Created)
	switch {
	case err == nil:
		return o, true, nil
	case errors.Is(err, pgx.ErrNoRows):
		stored, err := s.GetOrder(ctx, o.ID)
		return stored, false, err
	case isFKViolation(err):
		return Order{}, false, fmt.Errorf("order %s: %w", o.ID, ErrNoDeduction)
	}
	return Order{}, false, fmt.Errorf("insert order %s: %w", o.ID, err)
}

// GetOrder returns order id, or ErrNoOrder.
func (s *Store) GetOrder(ctx context.Context, id string) (Order, error) {
	o, err := scanOrder(s.pool.QueryRow(ctx, "SELECT "+orderColumns+" FROM orders WHERE id = $1", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Order{}, fmt.Errorf("order %s: %w", id, ErrNoOrder)
	}
	if err != nil {
		return Order{}, fmt.Errorf("order %s: %w", id, err)
	}
	return o, nil
}

// Orders returns the newest limit orders, newest first (all if limit <= 0).
func (s *Store) Orders(ctx context.Context, limit int) ([]Order, error) {
	var n *int
	if limit > 0 {
		n = &limit
	}
	rows, _ := s.pool.Query(ctx, "SELECT "+orderColumns+" FROM orders ORDER BY created_at DESC, id DESC LIMIT $1", n)
	orders, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Order, error) { return scanOrder(row) })
	if err != nil {
		return nil, fmt.Errorf("orders: %w", err)
	}
	return orders, nil
}

// Counts returns how many orders and stock reservations there are.
func (s *Store) Counts(ctx context.Context) (orders, reservations int64, err error) {
	err = s.pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM reservations)").
		Scan(&orders, &reservations)
	if err != nil {
		return 0, 0, fmt.Errorf("counts: %w", err)
	}
	return orders, reservations, nil
}

// uniqueViolation tells whether err is a violation of the unique
// constraint named constraint.
func uniqueViolation(err error, constraint string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == constraint
}

// isFKViolation reports a foreign key violation (SQLSTATE 23503).
func isFKViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23503"
}
