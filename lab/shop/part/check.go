package part

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"labctl/lab/shop/store"
	"labctl/lab/topology"
)

// regionName is what a region may be called: its instances' registry
// prefix.
var regionName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// Check checks the shop block: every node it names exists and has an
// IPv4 address, no node gets one service twice (nor a service it has
// already), every app VM has a cache in its AZ, and the catalog's values
// parse.
func (Part) Check(c *topology.Check) {
	t := c.Topology()
	s := Of(t)
	if s == nil {
		return
	}
	root := topology.Path{Block}
	k := &checker{c: c, t: t, owner: map[string]string{}}
	apps := false
	for _, r := range s.Regions {
		apps = apps || r != nil && len(r.Apps) > 0
	}
	switch {
	case s.Registry != "":
		k.node(root.With("registry"), s.Registry, SvcEtcd)
	case apps:
		c.Add(root, "the app tiers need a registry (registry: NODE)")
	}
	if s.Database == nil {
		c.Add(root, "the shop needs a database (database: {primary: NODE, allow: [CIDR]})")
	} else {
		k.database(root.With("database"), s.Database)
	}
	for _, rn := range regionNames(s) {
		k.region(root.With("regions", rn), rn, s.Regions[rn])
	}
}

type checker struct {
	c     *topology.Check
	t     *topology.Topology
	owner map[string]string // node/service → the path that gave it
}

// node checks that name is a node with an IPv4 address that can take the
// service svc.
func (k *checker) node(p topology.Path, name, svc string) bool {
	n := k.t.Nodes[name]
	switch {
	case name == "":
		k.c.Add(p, "empty node name")
		return false
	case n == nil:
		k.c.Add(p, "no node %q in this lab", name)
		return false
	case !ipOf(k.t, name).IsValid():
		k.c.Add(p, "node %s has no IPv4 address for its %s", name, svc)
		return false
	}
	if _, ok := n.Services[svc]; ok && !k.t.Expanded() { // an expanded lab has the block's own services

		k.c.Add(p, "node %s already has a service %s (the shop block makes it; remove it from the node's services:)", name, svc)
		return false
	}
	key := name + "/" + svc
	if prev, ok := k.owner[key]; ok {
		k.c.Add(p, "node %s is given a %s twice (also as %s)", name, svc, prev)
		return false
	}
	k.owner[key] = pathText(p)
	return true
}

func pathText(p topology.Path) string {
	var b strings.Builder
	for i, e := range p {
		switch v := e.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", v)
		default:
			if i > 0 {
				b.WriteByte('.')
			}
			fmt.Fprint(&b, v)
		}
	}
	return b.String()
}

func (k *checker) database(p topology.Path, db *Database) {
	if db.Primary == "" {
		k.c.Add(p, "name the node of the PostgreSQL primary (primary: NODE)")
	} else {
		k.node(p.With("primary"), db.Primary, SvcPostgres)
	}
	if db.Standby != "" {
		k.node(p.With("standby"), db.Standby, SvcPostgres)
	} else if len(db.StandbyAllow) > 0 {
		k.c.Add(p.With("standby-allow"), "standby-allow without a standby")
	}
	if db.Port != 0 && (db.Port < 1 || db.Port > 65535) {
		k.c.Add(p.With("port"), "%d is not a port (1-65535)", db.Port)
	}
	allow := k.cidrs(p.With("allow"), db.Allow)
	k.cidrs(p.With("standby-allow"), db.StandbyAllow)
	if sb := ipOf(k.t, db.Standby); sb.IsValid() && len(allow) == len(db.Allow) && len(allow) > 0 && !covers(allow, sb) {
		k.c.Add(p.With("allow"), "the standby %s (%s) is not allowed to replicate from the primary: add its network", db.Standby, sb)
	}
	skus := map[string]bool{}
	for i, pr := range db.Products {
		at := p.With("products", i)
		switch {
		case pr == nil:
			k.c.Add(at, "empty product (sku:, name:, price:, stock:)")
			continue
		case pr.SKU == "":
			k.c.Add(at, "a product needs a sku")
		case skus[pr.SKU]:
			k.c.Add(at.With("sku"), "product %s is listed twice", pr.SKU)
		}
		skus[pr.SKU] = true
		if pr.Name == "" {
			k.c.Add(at, "product %s needs a name", pr.SKU)
		}
		k.money(at.With("price"), pr.Price, true)
		if pr.Stock < 0 {
			k.c.Add(at.With("stock"), "stock cannot be negative")
		}
	}
	codes := map[string]bool{}
	for i, cp := range db.Coupons {
		at := p.With("coupons", i)
		switch {
		case cp == nil:
			k.c.Add(at, "empty coupon (code:, discount:, min:, uses:)")
			continue
		case cp.Code == "":
			k.c.Add(at, "a coupon needs a code")
		case codes[cp.Code]:
			k.c.Add(at.With("code"), "coupon %s is listed twice", cp.Code)
		}
		codes[cp.Code] = true
		k.money(at.With("discount"), cp.Discount, true)
		k.money(at.With("min"), cp.Min, false)
		if cp.Uses < 0 {
			k.c.Add(at.With("uses"), "uses cannot be negative")
		}
	}
}

func (k *checker) money(p topology.Path, m Money, required bool) {
	if m == "" {
		if required {
			k.c.Add(p, "an amount like 68.00")
		}
		return
	}
	if _, err := store.ParseMoney(string(m)); err != nil {
		k.c.Add(p, "%v", err)
	}
}

func (k *checker) cidrs(p topology.Path, ss []string) []netip.Prefix {
	var out []netip.Prefix
	for i, s := range ss {
		if pr, ok := k.c.IPv4CIDR(p.With(i), s, "empty CIDR"); ok {
			out = append(out, pr)
		}
	}
	return out
}

func covers(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (k *checker) region(p topology.Path, name string, r *Region) {
	if !regionName.MatchString(name) {
		k.c.AddAtKey(p, "region %q: use lower-case letters, digits and dashes (it is the registry prefix of its instances)", name)
	}
	if r == nil || len(r.Apps) == 0 {
		k.c.Add(p, "region %s needs app VMs (apps: [NODE])", name)
		return
	}
	azs := map[string]string{}
	for i, c := range r.Caches {
		if !k.node(p.With("caches", i), c, SvcRedis) {
			continue
		}
		a := az(k.t.Nodes[c])
		if prev, ok := azs[a]; ok {
			k.c.Add(p.With("caches", i), "%s and %s are both caches of AZ %s: one cache per AZ", prev, c, azText(a))
			continue
		}
		azs[a] = c
	}
	for i, a := range r.Apps {
		at := p.With("apps", i)
		ok := true
		for _, svc := range []string{SvcInventory, SvcCoupon, SvcOrder, SvcController} {
			ok = k.node(at, a, svc) && ok
			if k.t.Nodes[a] == nil || !ipOf(k.t, a).IsValid() {
				break // said once
			}
		}
		if !ok {
			continue
		}
		if _, has := azs[az(k.t.Nodes[a])]; !has {
			k.c.Add(at, "app VM %s has no cache in its AZ %s (add one to caches:)", a, azText(az(k.t.Nodes[a])))
		}
	}
	for i, n := range r.SLBs {
		k.node(p.With("slbs", i), n, SvcSLB)
	}
}

func azText(a string) string {
	if a == "/" {
		return "(no VPC)"
	}
	return a
}
