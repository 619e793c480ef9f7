// Package ovs drives the Open vSwitch of each ovs-host (stages 1 and 9 of
// docs/double11-story.md): every host runs its own ovsdb-server and ovs-vswitchd inside
// its namespace, with database and sockets under the lab's state directory,
// so labctl never talks to the machine's own Open vSwitch.
//
// Commands go through github.com/digitalocean/go-openvswitch with an
// injected runner that adds --db=unix:<dir>/db.sock (and OVS_RUNDIR for
// the other tools); what the library has no call for (datapath type, VLAN
// tags, protected ports, external_ids, local_ip) goes through the same
// runner as plain ovs-vsctl arguments.
package ovs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	govs "github.com/digitalocean/go-openvswitch/ovs"
	"github.com/vishvananda/netlink"

	"labctl/lab/netns"
	"labctl/lab/plan"
	"labctl/lab/runner"
	"labctl/lab/topology"
)

// Marks in external_ids: every bridge and port labctl makes carries the
// lab's name, so stale ones are found and removed by mark, not by memory.
const (
	MarkLab  = "labctl-lab"
	MarkVPC  = "labctl-vpc"
	MarkPeer = "labctl-peer"
	MarkHash = "labctl-hash" // on the Open_vSwitch row: the applied configuration
)

// Datapaths.
const (
	Netdev = "netdev" // userspace: works without the kernel module
	System = "system" // the kernel's openvswitch module
)

// Runner runs one OVS tool; tests replace it.
type Runner func(ctx context.Context, env []string, name string, args ...string) ([]byte, error)

// Exec is the real runner. The tools talk to the daemons over their Unix
// sockets, so they need no namespace of their own.
func Exec(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
	return Through(runner.Default)(ctx, env, name, args...)
}

// Through is the Runner that makes its commands with c: stdout is the
// answer, and an error (a *runner.Error) carries the command line and
// stderr.
func Through(c runner.Cmder) Runner {
	return func(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
		return c.Command(ctx, name, args...).SetEnv(env...).Output()
	}
}

// Switch is one host's Open vSwitch.
type Switch struct {
	Dir string
	Run Runner
	// wait makes the next ovs-vsctl call wait until vswitchd has applied
	// the database (the others only write it).
	wait bool
	ctx  context.Context
}

// New returns the switch whose database lives in dir.
func New(dir string) *Switch { return &Switch{Dir: dir, Run: Exec, ctx: context.Background()} }

// Env is what every OVS tool needs to find this host's daemons.
func Env(dir string) []string {
	return []string{"OVS_RUNDIR=" + dir, "OVS_DBDIR=" + dir, "OVS_LOGDIR=" + dir}
}

// DB is the database socket.
func DB(dir string) string { return "unix:" + filepath.Join(dir, "db.sock") }

// run is the one way commands reach this host's daemons: go-openvswitch
// calls it through its Exec option, vsctl directly.
func (s *Switch) run(cmd string, args ...string) ([]byte, error) {
	if cmd == "ovs-vsctl" {
		pre := []string{"--db=" + DB(s.Dir), "--timeout=10"}
		if !s.wait {
			pre = append(pre, "--no-wait")
		}
		args = append(pre, args...)
	}
	return s.Run(s.ctx, Env(s.Dir), cmd, args...)
}

func (s *Switch) client() *govs.Client { return govs.New(govs.Exec(s.run)) }

// vsctl runs ovs-vsctl with arguments go-openvswitch has no call for.
func (s *Switch) vsctl(args ...string) ([]byte, error) { return s.run("ovs-vsctl", args...) }

// KernelDatapath reports whether the kernel has the openvswitch datapath
// (asking for its generic netlink family also loads the module if the
// kernel has one).
func KernelDatapath() bool {
	if _, err := os.Stat("/sys/module/openvswitch"); err == nil {
		return true
	}
	_, err := netlink.GenlFamilyGet("ovs_datapath")
	return err == nil
}

// Datapath resolves a configured datapath ("" picks by the kernel).
func Datapath(configured string) string {
	switch {
	case configured != "":
		return configured
	case KernelDatapath():
		return System
	}
	return Netdev
}

