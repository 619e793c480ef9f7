package registry

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
)

// Scheme is the resolver's target scheme: etcd:///<region>/<service>.
const Scheme = "etcd"

// Target returns the gRPC target of service in region.
func Target(region, service string) string { return Scheme + ":///" + region + "/" + service }

// instanceKey is the resolver.Address attribute naming the instance.
type instanceKey struct{}

// NewBuilder returns a gRPC resolver builder for etcd:///<region>/<service>
// targets: the resolver watches the service's entries in the registry and
// gives the channel one endpoint per instance, in instance order.
func NewBuilder(cli *clientv3.Client) resolver.Builder { return builder{cli} }

type builder struct{ cli *clientv3.Client }

func (builder) Scheme() string { return Scheme }

// Build starts watching the target's entries.
func (b builder) Build(t resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	region, service, err := parseTarget(t.Endpoint())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{cli: b.cli, cc: cc, prefix: servicePrefix(region, service), cancel: cancel, done: make(chan struct{})}
	go w.run(ctx)
	return w, nil
}

// parseTarget splits a target's "<region>/<service>".
func parseTarget(endpoint string) (region, service string, err error) {
	region, service, ok := strings.Cut(endpoint, "/")
	if !ok || checkName("region", region) != nil || checkName("service", service) != nil {
		return "", "", fmt.Errorf("registry: target %s:///%s: want %s:///<region>/<service>", Scheme, endpoint, Scheme)
	}
	return region, service, nil
}

// watcher is the resolver of one target.
type watcher struct {
	cli    *clientv3.Client
	cc     resolver.ClientConn
	prefix string
	cancel context.CancelFunc
	done   chan struct{}
}

// ResolveNow does nothing: the watch already reports every change.
func (*watcher) ResolveNow(resolver.ResolveNowOptions) {}

// Close stops the watch.
func (w *watcher) Close() {
	w.cancel()
	<-w.done
}

// run reads the entries, then follows their changes, starting over (after
// a wait) when the watch fails, until ctx ends.
func (w *watcher) run(ctx context.Context) {
	defer close(w.done)
	wait := retryFirst
	for {
		if err := w.follow(ctx, &wait); err != nil {
			w.cc.ReportError(err)
		}
		if !sleep(ctx, w.cli.Ctx(), &wait) {
			return
		}
	}
}

// follow pushes the current entries to the channel and then every change,
// until the watch ends. A successful read resets *wait.
func (w *watcher) follow(ctx context.Context, wait *time.Duration) error {
	gctx, cancel := context.WithTimeout(ctx, opTimeout)
	resp, err := w.cli.Get(gctx, w.prefix, clientv3.WithPrefix())
	cancel()
	if err != nil {
		return fmt.Errorf("registry: read %s: %w", w.prefix, err)
	}
	*wait = retryFirst
	entries := map[string]Instance{}
	for _, kv := range resp.Kvs {
		if in, err := decode(string(kv.Key), kv.Value); err == nil {
			entries[string(kv.Key)] = in
		}
	}
	w.update(entries)
	// The watch survives lost connections to etcd (it resumes from the
	// last revision it saw); it ends when the leader is lost or the
	// revision was compacted, and then everything is read again.
	watch := w.cli.Watch(clientv3.WithRequireLeader(ctx), w.prefix,
		clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for wr := range watch {
		if err := wr.Err(); err != nil {
			return fmt.Errorf("registry: watch %s: %w", w.prefix, err)
		}
		for _, ev := range wr.Events {
			key := string(ev.Kv.Key)
			delete(entries, key)
			if ev.Type == clientv3.EventTypePut {
				if in, err := decode(key, ev.Kv.Value); err == nil {
					entries[key] = in
				}
			}
		}
		w.update(entries)
	}
	return nil
}

// update gives the channel one endpoint per entry, in instance order. An
// empty list fails the channel's calls (Unavailable) until an instance
// registers.
func (w *watcher) update(entries map[string]Instance) {
	list := make([]Instance, 0, len(entries))
	for _, in := range entries {
		list = append(list, in)
	}
	slices.SortFunc(list, func(a, b Instance) int { return strings.Compare(a.Instance, b.Instance) })
	eps := make([]resolver.Endpoint, 0, len(list))
	for _, in := range list {
		addr := resolver.Address{Addr: in.Addr, Attributes: attributes.New(instanceKey{}, in.Instance)}
		eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{addr}})
	}
	// An error only asks for a new resolution, which the watch makes
	// needless.
	w.cc.UpdateState(resolver.State{Endpoints: eps})
}

// roundRobin is the service config of registry channels.
const roundRobin = `{"loadBalancingConfig":[{"round_robin":{}}]}`

// Dial returns a client connection to service in region, balanced round
// robin across the instances the registry lists. It is plaintext (inside
// the VPC); a refused or broken connection to an instance is retried
// within a second or two, and one that goes silent is dropped after
// about 13 s of unanswered keepalives (sooner when its lease expires).
// opts come after Dial's own, so they can override them.
func Dial(cli *clientv3.Client, region, service string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if _, _, err := parseTarget(region + "/" + service); err != nil {
		return nil, err
	}
	all := append([]grpc.DialOption{
		grpc.WithResolvers(NewBuilder(cli)),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(roundRobin),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
		// Pings only while calls are open: servers refuse (GOAWAY) more
		// frequent idle pings than their enforcement policy allows.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 3 * time.Second}),
	}, opts...)
	conn, err := grpc.NewClient(Target(region, service), all...)
	if err != nil {
		return nil, fmt.Errorf("registry: dial %s: %w", Target(region, service), err)
	}
	return conn, nil
}
