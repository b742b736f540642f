#!/usr/bin/env bash
# flowd's benchmarks, each printing a table of figures next to its target. The end-to-end
# AF_PACKET one needs root and trafgen (netsniff-ng, installed here); the tc one runs in
# the VM (see tests/vm/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v trafgen >/dev/null || { apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q netsniff-ng >/dev/null || true; }
# The EVPN convergence bench runs FRR (zebra, bgpd) in namespaces.
command -v vtysh >/dev/null || { apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q frr >/dev/null || true; }
# The TCP table (benches/tcp.rs) needs iperf3 and compares with Open vSwitch's userspace
# datapath, which it starts by hand in a private run directory: the package's system
# service is kept from starting (policy-rc.d) and never used. Without OVS that column is
# skipped with a message.
command -v iperf3 >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q iperf3 >/dev/null || true
if ! command -v ovs-vswitchd >/dev/null; then
  norc=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; norc=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q openvswitch-switch >/dev/null || true
  [ -z "$norc" ] || rm -f /usr/sbin/policy-rc.d
fi
# benches/scale.rs drives the real daemon to FLOWD_SCALE_FLOWS flows (default 1,000,000:
# several GB of RSS and some minutes; set it lower on a small machine).
for b in cache datapath slowpath fibwatch offload_sim afpacket evpn tcp scale; do
  if grep -q "name = \"$b\"" Cargo.toml; then
    cargo bench --quiet --bench "$b"
  fi
done
