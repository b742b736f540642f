#!/usr/bin/env bash
# flowd's full test suite: the command README.md names and .ci/run calls.
# Installs what it needs (Debian packages), then runs: format and lint checks, every
# host test (unit, property, and integration tests in network namespaces: needs root),
# the fuzz target's build, and the VM suite (real tc flower under Debian's kernel, in
# one boot of ../shared/lab/vm-run).
#
#   scripts/test.sh            # everything
#   FLOWD_SKIP_VM=1 scripts/test.sh   # host only (the VM suite takes a few minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
step() { printf '\n=== %s (t=%ds)\n' "$*" $((SECONDS - start)); }

need=()
for pair in ip:iproute2 ping:iputils-ping tcpdump:tcpdump ethtool:ethtool vtysh:frr; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if [ -z "${FLOWD_SKIP_VM:-}" ]; then
  [ -e /bin/busybox ] || [ -e /usr/bin/busybox ] || need+=(busybox-static)
fi
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
[ "$(id -u)" = 0 ] || { echo "scripts/test.sh: the network-namespace tests need root" >&2; exit 2; }
# The EVPN test (tests/evpn_netns.rs) runs FRR's zebra and bgpd per namespace: here it
# must run, not skip.
export FLOWD_REQUIRE_FRR=1
# A one-shot build gains nothing from incremental state, which doubles the disk the
# build takes.
export CARGO_INCREMENTAL=0

step "disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free where the build goes"
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "cargo test (host: unit, property, netns integration)"
cargo test --workspace 2>&1 | tee target/host-tests.log | grep -E '^(test result|running|error|failures:|---- )|FAILED|panicked' || true
if grep -qE 'FAILED|^error' target/host-tests.log || ! grep -q '^test result' target/host-tests.log; then
  echo "host tests failed: see target/host-tests.log" >&2
  grep -A30 '^failures:' target/host-tests.log | head -80 >&2 || true
  exit 1
fi
step "fuzz target builds"
cargo check --quiet --manifest-path fuzz/Cargo.toml --bins

if [ -z "${FLOWD_SKIP_VM:-}" ]; then
  step "VM suite: real tc flower under Debian's kernel, one boot"
  vm_run=../shared/lab/vm-run
  [ -x "$vm_run" ] || { echo "missing $vm_run (the VM runner shipped beside the repository)" >&2; exit 1; }
  # The daemon the VM tests start is the release build: what operators run, and what
  # the failover timings are quoted for (the test binaries themselves are debug).
  cargo build --quiet --release --bin flowd
  vm_out=$(mktemp -d /tmp/flowd-vm.XXXXXX)
  if ! "$vm_run" --rw "$vm_out" -- bash "$PWD/tests/vm/run-all.sh" "$vm_out" release | tee target/vm-tests.log; then
    echo "VM suite failed: logs in $vm_out" >&2
    exit 1
  fi
  grep -q ' passed, 0 failed' target/vm-tests.log || { echo "VM suite did not report: logs in $vm_out" >&2; exit 1; }
  cat "$vm_out/failover.txt" 2>/dev/null || true
  rm -rf "$vm_out"   # kept only when something failed
fi
passed=$(grep -oE '^test result: ok\. [0-9]+ passed' target/host-tests.log | awk '{s+=$4} END {print s+0}')
step "done"
echo "host: ${passed} passed, 0 failed"