// Hash returns the configuration hash the switch holds, "" if its
// database does not answer (so the configuration is applied again).
func Hash(ctx context.Context, dir string) string {
	if _, err := os.Stat(filepath.Join(dir, "db.sock")); err != nil {
		return ""
	}
	s := New(dir)
	s.ctx = ctx
	out, err := s.vsctl("--if-exists", "get", "Open_vSwitch", ".", "external_ids:"+MarkHash)
	if err != nil {
		return ""
	}
	return strings.Trim(strings.TrimSpace(string(out)), `"`)
}

// Apply makes a host's switch match step.OVS: bridges with their datapath,
// ports with their VPC tag, VXLAN tunnels with their VNI, internal ports
// up with their MTU; lab ports and bridges no longer wanted are removed.
func Apply(ctx context.Context, lab string, step plan.Step) error {
	s := New(step.OVS.Dir)
	s.ctx = ctx
	if err := s.apply(lab, step); err != nil {
		return fmt.Errorf("ovs %s: %w", step.Node, err)
	}
	return upInternal(step.NS, step.OVS)
}

func (s *Switch) apply(lab string, step plan.Step) error {
	o := step.OVS
	c := s.client()
	dp := Datapath(o.Datapath)
	recreate := map[string]bool{}
	for _, p := range step.Ports {
		recreate[p] = true
	}
	// First every bridge exists and loses the ports it should not have
	// (removed, recreated, or moved to another bridge), so that adding a
	// port below never finds it still on another bridge.
	want := map[string]bool{}
	for _, b := range o.Bridges {
		want[b.Name] = true
	}
	bridges, err := c.VSwitch.ListBridges()
	if err != nil {
		return err
	}
	for _, b := range bridges {
		if !want[b] && s.marked("Bridge", b, lab) {
			if err := c.VSwitch.DeleteBridge(b); err != nil {
				return err
			}
		}
	}
	for _, b := range o.Bridges {
		if err := c.VSwitch.AddBridge(b.Name); err != nil {
			return err
		}
		have, err := c.VSwitch.ListPorts(b.Name)
		if err != nil {
			return err
		}
		wantPort := map[string]bool{}
		for _, p := range b.Ports {
			wantPort[p.Name] = true
		}
		for _, p := range have {
			if !wantPort[p] || recreate[p] {
				if err := c.VSwitch.DeletePort(b.Name, p); err != nil {
					return err
				}
			}
		}
	}
	for _, b := range o.Bridges {
		args := []string{"set", "Bridge", b.Name, "datapath_type=" + dp, "external_ids:" + MarkLab + "=" + lab}
		if b.Name != topology.BrInt {
			args = append(args, "--", "set", "Interface", b.Name, "mtu_request="+strconv.Itoa(b.MTU))
		}
		if _, err := s.vsctl(args...); err != nil {
			return err
		}
		for _, p := range b.Ports {
			if err := s.port(c, lab, b.Name, p); err != nil {
				return err
			}
		}
	}
	// The last write waits for vswitchd to apply everything before it.
	s.wait = true
	_, err = s.vsctl("set", "Open_vSwitch", ".", "external_ids:"+MarkHash+"="+step.Value)
	return err
}

func (s *Switch) port(c *govs.Client, lab, bridge string, p *topology.OVSPort) error {
	if err := c.VSwitch.AddPort(bridge, p.Name); err != nil {
		return err
	}
	args := []string{"set", "Port", p.Name, "external_ids:" + MarkLab + "=" + lab}
	if p.Tag != 0 {
		args = append(args, "tag="+strconv.Itoa(p.Tag))
	}
	if p.VPC != "" {
		args = append(args, "external_ids:"+MarkVPC+"="+p.VPC)
	}
	if p.Peer != "" {
		args = append(args, "external_ids:"+MarkPeer+"="+p.Peer)
	}
	if p.Tunnel != nil {
		// Split horizon: frames from one tunnel never go out another.
		args = append(args, "protected=true")
	}
	if _, err := s.vsctl(args...); err != nil {
		return err
	}
	if t := p.Tunnel; t != nil {
		err := c.VSwitch.Set.Interface(p.Name, govs.InterfaceOptions{
			Type: govs.InterfaceTypeVXLAN, RemoteIP: t.Remote, Key: strconv.Itoa(t.VNI)})
		if err != nil {
			return err
		}
		if _, err := s.vsctl("set", "Interface", p.Name, "options:local_ip="+t.Local, "options:dst_port=4789"); err != nil {
			return err
		}
	}
	return nil
}

