package store

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"labctl/lab/serve"
)

// The test binary's PostgreSQL server, started by the first test that
// needs it and stopped by TestMain; every test gets a database of its own.
var (
	server struct {
		once  sync.Once
		skip  string        // why tests that need it skip
		err   error         // why it did not start
		sock  string        // its socket directory
		admin *pgxpool.Pool // the postgres superuser, to create databases
		stop  func()
	}
	databases atomic.Int32
)

func TestMain(m *testing.M) {
	code := m.Run()
	if server.stop != nil {
		server.stop()
	}
	os.Exit(code)
}

// testDSN creates an empty database owned by shop and returns its DSN.
func testDSN(t testing.TB) string {
	t.Helper()
	server.once.Do(startServer)
	switch {
	case server.skip != "" && os.Getenv("CI") != "":
		t.Fatal(server.skip)
	case server.skip != "":
		t.Skip(server.skip)
	case server.err != nil:
		t.Fatal(server.err)
	}
	name := fmt.Sprintf("store_test_%d", databases.Add(1))
	if _, err := server.admin.Exec(context.Background(), "CREATE DATABASE "+name+" OWNER shop"); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("host=%s port=5432 user=shop dbname=%s sslmode=disable", server.sock, name)
}

// startServer runs serve.Postgres, socket only, in a directory of its own.
func startServer() {
	if _, err := os.Stat(filepath.Join(serve.PostgresBin, "postgres")); err != nil {
		server.skip = "postgres not installed: " + err.Error()
		return
	}
	if os.Geteuid() != 0 {
		server.skip = "needs root to run postgres as the postgres user"
		return
	}
	dir, err := os.MkdirTemp("", "store-test-")
	if err == nil {
		err = os.Chmod(dir, 0o755) // the postgres user must traverse it
	}
	if err != nil {
		server.err = err
		return
	}
	data := filepath.Join(dir, "postgres")
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	o := serve.PostgresOptions{DataDir: data, Setup: func(context.Context, string) error { close(ready); return nil }}
	go func() { done <- serve.Postgres(ctx, o, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		os.RemoveAll(dir)
		server.err = fmt.Errorf("postgres returned before it was ready: %v", err)
		return
	}
	server.stop = func() {
		if server.admin != nil {
			server.admin.Close()
		}
		cancel()
		<-done
		os.RemoveAll(dir)
	}
	server.sock = serve.PostgresSocketDir(data)
	server.admin, server.err = pgxpool.New(context.Background(), fmt.Sprintf("host=%s port=5432 user=postgres dbname=postgres sslmode=disable", server.sock))
}

// newStore opens a fresh database holding catalog c.
func newStore(t testing.TB, c Catalog) *Store {
	t.Helper()
	dsn := testDSN(t)
	ctx := context.Background()
	if err := Setup(ctx, dsn, c); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, dsn, 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}
