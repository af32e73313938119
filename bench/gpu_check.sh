#!/usr/bin/env bash
# The one script to run on a lent GPU machine (bare: CMake, ninja, nvcc, python3 + torch; maybe no GoogleTest),
# from the repository root:
#
#     bash bench/gpu_check.sh
#
# Prepare first, on the machine the run is started from: `bash scripts/prepare_gpu_run.sh` fills the ignored
# folders .gpu_deps/ (GoogleTest sources, git sha) and .peers/ (torch peer) and prints the `carry` list.
#
# Steps, each time-boxed (the whole script stays under CF_GPU_CHECK_BUDGET seconds, default 420) and each run even
# when an earlier one failed (steps that need a missing binary are SKIPped):
#   info        nvidia-smi, git sha, nvcc / cmake / compiler / torch versions
#   gtest       GoogleTest built from .gpu_deps/googletest into /tmp when the system has none
#   configure   cmake --preset default (Ninja, CUDA arch 90a)
#   build       the GPU targets (every cf_test_gpu_* / cf_test_*_gpu target + the benchmark, or $CF_GPU_TARGETS),
#               -j16, full log in $OUT/build.log
#   resources   ptxas registers / spills / shared memory of our kernels (from the build log and cuobjdump)
#   ctest-gpu   ctest -L gpu, verbose
#   bench       cf_bench_decoder_attention --quick  -> $OUT/bench.json; cf_bench_ffn --quick -> $OUT/bench_ffn.json
#   e2e         the CLI on the GPU (cuda, cuda-unfused, cpu; greedy) and scripts/gpu_determinism.sh when a model
#               file is at hand, then
#               cf_bench_e2e --quick (whole-model decode TPOT, cuda vs cuda-unfused) -> $OUT/e2e.json
#               (+ e2e.png with CF_E2E_PLOT=1; else plot it afterwards: python3 bench/e2e/plot_e2e.py e2e.json)
#   peer        torch peer (.peers/torch_decode_peer.py --stages $CF_PEER_STAGES) -> $OUT/peer.json
#   memcheck / racecheck / synccheck   compute-sanitizer on the fused kernels' *Sanitizer* cases (attention, FFN,
#               LM head) and on a filter of the cuda-unfused tests
#   summary     PASS/FAIL per step and the key numbers (also in $OUT/summary.txt)
#
# Files in $OUT (<= 8 come back): gpu_check.txt (everything), build.log, bench.json, bench_ffn.json,
# bench_collectives.json, e2e.json, peer.json, summary.txt (e2e.png with CF_E2E_PLOT=1 would be a ninth).
# Environment: OUT (default build/gpu_check_out), CF_GPU_CHECK_BUDGET, CF_GPU_TARGETS, CF_BENCH_ARGS, CF_E2E_ARGS
# (default --quick), CF_PEER_STAGES (default bw,attn,llama2), CF_SANITIZER_FILTER, CF_RACECHECK_FILTER, CF_JOBS (default 16),
# CF_FUSED_SANITIZER_BINS, CF_SKIP_STEPS (comma-separated step names to skip, e.g. memcheck,racecheck,synccheck), CF_CTEST_ARGS
# (extra ctest arguments, e.g. '-j 6 -R Attention').
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
export ROOT
export OUT="${OUT:-$ROOT/build/gpu_check_out}"
mkdir -p "$OUT"
export BUDGET="${CF_GPU_CHECK_BUDGET:-420}"
export JOBS="${CF_JOBS:-16}"
export BUILD_DIR="$ROOT/build/default"
export GPU_TARGETS="cf_test_gpu_cuda_unfused cf_bench_decoder_attention cf_bench_cluster_collectives cf_bench_ffn cf_bench_e2e clusterfusion"  # + discovered GPU tests (step_build)
export TEST_BIN="$BUILD_DIR/tests/gpu/cuda_unfused/cf_test_gpu_cuda_unfused"
export BENCH_BIN="$BUILD_DIR/bench/decoder_attention/cf_bench_decoder_attention"
export FFN_BENCH_BIN="$BUILD_DIR/bench/ffn/cf_bench_ffn"
export E2E_BIN="$BUILD_DIR/bench/e2e/cf_bench_e2e"
export CLI_BIN="$BUILD_DIR/clusterfusion"
export E2E_ARGS="${CF_E2E_ARGS:---quick}"
# A small real model for the GPU tests and the CLI when the default model (98 MB) is not on this machine:
# scripts/prepare_gpu_run.sh writes the default model cut to its first blocks into .gpu_deps/models/.
if [ -z "${CF_GPU_TEST_MODEL:-}" ]; then
  for f in "$ROOT"/.gpu_deps/models/*.gguf; do [ -f "$f" ] && export CF_GPU_TEST_MODEL="$f" && break; done
fi
export BENCH_ARGS="${CF_BENCH_ARGS:---quick}"
export PEER_STAGES="${CF_PEER_STAGES:-bw,attn,llama2}"
# Small, fast cases under the sanitizers (cuBLAS kernels included); racecheck is the slowest, so fewer.
export SANITIZER_FILTER="${CF_SANITIZER_FILTER:-CudaUtils.BufferRoundTripAndMove:KernelAddRmsNorm.*:KernelArgmax.*:DeviceChecks.*:PrefillForm.*:SmallFfn.*:SmallLmHead.*:Shapes/SmallAttention.*/MhaHd64NeoxPage16:Shapes/SmallAttention.*/GqaHd128GptjPage1Bias:Shapes/SmallAttention.*/MqaGroup16Page7}"
export RACECHECK_FILTER="${CF_RACECHECK_FILTER:-KernelAddRmsNorm.*:KernelArgmax.*:Shapes/SmallAttention.Fp16MatchesReference/MhaHd64NeoxPage16:Shapes/SmallAttention.Bf16MatchesReference/GqaHd128GptjPage1Bias}"
# The fused kernels' small sanitizer cases (*Sanitizer* in each suite), run first in every sanitizer step.
export FUSED_SANITIZER_BINS="${CF_FUSED_SANITIZER_BINS:-$BUILD_DIR/tests/gpu/decoder_attention/cf_test_decoder_attention_gpu $BUILD_DIR/tests/gpu/ffn/cf_test_ffn_gpu $BUILD_DIR/tests/gpu/lm_head/cf_test_lm_head_gpu}"
export PYTHONUNBUFFERED=1
export T0="$(date +%s)"
RESERVE=15  # seconds kept for the summary

