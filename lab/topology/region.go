package topology

// The cloud region (stages 1, 8 and 9 of docs/double11-story.md): compute hosts running
// Open vSwitch, VPCs with VXLAN IDs, VMs and virtual routers on those hosts.
//
// A topology declares them at the level a cloud user thinks in (a VM is in
// VPC shop, subnet az1, on host az1-h1); expand resolves that into what the
// engine builds: a veth from each VM interface to a port of its host's
// br-int, the VPC's local VLAN tag on that port, a VXLAN port with the VPC's
// VNI towards every other host with a member of the VPC, the subnet's
// gateway on each leg of the VPC's virtual router, and the two Open vSwitch
// daemons of every host.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// RunDir is where labctl keeps runtime state (state.Root); each ovs-host's
// Open vSwitch database and sockets live under RunDir/<lab>/ovs/<node>.
var RunDir = "/run/labctl"

// Open vSwitch names and numbers.
const (
	BrInt = "br-int" // VMs and virtual routers plug in here, one VLAN tag per VPC
	BrPhy = "br-phy" // the underlay NIC; the host's underlay IP sits on its internal port
	// VXLANOverhead is what VXLAN over IPv4 adds to a frame: outer
	// Ethernet 14, IPv4 20, UDP 8, VXLAN 8.
	VXLANOverhead = 50
	// RouterLegPrefix names a virtual router's leg into a subnet: qr-<subnet>.
	RouterLegPrefix = "qr-"
	// OVSDBService and VSwitchdService are the daemons of every ovs-host.
	OVSDBService    = "ovsdb-server"
	VSwitchdService = "ovs-vswitchd"
	// DefaultMTU is an interface's MTU when the file gives none.
	DefaultMTU = 1500
	// DefaultLegMTU is the MTU of a virtual router's legs.
	DefaultLegMTU = DefaultMTU
	maxSubnetName = MaxIfaceName - len(RouterLegPrefix)
	maxVNI        = 1<<24 - 1
	maxSocketPath = 107 // sun_path holds 108 bytes with the NUL
)

// VPC is a tenant's virtual network: one CIDR, one VXLAN ID, one subnet
// per availability zone.
type VPC struct {
	Tenant  string            `yaml:"tenant" json:"tenant"`
	CIDR    string            `yaml:"cidr" json:"cidr"`
	VNI     int               `yaml:"vni" json:"vni"`
	Subnets map[string]string `yaml:"subnets" json:"subnets"` // AZ name → CIDR

	Name string `yaml:"-" json:"-"`
}

// NAT is a 1:1 translation on a virtual router (a "floating IP"): traffic
// to Public goes to Private, and Private's own traffic leaves as Public.
type NAT struct {
	Public  string `yaml:"public" json:"public"`
	Private string `yaml:"private" json:"private"`
}

// OVS is an ovs-host's resolved switch configuration.
type OVS struct {
	Dir      string       `json:"dir"`                // database, sockets, pidfiles
	Datapath string       `json:"datapath,omitempty"` // "", "netdev" or "system"; "" picks by the kernel
	Bridges  []*OVSBridge `json:"bridges"`
}

// OVSBridge is one bridge. Addresses and MTU belong to its internal port
// (the interface named like the bridge): the addresses of the host NICs
// that are ports of this bridge move there.
type OVSBridge struct {
	Name      string     `json:"name"`
	MTU       int        `json:"mtu"`
	Addresses []string   `json:"addresses,omitempty"`
	Ports     []*OVSPort `json:"ports"`
}

// OVSPort is one port: a NIC, the host end of a VM's or router's veth, or
// a VXLAN tunnel.
type OVSPort struct {
	Name   string  `json:"name"`
	Tag    int     `json:"tag,omitempty"`  // local VLAN of the VPC on br-int
	VPC    string  `json:"vpc,omitempty"`  // the VPC the port belongs to
	Peer   string  `json:"peer,omitempty"` // node:iface at the far end of its veth
	Tunnel *Tunnel `json:"tunnel,omitempty"`
}

// Tunnel is a VXLAN port's far end.
type Tunnel struct {
	RemoteHost string `json:"remote_host"`
	Remote     string `json:"remote_ip"`
	Local      string `json:"local_ip"`
	VNI        int    `json:"vni"`
}

