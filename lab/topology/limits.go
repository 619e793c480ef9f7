package topology

import (
	"context"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"
)

// Limits bound what reading one topology file may cost. Every one is
// checked before the work it protects: the size before reading, nesting and
// collection sizes on the tokens before parsing, aliases on the syntax tree
// before decoding, node and link counts before validation.
type Limits struct {
	FileSize   int64 // bytes read from the file
	Nodes      int   // nodes; also the keys of any one mapping
	Links      int   // links; also the entries of any one list
	Depth      int   // nesting of mappings and lists
	AliasNodes int   // YAML nodes that aliases (*name) may add in all
}

// DefaultLimits are ample for hand-written labs and `labctl gen` (2 000
// nodes for linear,1000) and keep a hostile file within a second and a few
// hundred MB. docs/topology.md lists them with their flags.
var DefaultLimits = Limits{
	FileSize:   4 << 20,
	Nodes:      5000,
	Links:      10000,
	Depth:      64,
	AliasNodes: 100000,
}

// MaxHostsFile bounds the /etc/netns/<ns>/hosts file one node's hosts:
// makes: a few aliases can otherwise repeat a long list into megabytes.
const MaxHostsFile = 1 << 20

func (l Limits) orDefault() Limits {
	d := DefaultLimits
	if l.FileSize <= 0 {
		l.FileSize = d.FileSize
	}
	if l.Nodes <= 0 {
		l.Nodes = d.Nodes
	}
	if l.Links <= 0 {
		l.Links = d.Links
	}
	if l.Depth <= 0 {
		l.Depth = d.Depth
	}
	if l.AliasNodes <= 0 {
		l.AliasNodes = d.AliasNodes
	}
	return l
}

// ReadFile reads a topology file of at most limit bytes. Anything but a
// regular file is refused before it is opened for reading: a FIFO would
// block forever and /dev/zero never ends.
func ReadFile(path string, limit int64) ([]byte, error) {
	if limit <= 0 {
		limit = DefaultLimits.FileSize
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: a topology must be a regular file, not %s", path, fileKind(fi.Mode()))
	}
	if fi.Size() > limit {
		return nil, fileTooBig(path, limit)
	}
	// O_NONBLOCK: if the path was swapped for a FIFO since the stat, open
	// must not wait for a writer; the check below then refuses it.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: a topology must be a regular file, not %s", path, fileKind(fi.Mode()))
	}
	// The file may grow after the stat: read one byte past the limit.
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fileTooBig(path, limit)
	}
	return data, nil
}

func fileTooBig(path string, limit int64) error { return fmt.Errorf("%s: %s", path, tooBigMsg(limit)) }

func tooBigMsg(limit int64) string {
	return fmt.Sprintf("the file is larger than %d bytes, the limit (raise it with --max-file-size)", limit)
}

func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	case m&os.ModeSocket != 0:
		return "a socket"
	}
	return "a " + m.Type().String() + " file"
}

// LoadContext is Load with limits, returning ctx's error as soon as ctx
// is done. The parser and validator take no context; they run bounded by
// lim, and a cancelled load leaves them to finish in the background while
// the caller (labctl, about to exit) goes on.
func LoadContext(ctx context.Context, path string, lim Limits) (*Topology, error) {
	lim = lim.orDefault()
	data, err := ReadFile(path, lim.FileSize)
	if err != nil {
		return nil, err
	}
	return ParseContext(ctx, data, path, lim)
}

// ParseContext is Parse with limits, returning ctx's error as soon as ctx
// is done (see LoadContext).
func ParseContext(ctx context.Context, data []byte, file string, lim Limits) (*Topology, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	type result struct {
		t   *Topology
		err error
	}
	done := make(chan result, 1)
	go func() {
		t, err := DecodeLimits(data, file, lim)
		if err == nil {
			err = t.checkExpand()
		}
		if err != nil {
			t = nil
		}
		done <- result{t, err}
	}()
	select {
	case r := <-done:
		return r.t, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("reading %s: %w", file, ctx.Err())
	}
}

