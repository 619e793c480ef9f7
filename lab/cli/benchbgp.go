package cli

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"labctl/lab/bgp"
	"labctl/lab/engine"
	"labctl/lab/links"
	"labctl/lab/nat"
	"labctl/lab/state"
	"labctl/lab/topology"
)

// BGPBenchResult is one measured run of `labctl bench bgp`.
type BGPBenchResult struct {
	Run       int           `json:"run"`
	Speakers  int           `json:"speakers"`
	Sessions  int           `json:"sessions"`
	Up        time.Duration `json:"up_ns"`        // labctl up returned
	Converged time.Duration `json:"converged_ns"` // after up: all sessions established, all best paths in the kernels
	Failover  time.Duration `json:"failover_ns"`  // link cut → the watched route moved to another next hop
	Restore   time.Duration `json:"restore_ns"`   // link mended → the route back on its first next hop
	Silent    time.Duration `json:"silent_ns"`    // link silently dropping everything (iptables) → the route moved: hold-timer detection
	RSSKiB    []int         `json:"rss_kib"`      // VmRSS of each speaker, sorted
	Down      time.Duration `json:"down_ns"`
}

func benchBGPCmd(g *globals) *cobra.Command {
	var file, cut, watch, prefix string
	var runs int
	var pause time.Duration
	c := &cobra.Command{
		Use:   "bgp [-t topologies/internet.yaml] [--runs 3]",
		Short: "Time BGP convergence, failover after a cut link, and speaker memory",
		Long: `For each run: bring the lab up, wait until every session is established and
every best path is in the kernel (polled every 20 ms), cut one link with
'labctl link down' and time until the watched router's kernel route for
the prefix moves to another next hop, mend the link and time until it is
back. Then fail the same link silently (iptables DROP on both ends, the
link stays up, so only the BGP hold timer can tell) and time the same
move: the side-by-side baseline for fast external fallover. Finally read
each speaker's resident memory and take the lab down.

The defaults fit topologies/internet.yaml: cut c2–border1 (carrier A loses
the cloud) and watch c2's route to 203.0.113.0/24.`,
		Example: `  sudo labctl bench bgp --runs 5
  sudo labctl bench bgp -t my.yaml --cut r1:r2 --watch r1 --prefix 198.51.100.0/24 --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := topology.Load(file)
			if err != nil {
				return err
			}
			a, b, ok := strings.Cut(cut, ":")
			if !ok {
				return fmt.Errorf("--cut %q: write NODE:NODE", cut)
			}
			ea, eb, err := findLink(t, a, b)
			if err != nil {
				return fmt.Errorf("--cut: %w", err)
			}
			if n := t.Nodes[watch]; n == nil || bgp.Of(n) == nil {
				return fmt.Errorf("--watch %s: no BGP router of that name in %s", watch, file)
			}
			if _, err := state.Load(t.Name); err == nil {
				return fmt.Errorf("lab %s is up: take it down first (the benchmark brings it up and down itself)", t.Name)
			}
			e := engine.New(engine.Options{})
			ctx := cmd.Context()
			var out []BGPBenchResult
			if g.format == "text" {
				fmt.Fprintf(g.out, "%4s %9s %9s %10s %10s %10s %10s %10s %16s %10s\n", "RUN", "SPEAKERS", "SESSIONS", "UP", "CONVERGED", "FAILOVER", "RESTORE", "SILENT", "RSS MIN/MAX", "DOWN")
			}
			for r := 1; r <= runs; r++ {
				time.Sleep(pause)
				res, err := benchBGPRun(ctx, e, t, [2]topology.Endpoint{ea, eb}, watch, prefix)
				t0 := time.Now()
				derr := e.Down(context.WithoutCancel(ctx), t.Name)
				res.Down = time.Since(t0)
				if err != nil || derr != nil {
					return fmt.Errorf("run %d: %v; down: %v", r, err, derr)
				}
				res.Run = r
				out = append(out, res)
				if g.format == "text" {
					fmt.Fprintf(g.out, "%4d %9d %9d %10s %10s %10s %10s %10s %7.1f/%.1f MiB %10s\n", r, res.Speakers, res.Sessions, round(res.Up), round(res.Converged),
						round(res.Failover), round(res.Restore), round(res.Silent), float64(res.RSSKiB[0])/1024, float64(res.RSSKiB[len(res.RSSKiB)-1])/1024, round(res.Down))
				}
			}
			if g.format == "json" {
				return g.json(out)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&file, "topology", "t", "topologies/internet.yaml", "topology file")
	c.Flags().StringVar(&cut, "cut", "c2:border1", "the link to cut, NODE:NODE")
	c.Flags().StringVar(&watch, "watch", "c2", "the router whose route is timed")
	c.Flags().StringVar(&prefix, "prefix", "203.0.113.0/24", "the prefix whose route is timed")
	c.Flags().IntVar(&runs, "runs", 3, "runs")
	c.Flags().DurationVar(&pause, "pause", 0, "wait before each run")
	return c
}

func benchBGPRun(ctx context.Context, e *engine.Engine, t *topology.Topology, cut [2]topology.Endpoint, watch, prefix string) (BGPBenchResult, error) {
	var res BGPBenchResult
	t0 := time.Now()
	if _, err := e.Up(ctx, t); err != nil {
		return res, err
	}
	res.Up = time.Since(t0)
	sp, took, err := bgp.Wait(ctx, t.Name, time.Minute)
	if err != nil {
		return res, err
	}
	res.Converged = took
	res.Speakers = len(sp)
	for _, s := range sp {
		res.Sessions += len(s.Neighbors)
	}
	ns := topology.Namespace(t.Name, watch)
	via := func() string {
		rs, _ := bgp.FIB(ns)
		for _, r := range rs {
			if r.Prefix == prefix {
				return r.Via
			}
		}
		return ""
	}
	first := via()
	if first == "" {
		return res, fmt.Errorf("%s has no BGP route to %s", watch, prefix)
	}
	setLink := func(up bool) error {
		for _, ep := range cut {
			if err := links.SetLinkUp(topology.Namespace(t.Name, ep.Node), ep.Iface, up); err != nil {
				return err
			}
		}
		return nil
	}
	timeUntil := func(cond func(string) bool) (time.Duration, error) {
		start := time.Now()
		for time.Since(start) < 30*time.Second {
			if cond(via()) {
				return time.Since(start), nil
			}
			time.Sleep(2 * time.Millisecond)
		}
		return 0, fmt.Errorf("%s's route to %s did not change within 30s", watch, prefix)
	}
	if err := setLink(false); err != nil {
		return res, err
	}
	if res.Failover, err = timeUntil(func(v string) bool { return v != "" && v != first }); err != nil {
		return res, err
	}
	if err := setLink(true); err != nil {
		return res, err
	}
	if res.Restore, err = timeUntil(func(v string) bool { return v == first }); err != nil {
		return res, err
	}
	// The same link failing silently: it stays up and drops everything,
	// so nothing but the hold timer notices.
	for _, ep := range cut {
		if err := nat.DropAll(topology.Namespace(t.Name, ep.Node), ep.Iface); err != nil {
			return res, fmt.Errorf("iptables in %s: %w", ep.Node, err)
		}
	}
	if res.Silent, err = timeUntil(func(v string) bool { return v != "" && v != first }); err != nil {
		return res, err
	}
	recs, err := e.Supervisor(t.Name).Records()
	if err != nil {
		return res, err
	}
	for _, r := range recs {
		if r.Service == bgp.Service {
			res.RSSKiB = append(res.RSSKiB, rssKiB(r.PID))
		}
	}
	slices.Sort(res.RSSKiB)
	if len(res.RSSKiB) == 0 {
		return res, fmt.Errorf("no bgp services found")
	}
	return res, nil
}

// rssKiB is a process's resident memory (VmRSS), 0 if unknown.
func rssKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}