// Bridge returns the bridge of that name, or nil.
func (o *OVS) Bridge(name string) *OVSBridge {
	for _, b := range o.Bridges {
		if b.Name == name {
			return b
		}
	}
	return nil
}

// Hash identifies the configuration, so an unchanged switch is left alone
// on re-up.
func (o *OVS) Hash() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s|", o.Datapath)
	for _, br := range o.Bridges {
		fmt.Fprintf(&b, "%s %d %v|", br.Name, br.MTU, br.Addresses)
		for _, p := range br.Ports {
			fmt.Fprintf(&b, "%s %d %s %s", p.Name, p.Tag, p.VPC, p.Peer)
			if t := p.Tunnel; t != nil {
				fmt.Fprintf(&b, " %s %s %s %d", t.RemoteHost, t.Remote, t.Local, t.VNI)
			}
			b.WriteByte(';')
		}
	}
	h := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(h[:8])
}

// OVSDir is an ovs-host's Open vSwitch directory.
func OVSDir(lab, node string) string { return filepath.Join(RunDir, lab, "ovs", node) }

// SubnetGateway is the address a VPC subnet's router holds: the first host
// address, as clouds do.
func SubnetGateway(cidr string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(p.Masked().Addr().Next(), p.Bits()), nil
}

// VPCNames returns the VPC names sorted; a VPC's local VLAN tag on every
// br-int is its position in this list plus one.
func (t *Topology) VPCNames() []string { return sortedKeys(t.VPCs) }

// vpcTag is the VLAN tag of VPC v on every host's br-int.
func (t *Topology) vpcTag(v string) int { return slices.Index(t.VPCNames(), v) + 1 }

// region checks the cloud declarations, after the links and before the
// checks that need the topology expanded.
func (c *checker) region() {
	t := c.t
	vnis := map[int]string{}
	for _, name := range t.VPCNames() {
		v := t.VPCs[name]
		p := path{"vpcs", name}
		if v == nil {
			c.add(p, "vpc has no settings (tenant, cidr, vni, subnets)")
			continue
		}
		v.Name = name
		if !nameRe.MatchString(name) {
			c.addAtKey(p, "vpc name %q must be lowercase letters, digits and inner dashes", name)
		}
		if v.Tenant == "" {
			c.add(p.with("tenant"), "missing tenant (who owns the VPC)")
		}
		cidr, err := netip.ParsePrefix(v.CIDR)
		switch {
		case err != nil || !cidr.Addr().Is4():
			c.add(p.with("cidr"), "%q is not an IPv4 CIDR", v.CIDR)
		case cidr.Masked() != cidr:
			c.add(p.with("cidr"), "%q has host bits set; did you mean %s?", v.CIDR, cidr.Masked())
		}
		switch {
		case v.VNI < 1 || v.VNI > maxVNI:
			c.add(p.with("vni"), "vni %d is outside 1..%d (24 bits)", v.VNI, maxVNI)
		case vnis[v.VNI] != "":
			c.add(p.with("vni"), "vni %d is already the VXLAN ID of vpc %s", v.VNI, vnis[v.VNI])
		default:
			vnis[v.VNI] = name
		}
		if len(v.Subnets) == 0 {
			c.add(p.with("subnets"), "a vpc needs at least one subnet (az-name: cidr)")
		}
		var seen []netip.Prefix
		for _, az := range sortedKeys(v.Subnets) {
			sp := p.with("subnets", az)
			if len(az) > maxSubnetName || !nameRe.MatchString(az) {
				c.addAtKey(sp, "subnet name %q must be at most %d lowercase letters, digits and dashes (it names the router leg %s%s)", az, maxSubnetName, RouterLegPrefix, az)
			}
			s, err := netip.ParsePrefix(v.Subnets[az])
			switch {
			case err != nil || !s.Addr().Is4():
				c.add(sp, "%q is not an IPv4 CIDR", v.Subnets[az])
				continue
			case s.Masked() != s:
				c.add(sp, "%q has host bits set; did you mean %s?", v.Subnets[az], s.Masked())
				continue
			case s.Bits() > 29:
				c.add(sp, "subnet %s is too small: it needs a gateway and hosts (/29 or larger)", s)
				continue
			case cidr.IsValid() && (!cidr.Contains(s.Addr()) || s.Bits() < cidr.Bits()):
				c.add(sp, "subnet %s is not inside the vpc's cidr %s", s, cidr)
			}
			for _, o := range seen {
				if o.Overlaps(s) {
					c.add(sp, "subnet %s overlaps subnet %s of the same vpc", s, o)
				}
			}
			seen = append(seen, s)
		}
	}
	for _, name := range t.NodeNames() {
		c.regionNode(name, t.Nodes[name])
	}
}

