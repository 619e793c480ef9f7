package bgp

import (
	"encoding/json"
	"net/netip"
	"slices"

	"labctl/lab/topology"
)

// expandBGP resolves every bgp block of a validated lab: the defaults, the
// AS's own prefixes, each neighbor's node, and the speaker's service with
// the resolved block as its configuration. Running it again changes
// nothing.
func expand(t *topology.Topology) {
	holders := t.IPv4Owners()
	own := map[uint32][]netip.Prefix{}
	for _, name := range t.NodeNames() {
		if b := Of(t.Nodes[name]); b != nil {
			for _, s := range b.Networks {
				if pr, err := netip.ParsePrefix(s); err == nil {
					own[b.ASN] = append(own[b.ASN], pr)
				}
			}
		}
	}
	for asn, prs := range own {
		slices.SortFunc(prs, func(a, b netip.Prefix) int {
			if c := a.Addr().Compare(b.Addr()); c != 0 {
				return c
			}
			return a.Bits() - b.Bits()
		})
		own[asn] = slices.Compact(prs)
	}
	for _, name := range t.NodeNames() {
		n := t.Nodes[name]
		b := Of(n)
		if b == nil {
			continue
		}
		if b.Export == "" {
			b.Export = ExportAll
		}
		if b.Timers == nil {
			b.Timers = &Timers{}
		}
		b.Timers.ConnectRetry = orDefault(b.Timers.ConnectRetry, DefaultRetry)
		b.Timers.Hold = orDefault(b.Timers.Hold, DefaultHold)
		b.Timers.Keepalive = orDefault(b.Timers.Keepalive, DefaultKeepalive)
		if b.RouterID == "" {
			if a, ok := topology.LowestIPv4(n); ok {
				b.RouterID = a.String()
			}
		}
		b.Own = nil
		if b.Export == ExportOwn {
			for _, pr := range own[b.ASN] {
				b.Own = append(b.Own, pr.String())
			}
		}
		for _, nb := range b.Neighbors {
			if a, err := netip.ParseAddr(nb.Address); err == nil {
				nb.Node = holders[a]
			}
			nb.Local = ""
			if p := t.Nodes[nb.Node]; p != nil && Of(p) != nil {
				for _, back := range Of(p).Neighbors {
					if a, err := netip.ParseAddr(back.Address); err == nil && topology.OwnAddr(n, a) {
						nb.Local = a.String()
						break
					}
				}
			}
		}
		sock := Socket(t.Name, name)
		b.API = "unix://" + sock
		cfg, err := json.Marshal(b)
		if err != nil {
			panic(err) // plain strings and numbers: cannot fail
		}
		if n.Services == nil {
			n.Services = map[string]*topology.Service{}
		}
		n.Services[Service] = &topology.Service{
			Command: []string{"labctl", "serve", "bgp"},
			Config:  cfg,
			Ready:   &topology.Ready{File: sock},
		}
	}
}
