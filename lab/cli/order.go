package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"labctl/lab/bgp"
	"labctl/lab/pki"
	"labctl/lab/runner"
	"labctl/lab/serve"
	"labctl/lab/shop/controller"
	shoppart "labctl/lab/shop/part"
	"labctl/lab/shop/store"
	"labctl/lab/state"
	"labctl/lab/topology"
)

// DefaultOrderURL is where `labctl order` posts: the shop's name, resolved
// by the subscriber's carrier resolver and the GSLB.
const DefaultOrderURL = "https://www.shop.example/purchaseOrder"

// OrderResult is what `labctl order --format json` prints.
type OrderResult struct {
	Lab      string                     `json:"lab"`
	From     string                     `json:"from"`
	URL      string                     `json:"url"`
	OrderID  string                     `json:"order_id"`
	Status   int                        `json:"status"`
	RemoteIP string                     `json:"remote_ip"`
	Order    *controller.OrderResponse  `json:"order,omitempty"`
	Error    *controller.Error          `json:"error,omitempty"`
	Timing   OrderTiming                `json:"timing"`
	Request  *controller.OrderRequest   `json:"request"`
	Verify   string                     `json:"tls_verify"` // "ok" or curl's verify result
	curl     map[string]json.RawMessage // curl's --write-out %{json}
}

// OrderTiming is curl's breakdown of one request, in milliseconds, each
// phase on its own (not cumulative as curl reports them).
type OrderTiming struct {
	DNS       float64 `json:"dns_ms"`
	Connect   float64 `json:"connect_ms"`
	TLS       float64 `json:"tls_ms"`
	FirstByte float64 `json:"first_byte_ms"` // request sent → first byte of the answer
	Total     float64 `json:"total_ms"`
}

