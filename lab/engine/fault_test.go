package engine_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"labctl/lab/bgp"
	"labctl/lab/internal/labtest"
	"labctl/lab/netns"
	"labctl/lab/pki"
	"labctl/lab/serve"
	"labctl/lab/shop/controller"
	"labctl/lab/shop/loadgen"
	"labctl/lab/shop/store"
	"labctl/lab/shop/svc"
	"labctl/lab/state"
	"labctl/lab/topology"
)

// The shop's integrity under single faults on topologies/double11.yaml:
// under a bounded order load, each tier is killed (or cut off) in turn;
// once the lab has recovered, the database must hold no stock deduction
// without its order, no stock lost or made up, and every order that was
// answered 201.

// faultSKUs are the products the load spreads over, made for the test.
const (
	faultSKUs    = 4
	faultStock   = 1_000_000
	faultWorkers = 16 // half from each carrier
)

// faultRelease bounds how long after the lab recovers a deduction left
// without its order is given back: the reservation's deadline, one sweep,
// and room for a busy machine.
const faultRelease = store.DefaultHold + svc.SweepEvery + 10*time.Second

func TestOrderIntegrityUnderFaults(t *testing.T) {
	labtest.NeedRoot(t, whyRoot)
	lab := labtest.LabName("f")
	tp := labTopology(t, "double11", lab)
	e, downed := upForTest(t, tp)
	ctx := context.Background()
	if _, _, err := bgp.Wait(ctx, lab, time.Minute); err != nil {
		t.Fatal(err)
	}
	dbNode := "east-db1"
	dsn := serve.PostgresDSN(serve.PostgresSocketDir(state.DataDir(lab, dbNode, "postgres")), 5432)
	run := fmt.Sprintf("fault-%d", time.Now().UnixNano())
	cat := store.Catalog{}
	for i := range faultSKUs {
		cat.Products = append(cat.Products, store.Product{SKU: fmt.Sprintf("%s-%d", run, i), Name: "fault", PriceCents: 100, Stock: faultStock})
	}
	if err := store.Setup(ctx, dsn, cat); err != nil {
		t.Fatal(err)
	}
	ld := newFaultLoad(t, lab, run)

	reUp := func() {
		t.Helper()
		if _, err := e.Up(ctx, tp); err != nil {
			t.Fatalf("labctl up after the fault: %v", err)
		}
	}
	kill := func(node, service string) func() {
		return func() {
			t.Helper()
			if err := syscall.Kill(servicePID(t, lab, node, service), syscall.SIGKILL); err != nil {
				t.Fatalf("kill -9 %s/%s: %v", node, service, err)
			}
		}
	}
	link := func(updown, a, b string) func() {
		return func() {
			t.Helper()
			if out, err := exec.Command(labctlBin, "link", updown, a, b, "--lab", lab).CombinedOutput(); err != nil {
				t.Fatalf("labctl link %s %s %s: %v\n%s", updown, a, b, err, out)
			}
		}
	}
	faults := []struct {
		name            string
		inject, recover func()
	}{
		{"kill -9 east-app1's order service", kill("east-app1", "order"), reUp},
		{"kill -9 east-app1's inventory service", kill("east-app1", "inventory"), reUp},
		{"kill -9 the PostgreSQL primary", kill(dbNode, "postgres"), reUp},
		// AZ b (east-app2, the standby) loses the AZ a database mid-call.
		{"cut AZ b's uplink", link("down", "east-core", "east-b"), func() { link("up", "east-core", "east-b")(); reUp() }},
	}
	for _, f := range faults {
		done := make(chan loadgen.Result)
		go func() { done <- ld.run(6 * time.Second) }()
		time.Sleep(1500 * time.Millisecond)
		f.inject()
		time.Sleep(2 * time.Second)
		f.recover()
		res := <-done
		t.Logf("%s: %d orders answered 201, outcomes %v", f.name, res.OK, res.Outcomes)
		// The next fault starts on a lab that takes orders from both carriers.
		labtest.WaitFor(t, 60*time.Second, func() bool { return ld.probe() }, "orders to succeed after "+f.name)
	}

	// What the database holds, once the deadline of every deduction made
	// under the faults has passed.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	like := run + "-%"
	start := time.Now()
	for {
		var unfinished int64
		err := conn.QueryRow(ctx, `SELECT count(*) FROM reservations r
			WHERE r.order_id LIKE $1 AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = r.order_id)`, like).Scan(&unfinished)
		if err == nil && unfinished == 0 {
			break
		}
		if time.Since(start) > faultRelease {
			t.Fatalf("%d stock deductions without their order %v after the last recovery (%v)", unfinished, faultRelease, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("no deduction without its order %v after the last recovery", time.Since(start).Round(time.Millisecond))
	var orders, distinct, orphans, reserved, stock, minStock, versions, reservations int64
	if err := conn.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM orders WHERE id LIKE $1),
		(SELECT count(DISTINCT id) FROM orders WHERE id LIKE $1),
		(SELECT count(*) FROM orders o WHERE o.id LIKE $1 AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.order_id = o.id)),
		(SELECT coalesce(sum(quantity), 0) FROM reservations WHERE order_id LIKE $1),
		(SELECT sum(stock) FROM products WHERE sku LIKE $1),
		(SELECT min(stock) FROM products WHERE sku LIKE $1),
		(SELECT sum(version) FROM products WHERE sku LIKE $1),
		(SELECT count(*) FROM reservations WHERE order_id LIKE $1)`, like).
		Scan(&orders, &distinct, &orphans, &reserved, &stock, &minStock, &versions, &reservations); err != nil {
		t.Fatal(err)
	}
	if orders != distinct || orphans != 0 {
		t.Errorf("%d orders, %d distinct ids, %d without a deduction", orders, distinct, orphans)
	}
	if stock+reserved != faultSKUs*faultStock || minStock < 0 {
		t.Errorf("stock %d + deducted %d = %d, want the initial %d (lowest stock %d)", stock, reserved, stock+reserved, faultSKUs*faultStock, minStock)
	}
	rows, _ := conn.Query(ctx, "SELECT id FROM orders WHERE id LIKE $1", like)
	stored, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, id := range stored {
		have[id] = true
	}
	for _, id := range ld.created() {
		if !have[id] {
			t.Errorf("order %s was answered 201 but is not stored", id)
		}
	}
	// Each deduction and each release moves a version by one.
	t.Logf("%d orders answered 201, %d stored, %d stock deducted; %d deductions given back", len(ld.created()), orders, reserved, (versions-reservations)/2)

	*downed = true
	downClean(t, e, lab, "after the faults")
}

// faultLoad posts orders from the subscribers of both carriers, each
// worker on its own kept-alive HTTPS connection to one VIP of the region
// its carrier is sent to, and remembers which ids were answered 201.
type faultLoad struct {
	prefix  string
	clients []*http.Client
	mu      sync.Mutex
	ok      []string
	seq     int // load runs so far: keeps ids unique across runs
}

func newFaultLoad(t *testing.T, lab, run string) *faultLoad {
	t.Helper()
	root := pki.Paths(state.PKIDir(lab)).Root
	pem, err := os.ReadFile(root)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("%s: no certificate", root)
	}
	l := &faultLoad{prefix: run}
	for w := range faultWorkers {
		from, vips := "ue1", eastVIPs
		if w%2 == 1 {
			from, vips = "ue2", northVIPs
		}
		ns, vip := topology.Namespace(lab, from), net.JoinHostPort(vips[(w/2)%len(vips)], "443")
		tr := &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return netns.Dial(ctx, ns, &net.Dialer{Timeout: 3 * time.Second}, "tcp", vip)
			},
			TLSClientConfig:     &tls.Config{RootCAs: roots, ServerName: shopName},
			MaxIdleConnsPerHost: 1,
		}
		t.Cleanup(tr.CloseIdleConnections)
		l.clients = append(l.clients, &http.Client{Timeout: 10 * time.Second, Transport: tr})
	}
	return l
}

// post places order id through worker w's connection.
func (l *faultLoad) post(ctx context.Context, w int, id string) (bool, string) {
	body, _ := json.Marshal(controller.OrderRequest{SKU: fmt.Sprintf("%s-%d", l.prefix, w%faultSKUs), Quantity: 1, User: "fault", OrderID: id})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+shopName+"/purchaseOrder", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.clients[w].Do(req)
	if err != nil {
		return false, "transport"
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return false, fmt.Sprint(resp.StatusCode)
	}
	l.mu.Lock()
	l.ok = append(l.ok, id)
	l.mu.Unlock()
	return true, "201"
}

// run is a closed-loop load of every worker for d (at most 5,000 orders
// per worker); no order is retried.
func (l *faultLoad) run(d time.Duration) loadgen.Result {
	l.seq++
	n := l.seq
	return loadgen.Run(context.Background(), faultWorkers, d, func(ctx context.Context, w, seq int) (bool, string) {
		if seq >= 5000 {
			time.Sleep(10 * time.Millisecond)
			return false, "bounded"
		}
		return l.post(ctx, w, fmt.Sprintf("%s-%d-%d-%d", l.prefix, n, w, seq))
	})
}

// probe places one order from each carrier and tells whether both got 201.
func (l *faultLoad) probe() bool {
	l.seq++
	ok := true
	for w := range 2 {
		got, _ := l.post(context.Background(), w, fmt.Sprintf("%s-probe-%d-%d", l.prefix, l.seq, w))
		ok = ok && got
	}
	return ok
}

func (l *faultLoad) created() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.ok...)
}
