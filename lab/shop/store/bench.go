package store

import (
	"context"
	"fmt"
)

// Tally is what a load run left in the database, found by the prefix its
// order ids share.
type Tally struct {
	Orders       int64 // orders stored
	Quantity     int64 // their quantities, summed
	Reservations int64 // stock deductions recorded
	Reserved     int64 // their quantities, summed
}

// TallyRun counts the orders and deductions whose order id starts with
// prefix.
func (s *Store) TallyRun(ctx context.Context, prefix string) (Tally, error) {
	var t Tally
	like := likePrefix(prefix)
	err := s.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM orders WHERE id LIKE $1),
		(SELECT coalesce(sum(quantity), 0) FROM orders WHERE id LIKE $1),
		(SELECT count(*) FROM reservations WHERE order_id LIKE $1),
		(SELECT coalesce(sum(quantity), 0) FROM reservations WHERE order_id LIKE $1)`, like).
		Scan(&t.Orders, &t.Quantity, &t.Reservations, &t.Reserved)
	if err != nil {
		return t, fmt.Errorf("tally %s*: %w", prefix, err)
	}
	return t, nil
}

// Forget deletes a load run: orders, deductions and coupon uses whose
// order id starts with prefix, and the products whose SKU starts with it.
func (s *Store) Forget(ctx context.Context, prefix string) error {
	like := likePrefix(prefix)
	for _, q := range []string{
		"DELETE FROM orders WHERE id LIKE $1",
		"DELETE FROM reservations WHERE order_id LIKE $1",
		"DELETE FROM coupon_uses WHERE order_id LIKE $1",
		"DELETE FROM products WHERE sku LIKE $1",
	} {
		if _, err := s.pool.Exec(ctx, q, like); err != nil {
			return fmt.Errorf("forget %s*: %w", prefix, err)
		}
	}
	return nil
}

// likePrefix is a LIKE pattern matching strings that start with p.
func likePrefix(p string) string {
	out := make([]byte, 0, len(p)+1)
	for i := 0; i < len(p); i++ {
		if c := p[i]; c == '%' || c == '_' || c == '\\' {
			out = append(out, '\\')
		}
		out = append(out, p[i])
	}
	return string(append(out, '%'))
}
