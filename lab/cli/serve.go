package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"labctl/lab/engine"
	"labctl/lab/serve"
	"labctl/lab/topology"
)

// serveCmd holds labctl's own daemons. The supervisor runs them inside a
// node's namespace; they are hidden because people start them through a
// topology's services, not by hand.
func serveCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "serve KIND", Short: "Run one of labctl's own daemons (used by services)", Hidden: true}
	var listen, text string
	httpc := &cobra.Command{
		Use:   "http",
		Short: "Answer HTTP requests with the node's name",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve.HTTP(cmd.Context(), listen, text, slog.New(slog.NewTextHandler(g.errw, nil)))
		},
	}
	httpc.Flags().StringVar(&listen, "listen", ":80", "address to listen on")
	httpc.Flags().StringVar(&text, "text", "", "extra line in every answer")
	var elisten string
	echo := &cobra.Command{
		Use:   "echo",
		Short: "Echo TCP connections",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve.Echo(cmd.Context(), elisten, slog.New(slog.NewTextHandler(g.errw, nil)))
		},
	}
	echo.Flags().StringVar(&elisten, "listen", ":7", "address to listen on")
	var dir string
	ovsdb := &cobra.Command{
		Use:   "ovsdb",
		Short: "Create an ovs-host's Open vSwitch database if needed, then run ovsdb-server on it",
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return serve.OVSDB(dir) },
	}
	ovsdb.Flags().StringVar(&dir, "dir", "", "directory of the database and its sockets")
	ovsdb.MarkFlagRequired("dir")
	var bgpConfig string
	bgpc := &cobra.Command{
		Use:   "bgp",
		Short: "Run a router's BGP speaker (GoBGP) in the current namespace",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The speaker must close its sessions and remove its routes
			// when the supervisor stops it (runDaemon).
			return g.runDaemon(cmd, func(ctx context.Context, log *slog.Logger) error {
				cfg, err := readConfig(bgpConfig)
				if err != nil {
					return err
				}
				return serve.BGP(ctx, cfg, log)
			})
		},
	}
	bgpc.Flags().StringVar(&bgpConfig, "config", "", "file holding the router's resolved bgp block as JSON (bgp.Config; the supervisor writes it)")
	bgpc.MarkFlagRequired("config")
	var dnsConfig string
	dnsc := &cobra.Command{
		Use:   "dns",
		Short: "Serve a node's DNS role: authoritative zones and GSLB, a recursive resolver, HTTPDNS",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.runDaemon(cmd, func(ctx context.Context, log *slog.Logger) error {
				cfg, err := readConfig(dnsConfig)
				if err != nil {
					return err
				}
				return serve.DNS(ctx, cfg, log)
			})
		},
	}
	dnsc.Flags().StringVar(&dnsConfig, "config", "", "file holding what the node serves as JSON (dns.Config; the supervisor writes it)")
	dnsc.MarkFlagRequired("config")
	var superviseLab string
	supervise := &cobra.Command{
		Use:   "supervise",
		Short: "Watch a lab's services and restart them by their restart policy (started by up, ended by down)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.runDaemon(cmd, func(ctx context.Context, _ *slog.Logger) error {
				return engine.New(engine.Options{}).Supervise(ctx, superviseLab)
			})
		},
	}
	supervise.Flags().StringVar(&superviseLab, "lab", "", "the lab to watch")
	supervise.MarkFlagRequired("lab")
	c.AddCommand(httpc, echo, ovsdb, bgpc, dnsc, supervise)
	c.AddCommand(shopServeCmds(g)...)
	return c
}

// runDaemon runs a daemon with a context that SIGTERM (the supervisor's
// stop) or an interrupt ends, whoever calls Main, and a logger on stderr.
func (g *globals) runDaemon(cmd *cobra.Command, fn func(ctx context.Context, log *slog.Logger) error) error {
	ctx, stop := signal.NotifyContext(cmdContext(cmd), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return fn(ctx, slog.New(slog.NewTextHandler(g.errw, nil)))
}

func cmdContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// readConfig reads a daemon's configuration file (at most 16 MiB: the
// supervisor writes it from the topology, itself bounded).
func readConfig(path string) (string, error) {
	b, err := topology.ReadFile(path, 16<<20)
	if err != nil {
		return "", fmt.Errorf("config: %w", err)
	}
	return string(b), nil
}
