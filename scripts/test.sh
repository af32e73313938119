#!/usr/bin/env bash
# Builds everything and runs the whole test suite (what .ci/run calls): setup, configure, build, ctest; then the
# same unit and emulator tests built with AddressSanitizer + UndefinedBehaviorSanitizer (preset `asan`; labels
# gpu and slow excluded; docs/reliability.md). CF_SKIP_ASAN=1 skips the sanitizer run (quick local checks).
# GPU tests are labelled 'gpu' and are not part of this run (bench/gpu_check.sh runs them on a GPU machine).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
cmake --preset default
cmake --build --preset default
ctest --preset default -j "$(nproc)"
if [[ "${CF_SKIP_ASAN:-0}" != 1 ]]; then
  cmake --preset asan
  cmake --build --preset asan
  ctest --preset asan -j "$(nproc)"
fi
