// Tokenizers: byte-level BPE (GPT-2 style: SmolLM2, Llama-3, Qwen2) and SentencePiece-style BPE (Llama-2).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cf {

class GgufFile;

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
  bool ignore_merges = false;     // BPE: a pre-token that is itself in the vocabulary is not split (Llama-3)
  std::string source;             // file the spec came from, for error messages
};

// Token types (ggml's numbering, also used for tokenizer.json / tokenizer.model pieces).
enum TokenType : int32_t {
  kTokenNormal = 1,
  kTokenUnknown = 2,
  kTokenControl = 3,      // <|im_start|>, <s>: matched in text only when parse_special
  kTokenUserDefined = 4,  // always matched in text as a whole
  kTokenUnused = 5,
  kTokenByte = 6,         // SentencePiece byte fallback <0xAB>
};

// Spec loaders. Every error is a cf::InputError naming the file and the problem (missing tokenizer data, unknown
// tokenizer model or pre-tokenizer, malformed vocab/merges, ids out of range ...).
// From GGUF metadata: tokenizer.ggml.{model, pre, tokens, scores, token_type, merges, bos/eos/unknown/padding/eot/
// eom_token_id, add_bos_token, add_space_prefix}.
TokenizerSpec tokenizer_spec_from_gguf(const GgufFile& file);
// From a Hugging Face tokenizer.json (model.type BPE; byte-level or SentencePiece-style); reads
// tokenizer_config.json beside it, when present, for bos/eos tokens and add_bos_token.
TokenizerSpec tokenizer_spec_from_hf_json(const std::string& path);
// Same from text already in memory (no tokenizer_config.json); `source` names it in errors.
TokenizerSpec tokenizer_spec_from_hf_json_text(std::string_view json_text, const std::string& source);
// From a SentencePiece tokenizer.model (protobuf; BPE models with the identity normaliser, as Llama-2's).
TokenizerSpec tokenizer_spec_from_sentencepiece(const std::string& path);
TokenizerSpec tokenizer_spec_from_sentencepiece_bytes(std::string_view bytes, const std::string& source);

// Splits text into pre-tokens the way the named byte-level BPE family's regex does ("gpt2", "llama3", "qwen2",
// "smollm" and their aliases, see canonical_pre_tokenizer). cf::InputError for an unknown family.
std::vector<std::string_view> pre_tokenize(std::string_view pre, std::string_view text);
// Canonical family name for a GGUF tokenizer.ggml.pre value ("llama-bpe" -> "llama3", "" -> "gpt2", ...), or "" when
// the value is not supported.
std::string canonical_pre_tokenizer(std::string_view pre);

// A piece of text to tokenize, and whether special-token text inside it ("<|im_start|>", "<s>") becomes the special
// token. Text from users is tokenized with parse_special = false: it can never produce a control token.
struct TextPart {
  std::string_view text;
  bool parse_special = false;
};

class Tokenizer {
 public:
  // Validates the spec (ids in range, merges well-formed, ...) and builds the lookup tables.
  static std::shared_ptr<const Tokenizer> create(TokenizerSpec spec);
  virtual ~Tokenizer() = default;

  // parse_special: text like "<|im_start|>" becomes its special token instead of being split into pieces.
  // User-defined tokens (type 4) are matched either way.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const = 0;
  // Tokenizes the concatenation of the parts as one text (pre-tokens and merges run across part boundaries, so the
  // ids equal encode(joined, add_bos, true) whenever no part without parse_special holds special-token text), but a
  // special token is recognised only when its text lies wholly inside one part with parse_special. The chat template
  // renders a conversation into such parts: its markup with special tokens, the messages' contents without.
  virtual std::vector<int32_t> encode_parts(std::span<const TextPart> parts, bool add_bos) const = 0;
  // Decodes ids to UTF-8 (invalid byte sequences from byte tokens are replaced by U+FFFD; control tokens appear as
  // their text; ids outside the vocabulary contribute nothing). SentencePiece: the space prefix added by encode is
  // removed again, so decode(encode(text)) == text.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  // The raw bytes a single token contributes (may be a partial UTF-8 sequence); see StreamDecoder.
  virtual std::string token_bytes(int32_t id) const = 0;
  // The vocabulary string of a token ("Ġthe", "▁the", "<|im_end|>"); empty when out of range.
  virtual std::string_view token_text(int32_t id) const = 0;
  virtual int32_t token_type(int32_t id) const = 0;

  // Limits: inputs beyond them throw cf::InputError instead of taking unbounded time or memory.
  static constexpr size_t kMaxTextBytes = size_t(64) << 20;
  static constexpr size_t kMaxVocab = size_t(1) << 21;

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
