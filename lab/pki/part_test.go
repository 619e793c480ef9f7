package pki

import (
	"strings"
	"testing"

	"labctl/lab/component"
	"labctl/lab/internal/labtest"
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
	labtest.BadFiles(t, "testdata/bad/*.yaml", 3, func(f string) error { _, err := topology.Load(f); return err })
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
