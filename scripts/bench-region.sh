#!/usr/bin/env bash
# Measures the cloud region (topologies/region.yaml) in one run and prints
# markdown tables:
#   1. up and down time: CYCLES cycles of `labctl up -t` / `labctl down`,
#      with PAUSE seconds before each up (the kernel frees the last cycle's
#      namespaces asynchronously), min/median/max of each;
#   2. VM-to-VM TCP throughput over VXLAN (iperf3 -t SECS, shop-web-1 on
#      az1-h1 -> shop-app-1 on az1-h2, through both hosts' userspace
#      ovs-vswitchd) against the same iperf3 run on a plain veth between two
#      throwaway namespaces (rb-veth-a, rb-veth-b, 10.99.0.0/24), their ratio,
#      and the CPU each host's ovs-vswitchd used during the VXLAN run;
#   3. the resident memory (VmRSS) of each host's ovs-vswitchd and ovsdb-server.
#
#   sudo scripts/bench-region.sh
#   sudo CYCLES=5 PAUSE=10 SECS=5 scripts/bench-region.sh
#
# The lab is a copy of region.yaml named rbench (never `region`, so a region
# lab that is up is left alone). The copy, the veth namespaces and the lab
# are removed at the end, also on failure or Ctrl-C. LABCTL=path uses that
# binary instead of building one into a temporary directory.
# Needs root, Go (unless LABCTL is set), Open vSwitch, iperf3 and jq:
#   apt-get install -y iperf3 jq
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

cycles=${CYCLES:-5}
pause=${PAUSE:-10}
secs=${SECS:-5}
lab=rbench
va=rb-veth-a
vb=rb-veth-b
port=5201

die() {
	echo "bench-region.sh: $*" >&2
	exit 1
}
[ "$(id -u)" -eq 0 ] || die "needs root (sudo $0)"
for p in ip iperf3 jq ovs-vswitchd ovs-vsctl timeout; do
	command -v "$p" >/dev/null || die "needs $p (apt-get install -y iperf3 jq openvswitch-switch)"
done

tmp=$(mktemp -d)
server=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
	"$labctl" down "$lab" >/dev/null 2>&1 || echo "bench-region.sh: labctl down $lab failed" >&2
	ip netns del "$va" 2>/dev/null || true
	ip netns del "$vb" 2>/dev/null || true
	rm -rf "$tmp"
	exit "$rc"
}
labctl=${LABCTL:-$tmp/labctl}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ -z "${LABCTL:-}" ]; then
	go build -o "$labctl" ./cmd/labctl
fi

topo=$tmp/$lab.yaml
sed '0,/^name:/s/^name:.*/name: '"$lab"'/' topologies/region.yaml >"$topo"
[ "$(awk '/^name:/ {print $2; exit}' "$topo")" = "$lab" ] || die "could not rename the copy to $lab"
# A lab or namespaces left by an interrupted earlier run.
"$labctl" down "$lab" >/dev/null
ip netns del "$va" 2>/dev/null || true
ip netns del "$vb" 2>/dev/null || true

now() { date +%s%N; }
# min median max of the numbers (ns) on stdin, in seconds
stats() {
	sort -n | awk '{v[NR] = $1}
		END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			printf "%.3f s | %.3f s | %.3f s", v[1] / 1e9, m / 1e9, v[NR] / 1e9}'
}
up() {
	"$labctl" up -t "$topo" --format json >"$tmp/up.log" 2>&1 || {
		cat "$tmp/up.log" >&2
		die "labctl up failed"
	}
}
down() {
	"$labctl" down "$lab" >"$tmp/down.log" 2>&1 || {
		cat "$tmp/down.log" >&2
		die "labctl down failed"
	}
}

machine="$(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), kernel $(uname -r), $(ovs-vswitchd --version | head -1), $(iperf3 --version | head -1 | cut -d' ' -f1-2)"
load="$(cut -d' ' -f1-3 /proc/loadavg)"
others="$("$labctl" status 2>/dev/null | awk 'NR > 1 {printf "%s%s", s, $1; s = ", "}')"

# ---- 1. up and down ----
: >"$tmp/up.ns"
: >"$tmp/down.ns"
for i in $(seq "$cycles"); do
	sleep "$pause"
	t0=$(now)
	up
	t1=$(now)
	down
	t2=$(now)
	echo $((t1 - t0)) >>"$tmp/up.ns"
	echo $((t2 - t1)) >>"$tmp/down.ns"
	echo "cycle $i/$cycles: up $(((t1 - t0) / 1000000)) ms, down $(((t2 - t1) / 1000000)) ms" >&2
done
paste -d' ' "$tmp/up.ns" "$tmp/down.ns" | awk '{print $1 + $2}' >"$tmp/both.ns"

