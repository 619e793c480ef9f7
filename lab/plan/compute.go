package plan

import (
	"context"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

	"labctl/lab/nat"
	"labctl/lab/topology"
)

// EtcNetns is where per-namespace resolv.conf and hosts live (iproute2's
// `ip netns exec` bind-mounts them over /etc).
var EtcNetns = "/etc/netns"

// DefaultMTU is the MTU of a link with none given.
const DefaultMTU = topology.DefaultMTU

// Link kinds as netlink reports them (LinkState.Kind).
const (
	LinkVeth   = "veth"
	LinkBridge = "bridge"
)

// Observed is what exists now of a lab: its namespaces (only those the lab
// owns) and its services.
type Observed struct {
	Namespaces map[string]*NSState     `json:"namespaces"`
	Services   map[string]ServiceState `json:"services"` // key "node/service"
	// Cut holds the ends ("node:iface") of links cut on purpose (`labctl
	// link down`): the plan keeps them down and adds nothing that needs
	// them up — the addresses and routes the kernel dropped with them.
	Cut map[string]bool `json:"cut,omitempty"`
}

// NSState is one namespace as seen through netlink and /proc/sys.
type NSState struct {
	Links   map[string]*LinkState `json:"links"`
	Routes  []Route               `json:"routes"`  // only RouteProto routes
	Sysctls map[string]string     `json:"sysctls"` // the keys asked for
	Files   map[string]string     `json:"files"`   // resolv.conf, hosts
	// OVSHash is the configuration hash an ovs-host's switch reports ("" if
	// its daemons do not answer).
	OVSHash string `json:"ovs_hash,omitempty"`
	// NAT is the lab's NAT rules in the namespace (read for nodes with NAT).
	NAT []nat.Rule `json:"nat,omitempty"`
	// Parts is what each lab part observed in the namespace (PartState).
	Parts map[string]string `json:"parts,omitempty"`
}

// LinkState is one interface.
type LinkState struct {
	Name   string   `json:"name"`
	Kind   string   `json:"kind"`
	Marks  []string `json:"marks,omitempty"`
	MTU    int      `json:"mtu"`
	Up     bool     `json:"up"`
	Master string   `json:"master,omitempty"`
	Addrs  []string `json:"addrs,omitempty"` // global addresses, CIDR
}

// HasMark reports whether the link carries the altname m.
func (l *LinkState) HasMark(m string) bool {
	for _, x := range l.Marks {
		if x == m {
			return true
		}
	}
	return false
}

// ServiceState is a service as recorded and found running.
type ServiceState struct {
	PID   int    `json:"pid"`
	Hash  string `json:"hash"`
	Alive bool   `json:"alive"`
}

// desiredLink is one end of a link as the topology wants it.
type desiredLink struct {
	node, iface         string
	peerNode, peerIface string
	mtu                 int
	addrs               []string
}

// Compute plans the steps that take obs to the topology t. A nil obs is
// an empty world (what `labctl plan` shows).
func Compute(t *topology.Topology, obs *Observed) *Plan {
	p, _ := ComputeContext(context.Background(), t, obs)
	return p
}

