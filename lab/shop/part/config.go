package part

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"labctl/lab/shop/app"
	"labctl/lab/shop/store"
	"labctl/lab/topology"
)

// The daemons' configurations: one type per `labctl serve` verb, written
// as JSON to the file `--config` names. Each names its verb, so a file
// given to the wrong daemon is refused.

// Config is any of the daemons' configurations.
type Config interface{ verbOf() string }

// SLBConfig configures `labctl serve slb`: HAProxy with TLS ending at it
// (the lab's certificate) and mode tcp to the controllers.
type SLBConfig struct {
	Verb     string    `json:"verb"`
	Listen   string    `json:"listen"`
	Backends []Backend `json:"backends"`
	Threads  int       `json:"threads,omitempty"`
}

// Backend is one controller behind the SLB.
type Backend struct {
	Name string `json:"name"`
	Addr string `json:"addr"` // ip:port
}

// EtcdConfig configures `labctl serve etcd`, the registry.
type EtcdConfig struct {
	Verb string `json:"verb"`
	// Listen is the IP for clients ("": the node's IPv4 address).
	Listen string `json:"listen,omitempty"`
}

// RedisConfig configures `labctl serve redis`, an AZ's product cache.
type RedisConfig struct {
	Verb      string `json:"verb"`
	Listen    string `json:"listen,omitempty"` // "": the node's IPv4 address
	MaxMemory string `json:"maxmemory"`
}

// PostgresConfig configures `labctl serve postgres`: the primary (with
// its seed catalog) or, with StandbyOf, a streaming hot standby.
type PostgresConfig struct {
	Verb      string     `json:"verb"`
	Listen    string     `json:"listen,omitempty"` // "": the node's IPv4 address
	Port      int        `json:"port"`
	Allow     []string   `json:"allow"`
	StandbyOf string     `json:"standby_of,omitempty"` // host:port of the primary
	Products  []*Product `json:"products,omitempty"`
	Coupons   []*Coupon  `json:"coupons,omitempty"`
}

// TierConfig configures one of the app tier's daemons: `labctl serve
// controller`, `order`, `inventory` or `coupon` (Verb says which).
type TierConfig struct {
	Verb      string            `json:"verb"`
	Region    string            `json:"region"`
	Listen    string            `json:"listen"`
	Etcd      string            `json:"etcd"`
	DB        string            `json:"db,omitempty"`
	DBConns   int32             `json:"db_conns,omitempty"`
	Redis     string            `json:"redis,omitempty"`
	Instance  string            `json:"instance,omitempty"`  // "": the node's name
	Advertise string            `json:"advertise,omitempty"` // "": the node's IPv4 address and the port
	Lease     topology.Duration `json:"lease,omitempty"`
}

func (c *SLBConfig) verbOf() string      { return c.Verb }
func (c *EtcdConfig) verbOf() string     { return c.Verb }
func (c *RedisConfig) verbOf() string    { return c.Verb }
func (c *PostgresConfig) verbOf() string { return c.Verb }
func (c *TierConfig) verbOf() string     { return c.Verb }

// Shop is the app tier's view of a TierConfig.
func (c *TierConfig) Shop() app.Shop {
	return app.Shop{Region: c.Region, Instance: c.Instance, Listen: c.Listen, Advertise: c.Advertise,
		Etcd: c.Etcd, DB: c.DB, Redis: c.Redis, LeaseTTL: durationOr(c.Lease, app.DefaultLease), DBConns: c.DBConns}
}

func durationOr(d topology.Duration, def time.Duration) time.Duration {
	if d > 0 {
		return time.Duration(d)
	}
	return def
}

// ReadConfig reads a daemon's configuration file into c (a pointer to
// the verb's type): unknown fields and another verb's file are errors.
func ReadConfig(path, verb string, c Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return DecodeConfig(b, verb, c, path)
}

// DecodeConfig decodes a configuration of verb (as a service's Config or
// its file holds it) into c, refusing unknown fields and another verb's.
func DecodeConfig(b []byte, verb string, c Config, where string) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(c); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if c.verbOf() != verb {
		return fmt.Errorf("%s: a configuration of `labctl serve %s`, not of %s", where, c.verbOf(), verb)
	}
	return nil
}

// Catalog is the seed catalog as the store takes it.
func (c *PostgresConfig) Catalog() (store.Catalog, error) {
	var cat store.Catalog
	for _, p := range c.Products {
		cents, err := store.ParseMoney(string(p.Price))
		if err != nil {
			return cat, fmt.Errorf("product %s: price: %w", p.SKU, err)
		}
		cat.Products = append(cat.Products, store.Product{SKU: p.SKU, Name: p.Name, PriceCents: cents, Stock: p.Stock})
	}
	for _, k := range c.Coupons {
		off, err := store.ParseMoney(string(k.Discount))
		if err != nil {
			return cat, fmt.Errorf("coupon %s: discount: %w", k.Code, err)
		}
		var minimum int64
		if k.Min != "" {
			if minimum, err = store.ParseMoney(string(k.Min)); err != nil {
				return cat, fmt.Errorf("coupon %s: min: %w", k.Code, err)
			}
		}
		cat.Coupons = append(cat.Coupons, store.Coupon{Code: k.Code, DiscountCents: off, MinTotalCents: minimum, Remaining: k.Uses})
	}
	return cat, nil
}
