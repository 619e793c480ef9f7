package topology

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"

	"labctl/lab/component"
)

// What a lab part (lab/component) can add to the topology language. The
// core consults the registry for these; a part implements only the ones it
// needs.

// KindsPart declares node kinds the part owns.
type KindsPart interface{ Kinds() []Kind }

// BlocksPart declares topology blocks the part owns: a key under a node
// ("firewall:") or at the top of the file. Each block is decoded strictly
// into the part's own type.
type BlocksPart interface{ Blocks() []Block }

// CheckPart checks the part's declarations before the lab is expanded;
// problems are located in the file through Check.
type CheckPart interface{ Check(c *Check) }

// ExpandPart resolves the part's declarations into base nodes, links,
// addresses, routes, sysctls and services. It runs on a copy whose checks
// passed (Expand), never on the topology a caller holds.
type ExpandPart interface{ Expand(t *Topology) }

// Block is one topology block a part owns.
type Block struct {
	Name string     // the key in the file
	Top  bool       // a top-level block; otherwise a key of a node
	New  func() any // a pointer to a zero value of the block's type
	Doc  string
}

// Blocks holds the parts' blocks of a node or of the lab, by key, each a
// value of the type its part declared. It survives the lab's JSON record.
type Blocks map[string]any

// UnmarshalJSON decodes each block into its part's type; a block no
// registered part declares is kept as raw JSON.
func (b *Blocks) UnmarshalJSON(data []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	*b = Blocks{}
	for k, v := range raw {
		blk, ok := registeredBlocks()[k]
		if !ok {
			(*b)[k] = v
			continue
		}
		x := blk.New()
		if err := json.Unmarshal(v, x); err != nil {
			return fmt.Errorf("block %s: %w", k, err)
		}
		(*b)[k] = x
	}
	return nil
}

// Block returns the node's block of that key, nil if it has none.
func (n *Node) Block(key string) any { return n.Parts[key] }

// Block returns the lab's top-level block of that key, nil if none.
func (t *Topology) Block(key string) any { return t.Parts[key] }

// fromParts is what the topology derives from the registered parts,
// rebuilt when the registry changes (KindOf runs for every node, often).
var fromParts struct {
	sync.Mutex
	version int
	built   bool
	blocks  map[string]Block
	kinds   map[string]Kind
}

func derived() (map[string]Block, map[string]Kind) {
	fromParts.Lock()
	defer fromParts.Unlock()
	if v := component.Version(); !fromParts.built || fromParts.version != v {
		blocks, kinds := map[string]Block{}, map[string]Kind{}
		for _, p := range component.Implementing[BlocksPart]() {
			for _, b := range p.Blocks() {
				blocks[b.Name] = b
			}
		}
		for _, p := range component.Implementing[KindsPart]() {
			for _, k := range p.Kinds() {
				kinds[k.Name] = k
			}
		}
		fromParts.version, fromParts.built, fromParts.blocks, fromParts.kinds = v, true, blocks, kinds
	}
	return fromParts.blocks, fromParts.kinds
}

// registeredBlocks is every block a registered part declares, by key.
func registeredBlocks() map[string]Block { b, _ := derived(); return b }

// partKinds is every node kind a registered part declares, by name.
func partKinds() map[string]Kind { _, k := derived(); return k }

// Path addresses a place in the file: map keys (strings) and list indexes
// (ints), as in Path{"nodes", "fw", "firewall", "allow", 0}.
type Path = path

// Check is a part's view of the checker: the topology being checked and a
// way to report problems located in its file.
type Check struct{ c *checker }

// Topology is the lab being checked (not yet expanded).
func (k *Check) Topology() *Topology { return k.c.t }

// Add records a problem at the value p names.
func (k *Check) Add(p Path, format string, args ...any) { k.c.add(p, format, args...) }

// AddAtKey records a problem with the map key p ends in.
func (k *Check) AddAtKey(p Path, format string, args ...any) { k.c.addAtKey(p, format, args...) }

