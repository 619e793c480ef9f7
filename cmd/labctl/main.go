// Command labctl builds real network labs from topology files.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"labctl/lab/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal asks every phase to stop (and up to roll back); once
	// it has, a second one kills labctl as it would without this context.
	go func() { <-ctx.Done(); stop() }()
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
