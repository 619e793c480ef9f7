package parts

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"labctl/lab/component"
	"labctl/lab/topology"
)

// Every registered part's blocks and kinds are in the topology schema,
// marked as the part's, with the block type's fields as properties; and
// every part-marked thing in the schema belongs to a registered part.
func TestSchemaHasEveryPart(t *testing.T) {
	Register()
	b, err := os.ReadFile("../../docs/topology.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var root map[string]any
	if err := json.Unmarshal(b, &root); err != nil {
		t.Fatal(err)
	}
	props := func(m any) map[string]any { x, _ := m.(map[string]any)["properties"].(map[string]any); return x }
	top := props(root)
	node := props(root["$defs"].(map[string]any)["node"])
	kindSchema := node["kind"].(map[string]any)
	partKinds := kindSchema["x-labctl-part-kinds"].(map[string]any)
	var enum []string
	for _, k := range kindSchema["enum"].([]any) {
		enum = append(enum, k.(string))
	}
	marked := map[string]bool{}
	for _, where := range []map[string]any{top, node} {
		for name, v := range where {
			if p, _ := v.(map[string]any)["x-labctl-part"].(string); p != "" {
				marked[name] = true
				if _, ok := component.Get(p); !ok {
					t.Errorf("schema property %s belongs to part %q, which is not registered", name, p)
				}
			}
		}
	}
	for _, p := range component.All() {
		if kp, ok := p.(topology.KindsPart); ok {
			for _, k := range kp.Kinds() {
				if partKinds[k.Name] != p.Name() || !slices.Contains(enum, k.Name) {
					t.Errorf("kind %s of part %s: not in the schema's kind enum marked as the part's", k.Name, p.Name())
				}
			}
		}
		bp, ok := p.(topology.BlocksPart)
		if !ok {
			continue
		}
		for _, blk := range bp.Blocks() {
			where := node
			if blk.Top {
				where = top
			}
			s, _ := where[blk.Name].(map[string]any)
			if s == nil || s["x-labctl-part"] != p.Name() {
				t.Errorf("block %s of part %s: no schema property marked as the part's", blk.Name, p.Name())
				continue
			}
			delete(marked, blk.Name)
			if ref, ok := s["$ref"].(string); ok { // "#/$defs/bgp"
				s = root["$defs"].(map[string]any)[strings.TrimPrefix(ref, "#/$defs/")].(map[string]any)
			}
			fields := props(s)
			typ := reflect.TypeOf(blk.New()).Elem()
			for i := range typ.NumField() {
				name, _, _ := strings.Cut(typ.Field(i).Tag.Get("yaml"), ",")
				if name == "" || name == "-" {
					continue
				}
				if fields[name] == nil {
					t.Errorf("block %s: field %s is not in the schema", blk.Name, name)
				}
				delete(fields, name)
			}
			for name := range fields {
				t.Errorf("block %s: schema property %s is not a field of %s", blk.Name, name, typ)
			}
		}
	}
	for name := range marked {
		t.Errorf("schema property %s is marked as a part's block, but no part declares it", name)
	}
}
