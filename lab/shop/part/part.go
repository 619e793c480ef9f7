package part

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"

	"labctl/lab/shop/app"
	"labctl/lab/topology"
)

// Part is the shop lab part. Its methods are the registry's optional
// interfaces; lab/parts registers it.
type Part struct{}

// Name is the part's registry key.
func (Part) Name() string { return "shop" }

// Stage is the story stage it recreates.
func (Part) Stage() string {
	return "stages 5-10: the shop's order path (SLBs, controllers, order, inventory and coupon services, registry, caches, database)"
}

// Blocks declares the top-level shop block.
func (Part) Blocks() []topology.Block {
	return []topology.Block{{Name: Block, Top: true, New: func() any { return new(Shop) },
		Doc: "the shop's tiers: registry, database (primary, standby, clients, seed catalog), and per region its SLBs, caches and app VMs"}}
}

// The app tier's ports (lab/shop/app owns them: its daemons listen there
// by default).
const (
	PortController = app.PortController
	PortOrder      = app.PortOrder
	PortInventory  = app.PortInventory
	PortCoupon     = app.PortCoupon
)

// Daemon is one service the shop block gives a node.
type Daemon struct {
	Node, Service, Verb string
	Config              Config
	Ready               *topology.Ready
	After               []string
}

// Daemons are the services the shop block makes, by node then service
// (nil without a block). The block must have passed Check.
func Daemons(t *topology.Topology) []Daemon {
	s := Of(t)
	if s == nil || s.Database == nil {
		return nil
	}
	var out []Daemon
	db := s.Database
	port := db.port()
	reg := hostPort(ipOf(t, s.Registry), PortEtcd)
	primary := hostPort(ipOf(t, db.Primary), port)
	if s.Registry != "" {
		out = append(out, Daemon{Node: s.Registry, Service: SvcEtcd, Verb: VerbEtcd,
			Config: &EtcdConfig{Verb: VerbEtcd}, Ready: &topology.Ready{TCP: strconv.Itoa(PortEtcd)}})
	}
	out = append(out, Daemon{Node: db.Primary, Service: SvcPostgres, Verb: VerbPostgres,
		Config: &PostgresConfig{Verb: VerbPostgres, Port: port, Allow: db.Allow, Products: db.Products, Coupons: db.Coupons},
		Ready:  &topology.Ready{TCP: primary, Timeout: ReadyPrimary}})
	if db.Standby != "" {
		allow := db.StandbyAllow
		if len(allow) == 0 {
			allow = db.Allow
		}
		out = append(out, Daemon{Node: db.Standby, Service: SvcPostgres, Verb: VerbPostgres,
			Config: &PostgresConfig{Verb: VerbPostgres, Port: port, Allow: allow, StandbyOf: primary},
			Ready:  &topology.Ready{TCP: hostPort(ipOf(t, db.Standby), port), Timeout: ReadyStandby},
			After:  []string{db.Primary + "/" + SvcPostgres}})
	}
	for _, rn := range regionNames(s) {
		r := s.Regions[rn]
		for _, c := range r.Caches {
			out = append(out, Daemon{Node: c, Service: SvcRedis, Verb: VerbRedis,
				Config: &RedisConfig{Verb: VerbRedis, MaxMemory: RedisMaxMemory}, Ready: &topology.Ready{TCP: strconv.Itoa(PortRedis)}})
		}
		var backends []Backend
		var controllers []string
		for _, a := range r.Apps {
			cache := cacheOf(t, r, a)
			tier := func(verb string, port int) *TierConfig {
				c := &TierConfig{Verb: verb, Region: rn, Listen: app.ListenOn(port), Etcd: reg}
				if verb != VerbController {
					c.DB, c.DBConns, c.Lease = primary, app.DefaultDBConns, topology.Duration(app.DefaultLease)
				}
				return c
			}
			inv := tier(VerbInventory, PortInventory)
			inv.Redis = hostPort(ipOf(t, cache), PortRedis)
			ready := func(port int) *topology.Ready {
				return &topology.Ready{TCP: strconv.Itoa(port), Timeout: ReadyTier}
			}
			out = append(out,
				Daemon{Node: a, Service: SvcInventory, Verb: VerbInventory, Config: inv, Ready: ready(PortInventory),
					After: []string{db.Primary + "/" + SvcPostgres, s.Registry + "/" + SvcEtcd, cache + "/" + SvcRedis}},
				Daemon{Node: a, Service: SvcCoupon, Verb: VerbCoupon, Config: tier(VerbCoupon, PortCoupon), Ready: ready(PortCoupon),
					After: []string{db.Primary + "/" + SvcPostgres, s.Registry + "/" + SvcEtcd}},
				Daemon{Node: a, Service: SvcOrder, Verb: VerbOrder, Config: tier(VerbOrder, PortOrder), Ready: ready(PortOrder),
					After: []string{SvcInventory, SvcCoupon}},
				Daemon{Node: a, Service: SvcController, Verb: VerbController, Config: tier(VerbController, PortController), Ready: ready(PortController),
					After: []string{SvcOrder}})
			backends = append(backends, Backend{Name: a, Addr: hostPort(ipOf(t, a), PortController)})
			controllers = append(controllers, a+"/"+SvcController)
		}
		for _, n := range r.SLBs {
			out = append(out, Daemon{Node: n, Service: SvcSLB, Verb: VerbSLB,
				Config: &SLBConfig{Verb: VerbSLB, Listen: SLBListen, Backends: backends, Threads: SLBThreads},
				Ready:  &topology.Ready{TCP: strconv.Itoa(PortSLB)}, After: controllers})
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Node != out[j].Node {
			return out[i].Node < out[j].Node
		}
		return out[i].Service < out[j].Service
	})
	return out
}

