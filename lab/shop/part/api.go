package part

import (
	"fmt"
	"sort"

	"labctl/lab/topology"
)

// What labctl's verbs need to know of a lab's shop, read from its shop
// block (never from service commands).

// Endpoint is one of the shop's servers: the node, its service and where
// it listens.
type Endpoint struct {
	Node    string `json:"node"`
	Service string `json:"service"`
	Addr    string `json:"addr"` // the node's IPv4 address
	Port    int    `json:"port"`
}

// HostPort is the endpoint's ip:port.
func (e Endpoint) HostPort() string { return fmt.Sprintf("%s:%d", e.Addr, e.Port) }

// DatabaseOf is the lab's PostgreSQL primary, or its standby.
func DatabaseOf(t *topology.Topology, standby bool) (Endpoint, error) {
	role := "primary"
	if standby {
		role = "standby"
	}
	s := Of(t)
	if s == nil || s.Database == nil {
		return Endpoint{}, fmt.Errorf("the lab runs no PostgreSQL %s (no shop: block with a database)", role)
	}
	node := s.Database.Primary
	if standby {
		node = s.Database.Standby
	}
	if node == "" {
		return Endpoint{}, fmt.Errorf("the lab runs no PostgreSQL %s (its shop database has no standby:)", role)
	}
	return Endpoint{Node: node, Service: SvcPostgres, Addr: ipOf(t, node).String(), Port: s.Database.port()}, nil
}

// Regions are the shop's region names, sorted.
func Regions(t *topology.Topology) []string {
	s := Of(t)
	if s == nil {
		return nil
	}
	return regionNames(s)
}

// SLBs are the shop's load balancers of every region, by node name.
func SLBs(t *topology.Topology) []Endpoint {
	s := Of(t)
	if s == nil {
		return nil
	}
	var out []Endpoint
	for _, rn := range regionNames(s) {
		for _, n := range s.Regions[rn].SLBs {
			out = append(out, Endpoint{Node: n, Service: SvcSLB, Addr: ipOf(t, n).String(), Port: PortSLB})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// App is one app VM and what its tiers use.
type App struct {
	Node   string `json:"node"`
	Region string `json:"region"`
	Etcd   string `json:"etcd"`  // the registry, ip:port
	DB     string `json:"db"`    // the primary, ip:port
	Redis  string `json:"redis"` // its AZ's cache, ip:port
}

// AppNodes are the app VMs of a region ("" for every region), by node
// name.
func AppNodes(t *topology.Topology, region string) []App {
	s := Of(t)
	if s == nil || s.Database == nil {
		return nil
	}
	var out []App
	db := hostPort(ipOf(t, s.Database.Primary), s.Database.port())
	etcd := hostPort(ipOf(t, s.Registry), PortEtcd)
	for _, rn := range regionNames(s) {
		if region != "" && rn != region {
			continue
		}
		r := s.Regions[rn]
		for _, a := range r.Apps {
			out = append(out, App{Node: a, Region: rn, Etcd: etcd, DB: db, Redis: hostPort(ipOf(t, cacheOf(t, r, a)), PortRedis)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}
