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
	"io/fs"
	"math/rand/v2"
	"net"
	"strings"
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
	// attempt with the same id gave it back, or its deadline passed and
	// ReleaseExpired did); ordering again deducts anew.
	ErrNoDeduction = errors.New("no stock deduction for this order id (given back by a failed attempt or after its deadline): order again")
)

// DefaultMaxRetries is Open's Store.MaxRetries.
const DefaultMaxRetries = 16

// DefaultHold is Open's Store.Hold: twice the order service's bound on
// one order, so a deduction is released only when its order can no
// longer be stored by the call that made it.
const DefaultHold = 10 * time.Second

// sweepBatch bounds the deductions one ReleaseExpired statement gives back.
const sweepBatch = 500

// sweepLock is the advisory lock key that lets one ReleaseExpired run at
// a time: two sweeps updating the same products in another order would
// deadlock.
const sweepLock = 0x73776570 // "swep"

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
	// Hold is how long a deduction waits for its order, by the database's
	// clock: after it, ReleaseExpired gives the stock back.
	Hold time.Duration
}

// Why a database cannot be used. Open's and Connect's errors wrap one of
// them (test with errors.Is), with the database's address and the error
// met.
var (
	// ErrUnreachable: no server answers at the address (nothing listens,
	// no socket, a timeout) or it is starting or stopping.
	ErrUnreachable = errors.New("unreachable")
	// ErrNoRights: the server, or the socket's permissions, refuse the
	// client (SQLSTATE class 28, 42501, EACCES or EPERM).
	ErrNoRights = errors.New("no rights")
	// ErrNoSchema: the server answers, but without the shop's database or
	// tables.
	ErrNoSchema = errors.New("no shop schema")
)

// classify says which of ErrUnreachable, ErrNoRights and ErrNoSchema an
// error of the driver is, or nil for none of them.
func classify(err error) error {
	var pe *pgconn.PgError
	var ce *pgconn.ConnectError
	var ne net.Error
	switch {
	case errors.As(err, &pe):
		switch {
		case strings.HasPrefix(pe.Code, "28"), pe.Code == "42501": // invalid authorization, insufficient privilege
			return ErrNoRights
		case pe.Code == "3D000": // no such database
			return ErrNoSchema
		case strings.HasPrefix(pe.Code, "08"), strings.HasPrefix(pe.Code, "57"): // connection exception, starting or stopping
			return ErrUnreachable
		}
		return nil
	case errors.Is(err, fs.ErrPermission): // the socket or its directory
		return ErrNoRights
	case errors.As(err, &ce), errors.As(err, &ne):
		return ErrUnreachable
	}
	return nil
}

// Open connects to the database at dsn with at most maxConns connections
// (0: pgxpool's default) and waits, up to 30 s, until it has the shop's
// schema, so that a service started with its database is ready only when
// the database is: while it starts it is unreachable, then refuses the
// role shop until its setup has made it, then lacks the tables. The error
// after the wait says which it last was. Connect looks once.
func Open(ctx context.Context, dsn string, maxConns int32) (*Store, error) {
	return open(ctx, dsn, maxConns, true)
}

// Connect is Open that looks once: the database unreachable, refusing
// rights or without the shop's schema is an error at once, for a client
// that asks of a database that should be there.
func Connect(ctx context.Context, dsn string, maxConns int32) (*Store, error) {
	return open(ctx, dsn, maxConns, false)
}

func open(ctx context.Context, dsn string, maxConns int32, wait bool) (*Store, error) {
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
	s := &Store{pool: pool, MaxRetries: DefaultMaxRetries, Hold: DefaultHold}
	where := fmt.Sprintf("database %s at %s:%d", cfg.ConnConfig.Database, cfg.ConnConfig.Host, cfg.ConnConfig.Port)
	if wait {
		err = s.waitSchema(ctx, where)
	} else {
		err = s.checkSchema(ctx, where)
	}
	if err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// checkSchema asks once whether table products exists.
func (s *Store) checkSchema(ctx context.Context, where string) error {
	var ok bool
	err := s.pool.QueryRow(ctx, "SELECT to_regclass('products') IS NOT NULL").Scan(&ok)
	switch {
	case err == nil && ok:
		return nil
	case err == nil:
		return fmt.Errorf("store: %s has %w: table products does not exist yet", where, ErrNoSchema)
	}
	switch classify(err) {
	case ErrUnreachable:
		return fmt.Errorf("store: %s is %w: %w", where, ErrUnreachable, err)
	case ErrNoRights:
		return fmt.Errorf("store: %w to %s: %w", ErrNoRights, where, err)
	case ErrNoSchema:
		return fmt.Errorf("store: %s has %w: %w", where, ErrNoSchema, err)
	}
	return fmt.Errorf("store: %s: %w", where, err)
}

// waitSchema polls until table products exists, up to schemaTimeout, and
// says what it last found: unreachable, no rights or no schema.
func (s *Store) waitSchema(ctx context.Context, where string) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, schemaTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		err := s.checkSchema(ctx, where)
		switch {
		case err == nil:
			return nil
		case ctx.Err() == nil || last == nil:
			// An answer cut short by the deadline says less than the one
			// before it.
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (waited %v)", last, time.Since(start).Round(time.Millisecond))
		case <-tick.C:
		}
	}
}

