package dns

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"

	mdns "github.com/miekg/dns"
)

// Answerer answers one query of class IN that the server front has
// already checked (one question, opcode QUERY). client is the asker's
// address. The answer must be a reply to req (SetReply) and never nil.
type Answerer interface {
	Answer(ctx context.Context, req *mdns.Msg, client netip.Addr) *mdns.Msg
}

// Counters are a server's named counters, read over DNS as StatsName.
type Counters struct {
	mu sync.Mutex
	m  map[string]*atomic.Int64
}

// Add adds n to counter key.
func (c *Counters) Add(key string, n int64) {
	if c == nil {
		return
	}
	c.mu.Lock()
	v := c.m[key]
	if v == nil {
		if c.m == nil {
			c.m = map[string]*atomic.Int64{}
		}
		v = new(atomic.Int64)
		c.m[key] = v
	}
	c.mu.Unlock()
	v.Add(n)
}

// Get reads counter key.
func (c *Counters) Get(key string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v := c.m[key]; v != nil {
		return v.Load()
	}
	return 0
}

// Strings is every counter as "key=value", sorted by key: the TXT strings
// of a StatsName answer.
func (c *Counters) Strings() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.m))
	for k, v := range c.m {
		out = append(out, fmt.Sprintf("%s=%d", k, v.Load()))
	}
	sort.Strings(out)
	return out
}
