// Package bgp is labctl's BGP speaker: GoBGP embedded as a library, run as
// `labctl serve bgp` inside a router's namespace. It opens the sessions of
// a topology.BGP block, announces the router's networks, applies the
// export rules (export: own, next-hop-self) as one global export policy,
// installs every best path learned from a neighbor in the kernel (proto
// bgp, metric 20, next hops resolved recursively as zebra does) and drops
// a session the moment the link under it goes down (fast external
// fallover). Client reads a running speaker's sessions and RIBs over its
// gRPC socket; FIB reads what it installed.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"

	"labctl/lab/topology"
)

// options are knobs for tests, which run several speakers on one host.
type options struct {
	port int // BGP port to listen on and to connect to (default 179)
	// address, when set, is the only address the speaker listens on and
	// the source address of its sessions.
	address string
	tick    time.Duration // period of the kernel and link checks (default 1s)
	// GoBGP's StartBgp sets package globals that every BgpServer of the
	// process reads, so tests running several speakers in one process
	// start them all first (started is called after StartBgp), then let
	// them go on together (gate closes).
	started func()
	gate    <-chan struct{}
}

// Run runs a speaker for cfg until ctx is done, with k as its kernel.
// At start it deletes every proto-bgp route (a crashed speaker's
// leftovers); at exit it closes its sessions and deletes the routes it
// installed.
func Run(ctx context.Context, cfg *Config, k Kernel, log *slog.Logger) error {
	return run(ctx, cfg, k, log, options{})
}

func run(ctx context.Context, cfg *Config, k Kernel, log *slog.Logger, o options) (err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.port == 0 {
		o.port = 179
	}
	if o.tick == 0 {
		o.tick = time.Second
	}
	nbrs, err := check(cfg)
	if err != nil {
		return err
	}
	links, lerr := k.Links()
	routerID := cfg.RouterID
	if routerID == "" {
		if routerID = lowestIPv4(links); routerID == "" {
			return errors.Join(errors.New("bgp: no router-id and no IPv4 address to take it from"), lerr)
		}
	}

	f := newFIB(k, log)
	f.names(links)
	if err := f.flush(); err != nil {
		return fmt.Errorf("bgp: delete stale routes: %w", err)
	}
	defer func() {
		if ferr := f.flush(); ferr != nil {
			err = errors.Join(err, fmt.Errorf("bgp: delete routes at exit: %w", ferr))
		}
	}()

	fatal := make(chan error, 1)
	sopts := []server.ServerOption{server.LoggerOption(newGobgpLogger(log, fatal))}
	sock := socketPath(cfg.API)
	if sock != "" {
		if err := os.Remove(sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("bgp: remove stale socket: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
			return fmt.Errorf("bgp: %w", err)
		}
		sopts = append(sopts, server.GrpcListenAddress("unix://"+sock))
	}
	s := server.NewBgpServer(sopts...)
	go s.Serve()
	defer func() {
		s.Stop() // closes the sessions (CEASE) and the API
		if sock != "" {
			os.Remove(sock)
		}
	}()

	listen := "0.0.0.0"
	if o.address != "" {
		listen = o.address
	}
	if err := s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:             cfg.ASN,
		RouterId:        routerID,
		ListenPort:      int32(o.port),
		ListenAddresses: []string{listen},
	}}); err != nil {
		return fmt.Errorf("bgp: start: %w", err)
	}
	if o.started != nil {
		o.started()
	}
	if o.gate != nil {
		select {
		case <-o.gate:
		case <-ctx.Done():
			return nil
		}
	}
	if err := setPolicy(ctx, s, cfg); err != nil {
		return fmt.Errorf("bgp: export policy: %w", err)
	}
	for _, n := range cfg.Neighbors {
		if err := s.AddPeer(ctx, &api.AddPeerRequest{Peer: peerConf(cfg, routerID, n, o)}); err != nil {
			return fmt.Errorf("bgp: neighbor %s: %w", n.Address, err)
		}
	}
	for _, nw := range cfg.Networks {
		p, err := networkPath(nw)
		if err == nil {
			_, err = s.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: p})
		}
		if err != nil {
			return fmt.Errorf("bgp: network %s: %w", nw, err)
		}
	}
	log.Info("bgp speaker up", "asn", cfg.ASN, "router_id", routerID, "neighbors", len(cfg.Neighbors), "networks", len(cfg.Networks), "api", sock)

	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel() // stop the watchers before the server
	events := make(chan struct{}, 1)
	kick := func() {
		select {
		case events <- struct{}{}:
		default:
		}
	}
	fo := newFallover(nbrs)
	ss := newSessions(s, log, fo)
	err = s.WatchEvent(wctx, &api.WatchEventRequest{
		Peer:  &api.WatchEventRequest_Peer{},
		Table: &api.WatchEventRequest_Table{Filters: []*api.WatchEventRequest_Table_Filter{{Type: api.WatchEventRequest_Table_Filter_BEST, Init: true}}},
	}, func(r *api.WatchEventResponse) {
		if pe := r.GetPeer(); pe != nil {
			ss.event(pe)
		}
		kick()
	})
	if err != nil {
		return fmt.Errorf("bgp: watch: %w", err)
	}
	linkEvents, err := k.Watch(wctx)
	if err != nil {
		log.Warn("cannot watch links, polling them every tick", "err", err)
	}

	var lastErr string
	report := func(err error) {
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if msg != lastErr && msg != "" {
			log.Warn("sync failed", "err", msg)
		}
		lastErr = msg
	}
	pass := func() {
		links, lerr := k.Links()
		if lerr == nil {
			f.names(links)
		}
		serr := ss.sync(ctx, links)
		paths, err := rib(ctx, s)
		if err == nil {
			err = f.reconcile(desired(paths))
		}
		report(errors.Join(lerr, serr, err))
	}
	tick := time.NewTicker(o.tick)
	defer tick.Stop()
	pass()
	for {
		select {
		case <-ctx.Done():
			log.Info("bgp speaker stopping")
			return nil
		case err := <-fatal:
			return err
		case <-events:
		case <-linkEvents:
		case <-tick.C:
		}
		pass()
	}
}

