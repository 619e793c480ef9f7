package topology

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
)

// schemaPath is the editor schema; it is written by hand, so these tests
// keep it from drifting from the model and the validator.
const schemaPath = "../../docs/topology.schema.json"

type schema = map[string]any

func loadSchema(t *testing.T) schema {
	t.Helper()
	b, err := os.ReadFile(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	var s schema
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("%s: %v", schemaPath, err)
	}
	return s
}

// resolve follows "$ref": "#/$defs/NAME".
func resolve(t *testing.T, root, s schema) schema {
	t.Helper()
	ref, ok := s["$ref"].(string)
	if !ok {
		return s
	}
	name, ok := strings.CutPrefix(ref, "#/$defs/")
	defs, _ := root["$defs"].(map[string]any)
	def, found := defs[name].(map[string]any)
	if !ok || !found {
		t.Fatalf("schema: unresolvable $ref %q", ref)
	}
	return resolve(t, root, def)
}

// yamlName is the key a struct field is written as, "" if it is not.
func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if !f.IsExported() || name == "-" {
		return ""
	}
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

// TestSchemaMatchesModel walks the model's structs and the schema side by
// side: every yaml field must be a property of the matching schema object,
// every property a yaml field, and no object may allow other properties.
func TestSchemaMatchesModel(t *testing.T) {
	root := loadSchema(t)
	fields := 0
	var walk func(tp reflect.Type, s schema, at string)
	walk = func(tp reflect.Type, s schema, at string) {
		s = resolve(t, root, s)
		switch tp.Kind() {
		case reflect.Pointer:
			walk(tp.Elem(), s, at)
		case reflect.Slice:
			items, ok := s["items"].(map[string]any)
			if !ok {
				t.Errorf("schema %s: %s is a list but the schema has no items", at, tp)
				return
			}
			walk(tp.Elem(), items, at+"[]")
		case reflect.Map:
			vals, ok := s["additionalProperties"].(map[string]any)
			if !ok {
				t.Errorf("schema %s: %s is a map but the schema has no additionalProperties schema", at, tp)
				return
			}
			walk(tp.Elem(), vals, at+".*")
		case reflect.Struct:
			if s["additionalProperties"] != false {
				t.Errorf("schema %s: %s needs additionalProperties: false (the decoder rejects unknown fields)", at, tp)
			}
			props, _ := s["properties"].(map[string]any)
			seen := map[string]bool{}
			for i := range tp.NumField() {
				f := tp.Field(i)
				name := yamlName(f)
				if name == "" {
					continue
				}
				fields++
				seen[name] = true
				sub, ok := props[name].(map[string]any)
				if !ok {
					t.Errorf("schema %s: no property %q for %s.%s", at, name, tp.Name(), f.Name)
					continue
				}
				walk(f.Type, sub, at+"."+name)
			}
			for name := range props {
				if sub, _ := props[name].(map[string]any); sub["x-labctl-part"] != nil {
					continue // a lab part's block: lab/parts checks it against the part
				}
				if !seen[name] {
					t.Errorf("schema %s: property %q is not a field of %s", at, name, tp.Name())
				}
			}
		}
	}
	walk(reflect.TypeFor[Topology](), root, "$")
	if fields < 25 {
		t.Errorf("walked only %d fields; the walk is broken", fields)
	}
}

// TestSchemaMirrorsValidation checks the schema's kinds, name patterns and
// length limits against the validator's.
func TestSchemaMirrorsValidation(t *testing.T) {
	root := loadSchema(t)
	get := func(path ...string) schema {
		s := root
		for _, p := range path {
			next, ok := resolve(t, root, s)[p].(map[string]any)
			if !ok {
				t.Fatalf("schema: nothing at %s", strings.Join(path, "/"))
			}
			s = next
		}
		return resolve(t, root, s)
	}
	node := get("$defs", "node", "properties")

	var kinds []string
	kindSchema := get("$defs", "node", "properties", "kind")
	partKinds, _ := kindSchema["x-labctl-part-kinds"].(map[string]any)
	for _, k := range kindSchema["enum"].([]any) {
		if partKinds[k.(string)] == nil { // a lab part's kinds: lab/parts checks them
			kinds = append(kinds, k.(string))
		}
	}
	sort.Strings(kinds)
	if !slices.Equal(kinds, KindNames()) {
		t.Errorf("schema kinds %q, validator kinds %q", kinds, KindNames())
	}

	for _, c := range []struct {
		what    string
		s       schema
		pattern string
		max     int // 0: no maxLength to check
	}{
		{"lab name", get("properties", "name"), nameRe.String(), MaxLabName},
		{"node name", get("properties", "nodes", "propertyNames"), nameRe.String(), MaxNodeName},
		{"interface name", resolve(t, root, node["interfaces"].(map[string]any)["propertyNames"].(map[string]any)), ifaceRe.String(), MaxIfaceName},
		{"route dev", get("$defs", "route", "properties", "dev"), ifaceRe.String(), MaxIfaceName},
		{"service name", get("$defs", "node", "properties", "services", "propertyNames"), nameRe.String(), 0},
		{"sysctl key", get("$defs", "node", "properties", "sysctls", "propertyNames"), sysctlRe.String(), 0},
		{"host name", get("$defs", "hostName"), hostRe.String(), 0},
	} {
		if got := c.s["pattern"]; got != c.pattern {
			t.Errorf("%s: schema pattern %v, validator %s", c.what, got, c.pattern)
		}
		if c.max != 0 && c.s["maxLength"] != float64(c.max) {
			t.Errorf("%s: schema maxLength %v, validator %d", c.what, c.s["maxLength"], c.max)
		}
	}
}

const referencePath = "../../docs/topology.md"

// TestDocsExample parses the complete example of the language reference and
// checks that its sample error output is the corpus's golden text.
func TestDocsExample(t *testing.T) {
	b, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	_, rest, ok := strings.Cut(doc, "## A complete example")
	if !ok {
		t.Fatalf("%s has no complete example", referencePath)
	}
	_, rest, ok = strings.Cut(rest, "```yaml\n")
	example, _, ok2 := strings.Cut(rest, "```\n")
	if !ok || !ok2 {
		t.Fatalf("%s: no yaml block in the complete example", referencePath)
	}
	if _, err := Parse([]byte(example), "docs/topology.md#example"); err != nil {
		t.Errorf("the complete example does not parse:\n%v", err)
	}

	for _, name := range []string{"many_problems.yaml", "many_problems.err"} {
		want, err := os.ReadFile("testdata/bad/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(doc, string(want)) {
			t.Errorf("%s does not quote testdata/bad/%s as it is now", referencePath, name)
		}
	}
}
