package serve

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"labctl/lab/runner"
)

// PostgresBin is the directory of the PostgreSQL server programs (Debian's
// postgresql-15).
var PostgresBin = "/usr/lib/postgresql/15/bin"

// PostgresOptions configure one PostgreSQL server of the lab.
type PostgresOptions struct {
	// DataDir is the cluster's directory, e.g. /run/labctl/<lab>/data/<node>/postgres;
	// created (owned by the postgres user) if missing.
	DataDir string
	// Listen is the IP to listen on besides the unix socket ("" = socket only).
	Listen string
	// Port is the TCP port, which also names the unix socket; 0 means 5432.
	Port int
	// Allow lists the CIDRs whose clients may connect, without a password
	// (the lab is its own trust domain), as user shop to database shop and
	// for replication. 127.0.0.1/32 is always allowed.
	Allow []string
	// StandbyOf is "" for a primary, else the primary's "host:port": the
	// server is then cloned from it and runs as a streaming hot standby.
	StandbyOf string
	// Setup runs on a primary (a standby ignores it) once the server accepts connections (schema
	// and seed); dsn reaches database shop as user shop over the socket.
	Setup func(ctx context.Context, dsn string) error
}

// Timings of Postgres's waits.
const (
	pgReadyTimeout    = 30 * time.Second       // until a started server accepts connections
	pgCloneTimeout    = 60 * time.Second       // until the primary answers a standby's pg_basebackup
	pgCloneRetry      = 200 * time.Millisecond // between pg_basebackup attempts
	pgDefaultPort     = 5432
	pgReadyPollPeriod = 100 * time.Millisecond
)

// Postgres runs one PostgreSQL server of the lab until ctx ends (it then
// shuts down fast and Postgres returns nil) or the server dies (an error).
// A primary's cluster is made by initdb on first start, a standby's is
// cloned from its primary; an existing cluster (PG_VERSION present) is
// reused as it is. Every start rewrites pg_hba.conf from o.Allow and
// passes the server's settings on its command line, so they also override
// what a standby copied from its primary. On a primary, role and database
// shop are created if missing and o.Setup runs before "ready" is logged.
func Postgres(ctx context.Context, o PostgresOptions, log *slog.Logger) error {
	if !filepath.IsAbs(o.DataDir) {
		return fmt.Errorf("postgres data directory %q: want an absolute path", o.DataDir)
	}
	if o.Port == 0 {
		o.Port = pgDefaultPort
	}
	hba, err := pgHBA(o.Allow)
	if err != nil {
		return err
	}
	sock := PostgresSocketDir(o.DataDir)
	if p := filepath.Join(sock, ".s.PGSQL."+strconv.Itoa(o.Port)); len(p) > maxSocketPath {
		return fmt.Errorf("postgres socket path %s is longer than %d bytes: use a shorter data directory", p, maxSocketPath)
	}
	bin := filepath.Join(PostgresBin, "postgres")
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("postgres server not installed (apt install postgresql-15): %w", err)
	}
	pg, err := pgUser()
	if err != nil {
		return err
	}
	if err := pg.ownDir(sock, 0o700); err != nil {
		return err
	}
	if err := pgCluster(ctx, o, pg, log); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if err := pg.writeFile(filepath.Join(o.DataDir, "pg_hba.conf"), hba); err != nil {
		return err
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var runErr error
	exited := make(chan struct{})
	go func() {
		// Not runCtx: RunChild stops it, with SIGINT first.
		server := pg.command(context.Background(), bin, pgServerArgs(o, sock)...).
			SetStdout(os.Stderr).SetStderr(os.Stderr).
			// Its own IPC namespace: the System V segment PostgreSQL keeps
			// goes away with its last process, even after a SIGKILL.
			SetSysProcAttr(func(a *syscall.SysProcAttr) { a.Cloneflags = syscall.CLONE_NEWIPC })
		runErr = RunChild(runCtx, server, syscall.SIGINT, ChildGrace, log)
		close(exited)
	}()
	if err := pgStarted(runCtx, o, sock, exited); err != nil {
		stop()
		<-exited
		switch {
		case runErr != nil:
			return fmt.Errorf("%w (%v)", err, runErr)
		case ctx.Err() != nil:
			return nil
		}
		return err
	}
	log.Info("ready", "data", o.DataDir, "listen", o.Listen, "port", o.Port, "socket", sock, "standby_of", o.StandbyOf)
	<-exited
	return runErr
}

