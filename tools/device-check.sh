#!/usr/bin/env bash
# A short lent-GPU check, after tools/device-train.sh (or without it): the
# kernel tests against their CPU references on the real adapter, then the
# whole networks with the default kernels, the split forward conv and the
# staged weight gradient, in alternating rounds (the ratio within one run
# is the measurement).
#
# Prepared here (the device machine has no Rust toolchain):
#   cargo build --release && cargo test --no-run --test ops_table --test ops_conv3d --test ops_variants --test ops_loss_optim --test model_step
#   bash tools/device-check.sh --kit     (copies the stripped binaries into runs/device-check)
# Run there:  bash tools/device-check.sh   with carry ["runs/device-check", ".gl"], timeout_s 300
# (CHECK_S bounds each test binary, 45 s; the whole run took 49 s on an H200, 2026-12-04, with
# two of the three variants below.)
set -uo pipefail
cd "$(dirname "$0")/.."
kit=runs/device-check
if [ "${1:-}" = --kit ]; then
  rm -rf "$kit"
  mkdir -p "$kit/tests"
  strip -o "$kit/qcanet-gpu" target/release/qcanet-gpu
  for t in ops_table ops_conv3d ops_variants ops_loss_optim model_step; do
    bin=$(ls -t target/debug/deps/"$t"-* 2>/dev/null | grep -v '\.d$' | head -1)
    [ -n "$bin" ] || { echo "error: no test binary for $t (cargo test --no-run --test $t)" >&2; exit 1; }
    strip -o "$kit/tests/$t" "$bin"
  done
  du -sh "$kit"
  exit 0
fi
out=${OUT:?OUT must name a folder for the results (the device tool sets it)}
exec > >(tee -a "$out/check.log") 2>&1
for f in .gl/*.deb; do [ -f "$f" ] && dpkg -x "$f" / && ldconfig; done
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ] && export VK_DRIVER_FILES=$icd
t0=$(date +%s)
stamp() { echo "== $(($(date +%s) - t0)) s: $*"; }
q=$kit/qcanet-gpu
"$q" devices 2>&1 | head -3
for t in "$kit"/tests/*; do
  stamp "test $(basename "$t") (cooperative matrices enabled: their cases run too)"
  QCANET_TEST_BIN=$PWD/$q QCANET_COOPERATIVE_MATRIX=1 timeout "${CHECK_S:-45}" "$t" --test-threads 4 > "$out/test-$(basename "$t").log" 2>&1
  echo "exit $?"
  grep -E '^test result|FAILED|panicked|failed|not run' "$out/test-$(basename "$t").log" | head -20
done
net() { # label, then global options
  local label=$1
  shift
  stamp "bench --only net: $label"
  timeout 40 "$q" "$@" bench --only net --repeats 5 2>&1 | grep -E '^(Nsn|Ndn) |train step by kernel|kernel variants|[Ee]rror'
}
# The split forward conv (forced only, never run on a GPU) against the
# default. Its rule, written before any run (2026-12-04, ninth session; the
# same in tools/device-train.sh): it becomes GPU adapters' default if, in
# both rounds, the paper NDN's forward and training step are each faster
# with it than the default's beside it, the NSN's are not slower by more
# than 1 ms, and the tests above pass.
# The staged weight gradient (conv3d_weight=f32-32-staged: input rows
# staged in workgroup memory, read by consecutive lanes; forced only, never
# run on a GPU) against the default f32-32-wide. Its rule, written before
# any run (2026-12-05, tenth session): it becomes GPU adapters' default
# weight gradient if, in both rounds, the NSN's and the paper NDN's
# training steps are each faster with it than the default's beside it, and
# the tests above pass (the forward passes do not use it).
for round in 1 2; do
  echo "-- round $round"
  net "default"
  net "conv3d=f32-8x8-split" --gpu-kernel conv3d=f32-8x8-split
  net "conv3d_weight=f32-32-staged" --gpu-kernel conv3d_weight=f32-32-staged
done
stamp done
