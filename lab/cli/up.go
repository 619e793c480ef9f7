package cli

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"labctl/lab/engine"
	"labctl/lab/plan"
	"labctl/lab/topology"
)

func upCmd(g *globals) *cobra.Command {
	var file string
	var retain bool
	var lim topology.Limits
	c := &cobra.Command{
		Use:   "up [-t FILE]",
		Short: "Build a lab, or converge a running one to its file",
		Long: `Build the lab a topology file describes. Every phase prints one ✓/✗ line
with its time (-v shows each step, --format json prints events).

Running 'up' again on a lab that is up converges it: what is missing is
created, what changed is fixed, what the lab owns but the file no longer
has is removed; with no change it does nothing. If a new lab fails half
way, everything it made is removed again unless --retain is given.

Without -t, labctl uses $LABCTL_TOPOLOGY or ` + DefaultTopology + `: the
file in the current directory if there is one, else the copy built into
labctl. The first line says which file was read, and services that run
commands of the file's own (not labctl's daemons) are listed ("commands"
in the JSON): they run as root, and labctl cannot confine or undo what
they do.`,
		Example: `  sudo labctl up -t topologies/sample.yaml
  sudo labctl up -t topologies/sample.yaml -v --retain`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := loadTopologyContext(cmd.Context(), file, lim)
			if err != nil {
				return err
			}
			if g.format == "text" {
				fmt.Fprintf(g.out, "Bringing up lab %s (%d nodes, %d links) from %s\n", t.Name, len(t.Nodes), len(t.Links), t.File)
				printCommands(g.out, t)
			}
			res, err := g.engine(retain).Up(cmd.Context(), t)
			if err != nil {
				return err
			}
			if g.format == "json" {
				return g.json(map[string]any{"lab": res.Lab, "changes": res.Changes, "elapsed_ns": res.Elapsed, "commands": commandServices(t)})
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
	limitFlags(c, &lim)
	return c
}

// limitFlags adds the flags that raise topology.DefaultLimits.
func limitFlags(c *cobra.Command, l *topology.Limits) {
	d := topology.DefaultLimits
	c.Flags().Int64Var(&l.FileSize, "max-file-size", d.FileSize, "refuse a topology file of more bytes")
	c.Flags().IntVar(&l.Nodes, "max-nodes", d.Nodes, "refuse more nodes (and any mapping with more keys)")
	c.Flags().IntVar(&l.Links, "max-links", d.Links, "refuse more links (and any list with more entries)")
	c.Flags().IntVar(&l.Depth, "max-depth", d.Depth, "refuse mappings and lists nested deeper")
	c.Flags().IntVar(&l.AliasNodes, "max-alias-nodes", d.AliasNodes, "refuse YAML aliases that add more nodes in all")
}

// CommandService is a service that runs a command of the file's own, as
// root in its node's namespace: the commands list of `plan --format json`
// and of `up --format json`.
type CommandService struct {
	Node    string   `json:"node"`
	Service string   `json:"service"`
	Command []string `json:"command"`
}

func (c CommandService) String() string {
	return fmt.Sprintf("%s/%s: %s", c.Node, c.Service, strings.Join(c.Command, " "))
}

// commandServices lists the services whose argv is the file's own: all
// but labctl's serve daemons and the Open vSwitch daemons labctl adds.
func commandServices(t *topology.Topology) []CommandService {
	out := []CommandService{}
	for _, n := range t.NodeNames() {
		svcs := t.Nodes[n].Services
		for _, sn := range slices.Sorted(maps.Keys(svcs)) {
			s := svcs[sn]
			if s == nil || s.Early || len(s.Command) > 1 && s.Command[0] == "labctl" && s.Command[1] == "serve" {
				continue
			}
			out = append(out, CommandService{Node: n, Service: sn, Command: s.Command})
		}
	}
	return out
}

// printCommands says plainly which services run arbitrary commands: labctl
// starts them as root in their node's namespace and nothing more.
func printCommands(w io.Writer, t *topology.Topology) {
	cmds := commandServices(t)
	if len(cmds) == 0 {
		return
	}
	fmt.Fprintf(w, "  ! %d service(s) run commands from the file as root inside their node's namespace; labctl does not confine them, and down undoes nothing they change outside it:\n", len(cmds))
	for _, c := range cmds {
		fmt.Fprintf(w, "      %s\n", c)
	}
}

// planJSON is what `plan --format json` prints: the plan, and the services
// that run commands of the file's own (as root, unconfined).
type planJSON struct {
	*plan.Plan
	Commands []CommandService `json:"commands"`
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
				b, err := topology.ReadFile(file, 0)
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
	var lim topology.Limits
	c := &cobra.Command{
		Use:   "plan [-t FILE]",
		Short: "Print the ordered steps of building a lab, touching nothing",
		Long: `Validate a topology file and print, phase by phase, every step 'labctl up'
would take to build it from nothing. It needs no root and changes nothing.
Without -t it reads the default lab as up does; the text output ends with
the services that run commands of the file's own (as root in their node's
namespace, unconfined), and --format json lists them as "commands".`,
		Example: `  labctl plan -t topologies/sample.yaml
  labctl plan -t topologies/sample.yaml --format json | jq '.steps | length'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := loadTopologyContext(cmd.Context(), file, lim)
			if err != nil {
				return err
			}
			p, err := plan.ComputeContext(cmd.Context(), t, nil)
			if err != nil {
				return fmt.Errorf("planning %s: %w", t.File, err)
			}
			if g.format == "json" {
				return g.json(planJSON{Plan: p, Commands: commandServices(t)})
			}
			if t.File == EmbeddedTopology {
				fmt.Fprintf(g.out, "# from %s\n", t.File)
			}
			fmt.Fprint(g.out, p.String())
			printCommands(g.out, t)
			return nil
		},
	}
	c.Flags().StringVarP(&file, "topology", "t", "", "topology file")
	limitFlags(c, &lim)
	return c
}
