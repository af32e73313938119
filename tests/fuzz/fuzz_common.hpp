// Helpers shared by the fuzz entry points (internal to tests/fuzz).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "clusterfusion/tokenizer/tokenizer.hpp"
#include "fuzz_targets.hpp"

namespace cf::fuzz {

// Inputs bigger than this are refused by the entry points that build a tokenizer from them: the fuzzer runs with
// -max_len well below it; regression files stay small.
inline constexpr size_t kMaxInputBytes = size_t(4) << 20;

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Encodes fixed strings (plain text, chat markup, invalid UTF-8, digits, CJK) and ids taken from `ids_source`,
// decodes them whole and streamed; checks every id is in the vocabulary and every decoded text is valid UTF-8.
void exercise_tokenizer(const Tokenizer& tok, std::string_view ids_source);

// Ids from bytes (little-endian int32, up to max_ids), for decode-only fuzzing.
std::vector<int32_t> ids_from_bytes(std::string_view bytes, size_t max_ids);

// True when s is valid UTF-8 without control characters (what may reach a terminal from a file).
bool printable(std::string_view s);

// Short printable form of bytes for property messages.
std::string show(std::string_view s, size_t max_chars = 200);

}  // namespace cf::fuzz
