package resolver

import (
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// maxEntries bounds the cache; past it, expired entries go first, then
// arbitrary ones.
const maxEntries = 100000

// Entry kinds.
const (
	entryData   = iota // an RRset
	entryNXDom         // the name does not exist (any type)
	entryNoData        // the name exists but has no RRset of this type
)

// key names one cache entry. Infrastructure entries (delegation NS sets
// and glue) live beside answer entries but never answer a query.
type key struct {
	name  string // lowercase, fully qualified
	qtype uint16 // mdns.TypeNone for an NXDOMAIN entry
	infra bool
}

type entry struct {
	kind    int
	rrs     []mdns.RR // entryData: the RRset, TTLs as received
	soa     *mdns.SOA // negative entries: the zone's SOA
	expires time.Time
	// turn counts the answers given from this entry: each starts one
	// record further (cyclic order).
	turn atomic.Uint64
}

// remaining is the entry's TTL left at now, in whole seconds.
func (e *entry) remaining(now time.Time) uint32 {
	return uint32(e.expires.Sub(now) / time.Second)
}

type cache struct {
	mu  sync.Mutex
	m   map[key]*entry
	max int
}

func newCache(max int) *cache {
	return &cache{m: map[key]*entry{}, max: max}
}

// get returns the live entry of k at now.
func (c *cache) get(k key, now time.Time) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[k]
	if e == nil {
		return nil
	}
	if !now.Before(e.expires) {
		delete(c.m, k)
		return nil
	}
	return e
}

// put stores e under k unless it is already expired.
func (c *cache) put(k key, e *entry, now time.Time) {
	if !now.Before(e.expires) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		c.evict(now)
	}
	c.m[k] = e
}

// evict makes room: every expired entry goes, and if that frees less
// than a hundredth of the cache, arbitrary entries go too.
func (c *cache) evict(now time.Time) {
	for k, e := range c.m {
		if !now.Before(e.expires) {
			delete(c.m, k)
		}
	}
	want := c.max - c.max/100
	if want >= c.max {
		want = c.max - 1
	}
	for k := range c.m {
		if len(c.m) <= want {
			break
		}
		delete(c.m, k)
	}
}

// flush empties the cache and says how many entries went.
func (c *cache) flush() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.m)
	c.m = map[key]*entry{}
	return n
}

// len is how many entries the cache holds, expired ones included.
func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// withTTL copies rrs with every TTL set to ttl.
func withTTL(rrs []mdns.RR, ttl uint32) []mdns.RR { return rotated(rrs, ttl, 0) }

// rotated is withTTL starting at record k: rrs[k:] then rrs[:k].
func rotated(rrs []mdns.RR, ttl uint32, k int) []mdns.RR {
	out := make([]mdns.RR, len(rrs))
	for i := range rrs {
		out[i] = mdns.Copy(rrs[(i+k)%len(rrs)])
		out[i].Header().Ttl = ttl
	}
	return out
}

// minTTL is the smallest TTL of rrs (0 for none).
func minTTL(rrs []mdns.RR) uint32 {
	var m uint32
	for i, rr := range rrs {
		if t := rr.Header().Ttl; i == 0 || t < m {
			m = t
		}
	}
	return m
}
