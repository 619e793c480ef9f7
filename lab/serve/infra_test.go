package serve

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"labctl/lab/internal/labtest"
)

func TestHAProxyConfig(t *testing.T) {
	o := HAProxyOptions{
		Dir:        "/run/labctl/x/slb",
		Listen:     ":443",
		Cert:       "/run/labctl/x/shop.pem",
		Backends:   []string{"east-ctl1=10.20.1.11:8080", "10.20.1.12:8080"},
		HealthPath: "/healthz",
		ProxyV2:    true,
		Threads:    2,
	}
	cfg, err := HAProxyConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"maxconn 20000",
		"nbthread 2",
		"stats socket /run/labctl/x/slb/admin.sock mode 600 level admin",
		"ssl-default-bind-options ssl-min-ver TLSv1.2",
		"mode tcp",
		"timeout connect 2s",
		"bind :443 ssl crt /run/labctl/x/shop.pem alpn http/1.1",
		"default_backend controllers",
		"balance roundrobin",
		"option httpchk GET /healthz",
		"http-check expect status 200",
		"default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2 send-proxy-v2 check-send-proxy\n",
		"server east-ctl1 10.20.1.11:8080 check\n",
		"server 10.20.1.12_8080 10.20.1.12:8080 check\n",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	for _, unwanted := range []string{"daemon", "log "} {
		if strings.Contains(cfg, unwanted) {
			t.Errorf("config has %q:\n%s", unwanted, cfg)
		}
	}
	o.HealthPath, o.ProxyV2, o.Threads = "", false, 0
	cfg, err = HAProxyConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	for _, unwanted := range []string{"httpchk", "http-check", "send-proxy", "nbthread 0"} {
		if strings.Contains(cfg, unwanted) {
			t.Errorf("plain TCP config has %q:\n%s", unwanted, cfg)
		}
	}
	if !strings.Contains(cfg, "nbthread 1\n") {
		t.Errorf("threads do not default to 1:\n%s", cfg)
	}
}

func TestHAProxyConfigErrors(t *testing.T) {
	good := HAProxyOptions{Dir: "/tmp/slb", Listen: ":443", Cert: "/tmp/c.pem", Backends: []string{"10.0.0.1:80"}}
	for _, c := range []struct {
		name string
		edit func(*HAProxyOptions)
		want string
	}{
		{"no backends", func(o *HAProxyOptions) { o.Backends = nil }, "no backends"},
		{"no port", func(o *HAProxyOptions) { o.Backends = []string{"10.0.0.1"} }, `backend "10.0.0.1"`},
		{"host name", func(o *HAProxyOptions) { o.Backends = []string{"ctl=ctl1:8080"} }, `backend "ctl=ctl1:8080"`},
		{"port 0", func(o *HAProxyOptions) { o.Backends = []string{"10.0.0.1:0"} }, `backend "10.0.0.1:0"`},
		{"bad name", func(o *HAProxyOptions) { o.Backends = []string{"a b=10.0.0.1:80"} }, `name "a b"`},
		{"twice", func(o *HAProxyOptions) { o.Backends = []string{"10.0.0.1:80", "10.0.0.1:80"} }, "appears twice"},
		{"no dir", func(o *HAProxyOptions) { o.Dir = "" }, "no directory"},
		{"long dir", func(o *HAProxyOptions) { o.Dir = "/" + strings.Repeat("d", 100) }, "longer than 107"},
		{"no cert", func(o *HAProxyOptions) { o.Cert = "" }, "no certificate"},
		{"spaced cert", func(o *HAProxyOptions) { o.Cert = "/tmp/my cert.pem" }, "has a space"},
		{"listen", func(o *HAProxyOptions) { o.Listen = "443" }, "listen address"},
		{"listen port", func(o *HAProxyOptions) { o.Listen = ":https" }, "bad port"},
		{"listen host", func(o *HAProxyOptions) { o.Listen = "slb:443" }, "IP address"},
		{"health path", func(o *HAProxyOptions) { o.HealthPath = "healthz" }, "health path"},
		{"threads", func(o *HAProxyOptions) { o.Threads = -1 }, "threads"},
	} {
		o := good
		c.edit(&o)
		if _, err := HAProxyConfig(o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one with %q", c.name, err, c.want)
		}
	}
	if _, err := HAProxyConfig(good); err != nil {
		t.Fatalf("good options: %v", err)
	}
}

func TestHAProxyAcceptsConfig(t *testing.T) {
	requireBin(t, HAProxyBin)
	dir := t.TempDir()
	cfg, err := HAProxyConfig(HAProxyOptions{
		Dir: dir, Listen: "127.0.0.1:8443", Cert: writeCert(t, dir),
		Backends: []string{"a=127.0.0.1:8080", "[::1]:8081"}, HealthPath: "/healthz", ProxyV2: true, Threads: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, HAProxyConfigFile)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(HAProxyBin, "-c", "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy -c: %v\n%s\n%s", err, out, cfg)
	}
	if strings.Contains(string(out), "WARNING") {
		t.Errorf("haproxy -c warns:\n%s", out)
	}
}

