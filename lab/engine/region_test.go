package engine_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"labctl/lab/engine"
	"labctl/lab/internal/labtest"
	"labctl/lab/netns"
	"labctl/lab/packets"
	"labctl/lab/serve"
	"labctl/lab/state"
	"labctl/lab/topology"
)

// The cloud region end to end, on real Open vSwitch: every host runs its
// own ovsdb-server and ovs-vswitchd, VMs talk over VXLAN, two tenants use
// the same addresses on the same hosts, and a public IP is translated to a
// VM by the gateway. The lab is topologies/region.yaml under another name.

func regionTopology(t *testing.T, lab string) *topology.Topology {
	return labTopology(t, "region", lab)
}

// labTopology reads topologies/<name>.yaml as lab (the file's name: line
// replaced, so a test never meets a lab someone brought up by hand).
func labTopology(t *testing.T, name, lab string) *topology.Topology {
	t.Helper()
	b, err := os.ReadFile("../../topologies/" + name + ".yaml")
	if err != nil {
		t.Fatal(err)
	}
	src := regexp.MustCompile(`(?m)^name: `+name+`$`).ReplaceAllString(string(b), "name: "+lab)
	tp, err := topology.Parse([]byte(src), name+".yaml")
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

// run runs argv inside a node and returns its output and error.
func run(lab, node string, argv ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", topology.Namespace(lab, node)}, argv...)...).CombinedOutput()
	return string(out), err
}

func mustRun(t *testing.T, lab, node string, argv ...string) string {
	t.Helper()
	out, err := run(lab, node, argv...)
	if err != nil {
		t.Fatalf("%s: %s: %v\n%s", node, strings.Join(argv, " "), err, out)
	}
	return out
}

// capture runs tcpdump on a node's interface while fn runs and returns the
// decoded packets.
func capture(t *testing.T, lab, node, iface, filter string, fn func()) []packets.Packet {
	t.Helper()
	file := filepath.Join(t.TempDir(), node+".pcap")
	cmd := exec.Command("ip", "netns", "exec", topology.Namespace(lab, node),
		"tcpdump", "-i", iface, "-U", "--immediate-mode", "-nn", "-Z", "root", "-w", file, filter)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// tcpdump says "listening on" once its socket is open.
	listening, readDone := make(chan struct{}), make(chan struct{})
	var logMu sync.Mutex
	var log strings.Builder
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			logMu.Lock()
			log.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if !once && strings.Contains(sc.Text(), "listening on") {
				once = true
				close(listening)
			}
		}
	}()
	select {
	case <-listening:
	case <-time.After(5 * time.Second):
		t.Log("tcpdump did not say it was listening within 5s")
	}
	fn()
	time.Sleep(200 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { <-readDone; done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
	}
	pk, err := packets.Read(file)
	if err != nil {
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("read %s: %v (tcpdump: %s)", file, err, log.String())
	}
	return pk
}

// upForTest brings tp up and takes it down when the test ends, unless the
// test sets *downed after taking it down itself.
func upForTest(t *testing.T, tp *topology.Topology) (e *engine.Engine, downed *bool) {
	t.Helper()
	e = newEngine(false)
	if _, err := e.Up(context.Background(), tp); err != nil {
		t.Fatal(err)
	}
	downed = new(bool)
	t.Cleanup(func() {
		if !*downed {
			e.Down(context.Background(), tp.Name)
		}
	})
	return e, downed
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// foreignOVS starts an Open vSwitch that is not the lab's (standing in for
// the machine's own) in a namespace of the test, with one bridge.
func foreignOVS(t *testing.T) (dir string, alive func() bool) {
	t.Helper()
	ns := labtest.LabName("foreign")
	if err := netns.Create(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Delete(ns) })
	dir = t.TempDir()
	db := filepath.Join(dir, "conf.db")
	for _, c := range [][]string{
		{"ovsdb-tool", "create", db, serve.OVSSchema},
		{"ovsdb-tool", "transact", db, `["Open_vSwitch",{"op":"insert","table":"Open_vSwitch","row":{}}]`},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	env := append(os.Environ(), "OVS_RUNDIR="+dir, "OVS_DBDIR="+dir, "OVS_LOGDIR="+dir)
	var procs []*exec.Cmd
	for _, argv := range [][]string{
		{"ovsdb-server", db, "--remote=punix:" + dir + "/db.sock", "--no-chdir"},
		{"ovs-vswitchd", "unix:" + dir + "/db.sock", "--no-chdir"},
	} {
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
		cmd.Env = env
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
		time.Sleep(300 * time.Millisecond)
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.Process.Kill()
			p.Wait()
		}
	})
	vsctl := exec.Command("ovs-vsctl", "--db=unix:"+dir+"/db.sock", "--timeout=5", "add-br", "br-foreign", "--", "set", "bridge", "br-foreign", "datapath_type=netdev")
	if out, err := vsctl.CombinedOutput(); err != nil {
		t.Fatalf("foreign ovs: %v\n%s", err, out)
	}
	return dir, func() bool {
		for _, p := range procs {
			if p.Process.Signal(syscall.Signal(0)) != nil {
				return false
			}
		}
		out, err := exec.Command("ovs-vsctl", "--db=unix:"+dir+"/db.sock", "--timeout=5", "list-br").CombinedOutput()
		return err == nil && strings.TrimSpace(string(out)) == "br-foreign"
	}
}

