package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"labctl/lab/internal/labtest"
)

// needPostgres skips unless the PostgreSQL programs are installed (in CI
// they must be) and the test may run them as the postgres user.
func needPostgres(t *testing.T) {
	t.Helper()
	requireBin(t, filepath.Join(PostgresBin, "postgres"))
	labtest.NeedRoot(t, "needs root to run postgres as the postgres user")
}

// postmasterPID is the PID in dataDir's postmaster.pid.
func postmasterPID(t *testing.T, dataDir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	return pid
}

// shopConn connects over TCP as shop to the server of o once it answers.
func shopConn(t *testing.T, o PostgresOptions) *pgx.Conn {
	t.Helper()
	dsn := fmt.Sprintf("host=%s port=%d user=shop dbname=shop sslmode=disable connect_timeout=2", o.Listen, o.Port)
	var conn *pgx.Conn
	labtest.WaitFor(t, 20*time.Second, func() bool {
		var err error
		conn, err = pgx.Connect(context.Background(), dsn)
		return err == nil
	}, "connection to "+dsn)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestPostgresPrimaryAndStandby(t *testing.T) {
	needPostgres(t)
	dir := t.TempDir()
	// The postgres user must traverse it and its parent, both 0700.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	primary := PostgresOptions{
		DataDir: filepath.Join(dir, "primary"), Listen: "127.0.0.1", Port: labtest.FreePort(t),
		Allow: []string{"10.20.0.0/16"},
	}
	setups := make(chan string, 2)
	primary.Setup = func(ctx context.Context, dsn string) error {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS t (v int)"); err != nil {
			return err
		}
		setups <- dsn
		return nil
	}
	standby := PostgresOptions{
		DataDir: filepath.Join(dir, "standby"), Listen: "127.0.0.1", Port: labtest.FreePort(t),
		StandbyOf: net.JoinHostPort("127.0.0.1", strconv.Itoa(primary.Port)),
	}
	prim := startDaemon(t, func(ctx context.Context, log *slog.Logger) error { return Postgres(ctx, primary, log) })
	// Started while the primary may still be starting up: pg_basebackup
	// retries until it answers.
	stby := startDaemon(t, func(ctx context.Context, log *slog.Logger) error { return Postgres(ctx, standby, log) })
	waitSetup := func() {
		t.Helper()
		select {
		case dsn := <-setups:
			if want := PostgresDSN(PostgresSocketDir(primary.DataDir), primary.Port); dsn != want {
				t.Errorf("Setup got dsn %q, want %q", dsn, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the primary's Setup did not run")
		}
	}
	waitSetup()

	ctx := context.Background()
	pconn, sconn := shopConn(t, primary), shopConn(t, standby)
	if _, err := pconn.Exec(ctx, "INSERT INTO t VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	labtest.WaitFor(t, 10*time.Second, func() bool {
		var n int
		if err := sconn.QueryRow(ctx, "SELECT count(*) FROM t WHERE v = 42").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}, "row from the primary on the standby")
	_, err := sconn.Exec(ctx, "INSERT INTO t VALUES (1)")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "25006" {
		t.Fatalf("write on the standby: got %v, want read_only_sql_transaction (25006)", err)
	}
	if pid := postmasterPID(t, primary.DataDir); pid != prim.pid {
		t.Errorf("postmaster.pid says %d, RunChild started %d", pid, prim.pid)
	}
	stby.stop(t) // checks that the postmaster is gone
	prim.stop(t)

	// A restart reuses the cluster: the row is still there, Setup runs again.
	startDaemon(t, func(ctx context.Context, log *slog.Logger) error { return Postgres(ctx, primary, log) })
	waitSetup()
	var n int
	if err := shopConn(t, primary).QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 1 {
		t.Fatalf("after restart: %d rows, %v; want 1", n, err)
	}
}

func TestPostgresRefusesBadOptions(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name string
		o    PostgresOptions
		want string
	}{
		{"relative data directory", PostgresOptions{DataDir: "data"}, `"data": want an absolute path`},
		{"bare IP", PostgresOptions{DataDir: "/tmp/x", Allow: []string{"10.0.0.1"}}, `allow "10.0.0.1": not a CIDR`},
		{"long socket", PostgresOptions{DataDir: "/tmp/" + strings.Repeat("d", 100)}, "longer than 107 bytes"},
	} {
		err := Postgres(context.Background(), tc.o, log)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestPgHBA(t *testing.T) {
	hba, err := pgHBA([]string{"10.20.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"local all all trust",
		"host shop shop 127.0.0.1/32 trust",
		"host replication shop 127.0.0.1/32 trust",
		"host shop shop 10.20.0.0/16 trust",
		"host replication shop 10.20.0.0/16 trust",
	} {
		if !strings.Contains(hba, line+"\n") {
			t.Errorf("pg_hba.conf lacks %q:\n%s", line, hba)
		}
	}
}