// PostgresSocketDir is the directory of the unix socket of the server
// whose cluster is dataDir: beside it, since initdb and pg_basebackup want
// an empty data directory.
func PostgresSocketDir(dataDir string) string {
	return filepath.Clean(dataDir) + "-run"
}

// PostgresDSN reaches database shop as user shop over the unix socket in
// socketDir.
func PostgresDSN(socketDir string, port int) string {
	return fmt.Sprintf("host=%s port=%d user=shop dbname=shop sslmode=disable", socketDir, port)
}

// pgHBA is the whole pg_hba.conf: local connections for everyone, user
// shop from allow (and 127.0.0.1) to database shop and for replication.
func pgHBA(allow []string) (string, error) {
	var b strings.Builder
	b.WriteString("# Written by labctl on every start.\nlocal all all trust\n")
	for _, cidr := range append([]string{"127.0.0.1/32"}, allow...) {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			return "", fmt.Errorf("postgres allow %q: not a CIDR like 10.20.0.0/16", cidr)
		}
		fmt.Fprintf(&b, "host shop shop %s trust\nhost replication shop %s trust\n", cidr, cidr)
	}
	return b.String(), nil
}

// pgListen is listen_addresses: the node's address and loopback (for
// readiness probes and local tools), or the socket only.
func pgListen(ip string) string {
	if ip == "" || ip == "127.0.0.1" {
		return ip
	}
	return ip + ",127.0.0.1"
}

// pgServerArgs are the postgres command line: the lab's settings as -c
// options, which outrank the configuration files.
func pgServerArgs(o PostgresOptions, sock string) []string {
	args := []string{"-D", o.DataDir}
	for _, kv := range [][2]string{
		{"listen_addresses", pgListen(o.Listen)},
		{"port", strconv.Itoa(o.Port)},
		{"unix_socket_directories", sock},
		{"unix_socket_permissions", "0700"}, // root (labctl) and postgres only
		// Shared memory in files under the data directory, not in the
		// host's /dev/shm, so nothing outlives the lab's state.
		{"dynamic_shared_memory_type", "mmap"},
		{"wal_level", "replica"},
		{"max_wal_senders", "10"},
		{"hot_standby", "on"},
		{"shared_buffers", "32MB"},
		{"max_connections", "200"},
		{"log_destination", "stderr"},
		{"logging_collector", "off"},
		{"log_min_messages", "warning"},
		{"log_statement", "none"},
	} {
		args = append(args, "-c", kv[0]+"="+kv[1])
	}
	return args
}

// pgCluster makes sure o.DataDir holds a cluster: kept if it has one,
// else made by initdb (primary) or cloned from the primary (standby).
func pgCluster(ctx context.Context, o PostgresOptions, pg *pgAccount, log *slog.Logger) error {
	if _, err := os.Stat(filepath.Join(o.DataDir, "PG_VERSION")); err == nil {
		log.Info("reusing cluster", "data", o.DataDir)
		return pg.ownDir(o.DataDir, 0o700)
	}
	if o.StandbyOf == "" {
		if err := pg.emptyDir(o.DataDir); err != nil {
			return err
		}
		return pg.run(ctx, "initdb", "-D", o.DataDir, "-U", "postgres", "--auth=trust",
			"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	}
	return pgClone(ctx, o, pg, log)
}

// pgClone copies the primary o.StandbyOf into o.DataDir with
// pg_basebackup -R (which also writes the standby's primary_conninfo),
// retrying while the primary does not answer yet.
func pgClone(ctx context.Context, o PostgresOptions, pg *pgAccount, log *slog.Logger) error {
	host, port, err := net.SplitHostPort(o.StandbyOf)
	if err != nil {
		return fmt.Errorf("postgres standby of %q: want host:port: %w", o.StandbyOf, err)
	}
	deadline := time.Now().Add(pgCloneTimeout)
	for attempt := 1; ; attempt++ {
		// A failed attempt may leave a partial copy behind.
		if err := pg.emptyDir(o.DataDir); err != nil {
			return err
		}
		err = pg.run(ctx, "pg_basebackup", "-h", host, "-p", port, "-U", "shop", "-D", o.DataDir,
			"-R", "-X", "stream", "--checkpoint=fast", "--no-sync")
		if err == nil {
			log.Info("cloned primary", "primary", o.StandbyOf, "attempts", attempt)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres standby: primary %s did not answer for %v: %w", o.StandbyOf, pgCloneTimeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pgCloneRetry):
		}
	}
}

// pgStarted waits until the server accepts connections; on a primary it
// then creates role and database shop and runs o.Setup. exited is closed
// when the server ends.
func pgStarted(ctx context.Context, o PostgresOptions, sock string, exited <-chan struct{}) error {
	admin := fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable connect_timeout=2", sock, o.Port)
	conn, err := pgConnectWhenUp(ctx, admin, exited)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if o.StandbyOf != "" {
		return nil
	}
	if err := pgCreateShop(ctx, conn); err != nil {
		return err
	}
	if o.Setup == nil {
		return nil
	}
	if err := o.Setup(ctx, PostgresDSN(sock, o.Port)); err != nil {
		return fmt.Errorf("postgres setup: %w", err)
	}
	return nil
}

// pgConnectWhenUp connects to dsn once the server lets it, giving up after
// pgReadyTimeout or when the server ends (exited is closed).
func pgConnectWhenUp(ctx context.Context, dsn string, exited <-chan struct{}) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, pgReadyTimeout)
	defer cancel()
	tick := time.NewTicker(pgReadyPollPeriod)
	defer tick.Stop()
	for {
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			return conn, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("postgres did not accept connections within %v: %w", pgReadyTimeout, err)
		case <-exited:
			return nil, fmt.Errorf("postgres exited before accepting connections: %w", err)
		case <-tick.C:
		}
	}
}

