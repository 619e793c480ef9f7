package bgp

import "net/netip"

// fallover is fast external fallover: a session to a neighbor on a
// connected subnet goes down the moment every link holding that subnet is
// down (or the subnet disappears), instead of a hold time later, and comes
// back when a link does.
type fallover struct {
	neighbors []netip.Addr
	// direct are the neighbors ever seen on a connected subnet; only they
	// are managed (a multihop session is left to its hold timer).
	direct map[netip.Addr]bool
	// down are the neighbors fallover has disabled.
	down map[netip.Addr]bool
}

func newFallover(neighbors []netip.Addr) *fallover {
	return &fallover{neighbors: neighbors, direct: map[netip.Addr]bool{}, down: map[netip.Addr]bool{}}
}

// change is one neighbor to disable (Down) or enable again.
type change struct {
	Neighbor netip.Addr
	Down     bool
	Links    []string // the links of its subnet
}

// update compares the links with the last state and returns the neighbors
// whose session must go down or may come back up.
func (f *fallover) update(links []Link) []change {
	var out []change
	for _, n := range f.neighbors {
		var on []string
		up := false
		for _, l := range links {
			for _, a := range l.Addrs {
				if a.Bits() < a.Addr().BitLen() && a.Masked().Contains(n) && a.Addr() != n {
					on = append(on, l.Name)
					up = up || l.Up
					break
				}
			}
		}
		switch {
		case len(on) > 0:
			f.direct[n] = true
		case !f.direct[n]:
			continue // not on a connected subnet: not ours to judge
		}
		// A direct neighbor whose subnet is gone counts as down.
		down := !up
		if down != f.down[n] {
			f.down[n] = down
			out = append(out, change{Neighbor: n, Down: down, Links: on})
		}
	}
	return out
}
