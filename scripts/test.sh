#!/usr/bin/env bash
# Builds everything and runs the whole test suite (what .ci/run calls): setup, configure, build, ctest; then the
# same unit and emulator tests built with AddressSanitizer + UndefinedBehaviorSanitizer (preset `asan`; labels
# gpu and slow excluded; docs/reliability.md); then the Python package (pip install . into build/python-venv,
# pytest: python/run_tests.sh); then the HTTP server against the default build (tests/server/run_tests.sh: the
# openai client, bad input, a load test, the chat page in headless Chromium). CF_SKIP_ASAN=1 / CF_SKIP_PYTHON=1 /
# CF_SKIP_SERVER=1 skip those parts (quick local checks).
# GPU tests are labelled 'gpu' and are not part of this run (bench/gpu_first.sh runs them on a GPU machine).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh --test
cmake --preset default
cmake --build --preset default
ctest --preset default -j "$(nproc)"
if [[ "${CF_SKIP_ASAN:-0}" != 1 ]]; then
  cmake --preset asan
  cmake --build --preset asan
  ctest --preset asan -j "$(nproc)"
fi
if [[ "${CF_SKIP_PYTHON:-0}" != 1 ]]; then
  python/run_tests.sh
fi
if [[ "${CF_SKIP_SERVER:-0}" != 1 ]]; then
  tests/server/run_tests.sh build/default
fi
