package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"labctl/lab/bgp"
	"labctl/lab/cli"
	"labctl/lab/engine"
	"labctl/lab/firewall"
	"labctl/lab/internal/labtest"
	"labctl/lab/netns"
	"labctl/lab/pki"
	"labctl/lab/serve"
	"labctl/lab/service"
	"labctl/lab/shop/controller"
	"labctl/lab/shop/registry"
	"labctl/lab/shop/svc"
	"labctl/lab/state"
	"labctl/lab/topology"
)

// The order path end to end on topologies/double11.yaml: subscribers of
// two carriers order through real DNS, TLS, HAProxy, controllers, gRPC
// services found in etcd, and PostgreSQL with a streaming standby.

var (
	poolA = netip.MustParsePrefix("198.51.100.0/28")  // carrier A's CGNAT pool
	poolB = netip.MustParsePrefix("198.51.100.64/28") // carrier B's
)

// orderFrom runs `labctl order --format json`; a refused order (HTTP
// 4xx/5xx) is a result, not an error.
func orderFrom(lab string, args ...string) (cli.OrderResult, error) {
	out, err := exec.Command(labctlBin, append([]string{"order", "--lab", lab, "--format", "json"}, args...)...).Output()
	var r cli.OrderResult
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		return r, fmt.Errorf("labctl order %v: %v %v\n%s%s", args, err, jerr, out, stderr)
	}
	if err != nil && r.Status < 400 {
		return r, fmt.Errorf("labctl order %v failed with HTTP %d: %v", args, r.Status, err)
	}
	return r, nil
}