func (c *checker) regionNode(name string, n *Node) {
	t := c.t
	p := path{"nodes", name}
	kind, _ := KindOf(n.Kind)
	if !kind.Attached {
		for field, set := range map[string]bool{"host": n.Host != "", "vpc": n.VPC != "", "subnet": n.Subnet != "", "nat": len(n.NAT) > 0, "snat": n.SNAT != ""} {
			if set {
				c.add(p.with(field), "%s applies to vm and vrouter nodes, not %s", field, n.Kind)
			}
		}
	}
	if kind.Attached && n.Kind != "vrouter" {
		if len(n.NAT) > 0 {
			c.add(p.with("nat"), "nat applies to vrouter nodes (the VPC's gateway)")
		}
		if n.SNAT != "" {
			c.add(p.with("snat"), "snat applies to vrouter nodes (the VPC's gateway)")
		}
	}
	if !kind.OVS && n.Datapath != "" {
		c.add(p.with("datapath"), "datapath applies to ovs-host nodes")
	}
	if !kind.OVS && !kind.Attached {
		for _, ifn := range sortedKeys(n.Interfaces) {
			if ifc := n.Interfaces[ifn]; ifc != nil && ifc.Bridge != "" {
				c.add(p.with("interfaces", ifn, "bridge"), "bridge applies to interfaces of ovs-host, vm and vrouter nodes")
			}
		}
	}
	if kind.OVS {
		switch n.Datapath {
		case "", "auto", "netdev", "system":
		default:
			c.add(p.with("datapath"), "unknown datapath %q (auto, netdev or system)", n.Datapath)
		}
		for _, s := range []string{OVSDBService, VSwitchdService} {
			if _, ok := n.Services[s]; ok {
				c.addAtKey(p.with("services", s), "%s is started by labctl on every ovs-host; name the service otherwise", s)
			}
		}
		if l := len(OVSDir(t.Name, name)) + len("/ovs-vswitchd.12345678.ctl"); l > maxSocketPath {
			c.add(p, "the Open vSwitch socket path for this host would be %d bytes (Unix sockets allow %d): shorten the lab or node name", l, maxSocketPath)
		}
		for _, ifn := range sortedKeys(n.Interfaces) {
			ifc := n.Interfaces[ifn]
			if ifc == nil || ifc.Bridge == "" {
				continue
			}
			bp := p.with("interfaces", ifn, "bridge")
			c.ifaceName(bp, ifc.Bridge)
			if ifc.Bridge == BrInt {
				c.add(bp, "%s is where VMs and routers plug in; a NIC joins %s or another bridge", BrInt, BrPhy)
			}
		}
		for i, r := range n.Routes {
			if r != nil && r.Dev != "" {
				c.add(p.with("routes", i, "dev"), "routes of an ovs-host go through its bridges; give via instead of dev")
			}
		}
	}
	if !kind.Attached {
		return
	}
	host, ok := t.Nodes[n.Host]
	hk, _ := KindOf(hostKind(host))
	switch {
	case n.Host == "":
		c.add(p.with("host"), "missing host (the ovs-host this %s runs on)", n.Kind)
	case !ok:
		c.add(p.with("host"), "no node named %q", n.Host)
	case !hk.OVS:
		c.add(p.with("host"), "host %s is a %s, not an ovs-host", n.Host, host.Kind)
	}
	vpc, ok := t.VPCs[n.VPC]
	switch {
	case len(t.VPCs) == 0:
		c.add(p.with("vpc"), "no vpcs are declared: add a vpcs: section (name, tenant, cidr, vni, subnets)")
		return
	case n.VPC == "":
		c.add(p.with("vpc"), "missing vpc (one of %s)", strings.Join(t.VPCNames(), ", "))
		return
	case !ok || vpc == nil:
		c.add(p.with("vpc"), "no vpc named %q (vpcs: %s)", n.VPC, strings.Join(t.VPCNames(), ", "))
		return
	}
	hostBridges := map[string]bool{BrInt: true, BrPhy: true}
	if host != nil {
		for _, hi := range host.Interfaces {
			hostBridges[nicBridge(hi)] = true
		}
	}
	if n.Kind == "vm" {
		subnet, ok := vpc.Subnets[n.Subnet]
		switch {
		case n.Subnet == "":
			c.add(p.with("subnet"), "missing subnet (one of %s)", strings.Join(sortedKeys(vpc.Subnets), ", "))
			return
		case !ok:
			c.add(p.with("subnet"), "vpc %s has no subnet %q (subnets: %s)", n.VPC, n.Subnet, strings.Join(sortedKeys(vpc.Subnets), ", "))
			return
		}
		sp, _ := netip.ParsePrefix(subnet)
		gw, _ := SubnetGateway(subnet)
		attached := 0
		for _, ifn := range sortedKeys(n.Interfaces) {
			ifc := n.Interfaces[ifn]
			if ifn == "lo" || ifc == nil || t.hasEndpoint(name, ifn) {
				continue
			}
			ip := p.with("interfaces", ifn)
			if !hostBridges[bridgeOf(ifc)] {
				c.add(ip.with("bridge"), "host %s has no bridge %q (its bridges: %s)", n.Host, ifc.Bridge, strings.Join(sortedKeys(hostBridges), ", "))
			}
			if bridgeOf(ifc) != BrInt {
				continue
			}
			attached++
			for i, a := range ifc.Addresses {
				pr, err := netip.ParsePrefix(a)
				if err != nil || !pr.Addr().Is4() {
					continue
				}
				switch {
				case sp.Contains(pr.Addr()) && pr.Bits() != sp.Bits():
					c.add(ip.with("addresses", i), "%s has the wrong prefix length for subnet %s %s: write %s", a, n.Subnet, sp, netip.PrefixFrom(pr.Addr(), sp.Bits()))
				case pr.Masked() != sp:
					c.add(ip.with("addresses", i), "%s is not in subnet %s %s of vpc %s (write it as an address in %s)", a, n.Subnet, sp, n.VPC, sp)
				case pr.Addr() == gw.Addr():
					c.add(ip.with("addresses", i), "%s is the gateway of subnet %s, held by the vpc's router", pr.Addr(), n.Subnet)
				}
			}
		}
		if attached == 0 {
			c.add(p.with("interfaces"), "a vm needs an interface in its vpc (like eth0: {addresses: [%s]})", hostIn(subnet))
		}
	} else {
		if n.Subnet != "" {
			c.add(p.with("subnet"), "a vrouter has a leg in every subnet of its vpc; subnet applies to vms")
		}
		for _, az := range sortedKeys(vpc.Subnets) {
			if _, ok := n.Interfaces[RouterLegPrefix+az]; ok {
				c.addAtKey(p.with("interfaces", RouterLegPrefix+az), "%s%s is the router's leg in subnet %s, made by labctl; name the interface otherwise", RouterLegPrefix, az, az)
			}
		}
		for _, ifn := range sortedKeys(n.Interfaces) {
			ifc := n.Interfaces[ifn]
			if ifn == "lo" || ifc == nil || strings.HasPrefix(ifn, RouterLegPrefix) || t.hasEndpoint(name, ifn) {
				continue
			}
			bp := p.with("interfaces", ifn, "bridge")
			switch {
			case bridgeOf(ifc) == BrInt:
				c.add(p.with("interfaces", ifn), "a vrouter's legs in its vpc are made by labctl; an extra interface needs a link or bridge: (a bridge of host %s, like br-ex)", n.Host)
			case !hostBridges[ifc.Bridge]:
				c.add(bp, "host %s has no bridge %q (its bridges: %s)", n.Host, ifc.Bridge, strings.Join(sortedKeys(hostBridges), ", "))
			}
		}
		c.nat(p, n, vpc)
	}
}

