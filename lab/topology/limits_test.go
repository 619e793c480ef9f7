package topology

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNonRegularFiles: a FIFO, /dev/zero and a directory are refused
// before anything is read (a FIFO used to block forever, /dev/zero to be
// read until memory ran out).
func TestNonRegularFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "lab.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, kind string }{
		{fifo, "a named pipe (FIFO)"},
		{"/dev/zero", "a character device"},
		{dir, "a directory"},
	} {
		done := make(chan error, 1)
		go func() { _, err := Load(c.path); done <- err }()
		select {
		case err := <-done:
			want := "a topology must be a regular file, not " + c.kind
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Load(%s) = %v, want an error saying %q", c.path, err, want)
			}
		case <-time.After(30 * time.Second):
			// Not a speed check: before the fix these never returned.
			t.Fatalf("Load(%s) is still reading after 30 s", c.path)
		}
	}
}

// manyNodes is a topology with n hosts and a link between each pair.
func manyNodes(n int) []byte {
	var b strings.Builder
	b.WriteString("name: many\nnodes:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  h%d: {kind: host}\n", i)
	}
	b.WriteString("links:\n")
	for i := 0; i+1 < n; i += 2 {
		fmt.Fprintf(&b, "  - endpoints: [h%d:eth0, h%d:eth0]\n", i, i+1)
	}
	return []byte(b.String())
}

func oneProblem(t *testing.T, err error) Problem {
	t.Helper()
	var ps Problems
	if !errors.As(err, &ps) || len(ps) != 1 {
		t.Fatalf("want one Problem, got %v", err)
	}
	return ps[0]
}

// TestDefaultLimits: generated files over each default limit are refused
// with the problem located, before the parser (nodes, depth) or the decoder
// (aliases) does the expensive work.
func TestDefaultLimits(t *testing.T) {
	// One node over the limit: at the key of the first node too many.
	p := oneProblem(t, func() error { _, err := Decode(manyNodes(DefaultLimits.Nodes+1), "many.yaml"); return err }())
	if p.Field != "nodes" || p.Line != DefaultLimits.Nodes+3 || p.Col != 3 || !strings.Contains(p.Msg, "--max-nodes") {
		t.Errorf("over the node limit: %v", p)
	}
	// Raised by the caller (--max-nodes), the same file decodes.
	if _, err := DecodeLimits(manyNodes(DefaultLimits.Nodes+1), "many.yaml", Limits{Nodes: DefaultLimits.Nodes + 1}); err != nil {
		t.Errorf("with the limit raised: %v", err)
	}

	// 20 000 levels of nesting: refused at the first level too deep.
	deep := "name: deep\nnodes:\n  h1:\n    kind: host\n    hosts:\n      10.0.0.1: " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "\n"
	p = oneProblem(t, func() error { _, err := Decode([]byte(deep), "deep.yaml"); return err }())
	if p.Line != 6 || p.Col != 13+DefaultLimits.Depth || !strings.Contains(p.Msg, "--max-depth") {
		t.Errorf("20 000 levels: %v", p)
	}

	// A long name list repeated by aliases, within the alias limit, would
	// still write megabytes to /etc/netns/<ns>/hosts.
	var b strings.Builder
	b.WriteString("name: hb\nnodes:\n  h1:\n    kind: host\n    hosts:\n      10.0.0.1: &n [")
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&b, "n%d.example.test, ", i)
	}
	b.WriteString("x]\n")
	for i := 2; i < 90; i++ {
		fmt.Fprintf(&b, "      10.0.0.%d: *n\n", i)
	}
	_, err := Parse([]byte(b.String()), "hosts.yaml")
	p = oneProblem(t, err)
	if p.Field != "nodes.h1.hosts" || p.Line != 5 || !strings.Contains(p.Msg, "hosts file of") {
		t.Errorf("hosts from aliases: %v", p)
	}

	// A file one byte over the size limit is not read.
	big := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(big, make([]byte, DefaultLimits.FileSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "--max-file-size") {
		t.Errorf("over the size limit: %v", err)
	}
}

// TestLoadCancelled: a cancelled context stops the load of a large file.
func TestLoadCancelled(t *testing.T) {
	file := filepath.Join(t.TempDir(), "many.yaml")
	if err := os.WriteFile(file, manyNodes(40000), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := LoadContext(ctx, file, Limits{Nodes: 40000, Links: 40000}); !errors.Is(err, context.Canceled) {
		t.Fatalf("LoadContext with a cancelled context = %v, want context.Canceled", err)
	}
}