func TestRegion(t *testing.T) {
	labtest.NeedRoot(t, whyRoot)
	labtest.RequireTool(t, "ovs-vswitchd", "ovsdb-server", "ovsdb-tool", "ovs-vsctl", "iptables", "tcpdump", "curl", "ping")
	before := rootSnapshot(t)
	_, foreignAlive := foreignOVS(t)
	lab := labtest.LabName("reg")
	tp := regionTopology(t, lab)
	e, downed := upForTest(t, tp)
	ctx := context.Background()

	t.Run("same subnet across hosts rides VXLAN with the VPC's VNI", func(t *testing.T) {
		pk := capture(t, lab, "az1-h1", "eth0", "udp port 4789", func() {
			mustRun(t, lab, "shop-web-1", "ping", "-c2", "-W2", "10.10.1.11")
			out := mustRun(t, lab, "shop-web-1", "curl", "-sS", "-m5", "http://10.10.1.11:8080/")
			if !strings.HasPrefix(out, "shop-app-1 GET / from 10.10.1.10:") {
				t.Errorf("answer: %q", out)
			}
		})
		var icmp, tcp int
		for _, p := range pk {
			v := p.VXLAN
			if v == nil || v.VNI != 1001 || p.SrcIP != addr("172.16.1.11") || p.DstIP != addr("172.16.1.12") {
				continue
			}
			if v.Inner.SrcIP == addr("10.10.1.10") && v.Inner.DstIP == addr("10.10.1.11") {
				switch {
				case v.Inner.Proto == "icmp":
					icmp++
				case v.Inner.Proto == "tcp" && v.Inner.DstPort == 8080:
					tcp++
				}
			}
		}
		if icmp < 2 || tcp < 3 {
			for _, p := range pk {
				t.Log(p)
			}
			t.Fatalf("on the underlay: %d ICMP and %d TCP frames of shop-web-1 → shop-app-1 in VNI 1001 from 172.16.1.11 to 172.16.1.12", icmp, tcp)
		}
	})

	t.Run("other AZ subnet through the VPC router", func(t *testing.T) {
		out := mustRun(t, lab, "shop-web-1", "curl", "-sS", "-m5", "http://10.10.2.10:8080/")
		if !strings.HasPrefix(out, "shop-db-1 GET / from 10.10.1.10:") {
			t.Fatalf("answer: %q (inside the VPC the source must stay private)", out)
		}
		// One routed hop: the TTL drops by one at the VPC router.
		out = mustRun(t, lab, "shop-web-1", "ping", "-c1", "-W2", "10.10.2.10")
		if !strings.Contains(out, "ttl=63") {
			t.Fatalf("ping across subnets: %s (want ttl=63: one router)", out)
		}
	})

	t.Run("tenants with the same addresses cannot reach each other", func(t *testing.T) {
		pk := capture(t, lab, "az1-h1", "eth0", "udp port 4789", func() {
			if out, err := run(lab, "rival-vm-1", "ping", "-c2", "-W1", "10.10.1.11"); err == nil {
				t.Errorf("tenant globex pinged shop-app-1's address: %s", out)
			}
			if out, err := run(lab, "rival-vm-1", "curl", "-sS", "--connect-timeout", "2", "http://10.10.1.11:8080/"); err == nil {
				t.Errorf("tenant globex opened TCP to shop-app-1's address: %s", out)
			}
			// 10.10.1.10 exists in both VPCs: globex reaches its own VM.
			out := mustRun(t, lab, "rival-vm-1", "curl", "-sS", "-m5", "http://10.10.1.10:8080/")
			if !strings.HasPrefix(out, "rival-vm-2 GET / from 10.10.1.20:") {
				t.Errorf("10.10.1.10 from tenant globex answered %q, want rival-vm-2", out)
			}
		})
		var own, leaked int
		for _, p := range pk {
			if p.VXLAN == nil || p.VXLAN.Inner.SrcIP != addr("10.10.1.20") {
				continue
			}
			if p.VXLAN.VNI == 2002 {
				own++
			} else {
				leaked++
				t.Errorf("tenant globex frame outside VNI 2002: %s", p)
			}
		}
		if own == 0 || leaked != 0 {
			t.Fatalf("globex frames: %d in VNI 2002, %d elsewhere", own, leaked)
		}
	})

	t.Run("public VIP reaches the VM, which sees the client's address", func(t *testing.T) {
		out := mustRun(t, lab, "client", "curl", "-sS", "-m5", "http://203.0.113.10:8080/")
		if !strings.HasPrefix(out, "shop-web-1 GET / from 198.51.100.10:") {
			t.Fatalf("203.0.113.10 answered %q", out)
		}
		out = mustRun(t, lab, "client", "curl", "-sS", "-m5", "http://203.0.113.20:8080/")
		if !strings.HasPrefix(out, "rival-vm-2 GET / from 198.51.100.10:") {
			t.Fatalf("203.0.113.20 answered %q", out)
		}
		// The VM's own connections leave as its public IP.
		pk := capture(t, lab, "client", "eth0", "icmp", func() {
			mustRun(t, lab, "shop-web-1", "ping", "-c1", "-W2", "198.51.100.10")
		})
		seen := false
		for _, p := range pk {
			if p.Proto == "icmp" && p.SrcIP == addr("203.0.113.10") && p.DstIP == addr("198.51.100.10") {
				seen = true
			}
		}
		if !seen {
			t.Fatalf("shop-web-1's ping did not reach the client from 203.0.113.10: %v", pk)
		}
	})

	t.Run("full-size frames and a bulk transfer over the tunnel", func(t *testing.T) {
		// ICMP payload + 28 bytes of headers: 1400- and 1500-byte packets,
		// unfragmented.
		for _, size := range []string{"1372", "1472"} {
			mustRun(t, lab, "shop-web-1", "ping", "-c1", "-W2", "-M", "do", "-s", size, "10.10.1.11")
		}
		const n = 8 << 20
		cmd := exec.Command("ip", "netns", "exec", topology.Namespace(lab, "shop-web-1"),
			"curl", "-sS", "-m30", fmt.Sprintf("http://10.10.1.11:8080/bytes/%d", n))
		body, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := io.ReadAll(io.LimitReader(serve.Pattern(), n))
		if got, w := sha256.Sum256(body), sha256.Sum256(want); got != w {
			t.Fatalf("bulk transfer: %d bytes, sha256 %s, want %d bytes %s", len(body), hex.EncodeToString(got[:8]), n, hex.EncodeToString(w[:8]))
		}
	})

	t.Run("unchanged re-up changes nothing", func(t *testing.T) {
		res, err := e.Up(ctx, regionTopology(t, lab))
		if err != nil {
			t.Fatal(err)
		}
		if res.Changes != 0 {
			t.Fatalf("re-up planned %d changes:\n%s", res.Changes, res.Plan)
		}
	})

	ovsDir := filepath.Join(state.Dir(lab), "ovs")
	if err := e.Down(ctx, lab); err != nil {
		t.Fatal(err)
	}
	*downed = true
	// Every daemon of the lab is gone: no process names the lab's OVS dir.
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), ovsDir) {
			t.Errorf("%s still runs: %q", p, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	for _, ns := range labtest.Namespaces(lab + "-") {
		t.Errorf("namespace %s left behind", ns)
	}
	if _, err := os.Stat(state.Dir(lab)); !os.IsNotExist(err) {
		t.Errorf("state dir %s left behind", state.Dir(lab))
	}
	if !foreignAlive() {
		t.Error("the Open vSwitch that is not the lab's lost its daemons or its bridge")
	}
	if after := rootSnapshot(t); after != before {
		t.Errorf("root namespace changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
