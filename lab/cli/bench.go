package cli

import (
	"fmt"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"labctl/lab/engine"
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
	Pause time.Duration `json:"pause_ns"`
	CPUs  int           `json:"cpus"`
}

func benchCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "bench", Short: "Measure labctl: up/down of generated labs, BGP convergence, DNS, the order path"}
	var shape, name string
	var sizes []int
	var runs, fanout int
	var pause time.Duration
	up := &cobra.Command{
		Use:   "up [--shape linear] [--n 10,100,1000] [--runs 3]",
		Short: "Time up, no-op re-up and down of Mininet-shaped labs",
		Long: `Generate a lab of each size (as 'labctl gen' does), bring it up, bring it up
again unchanged (the converge no-op), and take it down, timing each. The
kernel frees deleted namespaces asynchronously, so an up right after a
down also pays for the previous lab's cleanup: use --pause to measure on
a settled kernel. Compare with Mininet:
  mn --switch lxbr --controller none --topo linear,100 --test build`,
		Example: `  sudo labctl bench up --shape linear --n 10,100,1000
  sudo labctl bench up --shape linear --n 100 --runs 5 --pause 5s --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e := engine.New(engine.Options{})
			var out []BenchResult
			if g.format == "text" {
				fmt.Fprintf(g.out, "%-8s %6s %6s %6s %4s %10s %10s %10s %10s\n", "SHAPE", "N", "NODES", "LINKS", "RUN", "UP", "RE-UP", "DOWN", "UP+DOWN")
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
					// The kernel frees deleted namespaces and their devices
					// asynchronously; an up started right after a down waits
					// for that. --pause lets it finish between runs.
					time.Sleep(pause)
					res.Pause = pause
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
					if err != nil || derr != nil {
						return fmt.Errorf("bench %s,%d: up: %v; down: %v", shape, n, err, derr)
					}
					out = append(out, res)
					if g.format == "text" {
						fmt.Fprintf(g.out, "%-8s %6d %6d %6d %4d %10s %10s %10s %10s\n", shape, n, res.Nodes, res.Links, r, round(res.Up), round(res.Reup), round(res.Down), round(res.Up+res.Down))
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
	up.Flags().DurationVar(&pause, "pause", 0, "wait before each run, so the kernel has freed the last run's namespaces")
	up.Flags().IntVar(&fanout, "fanout", 2, "tree fanout")
	up.Flags().StringVar(&name, "name", "bench", "lab name")
	c.AddCommand(up, benchBGPCmd(g), benchDNSCmd(g), benchOrdersCmd(g), benchLoopbackCmd())
	return c
}
