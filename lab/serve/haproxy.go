package serve

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"labctl/lab/runner"
)

// HAProxyBin is the HAProxy binary (Debian's haproxy package).
var HAProxyBin = "/usr/sbin/haproxy"

// HAProxyOptions configures the shop's SLB: TLS terminated at HAProxy, then
// plain TCP (L4) to the controllers.
type HAProxyOptions struct {
	Dir        string   // where haproxy.cfg and the admin socket go (created)
	Listen     string   // address of the TLS frontend, e.g. ":443"
	Cert       string   // PEM file with leaf, intermediates and key
	Backends   []string // "name=ip:port" or "ip:port" (then the name is ip_port)
	HealthPath string   // HTTP health check path (e.g. "/healthz"); "" = plain TCP checks
	ProxyV2    bool     // send a PROXY v2 header to the backends (checks included)
	Threads    int      // nbthread; 0 = 1
}

// HAProxyServer is one backend server as the admin socket's "show stat"
// reports it.
type HAProxyServer struct {
	Backend  string // the backend (proxy) name: "controllers"
	Name     string // the server's name
	Addr     string // ip:port
	Status   string // UP, DOWN, "UP 1/2" (going down), "DOWN 1/2" (going up), MAINT, "no check", ...
	Sessions int64  // current sessions
	Total    int64  // sessions since start
}

// HAProxyConfigFile and HAProxySocket name the files HAProxy uses in
// HAProxyOptions.Dir.
const (
	HAProxyConfigFile = "haproxy.cfg"
	HAProxySocket     = "admin.sock"
)

// maxSocketPath is the longest path of a unix socket (sun_path less its
// final NUL).
const maxSocketPath = 107

// serverName is what HAProxy accepts as a server name.
var serverName = regexp.MustCompile(`^[A-Za-z0-9_.:-]+$`)

// HAProxyMaxConn is the SLB's connection limit (global maxconn) when the
// file descriptor limit allows it.
const HAProxyMaxConn = 20000

// haproxyFDs is how many file descriptors HAProxy wants for maxconn
// connections: two per proxied connection, and some of its own.
func haproxyFDs(maxconn int) int { return 2*maxconn + 100 }

// HAProxyConfig returns the haproxy.cfg text for o, or an error naming the
// option that is wrong.
func HAProxyConfig(o HAProxyOptions) (string, error) {
	return haproxyConfig(o, HAProxyMaxConn)
}

// haproxyConfig is HAProxyConfig with maxconn as given.
func haproxyConfig(o HAProxyOptions, maxconn int) (string, error) {
	if err := checkHAProxyOptions(o); err != nil {
		return "", err
	}
	servers, err := haproxyServers(o.Backends)
	if err != nil {
		return "", err
	}
	threads := max(o.Threads, 1)
	var b strings.Builder
	fmt.Fprintf(&b, `global
    maxconn %d
    nbthread %d
    stats socket %s mode 600 level admin
    ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
    mode tcp
    retries 2
    option redispatch
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend shop
    bind %s ssl crt %s alpn http/1.1
    default_backend controllers

backend controllers
    balance roundrobin
`, maxconn, threads, filepath.Join(o.Dir, HAProxySocket), o.Listen, o.Cert)
	if o.HealthPath != "" {
		fmt.Fprintf(&b, "    option httpchk GET %s\n    http-check expect status 200\n", o.HealthPath)
	}
	b.WriteString("    default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2")
	if o.ProxyV2 {
		b.WriteString(" send-proxy-v2 check-send-proxy")
	}
	b.WriteString("\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "    server %s %s check\n", s.name, s.addr)
	}
	return b.String(), nil
}

// checkHAProxyOptions checks everything but the backends.
func checkHAProxyOptions(o HAProxyOptions) error {
	if o.Dir == "" {
		return errors.New("haproxy: no directory for the config and admin socket")
	}
	if o.Cert == "" {
		return errors.New("haproxy: no certificate (PEM with leaf, intermediates and key)")
	}
	for _, path := range []string{o.Dir, o.Cert} {
		if strings.ContainsAny(path, " \t\n#\"'\\") {
			return fmt.Errorf("haproxy: path %q has a space, quote, backslash or #", path)
		}
	}
	if sock := filepath.Join(o.Dir, HAProxySocket); len(sock) > maxSocketPath {
		return fmt.Errorf("haproxy: admin socket path %s is longer than %d bytes", sock, maxSocketPath)
	}
	host, port, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return fmt.Errorf("haproxy: listen address %q: %w", o.Listen, err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("haproxy: listen address %q: bad port %q", o.Listen, port)
	}
	if _, err := netip.ParseAddr(host); host != "" && err != nil {
		return fmt.Errorf("haproxy: listen address %q: host must be an IP address or empty", o.Listen)
	}
	if o.HealthPath != "" && (!strings.HasPrefix(o.HealthPath, "/") || strings.ContainsAny(o.HealthPath, " \t\n#\"'\\")) {
		return fmt.Errorf("haproxy: health path %q must start with / and have no spaces, quotes or #", o.HealthPath)
	}
	if o.Threads < 0 || o.Threads > 64 {
		return fmt.Errorf("haproxy: %d threads (want 1..64, 0 = 1)", o.Threads)
	}
	return nil
}

type haproxyServer struct{ name, addr string }

