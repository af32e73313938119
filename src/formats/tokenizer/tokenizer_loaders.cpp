// TokenizerSpec loaders: GGUF metadata, Hugging Face tokenizer.json (+ tokenizer_config.json), SentencePiece
// tokenizer.model (a minimal, bounds-checked protobuf reader).
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/json.hpp"
#include "clusterfusion/formats/gguf.hpp"
#include "clusterfusion/tokenizer/tokenizer.hpp"
#include "mapped_file.hpp"

namespace cf {

namespace {
// Real tokenizer.json files are under ~35 MB and hold at least ~3.5 bytes per JSON value (merges as ["a","b"]);
// refusing denser or bigger texts bounds the parsed tree (~100 bytes per value) for hostile files.
constexpr size_t kMaxTokenizerJsonBytes = size_t(64) << 20;
constexpr size_t kMinBytesPerJsonValue = 3;
// The largest real ones (262k tokens, 500k merges as ["a", "b"] pairs) hold ~2M values; 2^22 bounds the tree to
// ~0.6 GB however the 64 MB are filled.
constexpr size_t kMaxTokenizerJsonValues = size_t(1) << 22;
constexpr size_t kMaxSentencePieceBytes = size_t(64) << 20;
constexpr size_t kMaxConfigJsonBytes = size_t(16) << 20;

int32_t id_or_none(const std::string& source, const char* what, std::optional<int64_t> v) {
  if (!v) return -1;
  if (*v < -1 || *v > std::numeric_limits<int32_t>::max())
    throw InputError(source + ": " + what + " = " + std::to_string(*v) + " is out of range");
  return int32_t(*v);
}
}  // namespace

// ---- GGUF --------------------------------------------------------------------------------------------------------

TokenizerSpec tokenizer_spec_from_gguf(const GgufFile& f) {
  TokenizerSpec s;
  s.source = f.path();
  const auto model = f.get_string("tokenizer.ggml.model");
  if (!model) throw InputError(f.path() + ": missing tokenizer data (no 'tokenizer.ggml.model' in the metadata)");
  if (*model == "gpt2") s.kind = TokenizerSpec::Kind::ByteLevelBPE;
  else if (*model == "llama") s.kind = TokenizerSpec::Kind::SentencePiece;
  else throw InputError(f.path() + ": unsupported tokenizer model " + quote_text(*model) + " (supported: gpt2, llama)");

  auto tokens = f.get_string_array("tokenizer.ggml.tokens");
  if (!tokens || tokens->empty()) throw InputError(f.path() + ": missing tokenizer data (no 'tokenizer.ggml.tokens')");
  if (tokens->size() > Tokenizer::kMaxVocab)
    throw InputError(f.path() + ": tokenizer.ggml.tokens has " + std::to_string(tokens->size()) + " entries (limit " +
                     std::to_string(Tokenizer::kMaxVocab) + ")");
  s.tokens = std::move(*tokens);
  if (auto scores = f.get_float_array("tokenizer.ggml.scores")) s.scores = std::move(*scores);
  if (auto types = f.get_int_array("tokenizer.ggml.token_type")) {
    s.token_types.reserve(types->size());
    for (const int64_t t : *types) s.token_types.push_back(int32_t(std::clamp<int64_t>(t, 0, 255)));
  }
  if (auto merges = f.get_string_array("tokenizer.ggml.merges")) s.merges = std::move(*merges);
  if (s.kind == TokenizerSpec::Kind::ByteLevelBPE && s.merges.empty())
    throw InputError(f.path() + ": missing tokenizer data (no 'tokenizer.ggml.merges' for a BPE tokenizer)");
  if (s.kind == TokenizerSpec::Kind::SentencePiece && s.scores.empty())
    throw InputError(f.path() + ": missing tokenizer data (no 'tokenizer.ggml.scores' for a SentencePiece tokenizer)");

  s.pre = f.get_string("tokenizer.ggml.pre").value_or("default");
  if (s.kind == TokenizerSpec::Kind::ByteLevelBPE) {
    const std::string canonical = canonical_pre_tokenizer(s.pre);
    if (canonical.empty())
      throw InputError(f.path() + ": unsupported pre-tokenizer " + quote_text(s.pre) +
                       " in tokenizer.ggml.pre (supported: gpt2/default, llama-bpe/llama3, qwen2, smollm)");
    s.ignore_merges = canonical == "llama3";
  }
  s.bos = id_or_none(f.path(), "tokenizer.ggml.bos_token_id", f.get_int("tokenizer.ggml.bos_token_id"));
  s.eos = id_or_none(f.path(), "tokenizer.ggml.eos_token_id", f.get_int("tokenizer.ggml.eos_token_id"));
  s.unk = id_or_none(f.path(), "tokenizer.ggml.unknown_token_id", f.get_int("tokenizer.ggml.unknown_token_id"));
  s.pad = id_or_none(f.path(), "tokenizer.ggml.padding_token_id", f.get_int("tokenizer.ggml.padding_token_id"));
  for (const char* key : {"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    const int32_t id = id_or_none(f.path(), key, f.get_int(key));
    if (id >= 0) s.end_of_generation.push_back(id);
  }
  const bool spm = s.kind == TokenizerSpec::Kind::SentencePiece;
  s.add_bos = f.get_bool("tokenizer.ggml.add_bos_token").value_or(spm);
  s.add_space_prefix = f.get_bool("tokenizer.ggml.add_space_prefix").value_or(spm);
  return s;
}

// ---- Hugging Face tokenizer.json ---------------------------------------------------------------------------------

namespace {
// The pre-tokenizer regexes, as tokenizer.json spells them, of the families pre_tokenize() implements.
constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::string type_of(const json::Value& v) {
  const auto* t = v.is_object() ? v.find("type") : nullptr;
  return (t && t->is_string()) ? t->as_string() : std::string();
}

bool flag(const json::Value& v, std::string_view key, bool fallback) {
  const auto* f = v.find(key);
  return (f && f->is_bool()) ? f->as_bool() : fallback;
}

// Maps a tokenizer.json pre_tokenizer to one of our families, or "" when it is none of them.
std::string byte_level_family(const json::Value& pre) {
  const std::string t = type_of(pre);
  if (t == "ByteLevel") return flag(pre, "use_regex", true) ? "gpt2" : "";
  if (t != "Sequence") return "";
  const auto* list = pre.find("pretokenizers");
  if (!list || !list->is_array()) return "";
  const auto& items = list->as_array();
  if (items.size() != 2) return "";
  const std::string first = type_of(items[0]), second = type_of(items[1]);
  if (first == "Digits" && flag(items[0], "individual_digits", false) && second == "ByteLevel" &&
      flag(items[1], "use_regex", true))
    return "smollm";
  if (first == "Split" && second == "ByteLevel" && !flag(items[1], "use_regex", true)) {
    const auto* pattern = items[0].find("pattern");
    const auto* regex = (pattern && pattern->is_object()) ? pattern->find("Regex") : nullptr;
    const auto* behavior = items[0].find("behavior");
    if (!regex || !regex->is_string() || !behavior || !behavior->is_string() || behavior->as_string() != "Isolated") return "";
    if (regex->as_string() == kGpt2Regex) return "gpt2";
    if (regex->as_string() == kLlama3Regex) return "llama3";
    if (regex->as_string() == kQwen2Regex) return "qwen2";
  }
  return "";
}

// SentencePiece-style tokenizer.json (Llama-2): normalizer Prepend("▁") + Replace(" ", "▁"), or a Metaspace
// pre-tokenizer. Returns true (and the prefix flag) when the file has that shape.
bool sentencepiece_style(const json::Value& doc, bool& add_space_prefix) {
  const auto* norm = doc.find("normalizer");
  const auto* pre = doc.find("pre_tokenizer");
  if (pre && type_of(*pre) == "Metaspace") {
    const auto* scheme = pre->find("prepend_scheme");
    add_space_prefix = scheme && scheme->is_string() ? scheme->as_string() != "never" : flag(*pre, "add_prefix_space", true);
    return true;
  }
  if (!norm || type_of(*norm) != "Sequence") return false;
  const auto* list = norm->find("normalizers");
  if (!list || !list->is_array()) return false;
  bool replace = false;
  add_space_prefix = false;
  for (const auto& n : list->as_array()) {
    if (type_of(n) == "Prepend") add_space_prefix = true;
    if (type_of(n) == "Replace") replace = true;
  }
  return replace;
}

std::string token_content(const json::Value& v) {
  if (v.is_string()) return v.as_string();
  if (v.is_object())
    if (const auto* c = v.find("content"); c && c->is_string()) return c->as_string();
  return {};
}

TokenizerSpec spec_from_json_doc(const json::Value& doc, const std::string& source) {
  auto fail = [&](const std::string& what) -> void { throw InputError(source + ": " + what); };
  if (!doc.is_object()) fail("expected a JSON object");
  const auto* model = doc.find("model");
  if (!model || !model->is_object()) fail("missing tokenizer data ('model')");
  const std::string model_type = type_of(*model);
  if (model_type != "BPE") fail("unsupported tokenizer model type " + quote_text(model_type) + " (supported: BPE)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (const auto* v = model->find(key); v && !v->is_null() && !(v->is_string() && v->as_string().empty()))
      fail(std::string("BPE option '") + key + "' is not supported");

  TokenizerSpec s;
  s.source = source;
  bool prefix = false;
  const bool spm = sentencepiece_style(doc, prefix) || flag(*model, "byte_fallback", false);
  if (spm) {
    s.kind = TokenizerSpec::Kind::SentencePiece;
    s.add_space_prefix = prefix;
  } else {
    s.kind = TokenizerSpec::Kind::ByteLevelBPE;
    const auto* pre = doc.find("pre_tokenizer");
    s.pre = pre ? byte_level_family(*pre) : "";
    if (s.pre.empty()) fail("unsupported pre_tokenizer (supported: the gpt2, llama3, qwen2 and smollm byte-level families)");
    if (const auto* norm = doc.find("normalizer"); norm && !norm->is_null() && type_of(*norm) != "NFC")
      fail("unsupported normalizer " + quote_text(type_of(*norm)) + " for a byte-level tokenizer");
    s.ignore_merges = flag(*model, "ignore_merges", false);
  }

  // Vocab: {piece: id}; ids must tile 0..n-1 together with the added tokens.
  const auto* vocab = model->find("vocab");
  if (!vocab || !vocab->is_object()) fail("missing tokenizer data ('model.vocab')");
  const auto* added = doc.find("added_tokens");
  const size_t added_count = (added && added->is_array()) ? added->as_array().size() : 0;
  const size_t total = vocab->as_object().size() + added_count;
  if (total == 0) fail("empty vocabulary");
  if (total > Tokenizer::kMaxVocab) fail("vocabulary of " + std::to_string(total) + " tokens exceeds the limit");
  auto place = [&](const std::string& piece, const json::Value& idv, int32_t type) {
    if (!idv.is_integer() || idv.as_int() < 0 || idv.as_int() >= int64_t(Tokenizer::kMaxVocab))
      fail("token " + quote_text(piece) + " has an invalid id");
    // Ids tile 0..n-1 with n <= total, so a larger id is an error, caught before it sizes the tables (memory stays
    // proportional to the file).
    if (idv.as_int() >= int64_t(total))
      fail("token ids are not contiguous: token " + quote_text(piece) + " has id " + std::to_string(idv.as_int()) +
           " in a vocabulary of " + std::to_string(total) + " tokens");
    const auto id = size_t(idv.as_int());
    if (id >= s.tokens.size()) {
      s.tokens.resize(id + 1);
      s.token_types.resize(id + 1, 0);
    }
    if (s.token_types[id] != 0 && s.tokens[id] != piece) fail("id " + std::to_string(id) + " is used by two different tokens");
    s.tokens[id] = piece;
    s.token_types[id] = type;
  };
  for (const auto& [piece, idv] : vocab->as_object()) place(piece, idv, kTokenNormal);
  if (added && added->is_array()) {
    for (const auto& t : added->as_array()) {
      const auto* content = t.find("content");
      const auto* id = t.find("id");
      if (!content || !content->is_string() || !id) fail("malformed entry in added_tokens");
      place(content->as_string(), *id, flag(t, "special", false) ? kTokenControl : kTokenUserDefined);
    }
  }
  for (size_t i = 0; i < s.tokens.size(); ++i)
    if (s.token_types[i] == 0) fail("token ids are not contiguous: id " + std::to_string(i) + " is missing");

  const auto* merges = model->find("merges");
  if (!merges || !merges->is_array()) fail("missing tokenizer data ('model.merges')");
  s.merges.reserve(merges->as_array().size());
  for (const auto& m : merges->as_array()) {
    if (m.is_string()) {
      s.merges.push_back(m.as_string());
    } else if (m.is_array() && m.as_array().size() == 2 && m.as_array()[0].is_string() && m.as_array()[1].is_string()) {
      s.merges.push_back(m.as_array()[0].as_string() + " " + m.as_array()[1].as_string());
    } else {
      fail("malformed merge #" + std::to_string(s.merges.size()));
    }
  }

  if (const auto* unk = model->find("unk_token"); unk && unk->is_string()) {
    for (size_t i = 0; i < s.tokens.size(); ++i)
      if (s.tokens[i] == unk->as_string()) s.unk = int32_t(i);
    if (s.unk >= 0 && s.token_types[size_t(s.unk)] == kTokenNormal) s.token_types[size_t(s.unk)] = kTokenUnknown;
  }

  // A post-processor template that starts with a special token adds it as BOS (Llama-3: <|begin_of_text|>).
  if (const auto* post = doc.find("post_processor"); post && post->is_object()) {
    std::vector<const json::Value*> steps{post};
    if (type_of(*post) == "Sequence")
      if (const auto* list = post->find("processors"); list && list->is_array())
        for (const auto& p : list->as_array()) steps.push_back(&p);
    for (const auto* p : steps) {
      const auto* single = type_of(*p) == "TemplateProcessing" ? p->find("single") : nullptr;
      if (!single || !single->is_array() || single->as_array().empty()) continue;
      const auto* first = single->as_array()[0].is_object() ? single->as_array()[0].find("SpecialToken") : nullptr;
      const auto* first_id = (first && first->is_object()) ? first->find("id") : nullptr;
      if (!first_id || !first_id->is_string()) continue;
      for (size_t i = 0; i < s.tokens.size(); ++i)
        if (s.tokens[i] == first_id->as_string()) {
          s.bos = int32_t(i);
          s.add_bos = true;
        }
    }
  }

  if (spm) {
    // Byte pieces, and scores from merge ranks: SentencePiece merges the highest-scoring piece first, so the
    // piece made by merge r gets score -r; other pieces can only appear as single characters.
    StringMap<int32_t> ids;
    for (size_t i = 0; i < s.tokens.size(); ++i) ids.emplace(s.tokens[i], int32_t(i));
    s.scores.assign(s.tokens.size(), -1e30f);
    for (size_t r = s.merges.size(); r-- > 0;) {
      const std::string& m = s.merges[r];
      const size_t sp = m.find(' ');
      if (sp == std::string::npos) fail("malformed merge #" + std::to_string(r));
      const auto it = ids.find(m.substr(0, sp) + m.substr(sp + 1));
      if (it != ids.end()) s.scores[size_t(it->second)] = -float(r);
    }
    for (size_t i = 0; i < s.tokens.size(); ++i) {
      const auto& t = s.tokens[i];
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && s.token_types[i] == kTokenNormal)
        s.token_types[i] = kTokenByte;
    }
    s.merges.clear();
    s.add_bos = true;
  }
  return s;
}

// bos/eos/add_bos from tokenizer_config.json (strings or {"content": ...} objects naming tokens).
void apply_tokenizer_config(TokenizerSpec& s, const std::string& path) {
  const json::Value cfg = parse_json_file(path, kMaxConfigJsonBytes);
  if (!cfg.is_object()) throw InputError(path + ": expected a JSON object");
  auto find_id = [&](const std::string& text) -> int32_t {
    for (size_t i = 0; i < s.tokens.size(); ++i)
      if (s.tokens[i] == text) return int32_t(i);
    return -1;
  };
  for (auto [key, slot] : {std::pair{"bos_token", &s.bos}, {"eos_token", &s.eos}, {"unk_token", &s.unk}, {"pad_token", &s.pad}}) {
    if (const auto* v = cfg.find(key)) {
      const std::string text = token_content(*v);
      if (text.empty()) continue;
      const int32_t id = find_id(text);
      if (id < 0) throw InputError(path + ": " + key + " " + quote_text(text) + " is not in the vocabulary");
      *slot = id;
    }
  }
  if (const auto* v = cfg.find("add_bos_token"); v && v->is_bool()) s.add_bos = v->as_bool();
}
}  // namespace

TokenizerSpec tokenizer_spec_from_hf_json_text(std::string_view text, const std::string& source) {
  if (text.size() > kMaxTokenizerJsonBytes)
    throw InputError(source + ": " + std::to_string(text.size()) + " bytes, more than the " +
                     std::to_string(kMaxTokenizerJsonBytes) + " allowed for tokenizer.json");
  if (json_value_bound(text) > text.size() / kMinBytesPerJsonValue + 64)
    throw InputError(source + ": too many JSON values for the file size (not a tokenizer.json?)");
  json::Value doc;
  try {
    json::ParseLimits limits;
    limits.max_bytes = kMaxTokenizerJsonBytes;
    limits.max_depth = 64;
    limits.max_values = kMaxTokenizerJsonValues;
    doc = json::parse(text, limits);
  } catch (const InputError& e) {
    throw InputError(source + ": " + e.what());
  }
  return spec_from_json_doc(doc, source);
}

TokenizerSpec tokenizer_spec_from_hf_json(const std::string& path) {
  TokenizerSpec s = tokenizer_spec_from_hf_json_text(read_text_file(path, kMaxTokenizerJsonBytes), path);
  const auto config = std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  if (path_kind(config.string()) != PathKind::Missing) apply_tokenizer_config(s, config.string());
  return s;
}

// ---- SentencePiece tokenizer.model ---------------------------------------------------------------------------

namespace {
// Protobuf wire format, only what ModelProto needs: varints, fixed32, length-delimited fields; groups rejected.
class ProtoReader {
 public:
  ProtoReader(std::string_view data, const std::string& source, std::string where)
      : data_(data), source_(source), where_(std::move(where)) {}

  bool done() const { return pos_ >= data_.size(); }

  struct Field {
    uint32_t number;
    uint32_t wire;
    uint64_t varint = 0;
    uint32_t fixed32 = 0;
    std::string_view bytes;
  };

  Field next() {
    const size_t at = pos_;
    const uint64_t key = varint();
    Field f;
    f.number = uint32_t(key >> 3);
    f.wire = uint32_t(key & 7);
    if (f.number == 0 || key >> 3 > (uint64_t(1) << 29)) fail(at, "invalid field number");
    switch (f.wire) {
      case 0: f.varint = varint(); break;
      case 1: take(8); break;
      case 2: {
        const uint64_t len = varint();
        if (len > data_.size() - pos_) fail(at, "field " + std::to_string(f.number) + " length " + std::to_string(len) + " exceeds the " + std::to_string(data_.size() - pos_) + " bytes left");
        f.bytes = take(size_t(len));
        break;
      }
      case 5: {
        const auto b = take(4);
        std::memcpy(&f.fixed32, b.data(), 4);
        break;
      }
      default: fail(at, "unsupported wire type " + std::to_string(f.wire));
    }
    return f;
  }

  [[noreturn]] void fail(size_t at, const std::string& what) const {
    throw InputError(source_ + ": " + what + " (" + where_ + ", byte " + std::to_string(at) + ")");
  }

 private:
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) fail(pos_, "truncated varint");
      const auto b = static_cast<uint8_t>(data_[pos_++]);
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    fail(pos_, "varint longer than 10 bytes");
  }
  std::string_view take(size_t n) {
    if (n > data_.size() - pos_) fail(pos_, "truncated field");
    const auto s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }

  std::string_view data_;
  const std::string& source_;
  std::string where_;
  size_t pos_ = 0;
};
}  // namespace

