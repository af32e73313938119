// Tokenizers: byte-level BPE (merge ranks) and SentencePiece-style BPE (piece scores, byte fallback), sharing the
// special-token matcher and the decode tables. Both merge with a heap over a linked list of symbols, so encoding is
// O(n log n) in the length of a pre-token however hostile the input.
#include <algorithm>
#include <array>
#include <cmath>
#include <queue>
#include <unordered_map>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/json.hpp"
#include "clusterfusion/formats/gguf.hpp"  // StringMap
#include "clusterfusion/tokenizer/tokenizer.hpp"
#include "mapped_file.hpp"
#include "unicode.hpp"

namespace cf {

namespace {
constexpr std::string_view kSpace = "\xe2\x96\x81";  // U+2581, SentencePiece's visible space

// GPT-2's byte-to-unicode alphabet: printable bytes map to themselves, the other 68 to U+0100.. in byte order.
std::array<uint32_t, 256> byte_to_code_point() {
  std::array<uint32_t, 256> map{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    map[b] = printable ? b : next++;
  }
  return map;
}

std::string utf8(uint32_t cp) {
  std::string s;
  json::append_utf8(s, cp);
  return s;
}

// Replaces each byte of an ill-formed UTF-8 sequence by U+FFFD.
std::string sanitize_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t len = unicode::valid_sequence_length(s, i);
    if (len == 0) {
      out += "\xef\xbf\xbd";
      ++i;
    } else {
      out.append(s.substr(i, len));
      i += len;
    }
  }
  return out;
}

// Parses "<0xAB>" (SentencePiece byte pieces); -1 when the text is not one.
int parse_byte_piece(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; };
  const int hi = hex(t[3]), lo = hex(t[4]);
  return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

// Names of tokens that end a turn in the families we know.
constexpr std::string_view kEndOfTurnNames[] = {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>",
                                                "<|eom_id|>", "<end_of_turn>", "<|end|>", "</s>"};

class TokenizerImpl final : public Tokenizer {
 public:
  explicit TokenizerImpl(TokenizerSpec spec) : spec_(std::move(spec)) { build(); }

  const TokenizerSpec& spec() const override { return spec_; }

  int32_t find_token(std::string_view piece) const override {
    const auto it = ids_.find(piece);
    return it == ids_.end() ? -1 : it->second;
  }

  std::string_view token_text(int32_t id) const override {
    return in_range(id) ? std::string_view(spec_.tokens[size_t(id)]) : std::string_view();
  }
  int32_t token_type(int32_t id) const override { return in_range(id) ? type_of(id) : 0; }
  std::string token_bytes(int32_t id) const override { return in_range(id) ? bytes_[size_t(id)] : std::string(); }

  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const override {
    const TextPart part{text, parse_special};
    return encode_parts(std::span<const TextPart>(&part, 1), add_bos);
  }

  std::vector<int32_t> encode_parts(std::span<const TextPart> parts, bool add_bos) const override {
    size_t total = 0;
    for (const TextPart& p : parts) total += p.text.size();
    if (total > kMaxTextBytes)
      throw InputError("text of " + std::to_string(total) + " bytes exceeds the tokenizer limit of " +
                       std::to_string(kMaxTextBytes) + " bytes");
    // One text, so that raw runs (pre-tokens, merges) cross part boundaries exactly as in the concatenation.
    std::string joined;
    std::string_view text = parts.size() == 1 ? parts[0].text : std::string_view();
    if (parts.size() > 1) {
      joined.reserve(total);
      for (const TextPart& p : parts) joined.append(p.text);
      text = joined;
    }

    std::vector<int32_t> out;
    if (add_bos && spec_.bos >= 0) out.push_back(spec_.bos);
    bool after_special = true;  // SentencePiece: a space prefix starts the text and follows every special token
    size_t raw_begin = 0;
    auto flush_raw = [&](size_t end) {
      if (end > raw_begin) encode_raw(text.substr(raw_begin, end - raw_begin), after_special, out);
      if (end > raw_begin) after_special = false;
    };
    size_t part = 0, part_end = parts.empty() ? 0 : parts[0].text.size();
    for (size_t i = 0; i < text.size();) {
      while (i >= part_end) part_end += parts[++part].text.size();
      // A special token must lie inside the part it starts in.
      const auto [id, len] = match_special(text.substr(0, part_end), i, parts[part].parse_special);
      if (id < 0) {
        ++i;
        continue;
      }
      flush_raw(i);
      out.push_back(id);
      after_special = true;
      i += len;
      raw_begin = i;
    }
    flush_raw(text.size());
    return out;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string out;
    bool at_start = true;
    for (const int32_t id : ids) {
      if (!in_range(id)) continue;
      std::string_view b = bytes_[size_t(id)];
      const int32_t type = type_of(id);
      if (at_start && type != kTokenControl) {
        if (spec_.kind == TokenizerSpec::Kind::SentencePiece && spec_.add_space_prefix && !b.empty() && b[0] == ' ')
          b.remove_prefix(1);
        at_start = false;
      }
      out.append(b);
    }
    return sanitize_utf8(out);
  }

