package engine

import (
	"context"
	"errors"
	"os"
	"sort"

	"labctl/lab/links"
	"labctl/lab/netns"
	"labctl/lab/plan"
	"labctl/lab/service"
	"labctl/lab/state"
	"labctl/lab/topology"
)

// LabStatus is one line of `labctl status`.
type LabStatus struct {
	Name       string `json:"name"`
	File       string `json:"file,omitempty"`
	Status     string `json:"status"`
	Nodes      int    `json:"nodes"`
	Namespaces int    `json:"namespaces_up"`
	Services   int    `json:"services"`
	Running    int    `json:"services_running"`
	Healthy    bool   `json:"healthy"`
	// Drift is every step `up` would take to make the kernel match the
	// recorded topology, cut links aside; Cut is those links.
	Drift    []Drift     `json:"drift"`
	Cut      [][2]string `json:"cut,omitempty"`
	DriftErr string      `json:"drift_error,omitempty"`
	// DriftSkipped says why drift was not checked (a user who may not
	// enter the lab's namespaces): the lab's health then rests on its
	// namespaces and services alone.
	DriftSkipped string `json:"drift_skipped,omitempty"`
	// Restarts is how many times the watcher restarted the lab's services;
	// Failed lists those it gave up on ("node/service"); Watching says
	// whether the watcher runs.
	Restarts int      `json:"restarts"`
	Failed   []string `json:"failed"`
	Watching bool     `json:"watching"`
}

// Status reports every lab present.
func (e *Engine) Status() ([]LabStatus, error) {
	labs, err := Labs()
	if err != nil {
		return nil, err
	}
	out := []LabStatus{}
	for _, l := range labs {
		s := LabStatus{Name: l, Status: "orphaned"}
		rec, err := state.Load(l)
		if err == nil {
			s.File, s.Status = rec.File, rec.Status
			if rec.Topology != nil {
				s.Nodes = len(rec.Topology.Nodes)
				for _, n := range rec.Topology.Nodes {
					s.Services += len(n.Services)
				}
			}
		}
		owned := e.ownedNamespaces(l, rec)
		for _, ns := range owned {
			if netns.Exists(ns) {
				s.Namespaces++
			}
		}
		sup := e.Supervisor(l)
		recs, _ := sup.Records()
		s.Failed = []string{}
		for _, r := range recs {
			if sup.Alive(r) {
				s.Running++
			}
			s.Restarts += r.Restarts
			if r.State == service.StateFailed {
				s.Failed = append(s.Failed, r.Key())
			}
		}
		_, s.Watching = Watcher(l)
		s.Drift = []Drift{}
		if rec != nil && rec.Topology != nil {
			s.Cut = rec.Cut
			if os.Geteuid() != 0 {
				s.DriftSkipped = "reading the lab's namespaces needs root (sudo labctl status)"
			} else if d, err := e.drift(context.Background(), rec, owned); err != nil {
				s.DriftErr = err.Error()
			} else {
				s.Drift = d
			}
		}
		s.Healthy = s.Status == "up" && s.Namespaces == s.Nodes && s.Running == s.Services && len(s.Drift) == 0 && s.DriftErr == ""
		out = append(out, s)
	}
	return out, nil
}

// NodeInfo is one node of `labctl inspect`.
type NodeInfo struct {
	Name       string            `json:"name"`
	Kind       string            `json:"kind"`
	Namespace  string            `json:"netns"`
	Up         bool              `json:"up"`
	Interfaces []IfaceInfo       `json:"interfaces"`
	Routes     []plan.Route      `json:"routes"`
	Services   []ServiceInfo     `json:"services"`
	Sysctls    map[string]string `json:"sysctls,omitempty"`
}

// IfaceInfo is one interface.
type IfaceInfo struct {
	Name   string   `json:"name"`
	Kind   string   `json:"kind"`
	MTU    int      `json:"mtu"`
	Up     bool     `json:"up"`
	Master string   `json:"master,omitempty"`
	Peer   string   `json:"peer,omitempty"`
	Addrs  []string `json:"addresses"`
}

// ServiceInfo is one service.
type ServiceInfo struct {
	Name    string   `json:"name"`
	PID     int      `json:"pid"`
	Running bool     `json:"running"`
	Command []string `json:"command"`
	Log     string   `json:"log"`
	// Restarts by the watcher, how the previous process ended, and State
	// (exited, failed) once the watcher leaves it down.
	Restarts int    `json:"restarts"`
	LastExit string `json:"last_exit,omitempty"`
	State    string `json:"state,omitempty"`
}

// Inspection is a lab as found in the kernel.
type Inspection struct {
	Lab    string      `json:"lab"`
	File   string      `json:"file,omitempty"`
	Status string      `json:"status"`
	Nodes  []NodeInfo  `json:"nodes"`
	Region *RegionInfo `json:"region,omitempty"`
	// Parts is each lab part's own section (its counters, tables, …).
	Parts []Section `json:"parts,omitempty"`
}

// Inspect reads a lab back from the kernel and its records.
func (e *Engine) Inspect(lab string) (*Inspection, error) {
	rec, err := state.Load(lab)
	if err != nil {
		return nil, err
	}
	if rec.Topology == nil {
		return nil, errors.New("lab record has no topology")
	}
	t := rec.Topology
	drv := links.New()
	defer drv.Close()
	sup := e.Supervisor(lab)
	recs, _ := sup.Records()
	ins := &Inspection{Lab: lab, File: rec.File, Status: rec.Status}
	peers := map[string]string{}
	for _, l := range t.Links {
		a, b := l.Ends()
		peers[a.String()], peers[b.String()] = b.String(), a.String()
	}
	for _, name := range t.NodeNames() {
		n := t.Nodes[name]
		ns := topology.Namespace(lab, name)
		ni := NodeInfo{Name: name, Kind: n.Kind, Namespace: ns, Interfaces: []IfaceInfo{}, Routes: []plan.Route{}, Services: []ServiceInfo{}}
		keys := []string{}
		for k := range plan.NodeSysctls(n) {
			keys = append(keys, k)
		}
		if st, err := drv.Observe(ns, keys); err == nil {
			ni.Up = true
			ni.Sysctls = st.Sysctls
			names := make([]string, 0, len(st.Links))
			for k := range st.Links {
				names = append(names, k)
			}
			sort.Strings(names)
			for _, k := range names {
				l := st.Links[k]
				ni.Interfaces = append(ni.Interfaces, IfaceInfo{Name: l.Name, Kind: l.Kind, MTU: l.MTU, Up: l.Up,
					Master: l.Master, Peer: peers[name+":"+l.Name], Addrs: append([]string{}, l.Addrs...)})
			}
			ni.Routes = append(ni.Routes, st.Routes...)
		}
		for _, r := range recs {
			if r.Node == name {
				ni.Services = append(ni.Services, ServiceInfo{Name: r.Service, PID: r.PID, Running: sup.Alive(r), Command: r.Command, Log: r.Log,
					Restarts: r.Restarts, LastExit: r.LastExit, State: r.State})
			}
		}
		ins.Nodes = append(ins.Nodes, ni)
	}
	ins.Region = region(context.Background(), t)
	ins.Parts = describeParts(context.Background(), lab, t)
	return ins, nil
}
