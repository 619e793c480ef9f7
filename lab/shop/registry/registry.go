// Package registry is the shop's service registry in etcd: each service
// instance keeps its address under a lease it renews while it lives, so a
// dead instance's entry disappears when the lease runs out; clients find
// instances through a gRPC resolver that watches the entries.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Prefix is the root of the registry's keys.
const Prefix = "/labctl/services/"

// Timings of the registry's calls to etcd.
const (
	opTimeout  = 2 * time.Second        // one grant, put, get or revoke
	retryFirst = 100 * time.Millisecond // first wait after a failed (re-)registration or watch
	retryMax   = 2 * time.Second        // longest wait between retries
)

// Instance is one service instance as its registry entry says (the value
// is this in JSON).
type Instance struct {
	Addr     string `json:"addr"`     // ip:port of its gRPC server
	Instance string `json:"instance"` // its name (the node's)
	Region   string `json:"region"`
	Service  string `json:"service"` // order, inventory, coupon
}

// Key returns the key of an instance's entry:
// /labctl/services/<region>/<service>/<instance>.
func Key(region, service, instance string) string {
	return servicePrefix(region, service) + instance
}

// servicePrefix is what the keys of a service's instances in a region
// start with.
func servicePrefix(region, service string) string {
	return Prefix + region + "/" + service + "/"
}

// checkName checks one segment of a key.
func checkName(what, name string) error {
	if name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("registry: %s %q must be non-empty without /", what, name)
	}
	return nil
}

func (in Instance) check() error {
	for _, c := range []struct{ what, name string }{{"region", in.Region}, {"service", in.Service}, {"instance", in.Instance}} {
		if err := checkName(c.what, c.name); err != nil {
			return err
		}
	}
	if _, _, err := net.SplitHostPort(in.Addr); err != nil {
		return fmt.Errorf("registry: instance %s address %q: %w", in.Instance, in.Addr, err)
	}
	return nil
}

// decode reads a registry entry.
func decode(key string, value []byte) (Instance, error) {
	var in Instance
	if err := json.Unmarshal(value, &in); err != nil {
		return in, fmt.Errorf("registry entry %s: %w", key, err)
	}
	if in.Addr == "" {
		return in, fmt.Errorf("registry entry %s: no address", key)
	}
	return in, nil
}

// Registration is an instance's entry, kept alive until its context ends
// or Close.
type Registration struct {
	cli    *clientv3.Client
	key    string
	value  string
	ttl    int64 // seconds
	cancel context.CancelFunc
	done   chan struct{}    // closed when keep returns
	lease  clientv3.LeaseID // the current lease; keep's alone until done
}

// Register puts in's entry under a lease of ttl (whole seconds, at least
// one) and keeps the lease alive until ctx ends or Close. When the lease is
// lost (etcd too slow to answer keepalives within ttl, or restarted without
// it) the entry is put again under a new lease, retrying with backoff. When
// ctx ends the entry stays until its lease runs out, as if the instance had
// died; Close removes it at once.
//
// The first registration is retried the same way until it succeeds or ctx
// ends, each failed attempt passed to failed (if not nil): one attempt is
// bounded by opTimeout, and an instance starting while its etcd starts too,
// or answers slowly (a starved CPU, a path still learning its neighbours),
// must wait for it rather than die. What bounds the wait is ctx, and the
// supervisor's readiness timeout for the instance.
func Register(ctx context.Context, cli *clientv3.Client, in Instance, ttl time.Duration, failed func(error)) (*Registration, error) {
	if err := in.check(); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("registry: lease ttl %v must be positive", ttl)
	}
	value, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &Registration{
		cli:    cli,
		key:    Key(in.Region, in.Service, in.Instance),
		value:  string(value),
		ttl:    int64((ttl + time.Second - 1) / time.Second),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	var alive <-chan *clientv3.LeaseKeepAliveResponse
	for wait := retryFirst; ; {
		if alive, err = r.put(ctx); err == nil {
			break
		}
		if failed != nil {
			failed(fmt.Errorf("register %s: %w", r.key, err))
		}
		if !sleep(ctx, cli.Ctx(), &wait) {
			cancel()
			return nil, fmt.Errorf("register %s: %w", r.key, err)
		}
	}
	go r.keep(ctx, alive)
	return r, nil
}

// put grants a lease, puts the entry under it and starts its keepalives,
// which stop when ctx ends.
func (r *Registration) put(ctx context.Context) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	lease, err := r.cli.Grant(octx, r.ttl)
	if err != nil {
		return nil, fmt.Errorf("grant lease: %w", err)
	}
	if _, err := r.cli.Put(octx, r.key, r.value, clientv3.WithLease(lease.ID)); err != nil {
		return nil, fmt.Errorf("put: %w", err)
	}
	alive, err := r.cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return nil, fmt.Errorf("keep lease alive: %w", err)
	}
	r.lease = lease.ID
	return alive, nil
}

// keep drains the keepalive answers; when they stop before ctx ends, the
// lease is lost (or about to be), so it registers again after a short
// wait, longer after each failure.
func (r *Registration) keep(ctx context.Context, alive <-chan *clientv3.LeaseKeepAliveResponse) {
	defer close(r.done)
	for {
		for range alive {
		}
		wait := retryFirst
		for {
			if !sleep(ctx, r.cli.Ctx(), &wait) {
				return
			}
			var err error
			if alive, err = r.put(ctx); err == nil {
				break
			}
		}
	}
}

// sleep waits for a jittered *wait, then doubles it up to retryMax; it
// returns false instead if ctx or the client ends first.
func sleep(ctx, client context.Context, wait *time.Duration) bool {
	d := *wait/2 + rand.N(*wait/2+1)
	*wait = min(*wait*2, retryMax)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-client.Done():
	}
	return false
}

// revokeTimeout bounds the revocation in Close.
const revokeTimeout = 300 * time.Millisecond

// Close stops the keepalives and revokes the lease, which removes the
// entry at once. A lease already gone is not an error.
func (r *Registration) Close() error {
	r.cancel()
	<-r.done
	// Bounded tighter than other calls: a process on its way out (or an
	// etcd already stopped) should not wait; the lease expires anyway.
	ctx, cancel := context.WithTimeout(context.Background(), revokeTimeout)
	defer cancel()
	if _, err := r.cli.Revoke(ctx, r.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("deregister %s: %w", r.key, err)
	}
	return nil
}

// List returns the instances of service in region, sorted by instance name.
func List(ctx context.Context, cli *clientv3.Client, region, service string) ([]Instance, error) {
	for _, c := range []struct{ what, name string }{{"region", region}, {"service", service}} {
		if err := checkName(c.what, c.name); err != nil {
			return nil, err
		}
	}
	prefix := servicePrefix(region, service)
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("registry: list %s: %w", prefix, err)
	}
	out := make([]Instance, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		in, err := decode(string(kv.Key), kv.Value)
		if err != nil {
			return nil, err
		}
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b Instance) int { return strings.Compare(a.Instance, b.Instance) })
	return out, nil
}

// Connect returns a client of the etcd at endpoints (host:port). It does
// not wait for etcd: calls fail (or wait, as their contexts say) until it
// answers.
func Connect(endpoints []string) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          2 * time.Second,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("registry: etcd %s: %w", strings.Join(endpoints, ","), err)
	}
	return cli, nil
}
