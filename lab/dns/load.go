package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
)

// LoadResult is one closed-loop load run against a server.
type LoadResult struct {
	Queries  int           `json:"queries"` // answered with NOERROR and at least one record
	Errors   int           `json:"errors"`  // timeouts, other rcodes, empty answers
	Duration time.Duration `json:"duration_ns"`
	QPS      float64       `json:"qps"`
	P50      time.Duration `json:"p50_ns"`
	P90      time.Duration `json:"p90_ns"`
	P99      time.Duration `json:"p99_ns"`
	Max      time.Duration `json:"max_ns"`
}

// Load sends the same query over each of conns (connected UDP sockets,
// made in whatever namespace the caller chose), one outstanding query per
// socket, until d has passed or ctx ends. Each reply is checked by its
// header only (ID, rcode, answer count), so the client's own cost stays
// small next to the server's.
func Load(ctx context.Context, conns []net.Conn, name string, qtype uint16, recursion bool, d time.Duration) (LoadResult, error) {
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), qtype)
	m.RecursionDesired = recursion
	q, err := m.Pack()
	if err != nil {
		return LoadResult{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		mu     sync.Mutex
		lat    []time.Duration
		errs   int
		wg     sync.WaitGroup
		start  = time.Now()
		report error
	)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pkt := slices.Clone(q)
			buf := make([]byte, 65535)
			var mine []time.Duration
			bad := 0
			id := uint16(i) << 10
			for ctx.Err() == nil {
				id++
				binary.BigEndian.PutUint16(pkt, id)
				t0 := time.Now()
				c.SetDeadline(t0.Add(time.Second))
				if _, err := c.Write(pkt); err != nil {
					bad++
					continue
				}
				ok := false
				for {
					n, err := c.Read(buf)
					if err != nil {
						var ne net.Error
						if !errors.As(err, &ne) || !ne.Timeout() {
							mu.Lock()
							report = err
							mu.Unlock()
							return
						}
						break
					}
					if n < 12 || binary.BigEndian.Uint16(buf) != id {
						continue // a late answer to an earlier query
					}
					rcode := buf[3] & 0x0f
					ancount := binary.BigEndian.Uint16(buf[6:])
					ok = rcode == mdns.RcodeSuccess && ancount > 0
					break
				}
				if ok {
					mine = append(mine, time.Since(t0))
				} else {
					bad++
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	r := LoadResult{Queries: len(lat), Errors: errs, Duration: time.Since(start)}
	if r.Duration > 0 {
		r.QPS = float64(r.Queries) / r.Duration.Seconds()
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(float64(len(lat))*p))] }
		r.P50, r.P90, r.P99, r.Max = pct(0.50), pct(0.90), pct(0.99), lat[len(lat)-1]
	}
	return r, report
}
