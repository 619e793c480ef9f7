package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"labctl/lab/links"
	"labctl/lab/topology"
)

func linkCmd(g *globals) *cobra.Command {
	var lab string
	c := &cobra.Command{
		Use:   "link down|up A B",
		Short: "Cut or mend the cable between two nodes",
		Long: `Set both ends of the link between two nodes administratively down (a cut
cable) or back up. A and B are node names, or node:iface when two nodes
share several links. Nothing else changes: routing protocols see the
failure as they would a real one (a BGP speaker drops the sessions over
that link at once and withdraws what it learned there), and the next
'labctl up' brings the link back as the topology says.`,
		Example: `  sudo labctl link down c2 border1     # the cloud loses carrier A
  sudo labctl exec ue1 -- traceroute -n 203.0.113.10
  sudo labctl link up c2 border1`,
		ValidArgs: []string{"down", "up"},
		Args:      cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			up := false
			switch args[0] {
			case "down":
			case "up":
				up = true
			default:
				return fmt.Errorf("write: labctl link down|up A B (not %q)", args[0])
			}
			lab, rec, err := labRecord(lab)
			if err != nil {
				return err
			}
			a, b, err := findLink(rec.Topology, args[1], args[2])
			if err != nil {
				return fmt.Errorf("lab %s: %w", lab, err)
			}
			for _, e := range []topology.Endpoint{a, b} {
				if err := links.SetLinkUp(topology.Namespace(lab, e.Node), e.Iface, up); err != nil {
					return err
				}
			}
			if g.format == "json" {
				return g.json(map[string]any{"lab": lab, "link": []string{a.String(), b.String()}, "up": up})
			}
			fmt.Fprintf(g.out, "%s ── %s %s\n", a, b, args[0])
			return nil
		},
	}
	c.Flags().StringVar(&lab, "lab", "", "lab name (default: the only lab up)")
	return c
}

// findLink finds the one link between a and b ("node" or "node:iface").
func findLink(t *topology.Topology, a, b string) (topology.Endpoint, topology.Endpoint, error) {
	match := func(e topology.Endpoint, s string) bool {
		n, i, ok := strings.Cut(s, ":")
		return e.Node == n && (!ok || e.Iface == i)
	}
	var found [][2]topology.Endpoint
	for _, l := range t.Links {
		x, y := l.Ends()
		if match(x, a) && match(y, b) {
			found = append(found, [2]topology.Endpoint{x, y})
		} else if match(y, a) && match(x, b) {
			found = append(found, [2]topology.Endpoint{y, x})
		}
	}
	switch len(found) {
	case 0:
		return topology.Endpoint{}, topology.Endpoint{}, fmt.Errorf("no link between %s and %s", a, b)
	case 1:
		return found[0][0], found[0][1], nil
	}
	var s []string
	for _, f := range found {
		s = append(s, f[0].String()+" ── "+f[1].String())
	}
	return topology.Endpoint{}, topology.Endpoint{}, fmt.Errorf("%s and %s share %d links (%s): name the interfaces, node:iface", a, b, len(found), strings.Join(s, ", "))
}
