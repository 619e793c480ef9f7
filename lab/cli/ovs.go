package cli

import (
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"labctl/lab/ovs"
)

// ovsTools are the commands `labctl ovs` runs against a host's daemons.
var ovsTools = []string{"ovs-vsctl", "ovs-ofctl", "ovs-appctl", "ovs-dpctl", "ovsdb-client"}

func ovsCmd(g *globals) *cobra.Command {
	var lab string
	c := &cobra.Command{
		Use:   "ovs HOST -- TOOL [ARG...]",
		Short: "Run an Open vSwitch tool against an ovs-host's own daemons",
		Long: `Every ovs-host runs its own ovsdb-server and ovs-vswitchd inside its
namespace, with their database and sockets under /run/labctl/<lab>/ovs/<host>.
This runs ` + fmt.Sprint(ovsTools) + ` inside the host with OVS_RUNDIR
pointing there (and --db for ovs-vsctl), so the tool talks to that host's
switch and never to another host's or the machine's own Open vSwitch.`,
		Example: `  sudo labctl ovs az1-h1 -- ovs-vsctl show
  sudo labctl ovs az1-h1 -- ovs-ofctl dump-flows br-int
  sudo labctl ovs az1-h1 -- ovs-appctl fdb/show br-int
  sudo labctl ovs gw -- ovs-appctl dpif/show`,
		Args:              cobra.MinimumNArgs(2),
		ValidArgsFunction: completeNodes,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 {
				return fmt.Errorf("write: labctl ovs HOST -- TOOL [ARG...]")
			}
			lab, err := resolveLab(lab)
			if err != nil {
				return err
			}
			ns, n, err := nodeNamespace(lab, args[0])
			if err != nil {
				return err
			}
			if n.OVS == nil {
				return fmt.Errorf("node %s is a %s, not an ovs-host", args[0], n.Kind)
			}
			tool := args[1]
			if !slices.Contains(ovsTools, tool) {
				return fmt.Errorf("%q is not an Open vSwitch tool (one of %v)", tool, ovsTools)
			}
			argv := append([]string{"env"}, ovs.Env(n.OVS.Dir)...)
			argv = append(argv, tool)
			if tool == "ovs-vsctl" {
				argv = append(argv, "--db="+ovs.DB(n.OVS.Dir))
			}
			return execIn(ns, append(argv, args[2:]...))
		},
	}
	c.Flags().StringVar(&lab, "lab", "", "lab name (default: the only lab up)")
	return c
}
