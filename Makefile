# labctl: the two commands of the README are `sudo make demo` and
# `sudo make test`. sudo drops PATH, so Go's usual home is put back here.
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go

.PHONY: all build install setup demo test unit bench clean

all: build

build:
	$(GO) build -o bin/labctl ./cmd/labctl

install: build
	install -m 0755 bin/labctl /usr/local/bin/labctl

# Install whatever is missing (idempotent; apt-get on Debian/Ubuntu).
setup:
	scripts/setup.sh

# Bring the sample lab up, send traffic across it, take it down.
demo: setup build
	scripts/demo.sh

# The whole suite: formatting, vet, unit tests and, as root, the
# end-to-end tests that build real namespaces. Same command in CI.
test: setup
	scripts/test.sh

# Unit tests only (no root needed).
unit:
	$(GO) test ./...

bench: build
	bin/labctl bench up --shape linear --n 10,100,1000

clean:
	rm -rf bin
