// Package part is the shop as a lab part (stages 5-10: the order path):
// a top-level `shop:` block that names the nodes of each tier — the
// database (primary and streaming standby, its clients and its seed
// catalog), the registry, and per region the SLBs, the AZs' caches and the
// app VMs. Its expansion gives those nodes their services (haproxy, etcd,
// postgres, redis, inventory, coupon, order, controller), each started as
// `labctl serve VERB --config FILE`: the daemon's configuration is a Go
// type of this package (SLBConfig, EtcdConfig, RedisConfig,
// PostgresConfig, TierConfig), carried as the service's Config, which the
// supervisor writes to a file in the lab's state directory as it starts the
// daemon. Every default (the
// ports, the ready checks, the start order) is here, once.
//
// The CLI finds the shop's tiers through DatabaseOf, SLBs, AppNodes and
// Regions, never by reading service commands.
package part

import (
	"fmt"
	"strings"

	"github.com/goccy/go-yaml/ast"

	"labctl/lab/topology"
)

// Block is the top-level key of the shop's block.
const Block = "shop"

// Shop is the shop block: which node runs which tier.
type Shop struct {
	// Registry is the node running etcd, the service registry of every
	// region.
	Registry string `yaml:"registry,omitempty" json:"registry,omitempty"`
	// Database is the PostgreSQL primary and its hot standby.
	Database *Database `yaml:"database" json:"database"`
	// Regions are the shop's regions by name (the registry prefix of their
	// instances): each its SLBs, caches and app VMs. A lab with only a
	// database has none.
	Regions map[string]*Region `yaml:"regions,omitempty" json:"regions,omitempty"`
}

// Database is the shop's PostgreSQL: the primary (schema and seed catalog
// made by labctl) and, optionally, a streaming hot standby.
type Database struct {
	Primary string `yaml:"primary" json:"primary"`
	Standby string `yaml:"standby,omitempty" json:"standby,omitempty"`
	// Port is the TCP port of both (default 5432).
	Port int `yaml:"port,omitempty" json:"port,omitempty"`
	// Allow lists the CIDRs that may connect to the primary and replicate
	// from it.
	Allow []string `yaml:"allow,omitempty" json:"allow,omitempty"`
	// StandbyAllow lists the CIDRs that may connect to the standby
	// (default: Allow).
	StandbyAllow []string `yaml:"standby-allow,omitempty" json:"standby_allow,omitempty"`
	// Products and Coupons seed the primary's catalog (rows already there
	// are kept as they are).
	Products []*Product `yaml:"products,omitempty" json:"products,omitempty"`
	Coupons  []*Coupon  `yaml:"coupons,omitempty" json:"coupons,omitempty"`
}

// Product is a seed product; the price is an amount like 68.00.
type Product struct {
	SKU   string `yaml:"sku" json:"sku"`
	Name  string `yaml:"name" json:"name"`
	Price Money  `yaml:"price" json:"price"`
	Stock int64  `yaml:"stock" json:"stock"`
}

// Coupon is a seed coupon: Discount off an order of at least Min, for
// Uses orders.
type Coupon struct {
	Code     string `yaml:"code" json:"code"`
	Discount Money  `yaml:"discount" json:"discount"`
	Min      Money  `yaml:"min,omitempty" json:"min,omitempty"`
	Uses     int64  `yaml:"uses" json:"uses"`
}

// Money is an amount as written ("68.00", also unquoted): kept as text so
// that 9.90 stays 9.90.
type Money string

// UnmarshalYAML keeps the scalar's text as written.
func (m *Money) UnmarshalYAML(n ast.Node) error {
	if n.Type() == ast.NullType {
		return nil
	}
	tk := n.GetToken()
	if tk == nil {
		return fmt.Errorf("an amount like 68.00")
	}
	switch n.Type() {
	case ast.MappingType, ast.SequenceType:
		return fmt.Errorf("an amount is a single value like 68.00")
	}
	*m = Money(strings.TrimSpace(tk.Value))
	return nil
}

// Region is one region of the shop.
type Region struct {
	// SLBs run HAProxy: TLS ends there, mode tcp to the region's
	// controllers.
	SLBs []string `yaml:"slbs,omitempty" json:"slbs,omitempty"`
	// Caches run Redis, one per AZ (a VPC subnet): an app VM reads products
	// through the cache of its own AZ.
	Caches []string `yaml:"caches,omitempty" json:"caches,omitempty"`
	// Apps are the app VMs: each runs inventory, coupon, order and
	// controller.
	Apps []string `yaml:"apps" json:"apps"`
}

// Of is the lab's shop block, nil when it has none.
func Of(t *topology.Topology) *Shop {
	if t == nil {
		return nil
	}
	s, _ := t.Block(Block).(*Shop)
	return s
}

// The shop's defaults: ports, limits, ready timeouts. The daemons'
// flags default to the same values.
const (
	PortPostgres   = 5432
	PortEtcd       = 2379
	PortRedis      = 6379
	PortSLB        = 443
	SLBListen      = ":443"
	SLBThreads     = 1
	SLBHealthPath  = "/healthz"
	RedisMaxMemory = "64mb"
)

// Ready timeouts: the primary makes its schema, the standby copies the
// primary first, the tiers wait for the registry and the database.
const (
	ReadyPrimary = topology.Duration(30e9)
	ReadyStandby = topology.Duration(60e9)
	ReadyTier    = topology.Duration(30e9)
)

// Service names the expansion gives the daemons.
const (
	SvcSLB        = "haproxy"
	SvcEtcd       = "etcd"
	SvcPostgres   = "postgres"
	SvcRedis      = "redis"
	SvcInventory  = "inventory"
	SvcCoupon     = "coupon"
	SvcOrder      = "order"
	SvcController = "controller"
)

// Verbs of `labctl serve` the shop's daemons run.
const (
	VerbSLB        = "slb"
	VerbEtcd       = "etcd"
	VerbRedis      = "redis"
	VerbPostgres   = "postgres"
	VerbInventory  = "inventory"
	VerbCoupon     = "coupon"
	VerbOrder      = "order"
	VerbController = "controller"
)