// check validates cfg and returns its neighbor addresses.
func check(cfg *Config) ([]netip.Addr, error) {
	if cfg == nil {
		return nil, errors.New("bgp: no configuration")
	}
	if cfg.ASN == 0 {
		return nil, errors.New("bgp: asn is 0")
	}
	switch cfg.Export {
	case "", ExportAll, ExportOwn:
	default:
		return nil, fmt.Errorf("bgp: export %q: want %s or %s", cfg.Export, ExportAll, ExportOwn)
	}
	var out []netip.Addr
	for _, n := range cfg.Neighbors {
		a, err := netip.ParseAddr(n.Address)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("bgp: neighbor %q is not an IPv4 address", n.Address)
		}
		if n.ASN == 0 {
			return nil, fmt.Errorf("bgp: neighbor %s has no asn", n.Address)
		}
		out = append(out, a)
	}
	return out, nil
}

// socketPath turns the API address ("unix:///path" or a path) into the
// socket's path; "" means no API.
func socketPath(api string) string {
	return strings.TrimPrefix(api, "unix://")
}

func lowestIPv4(links []Link) string {
	var best netip.Addr
	for _, l := range links {
		for _, a := range l.Addrs {
			ip := a.Addr()
			if ip.Is4() && !ip.IsLoopback() && (!best.IsValid() || ip.Less(best)) {
				best = ip
			}
		}
	}
	if !best.IsValid() {
		return ""
	}
	return best.String()
}

func seconds(d topology.Duration, def uint64) uint64 {
	if s := uint64(time.Duration(d) / time.Second); s > 0 {
		return s
	}
	return def
}

func peerConf(cfg *Config, routerID string, n *Peer, o options) *api.Peer {
	t := cfg.Timers
	if t == nil {
		t = &Timers{}
	}
	local := o.address
	if local == "" {
		local = n.Local // the address the neighbor knows this router by
	}
	p := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: n.Address, PeerAsn: n.ASN, LocalAsn: cfg.ASN},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      seconds(t.ConnectRetry, DefaultRetry),
			HoldTime:          seconds(t.Hold, DefaultHold),
			KeepaliveInterval: seconds(t.Keepalive, DefaultKeepalive),
			// After a reset (see sessions) the session waits 1 s
			// before connecting, not GoBGP's default 30 s.
			IdleHoldTimeAfterReset: 1,
		}},
		AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: ipv4Unicast, Enabled: true}}},
		Transport: &api.Transport{
			RemotePort:   uint32(o.port),
			LocalAddress: local,
		},
	}
	if n.RouteReflectorClient {
		p.RouteReflector = &api.RouteReflector{RouteReflectorClient: true, RouteReflectorClusterId: routerID}
	}
	return p
}

