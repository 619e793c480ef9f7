// Package loadgen is a bounded closed-loop load: a fixed number of workers,
// each with one request outstanding, for a fixed time. It is what
// `labctl bench orders` drives through the lab and on loopback.
package loadgen

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Result summarises one load. Latencies are of successful requests.
type Result struct {
	Workers  int            `json:"workers"`
	Duration time.Duration  `json:"duration_ns"`
	OK       int            `json:"ok"`
	Errors   int            `json:"errors"`
	Outcomes map[string]int `json:"outcomes"`   // by outcome: "201", "409 out_of_stock", "transport: ..."
	Rate     float64        `json:"per_second"` // successes per second
	P50      time.Duration  `json:"p50_ns"`
	P90      time.Duration  `json:"p90_ns"`
	P99      time.Duration  `json:"p99_ns"`
	Max      time.Duration  `json:"max_ns"`
}

// Do makes request seq of worker w and says how it ended: ok, and an
// outcome to count (a status code or an error's kind).
type Do func(ctx context.Context, w, seq int) (ok bool, outcome string)

// MaxWorkers bounds a load's concurrency.
const MaxWorkers = 1024

// Run runs workers closed loops of do: each worker starts requests until
// d has passed (or ctx ends) and lets its last one finish, so no request
// is cut off by the end of the load.
func Run(ctx context.Context, workers int, d time.Duration, do Do) Result {
	workers = min(max(workers, 1), MaxWorkers)
	type tally struct {
		lat      []time.Duration
		errors   int
		outcomes map[string]int
	}
	tallies := make([]tally, workers)
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := &tallies[w]
			t.outcomes = map[string]int{}
			for seq := 0; ctx.Err() == nil && time.Now().Before(end); seq++ {
				t0 := time.Now()
				ok, outcome := do(ctx, w, seq)
				t.outcomes[outcome]++
				if ok {
					t.lat = append(t.lat, time.Since(t0))
				} else {
					t.errors++
				}
			}
		}()
	}
	wg.Wait()
	res := Result{Workers: workers, Duration: time.Since(start), Outcomes: map[string]int{}}
	var lat []time.Duration
	for _, t := range tallies {
		lat = append(lat, t.lat...)
		res.Errors += t.errors
		for k, v := range t.outcomes {
			res.Outcomes[k] += v
		}
	}
	res.OK = len(lat)
	res.Rate = float64(res.OK) / res.Duration.Seconds()
	if len(lat) > 0 {
		slices.Sort(lat)
		at := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
		res.P50, res.P90, res.P99, res.Max = at(0.50), at(0.90), at(0.99), lat[len(lat)-1]
	}
	return res
}
