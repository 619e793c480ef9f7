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
	"os"
	"time"
)

// HTTP answers every request with a short text naming the node, so a
// request's path through the lab is visible in its answer.
func HTTP(ctx context.Context, listen, text string, log *slog.Logger) error {
	node := os.Getenv("LABCTL_NODE")
	mux := http.NewServeMux()
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
