#!/usr/bin/env bash
# The README's first command: bring the sample lab up, send a ping and an
# HTTP request across its router, show it, and take it down again.
set -euo pipefail
cd "$(dirname "$0")/.."
labctl=bin/labctl
topo=topologies/sample.yaml

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "labctl doctor"
$labctl doctor || true
step "labctl up -t $topo"
$labctl up -t "$topo"
# Whatever happens below, the lab goes away.
trap '$labctl down sample' EXIT
step "labctl status"
$labctl status
step "labctl exec h1 -- ping -c3 h2.sample.test   (h1 → switch s1 → router r1 → h2)"
$labctl exec h1 -- ping -c3 -W2 h2.sample.test
step "labctl exec h1 -- ping -6 -c1 fd00:2::10"
$labctl exec h1 -- ping -6 -c1 -W2 fd00:2::10
step "labctl exec h1 -- curl http://h2.sample.test/   (served by h2's web service)"
$labctl exec h1 -- curl -sS --max-time 5 http://h2.sample.test/
step "labctl inspect"
$labctl inspect
step "labctl down sample"
