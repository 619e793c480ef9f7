// Package doctor checks the machine (placeholder until the real checks land).
package doctor

import "context"

// Check is one probed feature or program.
type Check struct {
	Name     string `json:"name"`
	Group    string `json:"group"`
	OK       bool   `json:"ok"`
	Required bool   `json:"required"`
	Detail   string `json:"detail"`
	Fix      string `json:"fix,omitempty"`
}

// Run probes the machine.
func Run(ctx context.Context) []Check { return nil }
