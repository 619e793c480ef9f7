// Package links is the kernel driver: it creates namespaces, veth pairs,
// bridges, addresses, routes, sysctls and /etc/netns files through netlink
// handles bound to each namespace, and observes them for converge.
package links

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"labctl/lab/netns"
	"labctl/lab/plan"
	"labctl/lab/topology"
)

// Driver applies kernel steps. It caches one netlink handle per namespace.
type Driver struct {
	mu      sync.Mutex
	handles map[string]*netlink.Handle
}

// New returns a driver; Close releases its handles.
func New() *Driver { return &Driver{handles: map[string]*netlink.Handle{}} }

// Close releases every cached handle.
func (d *Driver) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, h := range d.handles {
		h.Close()
	}
	d.handles = map[string]*netlink.Handle{}
}

func (d *Driver) handle(ns string) (*netlink.Handle, error) {
	d.mu.Lock()
	h := d.handles[ns]
	d.mu.Unlock()
	if h != nil {
		return h, nil
	}
	h, err := netns.Handle(ns)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if old := d.handles[ns]; old != nil {
		h.Close()
		return old, nil
	}
	d.handles[ns] = h
	return h, nil
}

func (d *Driver) forget(ns string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if h := d.handles[ns]; h != nil {
		h.Close()
		delete(d.handles, ns)
	}
}

// Apply carries out one step.
func (d *Driver) Apply(ctx context.Context, s plan.Step) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var err error
	switch s.Op {
	case plan.OpNetnsAdd:
		err = d.netnsAdd(s)
	case plan.OpNetnsDel:
		d.forget(s.NS)
		err = errors.Join(netns.Kill([]string{s.NS}, KillGrace), netns.Delete(s.NS), RemoveEtc(s.NS))
	case plan.OpVethAdd:
		err = d.vethAdd(s)
	case plan.OpLinkDel:
		err = d.linkDel(s)
	case plan.OpLinkSet:
		err = d.withLink(s.NS, s.Iface, func(h *netlink.Handle, l netlink.Link) error {
			if err := h.LinkSetMTU(l, s.MTU); err != nil {
				return err
			}
			return h.LinkSetUp(l)
		})
	case plan.OpBridgeAdd:
		err = d.bridgeAdd(s)
	case plan.OpPortAttach:
		err = d.portAttach(s)
	case plan.OpSysctlSet:
		err = netns.Do(s.NS, func() error { return WriteSysctl(s.Key, s.Value) })
	case plan.OpAddrAdd, plan.OpAddrDel:
		err = d.addr(s)
	case plan.OpRouteAdd, plan.OpRouteDel:
		err = d.route(s)
	case plan.OpFileWrite:
		err = writeEtc(s)
	case plan.OpFileDel:
		err = removeEtc(s)
	default:
		err = fmt.Errorf("links driver cannot apply %s", s.Op)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", s, err)
	}
	return nil
}

func (d *Driver) netnsAdd(s plan.Step) error {
	if err := netns.Create(s.NS); err != nil {
		return err
	}
	// Before any link exists, so that new interfaces inherit them. No
	// DAD: validation refuses duplicate addresses, and DAD on automatic
	// link-local addresses holds neighbour discovery back 1-2 s after up.
	if len(s.Sysctls) > 0 {
		err := netns.Do(s.NS, func() error {
			var errs []error
			for _, k := range sortedKeys(s.Sysctls) {
				errs = append(errs, WriteSysctl(k, s.Sysctls[k]))
			}
			return errors.Join(errs...)
		})
		if err != nil {
			return err
		}
	}
	h, err := d.handle(s.NS)
	if err != nil {
		return err
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := h.LinkAddAltName(lo, s.Mark); err != nil {
		return fmt.Errorf("mark lo: %w", err)
	}
	return h.LinkSetUp(lo)
}

// vethAdd creates the pair directly in its two namespaces (the pair never
// exists in the root namespace) and deletes it again if marking fails.
func (d *Driver) vethAdd(s plan.Step) (err error) {
	ha, err := d.handle(s.NS)
	if err != nil {
		return err
	}
	hb, err := d.handle(s.PeerNS)
	if err != nil {
		return err
	}
	peerNS, err := netns.Open(s.PeerNS)
	if err != nil {
		return err
	}
	defer peerNS.Close()
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: s.Iface, MTU: s.MTU, Flags: net.FlagUp},
		PeerName:      s.PeerIface,
		PeerMTU:       uint32(s.PeerMTU),
		PeerNamespace: netlink.NsFd(int(peerNS)),
	}
	if err := ha.LinkAdd(v); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			if l, e := ha.LinkByName(s.Iface); e == nil {
				ha.LinkDel(l)
			}
		}
	}()
	a, err := ha.LinkByName(s.Iface)
	if err != nil {
		return err
	}
	if err := ha.LinkAddAltName(a, s.Mark); err != nil {
		return fmt.Errorf("mark %s: %w", s.Iface, err)
	}
	b, err := hb.LinkByName(s.PeerIface)
	if err != nil {
		return err
	}
	if err := hb.LinkAddAltName(b, s.PeerMark); err != nil {
		return fmt.Errorf("mark %s: %w", s.PeerIface, err)
	}
	return hb.LinkSetUp(b)
}

