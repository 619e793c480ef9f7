// Package registrytest runs a real etcd for the tests of the packages that
// use the registry.
package registrytest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"labctl/lab/internal/labtest"
	"labctl/lab/serve"
	"labctl/lab/shop/registry"
)

// StartEtcd runs a single-member etcd on free ports of 127.0.0.1 for the
// test and returns a client that reached it, and etcd's PID. Without the
// etcd binary the test is skipped, or fails under CI.
func StartEtcd(t testing.TB) (*clientv3.Client, int) {
	t.Helper()
	return StartEtcdOn(t, FreePort(t), FreePort(t))
}

// StartEtcdOn is StartEtcd on the given client and peer ports.
func StartEtcdOn(t testing.TB, client, peer int) (*clientv3.Client, int) {
	t.Helper()
	if _, err := os.Stat(serve.EtcdBin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
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
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		select {
		case <-exited:
			t.Fatalf("etcd: %v", runErr)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := cli.Get(ctx, "/")
		cancel()
		if err == nil {
			return cli, <-pids
		}
		if time.Now().After(end) {
			t.Fatalf("etcd not up within 10s: %v", err)
		}
	}
}

// FreePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int { return labtest.FreePort(t) }

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
