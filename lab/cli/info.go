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
exists, every service runs and the kernel matches its recorded topology:
otherwise each difference (a route or address missing, a link down, …) is
listed as drift, every step 'labctl up' would take to mend it. Links cut
with 'labctl link down' are listed as cut, not as drift.`,
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
				switch {
				case len(s.Drift) > 0:
					health = "drift"
				case !s.Healthy:
					health = "degraded"
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d/%d\t%s\t%s\n", s.Name, s.Status, s.Nodes, s.Namespaces, s.Running, s.Services, health, s.File)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			for _, s := range st {
				if len(s.Drift) > 0 {
					fmt.Fprintf(g.out, "%s  drift: %s; labctl up mends it\n", s.Name, driftSummary(s.Drift))
				}
				if s.DriftErr != "" {
					fmt.Fprintf(g.out, "%s  drift unknown: %s\n", s.Name, s.DriftErr)
				}
				if s.DriftSkipped != "" {
					fmt.Fprintf(g.out, "%s  drift not checked: %s\n", s.Name, s.DriftSkipped)
				}
				for _, c := range s.Cut {
					fmt.Fprintf(g.out, "%s  cut: %s ── %s; labctl link up mends it\n", s.Name, c[0], c[1])
				}
				if s.Restarts > 0 {
					fmt.Fprintf(g.out, "%s  %d restart%s by the watcher (labctl inspect shows each service's)\n", s.Name, s.Restarts, plural(s.Restarts))
				}
				if len(s.Failed) > 0 {
					fmt.Fprintf(g.out, "%s  failed: %s (restarted too often; labctl up starts them again)\n", s.Name, strings.Join(s.Failed, ", "))
				}
				if !s.Watching && s.Status != "orphaned" && s.Services > 0 {
					fmt.Fprintf(g.out, "%s  watcher not running: nothing restarts its services; labctl up starts it\n", s.Name)
				}
			}
			return nil
		},
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// driftSummary says what drifted, by kind in the plan's order: "1 route
// missing (ue1: default via 100.64.0.1), 2 links down (…)".
func driftSummary(ds []engine.Drift) string {
	var kinds []string
	by := map[string][]string{}
	for _, d := range ds {
		if by[d.Kind] == nil {
			kinds = append(kinds, d.Kind)
		}
		item := d.Item
		if d.Node != "" {
			item = d.Node + ": " + item
		}
		by[d.Kind] = append(by[d.Kind], item)
	}
	var parts []string
	for _, k := range kinds {
		items := by[k]
		shown := items[:min(len(items), 3)]
		more := ""
		if len(items) > len(shown) {
			more = fmt.Sprintf(", … %d more", len(items)-len(shown))
		}
		parts = append(parts, fmt.Sprintf("%d %s (%s%s)", len(items), pluralKind(k, len(items)), strings.Join(shown, ", "), more))
	}
	return strings.Join(parts, ", ")
}

// pluralKind puts a drift kind's noun in the plural for n > 1.
func pluralKind(kind string, n int) string {
	if n == 1 {
		return kind
	}
	for _, w := range [][2]string{{"address", "addresses"}, {"switch", "switches"}, {"nat table", "nat tables"},
		{"route", "routes"}, {"link", "links"}, {"namespace", "namespaces"}, {"bridge", "bridges"},
		{"port", "ports"}, {"sysctl", "sysctls"}, {"file", "files"}, {"service", "services"}} {
		if rest, ok := strings.CutPrefix(kind, w[0]+" "); ok {
			return w[1] + " " + rest
		}
	}
	return kind
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
						if s.State != "" {
							run = s.State
						}
					}
					if s.Restarts > 0 {
						run += fmt.Sprintf(", %d restart%s, last: %s", s.Restarts, plural(s.Restarts), s.LastExit)
					} else if s.State != "" {
						run += ", " + s.LastExit
					}
					fmt.Fprintf(g.out, "service %s/%s pid %d %s: %s (log %s)\n", n.Name, s.Name, s.PID, run, strings.Join(s.Command, " "), s.Log)
				}
			}
			if ins.Region != nil {
				printRegion(g.out, ins.Region)
			}
			for _, sec := range ins.Parts {
				printSection(g.out, sec)
			}
			return nil
		},
	}
	c.Flags().StringVar(&lab, "lab", "", "lab name (default: the only lab up)")
	return c
}

// printSection shows one lab part's inspect section as a table.
func printSection(out io.Writer, s engine.Section) {
	fmt.Fprintf(out, "\n%s\n", s.Title)
	if s.Error != "" {
		fmt.Fprintf(out, "  (%s)\n", s.Error)
		return
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, strings.Join(s.Columns, "\t"))
	for _, r := range s.Rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	w.Flush()
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
/run/labctl/<lab>/logs/). Without SERVICE, every service of the node. Lines
starting with "---" are labctl's own: each start, each end it saw, and
each restart by the lab's watcher ("labctl: restart N after exit: …").`,
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
