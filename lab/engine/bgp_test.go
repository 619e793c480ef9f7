package engine_test

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"labctl/lab/bgp"
	"labctl/lab/state"
	"labctl/lab/topology"
)

// TestCutSessions: the sessions over a link cut with `link down` are the
// ones whose source or neighbor address is on one of its ends, on both
// speakers, whichever way round the cut was recorded; a cut of a link no
// session runs over, or of a switch port, maps as it should.
func TestCutSessions(t *testing.T) {
	tp, err := topology.Load("../../topologies/double11.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cut  [][2]string
		want map[string][]string
	}{
		{"none", nil, map[string][]string{}},
		{"c2-border1", [][2]string{{"c2:border1", "border1:c2"}},
			map[string][]string{"c2": {"198.51.100.34"}, "border1": {"198.51.100.33"}}},
		{"border1-c2", [][2]string{{"border1:c2", "c2:border1"}},
			map[string][]string{"c2": {"198.51.100.34"}, "border1": {"198.51.100.33"}}},
		{"border1 off the dc switch", [][2]string{{"border1:dc", "dc:border1"}},
			map[string][]string{"border1": {"203.0.113.3"}, "border2": {"203.0.113.2"}}},
		{"two cuts", [][2]string{{"c2:border1", "border1:c2"}, {"c2:t1", "t1:c2"}},
			map[string][]string{"c2": {"198.51.100.34", "198.51.100.130"}, "border1": {"198.51.100.33"}, "t1": {"198.51.100.129"}}},
		{"no session on it", [][2]string{{"ue1:eth0", "cgnat:ue"}}, map[string][]string{}},
	} {
		if got := bgp.CutSessions(tp, c.cut); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestConvergedIgnoresCutSessions: a session the user cut is expected
// down and does not hold back convergence; any other session does.
func TestConvergedIgnoresCutSessions(t *testing.T) {
	s := &bgp.Speaker{Node: "c2", Neighbors: []bgp.Neighbor{
		{Address: "100.65.0.9", State: "established"},
		{Address: "198.51.100.34", State: "active"},
		{Address: "198.51.100.130", State: "established"},
	}}
	if s.Converged() {
		t.Fatal("converged with a session down and no cut")
	}
	s.Cut = []string{"198.51.100.34"}
	if !s.Converged() {
		t.Fatal("not converged: only the session over the cut link is down")
	}
	s.Neighbors[0].State = "idle"
	if s.Converged() {
		t.Fatal("converged with a session down that no cut explains")
	}
	s.Neighbors[0].State = "established"
	s.Neighbors[1].State = "established" // the hold timer has not run out yet
	if !s.Converged() {
		t.Fatal("not converged: a cut session still established must not count either way")
	}
}

// TestBGPMarksCutSessions: the speakers' state read from a lab carries
// the sessions its record's cuts take down, and WaitBGP's verdict on a lab
// whose speakers do not answer says why, speaker by speaker.
func TestBGPMarksCutSessions(t *testing.T) {
	old := state.Root
	state.Root = t.TempDir()
	t.Cleanup(func() { state.Root = old })
	tp, err := topology.Load("../../topologies/double11.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// No speaker runs: the sockets are in a directory of their own.
	for _, n := range bgp.Speakers(tp) {
		bgp.Of(tp.Nodes[n]).API = "unix://" + filepath.Join(t.TempDir(), n+".sock")
	}
	rec := &state.Lab{Name: tp.Name, Status: "up", Topology: tp, Cut: [][2]string{{"c2:border1", "border1:c2"}}}
	if err := state.Save(rec); err != nil {
		t.Fatal(err)
	}
	sp, err := bgp.Status(context.Background(), tp.Name, nil)
	if err != nil {
		t.Fatal(err)
	}
	cut := map[string][]string{}
	for _, s := range sp {
		if s.Error == "" {
			t.Errorf("%s: no error from a speaker that is not running", s.Node)
		}
		if len(s.Cut) > 0 {
			cut[s.Node] = s.Cut
		}
	}
	if want := map[string][]string{"c2": {"198.51.100.34"}, "border1": {"198.51.100.33"}}; !reflect.DeepEqual(cut, want) {
		t.Fatalf("cut sessions %v, want %v", cut, want)
	}
	_, _, err = bgp.Wait(context.Background(), tp.Name, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not converge") || !strings.Contains(err.Error(), "a2: bgp speaker") || !strings.Contains(err.Error(), "5 more") {
		t.Fatalf("WaitBGP: %v", err)
	}
}
