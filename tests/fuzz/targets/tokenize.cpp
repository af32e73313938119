// Fuzzed text through the small real vocabularies of tests/data/tokenizer (trained with Hugging Face tokenizers and
// sentencepiece): byte 0 picks the tokenizer and the flags, the rest is the text. Properties: pre-tokens tile the
// text, ids are in the vocabulary, valid UTF-8 decodes back to itself, streamed decoding equals decoding.
#include <memory>
#include <string>
#include <vector>

#include "clusterfusion/common/json.hpp"
#include "fuzz_common.hpp"

namespace cf::fuzz {

namespace {
struct Fixed {
  std::string name;
  std::shared_ptr<const Tokenizer> tok;
};

std::vector<Fixed> load_fixed() {
  const std::string dir = std::string(CF_SOURCE_DIR) + "/tests/data/tokenizer/";
  std::vector<Fixed> out;
  for (const char* name : {"tiny_gpt2", "tiny_llama3", "tiny_qwen2", "tiny_smollm", "tiny_spm"})
    out.push_back({std::string(name) + "/tokenizer.json",
                   Tokenizer::create(tokenizer_spec_from_hf_json(dir + name + "/tokenizer.json"))});
  out.push_back({"tiny_spm/tokenizer.model",
                 Tokenizer::create(tokenizer_spec_from_sentencepiece(dir + "tiny_spm/tokenizer.model"))});
  return out;
}

const std::vector<Fixed>& fixed() {
  static const std::vector<Fixed> tokenizers = load_fixed();
  return tokenizers;
}

void check_pre_tokens(const std::string& pre, std::string_view text) {
  const auto pieces = pre_tokenize(pre, text);
  const char* at = text.data();
  for (const auto piece : pieces) {
    CF_FUZZ_ASSERT(!piece.empty(), "empty pre-token (" + pre + ") in '" + show(text) + "'");
    CF_FUZZ_ASSERT(piece.data() == at, "pre-tokens (" + pre + ") do not tile '" + show(text) + "'");
    at += piece.size();
  }
  CF_FUZZ_ASSERT(at == text.data() + text.size(), "pre-tokens (" + pre + ") do not cover '" + show(text) + "'");
}

bool contains(std::string_view text, std::string_view what) { return text.find(what) != std::string_view::npos; }
}  // namespace

void tokenize(const uint8_t* data, size_t size) {
  if (size == 0 || size > kMaxInputBytes) return;
  const auto& all = fixed();
  const Fixed& f = all[data[0] % all.size()];
  const bool parse_special = (data[0] >> 3) & 1;
  const bool add_bos = (data[0] >> 4) & 1;
  const std::string_view text = as_text(data + 1, size - 1);
  const Tokenizer& tok = *f.tok;
  const TokenizerSpec& spec = tok.spec();
  const bool byte_level = spec.kind == TokenizerSpec::Kind::ByteLevelBPE;
  const std::string where = f.name + (parse_special ? " (special)" : "") + ": '" + show(text) + "'";

  if (byte_level) check_pre_tokens(spec.pre, text);

  const auto ids = tok.encode(text, add_bos, parse_special);
  bool plain = true;  // only normal and byte pieces: decode must give the text back
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    CF_FUZZ_ASSERT(id >= 0 && id < tok.vocab_size(), "id " + std::to_string(id) + " out of range for " + where);
    if (i == 0 && add_bos && id == spec.bos) continue;
    const int32_t type = tok.token_type(id);
    if (id == spec.unk || (type != kTokenNormal && type != kTokenByte)) plain = false;
  }
  std::vector<int32_t> body = ids;
  if (add_bos && spec.bos >= 0) {
    CF_FUZZ_ASSERT(!ids.empty() && ids[0] == spec.bos, "BOS missing for " + where);
    body.erase(body.begin());
  }
  if (!add_bos || spec.bos < 0) CF_FUZZ_ASSERT(ids.size() == body.size(), "unexpected BOS for " + where);

  const std::string decoded = tok.decode(body);
  CF_FUZZ_ASSERT(json::is_valid_utf8(decoded), "decode gave invalid UTF-8 for " + where);
  // SentencePiece reads U+2581 in the text as a space (as sentencepiece does), so such text does not round-trip.
  const bool round_trips = plain && json::is_valid_utf8(text) && (byte_level || !contains(text, "\xe2\x96\x81"));
  if (round_trips) CF_FUZZ_ASSERT(decoded == text, "decode(encode(text)) = '" + show(decoded) + "' for " + where);
  if (!parse_special && !contains(text, "<")) {
    // Without special tokens, ids never depend on parse_special.
    CF_FUZZ_ASSERT(tok.encode(text, false, true) == body, "parse_special changed ids without '<' in " + where);
  }

  if (byte_level) {
    // Streaming any id sequence (the text's bytes read as ids, then the encoded ids) gives what decode gives.
    for (const auto& seq : {body, ids_from_bytes(text, 512)}) {
      StreamDecoder stream(f.tok);
      std::string streamed;
      for (const int32_t id : seq) streamed += stream.push(id);
      streamed += stream.flush();
      CF_FUZZ_ASSERT(streamed == tok.decode(seq), "StreamDecoder '" + show(streamed) + "' != decode for " + where);
    }
  }
}

}  // namespace cf::fuzz
