#!/usr/bin/env bash
# Extra GPU checks of the fused decoder attention block, to run on a lent GPU machine AFTER bench/gpu_first.sh has
# configured and built (build/gpu-tests, build/gpu-bench), from the repository root:
#
#     bash tests/kernels/gpu/gpu_extra_attention.sh
#
# Steps (each time-boxed; the whole script stays under CF_GPU_EXTRA_BUDGET seconds, default 240):
#   sanitizers  compute-sanitizer memcheck / racecheck / synccheck on the small cases (DecoderAttentionGpuSanitizer.*)
#   sass        instruction mix of the fused kernels (HMMA, UTMALDG, UBLKCP, LDS, local memory) from cuobjdump
#   trace       per-phase times of every CTA (DecoderAttentionGpuTrace.PhaseTimes; also part of ctest -L gpu)
#   ring        Llama-2-7B batch 1, KV 1K / 16K with rings of 6 / 9 stages (--max-stages) and 0 / all early
#               stages (--early-stages), fused only: is the depth or the start-up go barrier a factor?
#   clusters    Llama-2-7B batch 1 with clusters of 2 / 4 (one wave / two where 30 clusters of 4 fit) and Llama-3-8B
#               with clusters of 8 / 16 (--cluster-size), fused only
#   ncu         Nsight Compute on one fused call (Llama-2-7B, KV 1K, batch 1): DRAM throughput, occupancy, stalls
# Output: $OUT/da_extra.txt (default OUT=build/gpu_first_out).
set -u -o pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$ROOT" || exit 1
OUT="${OUT:-$ROOT/build/gpu_first_out}"
mkdir -p "$OUT"
LOG="$OUT/da_extra.txt"
BUDGET="${CF_GPU_EXTRA_BUDGET:-240}"
T0=$(date +%s)
BIN="$ROOT/build/gpu-tests/tests/kernels/cf_test_kernels_gpu"
BENCH="$ROOT/build/gpu-bench/bench/decoder_attention/cf_bench_decoder_attention"
LIB_OBJS="$ROOT/build/gpu-bench/src/kernels/CMakeFiles/cf_kernels.dir/decoder_attention"
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
  [ -x "$BIN" ] || echo "NOTE: $BIN not built (cmake --build --preset default --target cf_test_kernels_gpu)"
  if [ -x "$BIN" ] && command -v compute-sanitizer >/dev/null; then
    for tool in memcheck racecheck synccheck; do
      step "compute-sanitizer $tool" 90 compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 20 \
        "$BIN" --gtest_filter='DecoderAttentionGpuSanitizer.*' --gtest_brief=1
    done
  fi
  if command -v cuobjdump >/dev/null && [ -d "$LIB_OBJS" ]; then
    for obj in "$LIB_OBJS"/instantiations_f16.cu.o; do
      echo "== sass instruction mix per kernel: $obj"
      cuobjdump -sass "$obj" | awk '
        /Function :/ { name = $3 }
        /^ +\/\*[0-9a-f]+\*\// { op = $2; if (op ~ /^@/) op = $3; sub(/\..*/, "", op); sub(/;$/, "", op);
                                 if (op ~ /^(HMMA|UTMALDG|UBLKCP|LDS|STS|LDG|STG|LDL|STL|SYNCS|BAR|MUFU|SHFL)$/) n[name " " op]++ }
        END { for (k in n) print k, n[k] }' | sort | head -80
    done
  fi
  if [ -x "$BIN" ]; then
    step "phase trace" 60 "$BIN" --gtest_filter='DecoderAttentionGpuTrace.*'
  fi
  if [ -x "$BENCH" ]; then
    for knob in "--max-stages 6" "--max-stages 9" "--early-stages 0" "--early-stages 16"; do
      # shellcheck disable=SC2086
      step "Llama-2-7B with $knob" 40 "$BENCH" --models llama2 --kv 1024,16384 --batch 1 --impl fused $knob \
        --no-breakdown --json "/tmp/da_${knob// /_}.json"
    done
    for n in 2 4; do
      step "Llama-2-7B with clusters of $n" 40 "$BENCH" --models llama2 --kv 1024,16384 --batch 1 --impl fused \
        --cluster-size $n --no-breakdown --json "/tmp/da_llama2_cluster$n.json"
    done
    for n in 8 16; do
      step "Llama-3-8B with clusters of $n" 40 "$BENCH" --models llama3 --kv 1024,16384 --batch 1 --impl fused \
        --cluster-size $n --no-breakdown --json "/tmp/da_cluster$n.json"
    done
  fi
  if [ -x "$BENCH" ] && command -v ncu >/dev/null; then
    step "ncu (Llama-2-7B, KV 1K, batch 1)" 150 ncu --kernel-name regex:decoder_attention --launch-count 1 \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats \
      --section SchedulerStats \
      --section LaunchStats "$BENCH" --models llama2 --kv 1024 --batch 1 --impl fused --replays 1 --calls 1 \
      --no-breakdown --json /tmp/da_ncu_bench.json
  fi
} 2>&1 | tee "$LOG"
