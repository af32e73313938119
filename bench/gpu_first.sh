#!/usr/bin/env bash
# The one script for a lent GPU machine (docs/gpu-runs.md): the fused numbers first, then everything else, each step
# with its own wall-clock limit, each result in $OUT as soon as it exists (a kill keeps what is done), <= 8 files.
#
#     bash scripts/prepare_gpu_run.sh          # here: .peers/, .gpu_deps/ (GoogleTest, model, sha); prints `carry`
#     bash bench/gpu_first.sh                  # there, from the repository root (device tool: timeout_s 480)
#
# Steps, in order (limit in seconds; the whole run stays under CF_GPU_BUDGET, default 420, and later steps are
# skipped with a line saying so when it is spent):
#   facts           nvidia-smi, clocks, driver, nvcc / cmake / torch versions, git sha                          15
#   configure       build/gpu-bench (no tests: needs no GoogleTest)                                               90
#   build           cf_bench_decoder_attention only (the rest builds in the background from here on, at lower CPU
#                   priorities: the other benchmarks, and GoogleTest + build/gpu-tests with every GPU test)    300
#   smoke           the fused attention block, Llama-2-7B b1 KV 1K, against cuda-unfused, 20 ms wait budget:
#                   if it fails or hangs, every later step leaves the fused kernels out and says so               40
#   attention       attention block Llama-2-7B b1 / b16 x KV 1K / 4K / 16K, fused vs cuda-unfused -> attention.json 150
#   peer-attention  torch peer: bandwidth + attention block (b1, KV 1K / 4K / 16K)                                75
#   e2e             decode TPOT Llama-2-7B b1 x KV 1K / 4K / 16K, batch-1 plans, cuda vs cuda-unfused -> e2e.json 150
#   peer-tpot       torch peer: Llama-2-7B TPOT at 1K / 4K / 16K                                                  80
#   tests           ctest -L gpu -j4 (each case <= CF_GPU_TEST_TIMEOUT, 60 s)                                      240
#   memcheck, racecheck, synccheck   compute-sanitizer on the fused kernels' *Sanitizer* cases                    90 each
#   deepseek        DeepSeek-V2-Lite MLA (b1 / b16 x KV 1K / 4K / 16K) and MoE (b1 / b16) blocks, fused plans vs
#                   cuda-unfused -> deepseek.json                                                                  120
#   peer-mla        torch peer of the MLA block (bench/deepseek_blocks/torch_mla_peer.py), same shapes            75
#   deepseek-tests  the cuda-unfused MLA / MoE GPU tests against the reference (ctest -R Unfused(Mla|Moe))       120
#   rest-*          attention Llama-3-8B and b4, clusters of 4 (two waves) vs the plan's choice, e2e Llama-3-8B and
#                   b4 / b16, FFN + LM head, the CLI and gpu_determinism.sh, collectives
# Files in $OUT: gpu_first.txt (this log), <date>-<sha>-<h100|h200>-summary.json (bench/gpu_summary.py, rewritten
# after every step), attention.json, e2e.json, peer.json, deepseek.json, extras.tar.gz (build and test logs, ptxas
# resources, the smoke and rest JSON, peer_mla.json). Without a GPU every step after `facts` fails at once with one line, and the summary (nulls)
# is still written: `bash bench/gpu_first.sh` here is the dry run.
# Environment: OUT (default build/gpu_first_out), CF_GPU_BUDGET (s), CF_JOBS, CF_SKIP_STEPS (comma-separated step
# names), CF_GPU_WORK (scratch, default /tmp/cf_gpu_first).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
OUT="${OUT:-$ROOT/build/gpu_first_out}"
W="${CF_GPU_WORK:-/tmp/cf_gpu_first}"
BUDGET="${CF_GPU_BUDGET:-420}"
JOBS="${CF_JOBS:-$(nproc 2>/dev/null || echo 8)}"
BENCH_DIR="$ROOT/build/gpu-bench"
TEST_DIR="$ROOT/build/gpu-tests"
RESERVE=10  # seconds kept for the last summary
T0=$(date +%s)
rm -rf "$W"
mkdir -p "$OUT" "$W/extras" || exit 1
rm -f "$OUT"/*-summary.json "$OUT"/attention.json "$OUT"/e2e.json "$OUT"/peer.json "$OUT"/deepseek.json \
  "$OUT"/extras.tar.gz
export PATH="$PATH:/usr/local/cuda/bin"
export PYTHONUNBUFFERED=1
export CF_GPU_TEST_TIMEOUT="${CF_GPU_TEST_TIMEOUT:-60}"
for f in "$ROOT"/.gpu_deps/models/*.gguf; do [ -f "$f" ] && export CF_GPU_TEST_MODEL="$f" && break; done

elapsed() { echo $(( $(date +%s) - T0 )); }
log() { echo "[gpu_first $(elapsed)s] $*"; }

# ---- facts that decide the rest ----------------------------------------------------------------------------------
SHA="$(git -C "$ROOT" rev-parse --short=7 HEAD 2>/dev/null || head -1 "$ROOT/.gpu_deps/git_sha.txt" 2>/dev/null | cut -c1-7)"
SHA="${SHA:-unknown}"
# the benchmarks' JSON carry it (bench/common/report.cpp); the GPU machine gets no .git, prepare_gpu_run.sh wrote it
CF_GIT_SHA="$(git -C "$ROOT" describe --always --dirty --abbrev=12 2>/dev/null || head -1 "$ROOT/.gpu_deps/git_sha.txt" 2>/dev/null)"
export CF_GIT_SHA="${CF_GIT_SHA:-$SHA}"
GPU_NAME="" GPU_REASON=""
if ! command -v nvidia-smi >/dev/null; then
  GPU_REASON="nvidia-smi not found"
elif ! GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)" || [ -z "$GPU_NAME" ]; then
  GPU_REASON="nvidia-smi lists no GPU"
  GPU_NAME=""
fi
case "$GPU_NAME" in
  *H100*) DEVICE=h100 ;; *H200*) DEVICE=h200 ;; "") DEVICE=nogpu ;;
  *) DEVICE="$(echo "$GPU_NAME" | tr 'A-Z' 'a-z' | tr -cs 'a-z0-9' '-' | sed 's/-$//')" ;;
esac
SUMMARY_NAME="$(date -u +%F)-$SHA-$DEVICE-summary.json"
FUSED=1 FUSED_REASON=""
SANITIZER="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)"
BENCH_DA="$BENCH_DIR/bench/decoder_attention/cf_bench_decoder_attention"
BENCH_E2E="$BENCH_DIR/bench/e2e/cf_bench_e2e"
BENCH_FFN="$BENCH_DIR/bench/ffn/cf_bench_ffn"
BENCH_COLL="$BENCH_DIR/bench/cluster_collectives/cf_bench_cluster_collectives"
BENCH_DS="$BENCH_DIR/bench/deepseek_blocks/cf_bench_deepseek_blocks"
CLI="$BENCH_DIR/clusterfusion"
FUSED_TESTS="$TEST_DIR/tests/kernels/cf_test_kernels_gpu"  # attention, FFN, LM head, MLA and MoE: one binary
FUSED_TEST_REGEX='DecoderAttentionGpu|FfnGpu|LmHeadGpu|MlaGpu|MoeGpu|GpuAgreement|GpuBackend'  # left out when the fused kernels fail
DEEPSEEK_TEST_REGEX='Unfused(Mla|Moe)'  # tests/gpu/cuda_unfused: their own step (deepseek-tests), not in `tests`
MLA_PEER="$ROOT/bench/deepseek_blocks/torch_mla_peer.py"
PEER="$ROOT/.peers/torch_decode_peer.py"

write_run_json() {
  python3 - "$W/run.json" <<PY
import json, sys
json.dump(dict(date="$(date -u +%F)", sha="$SHA", device="$DEVICE", device_name="$GPU_NAME" or None,
               budget_s=$BUDGET, fused=bool($FUSED), fused_reason="$FUSED_REASON" or None), open(sys.argv[1], "w"))
PY
}

# Rewrites the summary and the extras archive (both small): a kill after any step keeps them.
refresh() {
  python3 "$ROOT/bench/gpu_summary.py" --work "$W" --out "$OUT" --name "$SUMMARY_NAME" "$@" \
    || echo "(summary: bench/gpu_summary.py failed)"
  tar -czf "$OUT/extras.tar.gz.tmp" -C "$W" extras steps.tsv run.json 2>/dev/null \
    && mv -f "$OUT/extras.tar.gz.tmp" "$OUT/extras.tar.gz"
}

# ---- the step runner ---------------------------------------------------------------------------------------------
# step NAME LIMIT NEEDS FUNCTION: NEEDS is "gpu" (fails at once without one), "fused" (also skipped once the smoke
# test failed) or "-". A function returns 0 ok, 3 skipped (a prerequisite is missing: it says which), else failed.
step() {
  local name=$1 limit=$2 needs=$3 fn=$4 st note="" t="" rc
  if [[ ",${CF_SKIP_STEPS:-}," == *",$name,"* ]]; then
    st=skipped note="CF_SKIP_STEPS"
  elif [ "$needs" != "-" ] && [ -z "$GPU_NAME" ]; then
    st=failed note="no CUDA GPU ($GPU_REASON)"
  elif [ "$needs" = "fused" ] && [ "$FUSED" = 0 ]; then
    st=skipped note="fused kernels left out: $FUSED_REASON"
  else
    local left=$(( BUDGET - $(elapsed) - RESERVE ))
    if (( left < 10 )); then
      st=skipped note="time budget spent ($(elapsed) s of $BUDGET)"
    else
      (( limit > left )) && limit=$left
      echo
      log "==== $name (limit ${limit} s)"
      t=$(date +%s)
      STEP_LIMIT=$limit timeout --kill-after=5 "$limit" bash -o pipefail -c "$fn" 2>&1
      rc=$?
      case $rc in
        0) st=ok ;;
        3) st=skipped note="prerequisite missing (see above)" ;;
        124|137) st=timeout note="killed after ${limit} s" ;;
        *) st=failed note="exit $rc" ;;
      esac
      note="$note${note:+; }$(( $(date +%s) - t )) s"
    fi
  fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$st" "${t:+$(( $(date +%s) - t ))}" "$note" >>"$W/steps.tsv"
  log "---- $name: $st${note:+ ($note)}"
  [ -n "$t" ] && refresh >/dev/null 2>&1  # after a step that ran (the last refresh covers the others)
  LAST_STATUS=$st
}

# Waits (within the calling step's limit) for a background job that writes its exit code to $W/<job>.rc.
wait_job() {
  local job=$1
  [ -f "$W/background.started" ] || { echo "no background build (the first build failed)"; return 3; }
  while [ ! -f "$W/$job.rc" ]; do sleep 2; done
  local rc; rc=$(cat "$W/$job.rc")
  [ "$rc" = 0 ] || { echo "the background build of $job failed (exit $rc):"; tail -20 "$W/extras/build_$job.log"; return 1; }
}

# ---- steps -------------------------------------------------------------------------------------------------------
step_facts() {
  date -u
  echo "git $SHA; host $(uname -n), $(nproc) cores, $(free -g 2>/dev/null | awk '/Mem:/{print $2 " GiB RAM"}'), budget ${BUDGET} s"
  [ -s "$ROOT/.gpu_deps/git_sha.txt" ] && sed 's/^/  prepared: /' "$ROOT/.gpu_deps/git_sha.txt" | head -6
  if [ -n "$GPU_NAME" ]; then
    local q=name,driver_version,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,temperature.gpu,power.draw,power.limit
    nvidia-smi --query-gpu="$q",memory.used,memory.total --format=csv
  else
    echo "no CUDA GPU: $GPU_REASON (a dry run: every later step fails at once)"
  fi
  (nvcc --version 2>/dev/null | tail -1) || echo "nvcc: not found"
  cmake --version 2>/dev/null | head -1 || echo "cmake: not found"
  echo "ninja $(ninja --version 2>/dev/null || echo 'not found'); compute-sanitizer: ${SANITIZER:-not found}"
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>/dev/null || echo "torch: not importable"
  [ -f "$PEER" ] && echo "peer: $PEER" || echo "peer: missing (.peers/ not carried)"
  echo "GPU test model: ${CF_GPU_TEST_MODEL:-none (.gpu_deps/models not carried)}"
  return 0
}

step_configure() {
  cmake -S "$ROOT" -B "$BENCH_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCF_CUDA=ON -DCF_BUILD_TESTS=OFF \
    >"$W/extras/configure.log" 2>&1
  local rc=$?
  tail -4 "$W/extras/configure.log"
  return $rc
}

# The background builds, side by side at lower CPU priorities (the benchmarks and the CLI first: the e2e step needs
# them next): GoogleTest and every GPU test target in build/gpu-tests.
background_builds() {
  {
    nice -n 5 cmake --build "$BENCH_DIR" -j "$JOBS" --target cf_bench_e2e cf_bench_ffn cf_bench_cluster_collectives \
      clusterfusion >"$W/extras/build_others.log" 2>&1
    echo $? >"$W/others.rc"
    # on its own, so that a failure here leaves the steps above untouched
    nice -n 5 cmake --build "$BENCH_DIR" -j "$JOBS" --target cf_bench_deepseek_blocks >"$W/extras/build_deepseek.log" 2>&1
    echo $? >"$W/deepseek.rc"
  } &
  {
    {
      if [ -d "$ROOT/.gpu_deps/googletest" ] && [ ! -f /tmp/cf_gtest/lib/cmake/GTest/GTestConfig.cmake ] &&
         [ ! -f /tmp/cf_gtest/lib64/cmake/GTest/GTestConfig.cmake ]; then
        cmake -S "$ROOT/.gpu_deps/googletest" -B /tmp/cf_gtest_build -G Ninja -DCMAKE_BUILD_TYPE=Release \
          -DBUILD_GMOCK=OFF -DINSTALL_GTEST=ON -DCMAKE_INSTALL_PREFIX=/tmp/cf_gtest -DCMAKE_POLICY_VERSION_MINIMUM=3.5 &&
          nice -n 15 cmake --build /tmp/cf_gtest_build -j "$JOBS" && cmake --install /tmp/cf_gtest_build
      fi &&
      cmake -S "$ROOT" -B "$TEST_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCF_CUDA=ON -DCF_BUILD_BENCH=OFF \
        -DCMAKE_PREFIX_PATH=/tmp/cf_gtest -DCF_GPU_TEST_TIMEOUT="$CF_GPU_TEST_TIMEOUT" &&
      targets="$(ninja -C "$TEST_DIR" -t targets all | sed -n 's/^\(cf_test_[A-Za-z0-9_]*gpu[A-Za-z0-9_]*\): .*/\1/p' |
        sort -u | tr '\n' ' ')" &&
      echo "GPU test targets: $targets" &&
      nice -n 15 cmake --build "$TEST_DIR" -j "$JOBS" --target $targets -- -k 0  # (word splitting wanted)
    } >"$W/extras/build_tests.log" 2>&1
    echo $? >"$W/tests.rc"
  } &
  : >"$W/background.started"
}

