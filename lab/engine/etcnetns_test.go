package engine_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"labctl/lab/internal/labtest"
	"labctl/lab/links"
	"labctl/lab/plan"
	"labctl/lab/state"
	"labctl/lab/topology"
)

const etcTmpl = `name: %s
nodes:
  h1:
    kind: host
    interfaces:
      eth0: {addresses: [10.0.1.1/24]}
    dns: {nameservers: [10.0.1.2]}
  h2:
    kind: host
    interfaces:
      eth0: {addresses: [10.0.1.2/24]}
    hosts:
      10.0.1.1: [h1.lab.test]
links:
  - endpoints: [h1:eth0, h2:eth0]
`

// A file under /etc/netns that labctl did not write is the user's: up
// refuses to write over it, or through a symlink, before it changes
// anything, and leaves it as it was.
func TestUpRefusesForeignEtcFiles(t *testing.T) {
	labtest.NeedRoot(t, whyRoot)
	ctx := context.Background()
	lab := labtest.LabName("etc")
	tp, err := topology.Parse([]byte(fmt.Sprintf(etcTmpl, lab)), lab+".yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, rootErr := os.Lstat(plan.EtcNetns)
	dir1, dir2 := filepath.Join(plan.EtcNetns, lab+"-h1"), filepath.Join(plan.EtcNetns, lab+"-h2")
	e := newEngine(false)
	t.Cleanup(func() {
		e.Down(ctx, lab)
		os.RemoveAll(dir1)
		os.RemoveAll(dir2)
		if rootErr != nil {
			os.Remove(plan.EtcNetns) // it was not there before
		}
	})
	for _, d := range []string{dir1, dir2} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	refused := func(what, path string) {
		t.Helper()
		_, err := e.Up(ctx, tp)
		if !errors.Is(err, links.ErrForeign) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "move it away or down the lab that owns it") {
			t.Fatalf("up over %s: %v", what, err)
		}
		t.Logf("up over %s: %v", what, err)
		for _, n := range labtest.Namespaces(lab + "-") {
			t.Fatalf("refused up left namespace %s", n)
		}
		if _, err := os.Stat(state.Dir(lab)); err == nil {
			t.Fatalf("refused up left %s", state.Dir(lab))
		}
	}

	// The user's own resolv.conf.
	resolv := filepath.Join(dir1, "resolv.conf")
	const mine = "nameserver 192.0.2.53\n"
	if err := os.WriteFile(resolv, []byte(mine), 0o644); err != nil {
		t.Fatal(err)
	}
	refused("a foreign resolv.conf", resolv)
	if b, err := os.ReadFile(resolv); err != nil || string(b) != mine {
		t.Fatalf("foreign resolv.conf is now %q (%v)", b, err)
	}
	if err := os.Remove(resolv); err != nil {
		t.Fatal(err)
	}

	// A hosts that is a symlink, to a file that even looks like labctl's.
	target := filepath.Join(t.TempDir(), "hosts")
	const targetData = plan.FileHeader + "192.0.2.1 elsewhere\n"
	if err := os.WriteFile(target, []byte(targetData), 0o644); err != nil {
		t.Fatal(err)
	}
	hosts := filepath.Join(dir2, "hosts")
	if err := os.Symlink(target, hosts); err != nil {
		t.Fatal(err)
	}
	refused("a symlinked hosts", hosts)
	if b, err := os.ReadFile(target); err != nil || string(b) != targetData {
		t.Fatalf("symlink target is now %q (%v)", b, err)
	}
	if fi, err := os.Lstat(hosts); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the symlink %s is gone or replaced (%v)", hosts, err)
	}
	if err := os.Remove(hosts); err != nil {
		t.Fatal(err)
	}

	// With both out of the way up writes its own files, and down removes
	// them and the directories.
	if _, err := e.Up(ctx, tp); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{resolv, hosts} {
		if b, err := os.ReadFile(p); err != nil || !strings.HasPrefix(string(b), plan.FileHeader) {
			t.Fatalf("%s after up: %q (%v)", p, b, err)
		}
	}
	downClean(t, e, lab, "after the files were moved away")
}