func networkPath(prefix string) (*api.Path, error) {
	pfx, err := netip.ParsePrefix(prefix)
	if err != nil || !pfx.Addr().Is4() {
		return nil, fmt.Errorf("not an IPv4 prefix")
	}
	pfx = pfx.Masked()
	nlri, err := anypb.New(&api.IPAddressPrefix{Prefix: pfx.Addr().String(), PrefixLen: uint32(pfx.Bits())})
	if err != nil {
		return nil, err
	}
	origin, err := anypb.New(&api.OriginAttribute{Origin: 0}) // IGP
	if err != nil {
		return nil, err
	}
	nh, err := anypb.New(&api.NextHopAttribute{NextHop: "0.0.0.0"})
	if err != nil {
		return nil, err
	}
	return &api.Path{Family: ipv4Unicast, Nlri: nlri, Pattrs: []*anypb.Any{origin, nh}}, nil
}

// Names of the export policy and its sets.
const (
	policyName     = "labctl-export"
	setEBGP        = "labctl-ebgp-neighbors"
	setOwn         = "labctl-own-prefixes"
	setNextHopSelf = "labctl-next-hop-self"
)

// exportPolicy builds the speaker's one global export policy, or nil when
// it exports everything unchanged. GoBGP evaluates the global export
// policy once per destination peer, and a neighbor condition there matches
// that destination. Statements, in order:
//
//  1. export: own — to an eBGP neighbor, reject every prefix that is not
//     one of the AS's own (Own and Networks, each at its exact length).
//  2. next-hop-self — to those neighbors, set the next hop to the local
//     address of the session and go on (route action none), so the
//     default action, accept, applies.
//
// A neighbor set in GoBGP that is empty matches every neighbor, so a
// statement is only added when its set has members.
func exportPolicy(cfg *Config) ([]*api.DefinedSet, *api.Policy, error) {
	var sets []*api.DefinedSet
	var stmts []*api.Statement
	var ebgp, nhs []string
	for _, n := range cfg.Neighbors {
		if n.ASN != cfg.ASN {
			ebgp = append(ebgp, n.Address+"/32")
		}
		if n.NextHopSelf {
			nhs = append(nhs, n.Address+"/32")
		}
	}
	if cfg.Export == ExportOwn && len(ebgp) > 0 {
		sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: setEBGP, List: ebgp})
		cond := &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: setEBGP}}
		seen := map[netip.Prefix]bool{}
		var own []*api.Prefix
		for _, s := range append(append([]string{}, cfg.Own...), cfg.Networks...) {
			p, err := netip.ParsePrefix(s)
			if err != nil || !p.Addr().Is4() {
				return nil, nil, fmt.Errorf("own prefix %q is not an IPv4 prefix", s)
			}
			if p = p.Masked(); seen[p] {
				continue
			}
			seen[p] = true
			own = append(own, &api.Prefix{IpPrefix: p.String(), MaskLengthMin: uint32(p.Bits()), MaskLengthMax: uint32(p.Bits())})
		}
		// With no own prefix at all, every prefix is foreign: the
		// statement then rejects everything sent to an eBGP neighbor.
		if len(own) > 0 {
			sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_PREFIX, Name: setOwn, Prefixes: own})
			cond.PrefixSet = &api.MatchSet{Type: api.MatchSet_INVERT, Name: setOwn}
		}
		stmts = append(stmts, &api.Statement{Name: "labctl-export-own", Conditions: cond,
			Actions: &api.Actions{RouteAction: api.RouteAction_REJECT}})
	}
	if len(nhs) > 0 {
		sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_NEIGHBOR, Name: setNextHopSelf, List: nhs})
		stmts = append(stmts, &api.Statement{Name: "labctl-next-hop-self",
			Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: setNextHopSelf}},
			Actions:    &api.Actions{RouteAction: api.RouteAction_NONE, Nexthop: &api.NexthopAction{Self: true}}})
	}
	if len(stmts) == 0 {
		return nil, nil, nil
	}
	return sets, &api.Policy{Name: policyName, Statements: stmts}, nil
}

func setPolicy(ctx context.Context, s *server.BgpServer, cfg *Config) error {
	sets, pol, err := exportPolicy(cfg)
	if err != nil || pol == nil {
		return err
	}
	for _, ds := range sets {
		if err := s.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: ds}); err != nil {
			return fmt.Errorf("set %s: %w", ds.Name, err)
		}
	}
	if err := s.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
		return err
	}
	return s.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name:          "global",
		Direction:     api.PolicyDirection_EXPORT,
		Policies:      []*api.Policy{{Name: policyName}},
		DefaultAction: api.RouteAction_ACCEPT,
	}})
}

// rib reads the speaker's global IPv4 RIB in process.
func rib(ctx context.Context, s *server.BgpServer) ([]Path, error) {
	var dsts []*api.Destination
	err := s.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: ipv4Unicast},
		func(d *api.Destination) { dsts = append(dsts, d) })
	if err != nil {
		return nil, err
	}
	return toPaths(dsts), nil
}
