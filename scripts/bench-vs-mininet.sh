#!/usr/bin/env bash
# Side-by-side: Mininet (Linux bridges, no controller) and labctl building
# and tearing down the same linear,N shapes, alternating, in one run.
# Needs root, Mininet and bridge-utils: scripts/setup.sh --with-mininet
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${SIZES:-"10 100"}
runs=${RUNS:-3}
make -s build
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '%-10s %4s %14s %22s %8s\n' shape run "mininet (s)" "labctl up+down (s)" ratio
for n in $sizes; do
	for r in $(seq "$runs"); do
		t0=$(date +%s.%N)
		mn --switch lxbr --controller none --topo "linear,$n" --test build >/dev/null 2>&1
		t1=$(date +%s.%N)
		mn_s=$(echo "$t1 - $t0" | bc -l)
		bin/labctl gen linear "$n" --name "mnbench$n" > "$tmp/l$n.yaml"
		t2=$(date +%s.%N)
		bin/labctl up -t "$tmp/l$n.yaml" >/dev/null
		bin/labctl down "mnbench$n" >/dev/null
		# Settled: the kernel has freed the namespaces and a new one can be made.
		ip netns add "mnbench-settle-$$" && ip netns del "mnbench-settle-$$"
		t3=$(date +%s.%N)
		lab_s=$(echo "$t3 - $t2" | bc -l)
		printf '%-10s %4d %14.3f %22.3f %7.1fx\n' "linear,$n" "$r" "$mn_s" "$lab_s" "$(echo "$mn_s / $lab_s" | bc -l)"
	done
done
