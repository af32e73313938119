// Pre-tokenizers of the byte-level BPE families, written as hand scanners equivalent to their regexes
// (leftmost alternative wins, greedy quantifiers with the backtracking the regex would do):
//   gpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|
//           \s+(?!\S)|\s+
//   qwen2:  llama3 with \p{N} instead of \p{N}{1,3}
//   smollm: every \p{N} isolated first, then gpt2 on the text between (HF: Digits(individual) + ByteLevel)
// Text between matches (none of these regexes leaves any) would become its own piece. Every scanner is linear.
#include <string>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/tokenizer/tokenizer.hpp"
#include "unicode.hpp"

namespace cf {

namespace {
enum : uint8_t { kL = 1, kN = 2, kS = 4, kCrLf = 8 };

class Scanner {
 public:
  Scanner(const std::vector<unicode::CodePoint>& cps, const std::vector<uint8_t>& cls, size_t end)
      : cps_(cps), cls_(cls), end_(end) {}

  bool L(size_t i) const { return i < end_ && (cls_[i] & kL); }
  bool N(size_t i) const { return i < end_ && (cls_[i] & kN); }
  bool S(size_t i) const { return i < end_ && (cls_[i] & kS); }
  bool CrLf(size_t i) const { return i < end_ && (cls_[i] & kCrLf); }
  bool O(size_t i) const { return i < end_ && !(cls_[i] & (kL | kN | kS)); }  // [^\s\p{L}\p{N}]
  bool is(size_t i, char32_t c) const { return i < end_ && cps_[i].cp == c; }
  size_t end() const { return end_; }

  // 's 't 're 've 'm 'll 'd at i; returns the match length in code points (0 when none).
  size_t contraction(size_t i, bool any_case) const {
    if (!is(i, U'\'')) return 0;
    auto lower = [&](size_t k) -> char32_t {
      if (k >= end_) return 0;
      const char32_t c = cps_[k].cp;
      return (any_case && c >= U'A' && c <= U'Z') ? c + 32 : c;
    };
    const char32_t a = lower(i + 1);
    if (a == U's' || a == U't' || a == U'm' || a == U'd') return 2;
    const char32_t b = lower(i + 2);
    if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l')) return 3;
    return 0;
  }

  // \s+(?!\S) | \s+ starting at a whitespace position i.
  size_t whitespace_run(size_t i) const {
    size_t j = i;
    while (S(j)) ++j;
    if (j == end_ || j - i < 2) return j;
    return j - 1;  // leave the last space to prefix the next word
  }

  size_t gpt2(size_t i) const {
    if (const size_t k = contraction(i, false)) return i + k;
    const size_t j0 = is(i, U' ') ? i + 1 : i;
    size_t j = j0;
    if (L(j)) {
      while (L(j)) ++j;
      return j;
    }
    if (N(j)) {
      while (N(j)) ++j;
      return j;
    }
    if (O(j)) {
      while (O(j)) ++j;
      return j;
    }
    if (S(i)) return whitespace_run(i);
    return i + 1;
  }

  size_t llama3(size_t i, size_t max_digits) const {
    if (const size_t k = contraction(i, true)) return i + k;
    if (i < end_ && !CrLf(i) && !L(i) && !N(i) && L(i + 1)) {  // [^\r\n\p{L}\p{N}]?\p{L}+
      size_t j = i + 1;
      while (L(j)) ++j;
      return j;
    }
    if (L(i)) {
      size_t j = i;
      while (L(j)) ++j;
      return j;
    }
    if (N(i)) {
      size_t j = i;
      while (N(j) && j - i < max_digits) ++j;
      return j;
    }
    const size_t j0 = is(i, U' ') ? i + 1 : i;
    if (O(j0)) {  //  ?[^\s\p{L}\p{N}]+[\r\n]*
      size_t j = j0;
      while (O(j)) ++j;
      while (CrLf(j)) ++j;
      return j;
    }
    if (S(i)) {
      size_t j = i;
      size_t last_newline = SIZE_MAX;
      while (S(j)) {
        if (CrLf(j)) last_newline = j;
        ++j;
      }
      if (last_newline != SIZE_MAX) return last_newline + 1;  // \s*[\r\n]+
      return whitespace_run(i);
    }
    return i + 1;
  }

 private:
  const std::vector<unicode::CodePoint>& cps_;
  const std::vector<uint8_t>& cls_;
  size_t end_;
};

enum class Family { Gpt2, Llama3, Qwen2, SmolLM };

Family family_of(std::string_view canonical) {
  if (canonical == "llama3") return Family::Llama3;
  if (canonical == "qwen2") return Family::Qwen2;
  if (canonical == "smollm") return Family::SmolLM;
  return Family::Gpt2;
}
}  // namespace

std::string canonical_pre_tokenizer(std::string_view pre) {
  if (pre.empty() || pre == "default" || pre == "gpt2" || pre == "gpt-2") return "gpt2";
  if (pre == "llama3" || pre == "llama-bpe" || pre == "llama-v3" || pre == "llama3-bpe") return "llama3";
  if (pre == "qwen2" || pre == "deepseek-r1-qwen") return "qwen2";
  if (pre == "smollm" || pre == "starcoder" || pre == "refact" || pre == "codeshell") return "smollm";
  return "";
}

std::vector<std::string_view> pre_tokenize(std::string_view pre, std::string_view text) {
  const std::string canonical = canonical_pre_tokenizer(pre);
  if (canonical.empty())
    throw InputError("unsupported pre-tokenizer '" + std::string(pre) + "' (supported: gpt2, llama3, qwen2, smollm)");
  const Family family = family_of(canonical);
  const auto cps = unicode::decode_utf8(text);
  std::vector<uint8_t> cls(cps.size());
  for (size_t i = 0; i < cps.size(); ++i) {
    const uint32_t c = cps[i].cp;
    uint8_t f = 0;
    if (c == unicode::kInvalidByte) {
      f = 0;
    } else if (unicode::is_letter(c)) {
      f = kL;
    } else if (unicode::is_number(c)) {
      f = kN;
    } else if (unicode::is_whitespace(c)) {
      f = kS;
      if (c == '\r' || c == '\n') f |= kCrLf;
    }
    cls[i] = f;
  }
  std::vector<std::string_view> out;
  auto emit = [&](size_t a, size_t b) {  // code points [a, b)
    if (a < b) out.push_back(text.substr(cps[a].offset, cps[b - 1].offset + cps[b - 1].len - cps[a].offset));
  };
  auto scan = [&](size_t begin, size_t end) {
    const Scanner s(cps, cls, end);
    for (size_t i = begin; i < end;) {
      size_t j;
      switch (family) {
        case Family::Llama3: j = s.llama3(i, 3); break;
        case Family::Qwen2: j = s.llama3(i, 1); break;
        default: j = s.gpt2(i); break;
      }
      emit(i, j);
      i = j;
    }
  };
  if (family != Family::SmolLM) {
    scan(0, cps.size());
    return out;
  }
  size_t segment = 0;
  for (size_t i = 0; i < cps.size(); ++i) {
    if (cls[i] & kN) {
      scan(segment, i);
      emit(i, i + 1);
      segment = i + 1;
    }
  }
  scan(segment, cps.size());
  return out;
}

}  // namespace cf