// haproxyServers parses the "name=ip:port" or "ip:port" backends.
func haproxyServers(backends []string) ([]haproxyServer, error) {
	if len(backends) == 0 {
		return nil, errors.New("haproxy: no backends")
	}
	seen := map[string]bool{}
	var out []haproxyServer
	for _, be := range backends {
		name, addr, named := strings.Cut(be, "=")
		if !named {
			addr = be
		}
		ap, err := netip.ParseAddrPort(addr)
		if err != nil || ap.Port() == 0 {
			return nil, fmt.Errorf("haproxy: backend %q: want [name=]ip:port", be)
		}
		if !named {
			name = ap.Addr().String() + "_" + strconv.Itoa(int(ap.Port()))
		}
		if !serverName.MatchString(name) {
			return nil, fmt.Errorf("haproxy: backend %q: name %q may only have letters, digits, _ . : -", be, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("haproxy: backend name %q appears twice", name)
		}
		seen[name] = true
		out = append(out, haproxyServer{name, ap.String()})
	}
	return out, nil
}

// HAProxy writes o's config to o.Dir and runs HAProxy in the foreground
// until ctx ends, then stops it at once (SIGTERM: open connections are cut,
// which is what a failed SLB does). When the file descriptor limit cannot
// be raised for HAProxyMaxConn connections, maxconn is lowered to fit (and
// a warning says so) rather than HAProxy refusing to start.
func HAProxy(ctx context.Context, o HAProxyOptions, log *slog.Logger) error {
	maxconn, err := haproxyFitMaxConn()
	if err != nil {
		return err
	}
	if maxconn < HAProxyMaxConn {
		log.Warn("haproxy: file descriptor limit too low; maxconn lowered", "maxconn", maxconn, "want", HAProxyMaxConn)
	}
	cfg, err := haproxyConfig(o, maxconn)
	if err != nil {
		return err
	}
	if _, err := os.Stat(o.Cert); err != nil {
		return fmt.Errorf("haproxy: certificate: %w", err)
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return fmt.Errorf("haproxy: %w", err)
	}
	path := filepath.Join(o.Dir, HAProxyConfigFile)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("haproxy: %w", err)
	}
	log.Info("haproxy", "config", path, "listen", o.Listen, "backends", len(o.Backends))
	return RunChild(ctx, daemonCmd(HAProxyBin, "-db", "-f", path), syscall.SIGTERM, ChildGrace, log)
}

// haproxyFitMaxConn raises this process's file descriptor limit (which
// HAProxy inherits) to what HAProxyMaxConn needs, and when that is not
// allowed returns the maxconn the current hard limit affords.
func haproxyFitMaxConn() (int, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("haproxy: file descriptor limit: %w", err)
	}
	need := uint64(haproxyFDs(HAProxyMaxConn))
	if lim.Max >= need {
		return HAProxyMaxConn, nil
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: need, Max: need}); err == nil {
		return HAProxyMaxConn, nil
	}
	fit := (int(lim.Max) - haproxyFDs(0)) / 2
	if fit < 1000 {
		return 0, fmt.Errorf("haproxy: file descriptor hard limit %d is too low (want %d)", lim.Max, need)
	}
	return fit, nil
}

// daemonCmd is a distribution server's command whose output joins ours
// (the supervisor keeps it in the service's log). Its context never ends:
// RunChild stops it.
func daemonCmd(bin string, args ...string) runner.Cmd {
	return runner.Default.Command(context.Background(), bin, args...).SetStdout(os.Stderr).SetStderr(os.Stderr)
}

// HAProxyStats asks HAProxy's admin socket for its server statistics
// ("show stat", servers only).
func HAProxyStats(sock string) ([]HAProxyServer, error) {
	conn, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("haproxy stats: %w", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	// -1 4 -1: every proxy, servers only (not frontends or backends).
	if _, err := io.WriteString(conn, "show stat -1 4 -1\n"); err != nil {
		return nil, fmt.Errorf("haproxy stats %s: %w", sock, err)
	}
	out, err := parseStat(bufio.NewReader(conn))
	if err != nil {
		return nil, fmt.Errorf("haproxy stats %s: %w", sock, err)
	}
	return out, nil
}

// parseStat reads "show stat" CSV: a "# pxname,svname,..." header, then a
// row per server.
func parseStat(r io.Reader) ([]HAProxyServer, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("no header: %w", err)
	}
	if len(header) == 0 || !strings.HasPrefix(header[0], "# ") {
		return nil, fmt.Errorf("unexpected answer %q", strings.Join(header, ","))
	}
	header[0] = strings.TrimPrefix(header[0], "# ")
	col := map[string]int{}
	for i, h := range header {
		col[h] = i
	}
	for _, name := range []string{"pxname", "svname", "addr", "status", "scur", "stot"} {
		if _, ok := col[name]; !ok {
			return nil, fmt.Errorf("no %s column", name)
		}
	}
	var out []HAProxyServer
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(rec) < len(header) {
			continue // the empty line that ends the answer
		}
		cur, _ := strconv.ParseInt(rec[col["scur"]], 10, 64)
		total, _ := strconv.ParseInt(rec[col["stot"]], 10, 64)
		out = append(out, HAProxyServer{
			Backend:  rec[col["pxname"]],
			Name:     rec[col["svname"]],
			Addr:     rec[col["addr"]],
			Status:   rec[col["status"]],
			Sessions: cur,
			Total:    total,
		})
	}
}
