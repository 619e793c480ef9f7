package plan_test

import (
	"slices"
	"strings"
	"testing"

	"labctl/lab/plan"
)

// A link cut on purpose (`labctl link down`) stays down while the rest of
// the lab converges, and nothing that needs it up is planned; once the cut
// is forgotten, the link, its IPv6 address and its routes come back.
func TestCutLinkIsKeptDown(t *testing.T) {
	top := load(t, "sample")
	w := perfect(t, top)
	// What an administrative down does in the kernel: the routes through
	// the interface go, and so do its IPv6 addresses.
	for _, e := range [][2]string{{"h1", "eth0"}, {"s1", "p1"}} {
		w.linkDown(w.nsName(e[0]), e[1])
		l := w.ns(e[0]).Links[e[1]]
		l.Addrs = slices.DeleteFunc(l.Addrs, func(a string) bool { return strings.Contains(a, ":") })
	}
	// Something else drifted meanwhile: h3 lost its route.
	w.ns("h3").Routes = nil

	w.obs.Cut = map[string]bool{"h1:eth0": true, "s1:p1": true}
	expectSteps(t, plan.Compute(top, w.obs),
		"routes: + route h3 default via 10.0.1.1")

	w.obs.Cut = nil
	expectSteps(t, plan.Compute(top, w.obs),
		"links: ~ link h1:eth0 mtu 1500 up",
		"links: ~ link s1:p1 mtu 1500 up",
		"addresses: + addr h1:eth0 fd00:1::10/64",
		"routes: + route h1 default via 10.0.1.1",
		"routes: + route h1 default6 via fd00:1::1",
		"routes: + route h3 default via 10.0.1.1")
}
