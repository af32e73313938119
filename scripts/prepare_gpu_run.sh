#!/usr/bin/env bash
# Prepares what bench/gpu_first.sh needs on the bare GPU machine (no network there), in ignored folders of this
# checkout, and prints the device tool's `carry` list, the command and the size of everything that will travel
# (the tool's limit: 64 MiB). Run it here before every GPU run (it refreshes the sha); it fails loudly, never skips:
#   .peers/     the torch peer scripts (../shared/peers, /work/shared/peers, or $CF_PEERS_DIR)
#   .gpu_deps/  GoogleTest sources (Debian package googletest: /usr/src/googletest, or $CF_GTEST_SRC), git_sha.txt
#               (the GPU machine gets no .git), models/: the default model cut to its first 6 blocks (~45 MB, real
#               tokenizer and Q4_1 weights: the GPU tests and the CLI run on it; scripts/truncate_gguf.py with the
#               gguf module of a private virtual environment, $CF_CACHE_DIR/gpu-prepare-venv, installed on first use)
# Environment: CF_PEERS_DIR, CF_GTEST_SRC, CF_CACHE_DIR, CF_GPU_TEST_MODEL_BLOCKS (default 6; 0 = no model file).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
die() { echo "prepare_gpu_run: $*" >&2; exit 1; }

gguf_version="0.19.0"  # as scripts/build_llama_cpp_python.sh
numpy_version="2.2.6"
cache_dir="${CF_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/clusterfusion}"
venv="$cache_dir/gpu-prepare-venv"
limit_mib=64

# ---- the torch peer ------------------------------------------------------------------------------------------------
peers_src="${CF_PEERS_DIR:-}"
if [ -z "$peers_src" ]; then
  for d in "$root/../shared/peers" /work/shared/peers; do
    if [ -f "$d/torch_decode_peer.py" ]; then peers_src="$d"; break; fi
  done
fi
[ -n "$peers_src" ] && [ -f "$peers_src/torch_decode_peer.py" ] ||
  die "torch_decode_peer.py not found (looked in ../shared/peers, /work/shared/peers; set CF_PEERS_DIR)"
rm -rf .peers
mkdir -p .peers .gpu_deps
cp -f "$peers_src"/*.py .peers/
chmod u+w .peers/*.py

# ---- GoogleTest sources --------------------------------------------------------------------------------------------
gtest_src="${CF_GTEST_SRC:-/usr/src/googletest}"
[ -f "$gtest_src/CMakeLists.txt" ] ||
  die "GoogleTest sources not found at $gtest_src (Debian: apt-get install googletest; or set CF_GTEST_SRC)"
rm -rf .gpu_deps/googletest
cp -r "$gtest_src" .gpu_deps/googletest
chmod -R u+w .gpu_deps/googletest

# ---- the small real model ------------------------------------------------------------------------------------------
model_blocks="${CF_GPU_TEST_MODEL_BLOCKS:-6}"
default_model="$cache_dir/models/SmolLM2-135M-Instruct.Q4_1.gguf"
rm -rf .gpu_deps/models
if [ "$model_blocks" != 0 ]; then
  [ -f "$default_model" ] || die "the default model is not at $default_model (bash scripts/fetch_default_model.sh)"
  if ! "$venv/bin/python" -c "import gguf, numpy" 2>/dev/null; then
    python3 -c "import venv, ensurepip" 2>/dev/null ||
      die "python3 cannot create virtual environments (Debian: apt-get install python3-venv)"
    echo "prepare_gpu_run: installing gguf $gguf_version into $venv (once)"
    mkdir -p "$cache_dir"
    python3 -m venv --clear "$venv" || die "python3 -m venv $venv failed"
    "$venv/bin/python" -m pip install --quiet "numpy==$numpy_version" "gguf==$gguf_version" ||
      die "pip install gguf==$gguf_version into $venv failed (network? see the pip output above)"
  fi
  mkdir -p .gpu_deps/models
  out=".gpu_deps/models/smollm2-135m-${model_blocks}blocks.q4_1.gguf"
  "$venv/bin/python" scripts/truncate_gguf.py "$default_model" "$out" --blocks "$model_blocks" >/dev/null ||
    die "scripts/truncate_gguf.py failed on $default_model"
fi

# ---- the sha (the GPU machine gets no .git) ------------------------------------------------------------------------
{
  git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown
  git log -1 --format='commit %H %s' 2>/dev/null || true
  git status --short 2>/dev/null | head -20 | sed 's/^/  /'
} >.gpu_deps/git_sha.txt

for d in .peers .gpu_deps; do
  git check-ignore -q "$d/x" 2>/dev/null || die "$d/ is not ignored by git here: it would travel twice"
done

# ---- what travels: tracked + untracked-not-ignored files, and the carried folders ---------------------------------
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
carry_bytes=$(du -sb .peers .gpu_deps | awk '{s += $1} END {print s}')
total=$(( tree_bytes + carry_bytes ))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "prepared: .peers ($(mib "$(du -sb .peers | cut -f1)")), .gpu_deps ($(mib "$(du -sb .gpu_deps | cut -f1)")); sha $(head -1 .gpu_deps/git_sha.txt)"
echo "travels: working tree $(mib "$tree_bytes") + carried $(mib "$carry_bytes") = $(mib "$total") of the ${limit_mib} MiB limit"
(( total < limit_mib * 1048576 )) ||
  die "$(mib "$total") would travel, over the ${limit_mib} MiB limit (CF_GPU_TEST_MODEL_BLOCKS=3 makes the model smaller)"
echo 'carry: [".peers", ".gpu_deps"]'
echo 'command: bash bench/gpu_first.sh'
echo 'timeout_s: 480   (the script keeps itself under CF_GPU_BUDGET=420 s; files come back from $OUT)'
