#!/usr/bin/env bash
# The cpu backend against llama.cpp on this machine: llama-bench's pp64 / tg64 at 1 and 2 threads, on the default
# model and on random-weight models of its shapes in F16, Q8_0, Q4_0, Q4_1 and Q4_K, interleaved runs, with the
# ratios and the memory-bandwidth floor (bench/cpu_vs_llamacpp/compare.py prints the table).
#
#   bench/cpu_vs_llamacpp.sh [--build DIR] [--rounds N] [--reps N] [--threads 1,2] [--models LIST] [--stress N]
#                            [--log FILE]
#
#   --build DIR    our build folder (default build/cpu; cf_bench_cpu_model is built there if missing)
#   --rounds N     interleaved rounds per model and thread count (default 3; the table shows medians)
#   --reps N       timed repetitions per program run (default 3)
#   --threads L    thread counts (default 1,2)
#   --models L     any of default,f16,q8_0,q4_0,q4_1,q4_k (default all)
#   --stress N     N busy processes share the cores during the measurements (a concurrent build, roughly)
#   --log FILE     also write the table there (and FILE.json)
#
# Once, into the cache (never into the repository; CF_CACHE_DIR, default ~/.cache/clusterfusion): the pinned
# llama-cpp-python source package (the pin of scripts/build_llama_cpp_python.sh, the goldens' llama.cpp), llama-bench
# and llama-quantize built from its vendored llama.cpp with CMake's defaults for this CPU (GGML_NATIVE: AVX-512 /
# VNNI where present, as a user building llama.cpp gets), a small python environment with the gguf package, and the
# random models (bench/cpu_vs_llamacpp/make_random_gguf.py writes F16, llama-quantize the rest; Q4_K: ffn_down is
# the only matrix whose width (1536) k-quants allow, the 576-wide ones are Q4_0 and the embeddings Q8_0).
# Run it on a quiet machine: both programs are timed by the wall clock.
set -euo pipefail

invocation="bench/cpu_vs_llamacpp.sh $*"
repo="$(cd "$(dirname "$0")/.." && pwd)"
build="$repo/build/cpu"
rounds=3 reps=3 threads=1,2 models=default,f16,q8_0,q4_0,q4_1,q4_k stress=0 log=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --models) models="$2"; shift 2 ;;
    --stress) stress="$2"; shift 2 ;;
    --log) log="$2"; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "cpu_vs_llamacpp.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf '[cpu_vs_llamacpp] %s\n' "$*" >&2; }
cache="${CF_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/clusterfusion}"
work="$cache/llama-bench"
jobs="${CF_BUILD_JOBS:-2}"
version="$(sed -n 's/^llama_cpp_python_version="\(.*\)"$/\1/p' "$repo/scripts/build_llama_cpp_python.sh")"
gguf_version="$(sed -n 's/^gguf_version="\(.*\)"$/\1/p' "$repo/scripts/build_llama_cpp_python.sh")"
numpy_version="$(sed -n 's/^numpy_version="\(.*\)"$/\1/p' "$repo/scripts/build_llama_cpp_python.sh")"
[ -n "$version" ] && [ -n "$gguf_version" ] || { echo "cannot read the pins of scripts/build_llama_cpp_python.sh" >&2; exit 1; }
default_model="$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$default_model" ] || { echo "default model missing at $default_model: run scripts/setup.sh" >&2; exit 1; }
for tool in cmake python3; do command -v "$tool" >/dev/null || { echo "needs $tool (scripts/setup.sh)" >&2; exit 1; }; done
mkdir -p "$work"

# 1. llama.cpp's llama-bench and llama-quantize from the pinned source package.
src="$work/llama_cpp_python-$version"
bin="$work/build-$version/bin"
if [ ! -x "$bin/llama-bench" ] || [ ! -x "$bin/llama-quantize" ]; then
  if [ ! -d "$src/vendor/llama.cpp" ]; then
    say "downloading the source package llama-cpp-python==$version"
    python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work/download"
    tar -xzf "$work/download/llama_cpp_python-$version.tar.gz" -C "$work"
  fi
  say "building llama-bench and llama-quantize ($jobs jobs, several minutes)"
  cmake -S "$src/vendor/llama.cpp" -B "$work/build-$version" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
  cmake --build "$work/build-$version" -j "$jobs" --target llama-bench llama-quantize >/dev/null