// precheck walks the tokens, whose cost is linear in the file, and refuses
// nesting deeper than lim.Depth and collections larger than the limits
// before the parser sees them: go-yaml v1.19's parser needs memory in
// proportion to the nesting (1.3 GB for 20 000 levels) and time in the
// square of a block mapping's size (112 s for 200 000 nodes).
func precheck(tokens token.Tokens, file string, lim Limits) *Problem {
	type coll struct {
		col     int
		seq     bool
		flow    bool
		n       int
		lastKey string // the latest key of a mapping
		parent  string // the top-level key this collection is the value of
	}
	var stack []*coll
	flow := 0
	line := 0
	var prev *token.Token
	at := func(tk *token.Token, field, format string, args ...any) *Problem {
		p := &Problem{File: file, Field: field, Msg: fmt.Sprintf(format, args...)}
		if tk != nil && tk.Position != nil {
			p.Line, p.Col = tk.Position.Line, tk.Position.Column
		}
		return p
	}
	push := func(tk *token.Token, c *coll) *Problem {
		if len(stack) == 1 && !stack[0].seq {
			c.parent = stack[0].lastKey
		}
		stack = append(stack, c)
		if len(stack) > lim.Depth {
			return at(tk, "", "mappings and lists nest deeper than %d levels, the limit (raise it with --max-depth)", lim.Depth)
		}
		return nil
	}
	// field is the path of the innermost collection, for a problem with it.
	field := func() string {
		var p path
		for _, c := range stack[:len(stack)-1] {
			switch {
			case !c.seq:
				p = append(p, c.lastKey)
			case c.flow:
				p = append(p, c.n)
			default:
				p = append(p, c.n-1)
			}
		}
		return p.String()
	}
	count := func(tk *token.Token, c *coll) *Problem {
		c.n++
		switch {
		case c.seq && c.n > lim.Links:
			if c.parent == "links" && len(stack) == 2 {
				return at(tk, "links", "the lab has more than %d links, the limit (raise it with --max-links)", lim.Links)
			}
			return at(tk, field(), "a list with more than %d entries: the limit is that on links (raise it with --max-links)", lim.Links)
		case !c.seq && c.n > lim.Nodes:
			if c.parent == "nodes" && len(stack) == 2 {
				return at(tk, "nodes", "the lab has more than %d nodes, the limit (raise it with --max-nodes)", lim.Nodes)
			}
			return at(tk, field(), "a mapping with more than %d keys: the limit is that on nodes (raise it with --max-nodes)", lim.Nodes)
		}
		return nil
	}
	visit := func(tk *token.Token) *Problem {
		if tk.Type == token.CommentType || tk.Position == nil {
			return nil
		}
		pos := tk.Position
		if flow == 0 && pos.Line != line {
			// A line's first token closes the block collections it is
			// left of.
			for len(stack) > 0 && !stack[len(stack)-1].flow && stack[len(stack)-1].col > pos.Column {
				stack = stack[:len(stack)-1]
			}
		}
		line = pos.Line
		var top *coll
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch tk.Type {
		case token.SequenceStartType, token.MappingStartType:
			c := &coll{col: pos.Column, seq: tk.Type == token.SequenceStartType, flow: true}
			if p := push(tk, c); p != nil {
				return p
			}
			flow++
		case token.SequenceEndType, token.MappingEndType:
			if top != nil && top.flow {
				stack = stack[:len(stack)-1]
				flow--
			}
		case token.CollectEntryType:
			if top != nil && top.flow {
				if p := count(tk, top); p != nil {
					return p
				}
			}
		case token.SequenceEntryType:
			if flow > 0 {
				break
			}
			if top != nil && top.seq && top.col == pos.Column {
				if p := count(tk, top); p != nil {
					return p
				}
				break
			}
			if p := push(tk, &coll{col: pos.Column, seq: true, n: 1}); p != nil {
				return p
			}
		case token.MappingValueType:
			if prev == nil || prev.Position == nil {
				break
			}
			key := prev.Position
			if flow > 0 {
				if top != nil && !top.seq && top.n == 0 {
					top.n = 1 // a flow mapping's first key; the rest come with ','
				}
				if top != nil && !top.seq {
					top.lastKey = prev.Value
				}
				break
			}
			// A list at a key's column ends at the next key there.
			for len(stack) > 0 && stack[len(stack)-1].seq && stack[len(stack)-1].col >= key.Column {
				stack = stack[:len(stack)-1]
			}
			top = nil
			if len(stack) > 0 {
				top = stack[len(stack)-1]
			}
			if top != nil && !top.seq && top.col == key.Column {
				top.lastKey = prev.Value
				if p := count(prev, top); p != nil {
					return p
				}
				break
			}
			c := &coll{col: key.Column, n: 1, lastKey: prev.Value}
			if p := push(prev, c); p != nil {
				return p
			}
		}
		prev = tk
		return nil
	}
	for _, tk := range tokens {
		if p := visit(tk); p != nil {
			return p
		}
	}
	return nil
}

