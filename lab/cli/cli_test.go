package cli

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"labctl/lab/internal/labtest"
	"labctl/lab/netns"
	"labctl/lab/plan"
	"labctl/lab/state"
	"labctl/lab/topology"
)

const sampleFile = "../../topologies/sample.yaml"

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errw bytes.Buffer
	code := Main(context.Background(), args, &out, &errw)
	return code, out.String(), errw.String()
}

func TestPlanText(t *testing.T) {
	code, out, errs := run(t, "plan", "-t", sampleFile)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"lab sample: 5 nodes, 4 links", "namespaces (5)", "+ veth r1:eth1 <-> h2:eth0 mtu 1500",
		"+ bridge s1:br0", "~ sysctl r1 net.ipv4.ip_forward=1", "+ route h1 default via 10.0.1.1", "+ service h2/web"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
}

func TestPlanJSON(t *testing.T) {
	code, out, errs := run(t, "plan", "-t", sampleFile, "--format", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var p plan.Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("plan --format json is not JSON: %v\n%s", err, out)
	}
	tp, err := topology.Load(sampleFile)
	if err != nil {
		t.Fatal(err)
	}
	if want := plan.Compute(tp, nil); len(p.Steps) != len(want.Steps) || p.Lab != "sample" {
		t.Fatalf("json plan has %d steps for lab %q, want %d for sample", len(p.Steps), p.Lab, len(want.Steps))
	}
}

func badFile(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(p, []byte("name: demo\nnodes:\n  h1:\n    kind: host\n    interfaces:\n      eth0:\n        addresses: [10.0.0.1/33]\nlinks:\n  - endpoints: [h1:eth0, h2:eth0]\n"), 0o644)
	return p
}

func TestMalformedFileIsLocated(t *testing.T) {
	p := badFile(t)
	code, _, errs := run(t, "plan", "-t", p)
	if code != 1 {
		t.Fatalf("exit %d for a malformed file", code)
	}
	for _, want := range []string{p + ":7:21: nodes.h1.interfaces.eth0.addresses[0]:", p + `:9:26: links[0].endpoints[1]: no node named "h2"`} {
		if !strings.Contains(errs, want) {
			t.Errorf("error lacks %q:\n%s", want, errs)
		}
	}
	code, _, errs = run(t, "plan", "-t", p, "--format", "json")
	var m map[string]string
	if code != 1 || json.Unmarshal([]byte(errs), &m) != nil || !strings.Contains(m["error"], ":7:21:") {
		t.Fatalf("json error: exit %d %q", code, errs)
	}
}

func TestGen(t *testing.T) {
	for _, c := range []struct {
		args         []string
		nodes, links int
	}{
		{[]string{"gen", "linear", "5"}, 10, 9},
		{[]string{"gen", "star", "4"}, 5, 4},
		{[]string{"gen", "tree", "2", "--fanout", "3"}, 4 + 9, 12},
	} {
		code, out, errs := run(t, c.args...)
		if code != 0 {
			t.Fatalf("%v: exit %d %s", c.args, code, errs)
		}
		tp, err := topology.Parse([]byte(out), "gen.yaml")
		if err != nil {
			t.Fatalf("%v output does not parse: %v", c.args, err)
		}
		if len(tp.Nodes) != c.nodes || len(tp.Links) != c.links {
			t.Errorf("%v: %d nodes %d links, want %d %d", c.args, len(tp.Nodes), len(tp.Links), c.nodes, c.links)
		}
	}
	if code, _, _ := run(t, "gen", "ring", "3"); code == 0 {
		t.Error("gen accepted an unknown shape")
	}
}

