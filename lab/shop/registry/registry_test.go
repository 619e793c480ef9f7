package registry_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"labctl/lab/internal/labtest"
	"labctl/lab/serve"
	"labctl/lab/shop/api"
	"labctl/lab/shop/registry"
	"labctl/lab/shop/registry/registrytest"
)

func TestKey(t *testing.T) {
	if got, want := registry.Key("east", "order", "east-app1"), "/labctl/services/east/order/east-app1"; got != want {
		t.Fatalf("Key = %q, want %q", got, want)
	}
	if got, want := registry.Target("east", "order"), "etcd:///east/order"; got != want {
		t.Fatalf("Target = %q, want %q", got, want)
	}
}

func TestRegisterRefusesBadInstances(t *testing.T) {
	good := registry.Instance{Addr: "10.20.1.21:5051", Instance: "east-app1", Region: "east", Service: "order"}
	for _, c := range []struct {
		edit func(*registry.Instance)
		want string
	}{
		{func(in *registry.Instance) { in.Region = "" }, "region"},
		{func(in *registry.Instance) { in.Service = "a/b" }, "service"},
		{func(in *registry.Instance) { in.Instance = "" }, "instance"},
		{func(in *registry.Instance) { in.Addr = "10.20.1.21" }, "address"},
	} {
		in := good
		c.edit(&in)
		// Checked before etcd is used: no client needed.
		if _, err := registry.Register(context.Background(), nil, in, time.Second, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one about the %s", in, err, c.want)
		}
	}
	if _, err := registry.Register(context.Background(), nil, good, 0, nil); err == nil {
		t.Error("zero ttl accepted")
	}
	if _, err := registry.Dial(nil, "east", ""); err == nil {
		t.Error("Dial without a service accepted")
	}
}

func TestListAndEntries(t *testing.T) {
	t.Parallel() // each test has its own etcd
	cli := startEtcd(t)
	ctx := context.Background()
	for _, in := range []registry.Instance{
		{Addr: "10.20.1.22:5051", Instance: "east-app2", Region: "east", Service: "order"},
		{Addr: "10.20.1.21:5051", Instance: "east-app1", Region: "east", Service: "order"},
		{Addr: "10.20.1.21:5052", Instance: "east-app1", Region: "east", Service: "inventory"},
		{Addr: "10.30.1.21:5051", Instance: "west-app1", Region: "west", Service: "order"},
		{Addr: "10.20.1.23:5051", Instance: "east-app3", Region: "east", Service: "orders"},
	} {
		r, err := registry.Register(ctx, cli, in, 5*time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
	}
	got, err := registry.List(ctx, cli, "east", "order")
	if err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprint(got); s != "[{10.20.1.21:5051 east-app1 east order} {10.20.1.22:5051 east-app2 east order}]" {
		t.Fatalf("List = %s", s)
	}
	resp, err := cli.Get(ctx, "/labctl/services/east/order/east-app1")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("entry: %v %v", resp, err)
	}
	if v, want := string(resp.Kvs[0].Value), `{"addr":"10.20.1.21:5051","instance":"east-app1","region":"east","service":"order"}`; v != want {
		t.Fatalf("value %s, want %s", v, want)
	}
	if resp.Kvs[0].Lease == 0 {
		t.Fatal("entry without a lease")
	}
	if none, err := registry.List(ctx, cli, "north", "order"); err != nil || len(none) != 0 {
		t.Fatalf("List of an empty region: %v, %v", none, err)
	}
}

