package cli

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"labctl/lab/engine"
)

func statusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "List the labs that are up, with node counts and health",
		Long: `List every lab present on this machine: those with state in /run/labctl and
those found only by the marks on their namespaces (shown as orphaned; remove
them with 'labctl down LAB'). A lab is healthy when every node's namespace
exists and every service runs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := g.engine(false).Status()
			if err != nil {
				return err
			}
			if g.format == "json" {
				return g.json(st)
			}
			if len(st) == 0 {
				fmt.Fprintln(g.out, "No lab is up.")
				return nil
			}
			w := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "LAB\tSTATUS\tNODES\tNAMESPACES\tSERVICES\tHEALTH\tFILE")
			for _, s := range st {
				health := "ok"
				if !s.Healthy {
					health = "degraded"
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d/%d\t%s\t%s\n", s.Name, s.Status, s.Nodes, s.Namespaces, s.Running, s.Services, health, s.File)
			}
			return w.Flush()
		},
	}
}

func inspectCmd(g *globals) *cobra.Command {
	var lab string
	c := &cobra.Command{
		Use:   "inspect [--lab LAB]",
		Short: "Show a lab's nodes, interfaces, addresses, routes and services",
		Long: `Read a lab back from the kernel: every node with its namespace, its
interfaces (kind, MTU, state, bridge, far end, addresses), the routes labctl
installed, and its services with PIDs. --format json gives the same for
scripts.`,
		Example: `  labctl inspect
  labctl inspect --lab sample --format json | jq '.nodes[].interfaces[].addresses'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lab, err := resolveLab(lab)
			if err != nil {
				return err
			}
			ins, err := g.engine(false).Inspect(lab)
			if err != nil {
				return err
			}
			if g.format == "json" {
				return g.json(ins)
			}
			fmt.Fprintf(g.out, "lab %s (%s) from %s\n", ins.Lab, ins.Status, ins.File)
			w := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NODE\tKIND\tIFACE\tMTU\tSTATE\tPEER\tADDRESSES")
			for _, n := range ins.Nodes {
				if !n.Up {
					fmt.Fprintf(w, "%s\t%s\t-\t-\tmissing\t\t\n", n.Name, n.Kind)
					continue
				}
				for i, ifc := range n.Interfaces {
					name, kind := "", ""
					if i == 0 {
						name, kind = n.Name, n.Kind
					}
					state := "down"
					if ifc.Up {
						state = "up"
					}
					peer := ifc.Peer
					if ifc.Master != "" {
						peer = "master " + ifc.Master
						if ifc.Peer != "" {
							peer = ifc.Peer + ", " + peer
						}
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", name, kind, ifc.Name, ifc.MTU, state, peer, strings.Join(ifc.Addrs, " "))
				}
			}
			w.Flush()
			for _, n := range ins.Nodes {
				for _, r := range n.Routes {
					fmt.Fprintf(g.out, "route  %-10s %s\n", n.Name, r)
				}
			}
			for _, n := range ins.Nodes {
				for _, s := range n.Services {
					run := "running"
					if !s.Running {
						run = "stopped"
					}
					fmt.Fprintf(g.out, "service %s/%s pid %d %s: %s (log %s)\n", n.Name, s.Name, s.PID, run, strings.Join(s.Command, " "), s.Log)
				}
			}
			if ins.Region != nil {
				printRegion(g.out, ins.Region)
			}
			return nil
		},
	}
	c.Flags().StringVar(&lab, "lab", "", "lab name (default: the only lab up)")
	return c
}

// printRegion shows the VPCs with their members, then each host's switch
// ports as its running daemons report them (tunnels with remote and VNI).
func printRegion(out io.Writer, r *engine.RegionInfo) {
	fmt.Fprintln(out)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "VPC\tTENANT\tCIDR\tVNI\tMEMBER\tKIND\tHOST\tADDRESSES")
	for _, v := range r.VPCs {
		head := fmt.Sprintf("%s\t%s\t%s\t%d", v.Name, v.Tenant, v.CIDR, v.VNI)
		if len(v.Members) == 0 {
			fmt.Fprintf(w, "%s\t-\t\t\t\n", head)
		}
		for i, m := range v.Members {
			if i > 0 {
				head = "\t\t\t"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", head, m.Node, m.Kind, m.Host, strings.Join(m.Addresses, ", "))
		}
	}
	w.Flush()
	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "HOST\tDATAPATH\tUNDERLAY\tBRIDGE\tPORT\tTAG\tVPC\tTO")
	for _, h := range r.Hosts {
		head := fmt.Sprintf("%s\t%s\t%s", h.Name, h.Datapath, strings.Join(h.Underlay, " "))
		if h.Error != "" {
			fmt.Fprintf(w, "%s\t(switch not answering: %s)\t\t\t\t\n", head, h.Error)
			continue
		}
		for i, p := range h.Ports {
			if i > 0 {
				head = "\t\t"
			}
			tag, to := "", p.IDs["labctl-peer"]
			if p.Tag != 0 {
				tag = strconv.Itoa(p.Tag)
			}
			if p.Type == "vxlan" {
				to = "vxlan remote " + p.Opts["remote_ip"] + " vni " + p.Opts["key"]
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", head, p.Bridge, p.Name, tag, p.IDs["labctl-vpc"], to)
		}
	}
	w.Flush()
}

func logsCmd(g *globals) *cobra.Command {
	var lab string
	c := &cobra.Command{
		Use:   "logs NODE [SERVICE]",
		Short: "Print the output of a node's services",
		Long: `Print what a node's services wrote (stdout and stderr, kept in
/run/labctl/<lab>/logs/). Without SERVICE, every service of the node.`,
		Example:           "  labctl logs h2 web",
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: completeNodes,
		RunE: func(cmd *cobra.Command, args []string) error {
			lab, err := resolveLab(lab)
			if err != nil {
				return err
			}
			_, node, err := nodeNamespace(lab, args[0])
			if err != nil {
				return err
			}
			var names []string
			if len(args) == 2 {
				if node.Services[args[1]] == nil {
					return fmt.Errorf("node %s has no service %q", args[0], args[1])
				}
				names = []string{args[1]}
			} else {
				for n := range node.Services {
					names = append(names, n)
				}
				if len(names) == 0 {
					return fmt.Errorf("node %s has no services", args[0])
				}
			}
			sup := g.engine(false).Supervisor(lab)
			for _, n := range slices.Sorted(slices.Values(names)) {
				f, err := os.Open(sup.LogPath(args[0], n))
				if err != nil {
					fmt.Fprintf(g.errw, "%s/%s: no log yet (%v)\n", args[0], n, err)
					continue
				}
				if len(names) > 1 {
					fmt.Fprintf(g.out, "==> %s/%s <==\n", args[0], n)
				}
				io.Copy(g.out, f)
				f.Close()
			}
			return nil
		},
	}
	c.Flags().StringVar(&lab, "lab", "", "lab name (default: the only lab up)")
	return c
}
