#!/usr/bin/env bash
# Builds everything and runs the whole test suite (what .ci/run calls): setup, configure, build, ctest, then the
# Python package (pip install . into build/python-venv, pytest: python/run_tests.sh).
# GPU tests are labelled 'gpu' and are not part of this run (bench/gpu_check.sh runs them on a GPU machine).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
cmake --preset default
cmake --build --preset default
ctest --preset default -j "$(nproc)"
python/run_tests.sh