// nat checks a vrouter's translations: public addresses on its outside,
// private ones in its VPC.
func (c *checker) nat(p path, n *Node, vpc *VPC) {
	cidr, _ := netip.ParsePrefix(vpc.CIDR)
	outside := func(a netip.Addr) bool {
		for ifn, ifc := range n.Interfaces {
			if ifc == nil || strings.HasPrefix(ifn, RouterLegPrefix) {
				continue
			}
			for _, s := range ifc.Addresses {
				if pr, err := netip.ParsePrefix(s); err == nil && pr.Masked().Contains(a) {
					return true
				}
			}
		}
		return false
	}
	seen := map[netip.Addr]int{}
	for i, x := range n.NAT {
		np := p.with("nat", i)
		if x == nil {
			c.add(np, "a nat entry needs public and private")
			continue
		}
		pub, err := netip.ParseAddr(x.Public)
		switch {
		case err != nil || !pub.Is4():
			c.add(np.with("public"), "%q is not an IPv4 address", x.Public)
		case !outside(pub):
			c.add(np.with("public"), "%s is in no subnet of the router's outside interfaces", pub)
		case ownAddr(n, pub):
			c.add(np.with("public"), "%s is the router's own address; a public IP for a vm needs one of its own", pub)
		default:
			if j, dup := seen[pub]; dup {
				c.add(np.with("public"), "%s is already translated by nat[%d]", pub, j)
			}
			seen[pub] = i
		}
		priv, err := netip.ParseAddr(x.Private)
		switch {
		case err != nil || !priv.Is4():
			c.add(np.with("private"), "%q is not an IPv4 address", x.Private)
		case !cidr.Contains(priv):
			c.add(np.with("private"), "%s is not in vpc %s (%s)", priv, vpc.Name, cidr)
		default:
			in := ""
			for _, az := range sortedKeys(vpc.Subnets) {
				if s, err := netip.ParsePrefix(vpc.Subnets[az]); err == nil && s.Contains(priv) {
					in = az
					if gw, _ := SubnetGateway(vpc.Subnets[az]); gw.Addr() == priv {
						c.add(np.with("private"), "%s is the gateway of subnet %s (the router itself), not a vm", priv, az)
					}
				}
			}
			if in == "" {
				c.add(np.with("private"), "%s is in no subnet of vpc %s", priv, vpc.Name)
			}
		}
	}
	if n.SNAT != "" {
		a, err := netip.ParseAddr(n.SNAT)
		switch {
		case err != nil || !a.Is4():
			c.add(p.with("snat"), "%q is not an IPv4 address", n.SNAT)
		case !outside(a):
			c.add(p.with("snat"), "%s is in no subnet of the router's outside interfaces", a)
		}
	}
}

