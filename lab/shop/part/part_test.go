package part_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"labctl/lab/parts"
	"labctl/lab/plan"
	shoppart "labctl/lab/shop/part"
	"labctl/lab/state"
	"labctl/lab/topology"
)

func TestMain(m *testing.M) {
	parts.Register()
	os.Exit(m.Run())
}

const file = "double11.yaml"

func double11(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../../topologies/double11.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// at is the file:line:col of the first occurrence of needle's marked
// part (after "|") in src.
func at(t *testing.T, src, needle string) string {
	t.Helper()
	pre, _, _ := strings.Cut(needle, "|")
	i := strings.Index(src, strings.ReplaceAll(needle, "|", ""))
	if i < 0 {
		t.Fatalf("%q not in the file", needle)
	}
	i += len(pre)
	line := strings.Count(src[:i], "\n") + 1
	col := i - strings.LastIndex(src[:i], "\n")
	return fmt.Sprintf("%s:%d:%d", file, line, col)
}

// Each bad value of the shop block is reported where it is written.
func TestBadBlockValues(t *testing.T) {
	good := double11(t)
	for _, c := range []struct {
		old, new string // new marks the reported position with |
		msg      string
	}{
		{"registry: east-etcd", "registry: |nope", `no node "nope" in this lab`},
		{"primary: east-db1", "primary: |dc", "node dc has no IPv4 address for its postgres"},
		{"standby: east-db2", "standby: |east-db1", "node east-db1 is given a postgres twice (also as shop.database.primary)"},
		{"allow: [10.20.0.0/16, 203.0.113.17/32]", "allow: [|10.20.0.1/16, 203.0.113.17/32]", "10.20.0.1/16 has host bits set"},
		{"allow: [10.20.0.0/16, 203.0.113.17/32]", "|allow: [10.20.1.0/24, 203.0.113.17/32]", "the standby east-db2 (10.20.2.40) is not allowed to replicate"},
		{`price: "9.90"`, `price: |"9,90"`, `"9,90" is not an amount like 68.00`},
		{"{sku: flash-1, name: Flash", "{sku: |phone-x, name: Flash", "product phone-x is listed twice"},
		{"apps: [east-app1, east-app2]", "apps: [east-app1, |east-gw]", "app VM east-gw has no cache in its AZ (no VPC)"},
		{"caches: [north-cache]", "caches: [|east-cache-a]", "node east-cache-a is given a redis twice"},
		{"    east:                                      # the main region", "    |EAST:", "region \"EAST\": use lower-case letters"},
	} {
		src := strings.Replace(good, c.old, strings.ReplaceAll(c.new, "|", ""), 1)
		if src == good {
			t.Fatalf("%q not in double11.yaml", c.old)
		}
		_, err := topology.Parse([]byte(src), file)
		where := at(t, src, c.new) + ": "
		found := false
		if err != nil {
			for _, l := range strings.Split(err.Error(), "\n") {
				l = strings.TrimSpace(l)
				found = found || strings.HasPrefix(l, where) && strings.Contains(l, c.msg)
			}
		}
		if !found {
			t.Errorf("%s:\n got %v\nwant %s... %s", c.new, err, where, c.msg)
		}
	}
	// A service the block would make, written by hand too.
	src := strings.Replace(good, "  east-etcd:                                   # the registry\n",
		"  east-etcd:                                   # the registry\n    services: {etcd: {command: [labctl, serve, etcd]}}\n", 1)
	if _, err := topology.Parse([]byte(src), file); err == nil || !strings.Contains(err.Error(), "node east-etcd already has a service etcd") {
		t.Errorf("hand-written etcd: %v", err)
	}
	// An unknown key is refused by the strict decoder, located.
	src = strings.Replace(good, "  registry: east-etcd", "  registry: east-etcd\n  regsitry: x", 1)
	if _, err := topology.Parse([]byte(src), file); err == nil || !strings.Contains(err.Error(), "regsitry") {
		t.Errorf("unknown key: %v", err)
	}
}

// The services double11's shop block makes are those its YAML had: the
// same names, ready checks and start order, each run with its
// configuration file.
func TestExpandServices(t *testing.T) {
	tp, err := topology.Decode([]byte(double11(t)), file)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Validate(); err != nil {
		t.Fatal(err)
	}
	if n := len(tp.Nodes["east-app1"].Services); n != 0 {
		t.Fatalf("Validate gave the topology the part's services: %d", n)
	}
	x, err := tp.Expand()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, name := range x.NodeNames() {
		for svc, s := range x.Nodes[name].Services {
			if s.Config != nil && s.Command[2] != "bgp" && s.Command[2] != "dns" { // the shop's daemons
				got = append(got, name+"/"+svc)
			}
		}
	}
	slices.Sort(got)
	if len(got) != 28 {
		t.Errorf("%d services: %v", len(got), got)
	}
	for _, c := range []struct {
		node, svc, cmd, ready string
		after                 []string
	}{
		{"east-db1", "postgres", "labctl serve postgres", "10.20.1.40:5432 30s", nil},
		{"east-db2", "postgres", "labctl serve postgres", "10.20.2.40:5432 1m0s", []string{"east-db1/postgres"}},
		{"east-etcd", "etcd", "labctl serve etcd", "2379 0s", nil},
		{"east-cache-b", "redis", "labctl serve redis", "6379 0s", nil},
		{"east-app2", "inventory", "labctl serve inventory", "5052 30s", []string{"east-db1/postgres", "east-etcd/etcd", "east-cache-b/redis"}},
		{"north-app1", "inventory", "labctl serve inventory", "5052 30s", []string{"east-db1/postgres", "east-etcd/etcd", "north-cache/redis"}},
		{"east-app1", "coupon", "labctl serve coupon", "5053 30s", []string{"east-db1/postgres", "east-etcd/etcd"}},
		{"east-app1", "order", "labctl serve order", "5051 30s", []string{"inventory", "coupon"}},
		{"north-app2", "controller", "labctl serve controller", "8080 30s", []string{"order"}},
		{"north-slb3", "haproxy", "labctl serve slb", "443 0s", []string{"north-app1/controller", "north-app2/controller"}},
	} {
		s := x.Nodes[c.node].Services[c.svc]
		if s == nil {
			t.Errorf("%s/%s missing", c.node, c.svc)
			continue
		}
		cmd := strings.Join(s.Command, " ")
		r, _ := s.Ready.Timeout.MarshalText()
		ready := s.Ready.TCP + " " + string(r)
		if cmd != c.cmd || s.Config == nil || ready != c.ready || !slices.Equal(s.After, c.after) {
			t.Errorf("%s/%s: %q config %s ready %q after %v", c.node, c.svc, cmd, s.Config, ready, s.After)
		}
	}
}

// Every configuration goes through a file as the supervisor writes it
// (state.WriteJSON) and comes back as the type its daemon reads.
func TestConfigRoundTrip(t *testing.T) {
	x, err := topology.Parse([]byte(double11(t)), file) // expanded
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := func(node, svc string) string { return filepath.Join(dir, node+"."+svc+".json") }
	for _, name := range x.NodeNames() {
		for svc, s := range x.Nodes[name].Services {
			if s.Config != nil {
				if err := state.WriteJSON(path(name, svc), s.Config); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	var pg shoppart.PostgresConfig
	if err := shoppart.ReadConfig(path("east-db1", "postgres"), "postgres", &pg); err != nil {
		t.Fatal(err)
	}
	cat, err := pg.Catalog()
	if err != nil || len(cat.Products) != 2 || cat.Products[1].PriceCents != 990 || cat.Coupons[0].MinTotalCents != 5000 ||
		strings.Join(pg.Allow, ",") != "10.20.0.0/16,203.0.113.17/32" || pg.StandbyOf != "" || pg.Port != 5432 {
		t.Errorf("primary %+v catalog %+v %v", pg, cat, err)
	}
	var slb shoppart.SLBConfig
	if err := shoppart.ReadConfig(path("east-slb2", "haproxy"), "slb", &slb); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(slb.Backends) != "[{east-app1 10.20.1.21:8080} {east-app2 10.20.2.21:8080}]" || slb.Listen != ":443" {
		t.Errorf("slb %+v", slb)
	}
	var inv shoppart.TierConfig
	if err := shoppart.ReadConfig(path("north-app2", "inventory"), "inventory", &inv); err != nil {
		t.Fatal(err)
	}
	if o := inv.Shop(); o.Region != "north" || o.Etcd != "10.20.1.30:2379" || o.DB != "10.20.1.40:5432" || o.Redis != "10.30.1.50:6379" ||
		o.Listen != ":5052" || o.DBConns != 16 || o.LeaseTTL <= 0 {
		t.Errorf("inventory %+v", o)
	}
	// Another verb's file is refused.
	if err := shoppart.ReadConfig(path("north-app2", "inventory"), "order", &inv); err == nil {
		t.Error("order read inventory's file")
	}
}

// A changed configuration changes the service (and so restarts it).
func TestConfigChangeRestarts(t *testing.T) {
	src := double11(t)
	a, err := topology.Parse([]byte(src), file)
	if err != nil {
		t.Fatal(err)
	}
	b, err := topology.Parse([]byte(strings.Replace(src, "stock: 10}", "stock: 20}", 1)), file)
	if err != nil {
		t.Fatal(err)
	}
	xa, xb := a, b // Parse expands
	ha := plan.ServiceHash(xa.Nodes["east-db1"].Services["postgres"])
	hb := plan.ServiceHash(xb.Nodes["east-db1"].Services["postgres"])
	if ha == hb {
		t.Error("the primary's service did not change with its catalog")
	}
	if plan.ServiceHash(xa.Nodes["east-db2"].Services["postgres"]) != plan.ServiceHash(xb.Nodes["east-db2"].Services["postgres"]) {
		t.Error("the standby changed with the primary's catalog")
	}
}