step_build() {
  cmake --build "$BENCH_DIR" -j "$JOBS" --target cf_bench_decoder_attention >"$W/extras/build_bench.log" 2>&1
  local rc=$?
  grep -E "error|FAILED" "$W/extras/build_bench.log" | head -20
  # ptxas resources of the fused kernels (registers, spills, stack) for the record
  grep -E "ptxas info    : (Compiling entry|Used)|spill" "$W/extras/build_bench.log" |
    sed -E "s/ptxas info    : Compiling entry function '([^']+)' for '([^']+)'/\1 [\2]/; s/ptxas info    : //" |
    (command -v c++filt >/dev/null && c++filt || cat) | grep -A2 "cf::kernels" >"$W/extras/ptxas.txt"
  grep -A2 "decoder_attention_kernel" "$W/extras/ptxas.txt" | grep -E "Used|spill" | sort | uniq -c | head -6
  [ $rc = 0 ] && echo "built: $BENCH_DA"
  return $rc
}

smoke_check() {  # smoke.json: the fused row ok and within 10% of the output's rms of cuda-unfused
  python3 - "$W/extras/smoke.json" <<'PY'
import json, sys
rows = {r["impl"]: r for r in json.load(open(sys.argv[1]))["rows"]}
f, u = rows.get("fused"), rows.get("cuda-unfused")
if not f or f.get("status") != "ok":
    sys.exit(f"fused: {f.get('status') if f else 'no row'}: {(f or {}).get('message', '')}")
if not u or u.get("status") != "ok":
    print("cuda-unfused failed too: the fused row is judged on its own (finite output)")
    sys.exit(0)
d, rms = f.get("max_abs_diff_vs_unfused"), u.get("out_rms")
print(f"fused {f['us_median']:.1f} us, cuda-unfused {u['us_median']:.1f} us; max |fused - unfused| {d:.3g}, "
      f"rms(out) {rms:.3g}; plan {f.get('plan')}")
sys.exit(0 if d is not None and rms and d <= 0.1 * rms else "fused output differs from cuda-unfused")
PY
}