// ownAddr reports whether a is written on one of n's interfaces.
func ownAddr(n *Node, a netip.Addr) bool {
	for _, ifc := range n.Interfaces {
		if ifc != nil && hasAddr(ifc.Addresses, a) {
			return true
		}
	}
	return false
}

// underlay checks what VXLAN needs from the hosts of each VPC that spans
// several: an IPv4 address on br-phy, and an underlay MTU that fits the
// VPC's frames plus the 50 bytes of VXLAN.
func (c *checker) underlay() {
	t := c.t
	members := t.vpcMembers()
	for _, v := range t.VPCNames() {
		hosts := sortedKeys(members[v])
		if len(hosts) < 2 {
			continue
		}
		for _, h := range hosts {
			hn := t.Nodes[h]
			if _, ok := underlayIP(hn); !ok {
				c.add(path{"nodes", h, "interfaces"}, "host %s carries vpc %s to other hosts over VXLAN and needs an IPv4 address on a %s NIC (its underlay)", h, v, BrPhy)
				continue
			}
			mtu := underlayMTU(t, h)
			for _, m := range members[v][h] {
				if t.Nodes[m].Kind == "vrouter" && DefaultLegMTU+VXLANOverhead > mtu {
					c.add(path{"nodes", m, "host"}, "the router's legs (mtu %d) need an underlay mtu of %d on host %s (VXLAN adds %d bytes) but its %s NICs have %d",
						DefaultLegMTU, DefaultLegMTU+VXLANOverhead, h, VXLANOverhead, BrPhy, mtu)
				}
				for _, ifn := range sortedKeys(t.Nodes[m].Interfaces) {
					ifc := t.Nodes[m].Interfaces[ifn]
					if ifc == nil || ifn == "lo" || bridgeOf(ifc) != BrInt || t.hasEndpoint(m, ifn) {
						continue
					}
					want := ifc.MTU
					if want == 0 {
						want = DefaultMTU
					}
					if want+VXLANOverhead > mtu {
						c.add(path{"nodes", m, "interfaces", ifn}, "mtu %d needs an underlay mtu of %d on host %s (VXLAN adds %d bytes) but its %s NICs have %d: raise the underlay mtu or set this interface's mtu to %d",
							want, want+VXLANOverhead, h, VXLANOverhead, BrPhy, mtu, mtu-VXLANOverhead)
					}
				}
			}
		}
	}
}

