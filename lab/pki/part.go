package pki

import (
	"context"
	"fmt"
	"strings"

	"labctl/lab/state"
	"labctl/lab/topology"
)

// Part is the lab CA as a lab part (stages 5 and 8): the top-level pki
// block, its checks, and the certificates made at up before any service
// that serves them. lab/parts registers it.
type Part struct{}

// Block is the top-level key of the lab CA's block.
const Block = "pki"

// Config asks labctl to run a certificate authority for the lab: at up it
// makes a lab root CA, an intermediate CA and one server certificate for
// Names in the lab's state directory, and down removes them. Nothing is
// written to the host's trust store.
type Config struct {
	// Names are the server certificate's DNS names, each under a reserved
	// TLD (the lab's names).
	Names []string `yaml:"names" json:"names"`
}

// Name is the part's registry key.
func (Part) Name() string { return "pki" }

// Stage is the story stage it recreates.
func (Part) Stage() string {
	return "stages 5 and 8: the lab's certificate authority and the shop's server certificate"
}

// Blocks declares the top-level pki block.
func (Part) Blocks() []topology.Block {
	return []topology.Block{{Name: Block, Top: true, New: func() any { return new(Config) },
		Doc: "the lab CA: names of the server certificate"}}
}

// Of is the lab's pki block, nil when it has none.
func Of(t *topology.Topology) *Config {
	c, _ := t.Block(Block).(*Config)
	return c
}

// Names returns the certificate's names without trailing dots, as
// certificates carry them, or nil when the lab has no pki block.
func Names(t *topology.Topology) []string {
	c := Of(t)
	if c == nil {
		return nil
	}
	out := make([]string, len(c.Names))
	for i, n := range c.Names {
		if len(n) > 1 && n[len(n)-1] == '.' {
			n = n[:len(n)-1]
		}
		out[i] = n
	}
	return out
}

// Check checks the pki block.
func (Part) Check(c *topology.Check) {
	p := Of(c.Topology())
	if p == nil {
		return
	}
	if len(p.Names) == 0 {
		c.Add(topology.Path{"pki", "names"}, "pki needs at least one name for the server certificate")
		return
	}
	seen := map[string]bool{}
	for i, n := range p.Names {
		at := topology.Path{"pki", "names", i}
		fq, msg := topology.CheckDomain(n)
		switch {
		case msg != "":
			c.Add(at, "certificate name %s", msg)
		case fq == ".":
			c.Add(at, `"." is the root, not a host name`)
		case !topology.UnderReserved(fq):
			c.Add(at, "certificate name %s is not under a reserved TLD: %s", n, topology.ReservedWhy())
		case seen[fq]:
			c.Add(at, "certificate name %s is listed twice", n)
		}
		seen[fq] = true
	}
}

// Prepare makes (or keeps) the lab's CA and server certificate in its
// state directory; the message is "" when they were kept as they were.
func (Part) Prepare(_ context.Context, t *topology.Topology) (string, error) {
	names := Names(t)
	if len(names) == 0 {
		return "", nil
	}
	b, err := Ensure(state.PKIDir(t.Name), t.Name, names)
	if err != nil {
		return "", fmt.Errorf("lab %s: certificates: %w", t.Name, err)
	}
	if !b.Changed {
		return "", nil
	}
	return fmt.Sprintf("lab root CA %s; server certificate for %s", b.Root, strings.Join(names, ", ")), nil
}