step_smoke() {
  [ -x "$BENCH_DA" ] || { echo "no $BENCH_DA (build failed)"; return 1; }
  "$BENCH_DA" --models llama2 --kv 1024 --batch 1 --replays 3 --calls 5 --no-breakdown --bandwidth-mib 256 \
    --wait-budget-us 20000 --json "$W/extras/smoke.json" && smoke_check
}

impl_args() { [ "$FUSED" = 1 ] && echo "" || echo "--impl cuda-unfused"; }

step_attention() {
  [ -x "$BENCH_DA" ] || { echo "no $BENCH_DA"; return 3; }
  # shellcheck disable=SC2046
  "$BENCH_DA" --models llama2 --batch 1,16 --kv 1024,4096,16384 --no-breakdown $(impl_args) --json "$OUT/attention.json"
}

peer() {  # stages, out dir, budget
  [ -f "$PEER" ] || { echo "no $PEER (carry .peers: scripts/prepare_gpu_run.sh)"; return 3; }
  python3 "$PEER" --out "$W/$2" --budget "$3" --stages "$1" --attn-lens 1024,4096,16384 --llama2-lens 1024,4096,16384 \
    --llama3-lens 1024,4096,16384 2>&1 | grep -vE "^\s*$" | tail -40
}
step_peer_attention() { peer bw,attn peer_attn $(( STEP_LIMIT - 8 )); }
step_peer_tpot() { peer llama2 peer_tpot $(( STEP_LIMIT - 8 )); }

