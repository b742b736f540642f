#!/usr/bin/env bash
# Runs the whole VM suite in one boot. Called as
#   shared/lab/vm-run --rw OUTDIR -- bash tests/vm/run-all.sh OUTDIR [release]
# after `cargo test --no-run` built the test executables on the host (the VM sees the
# tree read-only). With `release`, the tests that start the daemon, and the lab, run
# target/release/flowd (build it first: `cargo build --release --bin flowd`): what
# operators run, and what the failover figures are quoted for. Prints one PASS/FAIL line per test binary and "N passed, M failed";
# exits non-zero when anything failed. Logs go to OUTDIR/<name>.log.
#
# Optional: FLOWD_VM_BENCH=1 also runs the tc benchmark and the TCP table's tc column
# (build them first with `cargo bench --bench offload_tc --bench tcp --no-run`),
# FLOWD_VM_BENCH_SIZES="10000 50000", FLOWD_VM_BENCH_COLUMNS=flowd-tc,flowd,kernel,
# FLOWD_VM_BENCH_REPS=1.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-/tmp/flowd-vm}
mkdir -p "$out"
export FLOWD_VM=1 FLOWD_VM_OUT="$out"
export RUST_BACKTRACE=1
for m in cls_flower act_tunnel_key act_mirred act_gact act_vlan act_skbedit vxlan veth xfrm_user esp4 esp6 xfrm4_tunnel; do modprobe -q "$m" || true; done
# ip netns needs a writable /run/netns; the VM's root is read-only.
mkdir -p /run/netns 2>/dev/null || mount -t tmpfs tmpfs /run
target=${CARGO_TARGET_DIR:-$root/target}
flowd=$target/debug/flowd
if [ "${2:-}" = release ]; then
  flowd=$target/release/flowd
  export FLOWD_EXE=$flowd
fi
pass=0; fail=0
newest() { # newest executable target/<profile>/deps/NAME-<hash>
  ls -t "$target/$1/deps/$2"-* 2>/dev/null | while read -r f; do
    case "$f" in *.d|*.rlib|*.rmeta|*.o) continue ;; esac
    [ -x "$f" ] && { echo "$f"; break; }
  done
}
run() { # name command...
  local name=$1; shift
  local t0=$SECONDS
  if "$@" >"$out/$name.log" 2>&1; then
    pass=$((pass + 1)); echo "PASS $name ($((SECONDS - t0)) s)"
  else
    fail=$((fail + 1)); echo "FAIL $name ($((SECONDS - t0)) s)"; tail -n 40 "$out/$name.log" | sed 's/^/    /'
  fi
}
while read -r name; do
  case "$name" in ''|'#'*) continue ;; esac
  bin=$(newest debug "$name")
  if [ -z "$bin" ]; then
    fail=$((fail + 1)); echo "FAIL $name (not built: run cargo test --no-run first)"; continue
  fi
  run "$name" "$bin" --test-threads=1 --nocapture
done <"$here/tests.list"
# The lab itself, with real tc flower: flowd's main job must work where it matters.
if [ -x "$flowd" ]; then
  run flowd_lab "$flowd" lab
else
  fail=$((fail + 1)); echo "FAIL flowd_lab ($flowd not built)"
fi
if [ "${FLOWD_VM_BENCH:-0}" = 1 ]; then
  bin=$(newest release offload_tc)
  if [ -n "$bin" ]; then
    run offload_tc_bench "$bin" ${FLOWD_VM_BENCH_SIZES:-10000 50000}
    cat "$out/offload_tc_bench.log"
  else
    fail=$((fail + 1)); echo "FAIL offload_tc_bench (not built: cargo bench --bench offload_tc --no-run)"
  fi
  # The TCP table's tc column, beside flowd's software path and the kernel's own path
  # measured in the same VM (qemu's emulation: compare within the VM only).
  bin=$(newest release tcp)
  if [ -n "$bin" ]; then
    run tcp_bench env FLOWD_BENCH_COLUMNS=${FLOWD_VM_BENCH_COLUMNS:-flowd-tc,flowd,kernel} \
      FLOWD_BENCH_REPS=${FLOWD_VM_BENCH_REPS:-1} "$bin" --bench
    cat "$out/tcp_bench.log"
  else
    fail=$((fail + 1)); echo "FAIL tcp_bench (not built: cargo bench --bench tcp --no-run)"
  fi
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
