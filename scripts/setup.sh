#!/usr/bin/env bash
# Installs what labctl needs on Debian/Ubuntu. Idempotent: installs only what
# is missing, runs `apt-get update` at most once and only if something is.
#   scripts/setup.sh [--with-mininet]
set -euo pipefail

die() {
	echo "setup.sh: $*" >&2
	exit 1
}
trap 'echo "setup.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

with_mininet=0
for arg in "$@"; do
	case "$arg" in
	--with-mininet) with_mininet=1 ;;
	-h | --help)
		echo "usage: $0 [--with-mininet]"
		exit 0
		;;
	*) die "unknown option: $arg (usage: $0 [--with-mininet])" ;;
	esac
done

script="$(readlink -f "${BASH_SOURCE[0]}")"
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null || die "must be run as root (and sudo is not installed)"
	echo "re-running as root via sudo"
	# env PATH=...: sudo's secure_path would hide a Go installed by the user.
	exec sudo env "PATH=$PATH" bash "$script" "$@"
fi

command -v apt-get >/dev/null || die "needs apt-get (Debian or Ubuntu)"
export DEBIAN_FRONTEND=noninteractive
# Wait for the dpkg lock instead of failing: a fresh VM runs unattended
# upgrades at boot.
apt_get() { apt-get -o DPkg::Lock::Timeout=300 "$@"; }

# go.mod beside the script's parent directory gives the Go version needed.
root="$(dirname "$(dirname "$script")")"
gomod="$root/go.mod"
[ -f "$gomod" ] || gomod="$PWD/go.mod"
[ -f "$gomod" ] || die "cannot find go.mod (run from the labctl checkout)"
go_want="$(awk '$1 == "go" { print $2; exit }' "$gomod")"
[ -n "$go_want" ] || die "no go directive in $gomod"

packages=(iproute2 tcpdump ethtool iptables nftables conntrack iputils-ping curl
	openvswitch-switch iperf3 jq traceroute dnsutils
	haproxy etcd-server redis-server postgresql
	sudo make ca-certificates git bash-completion)
# Servers that labctl runs inside lab namespaces; their packages would also
# start (and enable) them on the host, which the lab never wants.
lab_servers=(haproxy etcd-server redis-server postgresql)
declare -A unit_of=([haproxy]=haproxy [etcd-server]=etcd [redis-server]=redis-server [postgresql]=postgresql)
# Mininet for the benchmark comparison; its lxbr switch needs brctl, and bc does the sums.
[ "$with_mininet" = 1 ] && packages+=(mininet bridge-utils bc)

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

updated=0
apt_update() {
	[ "$updated" = 1 ] && return 0
	apt_get update -qq || die "apt-get update failed"
	updated=1
}

# version_ge A B: A >= B, comparing dotted versions.
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

missing=()
for p in "${packages[@]}"; do
	if installed "$p"; then
		echo "✓ $p already installed"
	else
		missing+=("$p")
	fi
done
# The servers labctl runs inside lab namespaces go in their own apt-get
# run, under a policy-rc.d that keeps their packages from starting them on
# the host (an existing policy-rc.d is left as it is); everything else is
# installed normally.
is_lab_server() {
	local s
	for s in "${lab_servers[@]}"; do [ "$1" = "$s" ] && return 0; done
	return 1
}
plain=() servers=()
for p in "${missing[@]}"; do
	if is_lab_server "$p"; then servers+=("$p"); else plain+=("$p"); fi
done
if [ "${#plain[@]}" -gt 0 ]; then
	apt_update
	for p in "${plain[@]}"; do echo "+ installing $p"; done
	apt_get install -y -qq --no-install-recommends "${plain[@]}" >/dev/null ||
		die "apt-get install ${plain[*]} failed"
fi
if [ "${#servers[@]}" -gt 0 ]; then
	apt_update
	for p in "${servers[@]}"; do echo "+ installing $p (not started on the host)"; done
	policy=/usr/sbin/policy-rc.d
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy"
		trap 'rm -f "$policy"' EXIT
	fi
	apt_get install -y -qq --no-install-recommends "${servers[@]}" >/dev/null ||
		die "apt-get install ${servers[*]} failed"
	# ... nor at the next boot.
	if [ -d /run/systemd/system ]; then
		for p in "${servers[@]}"; do
			echo "+ systemctl disable ${unit_of[$p]} (labctl runs it inside lab namespaces only)"
			systemctl disable --now "${unit_of[$p]}" >/dev/null 2>&1 || true
		done
	fi
fi

# Go: the go in PATH, else /usr/local/go (the official tarball's place).
go_have=""
go_ok() {
	local g
	g="$(command -v go || true)"
	[ -n "$g" ] || return 1
	go_have="$("$g" version 2>/dev/null | sed -n 's/^go version go\([0-9][0-9.]*\).*/\1/p')"
	[ -n "$go_have" ] || return 1
	version_ge "$go_have" "$go_want"
}
if ! go_ok && [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
fi
if go_ok; then
	echo "✓ go $go_have already installed ($(command -v go))"
else
	# Debian's golang-go is used only if new enough (bookworm has 1.19).
	apt_update
	cand="$(apt-cache policy golang-go 2>/dev/null | awk '/Candidate:/ { print $2 }')"
	[ "$cand" = "(none)" ] && cand=""
	cand="${cand#*:}"      # drop the epoch: 2:1.22~2 -> 1.22~2
	cand="${cand%%[~+-]*}" # keep the upstream part: 1.22
	if [ -n "$cand" ] && version_ge "$cand" "$(echo "$go_want" | cut -d. -f1,2)"; then
		echo "+ installing golang-go ($cand)"
		apt_get install -y -qq --no-install-recommends golang-go >/dev/null ||
			die "apt-get install golang-go failed"
	fi
	if ! go_ok; then
		arch="$(dpkg --print-architecture)"
		if [ -n "$cand" ]; then
			why="the golang-go package ($cand) is too old"
		else
			why="there is no golang-go package"
		fi
		cat >&2 <<EOF
✗ Go >= $go_want is needed${go_have:+ (found $go_have)}, and $why.
  Install the official release, then re-run this script:
    curl -fsSLO https://go.dev/dl/go$go_want.linux-$arch.tar.gz
    rm -rf /usr/local/go && tar -C /usr/local -xzf go$go_want.linux-$arch.tar.gz
    export PATH=/usr/local/go/bin:\$PATH
EOF
		exit 1
	fi
fi

# Login shells find /usr/local/go/bin too (the official tarball's place).
if [ -x /usr/local/go/bin/go ]; then
	prof=/etc/profile.d/labctl-go.sh
	if [ -f "$prof" ]; then
		echo "✓ /usr/local/go/bin already on PATH ($prof)"
	else
		echo "+ adding /usr/local/go/bin to PATH ($prof)"
		# shellcheck disable=SC2016 # expanded at login, not now
		printf '%s\n' 'case ":$PATH:" in *:/usr/local/go/bin:*) ;; *) PATH="/usr/local/go/bin:$PATH" ;; esac' >"$prof" ||
			die "cannot write $prof"
	fi
fi
