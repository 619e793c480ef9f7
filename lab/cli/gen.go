package cli

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"labctl/lab/topology"
)

func genCmd(g *globals) *cobra.Command {
	var name string
	var fanout int
	c := &cobra.Command{
		Use:   "gen linear|tree|star N",
		Short: "Write a Mininet-shaped topology (for tests and benchmarks)",
		Long: `Write a topology in the shapes Mininet uses, to standard output:

  linear N   N switches in a chain, one host on each (N hosts, 2N-1 links)
  tree D     a tree of switches D levels deep, --fanout children each,
             hosts at the leaves (fanout^D hosts)
  star N     one switch with N hosts (Mininet's "single")

Hosts get 10.0.0.i/8 as in Mininet; switches are Linux bridges.`,
		Example: `  labctl gen linear 100 > lin100.yaml && sudo labctl up -t lin100.yaml
  labctl gen tree 3 --fanout 2
  labctl gen star 10 --name star10`,
		Args:      cobra.ExactArgs(2),
		ValidArgs: topology.Shapes,
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[1])
			if err != nil {
				return fmt.Errorf("N must be a number, not %q", args[1])
			}
			if name == "" {
				name = fmt.Sprintf("%s%d", args[0], n)
			}
			t, err := topology.Generate(name, args[0], n, fanout)
			if err != nil {
				return err
			}
			if err := t.Validate(); err != nil {
				return err
			}
			b, err := topology.Marshal(t)
			if err != nil {
				return err
			}
			_, err = g.out.Write(b)
			return err
		},
	}
	c.Flags().StringVar(&name, "name", "", "lab name (default: shape and size, e.g. linear100)")
	c.Flags().IntVar(&fanout, "fanout", 2, "children per switch (tree)")
	return c
}
