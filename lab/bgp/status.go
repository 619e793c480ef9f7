package bgp

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"labctl/lab/state"
	"labctl/lab/topology"
)

// Speaker is one router's BGP speaker as it reports itself: its sessions,
// its RIB and the routes it installed in the kernel.
type Speaker struct {
	Node      string     `json:"node"`
	ASN       uint32     `json:"asn"`
	RouterID  string     `json:"router_id"`
	Neighbors []Neighbor `json:"neighbors"`
	RIB       []Path     `json:"rib"`
	FIB       []Route    `json:"fib"`
	Error     string     `json:"error,omitempty"`
	// Cut lists the neighbors whose session runs over a link cut with
	// `labctl link down`: expected down, they do not hold back
	// convergence (CutSessions).
	Cut []string `json:"cut,omitempty"`
}

// Established counts the speaker's sessions in state established.
func (s *Speaker) Established() int {
	n := 0
	for _, nb := range s.Neighbors {
		if nb.State == "established" {
			n++
		}
	}
	return n
}

// Learned counts the best paths the speaker should have in the kernel: the
// best path of every prefix it did not originate.
func (s *Speaker) Learned() int {
	n := 0
	for _, p := range s.RIB {
		if p.Best && !p.Local {
			n++
		}
	}
	return n
}

// Converged reports whether every session is up, but those over a cut
// link, and every learned best path is installed.
func (s *Speaker) Converged() bool {
	return s.Error == "" && len(s.Neighbors) > 0 && len(s.Down()) == 0 && len(s.FIB) == s.Learned()
}

// Down lists the sessions not established that should be: all but those
// over a cut link.
func (s *Speaker) Down() []Neighbor {
	var out []Neighbor
	for _, nb := range s.Neighbors {
		if nb.State != "established" && !s.IsCut(nb.Address) {
			out = append(out, nb)
		}
	}
	return out
}

// IsCut reports whether the session with the neighbor at addr runs over a
// cut link.
func (s *Speaker) IsCut(addr string) bool {
	a, err := netip.ParseAddr(addr)
	for _, c := range s.Cut {
		if c == addr {
			return true
		}
		if ca, cerr := netip.ParseAddr(c); cerr == nil && err == nil && ca == a {
			return true
		}
	}
	return false
}

// CutSessions maps each speaker of t to the neighbor addresses of its
// sessions over a link in cut (the lab's record of `labctl link down`,
// each link by its two ends): those whose source or neighbor address is
// on an interface at one end of a cut link. They are expected down.
func CutSessions(t *topology.Topology, cut [][2]string) map[string][]string {
	out := map[string][]string{}
	ends := map[string]bool{}
	for _, c := range cut {
		ends[c[0]], ends[c[1]] = true, true
	}
	if len(ends) == 0 || t == nil {
		return out
	}
	for _, n := range Speakers(t) {
		for _, nb := range Of(t.Nodes[n]).Neighbors {
			for _, ep := range SessionEnds(t, n, nb) {
				if ends[ep.String()] {
					out[n] = append(out[n], nb.Address)
					break
				}
			}
		}
	}
	return out
}

// Speakers lists the BGP routers of a lab (names sorted).
func Speakers(t *topology.Topology) []string {
	var out []string
	for _, n := range t.NodeNames() {
		if Of(t.Nodes[n]) != nil {
			out = append(out, n)
		}
	}
	return out
}

// Status asks the speakers of a lab (all of them when nodes is empty) for
// their state, in parallel.
func Status(ctx context.Context, lab string, nodes []string) ([]*Speaker, error) {
	rec, err := state.Load(lab)
	if err != nil {
		return nil, err
	}
	t := rec.Topology
	if t == nil {
		return nil, fmt.Errorf("lab %s: the record has no topology", lab)
	}
	if len(nodes) == 0 {
		nodes = Speakers(t)
		if len(nodes) == 0 {
			return nil, fmt.Errorf("lab %s has no BGP speakers (no router with a bgp block)", lab)
		}
	}
	out := make([]*Speaker, len(nodes))
	for i, n := range nodes {
		node := t.Nodes[n]
		if node == nil {
			return nil, fmt.Errorf("lab %s has no node %q", lab, n)
		}
		if Of(node) == nil {
			return nil, fmt.Errorf("node %s has no bgp block (speakers: %v)", n, Speakers(t))
		}
		out[i] = &Speaker{Node: n, ASN: Of(node).ASN, RouterID: Of(node).RouterID}
	}
	cut := CutSessions(t, rec.Cut)
	for _, s := range out {
		s.Cut = cut[s.Node]
	}
	var wg sync.WaitGroup
	for _, s := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Error = speakerState(ctx, topology.Namespace(lab, s.Node), Of(t.Nodes[s.Node]).API, s)
		}()
	}
	wg.Wait()
	return out, nil
}

// speakerState fills s from the speaker's API and the kernel; it returns
// the first error as text.
func speakerState(ctx context.Context, ns, api string, s *Speaker) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, api)
	if err != nil {
		return err.Error()
	}
	defer c.Close()
	if s.Neighbors, err = c.Neighbors(ctx); err != nil {
		return err.Error()
	}
	if s.RIB, err = c.RIB(ctx); err != nil {
		return err.Error()
	}
	if s.FIB, err = FIB(ns); err != nil {
		return err.Error()
	}
	return ""
}

// Wait polls the lab's speakers every 20 ms until every session is
// established, every learned best path is in the kernel, and the next poll
// finds the same; it returns that state and when it was first seen.
func Wait(ctx context.Context, lab string, timeout time.Duration) ([]*Speaker, time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	var last string
	var since time.Duration
	for {
		at := time.Since(start)
		sp, err := Status(ctx, lab, nil)
		if err != nil {
			return nil, at, err
		}
		all := true
		for _, s := range sp {
			all = all && s.Converged()
		}
		fp := fingerprint(sp)
		switch {
		case !all:
			last = ""
		case fp == last:
			return sp, since, nil
		default:
			last, since = fp, at
		}
		if time.Now().After(deadline) {
			return sp, time.Since(start), fmt.Errorf("lab %s: BGP did not converge within %s%s", lab, timeout, pending(sp))
		}
		select {
		case <-ctx.Done():
			return sp, time.Since(start), ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// pending says what keeps speakers from converging: their errors, the
// sessions down that are not over a cut link, routes not in the kernel.
func pending(sp []*Speaker) string {
	var why []string
	for _, s := range sp {
		switch {
		case s.Error != "":
			why = append(why, s.Node+": "+s.Error)
		case len(s.Neighbors) == 0:
			why = append(why, s.Node+": no sessions")
		default:
			for _, nb := range s.Down() {
				why = append(why, fmt.Sprintf("%s→%s %s", s.Node, nb.Address, nb.State))
			}
			if len(s.FIB) != s.Learned() {
				why = append(why, fmt.Sprintf("%s: %d of %d best paths in the kernel", s.Node, len(s.FIB), s.Learned()))
			}
		}
	}
	if len(why) == 0 {
		return " (still changing)"
	}
	if len(why) > 4 {
		why = append(why[:4], fmt.Sprintf("%d more", len(why)-4))
	}
	return ": " + strings.Join(why, "; ")
}

// fingerprint identifies the routing state of all speakers (not timers or
// counters), to tell a settled lab from one still exchanging updates.
func fingerprint(sp []*Speaker) string {
	h := sha256.New()
	for _, s := range sp {
		json.NewEncoder(h).Encode([]any{s.Node, s.RIB, s.FIB})
		for _, n := range s.Neighbors {
			fmt.Fprintln(h, n.Address, n.State)
		}
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}
