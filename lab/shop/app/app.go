// Package app runs the shop's tiers in a lab VM: the controller (HTTP
// behind the SLBs) and the order, inventory and coupon services (gRPC),
// each registered in etcd under a lease and finding its peers there.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"labctl/lab/serve"
	"labctl/lab/shop/api"
	"labctl/lab/shop/controller"
	"labctl/lab/shop/registry"
	"labctl/lab/shop/store"
	"labctl/lab/shop/svc"
)

// Shop is where one process of the shop's app tier runs and what it uses.
type Shop struct {
	Region    string        // the region the instance serves (registry prefix)
	Instance  string        // its name in the registry (default: the node)
	Listen    string        // address to listen on
	Advertise string        // address registered (default: the node's IPv4 + Listen's port)
	Etcd      string        // the registry, host:port
	DB        string        // the PostgreSQL primary, host:port
	Redis     string        // the AZ's product cache, host:port
	LeaseTTL  time.Duration // registry lease; a dead instance drops out after it
	DBConns   int32         // connection pool size
}

// Defaults of the app tier's ports and registry lease.
const (
	PortController = 8080
	PortOrder      = 50051
	PortInventory  = 50052
	PortCoupon     = 50053
	DefaultLease   = 2 * time.Second
	DefaultDBConns = 16 // database connections per process
)

// Inventory runs the inventory service: products through the AZ's cache,
// stock deductions by compare-and-set in the database.
func Inventory(ctx context.Context, o Shop, log *slog.Logger) error {
	reg, done, err := InventoryServer(ctx, o, log)
	if err != nil {
		return err
	}
	defer done()
	return o.serve(ctx, "inventory", reg, log)
}

// Coupon runs the coupon service.
func Coupon(ctx context.Context, o Shop, log *slog.Logger) error {
	reg, done, err := CouponServer(ctx, o, log)
	if err != nil {
		return err
	}
	defer done()
	return o.serve(ctx, "coupon", reg, log)
}

// Order runs the order service: it finds inventory and coupon instances of
// its region in the registry and writes orders to the database.
func Order(ctx context.Context, o Shop, log *slog.Logger) error {
	cli, err := registry.Connect([]string{o.Etcd})
	if err != nil {
		return err
	}
	defer cli.Close()
	inv, err := registry.Dial(cli, o.Region, "inventory")
	if err != nil {
		return err
	}
	defer inv.Close()
	cpn, err := registry.Dial(cli, o.Region, "coupon")
	if err != nil {
		return err
	}
	defer cpn.Close()
	reg, done, err := OrderServer(ctx, o, api.NewInventoryClient(inv), api.NewCouponClient(cpn), log)
	if err != nil {
		return err
	}
	defer done()
	return o.serveWith(ctx, cli, "order", reg, log)
}

