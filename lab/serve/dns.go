package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"labctl/lab/dns"
	"labctl/lab/dns/resolver"
)

// DNS runs what a node serves in the DNS world, configured by a dns.Config
// in JSON: its authoritative zones (with any GSLB) or its recursive
// resolver on port 53 over UDP and TCP, and its HTTPDNS endpoint, until
// ctx is done.
func DNS(ctx context.Context, configJSON string, log *slog.Logger) error {
	var cfg dns.Config
	if err := json.Unmarshal([]byte(configJSON), &cfg); err != nil {
		return fmt.Errorf("dns config: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st := &dns.Counters{}
	var run []func() error
	if len(cfg.Zones) > 0 || cfg.Resolver != nil {
		var a dns.Answerer
		var flush func() int
		var admit func(netip.Addr) bool
		if cfg.Resolver != nil {
			r, err := resolver.New(cfg.Resolver, st, log)
			if err != nil {
				return err
			}
			r.Name = cfg.Node
			a, flush, admit = r, r.Flush, r.Allowed
		} else {
			auth, err := dns.NewAuthority(ctx, cfg.Zones, st, log)
			if err != nil {
				return err
			}
			a = auth
		}
		listen := cfg.Listen
		if listen == "" {
			listen = fmt.Sprintf(":%d", dns.Port)
		}
		srv := dns.NewServer(a, st, flush, log)
		srv.Admit = admit // only the resolver's clients may read its counters or empty its cache
		run = append(run, func() error { return srv.ListenAndServe(ctx, listen) })
		log.Info("serving dns", "node", cfg.Node, "listen", listen, "zones", len(cfg.Zones), "resolver", cfg.Resolver != nil)
	}
	if h := cfg.HTTPDNS; h != nil {
		handler, err := resolver.NewHTTPDNS(h, st, log)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", h.Listen)
		if err != nil {
			return err
		}
		// Timeouts bound what idle or slow clients can hold.
		hs := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second, MaxHeaderBytes: 16 << 10}
		go func() {
			<-ctx.Done()
			sctx, stop := context.WithTimeout(context.Background(), 2*time.Second)
			defer stop()
			hs.Shutdown(sctx)
		}()
		run = append(run, func() error {
			if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		log.Info("serving httpdns", "node", cfg.Node, "listen", ln.Addr().String())
	}
	if len(run) == 0 {
		return errors.New("dns config: nothing to serve (no zones, resolver or httpdns)")
	}
	errc := make(chan error, len(run))
	for _, f := range run {
		go func() { errc <- f() }()
	}
	var first error
	for range run {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel() // one part failed: stop the others
		}
	}
	return first
}
