package pki

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"labctl/lab/component"
	"labctl/lab/topology"
)

func registered(t *testing.T) {
	t.Helper()
	if _, ok := component.Get("pki"); !ok {
		component.Register(Part{})
		t.Cleanup(func() { component.Unregister("pki") })
	}
}

// The pki block's malformed files fail with exactly the problems recorded
// beside them (the corpus of lab/topology/testdata/bad, for this part).
func TestBadBlocks(t *testing.T) {
	registered(t)
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("corpus: %v %v", files, err)
	}
	for _, file := range files {
		_, err := topology.Load(file)
		if err == nil {
			t.Errorf("%s loaded without error", file)
			continue
		}
		want, rerr := os.ReadFile(strings.TrimSuffix(file, ".yaml") + ".err")
		if rerr != nil {
			t.Fatal(rerr)
		}
		if got := err.Error() + "\n"; got != string(want) {
			t.Errorf("%s:\n got %s\nwant %s", file, got, want)
		}
	}
}

func TestNames(t *testing.T) {
	registered(t)
	tp, err := topology.Parse([]byte("name: l\npki: {names: [www.shop.example., shop.example]}\nnodes: {h: {kind: host}}\n"), "x.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := Names(tp); strings.Join(got, ",") != "www.shop.example,shop.example" {
		t.Errorf("Names = %v", got)
	}
	// The block survives the lab's JSON record with its type.
	x, err := tp.Expand()
	if err != nil {
		t.Fatal(err)
	}
	if Of(x) == nil || len(Of(x).Names) != 2 {
		t.Errorf("expanded copy: %+v", x.Parts)
	}
}