 private:
  bool in_range(int32_t id) const { return id >= 0 && size_t(id) < spec_.tokens.size(); }
  int32_t type_of(int32_t id) const { return spec_.token_types.empty() ? kTokenNormal : spec_.token_types[size_t(id)]; }

  [[noreturn]] void fail(const std::string& what) const {
    throw InputError((spec_.source.empty() ? std::string("tokenizer") : spec_.source) + ": " + what);
  }

  void build() {
    const size_t n = spec_.tokens.size();
    if (n == 0) fail("empty vocabulary");
    if (n > kMaxVocab) fail("vocabulary of " + std::to_string(n) + " tokens exceeds the limit of " + std::to_string(kMaxVocab));
    if (!spec_.scores.empty() && spec_.scores.size() != n)
      fail("scores has " + std::to_string(spec_.scores.size()) + " entries for " + std::to_string(n) + " tokens");
    if (!spec_.token_types.empty() && spec_.token_types.size() != n)
      fail("token_type has " + std::to_string(spec_.token_types.size()) + " entries for " + std::to_string(n) + " tokens");
    for (const auto& [name, id] : {std::pair{"bos", spec_.bos}, {"eos", spec_.eos}, {"unk", spec_.unk}, {"pad", spec_.pad}})
      if (id < -1 || (id >= 0 && size_t(id) >= n))
        fail(std::string(name) + " token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(n) + " tokens");
    for (const int32_t id : spec_.end_of_generation)
      if (!in_range(id)) fail("end-of-generation token id " + std::to_string(id) + " is outside the vocabulary");
    for (const float s : spec_.scores)
      if (std::isnan(s)) fail("token score is NaN");

    ids_.reserve(n);
    for (size_t i = 0; i < n; ++i) ids_.emplace(spec_.tokens[i], int32_t(i));  // first occurrence wins

    // Special tokens: control and user-defined pieces are matched in the text as a whole.
    trie_.push_back({});
    for (size_t i = 0; i < n; ++i) {
      const int32_t t = type_of(int32_t(i));
      if ((t == kTokenControl || t == kTokenUserDefined) && !spec_.tokens[i].empty()) add_special(spec_.tokens[i], int32_t(i));
    }

    bytes_.resize(n);
    if (spec_.kind == TokenizerSpec::Kind::ByteLevelBPE) build_byte_level();
    else build_sentencepiece();

    // End of generation: eos plus the known end-of-turn tokens present in the vocabulary.
    auto add_eog = [&](int32_t id) {
      if (id >= 0 && std::find(spec_.end_of_generation.begin(), spec_.end_of_generation.end(), id) == spec_.end_of_generation.end())
        spec_.end_of_generation.push_back(id);
    };
    add_eog(spec_.eos);
    for (const auto name : kEndOfTurnNames) {
      const int32_t id = find_token(name);
      if (id >= 0 && type_of(id) != kTokenNormal) add_eog(id);
      else if (id >= 0 && spec_.token_types.empty()) add_eog(id);
    }
  }

  void build_byte_level() {
    pre_ = canonical_pre_tokenizer(spec_.pre);
    if (pre_.empty()) fail("unsupported pre-tokenizer " + quote_text(spec_.pre) + " (supported: gpt2, llama3 / llama-bpe, qwen2, smollm)");
    const auto map = byte_to_code_point();
    std::unordered_map<uint32_t, uint8_t> code_point_to_byte;
    for (uint32_t b = 0; b < 256; ++b) {
      byte_chars_[b] = utf8(map[b]);
      code_point_to_byte[map[b]] = uint8_t(b);
      byte_ids_[b] = find_token(byte_chars_[b]);
      if (byte_ids_[b] < 0 && spec_.unk < 0)
        fail("byte-level vocabulary has no token for byte 0x" + std::string(1, "0123456789abcdef"[b >> 4]) +
             std::string(1, "0123456789abcdef"[b & 15]) + " and no unknown token");
    }
    if (spec_.merges.empty() && spec_.tokens.size() > 256 + 64) fail("byte-level BPE vocabulary has no merges");
    merges_.reserve(spec_.merges.size());
    for (size_t r = 0; r < spec_.merges.size(); ++r) {
      const std::string& m = spec_.merges[r];
      const size_t sp = m.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 == m.size() || m.find(' ', sp + 1) != std::string::npos)
        fail("merge #" + std::to_string(r) + " " + quote_text(m) + " is not two pieces separated by one space");
      const int32_t left = find_token(std::string_view(m).substr(0, sp));
      const int32_t right = find_token(std::string_view(m).substr(sp + 1));
      std::string joined = m.substr(0, sp) + m.substr(sp + 1);
      const int32_t result = find_token(joined);
      if (left < 0 || right < 0 || result < 0) continue;  // can never apply: its pieces are not tokens
      merges_.emplace(pair_key(left, right), Merge{int32_t(r), result});
    }
    for (size_t i = 0; i < spec_.tokens.size(); ++i) {
      const auto& text = spec_.tokens[i];
      const int32_t t = type_of(int32_t(i));
      if (t == kTokenControl || t == kTokenUserDefined) {
        bytes_[i] = text;
        continue;
      }
      std::string& b = bytes_[i];
      for (const auto& cp : unicode::decode_utf8(text)) {
        const auto it = code_point_to_byte.find(cp.cp);
        if (it != code_point_to_byte.end()) b += char(it->second);
        else b.append(text, cp.offset, cp.len);  // outside the byte alphabet: keep as is
      }
    }
  }

