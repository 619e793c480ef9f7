package bgp

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

// fakeKernel is a main routing table in memory. Resolve does a longest
// prefix match over every route, as the kernel's route lookup does.
type fakeKernel struct {
	mu     sync.Mutex
	routes map[routeKey]KernelRoute
	links  []Link
	events chan struct{}
	ops    []string // Replace/Delete calls, in order
}

const protoKernel, protoStatic = 2, 4

func newFake() *fakeKernel {
	return &fakeKernel{routes: map[routeKey]KernelRoute{}, events: make(chan struct{}, 1)}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

// add puts a route in the table directly (a connected or static route, or
// a leftover); via "" means none.
func (f *fakeKernel) add(prefix, via string, dev, proto, metric int) {
	r := KernelRoute{Prefix: pfx(prefix), Dev: dev, Protocol: proto, Metric: metric}
	if via != "" {
		r.Via = ip(via)
	}
	f.mu.Lock()
	f.routes[routeKey{r.Prefix, metric}] = r
	f.mu.Unlock()
}

func (f *fakeKernel) del(prefix string, metric int) {
	f.mu.Lock()
	delete(f.routes, routeKey{pfx(prefix), metric})
	f.mu.Unlock()
}

func (f *fakeKernel) Routes() ([]KernelRoute, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]KernelRoute, 0, len(f.routes))
	for _, r := range f.routes {
		out = append(out, r)
	}
	return out, nil
}

func (f *fakeKernel) Replace(r KernelRoute) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[routeKey{r.Prefix, r.Metric}] = r
	f.ops = append(f.ops, "replace "+r.String())
	return nil
}

func (f *fakeKernel) Delete(r KernelRoute) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := routeKey{r.Prefix, r.Metric}
	if cur, ok := f.routes[k]; ok && cur.Protocol == r.Protocol {
		delete(f.routes, k)
	}
	f.ops = append(f.ops, "delete "+r.String())
	return nil
}

func (f *fakeKernel) Resolve(nh netip.Addr) (netip.Addr, int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var best *KernelRoute
	for _, r := range f.routes {
		if r.Prefix.Contains(nh) && (best == nil || r.Prefix.Bits() > best.Prefix.Bits() ||
			r.Prefix.Bits() == best.Prefix.Bits() && r.Metric < best.Metric) {
			best = &r
		}
	}
	if best == nil {
		return netip.Addr{}, 0, false
	}
	return best.Via, best.Dev, true
}

func (f *fakeKernel) Links() ([]Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.links), nil
}

func (f *fakeKernel) setLinks(ls ...Link) {
	f.mu.Lock()
	f.links = ls
	f.mu.Unlock()
	select {
	case f.events <- struct{}{}:
	default:
	}
}

func (f *fakeKernel) Watch(ctx context.Context) (<-chan struct{}, error) { return f.events, nil }

// bgpRoutes lists the proto-bgp routes as "prefix via dev", sorted.
func (f *fakeKernel) bgpRoutes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.routes {
		if r.Protocol == Protocol {
			if r.Metric != Metric {
				out = append(out, fmt.Sprintf("%s via %s dev %d metric %d", r.Prefix, r.Via, r.Dev, r.Metric))
				continue
			}
			out = append(out, fmt.Sprintf("%s via %s dev %d", r.Prefix, r.Via, r.Dev))
		}
	}
	slices.Sort(out)
	return out
}

func (f *fakeKernel) all() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.routes {
		out = append(out, r.String())
	}
	slices.Sort(out)
	return out
}

func (f *fakeKernel) takeOps() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	o := f.ops
	f.ops = nil
	return o
}

// testLog sends slog lines to t.Log until the test ends (GoBGP goroutines
// may outlive it).
func testLog(t *testing.T) *slog.Logger {
	w := &tlogWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	lvl := slog.LevelInfo
	if os.Getenv("BGPTEST_DEBUG") != "" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl}))
}

type tlogWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *tlogWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Helper()
		w.t.Log(strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}

var _ io.Writer = (*tlogWriter)(nil)
