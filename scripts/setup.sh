#!/usr/bin/env bash
# Bring a fresh Debian machine to the point where itm builds and runs: system packages, npm
# dependencies, the native addon, the BPF objects, the TypeScript, and a bpffs for itm's pins.
# Idempotent: each step is skipped when its result is already there and up to date.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  say "itm loads eBPF programs and creates network namespaces: run this as root (sudo $0)"
  exit 1
fi

# Debian packages: the BPF toolchain, the libraries the addon links against, the tools the
# tests and the demo use on the wire, and etcd (server and etcdctl), which itmd can follow
# (itmd --etcd) and which the fleet tests start in a namespace of their own.
PKGS=(clang llvm libbpf-dev libxdp-dev bpftool iproute2 pkg-config libelf-dev zlib1g-dev libmnl-dev
      make g++ python3 tcpdump ethtool iputils-ping util-linux clang-format etcd-server etcd-client)
# --bench: what the benchmarks compare itm with (nftables, iptables, NFQUEUE) and iperf3 for TCP
if [ "${1:-}" = --bench ]; then
  PKGS+=(nftables iptables libnetfilter-queue-dev iperf3)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

pkg-config --atleast-version=1.0 libbpf || { say "libbpf >= 1.0 is needed: apt-get install libbpf-dev"; exit 1; }

# npm dependencies: reinstall only when the lock file changed.
stamp=node_modules/.itm-lock-stamp
lock=package-lock.json
if [ ! -f "$stamp" ] || ! cmp -s "$lock" "$stamp"; then
  say "installing npm dependencies"
  if [ -f "$lock" ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
  cp "$lock" "$stamp"
fi

say "building BPF objects"
make -s -C bpf
say "building the native addon"
if [ ! -f build/Release/itm_native.node ] || [ -n "$(find native binding.gyp -newer build/Release/itm_native.node 2>/dev/null | head -1)" ]; then
  npx --no-install node-gyp rebuild --silent >/dev/null
fi
say "compiling TypeScript"
npx --no-install tsc -p tsconfig.json
chmod +x dist/src/cli/itmctl.js  # the `itmctl` bin of package.json

# itm pins its programs and maps under /run/itm/bpf: a bpffs outside /sys stays visible under
# `ip netns exec`, which mounts a fresh /sys (docs/kernel.md).
mkdir -p /run/itm/bpf
if ! mountpoint -q /run/itm/bpf; then mount -t bpf bpf /run/itm/bpf; fi
say "ready"
