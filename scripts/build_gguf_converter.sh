#!/usr/bin/env bash
# Prepares llama.cpp's Hugging Face -> GGUF converter (convert_hf_to_gguf.py) at the same pin as the goldens' llama.cpp
# (scripts/build_llama_cpp_python.sh): the converter is taken from the vendored llama.cpp inside the PyPI source
# package llama-cpp-python, and runs in a private virtual environment with the python packages it imports (torch,
# transformers, ...). Also the converter of an older pin (llama-cpp-python 0.3.8, llama.cpp 7841fc7, before the
# split of DeepSeek's attn_kv_b), for a legacy-format test file. Used by scripts/make_tiny_deepseek.py.
# Idempotent: returns at once when ready.
#
#   scripts/build_gguf_converter.sh          prepare (downloads ~3 GB of wheels: PyPI's torch brings CUDA libraries)
#   scripts/build_gguf_converter.sh --print  print "<python> <converter folder> <legacy converter folder>" and exit
#                                            (1 if not prepared)
#
# Environment: CF_CACHE_DIR (default ${XDG_CACHE_HOME:-$HOME/.cache}/clusterfusion); the environment lives in
# $CF_CACHE_DIR/hf-convert-venv, the converters in $CF_CACHE_DIR/llama-cpp-converter-<version>.
# Nothing from llama.cpp is written into the repository.
set -euo pipefail

llama_cpp_python_version="0.3.36"   # keep equal to scripts/build_llama_cpp_python.sh
sdist_sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
legacy_version="0.3.8"
legacy_sha256="31c91323b555c025a76a30923cead9f5695da103dd68c15cdbb4509b17f0ed77"
# the converter's own requirements (requirements/requirements-convert_hf_to_gguf.txt at this pin) where it pins them
torch_version="2.11.0"
transformers_version="4.57.6"
numpy_version="2.2.6"
safetensors_version="0.8.0"
sentencepiece_version="0.2.3"
protobuf_version="4.25.9"

cache_dir="${CF_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/clusterfusion}"
venv="$cache_dir/hf-convert-venv"
converter="$cache_dir/llama-cpp-converter-$llama_cpp_python_version"
legacy_converter="$cache_dir/llama-cpp-converter-$legacy_version"

log() { printf '[build_gguf_converter] %s\n' "$*" >&2; }

venv_works() {
  [ -x "$venv/bin/python" ] || return 1
  "$venv/bin/python" - "$torch_version" "$transformers_version" <<'EOF' >/dev/null 2>&1
import sys
import torch, transformers, safetensors, sentencepiece, numpy
assert torch.__version__.split("+")[0] == sys.argv[1], torch.__version__
assert transformers.__version__ == sys.argv[2], transformers.__version__
EOF
}

# converter_present <folder>: the converter script and its gguf-py (and conversion/ package, in newer versions)
converter_present() {
  [ -f "$1/convert_hf_to_gguf.py" ] && [ -d "$1/gguf-py" ]
}

case "${1:-}" in
  --print)
    if venv_works && converter_present "$converter" && converter_present "$legacy_converter"; then
      echo "$venv/bin/python $converter $legacy_converter"; exit 0
    fi
    log "not prepared yet: run scripts/build_gguf_converter.sh"; exit 1 ;;
  -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) log "unknown option '$1' (try --help)"; exit 2 ;;
esac

# fetch_converter <version> <sha256> <destination>: the converter files of that llama-cpp-python source package
fetch_converter() {
  local version="$1" sha="$2" dest="$3"
  converter_present "$dest" && return 0
  local tmp
  tmp="$(mktemp -d)"
  log "downloading the llama-cpp-python $version source package"
  python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" "llama-cpp-python==$version"
  local sdist="$tmp/llama_cpp_python-$version.tar.gz"
  [ -f "$sdist" ] || { log "download did not produce $sdist"; rm -rf "$tmp"; exit 1; }
  local got
  got="$(sha256sum "$sdist" | cut -d' ' -f1)"
  [ "$got" = "$sha" ] || { log "$sdist has sha256 $got, expected $sha"; rm -rf "$tmp"; exit 1; }
  local inner="llama_cpp_python-$version/vendor/llama.cpp"
  local members=("$inner/convert_hf_to_gguf.py" "$inner/gguf-py" "$inner/LICENSE")
  tar -tzf "$sdist" "$inner/conversion/__init__.py" >/dev/null 2>&1 && members+=("$inner/conversion")
  tar -xzf "$sdist" -C "$tmp" "${members[@]}"
  rm -rf "$dest"
  mkdir -p "$cache_dir"
  mv "$tmp/$inner" "$dest"
  rm -rf "$tmp"
  log "converter: $dest"
}

fetch_converter "$llama_cpp_python_version" "$sdist_sha256" "$converter"
fetch_converter "$legacy_version" "$legacy_sha256" "$legacy_converter"

if ! venv_works; then
  python3 -c "import venv, ensurepip" 2>/dev/null || {
    log "python3 cannot create virtual environments: install the Debian package python3-venv"; exit 1; }
  log "creating $venv (torch $torch_version, transformers $transformers_version)"
  python3 -m venv --clear "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "torch==$torch_version" "transformers==$transformers_version" \
    "numpy==$numpy_version" "safetensors==$safetensors_version" "sentencepiece==$sentencepiece_version" \
    "protobuf==$protobuf_version"
  venv_works || { log "installed, but the environment in $venv does not import the pinned packages"; exit 1; }
fi
log "ready"
echo "$venv/bin/python $converter $legacy_converter"