// takeBlocks removes the keys that registered parts own from a mapping
// (the lab's top level or a node) so that the strict decoder does not call
// them unknown, and returns them with a function that puts them back (the
// AST stays whole: later problems are located through it).
func takeBlocks(m *ast.MappingNode, top bool, blocks map[string]Block) (taken []*ast.MappingValueNode, restore func()) {
	if m == nil || len(blocks) == 0 {
		return nil, func() {}
	}
	orig := m.Values
	kept := make([]*ast.MappingValueNode, 0, len(orig))
	for _, mv := range orig {
		if b, ok := blocks[keyText(mv.Key)]; ok && b.Top == top {
			taken = append(taken, mv)
			continue
		}
		kept = append(kept, mv)
	}
	if len(taken) == 0 {
		return nil, func() {}
	}
	m.Values = kept
	return taken, func() { m.Values = orig }
}

// asMapping is n as a mapping node, through tags and anchors.
func asMapping(n ast.Node) *ast.MappingNode {
	switch v := n.(type) {
	case *ast.MappingNode:
		return v
	case *ast.TagNode:
		return asMapping(v.Value)
	case *ast.AnchorNode:
		return asMapping(v.Value)
	}
	return nil
}

// decodeBlocks decodes the blocks taken from a mapping into their parts'
// types.
func decodeBlocks(f *ast.File, file string, taken []*ast.MappingValueNode, blocks map[string]Block) (Blocks, *Problem) {
	if len(taken) == 0 {
		return nil, nil
	}
	out := Blocks{}
	for _, mv := range taken {
		b := blocks[keyText(mv.Key)]
		x := b.New()
		if err := yaml.NodeToValue(mv.Value, x, yaml.DisallowUnknownField()); err != nil {
			p := typeProblem(f, yamlProblem(file, err), err)
			return nil, &p
		}
		out[b.Name] = x
	}
	return out, nil
}

// decodeParts strictly decodes the document into t, the parts' blocks
// included.
func decodeParts(f *ast.File, t *Topology, file string) (Problem, bool) {
	blocks := registeredBlocks()
	body := asMapping(f.Docs[0].Body)
	topTaken, restoreTop := takeBlocks(body, true, blocks)
	type nodeBlocks struct {
		name  string
		taken []*ast.MappingValueNode
	}
	var nodes []nodeBlocks
	var restores []func()
	if body != nil && len(blocks) > 0 {
		for _, mv := range body.Values {
			if keyText(mv.Key) != "nodes" {
				continue
			}
			if nm := asMapping(mv.Value); nm != nil {
				for _, nv := range nm.Values {
					taken, restore := takeBlocks(asMapping(nv.Value), false, blocks)
					restores = append(restores, restore)
					if len(taken) > 0 {
						nodes = append(nodes, nodeBlocks{keyText(nv.Key), taken})
					}
				}
			}
		}
	}
	pr, ok := unmarshal(f, t, file)
	restoreTop()
	for _, r := range restores {
		r()
	}
	if !ok {
		return pr, false
	}
	var p *Problem
	if t.Parts, p = decodeBlocks(f, file, topTaken, blocks); p != nil {
		return *p, false
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].name < nodes[j].name })
	for _, nb := range nodes {
		n := t.Nodes[nb.name]
		if n == nil {
			n = &Node{}
			if t.Nodes == nil {
				t.Nodes = map[string]*Node{}
			}
			t.Nodes[nb.name] = n
		}
		if n.Parts, p = decodeBlocks(f, file, nb.taken, blocks); p != nil {
			return *p, false
		}
	}
	return Problem{}, true
}

// checkParts runs every registered part's checks.
func (c *checker) checkParts() {
	for _, p := range component.Implementing[CheckPart]() {
		p.Check(&Check{c: c})
	}
}

// expandParts runs every registered part's expansion.
func (t *Topology) expandParts() {
	for _, p := range component.Implementing[ExpandPart]() {
		p.Expand(t)
	}
}

// clone is a deep copy of t, through its JSON form (the lab's record uses
// the same), with what JSON leaves out put back.
func (t *Topology) clone() (*Topology, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("copy topology %s: %w", t.Name, err)
	}
	x := &Topology{}
	if err := json.Unmarshal(b, x); err != nil {
		return nil, fmt.Errorf("copy topology %s: %w", t.Name, err)
	}
	x.File, x.src, x.expanded = t.File, t.src, t.expanded
	for name, n := range x.Nodes {
		if n == nil {
			continue
		}
		n.Name = name
	}
	return x, nil
}

// With is the path extended by keys and indexes.
func (p path) With(s ...any) path { return p.with(s...) }
