#!/usr/bin/env bash
# The Python package on a GPU machine without network (the lent H100/H200: torch, nanobind, scikit-build-core and
# pytest preinstalled): builds and installs it with the machine's own build tools (no build isolation, nothing
# downloaded), runs the pytest suite (the GPU cases included) and the torch example. Logs go to $OUT (or /tmp/cf_out).
#
#   bash python/gpu_run.sh            # from the repository root
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-/tmp/cf_out}"
mkdir -p "$out"
site=/tmp/cf_site
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"

{
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader
  python3 -c 'import sys, torch, nanobind, scikit_build_core, numpy; print("python", sys.version.split()[0], "torch",
torch.__version__, "nanobind", nanobind.__version__, "scikit-build-core", scikit_build_core.__version__, "numpy",
numpy.__version__)'
  nvcc --version | tail -2
} 2>&1 | tee "$out/machine.txt"

start=$(date +%s)
rm -rf "$site"
if ! python3 -m pip install --no-build-isolation --no-deps --no-cache-dir --target "$site" -v . >"$out/pip.log" 2>&1; then
  tail -60 "$out/pip.log"
  echo "gpu_run: pip install failed"
  exit 1
fi
echo "pip install . took $(( $(date +%s) - start )) s ($CMAKE_BUILD_PARALLEL_LEVEL jobs)" | tee -a "$out/machine.txt"
grep -E "CUDA targets|Build files" "$out/pip.log" | head -3
export PYTHONPATH="$site"
python3 -c 'import clusterfusion as cf; print("cuda_available", cf.cuda_available(), cf.cuda_build_error())'

rc=0
(cd python/tests && python3 -m pytest -q -p no:cacheprovider -rs --durations=8) 2>&1 | tee "$out/pytest.log"
rc=$(( rc | ${PIPESTATUS[0]} ))
python3 examples/torch_decoder_layer.py --steps 16 2>&1 | tee "$out/example.log"
rc=$(( rc | ${PIPESTATUS[0]} ))
python3 examples/torch_decoder_layer.py --steps 4 --cpu 2>&1 | tail -3
python3 examples/torch_decoder_layer.py --steps 2 --layers 1 --backend emu 2>&1 | tail -3
python3 examples/decoder_layer_timing.py 2>&1 | tee "$out/timing.log"
rc=$(( rc | ${PIPESTATUS[0]} ))
echo "gpu_run: exit $rc"
exit "$rc"