step_e2e() {
  wait_job others || return 1
  # shellcheck disable=SC2046
  "$BENCH_E2E" --models llama2 --batch 1 --ctx 1024,4096,16384 $( [ "$FUSED" = 1 ] || echo "--impl cuda-unfused") \
    --json "$OUT/e2e.json"
}

step_tests() {
  wait_job tests || return 1
  local exclude=(-E "$DEEPSEEK_TEST_REGEX")
  [ "$FUSED" = 1 ] || exclude=(-E "$FUSED_TEST_REGEX|$DEEPSEEK_TEST_REGEX")
  # ctest ends its tests before the step's limit (cutting the running ones short), so it still writes its report
  local stop; stop="$(date -d "+$(( STEP_LIMIT - 10 )) seconds" +%H:%M:%S)"
  (cd "$TEST_DIR" && ctest -L gpu -j 4 --output-on-failure --stop-time "$stop" --output-junit "$W/ctest_junit.xml" \
    "${exclude[@]}") >"$W/extras/ctest.log" 2>&1
  local rc=$?
  grep -E "tests passed|tests failed|\*\*\*|Failed|Timeout|Passed .*sec" "$W/extras/ctest.log" | grep -vE " Passed " | tail -30
  grep -E "tests passed|tests failed" "$W/extras/ctest.log" | tail -1
  [ "$FUSED" = 1 ] || echo "(fused kernels' tests left out: $FUSED_REASON)"
  return $rc
}