// InventoryServer opens the database and the cache the inventory service
// uses and returns its registration on a gRPC server and what closes them.
func InventoryServer(ctx context.Context, o Shop, log *slog.Logger) (func(*grpc.Server), func(), error) {
	st, err := openStore(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	rdb := redis.NewClient(&redis.Options{Addr: o.Redis, DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
	srv := svc.NewInventory(st, svc.NewRedisCache(rdb, 30*time.Second, log), o.instance(), log)
	return func(g *grpc.Server) { api.RegisterInventoryServer(g, srv) }, func() { rdb.Close(); st.Close() }, nil
}

// CouponServer is InventoryServer for the coupon service.
func CouponServer(ctx context.Context, o Shop, log *slog.Logger) (func(*grpc.Server), func(), error) {
	st, err := openStore(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	srv := svc.NewCoupon(st, o.instance(), log)
	return func(g *grpc.Server) { api.RegisterCouponServer(g, srv) }, st.Close, nil
}

// OrderServer is InventoryServer for the order service, calling inv and cpn.
func OrderServer(ctx context.Context, o Shop, inv api.InventoryClient, cpn api.CouponClient, log *slog.Logger) (func(*grpc.Server), func(), error) {
	st, err := openStore(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	srv := svc.NewOrder(st, inv, cpn, o.instance(), log)
	return func(g *grpc.Server) { api.RegisterOrderServer(g, srv) }, st.Close, nil
}

// Controller runs the controller tier: HTTP behind the SLBs (PROXY v2),
// calling the order service of its region through the registry, and its
// inventory service for product reads. It is healthy while the registry
// lists an order instance of its region (asked at most once a second:
// three SLBs check every controller twice a second).
func Controller(ctx context.Context, o Shop, log *slog.Logger) error {
	cli, err := registry.Connect([]string{o.Etcd})
	if err != nil {
		return err
	}
	defer cli.Close()
	orders, err := registry.Dial(cli, o.Region, "order")
	if err != nil {
		return err
	}
	defer orders.Close()
	inv, err := registry.Dial(cli, o.Region, "inventory")
	if err != nil {
		return err
	}
	defer inv.Close()
	return controller.Serve(ctx, o.Listen, true, controller.Config{
		Region: o.Region, Instance: o.instance(), Log: log,
		Orders: api.NewOrderClient(orders), Products: api.NewInventoryClient(inv),
		Healthy: registryHealth(ctx, cli, o.Region, time.Second),
	})
}

// registryHealth reports whether the registry lists an order instance of
// region, remembering the answer for every.
func registryHealth(ctx context.Context, cli *clientv3.Client, region string, every time.Duration) func() error {
	var mu sync.Mutex
	var at time.Time
	var last error
	return func() error {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(at) < every {
			return last
		}
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		ins, err := registry.List(ctx, cli, region, "order")
		switch {
		case err != nil:
			last = fmt.Errorf("registry: %w", err)
		case len(ins) == 0:
			last = fmt.Errorf("no order instance of region %s in the registry", region)
		default:
			last = nil
		}
		at = time.Now()
		return last
	}
}

func openStore(ctx context.Context, o Shop) (*store.Store, error) {
	conns := o.DBConns
	if conns == 0 {
		conns = DefaultDBConns
	}
	host, port, err := net.SplitHostPort(o.DB)
	if err != nil {
		return nil, fmt.Errorf("--db %q: %w", o.DB, err)
	}
	return store.Open(ctx, fmt.Sprintf("host=%s port=%s user=shop dbname=shop sslmode=disable", host, port), conns)
}

// serve connects to the registry, then runs serveWith.
func (o Shop) serve(ctx context.Context, service string, register func(*grpc.Server), log *slog.Logger) error {
	cli, err := registry.Connect([]string{o.Etcd})
	if err != nil {
		return err
	}
	defer cli.Close()
	return o.serveWith(ctx, cli, service, register, log)
}

// serveWith registers the instance under a lease, then serves gRPC until
// ctx ends; the lease is revoked on the way out, so clients drop the
// instance at once (or after the lease's TTL if the process dies).
func (o Shop) serveWith(ctx context.Context, cli *clientv3.Client, service string, register func(*grpc.Server), log *slog.Logger) error {
	adv, err := o.advertise()
	if err != nil {
		return err
	}
	ttl := o.LeaseTTL
	if ttl == 0 {
		ttl = DefaultLease
	}
	reg, err := registry.Register(ctx, cli, registry.Instance{Addr: adv, Instance: o.instance(), Region: o.Region, Service: service}, ttl)
	if err != nil {
		return fmt.Errorf("register %s in %s: %w", service, o.Etcd, err)
	}
	// Registered before listening, so the instance is in the registry
	// once its port answers (the supervisor's readiness); deregistered as
	// soon as it is told to stop, while in-flight calls finish.
	sctx, stop := context.WithCancel(ctx)
	revoked := make(chan struct{})
	go func() {
		defer close(revoked)
		<-sctx.Done() // told to stop, or serving failed
		reg.Close()
	}()
	log.Info("registered", "service", service, "region", o.Region, "addr", adv, "lease", ttl)
	err = svc.Serve(ctx, o.Listen, register, log)
	stop()
	<-revoked
	return err
}

func (o Shop) instance() string {
	if o.Instance != "" {
		return o.Instance
	}
	if n := os.Getenv("LABCTL_NODE"); n != "" {
		return n
	}
	h, _ := os.Hostname()
	return h
}

// advertise is the address other instances dial: Advertise, or the node's
// IPv4 address with the listening port.
func (o Shop) advertise() (string, error) {
	if o.Advertise != "" {
		return o.Advertise, nil
	}
	_, port, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return "", fmt.Errorf("--listen %q: %w", o.Listen, err)
	}
	ip, err := serve.NodeIPv4()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(ip.String(), port), nil
}

// ListenOn is ":port" of a default port, for flags.
func ListenOn(port int) string { return ":" + strconv.Itoa(port) }