// Spec is the daemon's service: `labctl serve VERB` with its typed
// configuration, which the supervisor writes to a file and passes as
// --config FILE (a changed configuration changes the service's hash, so up
// restarts the daemon).
func (d Daemon) Spec() *topology.Service {
	b, err := json.Marshal(d.Config)
	if err != nil {
		panic(fmt.Sprintf("shop: config of %s: %v", d.Verb, err)) // plain data: cannot fail
	}
	return &topology.Service{
		Command: []string{"labctl", "serve", d.Verb},
		Config:  b,
		Ready:   d.Ready,
		After:   d.After,
	}
}

// Expand gives the shop's nodes their services.
func (Part) Expand(t *topology.Topology) {
	for _, d := range Daemons(t) {
		n := t.Nodes[d.Node]
		if n == nil {
			continue
		}
		if n.Services == nil {
			n.Services = map[string]*topology.Service{}
		}
		n.Services[d.Service] = d.Spec()
	}
}

func regionNames(s *Shop) []string {
	out := make([]string, 0, len(s.Regions))
	for k := range s.Regions {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (d *Database) port() int {
	if d.Port == 0 {
		return PortPostgres
	}
	return d.Port
}

// ipOf is a node's first IPv4 interface address (interfaces by name).
func ipOf(t *topology.Topology, node string) netip.Addr {
	n := t.Nodes[node]
	if n == nil {
		return netip.Addr{}
	}
	names := make([]string, 0, len(n.Interfaces))
	for k := range n.Interfaces {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, ifn := range names {
		if n.Interfaces[ifn] == nil {
			continue
		}
		for _, a := range n.Interfaces[ifn].Addresses {
			if p, err := netip.ParsePrefix(a); err == nil && p.Addr().Is4() && !p.Addr().IsLoopback() {
				return p.Addr()
			}
		}
	}
	return netip.Addr{}
}

func hostPort(a netip.Addr, port int) string {
	return netip.AddrPortFrom(a, uint16(port)).String()
}

// az is a node's availability zone: its VPC and subnet.
func az(n *topology.Node) string { return n.VPC + "/" + n.Subnet }

// cacheOf is the region's cache in the app node's AZ ("" when none).
func cacheOf(t *topology.Topology, r *Region, appNode string) string {
	a := t.Nodes[appNode]
	if a == nil {
		return ""
	}
	i := slices.IndexFunc(r.Caches, func(c string) bool { n := t.Nodes[c]; return n != nil && az(n) == az(a) })
	if i < 0 {
		return ""
	}
	return r.Caches[i]
}