step_sanitizer() {  # tool
  [ -n "$SANITIZER" ] || { echo "compute-sanitizer not found"; return 3; }
  [ -f "$W/tests.rc" ] || { echo "the GPU tests are not built (yet)"; return 3; }
  local status=0 ran=0 bin rc verdict
  for bin in $FUSED_TESTS; do
    [ -x "$bin" ] || { echo "not built: $bin"; continue; }
    "$SANITIZER" --tool "$1" --error-exitcode 99 --print-limit 20 --report-api-errors no "$bin" \
      --gtest_filter='*Sanitizer*' --gtest_brief=1 >"$W/extras/$1_$(basename "$bin").log" 2>&1
    rc=$?
    case $rc in 0) verdict=clean ;; 99) verdict="errors found" ;; *) verdict="did not run" ;; esac
    echo "$1 $(basename "$bin"): exit $rc ($verdict)"
    [ $rc = 0 ] || tail -8 "$W/extras/$1_$(basename "$bin").log"
    ran=1
    [ $rc = 0 ] || [ $status = 99 ] || status=$rc
  done
  [ $ran = 1 ] || return 3
  return $status  # 99: errors found (the summary says so)
}

step_deepseek() {
  wait_job deepseek || return 1
  [ -x "$BENCH_DS" ] || { echo "no $BENCH_DS (its build failed: extras/build_others.log)"; return 3; }
  # shellcheck disable=SC2046
  "$BENCH_DS" --batch 1,16 --kv 1024,4096,16384 $(impl_args) --json "$OUT/deepseek.json" | tail -32
}

