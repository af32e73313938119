// tokenizer.json text and tokenizer.model bytes -> TokenizerSpec -> Tokenizer -> encode/decode of fixed strings.
#include "clusterfusion/common/error.hpp"
#include "fuzz_common.hpp"

namespace cf::fuzz {

namespace {
void build_and_exercise(const TokenizerSpec& spec, std::string_view input) {
  std::shared_ptr<const Tokenizer> tok;
  try {
    tok = Tokenizer::create(spec);
  } catch (const InputError&) {
    return;
  }
  CF_FUZZ_ASSERT(tok->vocab_size() > 0, "empty vocabulary accepted");
  exercise_tokenizer(*tok, input.substr(0, 1024));
}
}  // namespace

void tokenizer_json(const uint8_t* data, size_t size) {
  if (size > kMaxInputBytes) return;
  TokenizerSpec spec;
  try {
    spec = tokenizer_spec_from_hf_json_text(as_text(data, size), "fuzz/tokenizer.json");
  } catch (const InputError&) {
    return;
  }
  build_and_exercise(spec, as_text(data, size));
}

void sentencepiece(const uint8_t* data, size_t size) {
  if (size > kMaxInputBytes) return;
  TokenizerSpec spec;
  try {
    spec = tokenizer_spec_from_sentencepiece_bytes(as_text(data, size), "fuzz/tokenizer.model");
  } catch (const InputError&) {
    return;
  }
  build_and_exercise(spec, as_text(data, size));
}

}  // namespace cf::fuzz
