package topology

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/lexer"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// Problem is one thing wrong with a topology file, located in it.
type Problem struct {
	File  string `json:"file"`
	Line  int    `json:"line"`
	Col   int    `json:"col"`
	Field string `json:"field"`
	Msg   string `json:"message"`
}

func (p Problem) Error() string {
	loc := p.File
	if loc == "" {
		loc = "<topology>"
	}
	if p.Line > 0 {
		loc += fmt.Sprintf(":%d:%d", p.Line, p.Col)
	}
	if p.Field != "" {
		return fmt.Sprintf("%s: %s: %s", loc, p.Field, p.Msg)
	}
	return fmt.Sprintf("%s: %s", loc, p.Msg)
}

// Problems is every problem found in one file; it is an error.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Load reads, decodes and validates a topology file within DefaultLimits.
func Load(path string) (*Topology, error) {
	return LoadContext(context.Background(), path, DefaultLimits)
}

// Parse decodes and validates a topology. The error, if any, is Problems.
func Parse(data []byte, file string) (*Topology, error) {
	t, err := Decode(data, file)
	if err != nil {
		return nil, err
	}
	if err := t.checkExpand(); err != nil {
		return nil, err
	}
	return t, nil
}

var yamlMsgPos = regexp.MustCompile(`^\[(\d+):(\d+)\]\s*`)

// Decode strictly decodes a topology without validating it: unknown fields,
// duplicate keys and wrong types are errors located in the file. It applies
// DefaultLimits.
func Decode(data []byte, file string) (*Topology, error) {
	return DecodeLimits(data, file, DefaultLimits)
}

// DecodeLimits is Decode within lim (zero fields take the default).
func DecodeLimits(data []byte, file string, lim Limits) (*Topology, error) {
	lim = lim.orDefault()
	if int64(len(data)) > lim.FileSize {
		return nil, Problems{{File: file, Msg: tooBigMsg(lim.FileSize)}}
	}
	// Tokenized once, for the precheck and the parser: the tokens of a
	// 4 MiB file take ~300 MB and 0.4 s, bounded by the size limit; the
	// parser's AST would take far more.
	tokens := lexer.Tokenize(string(data))
	if p := precheck(tokens, file, lim); p != nil {
		return nil, Problems{*p}
	}
	src := &source{file: file}
	f, err := parser.Parse(tokens, 0)
	if err != nil {
		return nil, Problems{yamlProblem(file, err)}
	}
	src.ast = f
	if len(f.Docs) == 0 || f.Docs[0].Body == nil {
		return nil, Problems{{File: file, Line: 1, Col: 1, Msg: "the file is empty: a topology needs at least name: and nodes:"}}
	}
	if p := checkAliases(f, file, lim); p != nil {
		return nil, Problems{*p}
	}
	var t Topology
	if pr, ok := decodeParts(f, &t, file); !ok {
		return nil, Problems{pr}
	}
	if len(f.Docs) > 1 {
		p := Problem{File: file, Line: 1, Col: 1, Msg: "a topology file holds one YAML document"}
		// Point at the "---" that starts the second one.
		if tk := f.Docs[1].Start; tk != nil && tk.Position != nil {
			p.Line, p.Col = tk.Position.Line, tk.Position.Column
		}
		return nil, Problems{p}
	}
	t.File, t.src = file, src
	if err := checkCounts(&t, src, lim); err != nil {
		return nil, err
	}
	for name, n := range t.Nodes {
		if n == nil {
			return nil, Problems{src.problem(path{"nodes", name}, "node has no settings (write at least kind:)")}
		}
		n.Name = name
	}
	return &t, nil
}

