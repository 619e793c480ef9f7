#!/usr/bin/env bash
# Static checks beyond go vet, as configured in .golangci.yml. The linter
# is pinned here and run with `go run`: the first run downloads and builds
# it through the Go module proxy (about 3 minutes on a fresh machine), later
# runs reuse Go's module and build caches (a second or so to start).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

GOLANGCI_LINT_VERSION=v2.15.0
exec go run "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@${GOLANGCI_LINT_VERSION}" run "$@" ./...