export PATH="$PATH:/usr/local/cuda/bin"
if [ -z "${CUDACXX:-}" ] && ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi

banner() { printf '\n==================== %s ====================\n' "$*"; }
elapsed() { echo $(( $(date +%s) - T0 )); }

git_sha() {
  if git -C "$ROOT" rev-parse --short=12 HEAD >/dev/null 2>&1; then
    git -C "$ROOT" describe --always --dirty --abbrev=12 2>/dev/null
  elif [ -s "$ROOT/.gpu_deps/git_sha.txt" ]; then
    head -1 "$ROOT/.gpu_deps/git_sha.txt"
  else
    echo unknown
  fi
}
export CF_GIT_SHA="$(git_sha)"

# ---- step bodies (run in a child bash under `timeout`) --------------------------------------------------------

step_info() {
  date -u
  echo "host $(uname -n), $(nproc) cores, $(free -g 2>/dev/null | awk '/Mem:/{print $2 " GiB RAM"}')"
  echo "git sha: $CF_GIT_SHA"
  [ -s "$ROOT/.gpu_deps/git_sha.txt" ] && sed -n '2,$p' "$ROOT/.gpu_deps/git_sha.txt"
  echo "budget ${BUDGET}s, OUT=$OUT"
  nvidia-smi || echo "nvidia-smi failed"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,temperature.gpu,power.draw,power.limit,memory.used,memory.total --format=csv || true
  (nvcc --version || "${CUDACXX:-/usr/local/cuda/bin/nvcc}" --version) 2>&1 | tail -2
  cmake --version | head -1
  ninja --version 2>/dev/null | sed 's/^/ninja /' || echo "ninja: not found"
  c++ --version 2>/dev/null | head -1 || echo "c++: not found"
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available())' 2>&1 | tail -1
  command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || echo "compute-sanitizer: not found"
  return 0
}

