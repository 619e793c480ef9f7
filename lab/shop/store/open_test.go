package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"labctl/lab/internal/labtest"
)

// fakeRefusingServer answers every connection's startup message as a
// server refusing the role would: a FATAL error with SQLSTATE code.
func fakeRefusingServer(t *testing.T, code, msg string) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				for {
					var hdr [8]byte
					if _, err := io.ReadFull(c, hdr[:]); err != nil {
						return
					}
					n := binary.BigEndian.Uint32(hdr[:4])
					if n < 8 || n > 1<<16 {
						return
					}
					if _, err := io.CopyN(io.Discard, c, int64(n-8)); err != nil {
						return
					}
					if v := binary.BigEndian.Uint32(hdr[4:]); v == 80877103 || v == 80877104 {
						c.Write([]byte("N")) // no SSL, no GSS encryption
						continue
					}
					break
				}
				var body []byte
				for _, f := range []struct {
					k byte
					v string
				}{{'S', "FATAL"}, {'V', "FATAL"}, {'C', code}, {'M', msg}} {
					body = append(append(append(body, f.k), f.v...), 0)
				}
				body = append(body, 0)
				out := []byte{'E', 0, 0, 0, 0}
				binary.BigEndian.PutUint32(out[1:], uint32(4+len(body)))
				c.Write(append(out, body...))
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// TestConnectUnreachable: a database nothing answers for is unreachable,
// said at once with its address and the real error, never "no shop
// schema"; Open, which waits for a database being started, says the same
// when its time is up.
func TestConnectUnreachable(t *testing.T) {
	port := labtest.FreePort(t)
	missing := filepath.Join(t.TempDir(), "no-such-dir")
	for _, c := range []struct{ dsn, where, cause string }{
		{fmt.Sprintf("host=127.0.0.1 port=%d user=shop dbname=shop sslmode=disable", port), fmt.Sprintf("127.0.0.1:%d", port), "connection refused"},
		{fmt.Sprintf("host=%s port=5432 user=shop dbname=shop sslmode=disable", missing), missing + ":5432", "no such file or directory"},
	} {
		start := time.Now()
		_, err := Connect(context.Background(), c.dsn, 1)
		took := time.Since(start)
		if !errors.Is(err, ErrUnreachable) || errors.Is(err, ErrNoSchema) || errors.Is(err, ErrNoRights) {
			t.Errorf("%s: %v, want ErrUnreachable", c.where, err)
			continue
		}
		for _, want := range []string{"unreachable", c.where, c.cause} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %q lacks %q", c.where, err, want)
			}
		}
		if strings.Contains(err.Error(), "schema") {
			t.Errorf("%s: %q speaks of a schema", c.where, err)
		}
		if took > 5*time.Second {
			t.Errorf("%s: Connect took %v", c.where, took)
		}

		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		start = time.Now()
		_, err = Open(ctx, c.dsn, 1)
		took = time.Since(start)
		cancel()
		if !errors.Is(err, ErrUnreachable) || strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), c.cause) {
			t.Errorf("%s: Open: %v, want unreachable: %s", c.where, err, c.cause)
		}
		if took > 5*time.Second {
			t.Errorf("%s: Open with a 500ms context took %v", c.where, took)
		}
	}
}

// TestConnectNoRights: a server that refuses the role is a lack of rights,
// said at once by Connect; Open, which waits for a database whose setup
// may not have made the role yet, says the same when its time is up.
func TestConnectNoRights(t *testing.T) {
	port := fakeRefusingServer(t, "28000", `role "shop" is not permitted to log in`)
	dsn := fmt.Sprintf("host=127.0.0.1 port=%d user=shop dbname=shop sslmode=disable", port)
	for name, open := range map[string]func(context.Context, string, int32) (*Store, error){"Connect": Connect, "Open": Open} {
		limit := time.Hour // Connect needs none
		if name == "Open" {
			limit = 500 * time.Millisecond
		}
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		start := time.Now()
		_, err := open(ctx, dsn, 1)
		took := time.Since(start)
		cancel()
		if !errors.Is(err, ErrNoRights) || errors.Is(err, ErrNoSchema) || errors.Is(err, ErrUnreachable) {
			t.Errorf("%s: %v, want ErrNoRights", name, err)
			continue
		}
		for _, want := range []string{"no rights", fmt.Sprintf("127.0.0.1:%d", port), "not permitted to log in"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %q lacks %q", name, err, want)
			}
		}
		if took > 5*time.Second {
			t.Errorf("%s took %v", name, took)
		}
	}
}

// TestClassify: the errors a client meets, by what they mean.
func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err  error
		want error
	}{
		{&net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.EACCES)}, ErrNoRights},
		{&net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, ErrUnreachable},
		{&net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.ENOENT)}, ErrUnreachable},
		{fmt.Errorf("x: %w", &pgconn.PgError{Code: "28P01"}), ErrNoRights},
		{&pgconn.PgError{Code: "42501"}, ErrNoRights},
		{&pgconn.PgError{Code: "3D000"}, ErrNoSchema},
		{&pgconn.PgError{Code: "57P03"}, ErrUnreachable},
		{&pgconn.PgError{Code: "22012"}, nil},
		{errors.New("something else"), nil},
	} {
		if got := classify(c.err); got != c.want {
			t.Errorf("classify(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// TestConnectNoSchema: only a database that answers without the shop's
// tables has no shop schema, said at once by Connect.
func TestConnectNoSchema(t *testing.T) {
	dsn := testDSN(t)
	start := time.Now()
	_, err := Connect(context.Background(), dsn, 1)
	if !errors.Is(err, ErrNoSchema) || errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "no shop schema") {
		t.Fatalf("Connect to an empty database: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Connect took %v", took)
	}
	if err := Setup(context.Background(), dsn, Catalog{Products: []Product{phone}}); err != nil {
		t.Fatal(err)
	}
	s, err := Connect(context.Background(), dsn, 1)
	if err != nil {
		t.Fatalf("Connect after Setup: %v", err)
	}
	s.Close()
}