// vpcMembers maps VPC → host → the vm and vrouter nodes on it.
func (t *Topology) vpcMembers() map[string]map[string][]string {
	out := map[string]map[string][]string{}
	for _, name := range t.NodeNames() {
		n := t.Nodes[name]
		if k, _ := KindOf(n.Kind); !k.Attached {
			continue
		}
		if out[n.VPC] == nil {
			out[n.VPC] = map[string][]string{}
		}
		out[n.VPC][n.Host] = append(out[n.VPC][n.Host], name)
	}
	return out
}

// routerOf returns the vrouter of a VPC, or "".
func (t *Topology) routerOf(vpc string) string {
	for _, name := range t.NodeNames() {
		if n := t.Nodes[name]; n.Kind == "vrouter" && n.VPC == vpc {
			return name
		}
	}
	return ""
}

func hostKind(n *Node) string {
	if n == nil {
		return ""
	}
	return n.Kind
}

// bridgeOf is the host bridge a vm or vrouter interface plugs into.
func bridgeOf(ifc *Interface) string {
	if ifc.Bridge != "" {
		return ifc.Bridge
	}
	return BrInt
}

// nicBridge is the OVS bridge an ovs-host NIC is a port of.
func nicBridge(ifc *Interface) string {
	if ifc == nil || ifc.Bridge == "" {
		return BrPhy
	}
	return ifc.Bridge
}

// underlayIP is an ovs-host's first IPv4 address on a br-phy NIC.
func underlayIP(n *Node) (netip.Addr, bool) {
	for _, ifn := range sortedKeys(n.Interfaces) {
		ifc := n.Interfaces[ifn]
		if ifc == nil || nicBridge(ifc) != BrPhy {
			continue
		}
		for _, a := range ifc.Addresses {
			if pr, err := netip.ParsePrefix(a); err == nil && pr.Addr().Is4() {
				return pr.Addr(), true
			}
		}
	}
	return netip.Addr{}, false
}

// nic is one linked NIC of an ovs-host: its settings and its MTU.
type nic struct {
	ifc *Interface // nil when the file declares no settings for it
	mtu int
}

// hostNICs lists the linked NICs of host that are ports of bridge.
func hostNICs(t *Topology, host, bridge string) []nic {
	var out []nic
	for _, l := range t.Links {
		a, b := l.Ends()
		for _, e := range []Endpoint{a, b} {
			if e.Node != host {
				continue
			}
			ifc := t.Nodes[host].Interfaces[e.Iface]
			if nicBridge(ifc) != bridge {
				continue
			}
			m := l.MTU
			if ifc != nil && ifc.MTU != 0 {
				m = ifc.MTU
			}
			if m == 0 {
				m = DefaultMTU
			}
			out = append(out, nic{ifc, m})
		}
	}
	return out
}

// underlayMTU is the smallest MTU of an ovs-host's br-phy NICs.
func underlayMTU(t *Topology, host string) int {
	mtu := 0
	for _, n := range hostNICs(t, host, BrPhy) {
		if mtu == 0 || n.mtu < mtu {
			mtu = n.mtu
		}
	}
	if mtu == 0 {
		mtu = DefaultMTU
	}
	return mtu
}

