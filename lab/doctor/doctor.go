// Package doctor checks that this machine can build labs. Kernel features
// are tried for real inside a throwaway network namespace (netns.Temp), so a
// check passes only if the feature works, and nothing is left on the host.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"labctl/lab/nat"
	"labctl/lab/netns"
	"labctl/lab/ovs"

	"labctl/lab/serve"
)

// Check is one probed feature or program.
type Check struct {
	Name     string `json:"name"`
	Group    string `json:"group"` // "system", "kernel" or "binaries"
	OK       bool   `json:"ok"`
	Required bool   `json:"required"` // false: only later features need it
	Detail   string `json:"detail"`
	Fix      string `json:"fix,omitempty"`
}

// checkTimeout bounds each check; a probe still running then is abandoned
// (whatever it made lives in its own namespace, which goes with it).
var checkTimeout = 5 * time.Second

// lookPath finds a program; a variable so tests can fake a missing one.
var lookPath = findBinary

// probe is a check's fixed fields plus the function that fills the rest.
// run returns nil when the feature works; it may set Detail and Fix.
type probe struct {
	Check
	run func(ctx context.Context, c *Check) error
}

// Run performs every check concurrently and returns them in a fixed order,
// grouped: system, kernel, binaries.
func Run(ctx context.Context) []Check {
	probes := append(systemProbes(), kernelProbes()...)
	probes = append(probes, partProbes()...)
	for _, b := range binaries {
		probes = append(probes, b.probe())
	}
	out := make([]Check, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = bounded(ctx, p)
		}()
	}
	wg.Wait()
	return out
}

// bounded runs one probe under checkTimeout (and ctx).
func bounded(ctx context.Context, p probe) Check {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	type result struct {
		c   Check
		err error
	}
	done := make(chan result, 1)
	go func() {
		c := p.Check // the probe's own copy: it may outlive us
		err := p.run(ctx, &c)
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		c := r.c
		c.OK = r.err == nil
		switch {
		case c.OK:
			c.Fix = ""
		case errors.Is(r.err, unix.EPERM):
			c.Fix = "sudo labctl doctor" // the feature may well be there
		}
		if !c.OK && c.Detail == "" {
			c.Detail = explain(r.err)
		}
		return c
	case <-ctx.Done():
		c := p.Check
		c.Detail = "not finished: " + ctx.Err().Error()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			c.Detail = "timed out: no answer within the check's time limit"
		}
		return c
	}
}

// explain turns an error into Detail text, hinting at root for EPERM.
func explain(err error) string {
	s := err.Error()
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		s += " (labctl needs root)"
	}
	return s
}

func systemProbes() []probe {
	return []probe{{
		Check: Check{Name: "root", Group: "system", Required: true, Fix: "sudo labctl doctor"},
		run: func(_ context.Context, c *Check) error {
			if uid := os.Geteuid(); uid != 0 {
				c.Detail = fmt.Sprintf("running as uid %d: namespaces, links and qdiscs need root", uid)
				return errors.New("not root")
			}
			c.Detail = "running as root"
			return nil
		},
	}}
}

// Link names of the probes; they only ever exist inside a temp namespace.
const (
	vethA = "ldoc-v0"
	vethB = "ldoc-v1"
)

func kernelProbes() []probe {
	k := func(name string, required bool, fix string, run func(context.Context, *Check) error) probe {
		return probe{Check: Check{Name: name, Group: "kernel", Required: required, Fix: fix}, run: run}
	}
	return []probe{
		k("netns", true, "", probeNetns),
		k("veth", true, "modprobe veth", inTemp(func(h *netlink.Handle, c *Check) error {
			if _, err := addVeth(h); err != nil {
				return err
			}
			c.Detail = "veth pair created"
			return nil
		})),
		k("bridge", true, "modprobe bridge", inTemp(probeBridge)),
		k("vxlan", true, "modprobe vxlan", inTemp(probeVxlan)),
		k("macvlan", false, "modprobe macvlan", inTemp(probeMacvlan)),
		k("tbf", false, "modprobe sch_tbf", inTemp(probeTbf)),
		k("netem", false, "modprobe sch_netem", inTemp(probeNetem)),
		k("nat", false, "apt-get install -y iptables", probeNAT),
		k("openvswitch", false, "", inTemp(probeOVS, unix.NETLINK_GENERIC)),
		k("ipv6", false, "", inTemp(probeIPv6)),
	}
}

