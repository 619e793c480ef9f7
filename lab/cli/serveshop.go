package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"labctl/lab/pki"
	"labctl/lab/serve"
	"labctl/lab/shop/app"
	shoppart "labctl/lab/shop/part"
	"labctl/lab/shop/store"
	"labctl/lab/state"
)

// shopServeCmds are the daemons of the order path: the distribution's
// servers (HAProxy, etcd, Redis, PostgreSQL) with the configuration labctl
// writes for them, and the shop's own tiers.
func shopServeCmds(g *globals) []*cobra.Command {
	run := g.runDaemon

	var slb serve.HAProxyOptions
	var backends, slbConfig string
	slbc := &cobra.Command{
		Use:   "slb",
		Short: "Run HAProxy as a server load balancer: TLS ends here (lab certificate), mode tcp to the controllers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lab, node, svc, err := inLab()
			if err != nil {
				return err
			}
			slb.Dir = state.DataDir(lab, node, svc)
			slb.Cert = pki.Paths(state.PKIDir(lab)).HAProxyPEM
			slb.Backends = splitList(backends)
			if slbConfig != "" {
				var c shoppart.SLBConfig
				if err := shoppart.ReadConfig(slbConfig, shoppart.VerbSLB, &c); err != nil {
					return err
				}
				slb.Listen, slb.Threads, slb.Backends = c.Listen, c.Threads, nil
				for _, b := range c.Backends {
					slb.Backends = append(slb.Backends, b.Name+"="+b.Addr)
				}
			} else if len(slb.Backends) == 0 {
				return errors.New("give --backends (or --config)")
			}
			slb.HealthPath, slb.ProxyV2 = "/healthz", true
			return run(cmd, func(ctx context.Context, log *slog.Logger) error { return serve.HAProxy(ctx, slb, log) })
		},
	}
	slbc.Flags().StringVar(&slb.Listen, "listen", shoppart.SLBListen, "address HAProxy listens on (TLS)")
	slbc.Flags().StringVar(&backends, "backends", "", "controllers: comma-separated name=ip:port")
	slbc.Flags().IntVar(&slb.Threads, "threads", shoppart.SLBThreads, "HAProxy threads")
	slbc.Flags().StringVar(&slbConfig, "config", "", "configuration file (a shop SLBConfig as JSON; wins over the other flags)")

	var etcd serve.EtcdOptions
	var etcdConfig string
	etcdc := &cobra.Command{
		Use:   "etcd",
		Short: "Run etcd, the service registry (one member, data in the lab's state directory)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lab, node, svc, err := inLab()
			if err != nil {
				return err
			}
			if etcdConfig != "" {
				var c shoppart.EtcdConfig
				if err := shoppart.ReadConfig(etcdConfig, shoppart.VerbEtcd, &c); err != nil {
					return err
				}
				etcd.Listen = c.Listen
			}
			if etcd.Listen, err = listenIP(etcd.Listen); err != nil {
				return err
			}
			etcd.DataDir, etcd.Name = state.DataDir(lab, node, svc), node
			return run(cmd, func(ctx context.Context, log *slog.Logger) error { return serve.Etcd(ctx, etcd, log) })
		},
	}
	etcdc.Flags().StringVar(&etcd.Listen, "listen", "", "IP for clients (default: the node's IPv4 address)")
	etcdc.Flags().StringVar(&etcdConfig, "config", "", "configuration file (a shop EtcdConfig as JSON; wins over the other flags)")

	var rds serve.RedisOptions
	var redisConfig string
	redisc := &cobra.Command{
		Use:   "redis",
		Short: "Run Redis as an AZ's product cache (no persistence)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lab, node, svc, err := inLab()
			if err != nil {
				return err
			}
			if redisConfig != "" {
				var c shoppart.RedisConfig
				if err := shoppart.ReadConfig(redisConfig, shoppart.VerbRedis, &c); err != nil {
					return err
				}
				rds.Listen, rds.MaxMemory = c.Listen, c.MaxMemory
			}
			if rds.Listen, err = listenIP(rds.Listen); err != nil {
				return err
			}
			rds.Dir = state.DataDir(lab, node, svc)
			return run(cmd, func(ctx context.Context, log *slog.Logger) error { return serve.Redis(ctx, rds, log) })
		},
	}
	redisc.Flags().StringVar(&rds.Listen, "listen", "", "IP to listen on (default: the node's IPv4 address)")
	redisc.Flags().StringVar(&rds.MaxMemory, "maxmemory", shoppart.RedisMaxMemory, "memory limit (LRU eviction)")
	redisc.Flags().StringVar(&redisConfig, "config", "", "configuration file (a shop RedisConfig as JSON; wins over the other flags)")

	var pg serve.PostgresOptions
	var allow, pgConfig string
	var products, coupons []string
	pgc := &cobra.Command{
		Use:   "postgres",
		Short: "Run PostgreSQL: the primary (schema and catalog made by labctl) or a streaming hot standby",
		Example: `  labctl serve postgres --allow 10.20.0.0/16 --product "sku=phone-x,name=Phone X,price=68.00,stock=1000"
  labctl serve postgres --standby-of 10.20.1.40:5432 --allow 10.20.0.0/16`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lab, node, svc, err := inLab()
			if err != nil {
				return err
			}
			var cat store.Catalog
			if pgConfig != "" {
				var c shoppart.PostgresConfig
				if err := shoppart.ReadConfig(pgConfig, shoppart.VerbPostgres, &c); err != nil {
					return err
				}
				if cat, err = c.Catalog(); err != nil {
					return fmt.Errorf("%s: %w", pgConfig, err)
				}
				pg.Listen, pg.Port, pg.StandbyOf = c.Listen, c.Port, c.StandbyOf
				allow, products, coupons = strings.Join(c.Allow, ","), nil, nil
			}
			for _, s := range products {
				p, err := store.ParseProduct(s)
				if err != nil {
					return fmt.Errorf("--product %q: %w", s, err)
				}
				cat.Products = append(cat.Products, p)
			}
			for _, s := range coupons {
				c, err := store.ParseCoupon(s)
				if err != nil {
					return fmt.Errorf("--coupon %q: %w", s, err)
				}
				cat.Coupons = append(cat.Coupons, c)
			}
			if pg.StandbyOf != "" && len(cat.Products)+len(cat.Coupons) > 0 {
				return errors.New("--product and --coupon seed the primary; a standby copies it")
			}
			if pg.Listen, err = listenIP(pg.Listen); err != nil {
				return err
			}
			pg.DataDir, pg.Allow = state.DataDir(lab, node, svc), splitList(allow)
			if pg.StandbyOf == "" {
				pg.Setup = func(ctx context.Context, dsn string) error { return store.Setup(ctx, dsn, cat) }
			}
			return run(cmd, func(ctx context.Context, log *slog.Logger) error { return serve.Postgres(ctx, pg, log) })
		},
	}
	pgc.Flags().StringVar(&pg.Listen, "listen", "", "IP to listen on besides the socket (default: the node's IPv4 address)")
	pgc.Flags().IntVar(&pg.Port, "port", shoppart.PortPostgres, "TCP port")
	pgc.Flags().StringVar(&allow, "allow", "", "comma-separated CIDRs allowed to connect and replicate")
	pgc.Flags().StringVar(&pg.StandbyOf, "standby-of", "", "run as a hot standby of this primary (host:port)")
	pgc.Flags().StringArrayVar(&products, "product", nil, "seed a product: sku=,name=,price=,stock= (repeatable)")
	pgc.Flags().StringArrayVar(&coupons, "coupon", nil, "seed a coupon: code=,discount=,min=,uses= (repeatable)")
	pgc.Flags().StringVar(&pgConfig, "config", "", "configuration file (a shop PostgresConfig as JSON; wins over the other flags)")

	tier := func(use, short string, port int, fn func(context.Context, app.Shop, *slog.Logger) error, needs ...string) *cobra.Command {
		var o app.Shop
		var config string
		c := &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				if config != "" {
					var tc shoppart.TierConfig
					if err := shoppart.ReadConfig(config, use, &tc); err != nil {
						return err
					}
					o = tc.Shop()
				} else if err := requireFlags(cmd, needs...); err != nil {
					return err
				}
				return run(cmd, func(ctx context.Context, log *slog.Logger) error { return fn(ctx, o, log) })
			},
		}
		f := c.Flags()
		f.StringVar(&config, "config", "", "configuration file (a shop TierConfig as JSON; wins over the other flags)")
		f.StringVar(&o.Region, "region", "", "the region this instance serves (its registry prefix)")
		f.StringVar(&o.Listen, "listen", app.ListenOn(port), "address to listen on")
		f.StringVar(&o.Etcd, "etcd", "", "the registry (host:port)")
		f.StringVar(&o.Instance, "instance", "", "instance name in the registry (default: the node's name)")
		needs = append([]string{"region", "etcd"}, needs...)
		for _, n := range needs {
			switch n {
			case "db":
				f.StringVar(&o.DB, "db", "", "the PostgreSQL primary (host:port)")
				f.Int32Var(&o.DBConns, "db-conns", app.DefaultDBConns, "database connection pool size")
			case "redis":
				f.StringVar(&o.Redis, "redis", "", "the AZ's Redis product cache (host:port)")
			}
		}
		if port != app.PortController {
			f.StringVar(&o.Advertise, "advertise", "", "address to register (default: the node's IPv4 address and the listening port)")
			f.DurationVar(&o.LeaseTTL, "lease", app.DefaultLease, "registry lease: a dead instance drops out after this")
		}
		return c
	}
	return []*cobra.Command{slbc, etcdc, redisc, pgc,
		tier("controller", "Run a controller: POST /purchaseOrder over HTTP behind the SLBs, calling the order service", app.PortController, app.Controller),
		tier("order", "Run the order service (gRPC): inventory and coupon through the registry, the order into the database", app.PortOrder, app.Order, "db"),
		tier("inventory", "Run the inventory service (gRPC): products via the AZ's cache, stock by compare-and-set", app.PortInventory, app.Inventory, "db", "redis"),
		tier("coupon", "Run the coupon service (gRPC)", app.PortCoupon, app.Coupon, "db"),
	}
}

// requireFlags is cobra's required flags, checked only when no --config
// file gives the daemon its configuration.
func requireFlags(cmd *cobra.Command, names ...string) error {
	var missing []string
	for _, n := range names {
		if !cmd.Flags().Changed(n) {
			missing = append(missing, `"`+n+`"`)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("required flag(s) %s not set (or give --config)", strings.Join(missing, ", "))
	}
	return nil
}

// inLab returns the lab, node and service a supervised daemon runs as.
func inLab() (lab, node, svc string, err error) {
	lab, node, svc = os.Getenv("LABCTL_LAB"), os.Getenv("LABCTL_NODE"), os.Getenv("LABCTL_SERVICE")
	if lab == "" || node == "" || svc == "" {
		return "", "", "", errors.New("this daemon runs as a lab's service (LABCTL_LAB, LABCTL_NODE and LABCTL_SERVICE are set by labctl up)")
	}
	return lab, node, svc, nil
}

// listenIP is ip, or the namespace's IPv4 address when ip is empty.
func listenIP(ip string) (string, error) {
	if ip != "" {
		return ip, nil
	}
	a, err := serve.NodeIPv4()
	return a.String(), err
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
