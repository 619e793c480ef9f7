package serve

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// EtcdBin is the etcd binary (Debian's etcd-server package).
var EtcdBin = "/usr/bin/etcd"

// EtcdOptions configures a single-member etcd: the service registry of a
// region.
type EtcdOptions struct {
	DataDir    string // the member's data (created by etcd)
	Name       string // member name; "" = "default"
	Listen     string // the node's IP: clients reach it there and on 127.0.0.1; "" = 127.0.0.1 only
	ClientPort int    // 0 = 2379
	PeerPort   int    // on 127.0.0.1; 0 = 2380
}

// etcdArgs returns etcd's command line for o.
func etcdArgs(o EtcdOptions) ([]string, error) {
	if o.DataDir == "" {
		return nil, errors.New("etcd: no data directory")
	}
	name := o.Name
	if name == "" {
		name = "default"
	}
	if strings.ContainsAny(name, "=,") {
		return nil, fmt.Errorf("etcd: member name %q has = or ,", name)
	}
	client, err := defaultPort("etcd client", o.ClientPort, 2379)
	if err != nil {
		return nil, err
	}
	peer, err := defaultPort("etcd peer", o.PeerPort, 2380)
	if err != nil {
		return nil, err
	}
	hosts, err := listenHosts("etcd", o.Listen)
	if err != nil {
		return nil, err
	}
	var clientURLs []string
	for _, h := range hosts {
		clientURLs = append(clientURLs, "http://"+net.JoinHostPort(h, client))
	}
	peerURL := "http://" + net.JoinHostPort("127.0.0.1", peer)
	return []string{
		"--name", name,
		"--data-dir", o.DataDir,
		"--listen-client-urls", strings.Join(clientURLs, ","),
		"--advertise-client-urls", clientURLs[0],
		"--listen-peer-urls", peerURL,
		"--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", name + "=" + peerURL,
		"--initial-cluster-state", "new",
		// A lone member has no peers to wait for: short ticks make it
		// elect itself sooner and lower the shortest lease etcd grants
		// ((3*10/2) ticks of 50ms, rounded up: 1s instead of 2s), so a
		// dead instance's registration can expire within a second.
		"--heartbeat-interval", "50",
		"--election-timeout", "500",
		"--logger", "zap",
		"--log-level", "warn",
		"--log-outputs", "stderr",
	}, nil
}

// Etcd runs a single-member etcd for o until ctx ends, then stops it
// (SIGTERM).
func Etcd(ctx context.Context, o EtcdOptions, log *slog.Logger) error {
	args, err := etcdArgs(o)
	if err != nil {
		return err
	}
	// Parents traversable (other services' data sits beside this one),
	// the data directory itself private, as etcd wants it.
	if err := os.MkdirAll(filepath.Dir(o.DataDir), 0o755); err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	if err := os.Mkdir(o.DataDir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("etcd: %w", err)
	}
	log.Info("etcd", "data", o.DataDir, "args", strings.Join(args, " "))
	return RunChild(ctx, daemonCmd(EtcdBin, args...), syscall.SIGTERM, ChildGrace, log)
}

// defaultPort returns port, or def when port is 0, as text.
func defaultPort(what string, port, def int) (string, error) {
	if port == 0 {
		port = def
	}
	if port < 1 || port > 65535 {
		return "", fmt.Errorf("%s port %d out of range", what, port)
	}
	return strconv.Itoa(port), nil
}

// listenHosts returns the addresses a server binds: the node's IP (if
// given) first, then 127.0.0.1.
func listenHosts(what, listen string) ([]string, error) {
	if listen == "" {
		return []string{"127.0.0.1"}, nil
	}
	ip, err := netip.ParseAddr(listen)
	if err != nil {
		return nil, fmt.Errorf("%s: listen address %q is not an IP address", what, listen)
	}
	if ip == netip.MustParseAddr("127.0.0.1") {
		return []string{"127.0.0.1"}, nil
	}
	return []string{ip.String(), "127.0.0.1"}, nil
}
