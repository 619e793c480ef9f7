package ovs

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"labctl/lab/plan"
	"labctl/lab/runner/runnertest"
	"labctl/lab/topology"
)

// A fake ovs-vsctl: it keeps the database (bridges, ports, interfaces, the
// Open_vSwitch row) with the semantics of the commands Apply uses, and
// records every call.

type call struct {
	env  []string
	name string
	args []string
}

type record map[string]string // column (or "external_ids:key") → value

type fakeOVS struct {
	mu      sync.Mutex
	calls   []call
	bridges map[string]map[string]bool // bridge → its ports (not its own internal port)
	portBr  map[string]string          // port → bridge
	rows    map[string]map[string]record
}

func newFake() *fakeOVS {
	return &fakeOVS{bridges: map[string]map[string]bool{}, portBr: map[string]string{},
		rows: map[string]map[string]record{"bridge": {}, "port": {}, "interface": {}, "open_vswitch": {".": {}}}}
}

// addBridge and addPort seed the database.
func (f *fakeOVS) addBridge(name string, ids map[string]string) {
	f.bridges[name] = map[string]bool{}
	f.rows["bridge"][name] = record{}
	f.rows["port"][name] = record{}
	f.rows["interface"][name] = record{"type": "internal"}
	for k, v := range ids {
		f.rows["bridge"][name]["external_ids:"+k] = v
	}
}

func (f *fakeOVS) addPort(bridge, name string) {
	f.bridges[bridge][name] = true
	f.portBr[name] = bridge
	f.rows["port"][name] = record{}
	f.rows["interface"][name] = record{}
}

func (f *fakeOVS) delPort(name string) {
	delete(f.bridges[f.portBr[name]], name)
	delete(f.portBr, name)
	delete(f.rows["port"], name)
	delete(f.rows["interface"], name)
}

func (f *fakeOVS) run(_ context.Context, env []string, name string, args ...string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call{env: slices.Clone(env), name: name, args: slices.Clone(args)})
	if name != "ovs-vsctl" {
		return nil, fmt.Errorf("fake: no tool %s", name)
	}
	// Global options, then commands separated by "--", each with its own
	// options (--may-exist, --if-exists).
	i := 0
	for i < len(args) && strings.HasPrefix(args[i], "--") && args[i] != "--" && args[i] != "--may-exist" && args[i] != "--if-exists" {
		i++
	}
	var out []string
	cmds := [][]string{{}}
	for _, a := range args[i:] {
		if a == "--" {
			cmds = append(cmds, []string{})
			continue
		}
		cmds[len(cmds)-1] = append(cmds[len(cmds)-1], a)
	}
	for _, c := range cmds {
		opts := map[string]bool{}
		for len(c) > 0 && strings.HasPrefix(c[0], "--") {
			opts[c[0]] = true
			c = c[1:]
		}
		o, err := f.command(c, opts["--may-exist"], opts["--if-exists"])
		if err != nil {
			return nil, fmt.Errorf("ovs-vsctl: %w", err)
		}
		if o != "" {
			out = append(out, o)
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return []byte(strings.Join(out, "\n") + "\n"), nil
}

func (f *fakeOVS) command(c []string, mayExist, ifExists bool) (string, error) {
	if len(c) == 0 {
		return "", fmt.Errorf("missing command")
	}
	need := func(n int) error {
		if len(c) < n+1 {
			return fmt.Errorf("%s needs %d arguments: %q", c[0], n, c)
		}
		return nil
	}
	switch c[0] {
	case "add-br":
		if err := need(1); err != nil {
			return "", err
		}
		if _, ok := f.bridges[c[1]]; ok {
			if !mayExist {
				return "", fmt.Errorf("cannot create a bridge named %s because a bridge named %s already exists", c[1], c[1])
			}
			return "", nil
		}
		f.addBridge(c[1], nil)
	case "del-br":
		if err := need(1); err != nil {
			return "", err
		}
		if _, ok := f.bridges[c[1]]; !ok {
			if ifExists {
				return "", nil
			}
			return "", fmt.Errorf("no bridge named %s", c[1])
		}
		for p := range f.bridges[c[1]] {
			f.delPort(p)
		}
		delete(f.bridges, c[1])
		delete(f.rows["bridge"], c[1])
		delete(f.rows["port"], c[1])
		delete(f.rows["interface"], c[1])
	case "add-port":
		if err := need(2); err != nil {
			return "", err
		}
		br, p := c[1], c[2]
		if _, ok := f.bridges[br]; !ok {
			return "", fmt.Errorf("no bridge named %s", br)
		}
		if on, ok := f.portBr[p]; ok || f.bridges[p] != nil {
			switch {
			case mayExist && on == br:
				return "", nil
			case mayExist:
				return "", fmt.Errorf("\"--may-exist add-port %s %s\" but %s is actually attached to bridge %s", br, p, p, on)
			}
			return "", fmt.Errorf("cannot create a port named %s because a port named %s already exists on bridge %s", p, p, on)
		}
		f.addPort(br, p)
	case "del-port":
		if err := need(2); err != nil {
			return "", err
		}
		br, p := c[1], c[2]
		on, ok := f.portBr[p]
		switch {
		case !ok && ifExists:
			return "", nil
		case !ok:
			return "", fmt.Errorf("no port named %s", p)
		case on != br:
			return "", fmt.Errorf("bridge %s does not have a port %s (although its parent bridge %s does)", br, p, on)
		}
		f.delPort(p)
	case "list-ports":
		if err := need(1); err != nil {
			return "", err
		}
		ports, ok := f.bridges[c[1]]
		if !ok {
			return "", fmt.Errorf("no bridge named %s", c[1])
		}
		return strings.Join(slices.Sorted(keysOf(ports)), "\n"), nil
	case "list-br":
		return strings.Join(slices.Sorted(keysOf(f.bridges)), "\n"), nil
	case "set":
		if err := need(3); err != nil {
			return "", err
		}
		rec, ok := f.rows[strings.ToLower(c[1])][c[2]]
		if !ok {
			return "", fmt.Errorf("no row %q in table %s", c[2], c[1])
		}
		for _, kv := range c[3:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return "", fmt.Errorf("%q is not column=value", kv)
			}
			rec[k] = v
		}
	case "get":
		if err := need(3); err != nil {
			return "", err
		}
		rec, ok := f.rows[strings.ToLower(c[1])][c[2]]
		if !ok {
			if ifExists {
				return "", nil
			}
			return "", fmt.Errorf("no row %q in table %s", c[2], c[1])
		}
		v, ok := rec[c[3]]
		if !ok {
			if ifExists && strings.Contains(c[3], ":") {
				return "", nil
			}
			return "", fmt.Errorf("no key %s in %s record %s", c[3], c[1], c[2])
		}
		return v, nil
	default:
		return "", fmt.Errorf("fake: unknown command %q", c)
	}
	return "", nil
}

