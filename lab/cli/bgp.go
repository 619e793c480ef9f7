package cli

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"labctl/lab/bgp"
	"labctl/lab/state"
	"labctl/lab/topology"
)

func bgpCmd(g *globals) *cobra.Command {
	var lab string
	var wait time.Duration
	c := &cobra.Command{
		Use:   "bgp [NODE [neighbors|rib|fib]]",
		Short: "Show BGP sessions, the RIB and the routes installed in the kernel",
		Long: `Every router with a bgp block runs a BGP speaker (GoBGP, embedded in
'labctl serve bgp') inside its namespace. It installs the best path of each
prefix it learns into the kernel as a route with proto bgp.

  labctl bgp                    one line per speaker: sessions up, paths, routes
  labctl bgp NODE               its neighbors, RIB and kernel routes
  labctl bgp NODE neighbors     sessions: neighbor, AS, eBGP/iBGP, state, prefixes
  labctl bgp NODE rib           every path: prefix, next hop, AS path, best (*>)
  labctl bgp NODE fib           routes the speaker put in the kernel (proto bgp)

--wait D waits up to D until every session is established, every best path
is in the kernel and two polls agree, then prints how long that took. A
session over a link cut with 'labctl link down' is expected down: it is
marked "cut" and not waited for.`,
		Example: `  sudo labctl bgp --wait 30s
  sudo labctl bgp c2 rib
  sudo labctl exec c2 -- ip route show proto bgp
  sudo labctl bgp border1 neighbors --format json | jq '.[0].neighbors'`,
		Args:              cobra.RangeArgs(0, 2),
		ValidArgsFunction: completeNodes,
		RunE: func(cmd *cobra.Command, args []string) error {
			what := ""
			if len(args) == 2 {
				what = args[1]
				if what != "neighbors" && what != "rib" && what != "fib" {
					return fmt.Errorf("%q: show neighbors, rib or fib", what)
				}
			}
			if err := requireRoot("bgp", "it reads the speakers' sockets and the lab's namespaces"); err != nil {
				return err
			}
			lab, err := resolveLab(lab)
			if err != nil {
				return err
			}
			var sp []*bgp.Speaker
			if wait > 0 {
				var took time.Duration
				sp, took, err = bgp.Wait(cmd.Context(), lab, wait)
				if err != nil {
					return err
				}
				if g.format != "json" {
					fmt.Fprintf(g.out, "converged in %s\n", round(took))
				}
			}
			if len(args) > 0 || sp == nil {
				if sp, err = bgp.Status(cmd.Context(), lab, args[:min(len(args), 1)]); err != nil {
					return err
				}
			}
			if g.format == "json" {
				return g.json(sp)
			}
			if len(args) == 0 {
				return bgpSummary(g.out, sp)
			}
			rec, err := state.Load(lab)
			if err != nil {
				return err
			}
			return bgpNode(g.out, rec.Topology, sp[0], what)
		},
	}
	c.Flags().StringVar(&lab, "lab", "", "lab name (default: the only lab up)")
	c.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for BGP to converge (e.g. 30s)")
	return c
}

func bgpSummary(out io.Writer, sp []*bgp.Speaker) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tAS\tROUTER-ID\tSESSIONS\tPREFIXES\tBEST LEARNED\tIN KERNEL\tSTATE")
	for _, s := range sp {
		st := "converged"
		switch {
		case s.Error != "":
			st = "error: " + s.Error
		case !s.Converged():
			st = "converging"
		}
		prefixes := map[string]bool{}
		for _, p := range s.RIB {
			prefixes[p.Prefix] = true
		}
		sessions := fmt.Sprintf("%d/%d", s.Established(), len(s.Neighbors))
		if len(s.Cut) > 0 {
			sessions += fmt.Sprintf(" (%d cut)", len(s.Cut))
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%d\t%d\t%d\t%s\n", s.Node, s.ASN, s.RouterID,
			sessions, len(prefixes), s.Learned(), len(s.FIB), st)
	}
	return w.Flush()
}

// bgpNode prints one speaker; what is "" (all), neighbors, rib or fib.
func bgpNode(out io.Writer, t *topology.Topology, s *bgp.Speaker, what string) error {
	if s.Error != "" {
		return fmt.Errorf("%s: %s", s.Node, s.Error)
	}
	owner := t.IPv4Owners()
	name := func(addr string) string {
		if a, err := netip.ParseAddr(addr); err == nil && owner[a] != "" {
			return addr + " (" + owner[a] + ")"
		}
		return addr
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	if what == "" {
		fmt.Fprintf(w, "%s: AS %d, router-id %s\n", s.Node, s.ASN, s.RouterID)
	}
	if what == "" || what == "neighbors" {
		if what == "" {
			fmt.Fprintln(w, "\nneighbors")
		}
		fmt.Fprintln(w, "NEIGHBOR\tAS\tTYPE\tSTATE\tUP\tRECEIVED\tACCEPTED\tSENT")
		for _, n := range s.Neighbors {
			up := "-"
			if n.State == "established" {
				up = n.Uptime.Round(time.Second).String()
			}
			st := n.State
			if s.IsCut(n.Address) {
				st += " (link cut)"
			}
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%d\t%d\t%d\n", name(n.Address), n.ASN, n.Type, st, up, n.Received, n.Accepted, n.Advertised)
		}
	}
	if what == "" || what == "rib" {
		if what == "" {
			fmt.Fprintln(w, "\nrib (*> best)")
		}
		fmt.Fprintln(w, "\tPREFIX\tNEXT HOP\tAS PATH\tLOCAL-PREF\tFROM")
		for _, p := range s.RIB {
			mark, nh, from, path := "", p.NextHop, name(p.From), asPath(p.ASPath)
			if p.Best {
				mark = "*>"
			}
			if p.Local {
				nh, from = "-", "originated here"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\n", mark, p.Prefix, nh, path, p.LocalPref, from)
		}
	}
	if what == "" || what == "fib" {
		if what == "" {
			fmt.Fprintln(w, "\nkernel (proto bgp)")
		}
		fmt.Fprintln(w, "PREFIX\tVIA\tDEV\tMETRIC")
		for _, r := range s.FIB {
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\n", r.Prefix, name(r.Via), r.Dev, r.Metric)
		}
	}
	return w.Flush()
}

func asPath(p []uint32) string {
	if len(p) == 0 {
		return "(own AS)"
	}
	s := make([]string, len(p))
	for i, a := range p {
		s[i] = fmt.Sprint(a)
	}
	return strings.Join(s, " ")
}
