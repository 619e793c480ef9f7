#!/usr/bin/env bash
# Side by side, in one run: Mininet (Linux bridges, no controller) and
# labctl building and tearing down linear,N, each as RUNS back-to-back
# cycles of whole commands. Back to back, every cycle also pays for the
# kernel's asynchronous cleanup of the previous one, for both tools alike.
# Needs root, Mininet and bridge-utils: scripts/setup.sh --with-mininet
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${SIZES:-"10 100"}
runs=${RUNS:-5}
pause=${PAUSE:-20}
make -s build
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
now() { date +%s.%N; }
printf '%-11s %5s %16s %16s %8s\n' shape cycles "mininet s/cycle" "labctl s/cycle" ratio
for n in $sizes; do
	bin/labctl gen linear "$n" --name "mnbench$n" > "$tmp/l$n.yaml"
	sleep "$pause"
	t0=$(now)
	for _ in $(seq "$runs"); do
		mn --switch lxbr --controller none --topo "linear,$n" --test build >/dev/null 2>&1
	done
	t1=$(now)
	sleep "$pause"
	t2=$(now)
	for _ in $(seq "$runs"); do
		bin/labctl up -t "$tmp/l$n.yaml" >/dev/null
		bin/labctl down "mnbench$n" >/dev/null
	done
	t3=$(now)
	mn_s=$(echo "($t1 - $t0) / $runs" | bc -l)
	lab_s=$(echo "($t3 - $t2) / $runs" | bc -l)
	printf '%-11s %5d %16.3f %16.3f %7.1fx\n' "linear,$n" "$runs" "$mn_s" "$lab_s" "$(echo "$mn_s / $lab_s" | bc -l)"
done
