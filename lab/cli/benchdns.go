package cli

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/spf13/cobra"

	"labctl/lab/bgp"
	"labctl/lab/dns"
	"labctl/lab/engine"
	"labctl/lab/netns"
	"labctl/lab/state"
	"labctl/lab/topology"
)

// DNSBenchResult is `labctl bench dns`'s measurement.
type DNSBenchResult struct {
	Lab    string         `json:"lab"`
	Name   string         `json:"name"`
	Loads  []DNSBenchLoad `json:"loads"`
	Cold   []float64      `json:"cold_ms"` // full chain, cache just emptied, one per run
	Warm   []float64      `json:"warm_ms"` // the same question right after
	Conns  int            `json:"concurrency"`
	Length time.Duration  `json:"duration_ns"`
}

// DNSBenchLoad is one closed-loop load.
type DNSBenchLoad struct {
	Target     string `json:"target"`
	From       string `json:"from"`
	Server     string `json:"server"`
	ServerNode string `json:"server_node"`
	Query      string `json:"query"`
	dns.LoadResult
}

func benchDNSCmd(g *globals) *cobra.Command {
	var file, from, name string
	var conns, runs int
	var dur time.Duration
	c := &cobra.Command{
		Use:   "dns [-t topologies/internet.yaml] [--from ue1] [-c 8] [-d 3s]",
		Short: "Measure the DNS world: queries/s and latency per server, cold vs warm resolution",
		Long: `Bring the lab up, wait for BGP, then measure from a subscriber:

  resolver (cached)   the subscriber's resolver answering a name from its cache
  resolver, local     the same load sent from inside the resolver's own
                      namespace to its own address: no network in between
                      (the ratio of the two is what the carrier path costs)
  authoritative       the shop's authoritative server (the CNAME), asked directly
  gslb                the GSLB server (the region's addresses), asked directly

Each load is closed-loop: -c sockets, one query outstanding on each, for -d.
Then --runs times: empty the resolver's cache (CHAOS TXT flush.labctl.), time
the full chain (root, TLD, authoritative, GSLB), and time the same question
again (warm). The lab is taken down at the end; every load stops by itself.`,
		Example: `  sudo labctl bench dns
  sudo labctl bench dns -c 16 -d 5s --runs 30 --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if conns < 1 || conns > 256 {
				return fmt.Errorf("-c %d: use 1..256 sockets", conns)
			}
			if dur <= 0 || dur > time.Minute {
				return fmt.Errorf("-d %s: use a duration up to 1m", dur)
			}
			t, err := topology.Load(file)
			if err != nil {
				return err
			}
			plan, err := dnsBenchPlan(t, from, name)
			if err != nil {
				return err
			}
			if _, err := state.Load(t.Name); err == nil {
				return fmt.Errorf("lab %s is up: take it down first (the benchmark brings it up and down itself)", t.Name)
			}
			e := engine.New(engine.Options{})
			ctx := cmd.Context()
			res, err := benchDNSRun(ctx, e, t, plan, conns, dur, runs)
			derr := e.Down(context.WithoutCancel(ctx), t.Name)
			if err != nil || derr != nil {
				return fmt.Errorf("bench dns: %v; down: %v", err, derr)
			}
			if g.format == "json" {
				return g.json(res)
			}
			printDNSBench(g, res)
			return nil
		},
	}
	c.Flags().StringVarP(&file, "topology", "t", "topologies/internet.yaml", "topology file")
	c.Flags().StringVar(&from, "from", "ue1", "the subscriber node the load comes from")
	c.Flags().StringVar(&name, "name", "www.shop.example", "the name asked of the resolver")
	c.Flags().IntVarP(&conns, "concurrency", "c", 8, "sockets, one query outstanding on each")
	c.Flags().DurationVarP(&dur, "duration", "d", 3*time.Second, "length of each load")
	c.Flags().IntVar(&runs, "runs", 10, "cold/warm resolutions")
	return c
}

// dnsBench is what the benchmark asks of whom.
type dnsBench struct {
	from, resolver, resolverNode string
	name                         string // asked of the resolver
	authZone, authName           string // the zone holding name, and the name asked of its server
	auth, authNode               string
	gslbName, gslb, gslbNode     string
}

// dnsBenchPlan finds, in a validated topology, the resolver of from, the authoritative server of
// name's zone and the GSLB server the name leads to, from the topology.
func dnsBenchPlan(t *topology.Topology, from, name string) (*dnsBench, error) {
	n := t.Nodes[from]
	if n == nil || n.DNS == nil || len(n.DNS.Nameservers) == 0 {
		return nil, fmt.Errorf("--from %s: no node of that name with dns: nameservers in %s", from, t.File)
	}
	owners := t.IPv4Owners()
	p := &dnsBench{from: from, resolver: n.DNS.Nameservers[0], name: dns.Fqdn(name)}
	if a, err := netip.ParseAddr(p.resolver); err == nil {
		p.resolverNode = owners[a]
	}
	if r := t.Nodes[p.resolverNode]; r == nil || r.Resolver == nil {
		return nil, fmt.Errorf("--from %s: its nameserver %s is no resolver of the lab", from, p.resolver)
	}
	servers := t.ZoneServers()
	for _, zn := range slices.Sorted(maps.Keys(t.Zones)) {
		z := t.Zones[zn]
		ns := servers[z.Name]
		if len(ns) == 0 {
			continue
		}
		if z.GSLB != nil && len(z.GSLB.Names) > 0 && p.gslb == "" {
			p.gslbName = z.GSLB.Names[0]
			if !strings.HasSuffix(p.gslbName, ".") && !mdns.IsSubDomain(z.Name, mdns.Fqdn(p.gslbName)) {
				p.gslbName += "." + z.Name
			}
			p.gslbName = dns.Fqdn(p.gslbName)
			p.gslb, p.gslbNode = ns[0].Addr.String(), ns[0].Node
		}
		// The authoritative zone of the name: the longest one holding it.
		if z.GSLB == nil && mdns.IsSubDomain(z.Name, p.name) && len(z.Name) > len(p.authZone) {
			p.authZone, p.authName = z.Name, p.name
			p.auth, p.authNode = ns[0].Addr.String(), ns[0].Node
		}
	}
	if p.auth == "" || p.gslb == "" {
		return nil, fmt.Errorf("%s declares no zone holding %s, or no gslb zone", t.File, name)
	}
	return p, nil
}

func benchDNSRun(ctx context.Context, e *engine.Engine, t *topology.Topology, p *dnsBench, conns int, dur time.Duration, runs int) (*DNSBenchResult, error) {
	if _, err := e.Up(ctx, t); err != nil {
		return nil, err
	}
	if _, _, err := bgp.Wait(ctx, t.Name, time.Minute); err != nil {
		return nil, err
	}
	ns := func(node string) string { return topology.Namespace(t.Name, node) }
	// The first resolution also proves the path works.
	if _, err := dig(ctx, ns(p.from), p.resolver, p.name, mdns.TypeA, dns.QueryOptions{}); err != nil {
		return nil, err
	}
	res := &DNSBenchResult{Lab: t.Name, Name: p.name, Conns: conns, Length: dur}
	for _, l := range []struct {
		target, from, server, node, name string
		rd                               bool
	}{
		{"resolver (cached)", p.from, p.resolver, p.resolverNode, p.name, true},
		{"resolver, local", p.resolverNode, p.resolver, p.resolverNode, p.name, true},
		{"authoritative", p.from, p.auth, p.authNode, p.authName, false},
		{"gslb", p.from, p.gslb, p.gslbNode, p.gslbName, false},
	} {
		lr, err := loadFrom(ctx, ns(l.from), l.server, l.name, l.rd, conns, dur)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", l.target, err)
		}
		res.Loads = append(res.Loads, DNSBenchLoad{Target: l.target, From: l.from, Server: l.server, ServerNode: l.node, Query: l.name, LoadResult: lr})
	}
	for range runs {
		var cold, warm *dns.Result
		err := netns.Do(ns(p.from), func() error {
			if _, err := dns.FlushCache(ctx, p.resolver); err != nil {
				return err
			}
			var err error
			if cold, err = dns.Query(ctx, p.resolver, p.name, mdns.TypeA, dns.QueryOptions{}); err != nil {
				return err
			}
			warm, err = dns.Query(ctx, p.resolver, p.name, mdns.TypeA, dns.QueryOptions{})
			return err
		})
		if err != nil {
			return nil, err
		}
		res.Cold = append(res.Cold, ms(cold.RTT))
		res.Warm = append(res.Warm, ms(warm.RTT))
	}
	return res, nil
}

// loadFrom opens conns UDP sockets inside namespace ns and runs dns.Load.
func loadFrom(ctx context.Context, ns, server, name string, rd bool, conns int, d time.Duration) (dns.LoadResult, error) {
	var cs []net.Conn
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	err := netns.Do(ns, func() error {
		for range conns {
			c, err := net.Dial("udp", dns.HostPort(server))
			if err != nil {
				return err
			}
			cs = append(cs, c)
		}
		return nil
	})
	if err != nil {
		return dns.LoadResult{}, err
	}
	return dns.Load(ctx, cs, name, mdns.TypeA, rd, d)
}

func printDNSBench(g *globals, r *DNSBenchResult) {
	fmt.Fprintf(g.out, "%-18s %-7s %-22s %-26s %9s %9s %9s %9s %7s\n", "TARGET", "FROM", "SERVER", "QUERY", "QUERIES/S", "P50", "P99", "MAX", "ERRORS")
	for _, l := range r.Loads {
		fmt.Fprintf(g.out, "%-18s %-7s %-22s %-26s %9.0f %9s %9s %9s %7d\n", l.Target, l.From, l.ServerNode+" "+l.Server, l.Query,
			l.QPS, round(l.P50), round(l.P99), round(l.Max), l.Errors)
	}
	if len(r.Loads) >= 2 && r.Loads[1].QPS > 0 {
		fmt.Fprintf(g.out, "\nthrough the carrier / local: %.2f× the queries per second\n", r.Loads[0].QPS/r.Loads[1].QPS)
	}
	if len(r.Cold) > 0 {
		c, w := median(r.Cold), median(r.Warm)
		fmt.Fprintf(g.out, "full chain, %d runs: cold median %.2f ms (%.2f–%.2f), warm median %.2f ms (%.2f–%.2f): cold/warm %.1f×\n",
			len(r.Cold), c, slices.Min(r.Cold), slices.Max(r.Cold), w, slices.Min(r.Warm), slices.Max(r.Warm), c/w)
	}
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