// inTemp adapts a netlink probe to run inside a fresh namespace, with a
// handle bound to it. Everything the probe creates dies with the namespace.
func inTemp(fn func(h *netlink.Handle, c *Check) error, families ...int) func(context.Context, *Check) error {
	return func(_ context.Context, c *Check) error {
		return netns.Temp(func() error {
			h, err := netlink.NewHandle(families...)
			if err != nil {
				return fmt.Errorf("netlink: %w", err)
			}
			defer h.Close()
			// Netlink calls ignore ctx; this keeps them from blocking forever.
			if err := h.SetSocketTimeout(checkTimeout); err != nil {
				return err
			}
			return fn(h, c)
		})
	}
}

func probeNetns(_ context.Context, c *Check) error {
	host, err := nsInode("/proc/thread-self/ns/net")
	if err != nil {
		return err
	}
	var inner uint64
	err = netns.Temp(func() error {
		inner, err = nsInode("/proc/thread-self/ns/net")
		return err
	})
	if err != nil {
		return err
	}
	if inner == host {
		return errors.New("unshare left the thread in the host namespace")
	}
	c.Detail = "throwaway namespace created and dropped"
	return nil
}

func nsInode(p string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// addVeth makes the veth pair most probes build on and returns the first end.
func addVeth(h *netlink.Handle) (netlink.Link, error) {
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: vethA}, PeerName: vethB}); err != nil {
		return nil, fmt.Errorf("add veth: %w", err)
	}
	l, err := h.LinkByName(vethA)
	if err != nil {
		return nil, err
	}
	if err := h.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("set veth up: %w", err)
	}
	return l, nil
}

func probeBridge(h *netlink.Handle, c *Check) error {
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "ldoc-br"}}); err != nil {
		return fmt.Errorf("add bridge: %w", err)
	}
	br, err := h.LinkByName("ldoc-br")
	if err != nil {
		return err
	}
	v, err := addVeth(h)
	if err != nil {
		return err
	}
	if err := h.LinkSetMaster(v, br); err != nil {
		return fmt.Errorf("attach veth to bridge: %w", err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("set bridge up: %w", err)
	}
	c.Detail = "Linux bridge created, veth attached"
	return nil
}

func probeVxlan(h *netlink.Handle, c *Check) error {
	// No remote and an unconfigured local address: nothing is ever sent.
	vx := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: "ldoc-vx"},
		VxlanId:   42,
		Port:      4789,
		SrcAddr:   net.ParseIP("192.0.2.1"),
	}
	if err := h.LinkAdd(vx); err != nil {
		return fmt.Errorf("add vxlan: %w", err)
	}
	l, err := h.LinkByName("ldoc-vx")
	if err != nil {
		return err
	}
	got, ok := l.(*netlink.Vxlan)
	if !ok || got.VxlanId != 42 {
		return fmt.Errorf("vxlan read back as %T", l)
	}
	if err := h.LinkSetUp(l); err != nil { // binds the UDP port
		return fmt.Errorf("set vxlan up: %w", err)
	}
	c.Detail = "kernel VXLAN device (VNI 42, UDP 4789) created"
	return nil
}

func probeMacvlan(h *netlink.Handle, c *Check) error {
	v, err := addVeth(h)
	if err != nil {
		return err
	}
	mv := &netlink.Macvlan{
		LinkAttrs: netlink.LinkAttrs{Name: "ldoc-mv", ParentIndex: v.Attrs().Index},
		Mode:      netlink.MACVLAN_MODE_BRIDGE,
	}
	if err := h.LinkAdd(mv); err != nil {
		return fmt.Errorf("add macvlan: %w", err)
	}
	c.Detail = "macvlan (bridge mode) created on a veth"
	return nil
}

func probeTbf(h *netlink.Handle, c *Check) error {
	v, err := addVeth(h)
	if err != nil {
		return err
	}
	q := &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: v.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT},
		Rate:       131072, // bytes/s, about 1 Mbit/s
		Limit:      1220703,
		Buffer:     16793,
	}
	if err := h.QdiscAdd(q); err != nil {
		c.Detail = fmt.Sprintf("tc tbf qdisc refused (%v)", err)
		return err
	}
	c.Detail = "tc tbf qdisc works (rate limits)"
	return nil
}

func probeNetem(h *netlink.Handle, c *Check) error {
	v, err := addVeth(h)
	if err != nil {
		return err
	}
	q := netlink.NewNetem(
		netlink.QdiscAttrs{LinkIndex: v.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT},
		netlink.NetemQdiscAttrs{Latency: 10000, Loss: 1},
	)
	if err := h.QdiscAdd(q); err != nil {
		c.Detail = netemMissing(err)
		return err
	}
	c.Detail = "netem qdisc works (delay and loss)"
	return nil
}