// pgCreateShop creates the role shop (which may also replicate) and its
// database shop unless they exist.
func pgCreateShop(ctx context.Context, conn *pgx.Conn) error {
	var role, db bool
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'shop'),
		EXISTS (SELECT 1 FROM pg_database WHERE datname = 'shop')`).Scan(&role, &db)
	if err != nil {
		return fmt.Errorf("postgres: look for role and database shop: %w", err)
	}
	if !role {
		if _, err := conn.Exec(ctx, "CREATE ROLE shop LOGIN REPLICATION"); err != nil {
			return fmt.Errorf("postgres: create role shop: %w", err)
		}
	}
	if !db {
		if _, err := conn.Exec(ctx, "CREATE DATABASE shop OWNER shop"); err != nil {
			return fmt.Errorf("postgres: create database shop: %w", err)
		}
	}
	return nil
}

// pgAccount is the postgres OS user, which every PostgreSQL program runs
// as (the server refuses root) and which owns the cluster's directories.
type pgAccount struct {
	uid, gid int
	home     string
}

func pgUser() (*pgAccount, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("postgres OS user: %w (install postgresql-15)", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("postgres OS user: uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("postgres OS user: gid %q: %w", u.Gid, err)
	}
	return &pgAccount{uid: uid, gid: gid, home: u.HomeDir}, nil
}

// command runs the PostgreSQL program bin as the postgres user; it is
// killed when ctx ends.
func (a *pgAccount) command(ctx context.Context, bin string, args ...string) runner.Cmd {
	return runner.Default.Command(ctx, bin, args...).
		SetSysProcAttr(func(attr *syscall.SysProcAttr) {
			attr.Credential = &syscall.Credential{Uid: uint32(a.uid), Gid: uint32(a.gid)}
		}).
		SetDir("/"). // labctl's own directory may be closed to the postgres user
		SetEnv("HOME="+a.home, "PGCONNECT_TIMEOUT=2")
}

// run runs the PostgreSQL program name to completion, killed if ctx ends
// first; its output goes into the error.
func (a *pgAccount) run(ctx context.Context, name string, args ...string) error {
	_, err := a.command(ctx, filepath.Join(PostgresBin, name), args...).CombinedOutput()
	return err
}

// ownDir creates dir (and its parents) if missing and gives it to the
// postgres user with mode perm.
func (a *pgAccount) ownDir(dir string, perm fs.FileMode) error {
	// Parents stay traversable, whatever dir's own mode.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if err := os.Mkdir(dir, perm); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("postgres: %w", err)
	}
	if err := os.Chown(dir, a.uid, a.gid); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if err := os.Chmod(dir, perm); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return nil
}

// writeFile writes a file only the postgres user may read.
func (a *pgAccount) writeFile(name, content string) error {
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	if err := os.Chown(name, a.uid, a.gid); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return nil
}

// emptyDir makes dir an empty directory owned by the postgres user.
func (a *pgAccount) emptyDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return a.ownDir(dir, 0o700)
}
