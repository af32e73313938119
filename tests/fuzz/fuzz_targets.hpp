// Fuzz entry points. Each takes arbitrary bytes, feeds them to one loader (and what runs after it), and returns
// normally when the input is accepted or refused with cf::InputError. Anything else is a finding: another exception
// escapes (libFuzzer reports it as a crash), a property check fails (CF_FUZZ_ASSERT aborts), or a sanitizer fires.
// The libFuzzer binaries (CF_FUZZ builds) and the regression test of the normal unit suite call the same functions.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace cf::fuzz {

using Entry = void (*)(const uint8_t* data, size_t size);

struct Target {
  std::string_view name;  // also the folder name under tests/fuzz/regressions/ and the fuzz binary's suffix
  Entry entry;
  std::string_view what;  // one line for docs and --list
};

// GGUF bytes: GgufFile, every metadata getter, config, tokenizer spec + tokenizer, dequantised rows, the model
// tensor checks.
void gguf(const uint8_t* data, size_t size);
// Safetensors bytes: header JSON, tensor table, canonical names, dequantised rows.
void safetensors(const uint8_t* data, size_t size);
// config.json text: JSON with the loaders' limits, then config_from_hf_json.
void hf_config(const uint8_t* data, size_t size);
// tokenizer.json text: spec, tokenizer, encode/decode of fixed strings.
void tokenizer_json(const uint8_t* data, size_t size);
// tokenizer.model bytes (protobuf): spec, tokenizer, encode/decode of fixed strings.
void sentencepiece(const uint8_t* data, size_t size);
// Text for the small fixed vocabularies of tests/data/tokenizer: pre-tokenizer tiling, ids in range, decode round
// trips, stream decoding equal to decoding.
void tokenize(const uint8_t* data, size_t size);
// JSON text: parse, walk, serialise, re-parse and compare.
void json(const uint8_t* data, size_t size);
// Chat templates: detection from Jinja text or by name, rendering of fuzzed conversations, tokenizing the result.
void chat_template(const uint8_t* data, size_t size);

std::span<const Target> targets();
const Target* find_target(std::string_view name);

// Prints the violated property and aborts (so the fuzzer keeps the input).
[[noreturn]] void property_violated(const char* file, int line, const char* condition, std::string_view detail);

}  // namespace cf::fuzz

#define CF_FUZZ_ASSERT(cond, detail)                                                        \
  do {                                                                                      \
    if (!(cond)) ::cf::fuzz::property_violated(__FILE__, __LINE__, #cond, (detail));        \
  } while (0)
