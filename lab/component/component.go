// Package component is the registry of labctl's lab parts: the cloud
// region, the internet, the DNS world, the shop, the security device, and
// the parts still to come. A part is one package; it registers itself here
// with one line in lab/parts, and the generic core finds it through small
// optional interfaces that each core package defines for what it consumes
// (topology: node kinds, blocks, checks, expansion; plan: steps; engine:
// apply, observe, describe; doctor: probes; cli: verbs). This package
// imports nothing of labctl, so every layer can ask it without a cycle.
//
// The shape follows kind's one-method actions rather than a node interface
// with dozens of methods: a part implements only what it needs.
package component

import (
	"fmt"
	"sort"
	"sync"
)

// Part is one lab part. Name is its registry key ("firewall"); Stage says
// which stage of the Double-11 story it recreates, for `labctl parts` and
// the docs.
type Part interface {
	Name() string
	Stage() string
}

var (
	mu      sync.RWMutex
	parts   []Part
	index   = map[string]Part{}
	version int // changes with every Register and Unregister
)

// Version changes whenever the registry does, so that a layer may cache
// what it derives from the parts (the topology's kinds and blocks).
func Version() int {
	mu.RLock()
	defer mu.RUnlock()
	return version
}

// Register adds a part. Registering two parts under one name is a
// programming error and panics, as http.Handle does.
func Register(p Part) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := index[p.Name()]; dup {
		panic(fmt.Sprintf("component: part %q registered twice", p.Name()))
	}
	index[p.Name()] = p
	parts = append(parts, p)
	version++
}

// All returns the registered parts in registration order.
func All() []Part {
	mu.RLock()
	defer mu.RUnlock()
	return append([]Part(nil), parts...)
}

// Get returns the part registered under name.
func Get(name string) (Part, bool) {
	mu.RLock()
	defer mu.RUnlock()
	p, ok := index[name]
	return p, ok
}

// Names lists the registered parts, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]string, 0, len(index))
	for n := range index {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Implementing returns the registered parts that implement T, in
// registration order: a core package asks for the interface it consumes.
func Implementing[T any]() []T {
	var out []T
	for _, p := range All() {
		if x, ok := p.(T); ok {
			out = append(out, x)
		}
	}
	return out
}

// Unregister removes a part; tests use it to leave the registry as they
// found it.
func Unregister(name string) {
	mu.Lock()
	defer mu.Unlock()
	if _, ok := index[name]; !ok {
		return
	}
	delete(index, name)
	version++
	for i, p := range parts {
		if p.Name() == name {
			parts = append(parts[:i], parts[i+1:]...)
			break
		}
	}
}
