package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"labctl/lab/bgp"
	"labctl/lab/pki"
	shoppart "labctl/lab/shop/part"
	"labctl/lab/topology"
)

// curl's --write-out %{json} gives cumulative times in seconds; order
// prints each phase on its own.
func TestOrderTimingFromCurl(t *testing.T) {
	var r OrderResult
	if err := json.Unmarshal([]byte(`{"http_code":201,"remote_ip":"203.0.113.12","ssl_verify_result":0,
		"time_namelookup":0.002,"time_connect":0.0025,"time_appconnect":0.0085,"time_pretransfer":0.0086,
		"time_starttransfer":0.0206,"time_total":0.021}`), &r.curl); err != nil {
		t.Fatal(err)
	}
	r.fill()
	want := OrderTiming{DNS: 2, Connect: 0.5, TLS: 6, FirstByte: 12, Total: 21}
	if r.Status != 201 || r.RemoteIP != "203.0.113.12" || r.Verify != "ok" || r.Timing != want {
		t.Errorf("status %d, ip %s, verify %s, timing %+v; want 201, 203.0.113.12, ok, %+v", r.Status, r.RemoteIP, r.Verify, r.Timing, want)
	}
	r.curl["ssl_verify_result"] = json.RawMessage("20")
	if r.fill(); !strings.HasPrefix(r.Verify, "failed") {
		t.Errorf("verify result 20 reads %q", r.Verify)
	}
}

// The default lab's database and app tier are found from its services.
func TestDouble11Services(t *testing.T) {
	tp, err := topology.Load("../../topologies/double11.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		standby bool
		node    string
	}{{false, "east-db1"}, {true, "east-db2"}} {
		node, svc, err := DBNode(tp, c.standby)
		if err != nil || node != c.node || svc != "postgres" {
			t.Errorf("DBNode(standby %v) = %s %s %v, want %s postgres", c.standby, node, svc, err, c.node)
		}
	}
	node, db, redis, err := appNode(tp)
	if err != nil || node != "east-app1" || db != "10.20.1.40:5432" || redis != "10.20.1.50:6379" {
		t.Errorf("appNode = %s %s %s %v", node, db, redis, err)
	}
	if names := pki.Names(tp); len(names) == 0 || names[0] != "www.shop.example" {
		t.Errorf("pki names %v", names)
	}
	small, err := topology.Load(sampleFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := DBNode(small, false); err == nil || !strings.Contains(err.Error(), "no PostgreSQL primary") {
		t.Errorf("sample lab: %v", err)
	}
}

// The database's address and port, the SLBs and the app VMs of each
// region come from the shop block, never from service commands.
func TestDouble11ShopEndpoints(t *testing.T) {
	tp, err := topology.Load("../../topologies/double11.yaml")
	if err != nil {
		t.Fatal(err)
	}
	db, err := shoppart.DatabaseOf(tp, true)
	if err != nil || db.HostPort() != "10.20.2.40:5432" || db.Node != "east-db2" {
		t.Errorf("standby %+v %v", db, err)
	}
	var slbs []string
	for _, e := range shoppart.SLBs(tp) {
		slbs = append(slbs, e.Node+"="+e.HostPort())
	}
	if got := strings.Join(slbs, ","); !strings.HasPrefix(got, "east-slb1=10.20.1.11:443,") || len(slbs) != 6 {
		t.Errorf("SLBs %s", got)
	}
	apps := shoppart.AppNodes(tp, "north")
	if len(apps) != 2 || apps[0].Node != "north-app1" || apps[0].Redis != "10.30.1.50:6379" || apps[0].DB != "10.20.1.40:5432" || apps[0].Etcd != "10.20.1.30:2379" {
		t.Errorf("north's app VMs %+v", apps)
	}
}

// TestCutSessionsText: order and dig name the sessions they did not wait
// for, each with the node holding the neighbor's address.
func TestCutSessionsText(t *testing.T) {
	tp, err := topology.Load("../../topologies/double11.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sp := []*bgp.Speaker{{Node: "border1", Cut: []string{"198.51.100.33"}}, {Node: "c1"}, {Node: "c2", Cut: []string{"198.51.100.34"}}}
	if got, want := cutSessionsText(tp, sp), "border1→198.51.100.33 (c2), c2→198.51.100.34 (border1)"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	if got := cutSessionsText(tp, sp[1:2]); got != "" {
		t.Fatalf("no cut: %q", got)
	}
}
