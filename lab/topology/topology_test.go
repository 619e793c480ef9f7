package topology

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/*.err from the decoder's output")

// TestBad runs the corpus of malformed files: each must fail with exactly
// the Problems recorded in the .err file next to it. The paths are relative
// so that the golden text does not depend on where the repository lives.
func TestBad(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 35 {
		t.Fatalf("only %d files in testdata/bad; the corpus was at least 35", len(files))
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			_, err := LoadContext(context.Background(), file, fileLimits(t, file))
			if err == nil {
				t.Fatal("loaded without error")
			}
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("error is %T, not Problems: %v", err, err)
			}
			for i, p := range ps {
				if p.File != file {
					t.Errorf("problem %d names file %q, want %q", i, p.File, file)
				}
				if p.Line < 1 || p.Col < 1 {
					t.Errorf("problem %d is not located: %v", i, p)
				}
				if i > 0 && (p.Line < ps[i-1].Line || p.Line == ps[i-1].Line && p.Col < ps[i-1].Col) {
					t.Errorf("problem %d is out of file order: %v after %v", i, p, ps[i-1])
				}
			}
			got := ps.Error() + "\n"
			golden := strings.TrimSuffix(file, ".yaml") + ".err"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("problems differ from %s\n got:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

// fileLimits reads "# limits: nodes=2,links=1" from a file's first line,
// so that a small file can stand for one over a limit.
func fileLimits(t *testing.T, file string) Limits {
	lim := DefaultLimits
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	spec, ok := strings.CutPrefix(first, "# limits: ")
	if !ok {
		return lim
	}
	for _, kv := range strings.Split(spec, ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("%s: limit %q: %v", file, kv, err)
		}
		switch k {
		case "nodes":
			lim.Nodes = n
		case "links":
			lim.Links = n
		case "depth":
			lim.Depth = n
		case "alias-nodes":
			lim.AliasNodes = n
		default:
			t.Fatalf("%s: unknown limit %q", file, k)
		}
	}
	return lim
}

// TestManyProblems checks that validation does not stop at the first
// problem: every one in the file is reported, in file order.
func TestManyProblems(t *testing.T) {
	_, err := Load("testdata/bad/many_problems.yaml")
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("want Problems, got %v", err)
	}
	var fields []string
	for _, p := range ps {
		fields = append(fields, p.Field)
	}
	want := []string{
		"name",
		"nodes.h1.interfaces.eth0.addresses[1]",
		"nodes.h1.interfaces.eth0.mtu",
		"nodes.h1.routes[0].to",
		"nodes.h1.sysctls.vm.swappiness",
		"nodes.h1.services.web.after[0]",
		"nodes.h2.kind",
		"nodes.h2.interfaces.eth0.addresses[0]",
		"links[1].endpoints[0]",
		"links[1].endpoints[1]",
		"links[2].endpoints",
	}
	if !slices.Equal(fields, want) {
		t.Errorf("fields of the problems:\n got %q\nwant %q", fields, want)
	}
}

func TestGood(t *testing.T) {
	files, err := filepath.Glob("testdata/good/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no files in testdata/good")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			top, err := Load(file)
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, top)
		})
	}
}

// roundTrip checks that Marshal writes a topology that parses back to the
// same thing: labctl gen relies on it.
func roundTrip(t *testing.T, top *Topology) {
	t.Helper()
	b, err := Marshal(top)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	back, err := Parse(b, "marshalled.yaml")
	if err != nil {
		t.Fatalf("marshalled topology does not parse: %v\n%s", err, b)
	}
	a1, _ := json.Marshal(top)
	a2, _ := json.Marshal(back)
	if string(a1) != string(a2) {
		t.Errorf("round trip changed the topology:\n was %s\n now %s", a1, a2)
	}
}

func TestSample(t *testing.T) {
	top, err := Load("testdata/good/sample.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := top.NodeNames(), []string{"h1", "h2", "r1", "s1"}; !slices.Equal(got, want) {
		t.Errorf("NodeNames() = %q, want %q", got, want)
	}
	web := top.Nodes["h2"].Services["web"]
	if web == nil || web.Ready == nil || web.Ready.TCP != "8080" {
		t.Fatalf("h2/web readiness not decoded: %+v", web)
	}
	if got := top.Nodes["r1"].Sysctls["net.ipv4.conf.all.rp_filter"]; got != "0" {
		t.Errorf("sysctl net.ipv4.conf.all.rp_filter = %q, want \"0\"", got)
	}
}

func TestSegments(t *testing.T) {
	const src = `
name: seg
nodes:
  s1: {kind: switch}
  r1: {kind: router}
  h1: {kind: host}
  h2: {kind: host}
  h3: {kind: host}
links:
  - endpoints: [h2:eth0, s1:p2]
  - endpoints: [h1:eth0, s1:p1]
  - endpoints: [s1:p3, r1:eth0]
  - endpoints: [r1:eth1, h3:eth0]
`
	top, err := Parse([]byte(src), "seg.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, seg := range top.Segments() {
		var names []string
		for _, e := range seg {
			names = append(names, e.String())
		}
		got = append(got, strings.Join(names, " "))
	}
	want := []string{
		"h1:eth0 h2:eth0 r1:eth0 s1:p1 s1:p2 s1:p3",
		"h3:eth0 r1:eth1",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Segments():\n got %q\nwant %q", got, want)
	}
}

func TestParseRouteDst(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" means an error
	}{
		{"default", "0.0.0.0/0"},
		{"default6", "::/0"},
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"192.0.2.1/32", "192.0.2.1/32"},
		{"fd00:1::/64", "fd00:1::/64"},
		{"10.0.0.1/8", ""},
		{"fd00::1/64", ""},
		{"10.0.0.0", ""},
		{"10.0.0.0/33", ""},
		{"everywhere", ""},
		{"", ""},
	} {
		got, err := ParseRouteDst(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("ParseRouteDst(%q) = %v, want an error", tc.in, got)
		case tc.want != "" && err != nil:
			t.Errorf("ParseRouteDst(%q): %v", tc.in, err)
		case tc.want != "" && got.String() != tc.want:
			t.Errorf("ParseRouteDst(%q) = %v, want %s", tc.in, got, tc.want)
		}
	}
}

func TestReadyAddr(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" means an error
	}{
		{"80", "127.0.0.1:80"},
		{":8080", "127.0.0.1:8080"},
		{"65535", "127.0.0.1:65535"},
		{"10.0.0.1:53", "10.0.0.1:53"},
		{"[fd00::1]:443", "[fd00::1]:443"},
		{"0", ""},
		{"65536", ""},
		{"http", ""},
		{":", ""},
		{"10.0.0.1:0", ""},
		{"localhost:80", ""},
		{"fd00::1", ""},
	} {
		got, err := ReadyAddr(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("ReadyAddr(%q) = %q, want an error", tc.in, got)
		case tc.want != "" && err != nil:
			t.Errorf("ReadyAddr(%q): %v", tc.in, err)
		case got != tc.want:
			t.Errorf("ReadyAddr(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSplitServiceRef(t *testing.T) {
	for _, tc := range []struct{ node, ref, wantNode, wantSvc string }{
		{"h1", "web", "h1", "web"},
		{"h1", "h2/db", "h2", "db"},
		{"", "h2/db", "h2", "db"},
		{"h1", "h1/web", "h1", "web"},
	} {
		n, s := SplitServiceRef(tc.node, tc.ref)
		if n != tc.wantNode || s != tc.wantSvc {
			t.Errorf("SplitServiceRef(%q, %q) = %q, %q, want %q, %q", tc.node, tc.ref, n, s, tc.wantNode, tc.wantSvc)
		}
	}
}

// kindCount counts nodes per kind.
func kindCount(top *Topology) map[string]int {
	out := map[string]int{}
	for _, n := range top.Nodes {
		out[n.Kind]++
	}
	return out
}

func TestGenerate(t *testing.T) {
	pow := func(f, d int) int { return int(math.Pow(float64(f), float64(d))) }
	type tc struct {
		shape             string
		n, fanout         int
		hosts, sws, links int
	}
	var cases []tc
	for _, n := range []int{1, 2, 10, 1000} {
		cases = append(cases, tc{"linear", n, 0, n, n, 2*n - 1})
	}
	for _, n := range []int{1, 10} {
		cases = append(cases, tc{"star", n, 0, n, 1, n})
	}
	for _, df := range [][2]int{{2, 2}, {3, 3}} {
		d, f := df[0], df[1]
		hosts, sws := pow(f, d), (pow(f, d)-1)/(f-1)
		// A tree has one link per node but its root.
		cases = append(cases, tc{"tree", d, f, hosts, sws, hosts + sws - 1})
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s-%d-%d", c.shape, c.n, c.fanout), func(t *testing.T) {
			top, err := Generate("gen", c.shape, c.n, c.fanout)
			if err != nil {
				t.Fatal(err)
			}
			k := kindCount(top)
			if k["host"] != c.hosts || k["switch"] != c.sws || len(top.Links) != c.links || len(top.Nodes) != c.hosts+c.sws {
				t.Errorf("%d hosts, %d switches, %d links, %d nodes; want %d, %d, %d, %d",
					k["host"], k["switch"], len(top.Links), len(top.Nodes), c.hosts, c.sws, c.links, c.hosts+c.sws)
			}
			if err := top.Validate(); err != nil {
				t.Fatalf("generated topology is invalid: %v", err)
			}
			roundTrip(t, top)
		})
	}
}

func TestGenerateErrors(t *testing.T) {
	for _, c := range []struct {
		shape     string
		n, fanout int
	}{
		{"linear", 0, 0},
		{"star", -1, 0},
		{"tree", 2, 0},
		{"ring", 3, 0},
	} {
		if _, err := Generate("gen", c.shape, c.n, c.fanout); err == nil {
			t.Errorf("Generate(%q, %d, %d) succeeded, want an error", c.shape, c.n, c.fanout)
		}
	}
}

// FuzzParse feeds arbitrary bytes to the decoder and the validator: they
// must never panic, and any error must be Problems.
func FuzzParse(f *testing.F) {
	for _, glob := range []string{"testdata/good/*.yaml", "testdata/bad/*.yaml"} {
		files, _ := filepath.Glob(glob)
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := Parse(data, "fuzz.yaml")
		var ps Problems
		if err != nil && !errors.As(err, &ps) {
			t.Fatalf("error is %T, not Problems: %v", err, err)
		}
	})
}
