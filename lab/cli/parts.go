package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"labctl/lab/component"
	"labctl/lab/topology"
)

// CommandsPart is a lab part (lab/component) with verbs of its own; they
// are added to labctl's root command. Out is where a verb writes, JSON
// whether --format json was given.
type CommandsPart interface {
	component.Part
	Commands(out Output) []*cobra.Command
}

// Output is what a part's verb needs of labctl's global flags.
type Output struct {
	W    io.Writer
	JSON func() bool
}

// PartInfo is one line of `labctl parts`.
type PartInfo struct {
	Name   string   `json:"name"`
	Stage  string   `json:"stage"`
	Kinds  []string `json:"kinds"`
	Blocks []string `json:"blocks"`
	Hooks  []string `json:"hooks"`
}

func partsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "parts",
		Short: "List the lab parts labctl is built from: their kinds, blocks and hooks",
		Long: `Every lab part (the security device, the shop, …) is one package that
registers itself in lab/parts. This lists each with the story stage it
recreates, the node kinds and topology blocks it adds to the language,
and the steps of a lab's life it takes part in (check, expand, plan, apply,
observe, inspect, doctor, verbs).`,
		Example: `  labctl parts
  labctl parts --format json | jq '.[].kinds[]'`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			infos := partInfos()
			if g.format == "json" {
				return g.json(infos)
			}
			w := tabwriter.NewWriter(g.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "PART\tKINDS\tBLOCKS\tHOOKS\tSTAGE")
			for _, p := range infos {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", p.Name, orDash(p.Kinds), orDash(p.Blocks), strings.Join(p.Hooks, ","), p.Stage)
			}
			return w.Flush()
		},
	}
}

func orDash(ss []string) string {
	if len(ss) == 0 {
		return "-"
	}
	return strings.Join(ss, ",")
}

// partInfos describes every registered part by the interfaces it has.
func partInfos() []PartInfo {
	out := []PartInfo{}
	for _, p := range component.All() {
		pi := PartInfo{Name: p.Name(), Stage: p.Stage(), Kinds: []string{}, Blocks: []string{}, Hooks: []string{}}
		if k, ok := p.(topology.KindsPart); ok {
			for _, x := range k.Kinds() {
				pi.Kinds = append(pi.Kinds, x.Name)
			}
		}
		if b, ok := p.(topology.BlocksPart); ok {
			for _, x := range b.Blocks() {
				pi.Blocks = append(pi.Blocks, x.Name)
			}
		}
		pi.Hooks = hooksOf(p)
		out = append(out, pi)
	}
	return out
}
