package bgp

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"labctl/lab/netns"
)

// Neighbor is one BGP session as the speaker reports it.
type Neighbor struct {
	Address string `json:"address"`
	ASN     uint32 `json:"asn"`
	Type    string `json:"type"` // "ebgp" or "ibgp"
	// State is the session state, lowercase: established, active,
	// connect, idle, opensent or openconfirm.
	State  string        `json:"state"`
	Uptime time.Duration `json:"uptime"` // since established (0 otherwise)
	// Prefixes received from the neighbor, accepted by import policy, and
	// advertised to it.
	Received   uint64 `json:"received"`
	Accepted   uint64 `json:"accepted"`
	Advertised uint64 `json:"advertised"`
}

// Path is one path of a RIB.
type Path struct {
	Prefix  string   `json:"prefix"`
	NextHop string   `json:"next_hop"`
	ASPath  []uint32 `json:"as_path"`
	Best    bool     `json:"best"`
	// Local means originated by this speaker (a network of its own).
	Local bool `json:"local"`
	// LocalPref is the path's LOCAL_PREF, or 100 (the default best-path
	// selection assumes) when it carries none.
	LocalPref uint32 `json:"local_pref"`
	From      string `json:"from"` // the neighbor it came from, "" if local
}

// Route is a route a speaker installed in the kernel (proto bgp).
type Route struct {
	Prefix string `json:"prefix"`
	Via    string `json:"via"`
	Dev    string `json:"dev"`
	Metric int    `json:"metric"`
}

// Client talks to a running speaker over its gRPC API.
type Client struct {
	conn *grpc.ClientConn
	api  api.GobgpApiClient
}

// Dial connects to a speaker's API: "unix:///path" or a plain path. It
// checks that the speaker answers before returning.
func Dial(ctx context.Context, addr string) (*Client, error) {
	target := addr
	if !strings.Contains(target, "://") {
		target = "unix://" + target
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("bgp speaker %s: %w", addr, err)
	}
	c := &Client{conn: conn, api: api.NewGobgpApiClient(conn)}
	if _, err := c.api.GetBgp(ctx, &api.GetBgpRequest{}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("bgp speaker %s: %w", addr, err)
	}
	return c, nil
}

// recvAll reads a server stream to its end.
func recvAll[T any](recv func() (T, error)) ([]T, error) {
	var out []T
	for {
		r, err := recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Neighbors lists the speaker's sessions, sorted by address.
func (c *Client) Neighbors(ctx context.Context) ([]Neighbor, error) {
	st, err := c.api.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true})
	if err != nil {
		return nil, err
	}
	rs, err := recvAll(st.Recv)
	if err != nil {
		return nil, err
	}
	out := make([]Neighbor, len(rs))
	for i, r := range rs {
		out[i] = toNeighbor(r.Peer, time.Now())
	}
	sort.Slice(out, func(i, j int) bool { return addrLess(out[i].Address, out[j].Address) })
	return out, nil
}

func toNeighbor(p *api.Peer, now time.Time) Neighbor {
	n := Neighbor{State: "idle"}
	local := uint32(0)
	if c := p.GetConf(); c != nil {
		n.Address, n.ASN, local = c.NeighborAddress, c.PeerAsn, c.LocalAsn
	}
	if s := p.GetState(); s != nil {
		if n.Address == "" {
			n.Address = s.NeighborAddress
		}
		if n.ASN == 0 {
			n.ASN = s.PeerAsn
		}
		if local == 0 {
			local = s.LocalAsn
		}
		n.State = stateName(s.SessionState)
	}
	n.Type = "ebgp"
	if n.ASN == local {
		n.Type = "ibgp"
	}
	if n.State == "established" {
		if up := p.GetTimers().GetState().GetUptime(); up != nil && up.Seconds > 0 {
			n.Uptime = max(now.Sub(up.AsTime()), 0)
		}
	}
	for _, af := range p.GetAfiSafis() {
		s := af.GetState()
		f := s.GetFamily()
		if s == nil || f.GetAfi() != api.Family_AFI_IP || f.GetSafi() != api.Family_SAFI_UNICAST {
			continue
		}
		n.Received, n.Accepted = s.Received, s.Accepted
		if n.State == "established" {
			n.Advertised = s.Advertised
		}
	}
	return n
}

func stateName(s api.PeerState_SessionState) string {
	if s == api.PeerState_UNKNOWN {
		return "idle"
	}
	return strings.ToLower(s.String())
}

// RIB lists the global IPv4 unicast RIB: every path, sorted by prefix,
// the best path first within a prefix.
func (c *Client) RIB(ctx context.Context) ([]Path, error) {
	return c.list(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: ipv4Unicast})
}

