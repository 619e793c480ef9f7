// Package state keeps what labctl knows about each lab under
// /run/labctl/<lab>/: the applied topology, the namespaces it owns (written
// before they are created, so a crash never hides one), service records and
// logs. It is tmpfs: a reboot takes the lab and its state together.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"labctl/lab/topology"
)

// Root holds one directory per lab.
var Root = "/run/labctl"

// Lab is the record of one lab.
type Lab struct {
	Name       string             `json:"name"`
	File       string             `json:"file,omitempty"`
	Status     string             `json:"status"` // applying, up, failed
	Namespaces []string           `json:"namespaces"`
	Created    time.Time          `json:"created"`
	Updated    time.Time          `json:"updated"`
	Topology   *topology.Topology `json:"topology,omitempty"`
	// Cut is every link `labctl link down` cut, as its two endpoints
	// ("node:iface"): held down until `link up` or `up` mends it.
	Cut [][2]string `json:"cut,omitempty"`
}

// Dir is a lab's state directory.
func Dir(lab string) string { return filepath.Join(Root, lab) }

// ServiceDir holds service records; LogDir their logs.
func ServiceDir(lab string) string { return filepath.Join(Dir(lab), "services") }

// LogDir holds service logs.
func LogDir(lab string) string { return filepath.Join(Dir(lab), "logs") }

// PKIDir holds the lab's certificates (lab/pki).
func PKIDir(lab string) string { return filepath.Join(Dir(lab), "pki") }

// DataDir holds what one service of a node keeps: a database, a cache's
// files, a load balancer's configuration.
func DataDir(lab, node, service string) string {
	return filepath.Join(Dir(lab), "data", node, service)
}

// ErrNoLab is returned for a lab with no state.
var ErrNoLab = errors.New("no such lab")

// Load reads a lab's record.
func Load(lab string) (*Lab, error) {
	b, err := os.ReadFile(filepath.Join(Dir(lab), "lab.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", lab, ErrNoLab)
	}
	if err != nil {
		return nil, err
	}
	var l Lab
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(Dir(lab), "lab.json"), err)
	}
	if l.Topology != nil {
		for name, n := range l.Topology.Nodes {
			n.Name = name
		}
	}
	return &l, nil
}

// Save writes a lab's record atomically and durably.
func Save(l *Lab) error {
	if err := os.MkdirAll(Dir(l.Name), 0o755); err != nil {
		return err
	}
	l.Updated = time.Now().UTC()
	if l.Created.IsZero() {
		l.Created = l.Updated
	}
	sort.Strings(l.Namespaces)
	return WriteJSON(filepath.Join(Dir(l.Name), "lab.json"), l)
}

// WriteJSON replaces the file at path with v as indented JSON, atomically:
// written to a temporary file beside it (".NAME.*.tmp", never NAME.json,
// so a reader of *.json never sees it), synced, renamed over it. A reader
// sees the old contents or the new, never a part, also after a crash.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o644) // CreateTemp's 0600 would hide the lab from users without root
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// List returns the labs that have state, sorted.
func List() ([]string, error) {
	ents, err := os.ReadDir(Root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Remove deletes a lab's state, and Root too once it is empty.
func Remove(lab string) error {
	if err := os.RemoveAll(Dir(lab)); err != nil {
		return err
	}
	if err := os.Remove(Root); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		return err
	}
	return nil
}

// Lock takes the lab's exclusive lock (a flock on a file beside its state
// directory), waiting for another labctl working on the same lab. The lock
// file is removed by Unlock when the lab has no state left.
func Lock(lab string) (unlock func(), err error) {
	if err := os.MkdirAll(Root, 0o755); err != nil {
		return nil, err
	}
	p := filepath.Join(Root, "."+lab+".lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	return func() {
		if _, err := os.Stat(Dir(lab)); errors.Is(err, fs.ErrNotExist) {
			os.Remove(p)
			os.Remove(Root) // only when empty
		}
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
