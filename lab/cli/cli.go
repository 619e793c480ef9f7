// Package cli is labctl's command line: one file per group of verbs, each
// turning flags into a call on the engine. Only Main decides exit codes.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"labctl/lab/engine"
	"labctl/lab/parts"
	"labctl/lab/state"
	"labctl/lab/topology"
	"labctl/topologies"
)

// DefaultTopology is used by up and plan without -t.
const DefaultTopology = "topologies/double11.yaml"

type globals struct {
	verbose bool
	format  string
	out     io.Writer
	errw    io.Writer
}

// exitError carries a command's own exit status (exec, capture).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// Main runs labctl with args and returns the process exit code.
// The lab parts are registered before any verb reads a topology.
func init() { parts.Register() }

func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := &globals{out: stdout, errw: stderr}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		// Say which signal stopped labctl, not only "context canceled".
		err = fmt.Errorf("%v, stopped: %w", context.Cause(ctx), err)
	}
	if g.format == "json" {
		json.NewEncoder(stderr).Encode(map[string]string{"error": err.Error()})
	} else {
		fmt.Fprintf(stderr, "labctl: %v\n", err)
	}
	return 1
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "labctl",
		Short: "Build a real network lab from a topology file",
		Long: `labctl turns a topology file into kernel reality: network namespaces, veth
pairs, bridges, addresses, routes, sysctls and supervised services, all
marked as the lab's own so that 'labctl down' removes exactly what it made.

  labctl up                                build the default lab (topologies/double11.yaml)
  labctl order --from ue1                  place an order from a subscriber, end to end
  labctl orders                            the orders and stock in the lab's database
  labctl exec ue1 -- ping -c1 203.0.113.11 run a command inside a node
  labctl capture east-gw eth1 -c 10        watch packets on an interface
  labctl down double11                     remove everything the lab made

Everything labctl does to the kernel needs root.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "show every step")
	root.PersistentFlags().StringVar(&g.format, "format", "text", "output format: text or json")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if g.format != "text" && g.format != "json" {
			return fmt.Errorf("--format must be text or json, not %q", g.format)
		}
		return nil
	}
	root.AddCommand(upCmd(g), downCmd(g), planCmd(g), statusCmd(g), inspectCmd(g), execCmd(g), ovsCmd(g),
		linkCmd(g), bgpCmd(g), digCmd(g), orderCmd(g), ordersCmd(g), captureCmd(g), logsCmd(g), doctorCmd(g), genCmd(g), benchCmd(g), serveCmd(g), partsCmd(g))
	root.AddCommand(partCommands(g)...)
	return root
}

// reporter prints engine events: one ✓/✗ line per phase, steps with -v,
// or one JSON object per line with --format json.
func (g *globals) reporter() func(engine.Event) {
	var mu sync.Mutex
	enc := json.NewEncoder(g.out)
	return func(ev engine.Event) {
		mu.Lock()
		defer mu.Unlock()
		if g.format == "json" {
			if ev.Status != "step" || g.verbose || ev.Error != "" {
				enc.Encode(ev)
			}
			return
		}
		switch ev.Status {
		case "step":
			if ev.Error != "" {
				fmt.Fprintf(g.out, "    ✗ %s\n", ev.Step)
			} else if g.verbose {
				fmt.Fprintf(g.out, "    %s\n", ev.Step)
			}
		case "info":
			fmt.Fprintf(g.out, "  • %s\n", ev.Message)
		default:
			mark := "✓"
			if ev.Status == "fail" {
				mark = "✗"
			}
			what := ev.Phase
			if ev.Steps > 0 {
				what = fmt.Sprintf("%s (%d)", ev.Phase, ev.Steps)
			}
			if ev.Message != "" {
				what += ": " + ev.Message
			}
			fmt.Fprintf(g.out, " %s %-44s %8s\n", mark, what, round(ev.Elapsed))
		}
	}
}

func round(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

func (g *globals) engine(retain bool) *engine.Engine {
	return engine.New(engine.Options{Retain: retain, Report: g.reporter()})
}

func (g *globals) json(v any) error {
	enc := json.NewEncoder(g.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// loadTopology is loadTopologyContext without cancellation, within the
// default limits.
func loadTopology(file string) (*topology.Topology, error) {
	return loadTopologyContext(context.Background(), file, topology.DefaultLimits)
}

// loadTopologyContext reads -t, defaulting to $LABCTL_TOPOLOGY or
// DefaultTopology. DefaultTopology is read from the working directory when
// it is there (an edited copy in a checkout wins) and otherwise from the
// copy built into labctl, so that up and plan work anywhere; t.File
// says which.
func loadTopologyContext(ctx context.Context, file string, lim topology.Limits) (*topology.Topology, error) {
	if file == "" {
		file = os.Getenv("LABCTL_TOPOLOGY")
	}
	if file == "" {
		if _, err := os.Stat(DefaultTopology); errors.Is(err, fs.ErrNotExist) {
			data, err := topologies.FS.ReadFile(path.Base(DefaultTopology))
			if err != nil {
				return nil, err
			}
			return topology.ParseContext(ctx, data, EmbeddedTopology, lim)
		}
		file = DefaultTopology
	}
	return topology.LoadContext(ctx, file, lim)
}

// EmbeddedTopology is the File of the default lab read from labctl itself.
const EmbeddedTopology = DefaultTopology + " (built into labctl)"

// requireRoot is the error of a verb that needs root (to enter the lab's
// namespaces, to reach its daemons' sockets) run by another user, nil for
// root: said at once, before the verb waits on what it could not reach.
func requireRoot(verb, why string) error {
	if os.Geteuid() == 0 {
		return nil
	}
	return fmt.Errorf("%s needs root (%s): run it with sudo", verb, why)
}

// resolveLab picks the lab a node-level verb works on: --lab, else the
// only lab that is up.
func resolveLab(lab string) (string, error) {
	if lab != "" {
		return lab, nil
	}
	labs, err := state.List()
	if err != nil {
		return "", err
	}
	switch len(labs) {
	case 0:
		return "", errors.New("no lab is up (labctl up -t FILE)")
	case 1:
		return labs[0], nil
	}
	return "", fmt.Errorf("several labs are up (%s): choose one with --lab", strings.Join(labs, ", "))
}

// labRecord is resolveLab, then the lab's record.
func labRecord(lab string) (string, *state.Lab, error) {
	lab, err := resolveLab(lab)
	if err != nil {
		return "", nil, err
	}
	rec, err := state.Load(lab)
	return lab, rec, err
}

// nodeNamespace returns the namespace of node in lab, checking it exists.
func nodeNamespace(lab, node string) (string, *topology.Node, error) {
	rec, err := state.Load(lab)
	if err != nil {
		return "", nil, err
	}
	return nodeIn(rec, lab, node)
}

// nodeIn is nodeNamespace on a lab record already loaded.
func nodeIn(rec *state.Lab, lab, node string) (string, *topology.Node, error) {
	if rec.Topology == nil || rec.Topology.Nodes[node] == nil {
		var names []string
		if rec.Topology != nil {
			names = rec.Topology.NodeNames()
		}
		return "", nil, fmt.Errorf("lab %s has no node %q (nodes: %s)", lab, node, strings.Join(names, ", "))
	}
	return topology.Namespace(lab, node), rec.Topology.Nodes[node], nil
}

func completeNodes(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	lab, _ := cmd.Flags().GetString("lab")
	lab, err := resolveLab(lab)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	rec, err := state.Load(lab)
	if err != nil || rec.Topology == nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return rec.Topology.NodeNames(), cobra.ShellCompDirectiveNoFileComp
}
