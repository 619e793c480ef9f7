package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// Balancer is a GSLB: it picks, for each asker, the healthy addresses of
// the region its rule prefers, and health-checks every address over TCP.
type Balancer struct {
	names   []string // fully qualified, lowercase
	ttl     uint32   // seconds
	regions []*gslbRegion
	rules   []gslbRule // longest prefix first
	def     []*gslbRegion
	check   HealthCheckSpec
	st      *Counters
	log     *slog.Logger

	// dial is the health check of one "host:port": nil error when a TCP
	// connection could be opened. Tests replace it.
	dial func(ctx context.Context, addr string) error

	// graceUntil: until then an address that never passed a check is
	// not counted down (StartupGrace after the balancer is made).
	graceUntil time.Time

	mu       sync.Mutex
	failOpen bool // the last Select found no healthy region
}

type gslbRegion struct {
	name    string
	targets []*gslbTarget
	turn    uint64 // answers given (under Balancer.mu): where the next starts
}

type gslbRule struct {
	prefix netip.Prefix
	order  []*gslbRegion
}

// gslbTarget is one region address and its health, guarded by
// Balancer.mu.
type gslbTarget struct {
	region string
	addr   netip.Addr

	known   bool // a check has completed ("unknown" counts as up)
	proven  bool // a check has succeeded
	up      bool
	fails   int // consecutive failed checks
	oks     int // consecutive successful checks
	since   time.Time
	lastErr string
}

// AddrStatus is the health of one GSLB address.
type AddrStatus struct {
	Region    string
	Address   netip.Addr
	Up        bool
	Since     time.Time // when the address last changed state (or was configured)
	LastError string    // the error of the last failed check, "" after a success
}

// NewGSLB validates cfg and returns its balancer; Run starts the health
// checks. Addresses are IPv4 (the balancer answers A queries); From
// prefixes may be written as bare addresses. A Default left empty means
// every region in configuration order. Check.Port 0 disables health
// checks: every address then stays up; other zero Check fields take
// defaults (interval 1s, timeout 500ms, fall 2, rise 2).
func NewGSLB(cfg *GSLB, st *Counters, log *slog.Logger) (*Balancer, error) {
	if cfg == nil {
		return nil, errors.New("gslb: no configuration")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Balancer{
		ttl:   uint32(time.Duration(cfg.TTL) / time.Second),
		check: cfg.Check,
		st:    st,
		log:   log,
		dial:  dialCheck,
	}
	if cfg.TTL < 0 {
		return nil, fmt.Errorf("gslb: negative ttl %v", time.Duration(cfg.TTL))
	}
	if len(cfg.Names) == 0 {
		return nil, errors.New("gslb: no names")
	}
	for _, n := range cfg.Names {
		if _, ok := mdns.IsDomainName(n); !ok {
			return nil, fmt.Errorf("gslb: bad name %q", n)
		}
		b.names = append(b.names, Fqdn(n))
	}
	if len(cfg.Regions) == 0 {
		return nil, errors.New("gslb: no regions")
	}
	byName := map[string]*gslbRegion{}
	seen := map[netip.Addr]string{}
	now := time.Now()
	b.graceUntil = now.Add(StartupGrace)
	for _, r := range cfg.Regions {
		if r == nil || r.Name == "" {
			return nil, errors.New("gslb: a region without a name")
		}
		if byName[r.Name] != nil {
			return nil, fmt.Errorf("gslb: region %q declared twice", r.Name)
		}
		if len(r.Addresses) == 0 {
			return nil, fmt.Errorf("gslb: region %q has no addresses", r.Name)
		}
		reg := &gslbRegion{name: r.Name}
		for _, s := range r.Addresses {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("gslb: region %q: %w", r.Name, err)
			}
			a = a.Unmap()
			if !a.Is4() {
				return nil, fmt.Errorf("gslb: region %q: %s is not an IPv4 address", r.Name, s)
			}
			if other, dup := seen[a]; dup {
				return nil, fmt.Errorf("gslb: address %s is in regions %q and %q", a, other, r.Name)
			}
			seen[a] = r.Name
			reg.targets = append(reg.targets, &gslbTarget{region: r.Name, addr: a, up: true, since: now})
		}
		byName[r.Name] = reg
		b.regions = append(b.regions, reg)
	}
	order := func(what string, names []string) ([]*gslbRegion, error) {
		var out []*gslbRegion
		dup := map[string]bool{}
		for _, n := range names {
			r := byName[n]
			if r == nil {
				return nil, fmt.Errorf("gslb: %s: unknown region %q", what, n)
			}
			if dup[n] {
				return nil, fmt.Errorf("gslb: %s: region %q listed twice", what, n)
			}
			dup[n] = true
			out = append(out, r)
		}
		return out, nil
	}
	var err error
	if len(cfg.Default) == 0 {
		b.def = b.regions
	} else if b.def, err = order("default", cfg.Default); err != nil {
		return nil, err
	}
	for i, c := range cfg.Clients {
		if c == nil || len(c.From) == 0 || len(c.Prefer) == 0 {
			return nil, fmt.Errorf("gslb: client rule %d needs from and prefer", i+1)
		}
		o, err := order(fmt.Sprintf("client rule %d", i+1), c.Prefer)
		if err != nil {
			return nil, err
		}
		for _, f := range c.From {
			p, err := parsePrefix(f)
			if err != nil {
				return nil, fmt.Errorf("gslb: client rule %d: %w", i+1, err)
			}
			b.rules = append(b.rules, gslbRule{prefix: p, order: o})
		}
	}
	sort.SliceStable(b.rules, func(i, j int) bool { return b.rules[i].prefix.Bits() > b.rules[j].prefix.Bits() })

	c := &b.check
	if c.Port < 0 || c.Port > 65535 {
		return nil, fmt.Errorf("gslb: bad check port %d", c.Port)
	}
	if c.Interval < 0 || c.Timeout < 0 || c.Fall < 0 || c.Rise < 0 {
		return nil, errors.New("gslb: negative check interval, timeout, fall or rise")
	}
	if c.Interval == 0 {
		c.Interval = Duration(DefaultCheckInterval)
	}
	if c.Timeout == 0 {
		c.Timeout = Duration(min(DefaultCheckTimeout, time.Duration(c.Interval)))
	}
	if c.Fall == 0 {
		c.Fall = DefaultCheckFall
	}
	if c.Rise == 0 {
		c.Rise = DefaultCheckRise
	}
	for _, r := range b.regions {
		b.st.Add("gslb_up_"+r.name, int64(len(r.targets)))
	}
	return b, nil
}