// unmarshal strictly decodes the parsed document into t (parsing it again
// would double the parser's cost). go-yaml v1.19 panics on some
// malformed input (a tag with nothing after it where a list is expected), and
// a bad file must be reported, not crash labctl: the panic becomes a Problem
// at the first such tag.
func unmarshal(f *ast.File, t *Topology, file string) (pr Problem, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			pr, ok = Problem{File: file, Msg: fmt.Sprintf("the YAML decoder failed on this file: %v", r)}, false
			for _, n := range ast.FilterFile(ast.TagType, f) {
				if tag, _ := n.(*ast.TagNode); tag != nil && (tag.Value == nil || isEmptyNode(tag.Value)) {
					if tk := tag.GetToken(); tk != nil && tk.Position != nil {
						pr.Line, pr.Col = tk.Position.Line, tk.Position.Column
						pr.Msg = fmt.Sprintf("tag %s has no value after it", tk.Value)
					}
					break
				}
			}
		}
	}()
	if err := yaml.NodeToValue(f.Docs[0].Body, t, yaml.DisallowUnknownField()); err != nil {
		return typeProblem(f, yamlProblem(file, err), err), false
	}
	return Problem{}, true
}

// typeProblem rewrites go-yaml's "cannot unmarshal string into Go struct
// field Topology.Nodes of type int" (which names the wrong field, in Go's
// words) as the path of the value and the kind of value it must be.
func typeProblem(f *ast.File, p Problem, err error) Problem {
	var tk *token.Token
	var want reflect.Type
	var te *yaml.TypeError
	var oe *yaml.OverflowError
	switch {
	case errors.As(err, &te):
		tk, want = te.Token, te.DstType
	case errors.As(err, &oe):
		tk, want = oe.Token, oe.DstType
	default:
		return p
	}
	pth, n := pathAt(f, tk)
	if n == nil {
		return p
	}
	p.Field = pth.String()
	got := "a mapping"
	switch v := n.(type) {
	case *ast.SequenceNode:
		got = "a list"
	case *ast.MappingNode, *ast.MappingValueNode:
	case *ast.StringNode:
		got = strconv.Quote(v.Value)
	default:
		if t := n.GetToken(); t != nil {
			got = t.Value
		}
	}
	if oe != nil {
		p.Msg = fmt.Sprintf("%s is out of range for %s", got, typeWords(want))
	} else {
		p.Msg = fmt.Sprintf("must be %s, not %s", typeWords(want), got)
	}
	return p
}

// typeWords names a Go type as the file's author knows it.
func typeWords(t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "a value"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return "a " + t.String()
}

// pathAt finds the value whose token is tk, returning its path and node.
func pathAt(f *ast.File, tk *token.Token) (path, ast.Node) {
	if f == nil || tk == nil || tk.Position == nil || len(f.Docs) == 0 {
		return nil, nil
	}
	same := func(n ast.Node) bool {
		t := n.GetToken()
		return t == tk || t != nil && t.Position != nil && t.Position.Offset == tk.Position.Offset && t.Position.Line == tk.Position.Line
	}
	var find func(n ast.Node, p path) (path, ast.Node)
	find = func(n ast.Node, p path) (path, ast.Node) {
		if n == nil {
			return nil, nil
		}
		switch v := n.(type) {
		case *ast.TagNode:
			if same(v) {
				return p, v.Value
			}
			return find(v.Value, p)
		case *ast.AnchorNode:
			if same(v) {
				return p, v.Value
			}
			return find(v.Value, p)
		case *ast.MappingNode:
			for _, mv := range v.Values {
				if q, m := find(mv, p); m != nil {
					return q, m
				}
			}
			if same(v) {
				return p, v
			}
		case *ast.MappingValueNode:
			q := p.with(keyText(v.Key))
			if r, m := find(v.Value, q); m != nil {
				return r, m
			}
			if same(v) {
				return q, v.Value
			}
		case *ast.SequenceNode:
			if same(v) {
				return p, v
			}
			for i, x := range v.Values {
				if q, m := find(x, p.with(i)); m != nil {
					return q, m
				}
			}
		default:
			if same(v) {
				return p, v
			}
		}
		return nil, nil
	}
	return find(f.Docs[0].Body, nil)
}

// yamlProblem turns a go-yaml error into a located Problem.
func yamlProblem(file string, err error) Problem {
	p := Problem{File: file, Msg: err.Error()}
	var ye yaml.Error
	if errors.As(err, &ye) {
		p.Msg = ye.GetMessage()
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			p.Line, p.Col = tk.Position.Line, tk.Position.Column
		}
	}
	if m := yamlMsgPos.FindStringSubmatch(p.Msg); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
		p.Col, _ = strconv.Atoi(m[2])
		p.Msg = p.Msg[len(m[0]):]
	}
	var uf *yaml.UnknownFieldError
	if errors.As(err, &uf) {
		if tk := uf.GetToken(); tk != nil {
			p.Field = tk.Value
			p.Msg = fmt.Sprintf("unknown field %q", tk.Value)
		}
	}
	return p
}

