package registry_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"labctl/lab/serve"
	"labctl/lab/shop/api"
	"labctl/lab/shop/registry"
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
	good := registry.Instance{Addr: "10.20.1.21:50051", Instance: "east-app1", Region: "east", Service: "order"}
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
		if _, err := registry.Register(context.Background(), nil, in, time.Second); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one about the %s", in, err, c.want)
		}
	}
	if _, err := registry.Register(context.Background(), nil, good, 0); err == nil {
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
		{Addr: "10.20.1.22:50051", Instance: "east-app2", Region: "east", Service: "order"},
		{Addr: "10.20.1.21:50051", Instance: "east-app1", Region: "east", Service: "order"},
		{Addr: "10.20.1.21:50052", Instance: "east-app1", Region: "east", Service: "inventory"},
		{Addr: "10.30.1.21:50051", Instance: "west-app1", Region: "west", Service: "order"},
		{Addr: "10.20.1.23:50051", Instance: "east-app3", Region: "east", Service: "orders"},
	} {
		r, err := registry.Register(ctx, cli, in, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
	}
	got, err := registry.List(ctx, cli, "east", "order")
	if err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprint(got); s != "[{10.20.1.21:50051 east-app1 east order} {10.20.1.22:50051 east-app2 east order}]" {
		t.Fatalf("List = %s", s)
	}
	resp, err := cli.Get(ctx, "/labctl/services/east/order/east-app1")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("entry: %v %v", resp, err)
	}
	if v, want := string(resp.Kvs[0].Value), `{"addr":"10.20.1.21:50051","instance":"east-app1","region":"east","service":"order"}`; v != want {
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

	waitFor(t, 5*time.Second, "both instances answering", func() bool {
		seen := redeem(t, coupon, 4)
		return seen["east-app1"] > 0 && seen["east-app2"] > 0
	})
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
	waitFor(t, time.Second, "east-app1 dropped", func() bool { return redeem(t, coupon, 10)["east-app2"] == 10 })
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
	waitFor(t, 5*time.Second, "east-app1 back", func() bool { return redeem(t, coupon, 10)["east-app1"] > 0 })
}

func TestDeadInstanceExpires(t *testing.T) {
	t.Parallel() // each test has its own etcd
	cli := startEtcd(t)
	ctx, cancel := context.WithCancel(context.Background())
	in := registry.Instance{Addr: "127.0.0.1:1", Instance: "east-app9", Region: "east", Service: "order"}
	const ttl = time.Second
	r, err := registry.Register(ctx, cli, in, ttl)
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
	waitFor(t, ttl+time.Second, "the entry expired", func() bool { return len(mustList(t, cli)) == 0 })
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
	r, err := registry.Register(ctx, cli, in, 2*time.Second)
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
	waitFor(t, 3*time.Second, "the entry back under a new lease", func() bool {
		l := leaseOf(t, cli, key)
		return l != 0 && l != lease
	})
	t.Logf("registered again %v after the lease was lost", time.Since(start))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if l := leaseOf(t, cli, key); l != 0 {
		t.Fatalf("entry still there after Close (lease %x)", l)
	}
}

// startEtcd runs etcd on free ports of 127.0.0.1 for the test and returns
// a client that reached it.
func startEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, _ := startEtcdPID(t)
	return cli
}

// startEtcdPID is startEtcd that also returns etcd's PID.
func startEtcdPID(t *testing.T) (*clientv3.Client, int) {
	t.Helper()
	if _, err := os.Stat(serve.EtcdBin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	client, peer := freePort(t), freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	var runErr error
	exited := make(chan struct{})
	pids := make(chan int, 1)
	o := serve.EtcdOptions{DataDir: filepath.Join(t.TempDir(), "etcd"), ClientPort: client, PeerPort: peer}
	go func() {
		defer close(exited)
		runErr = serve.Etcd(ctx, o, slog.New(pidHandler{pids}))
	}()
	t.Cleanup(func() {
		cancel()
		<-exited
		if runErr != nil {
			t.Errorf("etcd: %v", runErr)
		}
	})
	cli, err := registry.Connect([]string{fmt.Sprintf("127.0.0.1:%d", client)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	waitFor(t, 10*time.Second, "etcd up", func() bool {
		select {
		case <-exited:
			t.Fatalf("etcd: %v", runErr)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err := cli.Get(ctx, "/")
		return err == nil
	})
	return cli, <-pids
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// pidHandler is a slog handler that passes on the pid of RunChild's
// "started" record.
type pidHandler struct{ pids chan<- int }

func (pidHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h pidHandler) WithAttrs([]slog.Attr) slog.Handler     { return h }
func (h pidHandler) WithGroup(string) slog.Handler          { return h }
func (h pidHandler) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "pid" && r.Message == "started" {
			h.pids <- int(a.Value.Int64())
		}
		return true
	})
	return nil
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
	r, err := registry.Register(context.Background(), cli, registry.Instance{Addr: addr, Instance: name, Region: "east", Service: "coupon"}, ttl)
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

// waitFor polls ok until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(timeout); !ok(); {
		if time.Now().After(end) {
			t.Fatalf("no %s after %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRegistrationSurvivesStalledEtcd stops etcd for longer than the
// lease's ttl: the registration must come back under a new lease once etcd
// runs again, and stay.
func TestRegistrationSurvivesStalledEtcd(t *testing.T) {
	t.Parallel() // each test has its own etcd
	cli, pid := startEtcdPID(t)
	in := registry.Instance{Addr: "127.0.0.1:1", Instance: "east-app1", Region: "east", Service: "order"}
	const ttl = time.Second
	r, err := registry.Register(context.Background(), cli, in, ttl)
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
	waitFor(t, 3*time.Second, "the entry under a new lease", func() bool {
		now = leaseOf(t, cli, key)
		return now != 0 && now != lease
	})
	t.Logf("registered again %v after etcd resumed", time.Since(start))
	time.Sleep(ttl + ttl/2)
	if l := leaseOf(t, cli, key); l != now {
		t.Fatalf("lease %x after 1.5 ttl, want %x kept alive", l, now)
	}
}
