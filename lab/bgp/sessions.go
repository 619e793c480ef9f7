package bgp

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// sessions steers GoBGP's sessions: it logs them going up and down, shuts
// those fast fallover says are down and enables them again, and shortens
// GoBGP's idle hold time.
//
// GoBGP holds a failed session idle for 5 s, refusing connections, then
// tries to connect after 1-2 s. When only one side of a session failed
// (a speaker restarted, a hold timer expired on one side), each side's
// attempt can land in the other's idle time, again and again: sessions
// then stay down for a minute or more. A reset peer waits only
// IdleHoldTimeAfterReset (1 s) instead, no longer than the earliest first
// connect attempt, which makes that impossible: so every session that
// fails is shut, reset and enabled at once.
type sessions struct {
	s   *server.BgpServer
	log *slog.Logger
	fo  *fallover

	mu      sync.Mutex
	pending []peerState // from the watcher goroutine

	last map[string]string // session state by neighbor (loop only)
}

type peerState struct {
	addr      string
	asn       uint32
	state     string
	adminDown bool
}

func newSessions(s *server.BgpServer, log *slog.Logger, fo *fallover) *sessions {
	return &sessions{s: s, log: log, fo: fo, last: map[string]string{}}
}

// event records a peer event (called by GoBGP's watcher goroutine).
func (ss *sessions) event(pe *api.WatchEventResponse_PeerEvent) {
	if pe.GetType() != api.WatchEventResponse_PeerEvent_STATE {
		return
	}
	st := pe.GetPeer().GetState()
	ss.mu.Lock()
	ss.pending = append(ss.pending, peerState{
		addr:      st.GetNeighborAddress(),
		asn:       st.GetPeerAsn(),
		state:     stateName(st.GetSessionState()),
		adminDown: st.GetAdminState() == api.PeerState_DOWN,
	})
	ss.mu.Unlock()
}

// sync handles the recorded events and the link state (links is nil when
// unknown) and makes every session's admin state what fallover wants.
func (ss *sessions) sync(ctx context.Context, links []Link) error {
	ss.mu.Lock()
	evs := ss.pending
	ss.pending = nil
	ss.mu.Unlock()
	failed := map[string]bool{}
	for _, e := range evs {
		prev := ss.last[e.addr]
		if prev == e.state {
			continue
		}
		ss.last[e.addr] = e.state
		switch {
		case e.state == "established":
			ss.log.Info("peer up", "neighbor", e.addr, "asn", e.asn)
		case prev == "established":
			attrs := []any{"neighbor", e.addr, "asn", e.asn, "state", e.state}
			if e.adminDown {
				attrs = append(attrs, "admin", "down")
			}
			ss.log.Info("peer down", attrs...)
		default:
			ss.log.Debug("peer state", "neighbor", e.addr, "state", e.state)
		}
		// A session that failed (not one starting, not one shut).
		if e.state == "idle" && !e.adminDown && prev != "" && prev != "idle" {
			failed[e.addr] = true
		}
	}
	if links != nil {
		for _, c := range ss.fo.update(links) {
			if c.Down {
				ss.log.Info("link down, session shut", "neighbor", c.Neighbor.String(), "links", strings.Join(c.Links, ","))
			} else {
				ss.log.Info("link up, session enabled", "neighbor", c.Neighbor.String(), "links", strings.Join(c.Links, ","))
			}
		}
	}

	adminDown := map[string]bool{}
	err := ss.s.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		adminDown[p.GetConf().GetNeighborAddress()] = p.GetState().GetAdminState() == api.PeerState_DOWN
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range ss.fo.neighbors {
		addr := n.String()
		want, is := ss.fo.down[n], adminDown[addr]
		switch {
		case want && !is:
			errs = append(errs, ss.s.DisablePeer(ctx, &api.DisablePeerRequest{Address: addr, Communication: "link down"}))
		case !want && is:
			errs = append(errs, ss.enable(ctx, addr))
		case !want && failed[addr]:
			ss.log.Debug("session failed: shortening its idle hold", "neighbor", addr)
			if err := ss.s.DisablePeer(ctx, &api.DisablePeerRequest{Address: addr}); err != nil {
				errs = append(errs, err)
				continue
			}
			// Should GoBGP drop this enable (it takes one admin change at
			// a time), the next pass finds the peer shut and enables it.
			errs = append(errs, ss.enable(ctx, addr))
		}
	}
	return errors.Join(errs...)
}

// enable enables a shut peer after a reset, so it connects after 1 s, not
// GoBGP's 5 s idle hold. The reset's NOTIFICATION is queued on a session
// that is not established, and GoBGP drops that queue at the session's
// next state change: nothing is sent.
func (ss *sessions) enable(ctx context.Context, addr string) error {
	if err := ss.s.ResetPeer(ctx, &api.ResetPeerRequest{Address: addr, Communication: "reset"}); err != nil {
		ss.log.Debug("reset before enable", "neighbor", addr, "err", err)
	}
	return ss.s.EnablePeer(ctx, &api.EnablePeerRequest{Address: addr})
}
