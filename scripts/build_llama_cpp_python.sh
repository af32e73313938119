#!/usr/bin/env bash
# Builds llama.cpp (CPU only) once, through the PyPI source package llama-cpp-python, into a private virtual
# environment outside the repository, together with the python packages scripts/record_golden.py needs.
# Idempotent: when the environment already imports the pinned versions it returns at once.
#
#   scripts/build_llama_cpp_python.sh          build (several minutes on 2 cores) or check
#   scripts/build_llama_cpp_python.sh --print  print the environment's python path and exit (1 if not built)
#
# Environment: CF_CACHE_DIR (default ${XDG_CACHE_HOME:-$HOME/.cache}/clusterfusion); the environment lives in
# $CF_CACHE_DIR/llama-cpp-venv. CF_BUILD_JOBS (default 2) limits parallel compile jobs.
# Nothing from llama.cpp is written into the repository.
set -euo pipefail

llama_cpp_python_version="0.3.36"
gguf_version="0.19.0"
numpy_version="2.2.6"

cache_dir="${CF_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/clusterfusion}"
venv="$cache_dir/llama-cpp-venv"
jobs="${CF_BUILD_JOBS:-2}"

log() { printf '[build_llama_cpp_python] %s\n' "$*" >&2; }

venv_works() {
  [ -x "$venv/bin/python" ] || return 1
  "$venv/bin/python" - "$llama_cpp_python_version" "$gguf_version" <<'EOF' >/dev/null 2>&1
import sys
import importlib.metadata as md
import llama_cpp, gguf, numpy
assert llama_cpp.__version__ == sys.argv[1], llama_cpp.__version__
assert md.version("gguf") == sys.argv[2]
EOF
}

case "${1:-}" in
  --print)
    if venv_works; then echo "$venv/bin/python"; exit 0; fi
    log "not built yet: run scripts/build_llama_cpp_python.sh"; exit 1 ;;
  -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) log "unknown option '$1' (try --help)"; exit 2 ;;
esac

if venv_works; then
  log "already built: $venv (llama-cpp-python $llama_cpp_python_version)"
  echo "$venv/bin/python"
  exit 0
fi

python3 -c "import venv, ensurepip" 2>/dev/null || {
  log "python3 cannot create virtual environments: install the Debian package python3-venv"; exit 1; }
command -v cmake >/dev/null && command -v g++ >/dev/null || { log "needs cmake and g++ (scripts/setup.sh installs them)"; exit 1; }
log "creating $venv"
mkdir -p "$cache_dir"
python3 -m venv --clear "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "numpy==$numpy_version" "gguf==$gguf_version"

# CPU only, no machine-specific code: GGML_NATIVE=OFF selects ggml's fixed x86-64 level (SSE4.2/AVX/AVX2/FMA/F16C,
# no AVX-512), so the recorded numbers do not depend on which CPU did the recording. No BLAS (it is not used for
# quantised matmuls anyway), no OpenMP (threads are fixed to 1 when recording), no network code.
export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_HIP=OFF \
-DGGML_SYCL=OFF -DGGML_OPENCL=OFF -DGGML_BLAS=OFF -DGGML_OPENMP=OFF -DGGML_CPU_ALL_VARIANTS=OFF \
-DGGML_BACKEND_DL=OFF -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release"
export CMAKE_BUILD_PARALLEL_LEVEL="$jobs"
export MAKEFLAGS="-j$jobs"
log "building llama-cpp-python $llama_cpp_python_version from source (CMAKE_ARGS: $CMAKE_ARGS, $jobs jobs)"
"$venv/bin/python" -m pip install --no-binary llama-cpp-python --no-cache-dir \
  "llama-cpp-python==$llama_cpp_python_version"

venv_works || { log "build finished but 'import llama_cpp' fails in $venv"; exit 1; }
log "done: $venv"
echo "$venv/bin/python"