// ComputeContext is Compute that stops with ctx's error between phases
// (each is linear in the lab), so a signal ends the plan of a huge lab
// promptly.
func ComputeContext(ctx context.Context, t *topology.Topology, obs *Observed) (*Plan, error) {
	if obs == nil {
		obs = &Observed{}
	}
	p := &Plan{Lab: t.Name, File: t.File, Nodes: len(t.Nodes), Links: len(t.Links)}
	add := func(s Step) { p.Steps = append(p.Steps, s) }
	nsOf := func(node string) string { return topology.Namespace(t.Name, node) }
	names := t.NodeNames()

	// Interfaces wanted, per node.
	ends := map[string]map[string]*desiredLink{}
	for _, n := range names {
		ends[n] = map[string]*desiredLink{}
	}
	for _, l := range t.Links {
		a, b := l.Ends()
		for _, pair := range [][2]topology.Endpoint{{a, b}, {b, a}} {
			me, peer := pair[0], pair[1]
			d := &desiredLink{node: me.Node, iface: me.Iface, peerNode: peer.Node, peerIface: peer.Iface, mtu: l.MTU}
			n := t.Nodes[me.Node]
			if ifc := n.Interfaces[me.Iface]; ifc != nil {
				if ifc.MTU != 0 {
					d.mtu = ifc.MTU
				}
				// An ovs-host's NIC is a switch port: its addresses sit
				// on the internal port of its bridge instead.
				if k, _ := topology.KindOf(n.Kind); !k.OVS {
					for _, a := range ifc.Addresses {
						d.addrs = append(d.addrs, normAddr(a))
					}
				}
			}
			if d.mtu == 0 {
				d.mtu = DefaultMTU
			}
			ends[me.Node][me.Iface] = d
		}
	}

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Services to stop: gone from the file, changed, or dead.
	wantSvc := map[string]string{}
	for _, n := range names {
		for sn, s := range t.Nodes[n].Services {
			wantSvc[n+"/"+sn] = ServiceHash(s)
		}
	}
	for _, key := range sortedKeys(obs.Services) {
		st := obs.Services[key]
		node, svc, _ := strings.Cut(key, "/")
		h, want := wantSvc[key]
		switch {
		case !want:
			add(Step{Phase: PhaseStop, Op: OpServiceStop, Node: node, NS: nsOf(node), Svc: svc, Reason: "removed"})
		case h != st.Hash && st.Alive:
			add(Step{Phase: PhaseStop, Op: OpServiceStop, Node: node, NS: nsOf(node), Svc: svc, Reason: "changed"})
		case st.Alive && obs.Namespaces[nsOf(node)] == nil:
			add(Step{Phase: PhaseStop, Op: OpServiceStop, Node: node, NS: nsOf(node), Svc: svc, Reason: "namespace gone"})
		}
	}

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Namespaces the lab owns but no longer wants.
	wantNS := map[string]bool{}
	for _, n := range names {
		wantNS[nsOf(n)] = true
	}
	for _, ns := range sortedKeys(obs.Namespaces) {
		if !wantNS[ns] {
			add(Step{Phase: PhasePrune, Op: OpNetnsDel, NS: ns, Reason: "removed"})
		}
	}

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Links: a pair is intact when both ends exist with each other's mark.
	intact := func(d *desiredLink) bool {
		me, peer := obs.Namespaces[nsOf(d.node)], obs.Namespaces[nsOf(d.peerNode)]
		if me == nil || peer == nil {
			return false
		}
		a, b := me.Links[d.iface], peer.Links[d.peerIface]
		return a != nil && b != nil && a.Kind == LinkVeth && b.Kind == LinkVeth &&
			a.HasMark(Mark(t.Name, d.peerNode, d.peerIface)) && b.HasMark(Mark(t.Name, d.node, d.iface))
	}
	for _, n := range names {
		st := obs.Namespaces[nsOf(n)]
		if st == nil {
			continue
		}
		for _, ifn := range sortedKeys(st.Links) {
			l := st.Links[ifn]
			d := ends[n][ifn]
			var why string
			switch {
			case ifn == "lo":
				continue
			case d == nil && ifn == topology.BridgeName && isBridgeNode(t, n) && l.Kind == LinkBridge:
				continue
			case d == nil && !hasPrefixMark(l, MarkPrefix(t.Name)):
				continue // not made by this lab: leave it alone
			case d == nil:
				why = "removed"
			case !intact(d):
				why = "rewired"
			default:
				continue
			}
			add(Step{Phase: PhasePrune, Op: OpLinkDel, Node: n, NS: nsOf(n), Iface: ifn, Reason: why})
		}
	}

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Namespaces to create.
	for _, n := range names {
		if obs.Namespaces[nsOf(n)] == nil {
			add(Step{Phase: PhaseNamespaces, Op: OpNetnsAdd, Node: n, NS: nsOf(n), Mark: NSMark(t.Name), Sysctls: EarlySysctls(t.Nodes[n])})
		}
	}

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Links to create (each pair once, from its first endpoint).
	fresh := map[string]bool{}
	for _, l := range t.Links {
		a, b := l.Ends()
		d := ends[a.Node][a.Iface]
		if intact(d) {
			continue
		}
		fresh[a.String()], fresh[b.String()] = true, true
		add(Step{Phase: PhaseLinks, Op: OpVethAdd,
			Node: a.Node, NS: nsOf(a.Node), Iface: a.Iface, Mark: Mark(t.Name, b.Node, b.Iface), MTU: d.mtu, PeerMTU: ends[b.Node][b.Iface].mtu,
			PeerNode: b.Node, PeerNS: nsOf(b.Node), PeerIface: b.Iface, PeerMark: Mark(t.Name, a.Node, a.Iface)})
	}
	// A recreated pair comes up new, whatever was cut before.
	cut := func(node, iface string) bool { return obs.Cut[node+":"+iface] && !fresh[node+":"+iface] }
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Existing links whose MTU or state drifted.
	for _, n := range names {
		st := obs.Namespaces[nsOf(n)]
		for _, ifn := range sortedKeys(ends[n]) {
			d := ends[n][ifn]
			if fresh[n+":"+ifn] || st == nil || cut(n, ifn) {
				continue
			}
			if l := st.Links[ifn]; l != nil && (l.MTU != d.mtu || !l.Up) {
				add(Step{Phase: PhaseLinks, Op: OpLinkSet, Node: n, NS: nsOf(n), Iface: ifn, MTU: d.mtu})
			}
		}
	}

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Every interface that sends into an Open vSwitch port (a VM's NIC, a
	// router's leg, the far end of a host's NIC) computes its checksums
	// itself: a veth leaves them to "hardware", the userspace datapath never
	// fills them in, and TCP is dropped while ping works.
	for _, l := range t.Links {
		a, b := l.Ends()
		for _, pair := range [][2]topology.Endpoint{{a, b}, {b, a}} {
			me, peer := pair[0], pair[1]
			if k, _ := topology.KindOf(t.Nodes[peer.Node].Kind); k.OVS && fresh[me.String()] {
				add(Step{Phase: PhaseOffloads, Op: OpTxOff, Node: me.Node, NS: nsOf(me.Node), Iface: me.Iface})
			}
		}
	}

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Open vSwitch: the daemons of each ovs-host, then its configuration.
	stopped := map[string]bool{}
	for _, s := range p.Steps {
		if s.Op == OpServiceStop {
			stopped[s.Node+"/"+s.Svc] = true
		}
	}
	startNeeded := func(key string) bool {
		node, _, _ := strings.Cut(key, "/")
		st, ok := obs.Services[key]
		return !ok || !st.Alive || stopped[key] || obs.Namespaces[nsOf(node)] == nil
	}
	ovsStarted := map[string]bool{}
	for _, key := range ServiceOrder(t) {
		node, svc, _ := strings.Cut(key, "/")
		if t.Nodes[node].Services[svc].Early && startNeeded(key) {
			ovsStarted[node] = true
			add(Step{Phase: PhaseOVS, Op: OpServiceStart, Node: node, NS: nsOf(node), Svc: svc})
		}
	}
	for _, n := range names {
		o := t.Nodes[n].OVS
		if o == nil {
			continue
		}
		st := obs.Namespaces[nsOf(n)]
		var ports []string
		for _, b := range o.Bridges {
			for _, pt := range b.Ports {
				if fresh[n+":"+pt.Name] && st != nil {
					ports = append(ports, pt.Name)
				}
			}
		}
		internalDown := false
		for _, b := range o.Bridges {
			if st != nil && (st.Links[b.Name] == nil || !st.Links[b.Name].Up || b.Name != topology.BrInt && st.Links[b.Name].MTU != b.MTU) {
				internalDown = true
			}
		}
		h := o.Hash()
		if st == nil || ovsStarted[n] || st.OVSHash != h || len(ports) > 0 || internalDown {
			add(Step{Phase: PhaseOVS, Op: OpOVSConfig, Node: n, NS: nsOf(n), OVS: o, Value: h, Ports: ports})
		}
	}

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Bridges of switch nodes and their ports.
	for _, n := range names {
		if !isBridgeNode(t, n) {
			continue
		}
		st := obs.Namespaces[nsOf(n)]
		var br *LinkState
		if st != nil {
			br = st.Links[topology.BridgeName]
		}
		if br == nil || br.Kind != "bridge" {
			add(Step{Phase: PhaseBridges, Op: OpBridgeAdd, Node: n, NS: nsOf(n), Iface: topology.BridgeName, Mark: BridgeMark(t.Name)})
		}
		for _, ifn := range sortedKeys(ends[n]) {
			if !fresh[n+":"+ifn] && st != nil && st.Links[ifn] != nil && st.Links[ifn].Master == topology.BridgeName {
				continue
			}
			add(Step{Phase: PhaseBridges, Op: OpPortAttach, Node: n, NS: nsOf(n), Iface: ifn})
		}
	}

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Sysctls.
	for _, n := range names {
		st := obs.Namespaces[nsOf(n)]
		want := NodeSysctls(t.Nodes[n])
		early := map[string]string{}
		if st == nil {
			early = EarlySysctls(t.Nodes[n]) // set with the namespace
		}
		for _, k := range sortedKeys(want) {
			if st != nil && st.Sysctls[k] == want[k] && !ifaceSysctlFresh(k, n, fresh) {
				continue
			}
			if v, ok := early[k]; ok && v == want[k] {
				continue
			}
			add(Step{Phase: PhaseSysctls, Op: OpSysctlSet, Node: n, NS: nsOf(n), Key: k, Value: want[k]})
		}
	}

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Addresses (lo included when configured).
	for _, n := range names {
		st := obs.Namespaces[nsOf(n)]
		ifaces := map[string][]string{}
		for ifn, d := range ends[n] {
			ifaces[ifn] = d.addrs
		}
		if o := t.Nodes[n].OVS; o != nil {
			for _, b := range o.Bridges {
				ifaces[b.Name] = []string{} // a bridge without addresses keeps none
				for _, a := range b.Addresses {
					ifaces[b.Name] = append(ifaces[b.Name], normAddr(a))
				}
			}
		}
		ifaces["lo"] = nil // lo's global addresses are the lab's: dropped from the file, they go
		if lo := t.Nodes[n].Interfaces["lo"]; lo != nil {
			for _, a := range lo.Addresses {
				ifaces["lo"] = append(ifaces["lo"], normAddr(a))
			}
		}
		for _, ifn := range sortedKeys(ifaces) {
			have := map[string]bool{}
			if st != nil && st.Links[ifn] != nil && !fresh[n+":"+ifn] {
				for _, a := range st.Links[ifn].Addrs {
					have[a] = true
				}
			}
			want := map[string]bool{}
			for _, a := range ifaces[ifn] {
				want[a] = true
			}
			for _, a := range sortedKeys(have) {
				if !want[a] {
					add(Step{Phase: PhaseAddresses, Op: OpAddrDel, Node: n, NS: nsOf(n), Iface: ifn, Addr: a})
				}
			}
			for _, a := range ifaces[ifn] {
				if !have[a] && !cut(n, ifn) {
					add(Step{Phase: PhaseAddresses, Op: OpAddrAdd, Node: n, NS: nsOf(n), Iface: ifn, Addr: a})
				}
			}
		}
	}

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Routes (only labctl's own protocol is compared).
	lostAddr := map[string]bool{}
	for _, s := range p.Steps {
		if s.Op == OpAddrDel {
			lostAddr[s.Node] = true
		}
	}
	for _, n := range names {
		st := obs.Namespaces[nsOf(n)]
		var want []Route
		for _, r := range t.Nodes[n].Routes {
			dst, _ := topology.ParseRouteDst(r.To)
			metric := r.Metric
			if dst.Addr().Is6() && metric == IPv6DefaultMetric {
				metric = 0 // the kernel's default, which observation reports as 0
			}
			want = append(want, Route{Dst: dst.String(), Via: r.Via, Dev: r.Dev, Metric: metric})
		}
		var have []Route
		if st != nil {
			have = st.Routes
		}
		for _, h := range have {
			if !containsRoute(want, h) {
				add(Step{Phase: PhaseRoutes, Op: OpRouteDel, Node: n, NS: nsOf(n), Route: &h})
			}
		}
		for i := range want {
			// A route whose device was just recreated is gone with it, and
			// removing an address makes the kernel drop the routes through
			// its subnet: those are installed again.
			if containsRoute(have, want[i]) && !routeDevFresh(have, want[i], n, fresh) && !lostAddr[n] {
				continue
			}
			if ifn := routeDev(ends[n], want[i]); ifn != "" && cut(n, ifn) {
				continue // the kernel refuses it until the link is mended
			}
			add(Step{Phase: PhaseRoutes, Op: OpRouteAdd, Node: n, NS: nsOf(n), Route: &want[i]})
		}
	}

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// NAT rules, compared as a whole per node.
	for _, n := range names {
		want := NATRules(t, t.Nodes[n])
		var have []nat.Rule
		if st := obs.Namespaces[nsOf(n)]; st != nil {
			have = st.NAT
		}
		if !slices.EqualFunc(want, have, nat.Rule.Equal) {
			add(Step{Phase: PhaseNAT, Op: OpNATSync, Node: n, NS: nsOf(n), Mark: NSMark(t.Name), NAT: want})
		}
	}

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Files under /etc/netns/<ns>/.
	for _, n := range names {
		st := obs.Namespaces[nsOf(n)]
		want := NodeFiles(t.Nodes[n])
		var have map[string]string
		if st != nil {
			have = st.Files
		}
		for _, f := range sortedKeys(have) {
			if _, ok := want[f]; !ok {
				add(Step{Phase: PhaseFiles, Op: OpFileDel, Node: n, NS: nsOf(n), Path: filepath.Join(EtcNetns, nsOf(n), f)})
			}
		}
		for _, f := range sortedKeys(want) {
			if have[f] != want[f] {
				add(Step{Phase: PhaseFiles, Op: OpFileWrite, Node: n, NS: nsOf(n), Path: filepath.Join(EtcNetns, nsOf(n), f), Data: want[f]})
			}
		}
	}

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Services to start, in dependency order.
	for _, key := range ServiceOrder(t) {
		node, svc, _ := strings.Cut(key, "/")
		if t.Nodes[node].Services[svc].Early || !startNeeded(key) {
			continue
		}
		add(Step{Phase: PhaseServices, Op: OpServiceStart, Node: node, NS: nsOf(node), Svc: svc})
	}
	partSteps(p, t, obs)
	return p, nil
}

// routeDev is the interface a route leaves by: the one it names, else the
// one whose subnet holds its gateway ("" when neither is known).
func routeDev(ends map[string]*desiredLink, r Route) string {
	if r.Dev != "" {
		return r.Dev
	}
	via, err := netip.ParseAddr(r.Via)
	if err != nil {
		return ""
	}
	for _, ifn := range sortedKeys(ends) {
		for _, a := range ends[ifn].addrs {
			if p, err := netip.ParsePrefix(a); err == nil && p.Contains(via) {
				return ifn
			}
		}
	}
	return ""
}

func routeDevFresh(have []Route, r Route, node string, fresh map[string]bool) bool {
	for _, h := range have {
		if h.Dst == r.Dst && sameIP(h.Via, r.Via) && h.Metric == r.Metric && fresh[node+":"+h.Dev] {
			return true
		}
	}
	return false
}

// containsRoute matches by destination, gateway and metric, and by device
// only where the wanted route names one (the kernel picks it otherwise).
func containsRoute(list []Route, r Route) bool {
	for _, x := range list {
		if x.Dst == r.Dst && sameIP(x.Via, r.Via) && x.Metric == r.Metric && (r.Dev == "" || x.Dev == "" || x.Dev == r.Dev) {
			return true
		}
	}
	return false
}

func sameIP(a, b string) bool {
	x, e1 := netip.ParseAddr(a)
	y, e2 := netip.ParseAddr(b)
	if e1 != nil || e2 != nil {
		return a == b
	}
	return x == y
}

func isBridgeNode(t *topology.Topology, n string) bool {
	k, _ := topology.KindOf(t.Nodes[n].Kind)
	return k.Bridge
}

func hasPrefixMark(l *LinkState, prefix string) bool {
	for _, m := range l.Marks {
		if strings.HasPrefix(m, prefix) {
			return true
		}
	}
	return false
}

// ServiceOrder returns every service as "node/svc" so that each comes after
// the services it waits for (ties broken by name). The topology must be
// valid (no cycles).
func ServiceOrder(t *topology.Topology) []string {
	var all []string
	deps := map[string][]string{}
	for _, n := range t.NodeNames() {
		for _, sn := range sortedKeys(t.Nodes[n].Services) {
			key := n + "/" + sn
			all = append(all, key)
			for _, d := range t.Nodes[n].Services[sn].After {
				dn, ds := topology.SplitServiceRef(n, d)
				deps[key] = append(deps[key], dn+"/"+ds)
			}
		}
	}
	done := map[string]bool{}
	var out []string
	var visit func(string)
	visit = func(k string) {
		if done[k] {
			return
		}
		done[k] = true
		for _, d := range deps[k] {
			visit(d)
		}
		out = append(out, k)
	}
	for _, k := range all {
		visit(k)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// ifaceSysctlFresh reports a per-interface sysctl (net.ipv6.conf.IF.x) of
// an interface this plan recreates: its old value goes with the old link.
func ifaceSysctlFresh(key, node string, fresh map[string]bool) bool {
	parts := strings.Split(key, ".")
	return len(parts) >= 5 && parts[2] == "conf" && fresh[node+":"+parts[3]]
}