func TestBadFormatFlag(t *testing.T) {
	if code, _, errs := run(t, "status", "--format", "xml"); code == 0 || !strings.Contains(errs, "--format must be text or json") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

func TestTcpdumpArgs(t *testing.T) {
	got := strings.Join(tcpdumpArgs("eth1", "/tmp/x.pcap", 5, "icmp"), " ")
	if got != "tcpdump -i eth1 -U --immediate-mode -nn -w /tmp/x.pcap -Z root -c 5 icmp" {
		t.Fatal(got)
	}
	if got := strings.Join(tcpdumpArgs("eth1", "", 0, ""), " "); got != "tcpdump -i eth1 -U --immediate-mode -nn -l" {
		t.Fatal(got)
	}
}

// --- as root: the real thing ---

func snapshot() string {
	var b strings.Builder
	names, _ := netns.List()
	fmt.Fprintln(&b, names)
	ents, _ := os.ReadDir(state.Root)
	for _, e := range ents {
		fmt.Fprintln(&b, e.Name())
	}
	return b.String()
}

func TestMalformedUpChangesNothing(t *testing.T) {
	labtest.NeedRoot(t)
	before := snapshot()
	if code, _, errs := run(t, "up", "-t", badFile(t)); code != 1 || !strings.Contains(errs, ":7:21:") {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if after := snapshot(); after != before {
		t.Fatalf("a refused up changed things:\n%s\nvs\n%s", before, after)
	}
}

func TestExecCaptureLogs(t *testing.T) {
	labtest.NeedRoot(t)
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("tcpdump not installed")
	}
	bin := labtest.BuildLabctl(t, t.TempDir())
	lab := labtest.LabName("cli")
	b, _ := os.ReadFile(sampleFile)
	file := filepath.Join(t.TempDir(), "lab.yaml")
	os.WriteFile(file, bytes.Replace(b, []byte("name: sample"), []byte("name: "+lab), 1), 0o644)
	t.Cleanup(func() { exec.Command(bin, "down", lab).Run() })
	if out, err := exec.Command(bin, "up", "-t", file).CombinedOutput(); err != nil {
		t.Fatalf("up: %v\n%s", err, out)
	}

	// exec returns the command's own status.
	if err := exec.Command(bin, "exec", "--lab", lab, "h1", "--", "ping", "-c1", "-W2", "h2.sample.test").Run(); err != nil {
		t.Fatalf("exec ping: %v", err)
	}
	err := exec.Command(bin, "exec", "--lab", lab, "h1", "--", "sh", "-c", "exit 3").Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("exec exit status: %v", err)
	}

	// capture writes a pcap with the packets that crossed r1.
	pcap := filepath.Join(t.TempDir(), "r1.pcap")
	capt := exec.Command(bin, "capture", "--lab", lab, "r1", "eth1", "-w", pcap, "-c", "2", "--filter", "icmp")
	if err := capt.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- capt.Wait() }()
	deadline := time.After(10 * time.Second)
	for i := 0; ; i++ {
		exec.Command(bin, "exec", "--lab", lab, "h1", "--", "ping", "-c1", "-W1", "10.0.2.10").Run()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("capture: %v", err)
			}
			data, err := os.ReadFile(pcap)
			if err != nil {
				t.Fatal(err)
			}
			if len(data) < 24 || binary.LittleEndian.Uint32(data) != 0xa1b2c3d4 {
				t.Fatalf("not a pcap file (%d bytes)", len(data))
			}
			if n := countPackets(data[24:]); n != 2 {
				t.Fatalf("pcap holds %d packets, want 2", n)
			}
			goto logs
		case <-deadline:
			capt.Process.Kill()
			t.Fatal("capture did not stop after -c 2")
		case <-time.After(200 * time.Millisecond):
		}
	}
logs:
	out, err := exec.Command(bin, "logs", "--lab", lab, "h2", "web").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "serving http") {
		t.Fatalf("logs: %v\n%s", err, out)
	}
}

func countPackets(b []byte) int {
	n := 0
	for len(b) >= 16 {
		incl := binary.LittleEndian.Uint32(b[8:])
		if int(incl)+16 > len(b) {
			break
		}
		b = b[16+incl:]
		n++
	}
	return n
}
