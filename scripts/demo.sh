#!/usr/bin/env bash
# The README's first command: bring the default Double-11 lab up and place
# an order from a subscriber of each carrier, end to end (real DNS, TLS,
# HAProxy, controllers, gRPC services found in etcd, PostgreSQL). The lab
# stays up afterwards for exploring; `labctl down double11` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
labctl=bin/labctl

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "labctl doctor"
$labctl doctor || true
step "labctl up   (topologies/double11.yaml: carriers, DNS, two cloud regions, the shop)"
if ! $labctl up; then
	echo "labctl up failed; its logs: labctl logs --lab double11" >&2
	exit 1
fi
step "labctl dig ue1 www.shop.example   (carrier A's resolver → root → tld → ns1 → GSLB)"
$labctl dig ue1 www.shop.example
step "labctl order --from ue1   (carrier A: the GSLB sends it to region east)"
$labctl order --from ue1
step "labctl order --from ue2 --coupon D11-10   (carrier B: region north)"
$labctl order --from ue2 --coupon D11-10
step "labctl orders   (the primary; --standby reads the streaming replica)"
$labctl orders
cat <<'MSG'

The lab is still up. Try:
  sudo bin/labctl order --from ue2 --qty 2        # another order
  sudo bin/labctl orders --standby                # what the hot standby has
  sudo bin/labctl capture east-gw eth1 -c 6 --filter 'tcp port 443'   # the TLS handshake on the wire
  sudo bin/labctl down double11                   # remove everything the lab made
  sudo bin/labctl bench orders -d 5s              # load through the whole path (brings its own lab up and down)
MSG
