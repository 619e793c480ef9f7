package store

import (
	"context"
	"fmt"
)

// Tally is what a load run left in the database, found by the prefix its
// order ids (and SKUs) share.
type Tally struct {
	Orders       int64 // orders stored
	Reservations int64 // stock deductions recorded
	Deducted     int64 // stock gone from the run's products: initial minus now
	Reserved     int64 // quantities of the recorded deductions, summed
	Orphans      int64 // orders with no deduction behind them
	Unfinished   int64 // deductions whose order was not stored
}

// TallyRun counts the orders and deductions of the run whose order ids and
// SKUs start with prefix; initial is the stock each of its products began
// with.
func (s *Store) TallyRun(ctx context.Context, prefix string, initial int64) (Tally, error) {
	var t Tally
	like := likePrefix(prefix)
	err := s.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM orders WHERE id LIKE $1),
		(SELECT count(*) FROM reservations WHERE order_id LIKE $1),
		(SELECT coalesce(sum($2 - stock), 0) FROM products WHERE sku LIKE $1),
		(SELECT coalesce(sum(quantity), 0) FROM reservations WHERE order_id LIKE $1),
		(SELECT count(*) FROM orders o LEFT JOIN reservations r ON r.order_id = o.id
			WHERE o.id LIKE $1 AND r.order_id IS NULL),
		(SELECT count(*) FROM reservations r LEFT JOIN orders o ON o.id = r.order_id
			WHERE r.order_id LIKE $1 AND o.id IS NULL)`, like, initial).
		Scan(&t.Orders, &t.Reservations, &t.Deducted, &t.Reserved, &t.Orphans, &t.Unfinished)
	if err != nil {
		return t, fmt.Errorf("tally %s*: %w", prefix, err)
	}
	return t, nil
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