step_gtest() {
  if [ -f /tmp/cf_gtest/lib/cmake/GTest/GTestConfig.cmake ] || [ -f /tmp/cf_gtest/lib64/cmake/GTest/GTestConfig.cmake ]; then
    echo "GoogleTest already built in /tmp/cf_gtest"; return 0
  fi
  if [ -d "$ROOT/.gpu_deps/googletest" ]; then
    echo "building GoogleTest from .gpu_deps/googletest into /tmp/cf_gtest"
    cmake -S "$ROOT/.gpu_deps/googletest" -B /tmp/cf_gtest_build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DBUILD_GMOCK=OFF -DINSTALL_GTEST=ON -DCMAKE_INSTALL_PREFIX=/tmp/cf_gtest -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
      -DCMAKE_POSITION_INDEPENDENT_CODE=ON >/tmp/cf_gtest_configure.log 2>&1 \
      || { tail -30 /tmp/cf_gtest_configure.log; return 1; }
    cmake --build /tmp/cf_gtest_build -j "$JOBS" >/tmp/cf_gtest_build.log 2>&1 || { tail -30 /tmp/cf_gtest_build.log; return 1; }
    cmake --install /tmp/cf_gtest_build >/dev/null || return 1
    echo "GoogleTest installed in /tmp/cf_gtest"
    return 0
  fi
  if ls /usr/lib/*/cmake/GTest/GTestConfig.cmake /usr/lib/cmake/GTest/GTestConfig.cmake /usr/local/lib/cmake/GTest/GTestConfig.cmake 2>/dev/null | head -1; then
    echo "using the system GoogleTest"; return 0
  fi
  echo "no GoogleTest: neither .gpu_deps/googletest (run scripts/prepare_gpu_run.sh and carry .gpu_deps) nor a system install"
  return 1
}

step_configure() {
  local prefix=()
  [ -d /tmp/cf_gtest ] && prefix=(-DCMAKE_PREFIX_PATH=/tmp/cf_gtest)
  cmake --preset default -DCF_CUDA=ON "${prefix[@]}" >/tmp/cf_configure.log 2>&1
  local rc=$?
  tail -25 /tmp/cf_configure.log
  return $rc
}

step_build() {
  # The GPU targets: $CF_GPU_TARGETS if set, else every GPU test target this checkout defines (cf_test_gpu_* and
  # cf_test_*_gpu) plus the benchmarks. Unknown names are dropped (ninja would refuse the whole build).
  local known wanted t targets=""
  known="$(ninja -C "$BUILD_DIR" -t targets all 2>/dev/null | sed -n 's/^\([A-Za-z0-9_]*\): .*/\1/p' | sort -u)"
  if [ -n "${CF_GPU_TARGETS:-}" ]; then
    wanted="$CF_GPU_TARGETS"
  else
    wanted="$GPU_TARGETS $(echo "$known" | grep -E '^cf_test_(gpu_[A-Za-z0-9_]+|[A-Za-z0-9_]+_gpu)$' | tr '\n' ' ')"
  fi
  for t in $wanted; do
    if echo "$known" | grep -qx "$t"; then
      case " $targets " in *" $t "*) ;; *) targets="$targets $t" ;; esac
    else
      echo "  note: no target '$t' in this checkout"
    fi
  done
  echo "targets:$targets (full log: build.log)"
  [ -n "$targets" ] || return 1
  # -k 0: build every target that can be built even if one fails.
  # shellcheck disable=SC2086
  cmake --build "$BUILD_DIR" -j "$JOBS" --target $targets -- -k 0 >"$OUT/build.log" 2>&1
  local rc=$?
  grep -E "error|Error|FAILED" "$OUT/build.log" | head -40
  [ $rc -ne 0 ] && tail -40 "$OUT/build.log"
  for t in $targets; do
    f=$(find "$BUILD_DIR" -type f -name "$t" -perm -u+x 2>/dev/null | head -1)
    echo "  $t: ${f:-NOT BUILT}"
  done
  return $rc
}

step_resources() {
  echo "ptxas (from the build log): registers, spills, shared memory per kernel"
  grep -E "ptxas info    : (Compiling entry|Used)|spill" "$OUT/build.log" \
    | sed -E "s/ptxas info    : Compiling entry function '([^']+)' for '([^']+)'/\1 [\2]/" \
    | (command -v c++filt >/dev/null && c++filt || cat) \
    | sed -E 's/cf::(cuda_unfused|bench)::\(anonymous namespace\):://g; s/ptxas info    : //; s/^ +//' \
    | paste - - - 2>/dev/null | head -120
  local lib="$BUILD_DIR/src/backends/cuda_unfused/libcf_cuda_unfused.a"
  if command -v cuobjdump >/dev/null && [ -f "$lib" ]; then
    echo; echo "cuobjdump --dump-resource-usage $lib"
    cuobjdump --dump-resource-usage "$lib" 2>&1 | (command -v c++filt >/dev/null && c++filt || cat) \
      | grep -E "Function|REG|STACK" | head -60
  fi
  return 0
}

