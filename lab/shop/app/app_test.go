package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"labctl/lab/shop/registry"
	"labctl/lab/shop/registry/registrytest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// TestServeRegistersOnlyABoundPort: an instance whose port is taken never
// appears in the registry, and one that registers holds its port by then.
func TestServeRegistersOnlyABoundPort(t *testing.T) {
	cli := startEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Every change under the registry, from now on.
	now, err := cli.Get(ctx, registry.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	events := cli.Watch(ctx, registry.Prefix, clientv3.WithPrefix(), clientv3.WithRev(now.Header.Revision+1))

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	o := Shop{Region: "t", Instance: "taken", Listen: taken.Addr().String(), Advertise: taken.Addr().String(), LeaseTTL: 5 * time.Second}
	err = o.serveWith(ctx, cli, "coupon", func(*grpc.Server) {}, quiet)
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("serveWith on a port in use: %v, want EADDRINUSE", err)
	}
	// A mark after it: every event before the mark is the failed instance's.
	mark := registry.Prefix + "mark"
	if _, err := cli.Put(ctx, mark, ""); err != nil {
		t.Fatal(err)
	}
	for ev := range waitFor(t, events, mark) {
		t.Errorf("the instance whose port is taken was in the registry: %s %s", ev.Type, ev.Kv.Key)
	}

	port := registrytest.FreePort(t)
	o = Shop{Region: "t", Instance: "free", Listen: fmt.Sprintf("127.0.0.1:%d", port), Advertise: fmt.Sprintf("127.0.0.1:%d", port), LeaseTTL: 5 * time.Second}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- o.serveWith(sctx, cli, "coupon", func(*grpc.Server) {}, quiet) }()
	key := registry.Key("t", "coupon", "free")
	waitFor(t, events, key)
	// Registered: the port is the instance's (a bind without SO_REUSEADDR
	// conflicts with any socket bound to it, listening or not).
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
	unix.Close(fd)
	if !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("bind 127.0.0.1:%d once the instance is registered: %v, want EADDRINUSE", port, err)
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("serveWith: %v", err)
	}
}

// TestBindTCP: the bound socket listens where asked, an empty host on
// every address.
func TestBindTCP(t *testing.T) {
	for _, host := range []string{"", "127.0.0.1"} {
		port := registrytest.FreePort(t)
		sock, err := bindTCP(net.JoinHostPort(host, fmt.Sprint(port)))
		if err != nil {
			t.Fatalf("bindTCP(%q): %v", host, err)
		}
		lis, err := listen(sock)
		sock.Close()
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Errorf("host %q: dial 127.0.0.1:%d: %v", host, port, err)
		} else {
			c.Close()
		}
		lis.Close()
	}
	for _, bad := range []string{"5051", "localhost:5051", "127.0.0.1:x", "127.0.0.1:70000"} {
		if sock, err := bindTCP(bad); err == nil {
			sock.Close()
			t.Errorf("bindTCP(%q) = nil error", bad)
		}
	}
}

// waitFor reads events until a PUT of key and returns the events before it.
func waitFor(t *testing.T, events clientv3.WatchChan, key string) chan *clientv3.Event {
	t.Helper()
	before := make(chan *clientv3.Event, 100)
	defer close(before)
	for resp := range events {
		if err := resp.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.Events {
			if ev.Type == clientv3.EventTypePut && string(ev.Kv.Key) == key {
				return before
			}
			before <- ev
		}
	}
	t.Fatalf("watch ended before %s was put", key)
	return nil
}

func startEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, _ := registrytest.StartEtcd(t)
	return cli
}
