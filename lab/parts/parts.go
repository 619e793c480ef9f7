// Package parts is the one place labctl's lab parts are registered: one
// line each. The core (topology, plan, engine, doctor) finds them through
// lab/component and imports none of them; the CLI imports this package.
// Adding a lab part is a new package under lab/ plus its line here (see
// docs/adding-a-part.md).
package parts

import (
	"sync"

	"labctl/lab/bgp"
	"labctl/lab/component"
	"labctl/lab/firewall"
	"labctl/lab/pki"
	shop "labctl/lab/shop/part"
)

var once sync.Once

// Register registers every lab part, once.
func Register() {
	once.Do(func() {
		component.Register(bgp.Part{})      // stages 2 and 7: the internet (BGP, CGNAT)
		component.Register(pki.Part{})      // stages 5 and 8: the lab CA
		component.Register(firewall.Part{}) // stage 2: the security device
		component.Register(shop.Part{})     // stages 5-10: the shop's order path
	})
}