step_ctest() {
  [ -x "$TEST_BIN" ] || { echo "SKIP: $TEST_BIN not built"; return 3; }
  # shellcheck disable=SC2086
  (cd "$BUILD_DIR" && ctest -L gpu -V --timeout 170 --output-on-failure ${CF_CTEST_ARGS:-})
}

step_bench() {
  [ -x "$BENCH_BIN" ] || { echo "SKIP: $BENCH_BIN not built"; return 3; }
  # shellcheck disable=SC2086
  "$BENCH_BIN" $BENCH_ARGS --json "$OUT/bench.json"
  local rc=$?
  if [ -x "$FFN_BENCH_BIN" ]; then
    "$FFN_BENCH_BIN" --quick --json "$OUT/bench_ffn.json" || rc=$?
  fi
  nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>/dev/null
  return $rc
}

step_e2e() {
  [ -x "$E2E_BIN" ] || { echo "SKIP: $E2E_BIN not built"; return 3; }
  local model="" default_model="${CF_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/clusterfusion}/models/SmolLM2-135M-Instruct.Q4_1.gguf"
  if [ -f "$default_model" ]; then model="$default_model"; elif [ -n "${CF_GPU_TEST_MODEL:-}" ]; then model="$CF_GPU_TEST_MODEL"; fi
  if [ -x "$CLI_BIN" ] && [ -n "$model" ]; then
    local b
    for b in cuda cuda-unfused cpu; do
      echo "-- clusterfusion generate --backend $b -m $(basename "$model") (greedy, 24 tokens)"
      timeout 30 "$CLI_BIN" generate -m "$model" --backend "$b" --temp 0 -n 24 -p "What is the capital of France?" 2>&1 | tail -4
    done
    # Repeated greedy and seeded sampled runs per GPU backend must print the same bytes (docs/reliability.md).
    CF_CLI="$CLI_BIN" CF_DET_MODEL="$model" CF_DET_RUNS=2 CF_DET_TOKENS=32 timeout 60 bash "$ROOT/scripts/gpu_determinism.sh"
  else
    echo "(no model file for the CLI run: neither $default_model nor \$CF_GPU_TEST_MODEL)"
  fi
  # shellcheck disable=SC2086
  "$E2E_BIN" $E2E_ARGS --json "$OUT/e2e.json"
  local rc=$?
  # $OUT brings back at most 8 files: the PNG only when asked (else plot here: python3 bench/e2e/plot_e2e.py e2e.json).
  if [ "${CF_E2E_PLOT:-0}" = 1 ]; then
    python3 "$ROOT/bench/e2e/plot_e2e.py" "$OUT/e2e.json" --out "$OUT/e2e.png" || echo "(no plot)"
  fi
  return $rc
}

step_collectives() {
  local bin="$BUILD_DIR/bench/cluster_collectives/cf_bench_cluster_collectives"
  [ -x "$bin" ] || { echo "SKIP: $bin not built"; return 3; }
  "$bin" --json "$OUT/bench_collectives.json"
}

step_peer() {
  local peer="$ROOT/.peers/torch_decode_peer.py"
  [ -f "$peer" ] || { echo "SKIP: $peer missing (run scripts/prepare_gpu_run.sh and carry .peers)"; return 3; }
  python3 "$peer" --out "$OUT" --budget "$PEER_BUDGET" --stages "$PEER_STAGES"
}

sanitizer_bin() {
  command -v compute-sanitizer 2>/dev/null || { [ -x /usr/local/cuda/bin/compute-sanitizer ] && echo /usr/local/cuda/bin/compute-sanitizer; }
}

step_sanitizer() {  # $1 = tool, $2 = gtest filter for the cuda-unfused tests
  local san; san="$(sanitizer_bin)"
  [ -n "$san" ] || { echo "SKIP: compute-sanitizer not found"; return 3; }
  local status=0 ran=0 bin filter rc
  # The fused kernels' *Sanitizer* cases first, then the cuda-unfused baseline's filter.
  for bin in $FUSED_SANITIZER_BINS "$TEST_BIN"; do
    [ -x "$bin" ] || { echo "skip: $bin not built"; continue; }
    filter="*Sanitizer*"
    [ "$bin" = "$TEST_BIN" ] && filter="$2"
    echo "-- $san --tool $1 $(basename "$bin") --gtest_filter=$filter"
    # API errors are checked by our own code (and some tests provoke one on purpose): report device errors only.
    "$san" --tool "$1" --error-exitcode 99 --print-limit 20 --report-api-errors no "$bin" --gtest_filter="$filter" \
      --gtest_brief=1 >/tmp/cf_sanitizer_"$1".log 2>&1
    rc=$?
    grep -vE "^\[ (case|ffn|head|gpu|note) \]" /tmp/cf_sanitizer_"$1".log | tail -30
    echo "compute-sanitizer $1 $(basename "$bin"): exit code $rc (0 = clean, 99 = errors found)"
    ran=1
    [ $rc -ne 0 ] && status=$rc
  done
  [ $ran = 1 ] || { echo "SKIP: no test binary built"; return 3; }
  return $status
}