TokenizerSpec tokenizer_spec_from_sentencepiece_bytes(std::string_view bytes, const std::string& source) {
  // ModelProto: 1 pieces (repeated SentencePiece {1 piece, 2 score, 3 type}), 2 trainer_spec {3 model_type,
  // 35 byte_fallback, 40 unk_id, 41 bos_id, 42 eos_id, 43 pad_id}, 3 normalizer_spec {1 name, 3 add_dummy_prefix,
  // 4 remove_extra_whitespaces}. Defaults are proto2's declared ones.
  TokenizerSpec s;
  s.source = source;
  s.kind = TokenizerSpec::Kind::SentencePiece;
  int64_t model_type = 1, unk = 0, bos = 1, eos = 2, pad = -1;
  bool add_dummy_prefix = true, remove_extra_whitespaces = true;
  std::string normalizer = "nmt_nfkc";
  bool have_normalizer = false;
  ProtoReader top(bytes, source, "ModelProto");
  if (bytes.empty()) top.fail(0, "empty file");
  while (!top.done()) {
    const auto f = top.next();
    if (f.number == 1 && f.wire == 2) {
      if (s.tokens.size() >= Tokenizer::kMaxVocab) top.fail(0, "more than " + std::to_string(Tokenizer::kMaxVocab) + " pieces");
      ProtoReader piece(f.bytes, source, "piece #" + std::to_string(s.tokens.size()));
      std::string text;
      float score = 0;
      int64_t type = 1;
      while (!piece.done()) {
        const auto p = piece.next();
        if (p.number == 1 && p.wire == 2) text = std::string(p.bytes);
        else if (p.number == 2 && p.wire == 5) std::memcpy(&score, &p.fixed32, 4);
        else if (p.number == 3 && p.wire == 0) type = int64_t(p.varint);
      }
      if (type < 1 || type > 6) piece.fail(0, "unknown piece type " + std::to_string(type));
      if (!std::isfinite(score)) piece.fail(0, "score is not finite");
      s.tokens.push_back(std::move(text));
      s.scores.push_back(score);
      s.token_types.push_back(int32_t(type));
    } else if (f.number == 2 && f.wire == 2) {
      ProtoReader t(f.bytes, source, "trainer_spec");
      while (!t.done()) {
        const auto p = t.next();
        if (p.wire != 0) continue;
        const auto v = int64_t(int32_t(uint32_t(p.varint)));  // int32 fields (negative values are sign-extended)
        switch (p.number) {
          case 3: model_type = v; break;
          case 40: unk = v; break;
          case 41: bos = v; break;
          case 42: eos = v; break;
          case 43: pad = v; break;
          default: break;
        }
      }
    } else if (f.number == 3 && f.wire == 2) {
      have_normalizer = true;
      ProtoReader n(f.bytes, source, "normalizer_spec");
      while (!n.done()) {
        const auto p = n.next();
        if (p.number == 1 && p.wire == 2) normalizer = std::string(p.bytes);
        else if (p.number == 3 && p.wire == 0) add_dummy_prefix = p.varint != 0;
        else if (p.number == 4 && p.wire == 0) remove_extra_whitespaces = p.varint != 0;
      }
    }
  }
  if (s.tokens.empty()) throw InputError(source + ": missing tokenizer data (no pieces)");
  if (model_type != 2)
    throw InputError(source + ": SentencePiece model type " + std::to_string(model_type) + " is not supported (only BPE, type 2)");
  if (have_normalizer && normalizer != "identity")
    throw InputError(source + ": SentencePiece normalizer " + quote_text(normalizer) + " is not supported (only 'identity')");
  if (remove_extra_whitespaces && have_normalizer)
    throw InputError(source + ": SentencePiece remove_extra_whitespaces is not supported");
  const auto n = int64_t(s.tokens.size());
  auto id = [&](const char* what, int64_t v) -> int32_t {
    if (v < -1 || v >= n) throw InputError(source + ": " + what + " " + std::to_string(v) + " is outside the " + std::to_string(n) + " pieces");
    return int32_t(v);
  };
  s.unk = id("unk_id", unk);
  s.bos = id("bos_id", bos);
  s.eos = id("eos_id", eos);
  s.pad = id("pad_id", pad);
  s.add_bos = true;
  s.add_space_prefix = add_dummy_prefix;
  return s;
}

TokenizerSpec tokenizer_spec_from_sentencepiece(const std::string& path) {
  return tokenizer_spec_from_sentencepiece_bytes(read_text_file(path, kMaxSentencePieceBytes), path);
}

}  // namespace cf
