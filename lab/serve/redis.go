package serve

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
)

// RedisBin is the Redis server binary (Debian's redis-server package).
var RedisBin = "/usr/bin/redis-server"

// RedisOptions configures an AZ's product cache: memory only, evicting the
// least recently used keys when full.
type RedisOptions struct {
	Dir       string // working directory (created); nothing is persisted there
	Listen    string // the node's IP; "" = 127.0.0.1 only (127.0.0.1 is always bound)
	Port      int    // 0 = 6379
	MaxMemory string // e.g. "64mb"; "" = 64mb
}

// redisArgs returns redis-server's command line for o.
func redisArgs(o RedisOptions) ([]string, error) {
	if o.Dir == "" {
		return nil, fmt.Errorf("redis: no directory")
	}
	port, err := defaultPort("redis", o.Port, 6379)
	if err != nil {
		return nil, err
	}
	hosts, err := listenHosts("redis", o.Listen)
	if err != nil {
		return nil, err
	}
	mem := o.MaxMemory
	if mem == "" {
		mem = "64mb"
	}
	if strings.ContainsAny(mem, " \t\n\"'") {
		return nil, fmt.Errorf("redis: max memory %q", mem)
	}
	args := []string{"--port", port, "--bind"}
	args = append(args, hosts...)
	return append(args,
		"--dir", o.Dir,
		"--daemonize", "no",
		"--save", "",
		"--appendonly", "no",
		"--protected-mode", "no",
		"--maxmemory", mem,
		"--maxmemory-policy", "allkeys-lru",
		"--loglevel", "warning",
	), nil
}

// Redis runs redis-server for o until ctx ends, then stops it (SIGTERM;
// with nothing to persist it exits at once).
func Redis(ctx context.Context, o RedisOptions, log *slog.Logger) error {
	args, err := redisArgs(o)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	log.Info("redis", "args", strings.Join(args, " "))
	return RunChild(ctx, daemonCmd(RedisBin, args...), syscall.SIGTERM, ChildGrace, log)
}