// path addresses a place in the document: map keys (string) and sequence
// indexes (int).
type path []any

func (p path) String() string {
	var b strings.Builder
	for i, s := range p {
		switch v := s.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", v)
		case string:
			if i > 0 {
				b.WriteByte('.')
			}
			if v == "" {
				v = `""` // an empty key, which would otherwise vanish
			}
			b.WriteString(v)
		}
	}
	return b.String()
}

func (p path) with(s ...any) path { return append(append(path{}, p...), s...) }

// source resolves paths to positions in the parsed document.
type source struct {
	file string
	ast  *ast.File
}

// problem locates msg at the value p names. A mapping or sequence value,
// or an empty one, is located at its key: a mapping's own token is its first
// ':', mid-line and far from what is wrong. A path that is not in the file
// (a missing field) is located at the deepest part of it that is.
func (s *source) problem(p path, msg string) Problem { return s.locate(p, msg, false) }

// keyProblem locates msg at the map key p ends in, for a problem with a name
// (a sysctl key) rather than with its value.
func (s *source) keyProblem(p path, msg string) Problem { return s.locate(p, msg, true) }

func (s *source) locate(p path, msg string, atKey bool) Problem {
	pr := Problem{Field: p.String(), Msg: msg}
	if s == nil {
		return pr
	}
	pr.File = s.file
	if s.ast == nil || len(s.ast.Docs) == 0 {
		return pr
	}
	n := s.ast.Docs[0].Body
	var last ast.Node = n
	for i, seg := range p {
		if n == nil {
			break
		}
		next, keyNode := step(n, seg)
		if next == nil {
			break
		}
		n, last = next, next
		if keyNode != nil && (isEmptyNode(next) || isCollection(next) || atKey && i == len(p)-1) {
			last = keyNode
		}
	}
	last = firstKey(last)
	if last != nil {
		if tk := last.GetToken(); tk != nil && tk.Position != nil {
			pr.Line, pr.Col = tk.Position.Line, tk.Position.Column
		}
	}
	return pr
}

func isEmptyNode(n ast.Node) bool {
	_, ok := n.(*ast.NullNode)
	return ok
}

func isCollection(n ast.Node) bool {
	switch v := n.(type) {
	case *ast.MappingNode, *ast.MappingValueNode, *ast.SequenceNode:
		return true
	case *ast.TagNode:
		return isCollection(v.Value)
	case *ast.AnchorNode:
		return isCollection(v.Value)
	}
	return false
}

// firstKey stands a mapping (a sequence item, the document) in for its first
// key, whose token is where the mapping starts on its line.
func firstKey(n ast.Node) ast.Node {
	switch v := n.(type) {
	case *ast.MappingNode:
		if len(v.Values) > 0 {
			return v.Values[0].Key
		}
	case *ast.MappingValueNode:
		return v.Key
	}
	return n
}

// keyText is a map key as the decoder sees it: a quoted key without quotes.
func keyText(k ast.MapKeyNode) string {
	if s, ok := k.(*ast.StringNode); ok {
		return s.Value
	}
	return k.String()
}

// step descends one path segment, returning the value node and, for a map
// key, the key node.
func step(n ast.Node, seg any) (ast.Node, ast.Node) {
	switch v := n.(type) {
	case *ast.MappingNode:
		key, _ := seg.(string)
		for _, mv := range v.Values {
			if keyText(mv.Key) == key {
				return mv.Value, mv.Key
			}
		}
	case *ast.MappingValueNode:
		key, _ := seg.(string)
		if keyText(v.Key) == key {
			return v.Value, v.Key
		}
	case *ast.SequenceNode:
		i, ok := seg.(int)
		if ok && i >= 0 && i < len(v.Values) {
			return v.Values[i], nil
		}
	case *ast.TagNode:
		return step(v.Value, seg)
	case *ast.AnchorNode:
		return step(v.Value, seg)
	}
	return nil, nil
}
