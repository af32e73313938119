#!/usr/bin/env bash
# Extra GPU checks of the fused FFN block and the LM head, to run on a lent GPU machine AFTER bench/gpu_first.sh has
# configured and built (build/gpu-tests, build/gpu-bench), from the repository root:
#
#     bash tests/kernels/gpu/gpu_extra_ffn.sh
#
# Steps (each time-boxed; the whole script stays under CF_GPU_EXTRA_BUDGET seconds, default 240):
#   sanitizers  compute-sanitizer memcheck / racecheck / synccheck on the small cases (*GpuSanitizer.*)
#   sweep       cf_bench_ffn: the stage-units variants 2 / 4 / 8 at batch 1, 8, 16 (FFN and LM head, Llama-2-7B)
#   ncu         Nsight Compute on one fused FFN call (Llama-2-7B, batch 1): DRAM throughput, occupancy, stalls
# Output: $OUT/ffn_extra.txt (default OUT=build/gpu_first_out).
set -u -o pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$ROOT" || exit 1
OUT="${OUT:-$ROOT/build/gpu_first_out}"
mkdir -p "$OUT"
LOG="$OUT/ffn_extra.txt"
BUDGET="${CF_GPU_EXTRA_BUDGET:-240}"
T0=$(date +%s)
BIN="$ROOT/build/gpu-tests/tests/kernels/cf_test_kernels_gpu"
BENCH="$ROOT/build/gpu-bench/bench/ffn/cf_bench_ffn"
export PATH="$PATH:/usr/local/cuda/bin"

left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
step() {  # name, seconds, command...
  local name="$1" secs="$2"; shift 2
  local l; l=$(left)
  [ "$l" -le 5 ] && { echo "== $name: SKIP (budget spent)"; return; }
  [ "$secs" -gt "$l" ] && secs=$l
  echo "== $name (limit ${secs}s)"
  timeout "$secs" "$@" 2>&1 | tail -40
  echo "== $name: exit ${PIPESTATUS[0]}"
}

{
  echo "git: $(git describe --always --dirty 2>/dev/null)"
  if command -v compute-sanitizer >/dev/null; then
    for tool in memcheck racecheck synccheck; do
      [ -x "$BIN" ] || { echo "NOTE: $BIN not built"; continue; }
      step "compute-sanitizer $tool" 90 compute-sanitizer --tool "$tool" --error-exitcode 99 \
        --print-limit 20 "$BIN" --gtest_filter='FfnGpuSanitizer.*:LmHeadGpuSanitizer.*' --gtest_brief=1
    done
  fi
  if [ -x "$BENCH" ]; then
    step "stage-units sweep" 90 "$BENCH" --models llama2 --batch 1,8,16 --stage-units 2,8 --no-sweep \
      --json "$OUT/bench_ffn_sweep.json"
    if command -v ncu >/dev/null; then
      step "ncu (FFN Llama-2-7B, batch 1)" 120 ncu --kernel-name regex:ffn_kernel --launch-count 1 \
        --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats \
        --section LaunchStats "$BENCH" --blocks ffn --models llama2 --batch 1 --impl fused --no-sweep --replays 1 \
        --calls 1 --json /tmp/ffn_ncu_bench.json
    fi
  fi
} 2>&1 | tee "$LOG"
