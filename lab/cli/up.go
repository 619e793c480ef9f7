package cli

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"labctl/lab/engine"
	"labctl/lab/plan"
	"labctl/lab/topology"
)

func upCmd(g *globals) *cobra.Command {
	var file string
	var retain bool
	c := &cobra.Command{
		Use:   "up [-t FILE]",
		Short: "Build a lab, or converge a running one to its file",
		Long: `Build the lab a topology file describes. Every phase prints one ✓/✗ line
with its time (-v shows each step, --format json prints events).

Running 'up' again on a lab that is up converges it: what is missing is
created, what changed is fixed, what the lab owns but the file no longer
has is removed; with no change it does nothing. If a new lab fails half
way, everything it made is removed again unless --retain is given.

Without -t, labctl uses $LABCTL_TOPOLOGY or ` + DefaultTopology + `.`,
		Example: `  sudo labctl up -t topologies/sample.yaml
  sudo labctl up -t topologies/sample.yaml -v --retain`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := loadTopology(file)
			if err != nil {
				return err
			}
			if g.format == "text" {
				fmt.Fprintf(g.out, "Bringing up lab %s (%d nodes, %d links) from %s\n", t.Name, len(t.Nodes), len(t.Links), t.File)
			}
			res, err := g.engine(retain).Up(cmd.Context(), t)
			if err != nil {
				return err
			}
			if g.format == "json" {
				return g.json(map[string]any{"lab": res.Lab, "changes": res.Changes, "elapsed_ns": res.Elapsed})
			}
			if res.Changes == 0 {
				fmt.Fprintf(g.out, "Lab %s is up to date (%s)\n", t.Name, round(res.Elapsed))
			} else {
				fmt.Fprintf(g.out, "Lab %s is up: %d changes in %s. Try: labctl inspect --lab %s\n", t.Name, res.Changes, round(res.Elapsed), t.Name)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&file, "topology", "t", "", "topology file")
	c.Flags().BoolVar(&retain, "retain", false, "keep what a failed up made (for debugging)")
	return c
}

func downCmd(g *globals) *cobra.Command {
	var file string
	var all bool
	c := &cobra.Command{
		Use:   "down [LAB | -t FILE | --all]",
		Short: "Remove everything a lab made",
		Long: `Remove a lab: end every process in its namespaces, delete the namespaces
(and with them every link), the /etc/netns files it wrote, and its state in
/run/labctl. It needs no topology file and works after a crash or a failed
up: what belongs to the lab is found by its marks. Nothing without the
lab's mark is touched. A lab that is already gone is no error.`,
		Example: `  sudo labctl down sample
  sudo labctl down -t topologies/sample.yaml
  sudo labctl down --all`,
		Args: cobra.MaximumNArgs(1),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			labs, _ := engine.Labs()
			return labs, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			e := g.engine(false)
			if all {
				return e.DownAll(cmd.Context())
			}
			var lab string
			switch {
			case len(args) == 1:
				lab = args[0]
			case file != "":
				b, err := os.ReadFile(file)
				if err != nil {
					return err
				}
				// Only the name is needed: a file that no longer validates
				// can still name the lab to remove.
				t, err := topology.Decode(b, file)
				if err != nil {
					return err
				}
				lab = t.Name
			default:
				labs, err := engine.Labs()
				if err != nil {
					return err
				}
				switch len(labs) {
				case 0:
					fmt.Fprintln(g.out, "No lab is up.")
					return nil
				case 1:
					lab = labs[0]
				default:
					return fmt.Errorf("several labs are up %v: name one, or use --all", labs)
				}
			}
			if g.format == "text" {
				fmt.Fprintf(g.out, "Removing lab %s\n", lab)
			}
			start := time.Now()
			if err := e.Down(cmd.Context(), lab); err != nil {
				return err
			}
			if g.format == "text" {
				fmt.Fprintf(g.out, "Lab %s is down (%s)\n", lab, round(time.Since(start)))
			}
			return nil
		},
	}
	c.Flags().StringVarP(&file, "topology", "t", "", "take the lab name from this topology file")
	c.Flags().BoolVar(&all, "all", false, "remove every lab")
	return c
}

func planCmd(g *globals) *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "plan [-t FILE]",
		Short: "Print the ordered steps of building a lab, touching nothing",
		Long: `Validate a topology file and print, phase by phase, every step 'labctl up'
would take to build it from nothing. It needs no root and changes nothing.`,
		Example: `  labctl plan -t topologies/sample.yaml
  labctl plan -t topologies/sample.yaml --format json | jq '.steps | length'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := loadTopology(file)
			if err != nil {
				return err
			}
			p := plan.Compute(t, nil)
			if g.format == "json" {
				return g.json(p)
			}
			fmt.Fprint(g.out, p.String())
			return nil
		},
	}
	c.Flags().StringVarP(&file, "topology", "t", "", "topology file")
	return c
}
