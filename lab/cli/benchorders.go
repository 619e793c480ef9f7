package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"labctl/lab/bgp"
	"labctl/lab/dns"
	"labctl/lab/engine"
	"labctl/lab/netns"
	"labctl/lab/pki"
	"labctl/lab/runner"
	"labctl/lab/shop/api"
	"labctl/lab/shop/app"
	"labctl/lab/shop/controller"
	"labctl/lab/shop/loadgen"
	shoppart "labctl/lab/shop/part"
	"labctl/lab/shop/store"
	"labctl/lab/shop/svc"
	"labctl/lab/state"
	"labctl/lab/topology"
)

// OrdersBenchResult is what `labctl bench orders --format json` prints.
type OrdersBenchResult struct {
	Lab      string         `json:"lab"`
	From     string         `json:"from"`
	VIPs     []string       `json:"vips"` // the GSLB's answer to --from's resolver
	SKUs     int            `json:"skus"`
	Up       time.Duration  `json:"up_ns"`
	Down     time.Duration  `json:"down_ns"`
	Through  loadgen.Result `json:"through_lab"`
	Loopback loadgen.Result `json:"loopback"`
	Ratio    float64        `json:"ratio"` // lab / loopback orders per second
	// Checks against the database: each must be 0.
	Duplicates int64 `json:"duplicates"` // stock gone beyond the deductions recorded (one per order id)
	Oversold   int64 `json:"oversold"`   // orders stored with no deduction behind them
	Lost       int64 `json:"lost"`       // orders answered 201 (or OK) that the database does not have
	// Deductions whose order was not written (a request that failed after
	// deducting) and whose deadline has not passed yet: the sweepers give
	// them back after it (store.DefaultHold), or the same order id again
	// finishes them.
	Unfinished int64 `json:"unfinished"`
}

