package svc

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"labctl/lab/shop/store"
)

// cacheErrorEvery bounds how often the cache logs its errors.
const cacheErrorEvery = time.Minute

type redisCache struct {
	client *redis.Client
	ttl    time.Duration
	errs   *errorLog
}

// NewRedisCache returns the product cache in the AZ's Redis: key
// "product:<sku>", a JSON store.Product value, kept for ttl. Redis errors
// are misses, logged at most once a minute; bound their latency with the
// client's timeouts (Options.ReadTimeout, WriteTimeout, DialTimeout).
func NewRedisCache(client *redis.Client, ttl time.Duration, log *slog.Logger) ProductCache {
	return &redisCache{client: client, ttl: ttl, errs: newErrorLog(log.With("cache", "redis"), cacheErrorEvery)}
}

func productKey(sku string) string { return "product:" + sku }

// Get returns the cached product, or false on a miss or an error.
func (c *redisCache) Get(ctx context.Context, sku string) (store.Product, bool) {
	b, err := c.client.Get(ctx, productKey(sku)).Bytes()
	if errors.Is(err, redis.Nil) {
		return store.Product{}, false
	}
	if err != nil {
		c.errs.Error("cache get failed", "sku", sku, "err", err)
		return store.Product{}, false
	}
	var p store.Product
	if err := json.Unmarshal(b, &p); err != nil {
		c.errs.Error("cache entry unreadable", "key", productKey(sku), "err", err)
		return store.Product{}, false
	}
	return p, true
}

// Set caches p for the cache's TTL; an error is logged, not returned.
func (c *redisCache) Set(ctx context.Context, p store.Product) {
	b, err := json.Marshal(p)
	if err == nil {
		err = c.client.Set(ctx, productKey(p.SKU), b, c.ttl).Err()
	}
	if err != nil {
		c.errs.Error("cache set failed", "sku", p.SKU, "err", err)
	}
}