// netemMissing says what the absence of netem means.
func netemMissing(err error) string {
	return fmt.Sprintf("no netem here (%v): links cannot be given delay and loss with tc netem", err)
}

// probeNAT lists and extends the nat table inside a throwaway namespace
// (nat.Probe: lab/nat is the one package that runs iptables).
func probeNAT(ctx context.Context, c *Check) error {
	ipt, err := lookPath("iptables")
	if err != nil {
		c.Detail = "iptables not found: NAT gateways cannot be built"
		return err
	}
	backend, err := nat.Probe(ctx, ipt)
	if backend == "" {
		backend = "unknown backend"
	}
	legacy := strings.Contains(backend, "legacy")
	if err != nil {
		c.Detail = backend + ": " + explain(err)
		c.Fix = "modprobe nft_chain_nat nft_masq"
		if legacy {
			c.Fix = "modprobe iptable_nat xt_MASQUERADE"
		}
		return err
	}
	c.Detail = backend + ": nat table and MASQUERADE work"
	return nil
}

// probeOVS passes whichever datapath there is (without the kernel one,
// labctl runs OVS in userspace) and reports which one will be used.
// It asks the same question ovs-hosts are built by, so it says exactly
// what `up` will choose.
func probeOVS(_ *netlink.Handle, c *Check) error {
	if ovs.KernelDatapath() {
		c.Detail = "kernel datapath: ovs-hosts use datapath_type=system"
		return nil
	}
	c.Detail = "no kernel datapath: userspace datapath (datapath_type=netdev) will be used"
	return nil
}

func probeIPv6(_ *netlink.Handle, c *Check) error {
	// Read from inside the temp namespace: that is what a lab node gets.
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		c.Detail = "kernel has no IPv6 (booted with ipv6.disable=1?): IPv6 addresses in topologies will fail"
		c.Fix = "remove ipv6.disable=1 from the kernel command line and reboot"
		return err
	}
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/default/disable_ipv6")
	if err == nil && strings.TrimSpace(string(b)) == "1" {
		c.Detail = "IPv6 is disabled by default in new namespaces"
		c.Fix = "sysctl -w net.ipv6.conf.default.disable_ipv6=0 net.ipv6.conf.all.disable_ipv6=0"
		return errors.New("ipv6 disabled")
	}
	c.Detail = "IPv6 enabled in new namespaces"
	return nil
}

// binary is a program labctl runs and the Debian package that ships it.
type binary struct {
	name, pkg string
	required  bool
	why       string // what breaks without it
}

const (
	laterStages = "used by labctl order and the docs' examples"
	region      = "needed by cloud region labs (ovs-host, vm, vrouter)"
	orderPath   = "needed by the order path (topologies/double11.yaml, the default lab)"
)

var binaries = []binary{
	{"ip", "iproute2", true, "needed for ip netns exec"},
	{"tcpdump", "tcpdump", true, "needed for capture"},
	{"ethtool", "ethtool", false, "to look at the offloads labctl sets (it sets them itself)"},
	{"iptables", "iptables", false, region},
	{"nft", "nftables", false, "to read the NAT rules iptables (nf_tables) writes"},
	{"conntrack", "conntrack", false, "to read NAT translations (docs/stage-2-bgp.md)"},
	{"ovs-vsctl", "openvswitch-switch", false, region},
	{"ovsdb-server", "openvswitch-switch", false, region},
	{"ovs-vswitchd", "openvswitch-switch", false, region},
	{"ovsdb-tool", "openvswitch-switch", false, region},
	{"haproxy", "haproxy", false, orderPath},
	{"etcd", "etcd-server", false, orderPath},
	{"redis-server", "redis-server", false, orderPath},
	{filepath.Join(serve.PostgresBin, "postgres"), "postgresql", false, orderPath},
	{filepath.Join(serve.PostgresBin, "pg_basebackup"), "postgresql", false, orderPath},
	{"curl", "curl", false, laterStages},
	{"ping", "iputils-ping", false, laterStages},
}

func (b binary) probe() probe {
	return probe{
		Check: Check{Name: b.name, Group: "binaries", Required: b.required, Fix: "apt-get install -y " + b.pkg},
		run: func(ctx context.Context, c *Check) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			p, err := lookPath(b.name)
			if err != nil {
				c.Detail = "not found; " + b.why
				return err
			}
			c.Detail = p
			return nil
		},
	}
}

// findBinary is exec.LookPath plus the sbin directories, which a non-root
// PATH on Debian lacks although ip, iptables and ovs-vswitchd live there.
func findBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
}
