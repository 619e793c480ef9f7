// Package topologies holds the example labs, built into labctl so that
// `labctl up` without -t works from any directory.
package topologies

import "embed"

// FS holds every *.yaml of this directory.
//
//go:embed *.yaml
var FS embed.FS