// checkAliases refuses a document whose aliases would expand it by more
// than lim.AliasNodes nodes, before the decoder expands them (a
// "billion laughs" of nine lines took 14 s and 900 MB). The problem is at
// the alias that crosses the limit.
func checkAliases(f *ast.File, file string, lim Limits) *Problem {
	size := map[string]int64{} // anchor name → nodes its value stands for
	var added int64
	var over ast.Node
	limit := int64(lim.AliasNodes)
	var walk func(n ast.Node) int64
	walk = func(n ast.Node) int64 {
		if n == nil || over != nil {
			return 0
		}
		switch v := n.(type) {
		case *ast.DocumentNode:
			return walk(v.Body)
		case *ast.MappingNode:
			s := int64(1)
			for _, mv := range v.Values {
				s += walk(mv)
			}
			return s
		case *ast.MappingValueNode:
			return 1 + walk(v.Key) + walk(v.Value)
		case *ast.MappingKeyNode:
			return 1 + walk(v.Value)
		case *ast.SequenceNode:
			s := int64(1)
			for _, x := range v.Values {
				s += walk(x)
			}
			return s
		case *ast.TagNode:
			return 1 + walk(v.Value)
		case *ast.AnchorNode:
			s := walk(v.Value)
			if v.Name != nil {
				size[v.Name.GetToken().Value] = s
			}
			return 1 + s
		case *ast.AliasNode:
			s := int64(1)
			if v.Value != nil {
				s = max(size[v.Value.GetToken().Value], 1)
			}
			added += s - 1
			if added > limit {
				over = v
				return 0
			}
			return s
		}
		return 1
	}
	for _, d := range f.Docs {
		walk(d)
	}
	if over == nil {
		return nil
	}
	p := &Problem{File: file, Msg: fmt.Sprintf("aliases expand the file by more than %d YAML nodes, the limit (raise it with --max-alias-nodes)", lim.AliasNodes)}
	if tk := over.GetToken(); tk != nil && tk.Position != nil {
		p.Line, p.Col = tk.Position.Line, tk.Position.Column
	}
	return p
}

// checkCounts refuses more nodes or links than the limits right after
// decoding, before validation and planning, whose cost grows with them.
func checkCounts(t *Topology, src *source, lim Limits) error {
	switch {
	case len(t.Nodes) > lim.Nodes:
		return Problems{src.problem(path{"nodes"}, fmt.Sprintf("the lab has %d nodes, over the limit of %d (raise it with --max-nodes)", len(t.Nodes), lim.Nodes))}
	case len(t.Links) > lim.Links:
		return Problems{src.problem(path{"links"}, fmt.Sprintf("the lab has %d links, over the limit of %d (raise it with --max-links)", len(t.Links), lim.Links))}
	}
	return nil
}
