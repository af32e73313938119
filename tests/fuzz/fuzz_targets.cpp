#include "fuzz_targets.hpp"

#include <array>

namespace cf::fuzz {

namespace {
constexpr std::array kTargets = {
    Target{"gguf", gguf, "GGUF file: header, metadata, tensor infos, config, tokenizer, dequantised rows, model checks"},
    Target{"safetensors", safetensors, "safetensors file: header JSON, tensor table, canonical names, dequantised rows"},
    Target{"hf_config", hf_config, "config.json: JSON limits, config_from_hf_json, validation"},
    Target{"tokenizer_json", tokenizer_json, "tokenizer.json: spec, tokenizer build, encode/decode"},
    Target{"sentencepiece", sentencepiece, "tokenizer.model (protobuf): spec, tokenizer build, encode/decode"},
    Target{"tokenize", tokenize, "text through fixed small vocabularies: pre-token tiling, round trips, streaming"},
    Target{"json", json, "JSON parser: limits, accessors, serialise + re-parse equality"},
    Target{"chat_template", chat_template, "chat template detection and rendering, the rendering tokenized and decoded"},
};
}  // namespace

std::span<const Target> targets() { return kTargets; }

const Target* find_target(std::string_view name) {
  for (const auto& t : kTargets)
    if (t.name == name) return &t;
  return nullptr;
}

}  // namespace cf::fuzz