func TestHAProxyFitMaxConn(t *testing.T) {
	maxconn, err := haproxyFitMaxConn()
	if err != nil {
		t.Skip(err) // a tiny hard limit: HAProxy says so too
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if maxconn > HAProxyMaxConn || uint64(haproxyFDs(maxconn)) > lim.Max {
		t.Fatalf("maxconn %d does not fit the hard limit %d", maxconn, lim.Max)
	}
}

// TestHAProxyChecksAndBalances puts a real HAProxy in front of two
// backends that want PROXY v2, one of them failing its health check.
func TestHAProxyChecksAndBalances(t *testing.T) {
	requireBin(t, HAProxyBin)
	dir := t.TempDir()
	cert := writeCert(t, dir)
	good := proxiedBackend(t, "good", http.StatusOK)
	bad := proxiedBackend(t, "bad", http.StatusServiceUnavailable)
	listen := labtest.FreeAddr(t)
	o := HAProxyOptions{
		Dir: dir, Listen: listen, Cert: cert, HealthPath: "/healthz", ProxyV2: true,
		Backends: []string{"good=" + good, "bad=" + bad},
	}
	startDaemon(t, func(ctx context.Context, log *slog.Logger) error { return HAProxy(ctx, o, log) })

	sock := filepath.Join(dir, HAProxySocket)
	var servers []HAProxyServer
	labtest.WaitFor(t, 5*time.Second, func() bool {
		var err error
		servers, err = HAProxyStats(sock)
		return err == nil && statusOf(servers, "good") == "UP" && statusOf(servers, "bad") == "DOWN"
	}, "good UP and bad DOWN")
	if len(servers) != 2 || servers[0].Backend != "controllers" || servers[0].Addr != good {
		t.Fatalf("stats: %+v", servers)
	}

	pool := x509.NewCertPool()
	certPEM, err := os.ReadFile(cert)
	if err != nil || !pool.AppendCertsFromPEM(certPEM) {
		t.Fatalf("certificate %s: %v", cert, err)
	}
	const requests = 6
	for range requests {
		var local string
		tr := &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}},
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err == nil {
					local = c.LocalAddr().String()
				}
				return c, err
			},
		}
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + listen + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		if want := "good " + local; string(body) != want {
			t.Fatalf("answer %q, want %q (the healthy backend seeing the client's address)", body, want)
		}
		if resp.TLS == nil || resp.TLS.NegotiatedProtocol != "http/1.1" {
			t.Fatalf("TLS state %+v", resp.TLS)
		}
	}
	servers, err = HAProxyStats(sock)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		if s.Name == "good" && s.Total < requests {
			t.Errorf("good served %d sessions, want >= %d", s.Total, requests)
		}
		if s.Name == "bad" && s.Total != 0 {
			t.Errorf("bad (DOWN) served %d sessions", s.Total)
		}
	}
}

