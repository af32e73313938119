#!/usr/bin/env bash
# Prepares llama.cpp's Hugging Face -> GGUF converter (convert_hf_to_gguf.py) at the same pin as the goldens' llama.cpp
# (scripts/build_llama_cpp_python.sh): the converter is taken from the vendored llama.cpp inside the PyPI source
# package llama-cpp-python, and runs in a private virtual environment with the python packages it imports (torch,
# transformers, ...). Used by scripts/make_tiny_deepseek.py. Idempotent: returns at once when ready.
#
#   scripts/build_gguf_converter.sh          prepare (downloads ~3 GB of wheels: PyPI's torch brings CUDA libraries)
#   scripts/build_gguf_converter.sh --print  print "<python> <converter folder>" and exit (1 if not prepared)
#
# Environment: CF_CACHE_DIR (default ${XDG_CACHE_HOME:-$HOME/.cache}/clusterfusion); the environment lives in
# $CF_CACHE_DIR/hf-convert-venv, the converter in $CF_CACHE_DIR/llama-cpp-converter-<version>.
# Nothing from llama.cpp is written into the repository.
set -euo pipefail

llama_cpp_python_version="0.3.36"   # keep equal to scripts/build_llama_cpp_python.sh
sdist_sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
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

converter_present() {
  [ -f "$converter/convert_hf_to_gguf.py" ] && [ -d "$converter/conversion" ] && [ -d "$converter/gguf-py" ]
}

case "${1:-}" in
  --print)
    if venv_works && converter_present; then echo "$venv/bin/python $converter"; exit 0; fi
    log "not prepared yet: run scripts/build_gguf_converter.sh"; exit 1 ;;
  -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) log "unknown option '$1' (try --help)"; exit 2 ;;
esac

if ! converter_present; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  log "downloading the llama-cpp-python $llama_cpp_python_version source package"
  python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" \
    "llama-cpp-python==$llama_cpp_python_version"
  sdist="$tmp/llama_cpp_python-$llama_cpp_python_version.tar.gz"
  [ -f "$sdist" ] || { log "download did not produce $sdist"; exit 1; }
  got="$(sha256sum "$sdist" | cut -d' ' -f1)"
  [ "$got" = "$sdist_sha256" ] || { log "$sdist has sha256 $got, expected $sdist_sha256"; exit 1; }
  inner="llama_cpp_python-$llama_cpp_python_version/vendor/llama.cpp"
  tar -xzf "$sdist" -C "$tmp" "$inner/convert_hf_to_gguf.py" "$inner/conversion" "$inner/gguf-py" "$inner/LICENSE"
  rm -rf "$converter"
  mkdir -p "$cache_dir"
  mv "$tmp/$inner" "$converter"
  log "converter: $converter"
fi

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
echo "$venv/bin/python $converter"
