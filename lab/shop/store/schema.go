package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// schema is the shop's database, created table by table if missing.
const schema = `
CREATE TABLE IF NOT EXISTS products (
	sku         text PRIMARY KEY,
	name        text NOT NULL,
	price_cents bigint NOT NULL CHECK (price_cents >= 0),
	stock       bigint NOT NULL CHECK (stock >= 0),
	version     bigint NOT NULL DEFAULT 0
);
-- One stock deduction per order id. Until its order is stored it is
-- pending: expires_at is its deadline, after which ReleaseExpired gives
-- the stock back; storing the order sets it to NULL.
CREATE TABLE IF NOT EXISTS reservations (
	order_id   text PRIMARY KEY,
	sku        text NOT NULL REFERENCES products,
	quantity   int NOT NULL CHECK (quantity > 0),
	created_at timestamptz NOT NULL DEFAULT now(),
	expires_at timestamptz
);
-- A cluster kept from before deadlines existed gets the column too.
ALTER TABLE reservations ADD COLUMN IF NOT EXISTS expires_at timestamptz;
-- Only the pending few, so a sweep does not read every order's deduction.
CREATE INDEX IF NOT EXISTS reservations_pending ON reservations (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS coupons (
	code            text PRIMARY KEY,
	discount_cents  bigint NOT NULL CHECK (discount_cents >= 0),
	min_total_cents bigint NOT NULL CHECK (min_total_cents >= 0),
	remaining       bigint NOT NULL CHECK (remaining >= 0)
);
-- One coupon use per order id.
CREATE TABLE IF NOT EXISTS coupon_uses (
	order_id       text PRIMARY KEY,
	code           text NOT NULL REFERENCES coupons,
	user_id        text NOT NULL,
	discount_cents bigint NOT NULL
);
-- An order stands on its stock deduction: it cannot be stored without
-- one, and the deduction cannot be given back once the order exists.
CREATE TABLE IF NOT EXISTS orders (
	id                 text PRIMARY KEY REFERENCES reservations (order_id),
	user_id            text NOT NULL,
	sku                text NOT NULL,
	quantity           int NOT NULL,
	price_cents        bigint NOT NULL,
	discount_cents     bigint NOT NULL,
	total_cents        bigint NOT NULL,
	coupon             text NOT NULL,
	region             text NOT NULL,
	controller         text NOT NULL,
	order_instance     text NOT NULL,
	inventory_instance text NOT NULL,
	client_addr        text NOT NULL,
	stock_left         bigint NOT NULL,
	cas_attempts       int NOT NULL,
	created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS orders_newest ON orders (created_at DESC, id DESC);
`

// setupLock is the advisory lock key that serialises Setup calls, since
// concurrent CREATE TABLE IF NOT EXISTS can still collide.
const setupLock = 0x73686f70 // "shop"

// Catalog is what a shop sells: its products and coupons.
type Catalog struct {
	Products []Product
	Coupons  []Coupon
}

// Setup creates the schema at dsn where missing and adds the catalog's
// products and coupons that are not there yet; existing rows are kept as
// they are (stock already sold stays sold). It is safe to run again, and
// concurrently.
func Setup(ctx context.Context, dsn string, c Catalog) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("store setup: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", setupLock); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if _, err := tx.Exec(ctx, schema); err != nil {
			return fmt.Errorf("schema: %w", err)
		}
		b := &pgx.Batch{}
		for _, p := range c.Products {
			b.Queue(`INSERT INTO products (sku, name, price_cents, stock) VALUES ($1, $2, $3, $4)
				ON CONFLICT (sku) DO NOTHING`, p.SKU, p.Name, p.PriceCents, p.Stock)
		}
		for _, cp := range c.Coupons {
			b.Queue(`INSERT INTO coupons (code, discount_cents, min_total_cents, remaining) VALUES ($1, $2, $3, $4)
				ON CONFLICT (code) DO NOTHING`, cp.Code, cp.DiscountCents, cp.MinTotalCents, cp.Remaining)
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("catalog: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store setup: %w", err)
	}
	return nil
}
