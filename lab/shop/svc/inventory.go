package svc

import (
	"context"
	"log/slog"

	"labctl/lab/shop/api"
	"labctl/lab/shop/store"
)

// Cache outcomes reported in ProductReply.Cache.
const (
	CacheHit  = "hit"
	CacheMiss = "miss"
)

type inventory struct {
	api.UnimplementedInventoryServer
	base
	st    InventoryStore
	cache ProductCache
}

// NewInventory returns the inventory server over st, reading products
// through cache (nil: no cache) and naming itself instance in its replies.
func NewInventory(st InventoryStore, cache ProductCache, instance string, log *slog.Logger) api.InventoryServer {
	return &inventory{base: newBase("inventory", instance, log), st: st, cache: cache}
}

// Product answers from the AZ's cache when it holds the SKU ("hit"), else
// from the database, then caches it ("miss"). The cache is for the name and
// price: on a hit the stock is the cached copy's and may be up to the
// cache's TTL stale; on a miss it is the database's at read time. Deduct is
// always against the database.
func (s *inventory) Product(ctx context.Context, req *api.ProductRequest) (*api.ProductReply, error) {
	if err := checkID("sku", req.GetSku()); err != nil {
		return nil, err
	}
	if s.cache != nil {
		if p, ok := s.cache.Get(ctx, req.GetSku()); ok {
			return s.productReply(p, CacheHit), nil
		}
	}
	p, err := s.st.Product(ctx, req.GetSku())
	if err != nil {
		return nil, s.fail("product "+req.GetSku(), err)
	}
	if s.cache != nil {
		s.cache.Set(ctx, p)
	}
	return s.productReply(p, CacheMiss), nil
}

func (s *inventory) productReply(p store.Product, cache string) *api.ProductReply {
	return &api.ProductReply{Sku: p.SKU, Name: p.Name, PriceCents: p.PriceCents, Stock: p.Stock, Cache: cache, Instance: s.instance}
}

// Deduct takes quantity items of a SKU's stock for an order, once per order
// id: a repeated call replays the first one's deduction.
func (s *inventory) Deduct(ctx context.Context, req *api.DeductRequest) (*api.DeductReply, error) {
	if err := firstError(checkID("order_id", req.GetOrderId()), checkID("sku", req.GetSku()), checkQuantity(req.GetQuantity())); err != nil {
		return nil, err
	}
	d, err := s.st.Deduct(ctx, req.GetOrderId(), req.GetSku(), req.GetQuantity())
	if err != nil {
		return nil, s.fail("deduct for order "+req.GetOrderId(), err)
	}
	return &api.DeductReply{
		StockLeft:  d.StockLeft,
		Version:    d.Version,
		Attempts:   d.Attempts,
		Replayed:   d.Replayed,
		Instance:   s.instance,
		PriceCents: d.PriceCents,
	}, nil
}

// Release gives back an order's deduction; Released is false when the
// order had none (never deducted, or released already).
func (s *inventory) Release(ctx context.Context, req *api.ReleaseRequest) (*api.ReleaseReply, error) {
	if err := checkID("order_id", req.GetOrderId()); err != nil {
		return nil, err
	}
	ok, err := s.st.Release(ctx, req.GetOrderId())
	if err != nil {
		return nil, s.fail("release order "+req.GetOrderId(), err)
	}
	return &api.ReleaseReply{Released: ok}, nil
}

// firstError returns the first non-nil error of errs.
func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