  void build_sentencepiece() {
    if (spec_.scores.empty()) fail("SentencePiece tokenizer has no scores");
    int byte_tokens = 0;
    byte_ids_.fill(-1);
    for (size_t i = 0; i < spec_.tokens.size(); ++i) {
      const auto& text = spec_.tokens[i];
      const int32_t t = type_of(int32_t(i));
      const int byte = parse_byte_piece(text);
      if (byte >= 0 && (t == kTokenByte || spec_.token_types.empty())) {
        if (byte_ids_[size_t(byte)] < 0) ++byte_tokens;
        if (byte_ids_[size_t(byte)] < 0) byte_ids_[size_t(byte)] = int32_t(i);
        bytes_[i] = std::string(1, char(byte));
        continue;
      }
      if (t == kTokenControl) {
        bytes_[i] = text;
        continue;
      }
      std::string& b = bytes_[i];  // U+2581 -> space
      for (size_t k = 0; k < text.size();) {
        if (text.compare(k, kSpace.size(), kSpace) == 0) {
          b += ' ';
          k += kSpace.size();
        } else {
          b += text[k++];
        }
      }
    }
    if (byte_tokens < 256 && spec_.unk < 0)
      fail("SentencePiece vocabulary has neither all 256 byte tokens nor an unknown token");
  }

  // ---- special tokens -----------------------------------------------------------------------------------------
  struct TrieNode {
    int32_t token = -1;
  };
  static uint64_t edge_key(size_t node, uint8_t byte) { return (uint64_t(node) << 8) | byte; }

  void add_special(const std::string& text, int32_t id) {
    size_t node = 0;
    for (const char c : text) {
      const auto key = edge_key(node, uint8_t(c));
      const auto it = trie_edges_.find(key);
      if (it != trie_edges_.end()) {
        node = it->second;
      } else {
        trie_.push_back({});
        trie_edges_.emplace(key, trie_.size() - 1);
        node = trie_.size() - 1;
      }
    }
    if (trie_[node].token < 0) trie_[node].token = id;
  }