func benchOrdersCmd(g *globals) *cobra.Command {
	var file, from string
	var workers, skus int
	var dur time.Duration
	var noLoopback bool
	c := &cobra.Command{
		Use:   "orders [-t topologies/double11.yaml] [--from ue1] [-c 32] [-d 10s]",
		Short: "Measure the order path: orders/s and latency through the whole lab, and on loopback",
		Long: `Bring the lab up (timed), wait for BGP, then run a closed-loop load of
orders from a subscriber: -c workers, each with one HTTPS connection (TLS
verified against the lab root) to one of the VIPs the GSLB gave the
subscriber's resolver, one POST /purchaseOrder outstanding, for -d. Every
order passes the carrier, the gateway's DNAT, HAProxy, a controller, and
the order, inventory and coupon services found in the registry, and is
written to PostgreSQL (with its streaming standby).

Then the same order service is called directly on loopback: inside the
first app VM, an order, inventory and coupon server on 127.0.0.1 with the
same database and cache, driven by gRPC with the same -c and -d. The ratio
of the two rates is what the network path costs.

The orders go to --skus bench products made for the run (so that workers
do not all fight over one row) and are checked against the database:
duplicates (stock gone beyond the deductions recorded, one per order id),
oversold (orders stored with no deduction behind them) and lost (answered
orders the database lacks) must all be 0; it fails otherwise. The lab is
taken down (timed) at the end, and its database with it.`,
		Example: `  sudo labctl bench orders
  sudo labctl bench orders -c 64 -d 20s --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if workers < 1 || workers > 256 {
				return fmt.Errorf("-c %d: use 1..256 workers", workers)
			}
			if dur <= 0 || dur > 2*time.Minute {
				return fmt.Errorf("-d %s: use a duration up to 2m", dur)
			}
			if skus < 1 || skus > 1000 {
				return fmt.Errorf("--skus %d: use 1..1000", skus)
			}
			t, err := loadTopology(file)
			if err != nil {
				return err
			}
			if n := t.Nodes[from]; n == nil || n.DNS == nil || len(n.DNS.Nameservers) == 0 {
				return fmt.Errorf("--from %s: no node of that name with dns: nameservers in %s", from, t.File)
			}
			if _, err := state.Load(t.Name); err == nil {
				return fmt.Errorf("lab %s is up: take it down first (the benchmark brings it up and down itself)", t.Name)
			}
			e := engine.New(engine.Options{})
			ctx := cmd.Context()
			res := &OrdersBenchResult{Lab: t.Name, From: from, SKUs: skus}
			t0 := time.Now()
			_, err = e.Up(ctx, t)
			res.Up = time.Since(t0)
			if err == nil {
				err = benchOrdersRun(ctx, e, t, res, workers, dur, skus, !noLoopback)
			}
			t1 := time.Now()
			derr := e.Down(context.WithoutCancel(ctx), t.Name)
			res.Down = time.Since(t1)
			switch {
			case err != nil && derr != nil:
				return fmt.Errorf("bench orders: %w (and down: %v)", err, derr)
			case err != nil:
				return fmt.Errorf("bench orders: %w", err)
			case derr != nil:
				return fmt.Errorf("bench orders: down: %w", derr)
			}
			if g.format == "json" {
				err = g.json(res)
			} else {
				printOrdersBench(g, res)
			}
			if err == nil && (res.Duplicates != 0 || res.Oversold != 0 || res.Lost != 0) {
				err = fmt.Errorf("the database disagrees with the answers: duplicates %d, oversold %d, lost %d", res.Duplicates, res.Oversold, res.Lost)
			}
			return err
		},
	}
	c.Flags().StringVarP(&file, "topology", "t", "", "topology file (default: $LABCTL_TOPOLOGY or "+DefaultTopology+")")
	c.Flags().StringVar(&from, "from", "ue1", "the subscriber node the load comes from")
	c.Flags().IntVarP(&workers, "concurrency", "c", 32, "workers, one order outstanding on each")
	c.Flags().DurationVarP(&dur, "duration", "d", 10*time.Second, "length of each load")
	c.Flags().IntVar(&skus, "skus", 32, "bench products the orders are spread over")
	c.Flags().BoolVar(&noLoopback, "no-loopback", false, "skip the loopback comparison")
	return c
}

func benchOrdersRun(ctx context.Context, e *engine.Engine, t *topology.Topology, res *OrdersBenchResult, workers int, dur time.Duration, skus int, loopback bool) error {
	if _, _, err := bgp.Wait(ctx, t.Name, time.Minute); err != nil {
		return err
	}
	ns := topology.Namespace(t.Name, res.From)
	var ans *dns.Result
	err := netns.Do(ns, func() error {
		var err error
		ans, err = dns.Query(ctx, t.Nodes[res.From].DNS.Nameservers[0], benchHost, mdns.TypeA, dns.QueryOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("resolve %s from %s: %w", benchHost, res.From, err)
	}
	for _, rr := range ans.Msg.Answer {
		if a, ok := rr.(*mdns.A); ok {
			res.VIPs = append(res.VIPs, a.A.String())
		}
	}
	if len(res.VIPs) == 0 {
		return fmt.Errorf("%s: no address for %s", res.From, benchHost)
	}
	st, _, err := OpenDB(ctx, t.Name, t, false)
	if err != nil {
		return err
	}
	defer st.Close()
	run := "bench-" + strconv.FormatInt(time.Now().Unix(), 36)
	cat := store.Catalog{}
	for i := range skus {
		cat.Products = append(cat.Products, store.Product{SKU: fmt.Sprintf("%s-%03d", run, i), Name: "bench", PriceCents: 100, Stock: benchStock})
	}
	dsn, _, err := dbDSN(t.Name, t, false)
	if err != nil {
		return err
	}
	if err := store.Setup(ctx, dsn, cat); err != nil {
		return err
	}

	res.Through, err = labLoad(ctx, ns, state.PKIDir(t.Name), res.VIPs, run, workers, dur, skus)
	if err != nil {
		return err
	}
	if loopback {
		if res.Loopback, err = loopbackLoad(ctx, t, run, workers, dur, skus); err != nil {
			return fmt.Errorf("loopback: %w", err)
		}
		if res.Loopback.Rate > 0 {
			res.Ratio = res.Through.Rate / res.Loopback.Rate
		}
	}
	// What the database says of the run.
	tally, err := st.TallyRun(ctx, run, benchStock)
	if err != nil {
		return err
	}
	res.Duplicates = tally.Deducted - tally.Reserved
	res.Oversold = tally.Orphans
	res.Lost = max(0, int64(res.Through.OK+res.Loopback.OK)-tally.Orders)
	res.Unfinished = tally.Unfinished
	return nil
}

// benchStock is the stock of each bench product: more than any run sells.
const benchStock = 1 << 40

const benchHost = "www.shop.example"

// labLoad posts orders from inside ns over HTTPS, each worker on its own
// kept-alive connection to one of the VIPs.
func labLoad(ctx context.Context, ns, pkiDir string, vips []string, run string, workers int, dur time.Duration, skus int) (loadgen.Result, error) {
	pem, err := os.ReadFile(pki.Paths(pkiDir).Root)
	if err != nil {
		return loadgen.Result{}, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return loadgen.Result{}, fmt.Errorf("%s: no certificate", pki.Paths(pkiDir).Root)
	}
	clients := make([]*http.Client, workers)
	for w := range clients {
		vip := net.JoinHostPort(vips[w%len(vips)], "443")
		clients[w] = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return netns.Dial(ctx, ns, &net.Dialer{Timeout: 3 * time.Second}, "tcp", vip)
			},
			TLSClientConfig:     &tls.Config{RootCAs: roots, ServerName: benchHost},
			MaxIdleConnsPerHost: 1,
		}}
		defer clients[w].CloseIdleConnections()
	}
	url := "https://" + benchHost + "/purchaseOrder"
	return loadgen.Run(ctx, workers, dur, func(ctx context.Context, w, seq int) (bool, string) {
		body, _ := json.Marshal(controller.OrderRequest{SKU: fmt.Sprintf("%s-%03d", run, w%skus), Quantity: 1, User: "bench",
			OrderID: fmt.Sprintf("%s-lab-%d-%d", run, w, seq)})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := clients[w].Do(req)
		if err != nil {
			return false, "transport: " + transportError(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusCreated {
			io.Copy(io.Discard, resp.Body)
			return true, "201"
		}
		var eb controller.ErrorBody
		json.NewDecoder(resp.Body).Decode(&eb)
		return false, strconv.Itoa(resp.StatusCode) + " " + eb.Error.Code
	}), nil
}

// loopbackLoad runs `labctl bench orders-loopback` inside the first app
// VM (the node running an order service) and reads its result.
func loopbackLoad(ctx context.Context, t *topology.Topology, run string, workers int, dur time.Duration, skus int) (loadgen.Result, error) {
	node, db, redisAddr, err := appNode(t)
	if err != nil {
		return loadgen.Result{}, err
	}
	self, err := os.Executable()
	if err != nil {
		return loadgen.Result{}, err
	}
	out, err := runner.InNetns(topology.Namespace(t.Name, node)).Command(ctx, self, "bench", "orders-loopback",
		"--db", db, "--redis", redisAddr, "--run", run, "-c", strconv.Itoa(workers), "-d", dur.String(), "--skus", strconv.Itoa(skus)).Output()
	if err != nil {
		return loadgen.Result{}, err // names the node's namespace, the command and its stderr
	}
	var r loadgen.Result
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("%s: %w", node, err)
	}
	return r, nil
}

// appNode is the first app VM of the lab's shop (by node name), and the
// database and cache its tiers use.
func appNode(t *topology.Topology) (node, db, redis string, err error) {
	apps := shoppart.AppNodes(t, "")
	if len(apps) == 0 {
		return "", "", "", fmt.Errorf("%s has no shop: block with app VMs", t.File)
	}
	return apps[0].Node, apps[0].DB, apps[0].Redis, nil
}

// benchLoopbackCmd is the loopback half of bench orders, run inside an app
// VM: the order, inventory and coupon servers on 127.0.0.1, called by gRPC.
func benchLoopbackCmd() *cobra.Command {
	var db, redisAddr, run string
	var workers, skus int
	var dur time.Duration
	c := &cobra.Command{
		Use:    "orders-loopback",
		Short:  "The loopback half of bench orders (run inside an app VM)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			r, err := loopbackRun(ctx, db, redisAddr, run, workers, dur, skus)
			if err != nil {
				return err
			}
			return json.NewEncoder(cmd.OutOrStdout()).Encode(r)
		},
	}
	c.Flags().StringVar(&db, "db", "", "the PostgreSQL primary (host:port)")
	c.Flags().StringVar(&redisAddr, "redis", "", "the product cache (host:port)")
	c.Flags().StringVar(&run, "run", "", "the run's prefix (its SKUs exist)")
	c.Flags().IntVarP(&workers, "concurrency", "c", 32, "workers")
	c.Flags().DurationVarP(&dur, "duration", "d", 10*time.Second, "length of the load")
	c.Flags().IntVar(&skus, "skus", 32, "bench products")
	return c
}

func loopbackRun(ctx context.Context, db, redisAddr, run string, workers int, dur time.Duration, skus int) (loadgen.Result, error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	o := app.Shop{DB: db, Redis: redisAddr, Region: "loopback"}
	var conns []*grpc.ClientConn
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	// start serves one server on a loopback port and returns a client of it.
	start := func(reg func(*grpc.Server), done func(), err error) (*grpc.ClientConn, error) {
		if err != nil {
			return nil, err
		}
		closers = append(closers, done)
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		go svc.ServeListener(ctx, lis, reg, log)
		c, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		conns, closers = append(conns, c), append(closers, func() { c.Close() })
		return c, nil
	}
	inv, err := start(app.InventoryServer(ctx, o, log))
	if err != nil {
		return loadgen.Result{}, err
	}
	cpn, err := start(app.CouponServer(ctx, o, log))
	if err != nil {
		return loadgen.Result{}, err
	}
	oc, err := start(app.OrderServer(ctx, o, api.NewInventoryClient(inv), api.NewCouponClient(cpn), log))
	if err != nil {
		return loadgen.Result{}, err
	}
	// Every server answers its health check before the load starts.
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	for _, c := range conns {
		if _, err := healthpb.NewHealthClient(c).Check(wctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
			return loadgen.Result{}, fmt.Errorf("loopback server %s: %w", c.Target(), err)
		}
	}
	orders := api.NewOrderClient(oc)
	return loadgen.Run(ctx, workers, dur, func(ctx context.Context, w, seq int) (bool, string) {
		_, err := orders.Create(ctx, &api.CreateOrderRequest{OrderId: fmt.Sprintf("%s-lo-%d-%d", run, w, seq), User: "bench",
			Sku: fmt.Sprintf("%s-%03d", run, w%skus), Quantity: 1, Region: "loopback"})
		if err != nil {
			return false, "rpc " + api.Reason(err)
		}
		return true, "ok"
	}), nil
}

func printOrdersBench(g *globals, r *OrdersBenchResult) {
	fmt.Fprintf(g.out, "lab %s: up %s, down %s; load from %s to %v, %d workers, orders over %d bench SKUs\n\n",
		r.Lab, round(r.Up), round(r.Down), r.From, r.VIPs, r.Through.Workers, r.SKUs)
	fmt.Fprintf(g.out, "%-34s %10s %9s %9s %9s %9s %7s\n", "PATH", "ORDERS/S", "P50", "P90", "P99", "MAX", "ERRORS")
	row := func(name string, l loadgen.Result) {
		fmt.Fprintf(g.out, "%-34s %10.0f %9s %9s %9s %9s %7d\n", name, l.Rate, round(l.P50), round(l.P90), round(l.P99), round(l.Max), l.Errors)
	}
	row("through the lab (HTTPS, "+r.From+")", r.Through)
	if r.Loopback.Workers > 0 {
		row("order service on loopback (gRPC)", r.Loopback)
		fmt.Fprintf(g.out, "\nlab / loopback: %.2f× the orders per second\n", r.Ratio)
	}
	for _, l := range []struct {
		name string
		r    loadgen.Result
		ok   string
	}{{"through the lab", r.Through, "201"}, {"on loopback", r.Loopback, "ok"}} {
		for _, k := range slices.Sorted(maps.Keys(l.r.Outcomes)) {
			if k != l.ok {
				fmt.Fprintf(g.out, "%s: %d × %s\n", l.name, l.r.Outcomes[k], k)
			}
		}
	}
	fmt.Fprintf(g.out, "database: duplicates %d, oversold %d, lost %d (unfinished deductions: %d)\n", r.Duplicates, r.Oversold, r.Lost, r.Unfinished)
}

// transportError is the innermost cause of a failed request, without the
// addresses that would make every failure its own outcome.
func transportError(err error) string {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			break
		}
		err = u
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return msg
}