func TestParseStat(t *testing.T) {
	in := "# pxname,svname,qcur,scur,stot,status,addr,\n" +
		"controllers,c1,0,3,17,UP,10.0.0.1:8080,\n" +
		"controllers,c2,0,0,0,DOWN 1/2,10.0.0.2:8080,\n\n"
	got, err := parseStat(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []HAProxyServer{
		{Backend: "controllers", Name: "c1", Addr: "10.0.0.1:8080", Status: "UP", Sessions: 3, Total: 17},
		{Backend: "controllers", Name: "c2", Addr: "10.0.0.2:8080", Status: "DOWN 1/2"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if _, err := parseStat(strings.NewReader("Unknown command.\n")); err == nil {
		t.Fatal("an error message parsed as stats")
	}
}

func TestEtcd(t *testing.T) {
	requireBin(t, EtcdBin)
	client, peer := labtest.FreePort(t), labtest.FreePort(t)
	o := EtcdOptions{DataDir: filepath.Join(t.TempDir(), "etcd"), Name: "east-etcd", Listen: "127.0.0.1", ClientPort: client, PeerPort: peer}
	d := startDaemon(t, func(ctx context.Context, log *slog.Logger) error { return Etcd(ctx, o, log) })
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{fmt.Sprintf("127.0.0.1:%d", client)}, DialTimeout: 2 * time.Second, Logger: zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	labtest.WaitFor(t, 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := cli.Put(ctx, "/labctl/test", "hello")
		return err == nil
	}, "etcd accepts a put")
	resp, err := cli.Get(context.Background(), "/labctl/test")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "hello" {
		t.Fatalf("get: %+v", resp.Kvs)
	}
	d.stop(t)
}

func TestEtcdArgs(t *testing.T) {
	args, err := etcdArgs(EtcdOptions{DataDir: "/d", Name: "n1", Listen: "10.20.1.30"})
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(args, " ")
	for _, want := range []string{
		"--listen-client-urls http://10.20.1.30:2379,http://127.0.0.1:2379 ",
		"--advertise-client-urls http://10.20.1.30:2379 ",
		"--listen-peer-urls http://127.0.0.1:2380 ",
		"--initial-cluster n1=http://127.0.0.1:2380 ",
		"--initial-cluster-state new",
		"--log-level warn",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("%q lacks %q", line, want)
		}
	}
	for _, o := range []EtcdOptions{{}, {DataDir: "/d", Listen: "etcd1"}, {DataDir: "/d", ClientPort: 70000}, {DataDir: "/d", Name: "a=b"}} {
		if _, err := etcdArgs(o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

func TestRedis(t *testing.T) {
	requireBin(t, RedisBin)
	port := labtest.FreePort(t)
	o := RedisOptions{Dir: t.TempDir(), Listen: "127.0.0.1", Port: port, MaxMemory: "16mb"}
	d := startDaemon(t, func(ctx context.Context, log *slog.Logger) error { return Redis(ctx, o, log) })
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	defer rdb.Close()
	ctx := context.Background()
	labtest.WaitFor(t, 5*time.Second, func() bool { return rdb.Ping(ctx).Err() == nil }, "redis answers PING")
	if err := rdb.Set(ctx, "product:flash-1", "42", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := rdb.Get(ctx, "product:flash-1").Result(); err != nil || v != "42" {
		t.Fatalf("get: %q, %v", v, err)
	}
	for param, want := range map[string]string{"save": "", "appendonly": "no", "maxmemory": "16777216", "maxmemory-policy": "allkeys-lru", "protected-mode": "no"} {
		if got, err := rdb.ConfigGet(ctx, param).Result(); err != nil || got[param] != want {
			t.Errorf("config %s = %q (%v), want %q", param, got[param], err, want)
		}
	}
	d.stop(t)
}

func TestRedisArgs(t *testing.T) {
	args, err := redisArgs(RedisOptions{Dir: "/d", Listen: "10.20.1.40"})
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(args, " ")
	for _, want := range []string{"--port 6379 ", "--bind 10.20.1.40 127.0.0.1 ", "--save  ", "--maxmemory 64mb "} {
		if !strings.Contains(line, want) {
			t.Errorf("%q lacks %q", line, want)
		}
	}
	if _, err := redisArgs(RedisOptions{Dir: "/d", Listen: "redis1"}); err == nil {
		t.Error("bad listen accepted")
	}
}

// requireBin skips the test when bin is missing, except in CI.
func requireBin(t *testing.T, bin string) {
	t.Helper()
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// writeCert writes a self-signed ECDSA certificate for 127.0.0.1 and its
// key into one PEM file in dir, as HAProxy's crt wants it.
func writeCert(t *testing.T, dir string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "shop.test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	out := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})...)
	path := filepath.Join(dir, "shop.pem")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// proxiedBackend serves HTTP behind a listener that requires a PROXY
// header: /healthz answers health, anything else "<name> <client addr>".
func proxiedBackend(t *testing.T, name string, health int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := &proxyproto.Listener{
		Listener:   ln,
		ConnPolicy: func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil },
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(health) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%s %s", name, r.RemoteAddr) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(pl)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func statusOf(servers []HAProxyServer, name string) string {
	for _, s := range servers {
		if s.Name == name {
			return s.Status
		}
	}
	return ""
}

// daemon is a launcher running in the background and the PID of the
// server it started.
type daemon struct {
	pid    int
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// startDaemon runs a launcher until the test ends (or stop) and waits for
// its child to start.
func startDaemon(t *testing.T, run func(context.Context, *slog.Logger) error) *daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pids := make(chan int, 1)
	d := &daemon{cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- run(ctx, slog.New(pidHandler{pids})) }()
	select {
	case d.pid = <-pids:
	case err := <-d.done:
		cancel()
		t.Fatalf("launcher returned before starting its server: %v", err)
	case <-time.After(5 * time.Second):
		cancel()
		t.Fatal("server not started after 5s")
	}
	t.Cleanup(func() { d.stop(t) })
	return d
}

// stop cancels the launcher's context and checks that it returned cleanly
// and that its server's process is gone.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.once.Do(func() {
		d.cancel()
		select {
		case err := <-d.done:
			if err != nil {
				t.Errorf("launcher: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("launcher still running 15s after cancel (pid %d)", d.pid)
		}
		if err := syscall.Kill(d.pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d still exists after stop (kill 0: %v)", d.pid, err)
		}
	})
}

// pidHandler is a slog handler that passes on the pid of RunChild's
// "started" record.
type pidHandler struct{ pids chan<- int }

func (pidHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h pidHandler) WithAttrs([]slog.Attr) slog.Handler     { return h }
func (h pidHandler) WithGroup(string) slog.Handler          { return h }
func (h pidHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "started" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "pid" {
			select {
			case h.pids <- int(a.Value.Int64()):
			default:
			}
		}
		return true
	})
	return nil
}
