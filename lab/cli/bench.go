package cli

import (
	"fmt"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"labctl/lab/engine"
	"labctl/lab/netns"
	"labctl/lab/topology"
)

// BenchResult is one measured up+down of a generated lab.
type BenchResult struct {
	Shape string        `json:"shape"`
	N     int           `json:"n"`
	Nodes int           `json:"nodes"`
	Links int           `json:"links"`
	Run   int           `json:"run"`
	Up    time.Duration `json:"up_ns"`
	Reup  time.Duration `json:"reup_ns"`
	Down  time.Duration `json:"down_ns"`
	// Settle is how long after down until a new namespace can be made:
	// the kernel frees namespaces asynchronously and holds the rtnl lock
	// while it does, so the next lab waits this long.
	Settle time.Duration `json:"settle_ns"`
	CPUs   int           `json:"cpus"`
}

func benchCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "bench", Short: "Measure labctl on generated labs"}
	var shape, name string
	var sizes []int
	var runs, fanout int
	up := &cobra.Command{
		Use:   "up [--shape linear] [--n 10,100,1000] [--runs 3]",
		Short: "Time up, no-op re-up and down of Mininet-shaped labs",
		Long: `Generate a lab of each size (as 'labctl gen' does), bring it up, bring it up
again unchanged (the converge no-op), and take it down, timing each. The
lab is always removed, even on failure. Compare with Mininet:
  mn --switch lxbr --controller none --topo linear,100 --test build`,
		Example: `  sudo labctl bench up --shape linear --n 10,100,1000
  sudo labctl bench up --shape linear --n 100 --runs 5 --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e := engine.New(engine.Options{})
			var out []BenchResult
			if g.format == "text" {
				fmt.Fprintf(g.out, "%-8s %6s %6s %6s %4s %10s %10s %10s %10s %12s\n", "SHAPE", "N", "NODES", "LINKS", "RUN", "UP", "RE-UP", "DOWN", "SETTLE", "UP+DOWN+SETTLE")
			}
			for _, n := range sizes {
				t, err := topology.Generate(name, shape, n, fanout)
				if err != nil {
					return err
				}
				if err := t.Validate(); err != nil {
					return err
				}
				for r := 1; r <= runs; r++ {
					res := BenchResult{Shape: shape, N: n, Nodes: len(t.Nodes), Links: len(t.Links), Run: r, CPUs: runtime.NumCPU()}
					// Start from a settled kernel, so one run's teardown is not
					// billed to the next run's up.
					if err := netns.Temp(func() error { return nil }); err != nil {
						return err
					}
					t0 := time.Now()
					_, err := e.Up(cmd.Context(), t)
					res.Up = time.Since(t0)
					if err == nil {
						t1 := time.Now()
						_, err = e.Up(cmd.Context(), t)
						res.Reup = time.Since(t1)
					}
					t2 := time.Now()
					derr := e.Down(cmd.Context(), t.Name)
					res.Down = time.Since(t2)
					t3 := time.Now()
					serr := netns.Temp(func() error { return nil })
					res.Settle = time.Since(t3)
					if serr != nil {
						return serr
					}
					if err != nil || derr != nil {
						return fmt.Errorf("bench %s,%d: up: %v; down: %v", shape, n, err, derr)
					}
					out = append(out, res)
					if g.format == "text" {
						fmt.Fprintf(g.out, "%-8s %6d %6d %6d %4d %10s %10s %10s %10s %12s\n", shape, n, res.Nodes, res.Links, r, round(res.Up), round(res.Reup), round(res.Down), round(res.Settle), round(res.Up+res.Down+res.Settle))
					}
				}
			}
			if g.format == "json" {
				return g.json(out)
			}
			return nil
		},
	}
	up.Flags().StringVar(&shape, "shape", "linear", "linear, tree or star")
	up.Flags().IntSliceVar(&sizes, "n", []int{10, 100}, "sizes (tree: depth)")
	up.Flags().IntVar(&runs, "runs", 1, "runs per size")
	up.Flags().IntVar(&fanout, "fanout", 2, "tree fanout")
	up.Flags().StringVar(&name, "name", "bench", "lab name")
	c.AddCommand(up)
	return c
}
