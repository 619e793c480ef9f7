package topology

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
)

func loadRegion(t *testing.T) *Topology {
	t.Helper()
	top, err := Load("../../topologies/region.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return top
}

func portsOf(o *OVS, bridge string) map[string]*OVSPort {
	out := map[string]*OVSPort{}
	if b := o.Bridge(bridge); b != nil {
		for _, p := range b.Ports {
			out[p.Name] = p
		}
	}
	return out
}

func TestRegionExpandsVMsAndRouters(t *testing.T) {
	top := loadRegion(t)
	h := top.Nodes["az1-h1"]
	if h.OVS == nil {
		t.Fatal("az1-h1 has no OVS configuration")
	}
	// The underlay address moves to br-phy's internal port, with the NIC's MTU.
	phy := h.OVS.Bridge(BrPhy)
	if phy == nil || phy.MTU != 1600 || !slices.Equal(phy.Addresses, []string{"172.16.1.11/24"}) {
		t.Fatalf("br-phy = %+v", phy)
	}
	if _, ok := portsOf(h.OVS, BrPhy)["eth0"]; !ok {
		t.Fatal("eth0 is not a port of br-phy")
	}
	in := portsOf(h.OVS, BrInt)
	web, rival := in["shop-web-1-eth0"], in["rival-vm-1-eth0"]
	if web == nil || rival == nil {
		t.Fatalf("br-int ports: %v", slices.Sorted(func(yield func(string) bool) {
			for k := range in {
				if !yield(k) {
					return
				}
			}
		}))
	}
	if web.Tag == rival.Tag || web.VPC != "shop" || rival.VPC != "rival" || web.Peer != "shop-web-1:eth0" {
		t.Fatalf("tenants share a tag or are mislabelled: %+v %+v", web, rival)
	}
	// One VXLAN port per (other host of the VPC, VNI), tagged like the VPC.
	var tunnels []string
	for _, p := range in {
		if p.Tunnel == nil {
			continue
		}
		tun := p.Tunnel
		if tun.Local != "172.16.1.11" {
			t.Errorf("%s: local_ip %s", p.Name, tun.Local)
		}
		if want := top.VPCs[p.VPC].VNI; tun.VNI != want || p.Tag != top.vpcTag(p.VPC) {
			t.Errorf("%s: vni %d tag %d for vpc %s", p.Name, tun.VNI, p.Tag, p.VPC)
		}
		tunnels = append(tunnels, p.VPC+">"+tun.RemoteHost+"@"+tun.Remote)
	}
	slices.Sort(tunnels)
	want := []string{
		"rival>az1-h2@172.16.1.12", "rival>az2-h2@172.16.2.12", "rival>gw@172.16.0.10",
		"shop>az1-h2@172.16.1.12", "shop>az2-h1@172.16.2.11", "shop>gw@172.16.0.10",
	}
	if !slices.Equal(tunnels, want) {
		t.Fatalf("tunnels of az1-h1:\n got %v\nwant %v", tunnels, want)
	}
	// A VM gets a link to its host and a default route via its subnet's gateway.
	vm := top.Nodes["shop-db-1"]
	if len(vm.Routes) != 1 || vm.Routes[0].Via != "10.10.2.1" {
		t.Fatalf("shop-db-1 routes: %+v", vm.Routes)
	}
	if !top.hasEndpoint("az2-h1", "shop-db-1-eth0") {
		t.Fatal("no link from shop-db-1 to its host")
	}
	// The router holds each subnet's gateway and its public /32s.
	r := top.Nodes["shop-router"]
	if a := r.Interfaces["qr-az1"].Addresses; !slices.Equal(a, []string{"10.10.1.1/24"}) {
		t.Fatalf("qr-az1 addresses %v", a)
	}
	if a := r.Interfaces["qg"].Addresses; !slices.Contains(a, "203.0.113.10/32") {
		t.Fatalf("qg addresses %v (no public /32)", a)
	}
	if _, ok := portsOf(top.Nodes["gw"].OVS, "br-ex")["shop-router-qg"]; !ok {
		t.Fatal("the router's outside leg is not on the gateway's br-ex")
	}
	// The Open vSwitch daemons are early services of every host.
	if s := h.Services[VSwitchdService]; s == nil || !s.Early || s.After[0] != OVSDBService {
		t.Fatalf("vswitchd service %+v", s)
	}
	// Expanding is stable: the state file reloads the same topology.
	b1, _ := json.Marshal(top)
	b2, _ := json.Marshal(loadRegion(t))
	if string(b1) != string(b2) {
		t.Fatal("two loads of region.yaml differ")
	}
}

func TestPortNameFits(t *testing.T) {
	for _, c := range [][2]string{{"shop-web-1", "eth0"}, {"shop-router", "qr-az1"}, {"a-very-long-virtual-machine-name", "eth0"}} {
		n := portName(c[0], c[1])
		if len(n) > MaxIfaceName {
			t.Errorf("%s: %q is %d bytes", c, n, len(n))
		}
		if !ifaceRe.MatchString(n) {
			t.Errorf("%q is not a valid interface name", n)
		}
	}
	if portName("shop-router", "qr-az1") == portName("shop-router", "qr-az2") {
		t.Fatal("shortened names collide")
	}
}

func TestTenantsMayOverlap(t *testing.T) {
	top := loadRegion(t)
	a, b := top.Nodes["shop-web-1"].Interfaces["eth0"].Addresses, top.Nodes["rival-vm-2"].Interfaces["eth0"].Addresses
	if !slices.Equal(a, b) {
		t.Fatalf("region.yaml no longer shows overlapping tenants: %v vs %v", a, b)
	}
	// The same address twice inside one VPC is still an error.
	src := strings.Replace(mustRead(t, "../../topologies/region.yaml"), "10.10.1.11/24", "10.10.1.10/24", 1)
	_, err := Parse([]byte(src), "region.yaml")
	if err == nil || !strings.Contains(err.Error(), "10.10.1.10 is also on shop-app-1:eth0") && !strings.Contains(err.Error(), "10.10.1.10 is also on shop-web-1:eth0") {
		t.Fatalf("duplicate in one vpc: %v", err)
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