// AdjOut lists what the speaker sends to a neighbor, after export policy
// (next hops as the neighbor receives them).
func (c *Client) AdjOut(ctx context.Context, neighbor string) ([]Path, error) {
	return c.list(ctx, &api.ListPathRequest{TableType: api.TableType_ADJ_OUT, Name: neighbor, Family: ipv4Unicast})
}

func (c *Client) list(ctx context.Context, req *api.ListPathRequest) ([]Path, error) {
	st, err := c.api.ListPath(ctx, req)
	if err != nil {
		return nil, err
	}
	rs, err := recvAll(st.Recv)
	if err != nil {
		return nil, err
	}
	dsts := make([]*api.Destination, len(rs))
	for i, r := range rs {
		dsts[i] = r.Destination
	}
	return toPaths(dsts), nil
}

var ipv4Unicast = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}

// toPaths flattens destinations into paths, sorted by prefix with the best
// path first (GoBGP lists a destination's best path first).
func toPaths(dsts []*api.Destination) []Path {
	var out []Path
	for _, d := range dsts {
		for _, p := range d.GetPaths() {
			if p.GetIsWithdraw() {
				continue
			}
			out = append(out, toPath(d.Prefix, p))
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Prefix != out[j].Prefix {
			return prefixLess(out[i].Prefix, out[j].Prefix)
		}
		return out[i].Best && !out[j].Best
	})
	return out
}

func toPath(prefix string, p *api.Path) Path {
	out := Path{Prefix: prefix, Best: p.Best, LocalPref: 100}
	if pfx, err := p.GetNlri().UnmarshalNew(); err == nil {
		if x, ok := pfx.(*api.IPAddressPrefix); ok {
			out.Prefix = fmt.Sprintf("%s/%d", x.Prefix, x.PrefixLen)
		}
	}
	for _, a := range p.GetPattrs() {
		m, err := a.UnmarshalNew()
		if err != nil {
			continue
		}
		switch x := m.(type) {
		case *api.NextHopAttribute:
			out.NextHop = x.NextHop
		case *api.MpReachNLRIAttribute:
			if out.NextHop == "" && len(x.NextHops) > 0 {
				out.NextHop = x.NextHops[0]
			}
		case *api.AsPathAttribute:
			for _, s := range x.Segments {
				out.ASPath = append(out.ASPath, s.Numbers...)
			}
		case *api.LocalPrefAttribute:
			out.LocalPref = x.LocalPref
		}
	}
	// GoBGP names a locally originated path's source "<nil>".
	if ip, err := netip.ParseAddr(p.NeighborIp); err == nil {
		out.From = ip.String()
	} else {
		out.Local = true
	}
	return out
}

// FIB lists the proto-bgp routes of a lab namespace's main table, sorted
// by prefix.
func FIB(ns string) ([]Route, error) {
	h, err := netns.Handle(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	rs, err := retry(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN, Protocol: Protocol},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return nil, fmt.Errorf("routes of %s: %w", ns, err)
	}
	names := map[int]string{}
	out := make([]Route, 0, len(rs))
	for _, r := range rs {
		kr := fromNetlink(r)
		name, ok := names[kr.Dev]
		if !ok {
			if l, err := h.LinkByIndex(kr.Dev); err == nil {
				name = l.Attrs().Name
			}
			names[kr.Dev] = name
		}
		rt := Route{Prefix: kr.Prefix.String(), Dev: name, Metric: kr.Metric}
		if kr.Via.IsValid() {
			rt.Via = kr.Via.String()
		}
		out = append(out, rt)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Prefix != out[j].Prefix {
			return prefixLess(out[i].Prefix, out[j].Prefix)
		}
		return out[i].Metric < out[j].Metric
	})
	return out, nil
}

// prefixLess orders prefixes numerically (10.0.2.0/24 before 10.0.10.0/24),
// unparsable ones last, by text.
func prefixLess(a, b string) bool {
	pa, ea := netip.ParsePrefix(a)
	pb, eb := netip.ParsePrefix(b)
	switch {
	case ea == nil && eb == nil:
		return comparePrefix(pa, pb) < 0
	case ea == nil:
		return true
	case eb == nil:
		return false
	}
	return a < b
}

func addrLess(a, b string) bool {
	pa, ea := netip.ParseAddr(a)
	pb, eb := netip.ParseAddr(b)
	switch {
	case ea == nil && eb == nil:
		return pa.Less(pb)
	case ea == nil:
		return true
	case eb == nil:
		return false
	}
	return a < b
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func sortPrefixes(ps []netip.Prefix) { slices.SortFunc(ps, comparePrefix) }
