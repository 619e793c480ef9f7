package topology

// PKI asks labctl to run a certificate authority for the lab: at up it
// makes a lab root CA, an intermediate CA and one server certificate for
// Names in the lab's state directory (lab/pki), and down removes them.
// Nothing is written to the host's trust store.
type PKI struct {
	// Names are the server certificate's DNS names, each under a reserved
	// TLD (the lab's names; see dns.go).
	Names []string `yaml:"names" json:"names"`
}

// pki checks the top-level pki block.
func (c *checker) pki() {
	p := c.t.PKI
	if p == nil {
		return
	}
	if len(p.Names) == 0 {
		c.add(path{"pki", "names"}, "pki needs at least one name for the server certificate")
		return
	}
	seen := map[string]bool{}
	for i, n := range p.Names {
		at := path{"pki", "names", i}
		fq, msg := checkDomain(n)
		switch {
		case msg != "":
			c.add(at, "certificate name %s", msg)
		case fq == ".":
			c.add(at, `"." is the root, not a host name`)
		case !underReserved(fq):
			c.add(at, "certificate name %s is not under a reserved TLD: %s", n, reservedWhy)
		case seen[fq]:
			c.add(at, "certificate name %s is listed twice", n)
		}
		seen[fq] = true
	}
}

// CertNames returns the pki names without trailing dots, as certificates
// carry them, or nil when the lab has no pki block.
func (t *Topology) CertNames() []string {
	if t.PKI == nil {
		return nil
	}
	out := make([]string, len(t.PKI.Names))
	for i, n := range t.PKI.Names {
		if len(n) > 1 && n[len(n)-1] == '.' {
			n = n[:len(n)-1]
		}
		out[i] = n
	}
	return out
}
