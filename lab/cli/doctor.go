package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"labctl/lab/doctor"
)

func doctorCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check the kernel features and programs labctl needs",
		Long: `Probe this machine for what labs need: namespaces, veth, bridges, VXLAN,
iptables/nftables NAT, the Open vSwitch datapath (kernel module, or the
userspace fallback), tc qdiscs and netem, and the programs labctl runs.
Kernel features are tried for real in a throwaway namespace. Every missing
piece comes with the command that installs it. Exits 1 if something
required is missing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			checks := doctor.Run(cmd.Context())
			missing := 0
			for _, c := range checks {
				if !c.OK && c.Required {
					missing++
				}
			}
			if g.format == "json" {
				if err := g.json(checks); err != nil {
					return err
				}
			} else {
				w := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
				group := ""
				for _, c := range checks {
					if c.Group != group {
						group = c.Group
						fmt.Fprintf(w, "%s\n", group)
					}
					mark := "✓"
					if !c.OK {
						mark = "✗"
						if !c.Required {
							mark = "-"
						}
					}
					fmt.Fprintf(w, "  %s %s\t%s\n", mark, c.Name, c.Detail)
					if !c.OK && c.Fix != "" {
						fmt.Fprintf(w, "      fix:\t%s\n", c.Fix)
					}
				}
				w.Flush()
			}
			if missing > 0 {
				return fmt.Errorf("%d required check(s) failed", missing)
			}
			return nil
		},
	}
}