// parsePrefix reads "10.0.0.0/8" or a bare address (a host prefix).
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad prefix %q", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func dialCheck(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// Select returns the addresses to answer client with: the healthy
// addresses (starting one further at each answer: round robin per region)
// of the first region with any in the
// order of the rule with the longest prefix holding client (Default when
// none does). When no region of the order has a healthy address, Select
// fails open with every address of the first region.
//
// The answer is tailored to client alone: a rule's prefix is no ECS scope
// (a more specific rule may sit inside it, and Default covers what no rule
// does), so the Authority echoes the query's source prefix as the scope.
func (b *Balancer) Select(client netip.Addr) (addrs []netip.Addr, region string) {
	client = client.Unmap()
	order := b.def
	for _, r := range b.rules {
		if r.prefix.Contains(client) {
			order = r.order
			break
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range order {
		for _, t := range r.targets {
			if t.up {
				addrs = append(addrs, t.addr)
			}
		}
		if len(addrs) > 0 {
			// Round robin: each answer starts one address further, so
			// clients that take the first spread over the region.
			n := int(r.turn % uint64(len(addrs)))
			r.turn++
			addrs = append(addrs[n:], addrs[:n]...)
			if b.failOpen {
				b.failOpen = false
				b.log.Info("gslb: a region is healthy again, no longer failing open", "region", r.name)
			}
			return addrs, r.name
		}
	}
	first := order[0]
	for _, t := range first.targets {
		addrs = append(addrs, t.addr)
	}
	b.st.Add("gslb_fail_open", 1)
	if !b.failOpen {
		b.failOpen = true
		b.log.Warn("gslb: no healthy address in any region, failing open", "region", first.name, "client", client.String())
	}
	return addrs, first.name
}

// Status is the health of every address, in configuration order.
func (b *Balancer) Status() []AddrStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []AddrStatus
	for _, r := range b.regions {
		for _, t := range r.targets {
			out = append(out, AddrStatus{Region: t.region, Address: t.addr, Up: t.up, Since: t.since, LastError: t.lastErr})
		}
	}
	return out
}

// Run health-checks every address until ctx is done: a TCP connect to
// address:Check.Port every Check.Interval. Every address starts up, as
// HAProxy's servers do: Fall consecutive failures take it down and Rise
// consecutive successes bring it back. (Letting the first result decide
// would send a region's clients elsewhere for Rise intervals whenever the
// GSLB starts a moment before the load balancers it checks.)
func (b *Balancer) Run(ctx context.Context) {
	if b.check.Port == 0 {
		return
	}
	var wg sync.WaitGroup
	for _, r := range b.regions {
		for _, t := range r.targets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b.checkLoop(ctx, t)
			}()
		}
	}
	wg.Wait()
}

func (b *Balancer) checkLoop(ctx context.Context, t *gslbTarget) {
	addr := net.JoinHostPort(t.addr.String(), strconv.Itoa(b.check.Port))
	tick := time.NewTicker(time.Duration(b.check.Interval))
	defer tick.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Duration(b.check.Timeout))
		err := b.dial(cctx, addr)
		cancel()
		if ctx.Err() != nil {
			return // stopping: this result says nothing about the address
		}
		b.record(t, err)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// record applies one check result to t's state machine.
func (b *Balancer) record(t *gslbTarget, err error) {
	b.st.Add("health_checks", 1)
	if err != nil {
		b.st.Add("health_failures", 1)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case err != nil && !t.proven && time.Now().Before(b.graceUntil):
		// Still starting: not a failure yet (StartupGrace).
		t.lastErr = err.Error()
	case err != nil:
		t.fails++
		t.oks = 0
		t.lastErr = err.Error()
	default:
		t.oks++
		t.fails = 0
		t.lastErr = ""
		t.proven = true
	}
	first := !t.known
	t.known = true
	up := t.up
	switch {
	case t.up && t.fails >= b.check.Fall:
		up = false
	case !t.up && t.oks >= b.check.Rise:
		up = true
	}
	if !first && up == t.up {
		return
	}
	changed := up != t.up
	t.up = up
	if changed {
		t.since = time.Now()
		if up {
			b.st.Add("gslb_up_"+t.region, 1)
		} else {
			b.st.Add("gslb_up_"+t.region, -1)
		}
	}
	state := "down"
	if up {
		state = "up"
	}
	attrs := []any{"address", t.addr.String(), "region", t.region, "state", state}
	if err != nil {
		attrs = append(attrs, "error", err.Error())
	}
	if !changed {
		// The first check of an address that stays up: say how it went.
		switch {
		case err != nil && t.fails == 0:
			attrs = append(attrs, "starting", "not counted until it passes a check or "+StartupGrace.String()+" have passed")
		case err != nil:
			attrs = append(attrs, "failures", t.fails, "down_after", b.check.Fall)
		}
		b.log.Info("gslb: first check", attrs...)
		return
	}
	b.log.Info("gslb: health changed", attrs...)
}