func keysOf[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// vsctlCmd returns the commands of one ovs-vsctl call without its global
// options, as one string ("--may-exist add-br br-int").
func vsctlCmd(c call) string {
	i := 0
	for i < len(c.args) && strings.HasPrefix(c.args[i], "--") && c.args[i] != "--" && c.args[i] != "--may-exist" && c.args[i] != "--if-exists" {
		i++
	}
	return strings.Join(c.args[i:], " ")
}

// regionStep is the ovs.config step of one host of lab/plan's region, as
// the planner makes it from the real expansion.
func regionStep(t *testing.T, node string) (*topology.Topology, plan.Step) {
	t.Helper()
	top, err := topology.Load(filepath.Join("..", "plan", "testdata", "region.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range plan.Compute(top, nil).Steps {
		if s.Op == plan.OpOVSConfig && s.Node == node {
			return top, s
		}
	}
	t.Fatalf("no ovs.config step for %s", node)
	return nil, plan.Step{}
}

func newSwitch(dir string, f *fakeOVS) *Switch {
	return &Switch{Dir: dir, Run: f.run, ctx: context.Background()}
}

func indexOf(t *testing.T, cmds []string, want string) int {
	t.Helper()
	i := slices.Index(cmds, want)
	if i < 0 {
		t.Errorf("no call %q among:\n  %s", want, strings.Join(cmds, "\n  "))
	}
	return i
}

func TestApplyCommands(t *testing.T) {
	top, step := regionStep(t, "gw")
	lab := top.Name
	dir := t.TempDir()
	step.OVS.Dir = dir // where the database socket is
	step.Ports = []string{"blue-r-qg"}

	f := newFake()
	// What a previous up left: the wanted bridges, a port of a removed
	// router, the port being re-added, a stale bridge of the lab, and
	// bridges that are not the lab's.
	f.addBridge("br-phy", map[string]string{MarkLab: lab})
	f.addBridge("br-int", map[string]string{MarkLab: lab})
	f.addBridge("br-ex", map[string]string{MarkLab: lab})
	f.addPort("br-int", "blue-r-qr-a")
	f.addPort("br-int", "old-r-qr-a")
	f.addPort("br-ex", "blue-r-qg")
	f.addPort("br-ex", "eth1")
	f.addBridge("br-old", map[string]string{MarkLab: `"` + lab + `"`}) // ovs-vsctl quotes some strings
	f.addPort("br-old", "old-port")
	f.addBridge("br-mine", nil)
	f.addBridge("br-other", map[string]string{MarkLab: "otherlab"})

	if err := newSwitch(dir, f).apply(lab, step); err != nil {
		t.Fatal(err)
	}

	db := "--db=unix:" + filepath.Join(dir, "db.sock")
	var cmds []string
	for i, c := range f.calls {
		cmds = append(cmds, vsctlCmd(c))
		if c.name != "ovs-vsctl" {
			t.Errorf("call %d runs %s", i, c.name)
		}
		if len(c.args) == 0 || c.args[0] != db {
			t.Errorf("call %d %q does not start with %s", i, c.args, db)
		}
		if !slices.Contains(c.env, "OVS_RUNDIR="+dir) || !slices.Contains(c.env, "OVS_DBDIR="+dir) {
			t.Errorf("call %d env %q", i, c.env)
		}
		last := i == len(f.calls)-1
		if noWait := slices.Contains(c.args, "--no-wait"); noWait == last {
			t.Errorf("call %d %q: --no-wait %v (only the last call waits)", i, c.args, noWait)
		}
	}
	if len(cmds) == 0 {
		t.Fatal("no calls")
	}
	if got, want := cmds[len(cmds)-1], "set Open_vSwitch . external_ids:"+MarkHash+"="+step.Value; got != want {
		t.Errorf("last call %q, want %q", got, want)
	}
	if step.Value != step.OVS.Hash() || f.rows["open_vswitch"]["."]["external_ids:"+MarkHash] != step.Value {
		t.Errorf("hash %q recorded as %q", step.Value, f.rows["open_vswitch"]["."]["external_ids:"+MarkHash])
	}

	// Bridges: datapath and mark; the internal port's MTU except on br-int.
	dp := Datapath(step.OVS.Datapath)
	for _, b := range step.OVS.Bridges {
		indexOf(t, cmds, "--may-exist add-br "+b.Name)
		want := "set Bridge " + b.Name + " datapath_type=" + dp + " external_ids:" + MarkLab + "=" + lab
		if b.Name != topology.BrInt {
			want += " -- set Interface " + b.Name + " mtu_request=" + strconv.Itoa(b.MTU)
		}
		indexOf(t, cmds, want)
	}
	if b := step.OVS.Bridge("br-phy"); b.MTU != 1600 {
		t.Errorf("br-phy mtu %d", b.MTU)
	}

	// Ports: the router's legs carry their VPC's tag and marks.
	for _, b := range step.OVS.Bridges {
		for _, p := range b.Ports {
			indexOf(t, cmds, "--may-exist add-port "+b.Name+" "+p.Name)
		}
	}
	blueTag := step.OVS.Bridge(topology.BrInt).Ports[0].Tag
	indexOf(t, cmds, "set Port blue-r-qr-a external_ids:"+MarkLab+"="+lab+" tag="+strconv.Itoa(blueTag)+" external_ids:"+MarkVPC+"=blue external_ids:"+MarkPeer+"=blue-r:qr-a")
	indexOf(t, cmds, "set Port eth1 external_ids:"+MarkLab+"="+lab)

	// Tunnels: vxlan with remote, VNI, local and split horizon.
	tunnels := 0
	for _, p := range step.OVS.Bridge(topology.BrInt).Ports {
		tn := p.Tunnel
		if tn == nil {
			continue
		}
		tunnels++
		if tn.Local != "172.16.0.10" || (tn.VNI != 100 && tn.VNI != 200) {
			t.Errorf("tunnel %s %+v", p.Name, tn)
		}
		indexOf(t, cmds, fmt.Sprintf("set Port %s external_ids:%s=%s tag=%d external_ids:%s=%s protected=true", p.Name, MarkLab, lab, p.Tag, MarkVPC, p.VPC))
		indexOf(t, cmds, fmt.Sprintf("set interface %s type=vxlan options:remote_ip=%s options:key=%d", p.Name, tn.Remote, tn.VNI))
		indexOf(t, cmds, fmt.Sprintf("set Interface %s options:local_ip=%s options:dst_port=4789", p.Name, tn.Local))
		if got := f.rows["interface"][p.Name]; got["type"] != "vxlan" || got["options:key"] != strconv.Itoa(tn.VNI) || got["options:remote_ip"] != tn.Remote || got["options:local_ip"] != tn.Local {
			t.Errorf("interface %s = %v", p.Name, got)
		}
		if got := f.rows["port"][p.Name]; got["protected"] != "true" || got["tag"] != strconv.Itoa(p.Tag) {
			t.Errorf("port %s = %v", p.Name, got)
		}
	}
	if tunnels != 4 {
		t.Errorf("%d tunnels on gw, want 4 (2 vpcs × 2 other hosts)", tunnels)
	}

	// The port to re-add is deleted first, then added; a wanted port
	// that is not listed is left in place; a stale port goes.
	del := indexOf(t, cmds, "--if-exists del-port br-ex blue-r-qg")
	if add := indexOf(t, cmds, "--may-exist add-port br-ex blue-r-qg"); del >= add {
		t.Errorf("blue-r-qg re-added at %d, deleted at %d", add, del)
	}
	indexOf(t, cmds, "--if-exists del-port br-int old-r-qr-a")
	for _, c := range cmds {
		if strings.Contains(c, "del-port") && (strings.HasSuffix(c, " blue-r-qr-a") || strings.HasSuffix(c, " eth1")) {
			t.Errorf("a wanted port is deleted: %q", c)
		}
	}

	// A stale bridge of the lab goes; other bridges stay.
	indexOf(t, cmds, "--if-exists del-br br-old")
	for _, c := range cmds {
		if c == "--if-exists del-br br-mine" || c == "--if-exists del-br br-other" {
			t.Errorf("a bridge that is not the lab's is deleted: %q", c)
		}
	}

	// The database is what the step describes.
	want := map[string][]string{"br-mine": nil, "br-other": nil}
	for _, b := range step.OVS.Bridges {
		for _, p := range b.Ports {
			want[b.Name] = append(want[b.Name], p.Name)
		}
		sort.Strings(want[b.Name])
	}
	got := map[string][]string{}
	for b, ports := range f.bridges {
		got[b] = nil
		for p := range ports {
			got[b] = append(got[b], p)
		}
		sort.Strings(got[b])
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("bridges and ports:\n  %v\nwant\n  %v", got, want)
	}
	for b := range want {
		if b != "br-mine" && b != "br-other" && f.rows["bridge"][b]["datapath_type"] != dp {
			t.Errorf("bridge %s: %v", b, f.rows["bridge"][b])
		}
	}
}

// VM ports on a compute host carry their VPC's tag and VPC mark; the two
// VPCs share the address range but not the tag.
func TestApplyVMPorts(t *testing.T) {
	top, step := regionStep(t, "h1")
	dir := t.TempDir()
	step.OVS.Dir = dir
	step.OVS.Datapath = Netdev // explicit: no look at the kernel
	f := newFake()
	if err := newSwitch(dir, f).apply(top.Name, step); err != nil {
		t.Fatal(err)
	}
	tags := map[string]string{}
	for _, vm := range []struct{ port, vpc, peer string }{
		{"blue-vm1-eth0", "blue", "blue-vm1:eth0"},
		{"red-vm1-eth0", "red", "red-vm1:eth0"},
	} {
		r := f.rows["port"][vm.port]
		if f.portBr[vm.port] != topology.BrInt || r["tag"] == "" || r["external_ids:"+MarkVPC] != vm.vpc ||
			r["external_ids:"+MarkPeer] != vm.peer || r["external_ids:"+MarkLab] != top.Name || r["protected"] != "" {
			t.Errorf("port %s on %s: %v", vm.port, f.portBr[vm.port], r)
		}
		tags[vm.vpc] = r["tag"]
	}
	if tags["blue"] == tags["red"] {
		t.Errorf("both VPCs have tag %s", tags["blue"])
	}
	for b := range f.bridges {
		if f.rows["bridge"][b]["datapath_type"] != Netdev {
			t.Errorf("bridge %s: %v", b, f.rows["bridge"][b])
		}
	}
	// Nothing existed: nothing is deleted.
	for _, c := range f.calls {
		if cmd := vsctlCmd(c); strings.Contains(cmd, "del-port") || strings.Contains(cmd, "del-br") {
			t.Errorf("unexpected %q", cmd)
		}
	}
	// Applying again changes nothing in the database.
	before := fmt.Sprint(f.bridges, f.portBr, f.rows)
	if err := newSwitch(dir, f).apply(top.Name, step); err != nil {
		t.Fatal(err)
	}
	if after := fmt.Sprint(f.bridges, f.portBr, f.rows); after != before {
		t.Errorf("second apply changed the database")
	}
}

// An error of any call stops Apply and is returned.
func TestApplyStopsOnError(t *testing.T) {
	top, step := regionStep(t, "h2")
	step.OVS.Datapath = Netdev
	f := newFake()
	// The commands go through the runner's fake, which records them;
	// the fake database answers all but add-port, which fails.
	cmds := &runnertest.Fake{Handler: func(c runnertest.Call) runnertest.Reply {
		if slices.Contains(c.Args, "add-port") {
			return runnertest.Reply{Stderr: "ovs-vsctl: boom\n", Err: runnertest.ExitStatus(1)}
		}
		out, err := f.run(context.Background(), c.Env, c.Args[0], c.Args[1:]...)
		return runnertest.Reply{Stdout: string(out), Err: err}
	}}
	s := &Switch{Dir: t.TempDir(), Run: Through(cmds), ctx: context.Background()}
	err := s.apply(top.Name, step)
	if err == nil || !strings.Contains(err.Error(), "add-port") || !strings.Contains(err.Error(), ": exit status 1: ovs-vsctl: boom") {
		t.Fatalf("apply = %v", err)
	}
	calls := cmds.Calls()
	if len(calls) == 0 || !slices.Contains(calls[len(calls)-1].Args, "add-port") {
		t.Errorf("calls after the failed add-port:\n  %s", strings.Join(cmds.Commands(), "\n  "))
	}
	if want := Env(s.Dir); !slices.Equal(calls[0].Env, want) {
		t.Errorf("env %q, want %q", calls[0].Env, want)
	}
	if f.rows["open_vswitch"]["."]["external_ids:"+MarkHash] != "" {
		t.Error("the hash is recorded although the configuration failed")
	}
}

// A port that moves from one bridge to another (a VM interface's bridge:
// changed from br-ex to br-int, a NIC's from br-ex to br-phy) must end up
// on its new bridge.
func TestApplyPortMovesBridge(t *testing.T) {
	top, step := regionStep(t, "h1")
	step.OVS.Datapath = Netdev
	f := newFake()
	f.addBridge("br-phy", map[string]string{MarkLab: top.Name})
	f.addBridge("br-int", map[string]string{MarkLab: top.Name})
	f.addBridge("br-ex", map[string]string{MarkLab: top.Name})
	f.addPort("br-ex", "blue-vm1-eth0")
	err := newSwitch(t.TempDir(), f).apply(top.Name, step)
	if err != nil {
		t.Fatalf("a port moving between bridges: %v", err)
	}
	if f.portBr["blue-vm1-eth0"] != topology.BrInt {
		t.Errorf("blue-vm1-eth0 is on %q", f.portBr["blue-vm1-eth0"])
	}
}

func TestSplitCSV(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"", []string{""}},
		{"a", []string{"a"}},
		{"1,labctl-lab=rg", []string{"1", "labctl-lab=rg"}},
		{`1,"labctl-lab=rg labctl-vpc=blue"`, []string{"1", "labctl-lab=rg labctl-vpc=blue"}},
		{`vxlan,"key=100 local_ip=""172.16.0.10""",3`, []string{"vxlan", `key=100 local_ip="172.16.0.10"`, "3"}},
		{`,,`, []string{"", "", ""}},
		{`"a,b",c`, []string{"a,b", "c"}},
		{`""`, []string{""}},
	} {
		if got := splitCSV(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("splitCSV(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestPairs(t *testing.T) {
	for _, c := range []struct {
		in   string
		want map[string]string
	}{
		{"", map[string]string{}},
		{"labctl-lab=rg", map[string]string{"labctl-lab": "rg"}},
		{`labctl-lab=rg labctl-peer="blue-vm1:eth0"  labctl-vpc=blue`, map[string]string{"labctl-lab": "rg", "labctl-peer": "blue-vm1:eth0", "labctl-vpc": "blue"}},
		{"key=100 remote_ip=172.16.0.11 junk", map[string]string{"key": "100", "remote_ip": "172.16.0.11"}},
		{"a=b=c empty=", map[string]string{"a": "b=c", "empty": ""}},
	} {
		if got := pairs(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("pairs(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestEnvAndDB(t *testing.T) {
	if got := DB("/run/labctl/rg/ovs/h1"); got != "unix:/run/labctl/rg/ovs/h1/db.sock" {
		t.Errorf("DB = %q", got)
	}
	if got := Env("/d"); !reflect.DeepEqual(got, []string{"OVS_RUNDIR=/d", "OVS_DBDIR=/d", "OVS_LOGDIR=/d"}) {
		t.Errorf("Env = %q", got)
	}
	for _, dp := range []string{Netdev, System} {
		if Datapath(dp) != dp {
			t.Errorf("Datapath(%q) = %q", dp, Datapath(dp))
		}
	}
	if d := Datapath(""); d != Netdev && d != System {
		t.Errorf("Datapath(\"\") = %q", d)
	}
}