step_peer_mla() {
  [ -f "$MLA_PEER" ] || { echo "no $MLA_PEER"; return 3; }
  python3 "$MLA_PEER" --out "$W/extras" --budget $(( STEP_LIMIT - 8 )) --lens 1024,4096,16384 --batches 1,16 2>&1 |
    grep -vE "^\s*$" | tail -20
}

step_deepseek_tests() {
  wait_job tests || return 1
  local stop; stop="$(date -d "+$(( STEP_LIMIT - 10 )) seconds" +%H:%M:%S)"
  (cd "$TEST_DIR" && ctest -L gpu -R "$DEEPSEEK_TEST_REGEX" -j 4 --output-on-failure --stop-time "$stop" \
    --output-junit "$W/extras/ctest_deepseek_junit.xml") >"$W/extras/ctest_deepseek.log" 2>&1
  local rc=$?
  grep -E "\*\*\*|Failed|Timeout|\[ case \]" "$W/extras/ctest_deepseek.log" | tail -30
  grep -E "tests passed|tests failed" "$W/extras/ctest_deepseek.log" | tail -1
  return $rc
}

step_rest_attention() {
  [ -x "$BENCH_DA" ] || { echo "no $BENCH_DA"; return 3; }
  local rc=0
  # shellcheck disable=SC2046
  "$BENCH_DA" --models llama3 --batch 1,4,16 --kv 1024,4096,16384 --no-breakdown $(impl_args) \
    --json "$W/attention_rest_llama3.json" | tail -24 || rc=1
  # shellcheck disable=SC2046
  "$BENCH_DA" --models llama2 --batch 4 --kv 1024,4096,16384 --no-breakdown $(impl_args) \
    --json "$W/attention_rest_b4.json" | tail -12 || rc=1
  if [ "$FUSED" = 1 ]; then
    echo "-- clusters of 4 (Llama-2-7B: 32 clusters, two waves where 30 fit) beside the plan's one-wave choice above"
    "$BENCH_DA" --models llama2 --batch 1,16 --kv 1024,16384 --impl fused --cluster-size 4 --no-breakdown \
      --json "$W/extras/attention_cluster4.json" | grep -E "fused|\[ok\]|\[failed\]" || rc=1
  fi
  return $rc
}

step_rest_e2e() {
  wait_job others || return 1
  # shellcheck disable=SC2046
  "$BENCH_E2E" --models llama3,llama2 --batch 1,4,16 --ctx 1024,4096,16384 $( [ "$FUSED" = 1 ] || echo "--impl cuda-unfused") \
    --json "$W/e2e_rest.json" | tail -30
}

step_rest_ffn() {
  wait_job others || return 1
  # shellcheck disable=SC2046
  "$BENCH_FFN" --quick $( [ "$FUSED" = 1 ] || echo "--impl cuda-unfused") --json "$W/ffn.json" | tail -30
}

