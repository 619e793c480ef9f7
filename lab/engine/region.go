package engine

import (
	"context"
	"maps"
	"net/netip"
	"slices"

	"labctl/lab/ovs"
	"labctl/lab/topology"
)

// RegionInfo is the cloud part of `labctl inspect`: VPCs with their
// members, and each ovs-host's switch as the running daemons report it.
type RegionInfo struct {
	VPCs  []VPCInfo  `json:"vpcs"`
	Hosts []HostInfo `json:"hosts"`
}

// VPCInfo is one VPC.
type VPCInfo struct {
	Name    string            `json:"name"`
	Tenant  string            `json:"tenant"`
	CIDR    string            `json:"cidr"`
	VNI     int               `json:"vni"`
	Subnets map[string]string `json:"subnets"`
	Members []MemberInfo      `json:"members"`
}

// MemberInfo is a vm or vrouter of a VPC.
type MemberInfo struct {
	Node      string   `json:"node"`
	Kind      string   `json:"kind"`
	Host      string   `json:"host"`
	Subnet    string   `json:"subnet,omitempty"`
	Addresses []string `json:"addresses"`
}

// HostInfo is one ovs-host.
type HostInfo struct {
	Name     string         `json:"name"`
	Datapath string         `json:"datapath"`
	Underlay []string       `json:"underlay"`
	Ports    []ovs.PortInfo `json:"ports"`
	Error    string         `json:"error,omitempty"`
}

// region builds RegionInfo; nil for a lab without ovs-hosts.
func region(ctx context.Context, t *topology.Topology) *RegionInfo {
	var r RegionInfo
	for _, v := range t.VPCNames() {
		vpc := t.VPCs[v]
		vi := VPCInfo{Name: v, Tenant: vpc.Tenant, CIDR: vpc.CIDR, VNI: vpc.VNI, Subnets: vpc.Subnets, Members: []MemberInfo{}}
		cidr, _ := netip.ParsePrefix(vpc.CIDR)
		for _, name := range t.NodeNames() {
			n := t.Nodes[name]
			if n.VPC != v {
				continue
			}
			m := MemberInfo{Node: name, Kind: n.Kind, Host: n.Host, Subnet: n.Subnet, Addresses: []string{}}
			for _, ifn := range slices.Sorted(maps.Keys(n.Interfaces)) {
				for _, a := range n.Interfaces[ifn].Addresses {
					if p, err := netip.ParsePrefix(a); err == nil && cidr.Contains(p.Addr()) {
						m.Addresses = append(m.Addresses, ifn+" "+a)
					}
				}
			}
			vi.Members = append(vi.Members, m)
		}
		r.VPCs = append(r.VPCs, vi)
	}
	for _, name := range t.NodeNames() {
		n := t.Nodes[name]
		if n.OVS == nil {
			continue
		}
		h := HostInfo{Name: name, Datapath: ovs.Datapath(n.OVS.Datapath), Underlay: []string{}}
		if b := n.OVS.Bridge(topology.BrPhy); b != nil {
			h.Underlay = append(h.Underlay, b.Addresses...)
		}
		ports, err := ovs.Ports(ctx, n.OVS.Dir)
		if err != nil {
			h.Error = err.Error()
		}
		h.Ports = ports
		r.Hosts = append(r.Hosts, h)
	}
	if len(r.VPCs) == 0 && len(r.Hosts) == 0 {
		return nil
	}
	return &r
}