// labctlOrder is orderFrom for the test's own goroutine.
func labctlOrder(t *testing.T, lab string, args ...string) cli.OrderResult {
	t.Helper()
	r, err := orderFrom(lab, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// labctlOrders runs `labctl orders --format json`.
func labctlOrders(t *testing.T, lab string, args ...string) cli.OrdersResult {
	t.Helper()
	out, err := exec.Command(labctlBin, append([]string{"orders", "--lab", lab, "--format", "json", "--limit", "1000"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("labctl orders %v: %v\n%s", args, err, out)
	}
	var r cli.OrdersResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("labctl orders %v: %v\n%s", args, err, out)
	}
	return r
}

func stockOf(r cli.OrdersResult, sku string) int64 {
	for _, p := range r.Products {
		if p.SKU == sku {
			return p.Stock
		}
	}
	return -1
}

// registryIn lists a region's instances of a service from inside a node:
// the etcd client's connections are dialled in that node's namespace.
func registryIn(t *testing.T, lab, node, region, service string) []string {
	t.Helper()
	ns := topology.Namespace(lab, node)
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		return netns.Dial(ctx, ns, &net.Dialer{}, "tcp", addr)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"10.20.1.30:2379"}, DialTimeout: 3 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(dial), grpc.WithTransportCredentials(insecure.NewCredentials())}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	ins, err := registry.List(ctx, cli, region, service)
	if err != nil {
		t.Fatalf("registry %s/%s: %v", region, service, err)
	}
	var out []string
	for _, in := range ins {
		out = append(out, in.Instance)
	}
	return out
}

// haproxyStats reads an SLB's servers through its admin socket.
func haproxyStats(t *testing.T, lab, node string) []serve.HAProxyServer {
	t.Helper()
	st, err := serve.HAProxyStats(filepath.Join(state.DataDir(lab, node, "haproxy"), serve.HAProxySocket))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// servicePID is the PID the supervisor recorded for node/svc.
func servicePID(t *testing.T, lab, node, svc string) int {
	t.Helper()
	return serviceRecord(t, lab, node, svc).PID
}

// serviceRecord is the supervisor's record of node/svc.
func serviceRecord(t *testing.T, lab, node, svc string) service.Record {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state.ServiceDir(lab), node+"."+svc+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var r service.Record
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestOrderPath(t *testing.T) {
	labtest.NeedRoot(t, whyRoot)
	lab := labtest.LabName("o")
	before, ipcBefore := rootSnapshot(t), ipcSnapshot(t)
	tp := labTopology(t, "double11", lab)
	e, downed := upForTest(t, tp)
	if _, _, err := bgp.Wait(context.Background(), lab, time.Minute); err != nil {
		t.Fatal(err)
	}

	// One order from a subscriber of each carrier: each lands in the region
	// the GSLB chose for its resolver, through one of that region's VIPs,
	// and the shop sees the carrier's public pool address.
	fwBefore := firewallCounters(t, lab)
	a := labctlOrder(t, lab, "--from", "ue1", "--qty", "2")
	b := labctlOrder(t, lab, "--from", "ue2")
	checkFirewalls(t, lab, fwBefore)
	for _, c := range []struct {
		r      cli.OrderResult
		region string
		vips   []string
		pool   netip.Prefix
		qty    int32
	}{{a, "east", eastVIPs, poolA, 2}, {b, "north", northVIPs, poolB, 1}} {
		r := c.r
		if r.Status != 201 || r.Order == nil {
			t.Fatalf("order from %s: HTTP %d %+v", r.From, r.Status, r.Error)
		}
		chosen := labctlDig(t, lab, r.From, shopName).Addresses
		if !slices.Contains(chosen, r.RemoteIP) || !slices.Contains(c.vips, r.RemoteIP) {
			t.Errorf("%s posted to %s; the GSLB answered %v; want one of %s's %v", r.From, r.RemoteIP, chosen, c.region, c.vips)
		}
		if r.Order.Region != c.region || !strings.HasPrefix(r.Order.Controller, c.region+"-") ||
			!strings.HasPrefix(r.Order.OrderInstance, c.region+"-") || !strings.HasPrefix(r.Order.InventoryInstance, c.region+"-") {
			t.Errorf("%s's order went through %s/%s/%s/%s, want region %s throughout", r.From,
				r.Order.Region, r.Order.Controller, r.Order.OrderInstance, r.Order.InventoryInstance, c.region)
		}
		if ap, err := netip.ParseAddrPort(r.Order.Client); err != nil || !c.pool.Contains(ap.Addr()) {
			t.Errorf("%s's order came from %q, want an address of its carrier's pool %s", r.From, r.Order.Client, c.pool)
		}
		if r.Order.Quantity != c.qty || r.Order.Replayed || r.Verify != "ok" || r.Timing.TLS <= 0 || r.Timing.DNS <= 0 {
			t.Errorf("%s: %+v, verify %s, timing %+v", r.From, r.Order, r.Verify, r.Timing)
		}
	}

	// The database has exactly those orders; stock dropped by their
	// quantities; the standby has them too.
	db := labctlOrders(t, lab)
	ids := func(r cli.OrdersResult) []string {
		var out []string
		for _, o := range r.Orders {
			out = append(out, o.ID)
		}
		slices.Sort(out)
		return out
	}
	want := []string{a.OrderID, b.OrderID}
	slices.Sort(want)
	if got := ids(db); !slices.Equal(got, want) || db.Total != 2 {
		t.Fatalf("orders in the primary: %v (total %d), want %v", got, db.Total, want)
	}
	if s := stockOf(db, "phone-x"); s != 100000-3 {
		t.Errorf("phone-x stock %d after 3 ordered, want %d", s, 100000-3)
	}
	labtest.WaitFor(t, 10*time.Second, func() bool {
		sb := labctlOrders(t, lab, "--standby")
		return slices.Equal(ids(sb), want) && stockOf(sb, "phone-x") == 100000-3
	}, "the standby to have both orders")

	// The same order id twice: one order, one deduction.
	again := labctlOrder(t, lab, "--from", "ue1", "--qty", "2", "--id", a.OrderID)
	if again.Status != 200 || again.Order == nil || !again.Order.Replayed || again.Order.Created != a.Order.Created {
		t.Errorf("same id again: HTTP %d %+v, want 200 and the first order replayed", again.Status, again.Order)
	}
	if db = labctlOrders(t, lab); db.Total != 2 || stockOf(db, "phone-x") != 100000-3 {
		t.Errorf("after the replay: %d orders, phone-x %d; want 2 and %d", db.Total, stockOf(db, "phone-x"), 100000-3)
	}

	// TLS is real: curl with the system's CAs (not the lab root) refuses.
	out, err := run(lab, "ue1", "curl", "-sS", "--max-time", "5", "-o", "/dev/null", "https://"+shopName+"/healthz")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 60 {
		t.Errorf("curl without the lab CA: %v %s; want exit 60 (certificate not trusted)", err, out)
	}

	// Product reads go through the AZ's Redis: of three reads into two
	// AZs' caches, at least one is a hit.
	root := pki.Paths(state.PKIDir(lab)).Root
	hits := 0
	for range 3 {
		out := mustRun(t, lab, "ue1", "curl", "-sS", "--max-time", "5", "--cacert", root, "https://"+shopName+"/products/phone-x")
		var p controller.ProductResponse
		if err := json.Unmarshal([]byte(out), &p); err != nil || p.Price != "68.00" || !strings.HasPrefix(p.Instance, "east-") {
			t.Fatalf("GET /products/phone-x from ue1: %v %s", err, out)
		}
		if p.Cache == svc.CacheHit {
			hits++
		}
	}
	if hits == 0 {
		t.Error("three product reads, no cache hit")
	}

	// 50 concurrent orders from both carriers for a SKU with stock 10:
	// exactly 10 succeed, the rest are told it is out of stock.
	var mu sync.Mutex
	codes := map[string]int{}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := orderFrom(lab, "--from", []string{"ue1", "ue2"}[i%2], "--sku", "flash-1", "--id", fmt.Sprintf("flash-%d", i))
			code := fmt.Sprint(r.Status)
			switch {
			case err != nil:
				code = err.Error()
			case r.Error != nil:
				code += " " + r.Error.Code
			}
			mu.Lock()
			codes[code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes["201"] != 10 || codes["409 out_of_stock"] != 40 {
		t.Errorf("50 orders for 10 in stock: %v; want 10×201 and 40×409 out_of_stock", codes)
	}
	db = labctlOrders(t, lab)
	flash := 0
	for _, o := range db.Orders {
		if o.SKU == "flash-1" {
			flash++
		}
	}
	if s := stockOf(db, "flash-1"); s != 0 || flash != 10 {
		t.Errorf("flash-1: stock %d, %d orders; want 0 and 10", s, flash)
	}
	if db.Reservations != db.Total {
		t.Errorf("%d stock deductions for %d orders", db.Reservations, db.Total)
	}

	// The GSLB and the resolver rotate the VIPs, so the orders spread over
	// every SLB of each region.
	for _, slb := range []string{"east-slb1", "east-slb2", "east-slb3", "north-slb1", "north-slb2", "north-slb3"} {
		var total int64
		for _, s := range haproxyStats(t, lab, slb) {
			total += s.Total
		}
		if total == 0 {
			t.Errorf("%s took no connection", slb)
		}
	}

	// Kill one controller and one order-service instance: HAProxy's checks
	// and the registry's leases route around them, and orders go on. The
	// lab's watcher is paused meanwhile, so the failover is seen before it
	// restarts them.
	w, ok := engine.Watcher(lab)
	if !ok {
		t.Fatal("no service watcher runs")
	}
	if err := syscall.Kill(w.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(w.PID, syscall.SIGCONT)
	killed := map[[2]string]int{}
	for _, k := range [][2]string{{"east-app1", "controller"}, {"east-app2", "order"}} {
		killed[k] = servicePID(t, lab, k[0], k[1])
		if err := syscall.Kill(killed[k], syscall.SIGKILL); err != nil {
			t.Fatalf("kill %s/%s: %v", k[0], k[1], err)
		}
	}
	for i := range 10 {
		r := labctlOrder(t, lab, "--from", "ue1", "--id", fmt.Sprintf("after-kill-%d", i))
		if r.Status != 201 || r.Order.Controller != "east-app2" || r.Order.OrderInstance != "east-app1" {
			t.Fatalf("order %d after the kills: HTTP %d %+v %+v; want 201 via controller east-app2 and order east-app1", i, r.Status, r.Order, r.Error)
		}
	}
	labtest.WaitFor(t, 5*time.Second, func() bool {
		return slices.Equal(registryIn(t, lab, "east-app1", "east", "order"), []string{"east-app1"})
	}, "the dead order instance's lease to expire")
	for _, slb := range []string{"east-slb1", "east-slb2", "east-slb3"} {
		labtest.WaitFor(t, 5*time.Second, func() bool {
			for _, s := range haproxyStats(t, lab, slb) {
				if s.Name == "east-app1" {
					return strings.HasPrefix(s.Status, "DOWN")
				}
			}
			return false
		}, slb+" to mark east-app1 down")
	}
	// The watcher brings both back: new processes, one restart each, and
	// the order instance in the registry again.
	if err := syscall.Kill(w.PID, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for k, old := range killed {
		labtest.WaitFor(t, 20*time.Second, func() bool {
			r := serviceRecord(t, lab, k[0], k[1])
			return r.PID != old && r.Restarts == 1 && (service.OSProc{}).Alive(r.PID, r.Start)
		}, k[0]+"/"+k[1]+" to be restarted")
	}
	labtest.WaitFor(t, 20*time.Second, func() bool {
		return slices.Equal(registryIn(t, lab, "east-app1", "east", "order"), []string{"east-app1", "east-app2"})
	}, "the restarted order instance to register")

	// down leaves nothing: no processes, no data, the root namespace as it was.
	*downed = true
	downClean(t, e, lab, "after the order path")
	if after := rootSnapshot(t); after != before {
		t.Errorf("the root namespace changed:\n--- before\n%s\n--- after\n%s", before, after)
	}
	// Other packages' tests may run initdb meanwhile, which holds host
	// shared memory for a moment: a leak is what does not go away.
	var left []string
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		now := ipcSnapshot(t)
		left = left[:0]
		for e := range now {
			if !ipcBefore[e] {
				left = append(left, e)
			}
		}
		if len(left) == 0 || time.Now().After(end) {
			break
		}
	}
	if len(left) > 0 {
		t.Errorf("shared memory left on the host after down: %v", left)
	}
}

// ipcSnapshot is the host's shared memory: /dev/shm entries and System V
// segments (by id), where a killed PostgreSQL could leave its own behind.
func ipcSnapshot(t *testing.T) map[string]bool {
	t.Helper()
	ents, err := os.ReadDir("/dev/shm")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, e := range ents {
		out["/dev/shm/"+e.Name()] = true
	}
	b, err := exec.Command("ipcs", "-m").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && strings.HasPrefix(f[0], "0x") {
			out["shm id "+f[1]+" of "+f[2]] = true
		}
	}
	return out
}

// firewallCounters reads the packet counters of both regions' firewalls,
// by "node/rule".
func firewallCounters(t *testing.T, lab string) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, fw := range []string{"fw-east", "fw-north"} {
		info, err := firewall.Read(context.Background(), lab, fw)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range info.Rules {
			out[fw+"/"+r.Name] = r.Packets
		}
	}
	return out
}

// checkFirewalls: each order's connection was let in by its region's
// firewall as a new connection to the shop's VIPs; a port the firewall
// does not allow is dropped there and counted (the orders that follow in
// TestOrderPath still pass).
func checkFirewalls(t *testing.T, lab string, before map[string]uint64) {
	t.Helper()
	after := firewallCounters(t, lab)
	for _, fw := range []string{"fw-east", "fw-north"} {
		if d := after[fw+"/shop-vips"] - before[fw+"/shop-vips"]; d < 1 {
			t.Errorf("%s let no new connection to the VIPs in (%d) for an order it carried", fw, d)
		}
	}
	// ssh to a VIP from ue1: its SYNs die at fw-east.
	out, err := run(lab, "ue1", "curl", "-sS", "--max-time", "2", "telnet://"+eastVIPs[0]+":22")
	if err == nil {
		t.Fatalf("port 22 of %s answered through the firewall: %s", eastVIPs[0], out)
	}
	dropped := firewallCounters(t, lab)["fw-east/dropped"] - after["fw-east/dropped"]
	if dropped < 1 {
		t.Errorf("fw-east counted %d dropped packets for the SYNs to port 22", dropped)
	}
	// The orders of the rest of TestOrderPath pass after it.
}