func (d *Driver) linkDel(s plan.Step) error {
	err := d.withLink(s.NS, s.Iface, func(h *netlink.Handle, l netlink.Link) error { return h.LinkDel(l) })
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) || errors.Is(err, netns.ErrNotExist) {
		return nil
	}
	return err
}

func (d *Driver) bridgeAdd(s plan.Step) error {
	h, err := d.handle(s.NS)
	if err != nil {
		return err
	}
	if l, err := h.LinkByName(s.Iface); err == nil {
		if err := h.LinkDel(l); err != nil {
			return err
		}
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: s.Iface, Flags: net.FlagUp}}
	if err := h.LinkAdd(br); err != nil {
		return err
	}
	l, err := h.LinkByName(s.Iface)
	if err != nil {
		return err
	}
	if err := h.LinkAddAltName(l, s.Mark); err != nil {
		return err
	}
	return h.LinkSetUp(l)
}

func (d *Driver) portAttach(s plan.Step) error {
	h, err := d.handle(s.NS)
	if err != nil {
		return err
	}
	br, err := h.LinkByName(topology.BridgeName)
	if err != nil {
		return err
	}
	return d.withLink(s.NS, s.Iface, func(h *netlink.Handle, l netlink.Link) error { return h.LinkSetMaster(l, br) })
}

func (d *Driver) withLink(ns, name string, fn func(*netlink.Handle, netlink.Link) error) error {
	h, err := d.handle(ns)
	if err != nil {
		return err
	}
	l, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	return fn(h, l)
}

func (d *Driver) addr(s plan.Step) error {
	pr, err := netip.ParsePrefix(s.Addr)
	if err != nil {
		return err
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: pr.Addr().AsSlice(), Mask: net.CIDRMask(pr.Bits(), pr.Addr().BitLen())}}
	if pr.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD // usable at once; the lab checks duplicates itself
	}
	return d.withLink(s.NS, s.Iface, func(h *netlink.Handle, l netlink.Link) error {
		if s.Op == plan.OpAddrDel {
			err := h.AddrDel(l, a)
			if errors.Is(err, unix.EADDRNOTAVAIL) {
				return nil
			}
			return err
		}
		return h.AddrReplace(l, a)
	})
}

func (d *Driver) route(s plan.Step) error {
	h, err := d.handle(s.NS)
	if err != nil {
		return err
	}
	r, err := toNetlink(h, s.Route)
	if err != nil {
		return err
	}
	if s.Op == plan.OpRouteDel {
		err := h.RouteDel(r)
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return err
	}
	return h.RouteReplace(r)
}

func toNetlink(h *netlink.Handle, pr *plan.Route) (*netlink.Route, error) {
	dst, err := netip.ParsePrefix(pr.Dst)
	if err != nil {
		return nil, err
	}
	r := &netlink.Route{
		Dst:      &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())},
		Priority: pr.Metric,
		Protocol: plan.RouteProto,
		Family:   unix.AF_INET,
	}
	if dst.Addr().Is6() {
		r.Family = unix.AF_INET6
	}
	if pr.Via != "" {
		r.Gw = net.ParseIP(pr.Via)
	}
	if pr.Dev != "" {
		l, err := h.LinkByName(pr.Dev)
		if err != nil {
			return nil, err
		}
		r.LinkIndex = l.Attrs().Index
	}
	if pr.Via == "" {
		r.Scope = netlink.SCOPE_LINK
	}
	return r, nil
}

// KillGrace is how long processes get between SIGTERM and SIGKILL.
var KillGrace = 2 * time.Second

