package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"labctl/lab/bgp"
)

// BGP runs a router's BGP speaker, configured by a bgp.Config in JSON,
// on the kernel of the current namespace until ctx is done.
func BGP(ctx context.Context, configJSON string, log *slog.Logger) error {
	var cfg bgp.Config
	if err := json.Unmarshal([]byte(configJSON), &cfg); err != nil {
		return fmt.Errorf("bgp config: %w", err)
	}
	return bgp.Run(ctx, &cfg, bgp.NetlinkKernel(), log)
}
