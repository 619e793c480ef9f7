#!/usr/bin/env bash
# The README's second command (via `make test`) and CI's: formatting, vet,
# golangci-lint (scripts/lint.sh), then every test with the race detector. As root the end-to-end tests
# build real labs in their own namespaces; otherwise they are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

echo "== gofmt"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "not gofmt-clean:"; echo "$unformatted"; exit 1
fi
echo "== go vet"
go vet ./...
echo "== golangci-lint"
scripts/lint.sh
if [ "$(id -u)" -ne 0 ]; then
	echo "!! not root: end-to-end tests will be skipped (run: sudo make test)"
fi
echo "== go test -race"
go test -race -count=1 ./...
