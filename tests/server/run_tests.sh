#!/usr/bin/env bash
# Runs the server tests (pytest, tests/server) against a built `clusterfusion` binary: the openai client, bad input,
# a 32-client load test with disconnects, shutdown, and the chat page in headless Chromium (its screenshot goes to
# build/test-artifacts/chat_page.png). Called by scripts/test.sh after the C++ tests; runnable on its own.
#
#   tests/server/run_tests.sh [BUILD_DIR] [pytest arguments, e.g. -k load]    (BUILD_DIR default: build/default)
#
# Needs the default model and headless Chromium (scripts/setup.sh --test installs both); the Python packages
# (tests/server/requirements.txt) go into a virtual environment, build/server-venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${1:-$root/build/default}"
[ $# -gt 0 ] && shift
build="$(cd "$build" && pwd)"
venv="$root/build/server-venv"
log() { printf '[server tests] %s\n' "$*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/tests/server/requirements.txt"

start=$(date +%s)
cd "$root/tests/server"
set +e
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$root/tests/server" --cli "$build/clusterfusion" \
  --artifacts "$root/build/test-artifacts" "$@"
rc=$?
set -e
log "took $(( $(date +%s) - start )) s"
exit "$rc"