step_rest_cli() {
  wait_job others || return 1
  [ -n "${CF_GPU_TEST_MODEL:-}" ] || { echo "no model file (.gpu_deps/models not carried)"; return 3; }
  [ -x "$CLI" ] || { echo "no $CLI (its build failed: extras/build_others.log)"; return 3; }
  local b
  for b in cuda cuda-unfused cpu; do
    [ "$b" = cuda ] && [ "$FUSED" = 0 ] && continue
    echo "-- clusterfusion generate --backend $b (greedy, 24 tokens)"
    timeout 30 "$CLI" generate -m "$CF_GPU_TEST_MODEL" --backend "$b" --temp 0 -n 24 -p "What is the capital of France?" 2>&1 | tail -3
  done
  CF_CLI="$CLI" CF_DET_MODEL="$CF_GPU_TEST_MODEL" CF_DET_RUNS=2 CF_DET_TOKENS=32 bash "$ROOT/scripts/gpu_determinism.sh"
}

step_rest_peer() { peer llama3 peer_rest $(( STEP_LIMIT - 8 )); }

step_rest_collectives() {
  wait_job others || return 1
  [ -x "$BENCH_COLL" ] || { echo "no $BENCH_COLL"; return 3; }
  "$BENCH_COLL" --json "$W/extras/collectives.json" | tail -20
}

export -f step_facts step_configure step_build smoke_check step_smoke impl_args step_attention peer step_peer_attention \
  step_peer_tpot step_e2e step_tests step_sanitizer step_deepseek step_peer_mla step_deepseek_tests \
  step_rest_attention step_rest_e2e step_rest_ffn step_rest_cli step_rest_peer step_rest_collectives wait_job log elapsed
export ROOT OUT W BUDGET JOBS BENCH_DIR TEST_DIR T0 SHA GPU_NAME GPU_REASON DEVICE SANITIZER CF_GPU_TEST_TIMEOUT
export BENCH_DA BENCH_E2E BENCH_FFN BENCH_COLL BENCH_DS CLI FUSED_TESTS FUSED_TEST_REGEX DEEPSEEK_TEST_REGEX PEER \
  MLA_PEER

main() {
  log "bench/gpu_first.sh: git $SHA, device ${GPU_NAME:-none}, budget ${BUDGET} s, OUT=$OUT"
  export FUSED FUSED_REASON
  write_run_json
  : >"$W/steps.tsv"
  step facts 15 - step_facts
  step configure 90 gpu step_configure
  step build 300 gpu step_build
  [ "$LAST_STATUS" = ok ] && background_builds
  step smoke 40 gpu step_smoke
  if [ "$LAST_STATUS" != ok ] && [ -n "$GPU_NAME" ]; then
    FUSED=0 FUSED_REASON="the smoke test did not pass ($LAST_STATUS): see the smoke step in gpu_first.txt"
    export FUSED FUSED_REASON
    write_run_json
    log "FUSED KERNELS LEFT OUT from here on: $FUSED_REASON"
  fi
  step attention 150 gpu step_attention
  step peer-attention 75 gpu step_peer_attention
  step e2e 150 gpu step_e2e
  step peer-tpot 80 gpu step_peer_tpot
  step tests 240 gpu step_tests
  step memcheck 90 fused "step_sanitizer memcheck"
  step racecheck 90 fused "step_sanitizer racecheck"
  step synccheck 90 fused "step_sanitizer synccheck"
  step deepseek 120 gpu step_deepseek
  step peer-mla 75 gpu step_peer_mla
  step deepseek-tests 120 gpu step_deepseek_tests
  step rest-attention 120 gpu step_rest_attention
  step rest-e2e 150 gpu step_rest_e2e
  step rest-peer 80 gpu step_rest_peer
  step rest-ffn 90 gpu step_rest_ffn
  step rest-cli 90 gpu step_rest_cli
  step rest-collectives 45 gpu step_rest_collectives
  [ -f "$W/background.started" ] && [ ! -f "$W/tests.rc" ] && log "(a background build is still running)"
  echo
  log "==== summary: $OUT/$SUMMARY_NAME"
  refresh --print
  ls -la "$OUT"
  # exit status: 0 when every step that ran passed
  ! cut -f2 "$W/steps.tsv" | grep -qE "^(failed|timeout)$"
}

main 2>&1 | tee "$OUT/gpu_first.txt"
exit "${PIPESTATUS[0]}"
