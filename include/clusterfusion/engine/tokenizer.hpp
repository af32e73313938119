// Tokenizers: byte-level BPE (GPT-2 style: SmolLM2, Llama-3, Qwen2) and SentencePiece-style BPE (Llama-2).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cf {

// Everything a tokenizer needs, whichever file it came from (GGUF metadata, tokenizer.json, tokenizer.model).
struct TokenizerSpec {
  enum class Kind : uint8_t { ByteLevelBPE, SentencePiece };
  Kind kind = Kind::ByteLevelBPE;
  std::string pre;                  // pre-tokenizer regex family: "gpt2", "llama3"/"llama-bpe", "smollm", "qwen2", ...
  std::vector<std::string> tokens;  // id -> piece (byte-level pieces use GPT-2's byte-to-unicode alphabet)
  std::vector<float> scores;        // SentencePiece merge scores (may be empty for BPE)
  std::vector<int32_t> token_types; // ggml token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte
  std::vector<std::string> merges;  // "a b" pairs in rank order (BPE)
  int32_t bos = -1, eos = -1, unk = -1, pad = -1;
  std::vector<int32_t> end_of_generation;  // eos plus e.g. <|im_end|>, <|eot_id|>
  bool add_bos = false;
  bool add_space_prefix = false;  // SentencePiece: prepend U+2581 to the text
};

class Tokenizer {
 public:
  // Validates the spec (ids in range, merges well-formed, ...) and builds the lookup tables.
  static std::shared_ptr<const Tokenizer> create(TokenizerSpec spec);
  virtual ~Tokenizer() = default;

  // parse_special: text like "<|im_start|>" becomes its special token instead of being split into pieces.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const = 0;
  // Decodes ids to UTF-8 (invalid byte sequences from byte tokens are replaced by U+FFFD).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  // The raw bytes a single token contributes (may be a partial UTF-8 sequence); see StreamDecoder.
  virtual std::string token_bytes(int32_t id) const = 0;

  virtual const TokenizerSpec& spec() const = 0;
  int32_t vocab_size() const { return int32_t(spec().tokens.size()); }
  bool is_end_of_generation(int32_t id) const;
  // Id of an exact special/vocab piece, or -1.
  virtual int32_t find_token(std::string_view piece) const = 0;
};

// Turns a stream of token ids into printable UTF-8 chunks, holding back incomplete multi-byte sequences.
class StreamDecoder {
 public:
  explicit StreamDecoder(std::shared_ptr<const Tokenizer> tok) : tok_(std::move(tok)) {}
  std::string push(int32_t id);  // returns the newly complete text (may be empty)
  std::string flush();           // whatever is pending, invalid bytes as U+FFFD

 private:
  std::shared_ptr<const Tokenizer> tok_;
  std::string pending_;
};

}  // namespace cf
