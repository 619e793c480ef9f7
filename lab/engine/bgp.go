package engine

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"time"

	"labctl/lab/bgp"
	"labctl/lab/state"
	"labctl/lab/topology"
)

// Speaker is one router's BGP speaker as it reports itself: its sessions,
// its RIB and the routes it installed in the kernel.
type Speaker struct {
	Node      string         `json:"node"`
	ASN       uint32         `json:"asn"`
	RouterID  string         `json:"router_id"`
	Neighbors []bgp.Neighbor `json:"neighbors"`
	RIB       []bgp.Path     `json:"rib"`
	FIB       []bgp.Route    `json:"fib"`
	Error     string         `json:"error,omitempty"`
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

// Converged reports whether every session is up and every learned best
// path is installed.
func (s *Speaker) Converged() bool {
	return s.Error == "" && len(s.Neighbors) > 0 && s.Established() == len(s.Neighbors) && len(s.FIB) == s.Learned()
}

// Speakers lists the BGP routers of a lab (names sorted).
func Speakers(t *topology.Topology) []string {
	var out []string
	for _, n := range t.NodeNames() {
		if t.Nodes[n].BGP != nil {
			out = append(out, n)
		}
	}
	return out
}

// BGP asks the speakers of a lab (all of them when nodes is empty) for
// their state, in parallel.
func (e *Engine) BGP(ctx context.Context, lab string, nodes []string) ([]*Speaker, error) {
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
		if node.BGP == nil {
			return nil, fmt.Errorf("node %s has no bgp block (speakers: %v)", n, Speakers(t))
		}
		out[i] = &Speaker{Node: n, ASN: node.BGP.ASN, RouterID: node.BGP.RouterID}
	}
	e.each(ctx, len(out), func(i int) error {
		s := out[i]
		s.Error = speakerState(ctx, topology.Namespace(lab, s.Node), t.Nodes[s.Node].BGP.API, s)
		return nil
	})
	return out, nil
}

// speakerState fills s from the speaker's API and the kernel; it returns
// the first error as text.
func speakerState(ctx context.Context, ns, api string, s *Speaker) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := bgp.Dial(ctx, api)
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
	if s.FIB, err = bgp.FIB(ns); err != nil {
		return err.Error()
	}
	return ""
}

// WaitBGP polls the lab's speakers every 20 ms until every session is
// established, every learned best path is in the kernel, and the next poll
// finds the same; it returns that state and when it was first seen.
func (e *Engine) WaitBGP(ctx context.Context, lab string, timeout time.Duration) ([]*Speaker, time.Duration, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	var last string
	var since time.Duration
	for {
		at := time.Since(start)
		sp, err := e.BGP(ctx, lab, nil)
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
			return sp, time.Since(start), fmt.Errorf("lab %s: BGP did not converge within %s", lab, timeout)
		}
		select {
		case <-ctx.Done():
			return sp, time.Since(start), ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
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