// closeTimeout bounds Close's wait for the pool.
const closeTimeout = 200 * time.Millisecond

// Close closes the pool's connections, waiting at most closeTimeout. A
// connection closed while its query runs (a sweep or an order cut short by
// the service's end) makes the driver dial the server once more to cancel
// that query, for up to 15 s; when the database is going away too (the lab
// coming down), nobody answers, and the process would outlive its stop
// grace for nothing.
func (s *Store) Close() {
	done := make(chan struct{})
	go func() { s.pool.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeTimeout):
	}
}

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
// still $4, and records the reservation, pending for $5 microseconds,
// atomically: no row back means the compare-and-set lost.
const deductCAS = `WITH taken AS (
	UPDATE products SET stock = stock - $3, version = version + 1
	WHERE sku = $2 AND version = $4 AND stock >= $3
	RETURNING stock, version, price_cents
), reserved AS (
	INSERT INTO reservations (order_id, sku, quantity, expires_at)
	SELECT $1, $2, $3, now() + $5::bigint * interval '1 microsecond' FROM taken
)
SELECT stock, version, price_cents FROM taken`

// Deduct takes qty of sku for the order orderID, once: a second call for
// the same order returns the first's reservation as Replayed
// (ErrOrderMismatch if it was for another sku or quantity). It reads the
// product's stock and version, then, in one statement (its own
// transaction), sets stock-qty only if the version is unchanged and
// records the reservation, whose key admits one per order; it is pending
// until the order is stored, and ReleaseExpired gives it back if that has
// not happened within Hold. A lost
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
		err = s.pool.QueryRow(ctx, deductCAS, orderID, sku, qty, *version, s.Hold.Microseconds()).Scan(&d.StockLeft, &d.Version, &d.PriceCents)
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

// releaseExpired gives back at most $1 pending reservations whose
// deadline has passed, as one statement. FOR UPDATE SKIP LOCKED leaves out
// the ones an order insert holds (it clears the deadline); one whose
// insert comes after waits for this statement and then fails on the
// foreign key. The stock goes back per product, the version moves on by
// the reservations released; a coupon use of a released order id goes
// back to its coupon in the same statement (an order never stored used
// no coupon), so a retry of that id deducts and redeems anew.
const releaseExpired = `WITH due AS (
	SELECT order_id FROM reservations r
	WHERE expires_at <= now() AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = r.order_id)
	ORDER BY expires_at LIMIT $1
	FOR UPDATE SKIP LOCKED
), released AS (
	DELETE FROM reservations r USING due WHERE r.order_id = due.order_id
	RETURNING r.order_id, r.sku, r.quantity
), uses AS (
	DELETE FROM coupon_uses u USING released r WHERE u.order_id = r.order_id
	RETURNING u.code
), per_code AS (
	SELECT code, count(*) AS n FROM uses GROUP BY code
), coupons_back AS (
	UPDATE coupons c SET remaining = c.remaining + p.n FROM per_code p WHERE c.code = p.code
), per_sku AS (
	SELECT sku, sum(quantity) AS quantity, count(*) AS n FROM released GROUP BY sku
), given AS (
	UPDATE products p SET stock = p.stock + s.quantity, version = p.version + s.n
	FROM per_sku s WHERE p.sku = s.sku
)
SELECT coalesce(sum(n), 0)::bigint FROM per_sku`

// ReleaseExpired gives back the stock of every deduction whose order was
// not stored before its deadline (Hold after it was made): the process
// that made it died, or lost the database or its caller, before storing
// it. It returns how many it released. An order insert racing it either
// wins (its deduction stays) or fails with ErrNoDeduction; a deduction
// is never given back twice. While another ReleaseExpired runs it does
// nothing and returns 0, so every instance of the shop can call it.
func (s *Store) ReleaseExpired(ctx context.Context) (int64, error) {
	// One transaction per batch: each batch's product rows are locked
	// only while it runs, and what a sweep cut short by ctx committed
	// stays given back.
	var total int64
	for {
		var n int64
		mine := false
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", sweepLock).Scan(&mine); err != nil || !mine {
				return err
			}
			return tx.QueryRow(ctx, releaseExpired, sweepBatch).Scan(&n)
		})
		if err != nil {
			return total, fmt.Errorf("release expired deductions: %w", err)
		}
		if total += n; !mine || n < sweepBatch {
			return total, nil
		}
	}
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

// insertOrder stores an order and, in the same statement, ends its
// reservation's deadline; the foreign key fails it if the reservation is
// gone (released), waiting first for a release that holds it.
const insertOrder = `WITH stored AS (
	INSERT INTO orders (` + orderColumns + `)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, now())
	ON CONFLICT (id) DO NOTHING RETURNING id, created_at
), kept AS (
	UPDATE reservations r SET expires_at = NULL FROM stored WHERE r.order_id = stored.id
)
SELECT created_at FROM stored`

// InsertOrder stores o (its Created is the database's clock) unless an
// order with its id exists. It returns the stored order and whether this
// call stored it. ErrNoDeduction means o's deduction was given back (by
// Release or, past its deadline, ReleaseExpired): nothing was stored.
func (s *Store) InsertOrder(ctx context.Context, o Order) (Order, bool, error) {
	err := s.pool.QueryRow(ctx, insertOrder,
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
