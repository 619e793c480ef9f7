package dns

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

// Result is one answered query.
type Result struct {
	Msg   *mdns.Msg
	Trace *Trace // the resolver's steps, when asked for and given
	RTT   time.Duration
	TCP   bool // the answer came over TCP (asked for, or UDP was truncated)
}

// QueryOptions shape a query.
type QueryOptions struct {
	Trace   bool          // ask the resolver for its steps (TraceOption); implies TCP
	TCP     bool          // use TCP from the start
	Timeout time.Duration // per attempt; default 2s
	Class   uint16        // default IN
	NoRD    bool          // clear Recursion Desired
}

// Query asks server (an address, with or without a port) about name,
// over UDP with EDNS0 (4096 bytes) and again over TCP if the answer was
// truncated. A query asking for the trace goes over TCP from the start:
// servers cap UDP answers at 1232 bytes, a cold trace can outgrow that,
// and the retry would find the answer cached. It works in the caller's
// network namespace.
func Query(ctx context.Context, server, name string, qtype uint16, o QueryOptions) (*Result, error) {
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), qtype)
	if o.Class != 0 {
		m.Question[0].Qclass = o.Class
	}
	m.RecursionDesired = !o.NoRD
	m.SetEdns0(4096, false)
	if o.Trace {
		opt := m.IsEdns0()
		opt.Option = append(opt.Option, &mdns.EDNS0_LOCAL{Code: TraceOption})
	}
	addr := HostPort(server)
	c := &mdns.Client{Net: "udp", Timeout: o.Timeout, UDPSize: 4096}
	o.TCP = o.TCP || o.Trace
	res := &Result{TCP: o.TCP}
	if o.TCP {
		c.Net = "tcp"
	}
	r, rtt, err := c.ExchangeContext(ctx, m, addr)
	if err == nil && r.Truncated && !o.TCP {
		c.Net = "tcp"
		res.TCP = true
		var rtt2 time.Duration
		r, rtt2, err = c.ExchangeContext(ctx, m, addr)
		rtt += rtt2
	}
	if err != nil {
		return nil, fmt.Errorf("ask %s: %w", addr, err)
	}
	res.Msg, res.RTT = r, rtt
	if opt := r.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if l, ok := o.(*mdns.EDNS0_LOCAL); ok && l.Code == TraceOption {
				var t Trace
				if err := json.Unmarshal(l.Data, &t); err != nil {
					return res, fmt.Errorf("%s sent a trace that is not JSON: %w", addr, err)
				}
				res.Trace = &t
			}
		}
	}
	return res, nil
}

// ReadStats returns a server's counters (a CHAOS TXT query for StatsName).
func ReadStats(ctx context.Context, server string) (map[string]int64, error) {
	txt, err := chaos(ctx, server, StatsName)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, s := range txt {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			out[k] = n
		}
	}
	return out, nil
}

// FlushCache empties a resolver's cache and returns how many entries it
// held (a CHAOS TXT query for FlushName).
func FlushCache(ctx context.Context, server string) (int, error) {
	txt, err := chaos(ctx, server, FlushName)
	if err != nil {
		return 0, err
	}
	for _, s := range txt {
		if v, ok := strings.CutPrefix(s, "flushed="); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, fmt.Errorf("%s: no flushed=N in the answer %q", server, txt)
}

func chaos(ctx context.Context, server, name string) ([]string, error) {
	r, err := Query(ctx, server, name, mdns.TypeTXT, QueryOptions{Class: mdns.ClassCHAOS, NoRD: true})
	if err != nil {
		return nil, err
	}
	if r.Msg.Rcode != mdns.RcodeSuccess {
		return nil, fmt.Errorf("%s answered %s to %s", server, mdns.RcodeToString[r.Msg.Rcode], name)
	}
	var out []string
	for _, rr := range r.Msg.Answer {
		if t, ok := rr.(*mdns.TXT); ok {
			out = append(out, t.Txt...)
		}
	}
	return out, nil
}

// HostPort adds the DNS port to an address that has none.
func HostPort(server string) string {
	if _, _, err := net.SplitHostPort(server); err == nil {
		return server
	}
	return net.JoinHostPort(server, strconv.Itoa(Port))
}
