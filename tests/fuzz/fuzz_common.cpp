#include "fuzz_common.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "clusterfusion/common/json.hpp"

namespace cf::fuzz {

void property_violated(const char* file, int line, const char* condition, std::string_view detail) {
  std::fprintf(stderr, "fuzz property violated at %s:%d: %s\n  %.*s\n", file, line, condition, int(detail.size()),
               detail.data());
  std::abort();
}

bool printable(std::string_view s) {
  for (const char c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  return json::is_valid_utf8(s);
}

std::string show(std::string_view s, size_t max_chars) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < s.size() && i < max_chars; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += char(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (s.size() > max_chars) out += "...";
  return out;
}

std::vector<int32_t> ids_from_bytes(std::string_view bytes, size_t max_ids) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 4 <= bytes.size() && ids.size() < max_ids; i += 4) {
    int32_t id;
    std::memcpy(&id, bytes.data() + i, 4);
    ids.push_back(id);
  }
  return ids;
}

namespace {
void check_ids(const Tokenizer& tok, const std::vector<int32_t>& ids, std::string_view text) {
  for (const int32_t id : ids)
    CF_FUZZ_ASSERT(id >= 0 && id < tok.vocab_size(),
                   "id " + std::to_string(id) + " outside the vocabulary of " + std::to_string(tok.vocab_size()) +
                       " for text '" + show(text) + "'");
}

void check_decoding(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  const std::string text = tok.decode(ids);
  CF_FUZZ_ASSERT(json::is_valid_utf8(text), "decode gave invalid UTF-8: '" + show(text) + "'");
  StreamDecoder stream(std::shared_ptr<const Tokenizer>(&tok, [](const Tokenizer*) {}));
  std::string streamed;
  for (const int32_t id : ids) streamed += stream.push(id);
  streamed += stream.flush();
  CF_FUZZ_ASSERT(json::is_valid_utf8(streamed), "StreamDecoder gave invalid UTF-8: '" + show(streamed) + "'");
  for (const int32_t id : ids) {
    (void)tok.token_bytes(id);
    (void)tok.token_text(id);
    (void)tok.token_type(id);
    (void)tok.is_end_of_generation(id);
  }
}
}  // namespace

void exercise_tokenizer(const Tokenizer& tok, std::string_view ids_source) {
  static const std::string_view kTexts[] = {
      "Hello world! It's 2024.",
      "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n",
      "<s>[INST] <<SYS>>\nsys\n<</SYS>>\n\nhi [/INST]",
      "  leading and trailing  \n\n\t",
      "\xff\xfe invalid \xc0\xaf utf-8 \xed\xa0\x80",
      "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e 1234567 \xf0\x9f\x98\x80 \xe2\x96\x81x",
  };
  for (const auto text : kTexts) {
    for (const bool special : {false, true}) {
      const auto ids = tok.encode(text, special, special);
      check_ids(tok, ids, text);
      check_decoding(tok, ids);
    }
  }
  check_decoding(tok, ids_from_bytes(ids_source, 256));
  (void)tok.find_token("<|im_end|>");
  (void)tok.find_token(ids_source.substr(0, 16));
}

}  // namespace cf::fuzz
