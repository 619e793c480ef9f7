package topology

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// repoRoot is the checkout, seen from this package's directory.
const repoRoot = "../.."

var (
	// mdLink is an inline markdown link or image: [text](target).
	mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	// docMention is a doc path named in a comment or string of a topology,
	// a Go or proto file or a script: docs/NAME.md, without a #fragment
	// (in sources one may label something else: docs/topology.md#example
	// names a parsed excerpt).
	docMention = regexp.MustCompile(`docs/[A-Za-z0-9._-]+\.(?:md|json)`)
	// upMention is a ../-relative path to a doc, inside the repository or
	// not (../shared/docs/… is a reader's dead end).
	upMention = regexp.MustCompile(`(?:\.\./)+[A-Za-z0-9._/-]+\.(?:md|json)`)
	// schemaModeline is yaml-language-server's modeline; its path is
	// relative to the file that carries it.
	schemaModeline = regexp.MustCompile(`\$schema=(\S+)`)
)

// TestRepoLinks checks every reference users or readers follow inside the
// repository: each relative link of README.md and docs/*.md, each docs/…
// path named in topologies, Go, proto and script files, and each $schema
// modeline must name a file of this checkout (nothing outside it, such as
// ../shared), and a #fragment must be a heading of that file.
func TestRepoLinks(t *testing.T) {
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]map[string]bool{} // markdown file → its heading slugs
	// check resolves target against dir; at:line is where it is written.
	check := func(at string, line int, dir, target string) {
		t.Helper()
		file, frag, _ := strings.Cut(target, "#")
		path := filepath.Join(root, at) // a bare #fragment is in the same file
		if file != "" {
			path = filepath.Clean(filepath.Join(dir, file))
		}
		if r := rel(root, path); r == ".." || strings.HasPrefix(r, "../") {
			t.Errorf("%s:%d: %q points outside the repository (%s)", at, line, target, r)
			return
		}
		if _, err := os.Stat(path); err != nil {
			t.Errorf("%s:%d: %q: no such file %s", at, line, target, rel(root, path))
			return
		}
		if frag == "" || !strings.HasSuffix(path, ".md") {
			return
		}
		if anchors[path] == nil {
			anchors[path] = headingSlugs(t, path)
		}
		if !anchors[path][frag] {
			t.Errorf("%s:%d: %q: %s has no heading #%s", at, line, target, rel(root, path), frag)
		}
	}

	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	mds := append([]string{filepath.Join(root, "README.md")}, docs...)
	for _, md := range mds {
		for _, l := range proseLines(t, md) {
			for _, m := range mdLink.FindAllStringSubmatch(inlineCode.ReplaceAllString(l.text, ""), -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				check(rel(root, md), l.n, filepath.Dir(md), target)
			}
		}
	}

	var sources []string
	for _, dir := range []string{"topologies", "lab", "cmd", "scripts"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Name() == "links_test.go" {
				return nil // its own patterns are not references
			}
			switch filepath.Ext(p) {
			case ".yaml", ".go", ".proto", ".sh":
				sources = append(sources, p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	sources = append(sources, filepath.Join(root, "Makefile"))
	mentions := 0
	for _, src := range sources {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		for i, text := range strings.Split(string(b), "\n") {
			for _, r := range sourceRefs(text) {
				dir := root // docs/… names the repository's docs
				if r.fileRelative {
					dir = filepath.Dir(src)
				}
				check(rel(root, src), i+1, dir, r.target)
				mentions++
			}
		}
	}
	if mentions < 10 {
		t.Errorf("found only %d doc paths in the sources; the scan is broken", mentions)
	}
}

type sourceRef struct {
	target       string
	fileRelative bool // ../…: relative to the file; docs/…: to the repository
}

// sourceRefs returns the doc paths one line of a source file names.
func sourceRefs(text string) []sourceRef {
	if m := schemaModeline.FindStringSubmatch(text); m != nil {
		if strings.Contains(m[1], "://") {
			return nil
		}
		return []sourceRef{{m[1], true}}
	}
	var refs []sourceRef
	for _, m := range upMention.FindAllString(text, -1) {
		refs = append(refs, sourceRef{m, true})
	}
	for _, m := range docMention.FindAllStringIndex(text, -1) {
		if m[0] > 0 && (text[m[0]-1] == '/' || text[m[0]-1] == '.' || isWord(rune(text[m[0]-1]))) {
			continue // part of another path: ../docs/… above, /run/x/docs/…
		}
		refs = append(refs, sourceRef{text[m[0]:m[1]], false})
	}
	return refs
}

// TestSourceRefs pins what the scan of source files takes for a doc path.
func TestSourceRefs(t *testing.T) {
	for _, c := range []struct {
		line string
		want []sourceRef
	}{
		{"# One cloud region (stage 1 of docs/double11-story.md):", []sourceRef{{"docs/double11-story.md", false}}},
		{"# the story (../shared/docs/double11-story.md)", []sourceRef{{"../shared/docs/double11-story.md", true}}},
		{`const schemaPath = "../../docs/topology.schema.json"`, []sourceRef{{"../../docs/topology.schema.json", true}}},
		{"# yaml-language-server: $schema=../docs/topology.schema.json", []sourceRef{{"../docs/topology.schema.json", true}}},
		{"# yaml-language-server: $schema=https://example.test/s.json", nil},
		{`Parse(b, "docs/topology.md#example")`, []sourceRef{{"docs/topology.md", false}}},
		{"state in /run/labctl/docs/x.md and mydocs/y.md", nil},
	} {
		if got := sourceRefs(c.line); !slices.Equal(got, c.want) {
			t.Errorf("sourceRefs(%q) = %v, want %v", c.line, got, c.want)
		}
	}
}

func rel(root, p string) string {
	r, err := filepath.Rel(root, p)
	if err != nil {
		return p
	}
	return filepath.ToSlash(r)
}

func isWord(r rune) bool { return r == '_' || r == '-' || unicode.IsLetter(r) || unicode.IsDigit(r) }

type numbered struct {
	n    int
	text string
}

// proseLines returns a markdown file's lines outside fenced code blocks
// (shell comments there are not headings, nor regular expressions links).
func proseLines(t *testing.T, path string) []numbered {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []numbered
	fenced := false
	for i, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		out = append(out, numbered{i + 1, line})
	}
	return out
}

// inlineCode is a code span: what it holds is not a link.
var inlineCode = regexp.MustCompile("`[^`]*`")

// headingSlugs returns the anchors GitHub gives a markdown file's headings:
// lowercase, punctuation dropped, spaces to hyphens, -1, -2… for repeats.
func headingSlugs(t *testing.T, path string) map[string]bool {
	t.Helper()
	slugs := map[string]bool{}
	seen := map[string]int{}
	for _, l := range proseLines(t, path) {
		title, ok := strings.CutPrefix(l.text, "#")
		if !ok {
			continue
		}
		title = strings.TrimLeft(title, "#")
		if !strings.HasPrefix(title, " ") {
			continue
		}
		var s strings.Builder
		for _, r := range strings.ToLower(strings.TrimSpace(title)) {
			switch {
			case r == ' ':
				s.WriteRune('-')
			case isWord(r):
				s.WriteRune(r)
			}
		}
		slug := s.String()
		if n := seen[slug]; n > 0 {
			slugs[slug+"-"+strconv.Itoa(n)] = true
		} else {
			slugs[slug] = true
		}
		seen[slug]++
	}
	return slugs
}