export -f step_info step_gtest step_configure step_build step_resources step_ctest step_bench step_e2e step_collectives step_peer \
  step_sanitizer sanitizer_bin

# ---- step runner ------------------------------------------------------------------------------------------------

NAMES=() STATUS=() SECS=() NOTES=()
record() { NAMES+=("$1"); STATUS+=("$2"); SECS+=("$3"); NOTES+=("$4"); }

# run_step NAME DEFAULT_TIMEOUT COMMAND...
run_step() {
  local name=$1 limit=$2; shift 2
  if [[ ",${CF_SKIP_STEPS:-}," == *",$name,"* ]]; then
    banner "$name: SKIPPED (CF_SKIP_STEPS)"
    record "$name" SKIP 0 "CF_SKIP_STEPS"
    return 3
  fi
  local left=$(( BUDGET - $(elapsed) - RESERVE ))
  if (( left < 10 )); then
    banner "$name: SKIPPED (time budget spent: $(elapsed)s of ${BUDGET}s)"
    record "$name" SKIP 0 "time budget spent"
    return 1
  fi
  (( limit > left )) && limit=$left
  banner "$name (timeout ${limit}s, t=$(elapsed)s)"
  local t=$(date +%s)
  timeout --kill-after=10 "$limit" "$@"
  local rc=$? dt=$(( $(date +%s) - t ))
  local st note=""
  case $rc in
    0) st=PASS ;;
    3) st=SKIP; note="prerequisite missing" ;;
    124|137) st=TIMEOUT; note="killed after ${limit}s" ;;
    *) st=FAIL; note="exit $rc" ;;
  esac
  echo "---- $name: $st ($dt s) $note"
  record "$name" "$st" "$dt" "$note"
  return $rc
}

