#!/usr/bin/env bash
# Prepares what bench/gpu_check.sh needs on the bare GPU machine, in ignored folders of this checkout, and prints
# the `carry` list for the device tool:
#   .peers/     the torch peer scripts (copied from ../shared/peers, or $CF_PEERS_DIR)
#   .gpu_deps/  GoogleTest sources (from /usr/src/googletest, Debian package `googletest`) and git_sha.txt
#               (the GPU machine gets no .git)
# Run it from anywhere, again before every GPU run (it refreshes the sha). Needs no network.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

peers_src="${CF_PEERS_DIR:-}"
if [ -z "$peers_src" ]; then
  for d in "$root/../shared/peers" /work/shared/peers; do
    if [ -f "$d/torch_decode_peer.py" ]; then peers_src="$d"; break; fi
  done
fi
if [ -z "$peers_src" ] || [ ! -f "$peers_src/torch_decode_peer.py" ]; then
  echo "prepare_gpu_run: torch_decode_peer.py not found (looked in ../shared/peers, /work/shared/peers; set CF_PEERS_DIR)" >&2
  exit 1
fi
mkdir -p .peers .gpu_deps
cp -f "$peers_src"/*.py .peers/
chmod u+w .peers/*.py

gtest_src="${CF_GTEST_SRC:-/usr/src/googletest}"
if [ ! -f "$gtest_src/CMakeLists.txt" ]; then
  echo "prepare_gpu_run: GoogleTest sources not found at $gtest_src (Debian: apt-get install googletest; or set CF_GTEST_SRC)" >&2
  exit 1
fi
rm -rf .gpu_deps/googletest
cp -r "$gtest_src" .gpu_deps/googletest
chmod -R u+w .gpu_deps/googletest

{
  git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown
  git log -1 --format='commit %H %s' 2>/dev/null || true
  git status --short 2>/dev/null | head -20 | sed 's/^/  /'
} >.gpu_deps/git_sha.txt

for d in .peers .gpu_deps; do
  if ! git check-ignore -q "$d/x" 2>/dev/null; then
    echo "prepare_gpu_run: warning: $d/ is not ignored by git here; it would travel as an untracked folder anyway" >&2
  fi
done

echo "prepared: .peers ($(du -sh .peers | cut -f1)), .gpu_deps ($(du -sh .gpu_deps | cut -f1)); sha $(head -1 .gpu_deps/git_sha.txt)"
echo 'carry: [".peers", ".gpu_deps"]'
echo 'command: bash bench/gpu_check.sh'
echo 'timeout_s: 540   (the script keeps itself under CF_GPU_CHECK_BUDGET=420 s; the machine start is extra)'
