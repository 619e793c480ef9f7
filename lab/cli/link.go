package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"labctl/lab/engine"
	"labctl/lab/topology"
)

func linkCmd(g *globals) *cobra.Command {
	var lab string
	c := &cobra.Command{
		Use:   "link down|up A B",
		Short: "Cut or mend the cable between two nodes",
		Long: `Set both ends of the link between two nodes administratively down (a cut
cable) or back up. A and B are node names, or node:iface when two nodes
share several links. Down changes nothing else: the kernel drops the
routes through the two interfaces (and their IPv6 addresses), routing
protocols see the failure as they would a real one (a BGP speaker drops the
sessions over that link at once and withdraws what it learned there), and
the lab records the cut, so 'labctl status' lists it and nothing brings it
back but 'link up' or 'up'. Up re-converges the two nodes from the lab's
recorded topology: both ends up, and every address and route the kernel
dropped put back (other cut links stay down). 'labctl up' mends every cut.`,
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
			eng := g.engine(false)
			if g.format == "json" { // one document, not a stream of events
				eng = engine.New(engine.Options{})
			}
			res, err := eng.Link(cmd.Context(), lab, a, b, up)
			if err != nil {
				return err
			}
			if g.format == "json" {
				steps := []string{}
				for _, s := range res.Plan.Steps {
					steps = append(steps, s.String())
				}
				return g.json(map[string]any{"lab": lab, "link": []string{a.String(), b.String()}, "up": up, "changes": res.Changes, "steps": steps})
			}
			if up {
				fmt.Fprintf(g.out, "%s ── %s up: %d changes\n", a, b, res.Changes)
			} else {
				fmt.Fprintf(g.out, "%s ── %s down (cut until link up or up)\n", a, b)
			}
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