# ---- the lab up once more for traffic and memory ----
sleep "$pause"
up
svc=/run/labctl/$lab/services
hosts=$(jq -r .node "$svc"/*.ovs-vswitchd.json | sort)
pid() { jq -r .pid "$svc/$1.$2.json"; }
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; } # kB
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; } # utime+stime
declare -A vs_pid db_pid rss0 cpu0 cpu1 datapath
for h in $hosts; do
	vs_pid[$h]=$(pid "$h" ovs-vswitchd)
	db_pid[$h]=$(pid "$h" ovsdb-server)
	[ "$(cat "/proc/${vs_pid[$h]}/comm")" = ovs-vswitchd ] || die "$h: pid ${vs_pid[$h]} is not ovs-vswitchd"
	[ "$(cat "/proc/${db_pid[$h]}/comm")" = ovsdb-server ] || die "$h: pid ${db_pid[$h]} is not ovsdb-server"
	rss0[$h]=$(rss "${vs_pid[$h]}")
	datapath[$h]=$(ip netns exec "$(jq -r .netns "$svc/$h.ovs-vswitchd.json")" \
		ovs-vsctl --timeout=5 --db="unix:/run/labctl/$lab/ovs/$h/db.sock" get bridge br-int datapath_type | tr -d '"')
done

# iperf3 server in $1 (a command prefix), client in $2 to address $3; JSON to $4
iperf() {
	local srv=$1 cli=$2 addr=$3 out=$4
	$srv timeout $((secs + 30)) iperf3 -s -1 -p "$port" >"$tmp/server.log" 2>&1 &
	server=$!
	for _ in $(seq 50); do
		$srv ss -Hltn "sport = :$port" 2>/dev/null | grep -q . && break
		sleep 0.1
	done
	$cli timeout $((secs + 20)) iperf3 -c "$addr" -p "$port" -t "$secs" -J >"$out" || {
		cat "$out" "$tmp/server.log" >&2
		die "iperf3 $cli -> $addr failed"
	}
	wait "$server" || true
	server=
}
bps() { jq -r .end.sum_received.bits_per_second "$1"; }
retr() { jq -r '.end.sum_sent.retransmits // "-"' "$1"; }

# ---- 2a. VM to VM over VXLAN ----
hz=$(getconf CLK_TCK)
for h in $hosts; do cpu0[$h]=$(ticks "${vs_pid[$h]}"); done
c0=$(now)
iperf "$labctl exec --lab $lab shop-app-1 --" "$labctl exec --lab $lab shop-web-1 --" 10.10.1.11 "$tmp/vxlan.json"
c1=$(now)
for h in $hosts; do cpu1[$h]=$(ticks "${vs_pid[$h]}"); done
mtu=$("$labctl" exec --lab "$lab" shop-web-1 -- cat /sys/class/net/eth0/mtu)

# ---- 2b. the same on a plain veth, same MTU ----
ip netns add "$va"
ip netns add "$vb"
ip -n "$va" link add eth0 mtu "$mtu" type veth peer name eth0 mtu "$mtu" netns "$vb"
ip -n "$va" addr add 10.99.0.1/24 dev eth0
ip -n "$vb" addr add 10.99.0.2/24 dev eth0
for n in "$va" "$vb"; do ip -n "$n" link set lo up; ip -n "$n" link set eth0 up; done
iperf "ip netns exec $vb" "ip netns exec $va" 10.99.0.2 "$tmp/veth.json"
ip netns del "$va"
ip netns del "$vb"

# ---- 3. memory ----
declare -A rss1 dbrss
for h in $hosts; do
	rss1[$h]=$(rss "${vs_pid[$h]}")
	dbrss[$h]=$(rss "${db_pid[$h]}")
done

# ---- report ----
vx=$(bps "$tmp/vxlan.json")
ve=$(bps "$tmp/veth.json")
gbit() { awk -v b="$1" 'BEGIN {printf "%.2f Gbit/s", b / 1e9}'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }
pct() { awk -v d="$1" -v hz="$hz" -v ns="$2" 'BEGIN {printf "%.0f %%", 100 * d / hz / (ns / 1e9)}'; }

echo
echo "machine: $machine; load average at start: $load; labs up at start: ${others:-none}"
echo
echo "| $lab (copy of topologies/region.yaml), $cycles cycles, ${pause} s pause before each up | min | median | max |"
echo "|---|---|---|---|"
echo "| \`labctl up -t $lab.yaml\` | $(stats <"$tmp/up.ns") |"
echo "| \`labctl down $lab\` | $(stats <"$tmp/down.ns") |"
echo "| up + down | $(stats <"$tmp/both.ns") |"
echo
echo "| TCP, iperf3 -t $secs, one stream, MTU $mtu | received | retransmits |"
echo "|---|---|---|"
echo "| VM to VM over VXLAN: shop-web-1 (az1-h1) -> shop-app-1 (az1-h2) | $(gbit "$vx") | $(retr "$tmp/vxlan.json") |"
echo "| plain veth between two namespaces: $va -> $vb | $(gbit "$ve") | $(retr "$tmp/veth.json") |"
echo "| **ratio VXLAN / veth** | **$(awk -v a="$vx" -v b="$ve" 'BEGIN {printf "%.3f", a / b}')** | |"
echo
echo "| ovs-host | datapath | ovs-vswitchd CPU during the VXLAN run ($(awk -v ns=$((c1 - c0)) 'BEGIN {printf "%.1f", ns / 1e9}') s), % of one core | ovs-vswitchd RSS after up | ovs-vswitchd RSS after traffic | ovsdb-server RSS |"
echo "|---|---|---|---|---|---|"
n=0 s0=0 s1=0 sd=0
for h in $hosts; do
	d=$((${cpu1[$h]} - ${cpu0[$h]}))
	echo "| $h | ${datapath[$h]} | $(pct "$d" $((c1 - c0))) | $(mib "${rss0[$h]}") | $(mib "${rss1[$h]}") | $(mib "${dbrss[$h]}") |"
	n=$((n + 1)) s0=$((s0 + ${rss0[$h]})) s1=$((s1 + ${rss1[$h]})) sd=$((sd + ${dbrss[$h]}))
done
echo "| **mean** | | | $(mib $((s0 / n))) | $(mib $((s1 / n))) | $(mib $((sd / n))) |"

down