  // Longest special token starting at text[i]: {id, length}, or {-1, 0}.
  std::pair<int32_t, size_t> match_special(std::string_view text, size_t i, bool parse_special) const {
    if (trie_.size() == 1) return {-1, 0};
    std::pair<int32_t, size_t> best{-1, 0};
    size_t node = 0;
    for (size_t k = i; k < text.size(); ++k) {
      const auto it = trie_edges_.find(edge_key(node, uint8_t(text[k])));
      if (it == trie_edges_.end()) break;
      node = it->second;
      const int32_t id = trie_[node].token;
      if (id >= 0 && (parse_special || type_of(id) == kTokenUserDefined)) best = {id, k + 1 - i};
    }
    return best;
  }

  // ---- raw text ----------------------------------------------------------------------------------------------
  void encode_raw(std::string_view text, bool space_prefix, std::vector<int32_t>& out) const {
    if (spec_.kind == TokenizerSpec::Kind::ByteLevelBPE) {
      for (const auto piece : pre_tokenize(pre_, text)) encode_byte_level_piece(piece, out);
    } else {
      encode_sentencepiece(text, space_prefix && spec_.add_space_prefix, out);
    }
  }

  struct Merge {
    int32_t rank;
    int32_t result;
  };
  static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  struct Symbol {
    int32_t id;  // byte-level: token id (-1 once merged away); SentencePiece: unused
    int32_t prev, next;
    uint32_t offset, len;  // SentencePiece: bytes of the normalised text
  };

  void encode_byte_level_piece(std::string_view piece, std::vector<int32_t>& out) const {
    if (spec_.ignore_merges) {
      std::string mapped;
      for (const char c : piece) mapped += byte_chars_[uint8_t(c)];
      if (const int32_t id = find_token(mapped); id >= 0) {
        out.push_back(id);
        return;
      }
    }
    const auto n = int32_t(piece.size());
    std::vector<Symbol> sym(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) {
      const int32_t id = byte_ids_[uint8_t(piece[size_t(i)])];
      sym[size_t(i)] = {id >= 0 ? id : spec_.unk, i - 1, i + 1 < n ? i + 1 : -1, 0, 0};
    }
    struct Candidate {
      int32_t rank, left, left_id, right_id;
      bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
    auto consider = [&](int32_t left) {
      if (left < 0) return;
      const int32_t right = sym[size_t(left)].next;
      if (right < 0) return;
      const auto it = merges_.find(pair_key(sym[size_t(left)].id, sym[size_t(right)].id));
      if (it != merges_.end()) heap.push({it->second.rank, left, sym[size_t(left)].id, sym[size_t(right)].id});
    };
    for (int32_t i = 0; i + 1 < n; ++i) consider(i);
    while (!heap.empty()) {
      const Candidate c = heap.top();
      heap.pop();
      Symbol& l = sym[size_t(c.left)];
      if (l.id != c.left_id || l.next < 0) continue;  // stale
      Symbol& r = sym[size_t(l.next)];
      if (r.id != c.right_id) continue;
      l.id = merges_.at(pair_key(c.left_id, c.right_id)).result;
      r.id = -1;
      l.next = r.next;
      if (r.next >= 0) sym[size_t(r.next)].prev = c.left;
      consider(l.prev);
      consider(c.left);
    }
    for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = sym[size_t(i)].next) out.push_back(sym[size_t(i)].id);
  }

  // A piece SentencePiece may merge into: normal, user-defined and unused pieces (not control/byte/unknown).
  int32_t mergeable_piece(std::string_view text) const {
    const int32_t id = find_token(text);
    if (id < 0) return -1;
    const int32_t t = type_of(id);
    return (t == kTokenNormal || t == kTokenUserDefined || t == kTokenUnused) ? id : -1;
  }