fi

# 2. Our benchmark program, brought up to date with the sources (an old binary would measure old code).
[ -d "$build" ] || (cd "$repo" && cmake --preset cpu >/dev/null)
say "building cf_bench_cpu_model in $build"
cmake --build "$build" --target cf_bench_cpu_model >/dev/null
# x86-64 only (elsewhere the target does not exist and the peak lines are left out).
cmake --build "$build" --target cf_bench_fma_peak >/dev/null 2>&1 || true

# 3. Random-weight models of the default model's shapes.
python="$work/venv/bin/python"
if ! "$python" -c "import gguf, numpy" 2>/dev/null; then
  say "creating $work/venv (gguf $gguf_version, numpy $numpy_version)"
  python3 -m venv "$work/venv"
  "$python" -m pip install --quiet "gguf==$gguf_version" "numpy==$numpy_version"
fi
models_dir="$work/models"
mkdir -p "$models_dir"
random_model() {  # random_model TYPE -> path
  local f16="$models_dir/random-F16.gguf" out="$models_dir/random-$1.gguf"
  if [ ! -f "$f16" ]; then
    say "writing $f16"
    "$python" "$repo/bench/cpu_vs_llamacpp/make_random_gguf.py" "$default_model" "$f16.tmp" && mv "$f16.tmp" "$f16"
  fi
  if [ "$1" != F16 ] && [ ! -f "$out" ]; then
    say "quantising $out"
    local extra=()
    if [ "$1" = Q4_K ]; then
      extra=(--tensor-type attn_q=q4_0 --tensor-type attn_k=q4_0 --tensor-type attn_v=q4_0
             --tensor-type attn_output=q4_0 --tensor-type ffn_gate=q4_0 --tensor-type ffn_up=q4_0
             --token-embedding-type q8_0)
    fi
    "$bin/llama-quantize" --pure "${extra[@]}" "$f16" "$out.tmp" "$1" >"$out.log" 2>&1 && mv "$out.tmp" "$out"
  fi
  echo "$out"
}
model_args=()
IFS=, read -r -a wanted <<<"$models"
for m in "${wanted[@]}"; do
  case "$m" in
    default) model_args+=(--model "default Q4_1=$default_model") ;;
    f16|q8_0|q4_0|q4_1|q4_k) t="${m^^}"; model_args+=(--model "random $t=$(random_model "$t")") ;;
    *) echo "cpu_vs_llamacpp.sh: unknown model '$m'" >&2; exit 2 ;;
  esac
done

# 4. The interleaved measurement.
args=(--llama-bench "$bin/llama-bench" --ours "$build/bench/cpu_vs_llamacpp/cf_bench_cpu_model" "${model_args[@]}"
      --threads "$threads" --rounds "$rounds" --reps "$reps" --stress "$stress")
{
  dirty="$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo ' (uncommitted changes)' || true)"
  echo "# git $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)$dirty, llama.cpp from llama-cpp-python $version"
  echo "# command: $invocation"
  echo "# settings: --rounds $rounds --reps $reps --threads $threads --models $models --stress $stress"
  # The fp32 arithmetic's ceiling on this core, before and after (it moves with the machine's load).
  peak="$build/bench/cpu_vs_llamacpp/cf_bench_fma_peak"
  [ -x "$peak" ] && echo "# fp32 FMA peak of one core before (cf_bench_fma_peak): $("$peak")"
  if [ -n "$log" ]; then
    python3 "$repo/bench/cpu_vs_llamacpp/compare.py" "${args[@]}" --json "$log.json"
  else
    python3 "$repo/bench/cpu_vs_llamacpp/compare.py" "${args[@]}"
  fi
  [ -x "$peak" ] && echo "# fp32 FMA peak of one core after: $("$peak")"
} | if [ -n "$log" ]; then tee "$log"; else cat; fi