func orderCmd(g *globals) *cobra.Command {
	var lab, from, url, id string
	var req controller.OrderRequest
	var price string
	var wait time.Duration
	c := &cobra.Command{
		Use:   "order",
		Short: "Place an order from a subscriber: real DNS, real TLS, real HTTPS POST",
		Long: `Run curl inside a subscriber's namespace (--from, default ue1) and POST
/purchaseOrder to https://www.shop.example: the name is resolved by the
subscriber's carrier resolver (root, TLD, the shop's server, the GSLB), the
TLS chain is verified against the lab's root CA and nothing else, and the
order travels the subscriber's carrier, the cloud's gateway (DNAT to a
HAProxy VM), a controller, and the order, inventory and coupon services
found in the registry, down to PostgreSQL.

It prints the order (which region, controller and service instances made
it) and curl's timing breakdown: DNS, TCP connect, TLS handshake, the wait
for the first byte of the answer, and the total.

--id makes the POST idempotent (sent as the Idempotency-Key header): the
same id again returns the same order and never deducts stock twice. Without
--id a fresh one is made. When the lab runs BGP, order first waits (up to
--wait) until routing has converged; sessions over links cut with 'labctl
link down' are expected down, not waited for, and named.`,
		Example: `  sudo labctl order                               # ue1, one phone-x
  sudo labctl order --from ue2 --sku phone-x --qty 2
  sudo labctl order --id o-42 && sudo labctl order --id o-42   # the second is a replay
  sudo labctl order --coupon D11-10 --format json | jq .timing`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireRoot("order", "it enters the lab's namespaces"); err != nil {
				return err
			}
			lab, rec, err := labRecord(lab)
			if err != nil {
				return err
			}
			ns, _, err := nodeIn(rec, lab, from)
			if err != nil {
				return err
			}
			root := pki.Paths(state.PKIDir(lab)).Root
			if _, err := os.Stat(root); err != nil {
				return fmt.Errorf("lab %s has no certificate authority (no pki: block in its topology): %w", lab, err)
			}
			if id == "" {
				id = newOrderID()
			}
			req.OrderID = id
			req.Order = &controller.StoryOrder{Date: time.Now().Format("2006-01-02"), ClassName: req.SKU, Author: from, Price: price}
			if err := waitRouting(cmd.Context(), g, lab, rec.Topology, wait); err != nil {
				return err
			}
			res, err := postOrder(cmd.Context(), ns, root, url, &req)
			if err != nil {
				return fmt.Errorf("order from %s: %w", from, err)
			}
			res.Lab, res.From = lab, from
			if g.format == "json" {
				if err := g.json(res); err != nil {
					return err
				}
			} else {
				printOrder(g.out, res)
			}
			if res.Status >= 400 {
				return fmt.Errorf("order %s: HTTP %d", id, res.Status)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&lab, "lab", "", "lab name (default: the only lab up)")
	f.StringVar(&from, "from", "ue1", "the subscriber node to order from")
	f.StringVar(&req.SKU, "sku", "phone-x", "product")
	f.Int32Var(&req.Quantity, "qty", 1, "quantity (1-100)")
	f.StringVar(&req.User, "user", "", "user (default: the subscriber's node name)")
	f.StringVar(&req.Coupon, "coupon", "", "coupon code")
	f.StringVar(&price, "price", "", "the price the app shows (e.g. 68.00); a different catalog price is refused")
	f.StringVar(&id, "id", "", "order id, sent as Idempotency-Key (default: a new one)")
	f.StringVar(&url, "url", DefaultOrderURL, "where to POST")
	f.DurationVar(&wait, "wait", 30*time.Second, "how long to wait for BGP to converge first")
	c.RegisterFlagCompletionFunc("from", completeNodes)
	c.PreRun = func(*cobra.Command, []string) {
		if req.User == "" {
			req.User = from
		}
	}
	return c
}

// newOrderID is a fresh order id: time and randomness, so two runs never
// collide.
func newOrderID() string {
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("o-%s-%s", time.Now().UTC().Format("20060102T150405"), hex.EncodeToString(b))
}

// waitRouting waits until the lab's BGP speakers have converged, so an
// order right after up does not race the routes. Sessions over a link cut
// with `labctl link down` are expected down: the text output says which
// were left out.
func waitRouting(ctx context.Context, g *globals, lab string, t *topology.Topology, wait time.Duration) error {
	if t == nil || len(bgp.Speakers(t)) == 0 {
		return nil
	}
	sp, _, err := bgp.Wait(ctx, lab, wait)
	if err != nil {
		return fmt.Errorf("%w (see labctl bgp)", err)
	}
	if cut := cutSessionsText(t, sp); cut != "" && g.format == "text" {
		fmt.Fprintf(g.out, "BGP converged without the sessions over cut links (labctl link up to mend): %s\n", cut)
	}
	return nil
}

// cutSessionsText lists the speakers' sessions over cut links, each as
// node→neighbor (its node).
func cutSessionsText(t *topology.Topology, sp []*bgp.Speaker) string {
	owners := t.IPv4Owners()
	var out []string
	for _, s := range sp {
		for _, addr := range s.Cut {
			what := s.Node + "→" + addr
			if a, err := netip.ParseAddr(addr); err == nil && owners[a] != "" {
				what += " (" + owners[a] + ")"
			}
			out = append(out, what)
		}
	}
	return strings.Join(out, ", ")
}

// postOrder runs curl in ns: the lab root as its only CA, the order as the
// body, the id as Idempotency-Key, and curl's timings as JSON.
func postOrder(ctx context.Context, ns, rootCA, url string, req *controller.OrderRequest) (*OrderResult, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "labctl-order-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "body")
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	runErr := runner.InNetns(ns).Command(ctx, "curl", "-sS",
		"--cacert", rootCA, "--capath", dir, // the lab root and nothing else
		"--max-time", "10",
		"-H", "Content-Type: application/json; charset=utf-8",
		"-H", "Idempotency-Key: "+req.OrderID,
		"--data-binary", "@-", "-o", out, "-w", "%{json}", url).
		SetStdin(bytes.NewReader(body)).SetStdout(&stdout).SetStderr(&stderr).Run()
	// The messages below give curl's exit status and stderr, not its
	// command line (the whole request).
	var re *runner.Error
	if errors.As(runErr, &re) {
		runErr = re.Err
	}
	res := &OrderResult{URL: url, OrderID: req.OrderID, Request: req}
	if err := json.Unmarshal(stdout.Bytes(), &res.curl); err != nil {
		if runErr != nil {
			return nil, fmt.Errorf("curl: %v: %s", runErr, strings.TrimSpace(stderr.String()))
		}
		return nil, fmt.Errorf("curl's timing output: %w", err)
	}
	res.fill()
	if runErr != nil {
		return res, fmt.Errorf("curl: %s", strings.TrimSpace(stderr.String()))
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		return res, err
	}
	if res.Status >= 400 {
		var eb controller.ErrorBody
		if json.Unmarshal(raw, &eb) != nil || eb.Error.Code == "" {
			return res, fmt.Errorf("HTTP %d: %s", res.Status, strings.TrimSpace(string(raw)))
		}
		res.Error = &eb.Error
		return res, nil
	}
	res.Order = &controller.OrderResponse{}
	if err := json.Unmarshal(raw, res.Order); err != nil {
		return res, fmt.Errorf("HTTP %d: the answer is not an order: %w", res.Status, err)
	}
	return res, nil
}

// fill takes status, peer and timings from curl's write-out.
func (r *OrderResult) fill() {
	num := func(k string) float64 {
		var v float64
		json.Unmarshal(r.curl[k], &v)
		return v
	}
	json.Unmarshal(r.curl["remote_ip"], &r.RemoteIP)
	r.Status = int(num("http_code"))
	if num("ssl_verify_result") == 0 {
		r.Verify = "ok"
	} else {
		r.Verify = fmt.Sprintf("failed (%v)", num("ssl_verify_result"))
	}
	dns, conn, tls, pre, first, total := num("time_namelookup"), num("time_connect"), num("time_appconnect"),
		num("time_pretransfer"), num("time_starttransfer"), num("time_total")
	r.Timing = OrderTiming{DNS: msOf(dns), Connect: msOf(conn - dns), TLS: msOf(tls - conn),
		FirstByte: msOf(first - pre), Total: msOf(total)}
}

func msOf(sec float64) float64 {
	if sec < 0 {
		sec = 0
	}
	return float64(int64(sec*1e6)) / 1000
}

func printOrder(w io.Writer, r *OrderResult) {
	fmt.Fprintf(w, "POST %s from %s (order id %s)\n", r.URL, r.From, r.OrderID)
	fmt.Fprintf(w, "  answered by %s:443, HTTP %d, TLS chain verified against the lab root CA: %s\n", r.RemoteIP, r.Status, r.Verify)
	if o := r.Order; o != nil {
		what := "created"
		if o.Replayed {
			what = "replayed (this id was ordered before: the stored order, its path and client are the first call's; no second deduction)"
		}
		fmt.Fprintf(w, "  order     %s %s: %s × %d at %s", o.OrderID, what, o.SKU, o.Quantity, o.Price)
		if o.Coupon != "" {
			fmt.Fprintf(w, ", coupon %s −%s", o.Coupon, o.Discount)
		}
		fmt.Fprintf(w, " = %s\n", o.Total)
		fmt.Fprintf(w, "  path      region %s → controller %s → order %s → inventory %s\n", o.Region, o.Controller, o.OrderInstance, o.InventoryInstance)
		fmt.Fprintf(w, "  stock     %d left after it (%d compare-and-set attempt(s))\n", o.StockLeft, o.CASAttempts)
		fmt.Fprintf(w, "  client    %s (the subscriber as the shop saw it)\n", o.Client)
	}
	if e := r.Error; e != nil {
		fmt.Fprintf(w, "  error     %s: %s\n", e.Code, e.Message)
	}
	t := r.Timing
	fmt.Fprintf(w, "  timing    DNS %s  connect %s  TLS %s  first byte %s  total %s\n",
		msText(t.DNS), msText(t.Connect), msText(t.TLS), msText(t.FirstByte), msText(t.Total))
}

// OrdersResult is what `labctl orders --format json` prints.
type OrdersResult struct {
	Lab    string        `json:"lab"`
	Node   string        `json:"node"`
	Role   string        `json:"role"` // primary or standby
	Orders []store.Order `json:"orders"`
	Total  int64         `json:"total_orders"`
	// Reservations counts the stock deductions recorded, one per order id:
	// as many as orders, unless an attempt failed after deducting.
	Reservations int64           `json:"deductions"`
	Products     []store.Product `json:"products"`
}

func ordersCmd(g *globals) *cobra.Command {
	var lab string
	var standby bool
	var limit int
	c := &cobra.Command{
		Use:   "orders",
		Short: "List the orders and the stock in the lab's database",
		Long: `Read the shop's PostgreSQL database (through its unix socket in the lab's
state directory) and print the newest orders and every product's stock and
version. --standby reads the streaming hot standby instead: what has been
replicated to it.`,
		Example: `  sudo labctl orders
  sudo labctl orders --standby
  sudo labctl orders --format json | jq '.products[] | {sku, stock}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lab, rec, err := labRecord(lab)
			if err != nil {
				return err
			}
			res, err := readOrders(cmd.Context(), lab, rec.Topology, standby, limit)
			if errors.Is(err, store.ErrNoRights) {
				if root := requireRoot("orders", "the database's socket is for root and postgres only"); root != nil {
					return fmt.Errorf("%w (%w)", root, err)
				}
			}
			if err != nil {
				return err
			}
			if g.format == "json" {
				return g.json(res)
			}
			printOrders(g.out, res)
			return nil
		},
	}
	c.Flags().StringVar(&lab, "lab", "", "lab name (default: the only lab up)")
	c.Flags().BoolVar(&standby, "standby", false, "read the hot standby instead of the primary")
	c.Flags().IntVar(&limit, "limit", 20, "newest orders to list (0: only count them)")
	return c
}

// DBNode finds the node running the lab's PostgreSQL primary (or standby)
// and the service's name, from the lab's shop block.
func DBNode(t *topology.Topology, standby bool) (node, svc string, err error) {
	e, err := shoppart.DatabaseOf(t, standby)
	return e.Node, e.Service, err
}

// dbDSN is how labctl reaches the lab's primary or standby: through its
// unix socket in the lab's state directory.
func dbDSN(lab string, t *topology.Topology, standby bool) (dsn, node string, err error) {
	e, err := shoppart.DatabaseOf(t, standby)
	if err != nil {
		return "", "", err
	}
	dir := serve.PostgresSocketDir(state.DataDir(lab, e.Node, e.Service))
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrPermission) {
		return "", e.Node, fmt.Errorf("%s's database: %w to its socket directory: %w", e.Node, store.ErrNoRights, err)
	} else if err != nil {
		return "", e.Node, fmt.Errorf("%s's database is %w, not started (no socket directory): %w", e.Node, store.ErrUnreachable, err)
	}
	return serve.PostgresDSN(dir, e.Port), e.Node, nil
}

// OpenDB opens the lab's primary or standby through its unix socket, at
// once: a database that is down, refuses the user or lacks the schema is
// an error that says which (store.ErrUnreachable, ErrNoRights, ErrNoSchema).
func OpenDB(ctx context.Context, lab string, t *topology.Topology, standby bool) (*store.Store, string, error) {
	dsn, node, err := dbDSN(lab, t, standby)
	if err != nil {
		return nil, node, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := store.Connect(ctx, dsn, 4)
	if err != nil {
		return nil, node, fmt.Errorf("%s: %w", node, err)
	}
	return st, node, nil
}

func readOrders(ctx context.Context, lab string, t *topology.Topology, standby bool, limit int) (*OrdersResult, error) {
	st, node, err := OpenDB(ctx, lab, t, standby)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	res := &OrdersResult{Lab: lab, Node: node, Role: "primary", Orders: []store.Order{}}
	if standby {
		res.Role = "standby"
	}
	if limit > 0 {
		if res.Orders, err = st.Orders(ctx, limit); err != nil {
			return nil, err
		}
	}
	if res.Total, res.Reservations, err = st.Counts(ctx); err != nil {
		return nil, err
	}
	if res.Products, err = st.Products(ctx); err != nil {
		return nil, err
	}
	return res, nil
}

func printOrders(w io.Writer, r *OrdersResult) {
	fmt.Fprintf(w, "%d orders, %d stock deductions in %s (%s)", r.Total, r.Reservations, r.Node, r.Role)
	if len(r.Orders) > 0 && int64(len(r.Orders)) < r.Total {
		fmt.Fprintf(w, ", newest %d", len(r.Orders))
	}
	fmt.Fprintln(w)
	if len(r.Orders) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tCREATED\tUSER\tSKU\tQTY\tTOTAL\tREGION\tCONTROLLER\tORDER\tCLIENT")
		for _, o := range r.Orders {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", o.ID, o.Created.Local().Format("15:04:05.000"),
				o.User, o.SKU, o.Quantity, store.FormatCents(o.TotalCents), o.Region, o.Controller, o.OrderInstance, o.ClientAddr)
		}
		tw.Flush()
	}
	fmt.Fprintln(w, "\nstock:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SKU\tNAME\tPRICE\tSTOCK\tVERSION")
	for _, p := range r.Products {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", p.SKU, p.Name, store.FormatCents(p.PriceCents), p.Stock, p.Version)
	}
	tw.Flush()
}