  void encode_sentencepiece(std::string_view text, bool space_prefix, std::vector<int32_t>& out) const {
    std::string norm;
    norm.reserve(text.size() + 8);
    if (space_prefix) norm += kSpace;
    for (const char c : text) {
      if (c == ' ') norm += kSpace;
      else norm += c;
    }
    const auto cps = unicode::decode_utf8(norm);
    const auto n = int32_t(cps.size());
    std::vector<Symbol> sym(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) sym[size_t(i)] = {0, i - 1, i + 1 < n ? i + 1 : -1, cps[size_t(i)].offset, cps[size_t(i)].len};
    struct Candidate {
      float score;
      int32_t left;
      uint32_t left_len, right_len;
      bool operator<(const Candidate& o) const { return score != o.score ? score < o.score : left > o.left; }
    };
    std::priority_queue<Candidate> heap;  // highest score first, then leftmost
    auto consider = [&](int32_t left) {
      if (left < 0) return;
      const Symbol& l = sym[size_t(left)];
      if (l.next < 0) return;
      const Symbol& r = sym[size_t(l.next)];
      const int32_t id = mergeable_piece(std::string_view(norm).substr(l.offset, l.len + r.len));
      if (id >= 0) heap.push({spec_.scores[size_t(id)], left, l.len, r.len});
    };
    for (int32_t i = 0; i + 1 < n; ++i) consider(i);
    while (!heap.empty()) {
      const Candidate c = heap.top();
      heap.pop();
      Symbol& l = sym[size_t(c.left)];
      if (l.len != c.left_len || l.next < 0) continue;  // stale (l grew, or was merged away: len set to 0)
      Symbol& r = sym[size_t(l.next)];
      if (r.len != c.right_len) continue;
      l.len += r.len;
      r.len = 0;
      l.next = r.next;
      if (r.next >= 0) sym[size_t(r.next)].prev = c.left;
      consider(l.prev);
      consider(c.left);
    }
    for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = sym[size_t(i)].next) {
      const std::string_view piece = std::string_view(norm).substr(sym[size_t(i)].offset, sym[size_t(i)].len);
      if (const int32_t id = mergeable_piece(piece); id >= 0) {
        out.push_back(id);
        continue;
      }
      const bool all_bytes = std::all_of(piece.begin(), piece.end(), [&](char ch) { return byte_ids_[uint8_t(ch)] >= 0; });
      if (all_bytes) {
        for (const char ch : piece) out.push_back(byte_ids_[uint8_t(ch)]);
      } else {
        out.push_back(spec_.unk);
      }
    }
  }

  TokenizerSpec spec_;
  StringMap<int32_t> ids_;
  std::vector<std::string> bytes_;
  std::vector<TrieNode> trie_;
  std::unordered_map<uint64_t, size_t> trie_edges_;
  std::string pre_;
  std::array<int32_t, 256> byte_ids_{};
  std::array<std::string, 256> byte_chars_;
  std::unordered_map<uint64_t, Merge> merges_;
};
}  // namespace

std::shared_ptr<const Tokenizer> Tokenizer::create(TokenizerSpec spec) {
  return std::make_shared<const TokenizerImpl>(std::move(spec));
}

bool Tokenizer::is_end_of_generation(int32_t id) const {
  const auto& eog = spec().end_of_generation;
  return std::find(eog.begin(), eog.end(), id) != eog.end();
}

// ---- StreamDecoder -----------------------------------------------------------------------------------------------

namespace {
// True when s[i..] is the start of a well-formed sequence that the end of s cut short.
bool truncated_sequence(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  size_t need;
  if (b0 >= 0xc2 && b0 <= 0xdf) need = 2;
  else if (b0 >= 0xe0 && b0 <= 0xef) need = 3;
  else if (b0 >= 0xf0 && b0 <= 0xf4) need = 4;
  else return false;
  if (s.size() - i >= need) return false;
  for (size_t k = i + 1; k < s.size(); ++k) {
    const auto b = static_cast<unsigned char>(s[k]);
    unsigned char lo = 0x80, hi = 0xbf;
    if (k == i + 1) {
      if (b0 == 0xe0) lo = 0xa0;
      if (b0 == 0xed) hi = 0x9f;
      if (b0 == 0xf0) lo = 0x90;
      if (b0 == 0xf4) hi = 0x8f;
    }
    if (b < lo || b > hi) return false;
  }
  return true;
}
}  // namespace

std::string StreamDecoder::push(int32_t id) {
  pending_ += tok_->token_bytes(id);
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const size_t len = unicode::valid_sequence_length(pending_, i);
    if (len > 0) {
      out.append(pending_, i, len);
      i += len;
    } else if (truncated_sequence(pending_, i)) {
      break;  // wait for the rest of the character
    } else {
      out += "\xef\xbf\xbd";
      ++i;
    }
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = sanitize_utf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace cf