// hostIn suggests an address for a VM in cidr: the one after the gateway.
func hostIn(cidr string) string {
	gw, err := SubnetGateway(cidr)
	if err != nil {
		return "ADDRESS/LEN"
	}
	return netip.PrefixFrom(gw.Addr().Next(), gw.Bits()).String()
}

// portName names the host end of an attached node's veth: readable when
// it fits in 15 bytes, otherwise shortened with a hash that keeps it unique.
func portName(node, iface string) string {
	n := node + "-" + iface
	if len(n) <= MaxIfaceName {
		return n
	}
	h := sha256.Sum256([]byte(node + ":" + iface))
	suffix := "-" + hex.EncodeToString(h[:2])
	keep := MaxIfaceName - len(suffix)
	return n[:keep] + suffix
}

// expand resolves the cloud declarations into links, addresses, routes,
// services and each ovs-host's OVS configuration. It runs once, on a
// topology whose region checks passed.
func (t *Topology) expand() {
	if t.expanded {
		return
	}
	t.expanded = true
	attached := false
	for _, n := range t.Nodes {
		if k, _ := KindOf(n.Kind); k.OVS || k.Attached {
			attached = true
		}
	}
	if !attached {
		return
	}
	hostPorts := map[string]map[string][]*OVSPort{} // host → bridge → ports
	addPort := func(host, bridge string, p *OVSPort) {
		if hostPorts[host] == nil {
			hostPorts[host] = map[string][]*OVSPort{}
		}
		hostPorts[host][bridge] = append(hostPorts[host][bridge], p)
	}
	// NICs of the hosts, from the links written in the file.
	for _, l := range t.Links {
		a, b := l.Ends()
		for _, e := range []Endpoint{a, b} {
			if k, _ := KindOf(t.Nodes[e.Node].Kind); k.OVS {
				addPort(e.Node, nicBridge(t.Nodes[e.Node].Interfaces[e.Iface]), &OVSPort{Name: e.Iface})
			}
		}
	}
	plug := func(node, iface string, ifc *Interface, bridge, vpc string) {
		n := t.Nodes[node]
		port := portName(node, iface)
		t.Links = append(t.Links, &Link{Endpoints: []string{node + ":" + iface, n.Host + ":" + port}, MTU: ifc.MTU})
		p := &OVSPort{Name: port, Peer: node + ":" + iface}
		if bridge == BrInt {
			p.Tag, p.VPC = t.vpcTag(vpc), vpc
		}
		addPort(n.Host, bridge, p)
	}
	for _, name := range t.NodeNames() {
		n := t.Nodes[name]
		if k, _ := KindOf(n.Kind); !k.Attached {
			continue
		}
		vpc := t.VPCs[n.VPC]
		var unlinked []string
		for _, ifn := range sortedKeys(n.Interfaces) {
			if ifn != "lo" && n.Interfaces[ifn] != nil && !t.hasEndpoint(name, ifn) {
				unlinked = append(unlinked, ifn)
			}
		}
		if n.Kind == "vrouter" {
			if n.Interfaces == nil {
				n.Interfaces = map[string]*Interface{}
			}
			for _, az := range sortedKeys(vpc.Subnets) {
				gw, _ := SubnetGateway(vpc.Subnets[az])
				ifc := &Interface{Addresses: []string{gw.String()}}
				n.Interfaces[RouterLegPrefix+az] = ifc
				plug(name, RouterLegPrefix+az, ifc, BrInt, n.VPC)
			}
			// Public addresses answer on the outside interface that holds
			// their subnet, as /32s next to its own address.
			for _, x := range n.NAT {
				pub := netip.MustParseAddr(x.Public)
				for _, ifn := range sortedKeys(n.Interfaces) {
					ifc := n.Interfaces[ifn]
					if ifc != nil && !strings.HasPrefix(ifn, RouterLegPrefix) && containsAddr(ifc.Addresses, pub) {
						if a := netip.PrefixFrom(pub, 32).String(); !hasAddr(ifc.Addresses, pub) {
							ifc.Addresses = append(ifc.Addresses, a)
						}
						break
					}
				}
			}
		}
		for _, ifn := range unlinked {
			ifc := n.Interfaces[ifn]
			plug(name, ifn, ifc, bridgeOf(ifc), n.VPC)
		}
		if n.Kind == "vm" {
			r := t.routerOf(n.VPC)
			if r != "" && !hasDefault(n.Routes) {
				gw, _ := SubnetGateway(vpc.Subnets[n.Subnet])
				n.Routes = append(n.Routes, &Route{To: "default", Via: gw.Addr().String()})
			}
		}
	}
	// Tunnels: every host with a member of a VPC gets a VXLAN port with the
	// VPC's VNI towards every other such host. Tunnel ports are protected:
	// a frame from one tunnel is never flooded into another (split horizon,
	// which keeps the full mesh loop-free).
	members := t.vpcMembers()
	hosts := []string{}
	for _, name := range t.NodeNames() {
		if k, _ := KindOf(t.Nodes[name].Kind); k.OVS {
			hosts = append(hosts, name)
		}
	}
	for _, h := range hosts {
		local, _ := underlayIP(t.Nodes[h])
		for _, v := range t.VPCNames() {
			if len(members[v][h]) == 0 {
				continue
			}
			for i, r := range hosts {
				if r == h || len(members[v][r]) == 0 {
					continue
				}
				remote, _ := underlayIP(t.Nodes[r])
				addPort(h, BrInt, &OVSPort{Name: fmt.Sprintf("vx%d.%d", t.VPCs[v].VNI, i), Tag: t.vpcTag(v), VPC: v,
					Tunnel: &Tunnel{RemoteHost: r, Remote: remote.String(), Local: local.String(), VNI: t.VPCs[v].VNI}})
			}
		}
	}
	for _, h := range hosts {
		n := t.Nodes[h]
		o := &OVS{Dir: OVSDir(t.Name, h)}
		if n.Datapath != "auto" {
			o.Datapath = n.Datapath
		}
		bridges := []string{BrPhy, BrInt}
		for br := range hostPorts[h] {
			if !slices.Contains(bridges, br) {
				bridges = append(bridges, br)
			}
		}
		sort.Strings(bridges[2:])
		for _, br := range bridges {
			b := &OVSBridge{Name: br, Ports: hostPorts[h][br]}
			if br != BrInt {
				b.MTU, b.Addresses = nicSettings(t, h, br)
			}
			o.Bridges = append(o.Bridges, b)
		}
		n.OVS = o
		if n.Services == nil {
			n.Services = map[string]*Service{}
		}
		env := map[string]string{"OVS_RUNDIR": o.Dir, "OVS_DBDIR": o.Dir, "OVS_LOGDIR": o.Dir}
		n.Services[OVSDBService] = &Service{Early: true, Env: env,
			Command: []string{"labctl", "serve", "ovsdb", "--dir", o.Dir},
			Ready:   &Ready{File: filepath.Join(o.Dir, "db.sock")}}
		n.Services[VSwitchdService] = &Service{Early: true, Env: env, After: []string{OVSDBService},
			Command: []string{"ovs-vswitchd", "unix:" + filepath.Join(o.Dir, "db.sock"), "--pidfile", "--no-chdir", "-vconsole:info"},
			Ready:   &Ready{File: filepath.Join(o.Dir, "ovs-vswitchd.pid")}}
	}
}

// nicSettings returns the MTU (the largest of the bridge's NICs) and the
// addresses (all of them) for a host bridge's internal port.
func nicSettings(t *Topology, host, bridge string) (int, []string) {
	mtu := DefaultMTU
	var addrs []string
	for i, n := range hostNICs(t, host, bridge) {
		if i == 0 || n.mtu > mtu {
			mtu = n.mtu
		}
		if n.ifc != nil {
			addrs = append(addrs, n.ifc.Addresses...)
		}
	}
	return mtu, addrs
}

func containsAddr(addrs []string, a netip.Addr) bool {
	for _, s := range addrs {
		if p, err := netip.ParsePrefix(s); err == nil && p.Masked().Contains(a) {
			return true
		}
	}
	return false
}

func hasAddr(addrs []string, a netip.Addr) bool {
	for _, s := range addrs {
		if p, err := netip.ParsePrefix(s); err == nil && p.Addr() == a {
			return true
		}
	}
	return false
}

func hasDefault(rs []*Route) bool {
	for _, r := range rs {
		if r != nil && r.To == "default" {
			return true
		}
	}
	return false
}
