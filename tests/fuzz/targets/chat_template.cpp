// Chat templates: byte 0 picks detection from the model's Jinja text (0-3) or a family by name (4-7) and
// add_generation_prompt (bit 3); the rest, split at NUL bytes, is the Jinja text and then up to 16 messages (first
// byte: role). Properties: detection and rendering never throw and are deterministic, the detected default system
// prompt is a literal of the template, the rendering's size is bounded by its inputs, contents appear verbatim
// (ChatML, none), the segments join to the rendering, the conversation tokenizes and decodes back to its rendering, and
// its control tokens are the markup's alone: as many as with every content replaced by "x".
#include <memory>
#include <string>
#include <vector>

#include "clusterfusion/common/json.hpp"
#include "clusterfusion/runtime/chat_template.hpp"
#include "fuzz_common.hpp"

namespace cf::fuzz {

namespace {
constexpr size_t kMaxMessages = 16;
constexpr std::string_view kRoles[] = {"system", "user", "assistant", "tool"};

const Tokenizer& chat_tokenizer() {
  static const auto tok = Tokenizer::create(
      tokenizer_spec_from_hf_json(std::string(CF_SOURCE_DIR) + "/tests/data/tokenizer/tiny_smollm/tokenizer.json"));
  return *tok;
}

std::vector<std::string_view> split_nul(std::string_view s) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i)
    if (i == s.size() || s[i] == '\0') {
      parts.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  return parts;
}
}  // namespace

void chat_template(const uint8_t* data, size_t size) {
  if (size == 0 || size > kMaxInputBytes) return;
  const uint8_t mode = data[0] & 7;
  const bool add_generation_prompt = (data[0] >> 3) & 1;
  const auto parts = split_nul(as_text(data + 1, size - 1));
  const std::string jinja(parts[0]);

  ChatTemplate t;
  if (mode < 4) {
    t = ChatTemplate::detect(mode == 0 ? std::optional<std::string>() : std::optional<std::string>(jinja));
    const ChatTemplate again = ChatTemplate::detect(jinja);
    if (mode != 0) CF_FUZZ_ASSERT(again.format() == t.format() && again.default_system() == t.default_system(),
                                  "detect() is not deterministic for '" + show(jinja) + "'");
    if (const auto& sys = t.default_system()) {
      CF_FUZZ_ASSERT(jinja.find(*sys) != std::string::npos, "default system prompt is not a literal of the template");
      CF_FUZZ_ASSERT(!sys->empty() && sys->find_first_of("{}'\"+") == std::string::npos &&
                         sys->find("<|im_end|>") == std::string::npos,
                     "default system prompt '" + show(*sys) + "' is an expression or spans turns");
    }
  } else {
    const std::string name = ChatTemplate::names()[mode - 4];
    t = ChatTemplate::by_name(name);
    CF_FUZZ_ASSERT(t.name() == name, "by_name/name disagree for " + name);
  }
  CF_FUZZ_ASSERT(ChatTemplate::by_name(t.name()).format() == t.format(), "name() does not round-trip");

  std::vector<ChatMessage> messages;
  size_t content_bytes = 0;
  for (size_t i = 1; i < parts.size() && messages.size() < kMaxMessages; ++i) {
    const std::string_view p = parts[i];
    const std::string_view role = p.empty() ? kRoles[1] : kRoles[uint8_t(p[0]) % 4];
    messages.push_back({std::string(role), std::string(p.empty() ? p : p.substr(1))});
    content_bytes += messages.back().content.size();
  }
  const std::string text = t.render(messages, add_generation_prompt);
  CF_FUZZ_ASSERT(text == t.render(messages, add_generation_prompt), "render() is not deterministic");
  const size_t system_bytes = t.default_system() ? t.default_system()->size() : 0;
  CF_FUZZ_ASSERT(text.size() <= content_bytes + system_bytes + 96 * (messages.size() + 2),
                 "rendering of " + std::to_string(text.size()) + " bytes from " + std::to_string(content_bytes) +
                     " bytes of content");
  if (t.format() == ChatFormat::None || t.format() == ChatFormat::ChatML)
    for (const auto& m : messages)
      CF_FUZZ_ASSERT(text.find(m.content) != std::string::npos, "content '" + show(m.content) + "' missing");
  (void)t.end_of_turn();

  std::string joined;
  for (const ChatSegment& segment : t.render_segments(messages, add_generation_prompt)) joined += segment.text;
  CF_FUZZ_ASSERT(joined == text, "the segments do not join to the rendering");

  const Tokenizer& tok = chat_tokenizer();
  const auto ids = t.tokenize(tok, messages, add_generation_prompt);
  const std::string back = tok.decode(ids);
  if (json::is_valid_utf8(text)) CF_FUZZ_ASSERT(back == text, "rendered text does not survive tokenization: '" + show(text) + "'");
  auto control_tokens = [&](const std::vector<int32_t>& v) {
    size_t n = 0;
    for (const int32_t id : v) n += tok.token_type(id) == kTokenControl;
    return n;
  };
  std::vector<ChatMessage> harmless = messages;
  for (auto& m : harmless) m.content = "x";
  CF_FUZZ_ASSERT(control_tokens(ids) == control_tokens(t.tokenize(tok, harmless, add_generation_prompt)),
                 "message content produced control tokens: '" + show(text) + "'");
}

}  // namespace cf::fuzz
