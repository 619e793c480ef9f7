package bgp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Protocol and Metric mark the routes a speaker installs: proto bgp (186,
// RTPROT_BGP, as zebra uses) with metric 20.
const (
	Protocol = unix.RTPROT_BGP
	Metric   = 20
)

// KernelRoute is one IPv4 route of the main table.
type KernelRoute struct {
	Prefix   netip.Prefix
	Via      netip.Addr // invalid when the route has no gateway
	Dev      int        // ifindex
	Protocol int
	Metric   int
}

func (r KernelRoute) String() string {
	s := r.Prefix.String()
	if r.Via.IsValid() {
		s += " via " + r.Via.String()
	}
	return fmt.Sprintf("%s dev %d proto %d metric %d", s, r.Dev, r.Protocol, r.Metric)
}

// Link is one interface of the speaker's namespace.
type Link struct {
	Index int
	Name  string
	// Up means administratively up with carrier (IFF_UP and IFF_LOWER_UP).
	Up bool
	// Addrs are the interface's IPv4 addresses with their prefix lengths
	// (10.0.1.1/24): each names a connected subnet.
	Addrs []netip.Prefix
}

// Kernel is what a speaker needs of the kernel of its namespace.
type Kernel interface {
	// Routes lists the IPv4 routes of the main table, of every protocol.
	Routes() ([]KernelRoute, error)
	// Replace installs r, replacing a route with the same prefix and metric.
	Replace(r KernelRoute) error
	// Delete removes the route with r's prefix, metric and protocol.
	Delete(r KernelRoute) error
	// Resolve looks up the route to a BGP next hop: the gateway to use
	// (invalid if the next hop is on a connected subnet) and the device.
	// ok is false when the kernel has no usable route to it.
	Resolve(nexthop netip.Addr) (gw netip.Addr, dev int, ok bool)
	// Links lists the interfaces with their state and IPv4 addresses.
	Links() ([]Link, error)
	// Watch sends on the returned channel (coalescing) whenever a link or
	// an address changes, until ctx is done.
	Watch(ctx context.Context) (<-chan struct{}, error)
}

// NetlinkKernel is the Kernel of the calling process's network namespace
// (a speaker runs inside its router's namespace).
func NetlinkKernel() Kernel { return nlKernel{} }

type nlKernel struct{}

// retry repeats a netlink dump interrupted by a concurrent change.
func retry[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range 5 {
		if v, err = f(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

func (nlKernel) Routes() ([]KernelRoute, error) {
	rs, err := retry(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	out := make([]KernelRoute, 0, len(rs))
	for _, r := range rs {
		out = append(out, fromNetlink(r))
	}
	return out, nil
}

func fromNetlink(r netlink.Route) KernelRoute {
	kr := KernelRoute{Prefix: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Dev: r.LinkIndex, Protocol: int(r.Protocol), Metric: r.Priority}
	if r.Dst != nil {
		if a, ok := netip.AddrFromSlice(r.Dst.IP); ok {
			ones, _ := r.Dst.Mask.Size()
			kr.Prefix = netip.PrefixFrom(a.Unmap(), ones)
		}
	}
	gw := r.Gw
	if gw == nil && len(r.MultiPath) > 0 {
		gw, kr.Dev = r.MultiPath[0].Gw, r.MultiPath[0].LinkIndex
	}
	if a, ok := netip.AddrFromSlice(gw); ok {
		kr.Via = a.Unmap()
	}
	return kr
}

func toNetlink(r KernelRoute) *netlink.Route {
	p := r.Prefix.Masked()
	nr := &netlink.Route{
		Dst:      &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		Protocol: netlink.RouteProtocol(r.Protocol),
		Priority: r.Metric,
		Table:    unix.RT_TABLE_MAIN,
	}
	return nr
}

func (nlKernel) Replace(r KernelRoute) error {
	nr := toNetlink(r)
	nr.LinkIndex = r.Dev
	nr.Scope = netlink.SCOPE_UNIVERSE
	nr.Type = unix.RTN_UNICAST
	if r.Via.IsValid() {
		nr.Gw = r.Via.AsSlice()
	} else {
		nr.Scope = netlink.SCOPE_LINK
	}
	if err := netlink.RouteReplace(nr); err != nil {
		return fmt.Errorf("replace route %s: %w", r, err)
	}
	return nil
}

func (nlKernel) Delete(r KernelRoute) error {
	err := netlink.RouteDel(toNetlink(r))
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("delete route %s: %w", r, err)
	}
	return nil
}

func (nlKernel) Resolve(nh netip.Addr) (netip.Addr, int, bool) {
	if !nh.Is4() {
		return netip.Addr{}, 0, false
	}
	rs, err := netlink.RouteGet(nh.AsSlice())
	if err != nil || len(rs) == 0 {
		return netip.Addr{}, 0, false
	}
	r := rs[0]
	if r.Type == unix.RTN_LOCAL || r.Type == unix.RTN_BROADCAST || r.Type == unix.RTN_MULTICAST {
		return netip.Addr{}, 0, false // our own address: no next hop
	}
	kr := fromNetlink(r)
	if kr.Dev == 0 {
		return netip.Addr{}, 0, false
	}
	return kr.Via, kr.Dev, true
}

func (nlKernel) Links() ([]Link, error) {
	ls, err := retry(netlink.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	as, err := retry(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	addrs := map[int][]netip.Prefix{}
	for _, a := range as {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		addrs[a.LinkIndex] = append(addrs[a.LinkIndex], netip.PrefixFrom(ip.Unmap(), ones))
	}
	out := make([]Link, 0, len(ls))
	for _, l := range ls {
		at := l.Attrs()
		out = append(out, Link{
			Index: at.Index,
			Name:  at.Name,
			Up:    at.RawFlags&unix.IFF_UP != 0 && at.RawFlags&unix.IFF_LOWER_UP != 0,
			Addrs: addrs[at.Index],
		})
	}
	return out, nil
}

func (nlKernel) Watch(ctx context.Context) (<-chan struct{}, error) {
	out := make(chan struct{}, 1)
	kick := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	done := make(chan struct{})
	lch := make(chan netlink.LinkUpdate, 64)
	ach := make(chan netlink.AddrUpdate, 64)
	if err := netlink.LinkSubscribeWithOptions(lch, done, netlink.LinkSubscribeOptions{ErrorCallback: func(error) { kick() }}); err != nil {
		close(done)
		return nil, fmt.Errorf("subscribe to links: %w", err)
	}
	if err := netlink.AddrSubscribeWithOptions(ach, done, netlink.AddrSubscribeOptions{ErrorCallback: func(error) { kick() }}); err != nil {
		close(done)
		for range lch {
		}
		return nil, fmt.Errorf("subscribe to addresses: %w", err)
	}
	go func() { <-ctx.Done(); close(done) }()
	// netlink closes each channel once done is closed (or its socket
	// fails); read both to the end so its goroutines never block.
	go func() {
		for range lch {
			kick()
		}
	}()
	go func() {
		for range ach {
			kick()
		}
	}()
	return out, nil
}
