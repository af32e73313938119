// Unicode helpers for the tokenizers (internal to cf_formats): UTF-8 decoding that keeps invalid bytes, and the
// character classes of the pre-tokenizer regexes (\p{L}, \p{N}, \s) from generated range tables.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cf::unicode {

struct CodePointRange {
  uint32_t lo, hi;  // inclusive
};
extern const CodePointRange kLetterRanges[];
extern const size_t kLetterRanges_count;
extern const CodePointRange kNumberRanges[];
extern const size_t kNumberRanges_count;
extern const CodePointRange kWhiteSpaceRanges[];
extern const size_t kWhiteSpaceRanges_count;

bool is_letter(uint32_t cp);      // \p{L}
bool is_number(uint32_t cp);      // \p{N}
bool is_whitespace(uint32_t cp);  // \s (White_Space)

// A stray byte that is not part of valid UTF-8 decodes to this value (outside Unicode: no class matches it).
inline constexpr uint32_t kInvalidByte = 0x110000;

struct CodePoint {
  uint32_t cp;      // code point, or kInvalidByte
  uint32_t offset;  // byte offset in the text
  uint32_t len;     // bytes (1..4)
};
// Decodes UTF-8; each byte of an ill-formed sequence (overlong, surrogate, truncated, > U+10FFFF) becomes one
// kInvalidByte entry, so the entries always tile the input exactly.
std::vector<CodePoint> decode_utf8(std::string_view text);

// Length of the valid UTF-8 sequence starting at s[i], or 0 when it is not valid (or truncated).
size_t valid_sequence_length(std::string_view s, size_t i);

}  // namespace cf::unicode
