// Package app runs the shop's tiers in a lab VM: the controller (HTTP
// behind the SLBs) and the order, inventory and coupon services (gRPC),
// each registered in etcd under a lease and finding its peers there.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"
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

// Defaults of the app tier's ports and registry lease. The gRPC ports are
// below the ephemeral range (net.ipv4.ip_local_port_range, 32768-60999):
// inside it, an outgoing connection of a VM's other services (to etcd, the
// database, the cache) can hold the port when the service binds it.
const (
	PortController = 8080
	PortOrder      = 5051
	PortInventory  = 5052
	PortCoupon     = 5053
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
	stop := sweep(ctx, st, log)
	return func(g *grpc.Server) { api.RegisterInventoryServer(g, srv) }, func() { stop(); rdb.Close(); st.Close() }, nil
}

// sweep runs svc.Sweep on st until the returned stop is called: every
// inventory and order instance gives back the deductions left without
// their order, from its start on, so any one of them surviving a fault
// (or coming back after it) is enough.
func sweep(ctx context.Context, st *store.Store, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); svc.Sweep(ctx, st, svc.SweepEvery, log) }()
	return func() { cancel(); <-done }
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
	stop := sweep(ctx, st, log)
	return func(g *grpc.Server) { api.RegisterOrderServer(g, srv) }, func() { stop(); st.Close() }, nil
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

// serveWith binds the instance's port, registers the instance under a
// lease, then listens and serves gRPC until ctx ends; the lease is revoked
// on the way out, so clients drop the instance at once (or after the
// lease's TTL if the process dies).
func (o Shop) serveWith(ctx context.Context, cli *clientv3.Client, service string, register func(*grpc.Server), log *slog.Logger) error {
	adv, err := o.advertise()
	if err != nil {
		return err
	}
	ttl := o.LeaseTTL
	if ttl == 0 {
		ttl = DefaultLease
	}
	// Bound before registering, so the registry never lists an instance
	// whose port is someone else's; listening only after, so the instance
	// is in the registry once its port answers (the supervisor's readiness).
	sock, err := bindTCP(o.Listen)
	if err != nil {
		return fmt.Errorf("grpc listen %s: %w", o.Listen, err)
	}
	defer sock.Close()
	reg, err := registry.Register(ctx, cli, registry.Instance{Addr: adv, Instance: o.instance(), Region: o.Region, Service: service}, ttl,
		func(err error) { log.Warn("not registered yet, retrying", "etcd", o.Etcd, "err", err) })
	if err != nil {
		if ctx.Err() != nil {
			// Told to stop while registering (the entry, if put, expires
			// with its lease): a clean end, not a failure.
			return nil
		}
		return fmt.Errorf("register %s in %s: %w", service, o.Etcd, err)
	}
	// Deregistered as soon as it is told to stop, while in-flight calls
	// finish.
	sctx, stop := context.WithCancel(ctx)
	revoked := make(chan struct{})
	go func() {
		defer close(revoked)
		<-sctx.Done() // told to stop, or serving failed
		reg.Close()
	}()
	log.Info("registered", "service", service, "region", o.Region, "addr", adv, "lease", ttl)
	if lis, lerr := listen(sock); lerr != nil {
		err = fmt.Errorf("grpc listen %s: %w", o.Listen, lerr)
	} else {
		err = svc.ServeListener(ctx, lis, register, log)
	}
	stop()
	<-revoked
	return err
}

// bindTCP returns a TCP socket bound to addr ("[host]:port", host an IP
// literal) but not listening; like net.Listen, an empty host is every
// IPv4 and IPv6 address, and SO_REUSEADDR lets a restarted instance bind
// over its predecessor's TIME_WAIT connections.
func bindTCP(addr string) (*os.File, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("bad port %q", port)
	}
	var ip netip.Addr
	if host != "" {
		if ip, err = netip.ParseAddr(host); err != nil {
			return nil, fmt.Errorf("host %q is not an IP address", host)
		}
	}
	family := unix.AF_INET6
	if ip.Is4() {
		family = unix.AF_INET
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil && host == "" {
		family = unix.AF_INET // no IPv6 in this kernel
		fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	}
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	f := os.NewFile(uintptr(fd), "tcp "+addr)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		f.Close()
		return nil, os.NewSyscallError("setsockopt", err)
	}
	var sa unix.Sockaddr
	switch {
	case family == unix.AF_INET && host == "":
		sa = &unix.SockaddrInet4{Port: int(p)}
	case family == unix.AF_INET:
		sa = &unix.SockaddrInet4{Port: int(p), Addr: ip.As4()}
	case host == "":
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			f.Close()
			return nil, os.NewSyscallError("setsockopt", err)
		}
		sa = &unix.SockaddrInet6{Port: int(p)}
	default:
		sa = &unix.SockaddrInet6{Port: int(p), Addr: ip.As16()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		f.Close()
		return nil, os.NewSyscallError("bind", err)
	}
	return f, nil
}

// listen makes a bound socket listen and returns it as a net.Listener
// (on a duplicate of the socket: the caller still closes sock).
func listen(sock *os.File) (net.Listener, error) {
	if err := unix.Listen(int(sock.Fd()), unix.SOMAXCONN); err != nil {
		return nil, os.NewSyscallError("listen", err)
	}
	return net.FileListener(sock)
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
