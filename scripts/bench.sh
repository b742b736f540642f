#!/usr/bin/env bash
# flowd's benchmarks, each printing a table of figures next to its target. The end-to-end
# AF_PACKET one needs root and trafgen (netsniff-ng, installed here); the tc one runs in
# the VM (see tests/vm/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v trafgen >/dev/null || { apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q netsniff-ng >/dev/null || true; }
# The EVPN convergence bench runs FRR (zebra, bgpd) in namespaces.
command -v vtysh >/dev/null || { apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q frr >/dev/null || true; }
for b in cache datapath slowpath fibwatch offload_sim afpacket evpn; do
  if grep -q "name = \"$b\"" Cargo.toml; then
    cargo bench --quiet --bench "$b"
  fi
done
