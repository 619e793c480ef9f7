#!/usr/bin/env bash
# Soaks `labctl up`: N fresh `up --retain` + `down` cycles of one topology,
# stopping at the first failed up. A failure prints that run's output and
# the tail of the log of each service that failed by itself (not those
# only waiting on it), then downs the lab. Ends with one line:
#   region.yaml: 100 of 100 ups passed
#
#   sudo scripts/soak-up.sh [-n N] [-t FILE]      (defaults: 100, topologies/region.yaml)
#   sudo LABCTL=/tmp/me/labctl scripts/soak-up.sh -n 30 -t topologies/double11.yaml
#
# Builds nothing: it runs bin/labctl (make build) or $LABCTL. It refuses to
# start if the file's lab is already up (it is not its own to down), and
# downs the lab on the way out, also on failure or Ctrl-C. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

n=100
topo=topologies/region.yaml
die() {
	echo "soak-up.sh: $*" >&2
	exit 2
}
while getopts "n:t:h" o; do
	case $o in
	n) n=$OPTARG ;;
	t) topo=$OPTARG ;;
	*)
		sed -n '2,13p' "$0" >&2
		exit 2
		;;
	esac
done
[[ $n =~ ^[1-9][0-9]*$ ]] || die "-n $n: want a positive number"
[ -r "$topo" ] || die "$topo: not readable"
[ "$(id -u)" -eq 0 ] || die "needs root (sudo $0)"
labctl=${LABCTL:-bin/labctl}
[ -x "$labctl" ] || die "$labctl: not executable (make build, or set LABCTL)"
lab=$(awk '/^name:/ {print $2; exit}' "$topo")
[ -n "$lab" ] || die "$topo: no name: line"
if "$labctl" status 2>/dev/null | awk 'NR > 1 {print $1}' | grep -qx -- "$lab"; then
	die "lab $lab is already up: down it first (labctl down $lab)"
fi

tmp=$(mktemp -d)
mine= # set while a lab of ours may exist
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$mine" ]; then
		"$labctl" down "$lab" >/dev/null 2>&1 || echo "soak-up.sh: labctl down $lab failed" >&2
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

name=$(basename "$topo")
passed=0
for i in $(seq "$n"); do
	mine=1
	if ! "$labctl" up --retain -t "$topo" >"$tmp/up.out" 2>&1; then
		echo "soak-up.sh: run $i of $n: labctl up -t $topo failed:" >&2
		cat "$tmp/up.out" >&2
		# "✗ + service NODE/SVC (pid N)": a service that was started and
		# failed; those never started (pid 0) only waited on one.
		sed -n 's/.*✗ + service \([^ ]*\) (pid [1-9][0-9]*).*/\1/p' "$tmp/up.out" | sort -u |
			while IFS=/ read -r node svc; do
				echo "--- last lines of labctl logs $node $svc --lab $lab:" >&2
				"$labctl" logs "$node" "$svc" --lab "$lab" 2>&1 | tail -n 30 >&2 || true
			done
		echo "$name: $passed of $n ups passed (run $i failed)"
		exit 1
	fi
	if ! "$labctl" down "$lab" >"$tmp/down.out" 2>&1; then
		echo "soak-up.sh: run $i of $n: labctl down $lab failed:" >&2
		cat "$tmp/down.out" >&2
		echo "$name: $passed of $n ups passed (down $i failed)"
		exit 1
	fi
	mine=
	passed=$i
	echo "run $i of $n: ok" >&2
done
echo "$name: $passed of $n ups passed"
