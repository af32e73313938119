#!/usr/bin/env bash
# Builds and installs the Python package with `pip install .` into a virtual environment under build/ and runs its
# pytest suite (python/tests). Called by scripts/test.sh after the C++ tests; runnable on its own.
#
#   python/run_tests.sh [pytest arguments]
#
# Environment: CF_PY_VENV (default build/python-venv), PYTHON (default python3), CF_PY_PIP_ARGS (extra arguments for
# `pip install .`, e.g. "-C cmake.define.CF_CUDA=OFF"). The wheel's CMake build folder is build/python/<tag> (asked
# for here; a plain `pip install .` builds in a temporary folder), kept so that a second run only rebuilds what
# changed. pytest's "no tests collected" (exit 5) is reported and not an error.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${CF_PY_VENV:-$root/build/python-venv}"
python="${PYTHON:-python3}"

log() { printf '[python] %s\n' "$*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r python/requirements-test.txt

start=$(date +%s)
# shellcheck disable=SC2086  # CF_PY_PIP_ARGS is a list of words
"$venv/bin/python" -m pip install -q --disable-pip-version-check -C "build-dir=$root/build/python/{wheel_tag}" \
  ${CF_PY_PIP_ARGS:-} "$root"
log "pip install . took $(( $(date +%s) - start )) s"

# Run from outside the source tree so `import clusterfusion` is the installed package, not python/clusterfusion.
cd "$root/python/tests"
set +e
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  log "pytest collected no tests (exit 5): nothing to run"
  exit 0
fi
exit "$rc"