// WriteSysctl writes a net.* sysctl of the calling thread's namespace.
func WriteSysctl(key, value string) error {
	return os.WriteFile(sysctlPath(key), []byte(value), 0o644)
}

// ReadSysctl reads one, trimmed.
func ReadSysctl(key string) (string, error) {
	b, err := os.ReadFile(sysctlPath(key))
	return strings.TrimSpace(string(b)), err
}

func sysctlPath(key string) string { return "/proc/sys/" + strings.ReplaceAll(key, ".", "/") }

// Observe reads one namespace: its links with marks, global addresses,
// labctl's routes, the given sysctls and its /etc/netns files.
func (d *Driver) Observe(ns string, sysctls []string) (*plan.NSState, error) {
	h, err := d.handle(ns)
	if err != nil {
		return nil, err
	}
	st := &plan.NSState{Links: map[string]*plan.LinkState{}, Sysctls: map[string]string{}, Files: map[string]string{}}
	links, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	byIndex := map[int]string{}
	for _, l := range links {
		byIndex[l.Attrs().Index] = l.Attrs().Name
	}
	// One dump for every address of the namespace, not one per link.
	all, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	addrsOf := map[int][]netlink.Addr{}
	for _, a := range all {
		addrsOf[a.LinkIndex] = append(addrsOf[a.LinkIndex], a)
	}
	for _, l := range links {
		a := l.Attrs()
		ls := &plan.LinkState{Name: a.Name, Kind: l.Type(), Marks: a.AltNames, MTU: a.MTU, Up: a.Flags&net.FlagUp != 0}
		if a.MasterIndex != 0 {
			ls.Master = byIndex[a.MasterIndex]
		}
		for _, ad := range addrsOf[a.Index] {
			ip, ok := netip.AddrFromSlice(ad.IP)
			// Skip what the kernel puts there itself: link-local IPv6
			// addresses (validation refuses them in files) and lo's own.
			if !ok || ip.Is6() && ip.IsLinkLocalUnicast() || a.Name == "lo" && (ip == netip.MustParseAddr("127.0.0.1") || ip == netip.IPv6Loopback()) {
				continue
			}
			ones, _ := ad.Mask.Size()
			ls.Addrs = append(ls.Addrs, netip.PrefixFrom(ip.Unmap(), ones).String())
		}
		st.Links[a.Name] = ls
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: plan.RouteProto}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		st.Routes = append(st.Routes, fromNetlink(r, byIndex))
	}
	if len(sysctls) > 0 {
		err := netns.Do(ns, func() error {
			for _, k := range sysctls {
				if v, err := ReadSysctl(k); err == nil {
					st.Sysctls[k] = v
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	st.Files = readEtc(ns)
	return st, nil
}

func fromNetlink(r netlink.Route, byIndex map[int]string) plan.Route {
	out := plan.Route{Metric: r.Priority, Dev: byIndex[r.LinkIndex]}
	if r.Dst == nil {
		out.Dst = "0.0.0.0/0"
		if r.Family == unix.AF_INET6 {
			out.Dst = "::/0"
		}
	} else {
		ip, _ := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		out.Dst = netip.PrefixFrom(ip.Unmap(), ones).String()
	}
	if r.Gw != nil {
		out.Via = r.Gw.String()
	}
	if r.Family == unix.AF_INET6 && r.Priority == plan.IPv6DefaultMetric {
		out.Metric = 0 // the kernel's default for IPv6; the file writes 0
	}
	return out
}

// LabMarks lists the labs whose mark a namespace carries on lo.
func LabMarks(ns string) []string {
	h, err := netns.Handle(ns)
	if err != nil {
		return nil
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return nil
	}
	var out []string
	for _, a := range lo.Attrs().AltNames {
		if lab, ok := plan.LabOfNSMark(a); ok {
			out = append(out, lab)
		}
	}
	return out
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

// SetLinkUp sets one interface of a namespace administratively up or down
// (`labctl link down` cutting a cable, `up` mending it).
func SetLinkUp(ns, iface string, up bool) error {
	h, err := netns.Handle(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", ns, iface, err)
	}
	if up {
		err = h.LinkSetUp(l)
	} else {
		err = h.LinkSetDown(l)
	}
	if err != nil {
		return fmt.Errorf("%s: set %s %s: %w", ns, iface, map[bool]string{true: "up", false: "down"}[up], err)
	}
	return nil
}
