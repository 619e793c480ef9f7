#!/usr/bin/env bash
# Regenerates lab/shop/api from shop.proto. Needs protoc (Debian's
# protobuf-compiler) and the two Go plugins at the versions below:
#   GOBIN=/usr/local/bin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   GOBIN=/usr/local/bin go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
set -euo pipefail
cd "$(dirname "$0")/../lab/shop/api"
protoc --go_out=. --go_opt=paths=source_relative \
	--go-grpc_out=. --go-grpc_opt=paths=source_relative shop.proto