func (s *Switch) marked(table, name, lab string) bool {
	out, err := s.vsctl("--if-exists", "get", table, name, "external_ids:"+MarkLab)
	return err == nil && strings.Trim(strings.TrimSpace(string(out)), `"`) == lab
}

// upInternal brings each bridge's internal port up; vswitchd sets its MTU
// from mtu_request but leaves it down.
func upInternal(ns string, o *topology.OVS) error {
	h, err := netns.Handle(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	var errs []error
	for _, b := range o.Bridges {
		l, err := h.LinkByName(b.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: internal port %s: %w", ns, b.Name, err))
			continue
		}
		if err := h.LinkSetUp(l); err != nil {
			errs = append(errs, fmt.Errorf("%s: set %s up: %w", ns, b.Name, err))
		}
	}
	return errors.Join(errs...)
}

// PortInfo is one port as the switch reports it.
type PortInfo struct {
	Bridge string            `json:"bridge"`
	Name   string            `json:"name"`
	Tag    int               `json:"tag,omitempty"`
	Type   string            `json:"type,omitempty"`
	IDs    map[string]string `json:"external_ids,omitempty"`
	Opts   map[string]string `json:"options,omitempty"`
	OFPort int               `json:"ofport"`
}

// Ports lists every port of every bridge, as the running switch has them:
// the bridges' port lists, then the Port and Interface tables read once.
func Ports(ctx context.Context, dir string) ([]PortInfo, error) {
	s := New(dir)
	s.ctx = ctx
	c := s.client()
	bridges, err := c.VSwitch.ListBridges()
	if err != nil {
		return nil, err
	}
	var out []PortInfo
	for _, b := range bridges {
		ports, err := c.VSwitch.ListPorts(b)
		if err != nil {
			return nil, err
		}
		for _, p := range ports {
			out = append(out, PortInfo{Bridge: b, Name: p})
		}
	}
	port, err := s.table("Port", "name,tag,external_ids")
	if err != nil {
		return nil, err
	}
	iface, err := s.table("Interface", "name,type,options,ofport")
	if err != nil {
		return nil, err
	}
	for i := range out {
		pi := &out[i]
		if f := port[pi.Name]; len(f) == 3 {
			pi.Tag, _ = strconv.Atoi(f[1])
			pi.IDs = pairs(f[2])
		}
		if f := iface[pi.Name]; len(f) == 4 {
			pi.Type, pi.Opts = f[1], pairs(f[2])
			pi.OFPort, _ = strconv.Atoi(f[3])
		}
	}
	slices.SortFunc(out, func(a, b PortInfo) int {
		return strings.Compare(a.Bridge+" "+a.Name, b.Bridge+" "+b.Name)
	})
	return out, nil
}

// table reads columns (the first one "name") of every row of an OVSDB
// table, keyed by name.
func (s *Switch) table(name, columns string) (map[string][]string, error) {
	res, err := s.vsctl("--format=csv", "--data=bare", "--no-headings", "--columns="+columns, "list", name)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(res)), "\n") {
		if f := splitCSV(line); len(f) > 0 && f[0] != "" {
			out[f[0]] = f
		}
	}
	return out, nil
}

// splitCSV splits one CSV line of ovs-vsctl output (fields may be quoted).
func splitCSV(line string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case ch == '"' && quoted && i+1 < len(line) && line[i+1] == '"':
			cur.WriteByte('"')
			i++
		case ch == '"':
			quoted = !quoted
		case ch == ',' && !quoted:
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(ch)
		}
	}
	return append(out, cur.String())
}

// pairs parses "k=v k2=v2" (the bare format of a map column).
func pairs(s string) map[string]string {
	out := map[string]string{}
	for _, f := range strings.Fields(s) {
		if k, v, ok := strings.Cut(f, "="); ok {
			out[k] = strings.Trim(v, `"`)
		}
	}
	return out
}
