#!/usr/bin/env bash
# flowd's main job: `flowd lab`, a whole hypervisor in network namespaces (2 VFs on
# VNIs 16 and 17, 2 uplinks toward a remote hypervisor running kernel vxlan devices),
# flowd running on it, traffic, dump-flows and tunnels, a route change from uplink 1 to
# uplink 2 under a steady ping (the migration and the packets lost), an MTU refusal,
# then teardown (also on Ctrl-C or failure).
#
#   scripts/lab.sh          # on this kernel: tc flower if it has cls_flower, else the simulated eswitch
#   scripts/lab.sh --vm     # inside a VM with Debian's kernel, so real tc flower rules carry the traffic
#   scripts/lab.sh --evpn   # three hypervisors joined by BGP EVPN through FRR (flowd on two)
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for pair in ip:iproute2 ping:iputils-ping tcpdump:tcpdump ethtool:ethtool; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if [[ " $* " == *" --vm "* ]]; then
  [ -e /bin/busybox ] || [ -e /usr/bin/busybox ] || need+=(busybox-static)
fi
if [[ " $* " == *" --evpn "* ]]; then
  command -v vtysh >/dev/null || need+=(frr)
fi
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
[ "$(id -u)" = 0 ] || { echo "scripts/lab.sh: needs root (it builds network namespaces)" >&2; exit 2; }
cargo build --quiet --bin flowd --bin flowctl
exec ./target/debug/flowd lab "$@"
