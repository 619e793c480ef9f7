package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"labctl/lab/bgp"
	"labctl/lab/topology"
)

// BGP runs a router's BGP speaker, configured by a topology.BGP in JSON,
// on the kernel of the current namespace until ctx is done.
func BGP(ctx context.Context, configJSON string, log *slog.Logger) error {
	var cfg topology.BGP
	if err := json.Unmarshal([]byte(configJSON), &cfg); err != nil {
		return fmt.Errorf("bgp config: %w", err)
	}
	return bgp.Run(ctx, &cfg, bgp.NetlinkKernel(), log)
}
