package bgp

import (
	"errors"
	"log/slog"
	"net/netip"
	"strconv"
)

// desired maps every prefix whose best path was learned from a neighbor
// (not originated here, with a real next hop) to that next hop.
func desired(paths []Path) map[netip.Prefix]netip.Addr {
	out := map[netip.Prefix]netip.Addr{}
	for _, p := range paths {
		if !p.Best || p.Local {
			continue
		}
		pfx, err := netip.ParsePrefix(p.Prefix)
		if err != nil || !pfx.Addr().Is4() {
			continue
		}
		nh, err := netip.ParseAddr(p.NextHop)
		if err != nil || !nh.Is4() || nh.IsUnspecified() {
			continue
		}
		out[pfx.Masked()] = nh
	}
	return out
}

// fib keeps the kernel's proto-bgp routes equal to the best paths.
type fib struct {
	k   Kernel
	log *slog.Logger
	// dev names interfaces in log lines (refreshed from Links).
	dev map[int]string
	// unresolved are the prefixes whose next hop the last pass could not
	// resolve (logged once, not every second).
	unresolved map[netip.Prefix]netip.Addr
	// installed are the routes this speaker put in, to tell when the
	// kernel removed one itself (its device went down).
	installed map[routeKey]KernelRoute
}

func newFIB(k Kernel, log *slog.Logger) *fib {
	return &fib{k: k, log: log, dev: map[int]string{}, unresolved: map[netip.Prefix]netip.Addr{}, installed: map[routeKey]KernelRoute{}}
}

func (f *fib) devName(i int) string {
	if n := f.dev[i]; n != "" {
		return n
	}
	return "#" + strconv.Itoa(i)
}

func (f *fib) names(links []Link) {
	for _, l := range links {
		f.dev[l.Index] = l.Name
	}
}

type routeKey struct {
	prefix netip.Prefix
	metric int
}

// reconcile installs the route of every wanted prefix, resolving its BGP
// next hop through the kernel as zebra does (a next hop on a connected
// subnet is the gateway itself; one further away is reached through the
// gateway of the kernel's route to it), and deletes every other proto-bgp
// route. A next hop the kernel cannot reach is skipped (and its old route
// removed) until a later pass resolves it.
func (f *fib) reconcile(want map[netip.Prefix]netip.Addr) error {
	cur, err := f.k.Routes()
	if err != nil {
		return err
	}
	mine := map[routeKey]KernelRoute{}
	other := map[routeKey]bool{}
	for _, r := range cur {
		k := routeKey{r.Prefix.Masked(), r.Metric}
		if r.Protocol == Protocol {
			mine[k] = r
		} else {
			other[k] = true
		}
	}
	var errs []error
	keep := map[routeKey]bool{}
	for _, pfx := range sortedPrefixes(want) {
		nh := want[pfx]
		k := routeKey{pfx, Metric}
		if other[k] {
			continue // a route of another protocol holds this slot: leave it
		}
		gw, dev, ok := f.k.Resolve(nh)
		if !ok {
			if f.unresolved[pfx] != nh {
				f.log.Info("next hop unreachable", "prefix", pfx.String(), "next_hop", nh.String())
				f.unresolved[pfx] = nh
			}
			continue
		}
		delete(f.unresolved, pfx)
		r := KernelRoute{Prefix: pfx, Via: nh, Dev: dev, Protocol: Protocol, Metric: Metric}
		if gw.IsValid() {
			r.Via = gw
		}
		keep[k] = true
		if old, ok := mine[k]; ok && old.Via == r.Via && old.Dev == r.Dev {
			continue
		}
		if err := f.k.Replace(r); err != nil {
			errs = append(errs, err)
			continue
		}
		f.installed[k] = r
		attrs := []any{"prefix", pfx.String(), "via", r.Via.String(), "dev", f.devName(r.Dev)}
		if r.Via != nh {
			attrs = append(attrs, "next_hop", nh.String())
		}
		f.log.Info("route installed", attrs...)
	}
	for p := range f.unresolved {
		if _, ok := want[p]; !ok {
			delete(f.unresolved, p)
		}
	}
	for k, r := range mine {
		if keep[k] {
			continue
		}
		if err := f.k.Delete(r); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(f.installed, k)
		f.log.Info("route withdrawn", "prefix", r.Prefix.String(), "via", r.Via.String(), "dev", f.devName(r.Dev))
	}
	for k, r := range f.installed {
		if _, ok := mine[k]; !ok && !keep[k] {
			delete(f.installed, k)
			f.log.Info("route withdrawn", "prefix", r.Prefix.String(), "via", r.Via.String(), "dev", f.devName(r.Dev), "by", "kernel")
		}
	}
	return errors.Join(errs...)
}

// flush deletes every proto-bgp route of the main table: at start (a
// crashed speaker's leftovers) and at exit.
func (f *fib) flush() error {
	cur, err := f.k.Routes()
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range cur {
		if r.Protocol != Protocol {
			continue
		}
		if err := f.k.Delete(r); err != nil {
			errs = append(errs, err)
			continue
		}
		f.log.Info("route withdrawn", "prefix", r.Prefix.String(), "via", r.Via.String(), "dev", f.devName(r.Dev))
	}
	clear(f.installed)
	return errors.Join(errs...)
}

func sortedPrefixes[V any](m map[netip.Prefix]V) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sortPrefixes(out)
	return out
}
