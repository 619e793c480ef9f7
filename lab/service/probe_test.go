package service_test

import (
	"context"
	"slices"
	"testing"

	"labctl/lab/runner/runnertest"
	"labctl/lab/service"
	"labctl/lab/topology"
)

// An exec ready check runs the command inside the service's namespace
// and, when it fails, says which command failed where and what it printed.
func TestProbeExec(t *testing.T) {
	f := &runnertest.Fake{}
	f.On("ip netns exec lab-db1 pg_isready", runnertest.Reply{Stdout: "/run:5432 - no response\n", Err: runnertest.ExitStatus(2)})
	p := service.OSProc{Cmder: f}
	ctx := context.Background()

	err := p.Probe(ctx, "lab-db1", &topology.Ready{Exec: []string{"pg_isready", "-h", "/run"}})
	if want := "lab-db1: pg_isready -h /run: exit status 2: /run:5432 - no response"; err == nil || err.Error() != want {
		t.Errorf("failing check: %v, want %q", err, want)
	}
	if err := p.Probe(ctx, "lab-web1", &topology.Ready{Exec: []string{"test", "-S", "/run/web.sock"}}); err != nil {
		t.Errorf("passing check: %v", err)
	}
	want := []string{"ip netns exec lab-db1 pg_isready -h /run", "ip netns exec lab-web1 test -S /run/web.sock"}
	if got := f.Commands(); !slices.Equal(got, want) {
		t.Errorf("commands %q, want %q", got, want)
	}
}