func TestDialBalancesAndFollowsTheRegistry(t *testing.T) {
	t.Parallel() // each test has its own etcd
	cli := startEtcd(t)
	ctx := context.Background()
	a := register(t, cli, couponServer(t, "east-app1"), "east-app1", 5*time.Second)
	b := register(t, cli, couponServer(t, "east-app2"), "east-app2", 5*time.Second)
	defer b.Close()
	conn, err := registry.Dial(cli, "east", "coupon")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	coupon := api.NewCouponClient(conn)

	labtest.WaitEvery(t, 5*time.Second, 20*time.Millisecond, func() bool {
		seen := redeem(t, coupon, 4)
		return seen["east-app1"] > 0 && seen["east-app2"] > 0
	}, "both instances answering")
	seen := redeem(t, coupon, 40)
	if seen["east-app1"] != 20 || seen["east-app2"] != 20 {
		t.Fatalf("40 calls went %v, want 20 each (round robin)", seen)
	}

	// Deregistered: gone from the channel within a second, although its
	// server still answers.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	labtest.WaitEvery(t, time.Second, 20*time.Millisecond, func() bool { return redeem(t, coupon, 10)["east-app2"] == 10 }, "east-app1 dropped")
	t.Logf("dropped %v after Close", time.Since(start))
	if seen := redeem(t, coupon, 20); seen["east-app2"] != 20 {
		t.Fatalf("after Close: %v", seen)
	}
	if list, err := registry.List(ctx, cli, "east", "coupon"); err != nil || len(list) != 1 || list[0].Instance != "east-app2" {
		t.Fatalf("List after Close: %v, %v", list, err)
	}

	// Back again.
	a = register(t, cli, couponServer(t, "east-app1"), "east-app1", 5*time.Second)
	defer a.Close()
	labtest.WaitEvery(t, 5*time.Second, 20*time.Millisecond, func() bool { return redeem(t, coupon, 10)["east-app1"] > 0 }, "east-app1 back")
}

// TestRegisterWaitsForEtcd: an instance that starts before its etcd
// answers (etcd starting too, or too slow for one attempt's timeout)
// registers once it does, saying why it waited, instead of failing.
func TestRegisterWaitsForEtcd(t *testing.T) {
	t.Parallel() // each test has its own etcd
	if _, err := os.Stat(serve.EtcdBin); err != nil && os.Getenv("CI") == "" {
		t.Skip(err)
	}
	client, peer := registrytest.FreePort(t), registrytest.FreePort(t)
	cli, err := registry.Connect([]string{fmt.Sprintf("127.0.0.1:%d", client)})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	var failures []error
	type result struct {
		r   *registry.Registration
		err error
	}
	done := make(chan result, 1)
	in := registry.Instance{Addr: "127.0.0.1:1", Instance: "east-app2", Region: "east", Service: "order"}
	go func() {
		r, err := registry.Register(ctx, cli, in, 2*time.Second, func(err error) {
			mu.Lock()
			failures = append(failures, err)
			mu.Unlock()
		})
		done <- result{r, err}
	}()
	// etcd starts only after more than one attempt's timeout.
	time.Sleep(3 * time.Second)
	registrytest.StartEtcdOn(t, client, peer)
	res := <-done
	if res.err != nil {
		t.Fatalf("Register with etcd starting late: %v", res.err)
	}
	defer res.r.Close()
	mu.Lock()
	n := len(failures)
	mu.Unlock()
	if n == 0 {
		t.Error("Register waited for etcd without reporting one failed attempt")
	}
	if list := mustList(t, cli); len(list) != 1 || list[0] != in {
		t.Errorf("List = %v, want [%v]", list, in)
	}
	// Its context ending stops the waiting at once.
	dead, stop := context.WithCancel(context.Background())
	stop()
	if _, err := registry.Register(dead, cli, in, 2*time.Second, nil); err == nil {
		t.Error("Register with an ended context succeeded")
	}
}