summary() {
  banner "SUMMARY (total $(elapsed)s)"
  {
    printf '%-12s %-8s %6s  %s\n' step status seconds note
    for i in "${!NAMES[@]}"; do printf '%-12s %-8s %6s  %s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${SECS[$i]}" "${NOTES[$i]}"; done
    echo
    echo "git $CF_GIT_SHA; GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
    grep -E "tests passed|tests failed" "$OUT/gpu_check.txt" 2>/dev/null | tail -1 | sed 's/^/ctest -L gpu: /'
    echo "ctest -L gpu: $(grep -cE '^[[:space:]]+[0-9]+ - .*\(Skipped\)$' "$OUT/gpu_check.txt" 2>/dev/null) tests skipped (no usable GPU?)"
    python3 - "$OUT" <<'PY' 2>&1
import json, os, sys
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name)
    try:
        with open(p) as f:
            return json.load(f)
    except Exception as e:
        print(f"{name}: not available ({type(e).__name__})")
        return None
b = load("bench.json")
if b:
    bw = b.get("bandwidth", {})
    print(f"bench: {b['device']['name']}, copy {bw.get('copy_gbps', 0):.0f} GB/s, read {bw.get('read_gbps', 0):.0f} GB/s")
    print(f"{'case':34s} {'impl':13s} {'us':>8s} {'GB/s':>6s} {'%bw':>6s} {'floor':>6s} {'x unf':>6s}")
    for r in b.get("rows", []):
        case = f"{r['model']} {r['dtype']} b{r['batch']} kv{r['kv_len']}"
        if r.get("status") != "ok":
            print(f"{case:34s} {r['impl']:13s} {r.get('status')}: {r.get('message', '')[:80]}")
            continue
        ratio = r.get("ratio_vs_unfused")
        print(f"{case:34s} {r['impl']:13s} {r['us_median']:8.1f} {r['gbps']:6.0f} {r['pct_read_bw']:5.1f}% "
              f"{r['floor_us']:6.1f} {('%.2f' % ratio) if isinstance(ratio, (int, float)) else '-':>6s}")
f = load("bench_ffn.json")
if f:
    print(f"{'ffn / lm_head case':34s} {'impl':13s} {'us':>8s} {'GB/s':>6s} {'%bw':>6s} {'floor':>6s} {'x unf':>6s}")
    for r in f.get("rows", []):
        case = f"{r['block']} {r['model']} {r['dtype']} b{r['batch']}"
        if r.get("status") != "ok":
            print(f"{case:34s} {r['impl']:13s} {r.get('status')}: {r.get('message', '')[:80]}")
            continue
        ratio = r.get("ratio_vs_unfused")
        print(f"{case:34s} {r['impl']:13s} {r['us_median']:8.1f} {r['gbps']:6.0f} {r['pct_read_bw']:5.1f}% "
              f"{r['floor_us']:6.1f} {('%.2f' % ratio) if isinstance(ratio, (int, float)) else '-':>6s}")
e = load("e2e.json")
if e:
    bw = e.get("bandwidth", {})
    print(f"e2e TPOT (ms/step, CUDA graph replay), read bandwidth {bw.get('read_gbps', 0):.0f} GB/s")
    print(f"{'model':10s} {'impl':13s} {'b':>3s} {'ctx':>6s} {'ms':>8s} {'tok/s':>7s} {'%bw':>6s} {'floor':>6s} {'x unf':>6s}")
    for r in e.get("rows", []):
        head = f"{r['model']:10s} {r['impl']:13s} {r['batch']:3d} {r['ctx']:6d}"
        if r.get("status") != "ok":
            print(f"{head} {r.get('status')}: {r.get('message', '')[:70]}")
            continue
        ratio = r.get("ratio_vs_unfused")
        print(f"{head} {r['ms_median']:8.3f} {r['tok_per_s']:7.0f} {r['pct_read_bw']:5.1f}% {r['floor_ms']:6.2f} "
              f"{('%.2f' % ratio) if isinstance(ratio, (int, float)) else '-':>6s}")
    for a in e.get("anchors", []):
        print(f"  goal {a['model']} b{a['batch']} ctx {a['ctx']}: {a['goal_ms']:.2f} ms (torch.compile+graph {a['torch_compile_graph_ms']:.2f}, torch graph {a['torch_graph_ms']:.2f})")
p = load("peer.json")
if p:
    bw = p.get("bandwidth", {})
    if bw:
        print(f"peer (torch): copy {bw.get('copy_2GiB_rw_GBps', 0):.0f} GB/s, read {bw.get('read_sum_4GiB_GBps', 0):.0f} GB/s")
    for r in p.get("attn_block", []):
        if r.get("backend") == "default":
            print(f"peer attention block llama2-7b fp16 b1 L={r['L']} (+1 new) {r['layout']}: {r['us']:.1f} us ({r['GBps']:.0f} GB/s)")
    for r in p.get("tpot", []):
        print(f"peer TPOT {r.get('model')} L={r.get('L')}: {r.get('graph_ms_median', 0):.3f} ms")
    for e in p.get("errors", []):
        print(f"peer error: {e}")
PY
  } | tee "$OUT/summary.txt"
}

main() {
  echo "bench/gpu_check.sh: git $CF_GIT_SHA, budget ${BUDGET}s, OUT=$OUT"
  run_step info 30 bash -c step_info
  run_step gtest 120 bash -c step_gtest
  if run_step configure 120 bash -c step_configure; then
    run_step build 300 bash -c step_build
    run_step resources 30 bash -c step_resources
  else
    record build SKIP 0 "configure failed"
  fi
  run_step ctest-gpu 200 bash -c step_ctest
  run_step bench 150 bash -c step_bench
  run_step e2e 120 bash -c step_e2e
  run_step collectives 45 bash -c step_collectives
  local left=$(( BUDGET - $(elapsed) - RESERVE - 120 ))  # keep ~2 min for the sanitizers
  (( left > 110 )) && left=110
  (( left < 40 )) && left=40
  export PEER_BUDGET=$(( left - 15 ))
  run_step peer "$left" bash -c step_peer
  run_step memcheck 120 bash -c 'step_sanitizer memcheck "$SANITIZER_FILTER"'
  run_step racecheck 120 bash -c 'step_sanitizer racecheck "$RACECHECK_FILTER"'
  run_step synccheck 80 bash -c 'step_sanitizer synccheck "$SANITIZER_FILTER"'
  summary
  local failed=0
  for s in "${STATUS[@]}"; do [ "$s" = PASS ] || [ "$s" = SKIP ] || failed=1; done
  return $failed
}

main "$@" 2>&1 | tee "$OUT/gpu_check.txt"
exit "${PIPESTATUS[0]}"
