package firewall

import (
	"context"
	"strings"
	"testing"

	"labctl/lab/runner/runnertest"
	"labctl/lab/topology"
)

// The driver through a fake runner: apply feeds nft the whole script in
// the node's namespace; observe reads the hash back from the table
// comment, and a namespace without the table observes as nothing.
func TestDriverCommands(t *testing.T) {
	f := &runnertest.Fake{}
	old := cmder
	cmder = f
	t.Cleanup(func() { cmder = old })
	fw := &Firewall{Inside: []string{"in"}}
	script, hash := Ruleset("l", fw)
	f.On("ip netns exec l-fw nft list table inet labctl", runnertest.Reply{Stdout: "table inet labctl {\n\tcomment \"labctl l " + hash + "\"\n}\n"})
	f.On("ip netns exec l-gone nft list table inet labctl", runnertest.Reply{Stderr: "Error: No such file or directory", Err: runnertest.ExitStatus(1)})
	f.On("ip netns exec l-bad nft list table inet labctl", runnertest.Reply{Stderr: "Error: Operation not permitted", Err: runnertest.ExitStatus(1)})

	ctx := context.Background()
	if err := load(ctx, "l-fw", script); err != nil {
		t.Fatal(err)
	}
	c := f.Calls()[0]
	if c.String() != "ip netns exec l-fw nft -f -" || string(c.Stdin) != script {
		t.Errorf("load ran %q with %q", c, c.Stdin)
	}
	n := &topology.Node{Kind: Kind, Name: "fw", Parts: topology.Blocks{Block: fw}}
	if h, err := (Part{}).Observe(ctx, "l", n, "l-fw"); err != nil || h != hash {
		t.Errorf("observe = %q %v, want %s", h, err, hash)
	}
	if h, err := (Part{}).Observe(ctx, "l", n, "l-gone"); err != nil || h != "" {
		t.Errorf("no table: observe = %q %v", h, err)
	}
	if _, err := (Part{}).Observe(ctx, "l", n, "l-bad"); err == nil || !strings.Contains(err.Error(), "Operation not permitted") {
		t.Errorf("a failing nft: %v", err)
	}
	if h, err := (Part{}).Observe(ctx, "l", &topology.Node{Kind: "host"}, "l-h"); err != nil || h != "" || len(f.Calls()) != 4 {
		t.Errorf("a host is not asked: %q %v, %d calls", h, err, len(f.Calls()))
	}
}