func TestDeadInstanceExpires(t *testing.T) {
	t.Parallel() // each test has its own etcd
	cli := startEtcd(t)
	ctx, cancel := context.WithCancel(context.Background())
	in := registry.Instance{Addr: "127.0.0.1:1", Instance: "east-app9", Region: "east", Service: "order"}
	const ttl = time.Second
	r, err := registry.Register(ctx, cli, in, ttl, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Alive for longer than its ttl while its keepalives flow.
	time.Sleep(2 * ttl)
	if list := mustList(t, cli); len(list) != 1 {
		t.Fatalf("kept alive: List = %v", list)
	}
	cancel() // the keepalives stop, as when the process dies
	start := time.Now()
	labtest.WaitEvery(t, ttl+time.Second, 20*time.Millisecond, func() bool { return len(mustList(t, cli)) == 0 }, "the entry expired")
	t.Logf("expired %v after the keepalives stopped", time.Since(start))
	if err := r.Close(); err != nil {
		t.Fatalf("Close of an expired registration: %v", err)
	}
}

func TestRegistrationSurvivesLostLease(t *testing.T) {
	t.Parallel() // each test has its own etcd
	cli := startEtcd(t)
	ctx := context.Background()
	in := registry.Instance{Addr: "127.0.0.1:1", Instance: "east-app1", Region: "east", Service: "order"}
	r, err := registry.Register(ctx, cli, in, 2*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	key := registry.Key("east", "order", "east-app1")
	lease := leaseOf(t, cli, key)
	// The lease disappears, as when etcd was too slow to renew it in time.
	if _, err := cli.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	labtest.WaitEvery(t, 3*time.Second, 20*time.Millisecond, func() bool {
		l := leaseOf(t, cli, key)
		return l != 0 && l != lease
	}, "the entry back under a new lease")
	t.Logf("registered again %v after the lease was lost", time.Since(start))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if l := leaseOf(t, cli, key); l != 0 {
		t.Fatalf("entry still there after Close (lease %x)", l)
	}
}

// startEtcd runs etcd for the test and returns a client that reached it.
func startEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, _ := registrytest.StartEtcd(t)
	return cli
}

// coupon answers every Redeem with its instance name.
type coupon struct {
	api.UnimplementedCouponServer
	name string
}

func (c coupon) Redeem(context.Context, *api.RedeemRequest) (*api.RedeemReply, error) {
	return &api.RedeemReply{Instance: c.name}, nil
}

// couponServer serves a coupon on 127.0.0.1 until the test ends.
func couponServer(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	api.RegisterCouponServer(srv, coupon{name: name})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

func register(t *testing.T, cli *clientv3.Client, addr, name string, ttl time.Duration) *registry.Registration {
	t.Helper()
	r, err := registry.Register(context.Background(), cli, registry.Instance{Addr: addr, Instance: name, Region: "east", Service: "coupon"}, ttl, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// redeem makes n calls and counts the answering instances.
func redeem(t *testing.T, c api.CouponClient, n int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		reply, err := c.Redeem(ctx, &api.RedeemRequest{OrderId: "o1", Code: "C"})
		cancel()
		if err != nil {
			seen["error"]++
			continue
		}
		seen[reply.Instance]++
	}
	return seen
}

func mustList(t *testing.T, cli *clientv3.Client) []registry.Instance {
	t.Helper()
	list, err := registry.List(context.Background(), cli, "east", "order")
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// leaseOf returns the lease of key's entry, or 0 when there is none.
func leaseOf(t *testing.T, cli *clientv3.Client, key string) clientv3.LeaseID {
	t.Helper()
	resp, err := cli.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return 0
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}

// TestRegistrationSurvivesStalledEtcd stops etcd for longer than the
// lease's ttl: the registration must come back under a new lease once etcd
// runs again, and stay.
func TestRegistrationSurvivesStalledEtcd(t *testing.T) {
	t.Parallel() // each test has its own etcd
	cli, pid := registrytest.StartEtcd(t)
	in := registry.Instance{Addr: "127.0.0.1:1", Instance: "east-app1", Region: "east", Service: "order"}
	const ttl = time.Second
	r, err := registry.Register(context.Background(), cli, in, ttl, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	key := registry.Key("east", "order", "east-app1")
	lease := leaseOf(t, cli, key)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * ttl)
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var now clientv3.LeaseID
	labtest.WaitEvery(t, 3*time.Second, 20*time.Millisecond, func() bool {
		now = leaseOf(t, cli, key)
		return now != 0 && now != lease
	}, "the entry under a new lease")
	t.Logf("registered again %v after etcd resumed", time.Since(start))
	time.Sleep(ttl + ttl/2)
	if l := leaseOf(t, cli, key); l != now {
		t.Fatalf("lease %x after 1.5 ttl, want %x kept alive", l, now)
	}
}
