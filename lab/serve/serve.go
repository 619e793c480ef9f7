// Package serve holds labctl's own daemons, run inside a node's namespace
// as `labctl serve <kind>` by the supervisor (so no goroutine of the main
// labctl process ever serves from a borrowed namespace).
package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"time"
)

// HTTP answers every request with a short text naming the node, so a
// request's path through the lab is visible in its answer.
func HTTP(ctx context.Context, listen, text string, log *slog.Logger) error {
	node := os.Getenv("LABCTL_NODE")
	mux := http.NewServeMux()
	// /bytes/N sends N bytes of Pattern: a bulk transfer whose content the
	// receiver can check.
	mux.HandleFunc("/bytes/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.PathValue("n"), 10, 64)
		if err != nil || n < 0 || n > MaxBytes {
			http.Error(w, fmt.Sprintf("n must be 0..%d", MaxBytes), http.StatusBadRequest)
			return
		}
		log.Info("bytes", "n", n, "remote", r.RemoteAddr)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		io.CopyN(w, Pattern(), n)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		log.Info("request", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "%s %s %s from %s\n", node, r.Method, r.URL.Path, r.RemoteAddr)
		if text != "" {
			fmt.Fprintln(w, text)
		}
	})
	srv := &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	log.Info("serving http", "listen", ln.Addr().String(), "node", node)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// MaxBytes bounds one /bytes transfer (1 GiB).
const MaxBytes = 1 << 30

// Pattern is the endless content of /bytes: a counter in every 8 bytes,
// so a lost or reordered block changes its checksum.
func Pattern() io.Reader { return &pattern{} }

type pattern struct{ off uint64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		word := (p.off + uint64(i)) / 8
		b[i] = byte(word >> (8 * ((p.off + uint64(i)) % 8)))
	}
	p.off += uint64(len(b))
	return len(b), nil
}

// Echo copies every TCP connection's bytes back to it.
func Echo(ctx context.Context, listen string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	log.Info("serving echo", "listen", ln.Addr().String())
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// NodeIPv4 is the namespace's first global unicast IPv4 address: where a
// VM's server listens and what it registers.
func NodeIPv4() (netip.Addr, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, err
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback != 0 || ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && p.Addr().IsGlobalUnicast() {
				return p.Addr(), nil
			}
		}
	}
	return netip.Addr{}, errors.New("no IPv4 address on any interface of this namespace")
}
