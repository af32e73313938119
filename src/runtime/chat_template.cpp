#include "clusterfusion/runtime/chat_template.hpp"

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/tokenizer/tokenizer.hpp"

namespace cf {

namespace {

// DeepSeek-V2's begin / end of sentence tokens (fullwidth bars, U+2581 for the spaces), written by its template as
// bos_token and eos_token.
constexpr std::string_view kDeepseekBos = "<\uff5cbegin\u2581of\u2581sentence\uff5c>";
constexpr std::string_view kDeepseekEos = "<\uff5cend\u2581of\u2581sentence\uff5c>";

// Strips leading and trailing whitespace, as Jinja's str.strip() does in the Llama templates.
std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// A ChatML template that inserts a system turn when the conversation has none writes it as a literal:
//   '<|im_start|>system\nYou are ...<|im_end|>\n'
// where \n may be a real newline or the two characters of a Jinja escape. Returns the text between.
// Linear in the template's length (it comes from the model file): the next <|im_end|> and the next character that
// marks an expression only move forward as the openers do.
std::optional<std::string> chatml_default_system(const std::string& jinja) {
  constexpr std::string_view kEnd = "<|im_end|>", kExpression = "{}'\"+";
  for (const std::string opener : {"<|im_start|>system\n", "<|im_start|>system\\n"}) {
    size_t at = 0, end = 0, expression = 0;
    bool searched = false;
    while ((at = jinja.find(opener, at)) != std::string::npos) {
      const size_t begin = at + opener.size();
      if (!searched || end < begin) end = jinja.find(kEnd, begin);
      if (!searched || expression < begin) expression = jinja.find_first_of(kExpression, begin);
      searched = true;
      if (end == std::string::npos) break;
      // A literal, not an expression that prints the user's system message.
      if (end > begin && expression >= end) return jinja.substr(begin, end - begin);
      at = begin;
    }
  }
  return std::nullopt;
}

}  // namespace

ChatTemplate ChatTemplate::detect(const std::optional<std::string>& jinja) {
  ChatTemplate t;
  if (!jinja) return t;
  const std::string& s = *jinja;
  if (s.find("<|im_start|>") != std::string::npos) {
    t.format_ = ChatFormat::ChatML;
    t.default_system_ = chatml_default_system(s);
  } else if (s.find("<|start_header_id|>") != std::string::npos) {
    t.format_ = ChatFormat::Llama3;
  } else if (s.find("[INST]") != std::string::npos) {
    t.format_ = ChatFormat::Llama2;
  } else if (s.find("'Assistant: ' + message['content'] + eos_token") != std::string::npos) {
    t.format_ = ChatFormat::DeepSeek2;
  }
  return t;
}

ChatTemplate ChatTemplate::by_name(std::string_view name) {
  ChatTemplate t;
  if (name == "chatml") {
    t.format_ = ChatFormat::ChatML;
  } else if (name == "llama2") {
    t.format_ = ChatFormat::Llama2;
  } else if (name == "llama3") {
    t.format_ = ChatFormat::Llama3;
  } else if (name == "deepseek2") {
    t.format_ = ChatFormat::DeepSeek2;
  } else if (name == "none") {
    t.format_ = ChatFormat::None;
  } else {
    throw InputError("--template: unknown chat template '" + std::string(name) +
                     "' (expected chatml, llama2, llama3, deepseek2 or none)");
  }
  return t;
}

std::string ChatTemplate::name() const {
  switch (format_) {
    case ChatFormat::ChatML: return "chatml";
    case ChatFormat::Llama2: return "llama2";
    case ChatFormat::Llama3: return "llama3";
    case ChatFormat::DeepSeek2: return "deepseek2";
    case ChatFormat::None: break;
  }
  return "none";
}

std::string ChatTemplate::end_of_turn() const {
  switch (format_) {
    case ChatFormat::ChatML: return "<|im_end|>";
    case ChatFormat::Llama2: return "</s>";
    case ChatFormat::Llama3: return "<|eot_id|>";
    case ChatFormat::DeepSeek2: return std::string(kDeepseekEos);
    case ChatFormat::None: break;
  }
  return "";
}

namespace {

// Appends markup and content, merging neighbours of the same kind.
class SegmentWriter {
 public:
  SegmentWriter& markup(std::string_view text) { return add(text, true); }
  SegmentWriter& content(std::string_view text) { return add(text, false); }
  std::vector<ChatSegment> take() { return std::move(segments_); }

 private:
  SegmentWriter& add(std::string_view text, bool markup) {
    if (text.empty()) return *this;
    if (segments_.empty() || segments_.back().markup != markup) segments_.push_back({std::string(), markup});
    segments_.back().text += text;
    return *this;
  }
  std::vector<ChatSegment> segments_;
};

}  // namespace

std::vector<ChatSegment> ChatTemplate::render_segments(const std::vector<ChatMessage>& messages,
                                                       bool add_generation_prompt) const {
  const bool has_system = !messages.empty() && messages.front().role == "system";
  SegmentWriter out;
  switch (format_) {
    case ChatFormat::None:
      for (const auto& m : messages) out.content(m.content);
      break;

    case ChatFormat::ChatML:
      // <|im_start|>{role}\n{content}<|im_end|>\n per message; the default system turn first when there is none.
      if (!messages.empty() && !has_system && default_system_)
        out.markup("<|im_start|>system\n").content(*default_system_).markup("<|im_end|>\n");
      for (const auto& m : messages)
        out.markup("<|im_start|>").content(m.role).markup("\n").content(m.content).markup("<|im_end|>\n");
      if (add_generation_prompt) out.markup("<|im_start|>assistant\n");
      break;

    case ChatFormat::Llama2: {
      // <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] {user} [/INST]
      // The system prompt joins the first user turn; contents are stripped. The prompt already ends where the
      // assistant starts, so add_generation_prompt adds nothing. <<SYS>> is plain text in Llama-2's vocabulary.
      std::optional<std::string> system = has_system ? std::optional(messages.front().content) : default_system_;
      bool first = true;
      for (size_t i = has_system ? 1 : 0; i < messages.size(); ++i) {
        const auto& m = messages[i];
        std::string content = m.content;
        if (first && system) content = "<<SYS>>\n" + *system + "\n<</SYS>>\n\n" + content;
        first = false;
        if (m.role == "user") {
          out.markup("<s>[INST] ").content(strip(content)).markup(" [/INST]");
        } else if (m.role == "assistant") {
          out.markup(" ").content(strip(content)).markup(" </s>");
        }
      }
      break;
    }

    case ChatFormat::Llama3: {
      // <|begin_of_text|> then <|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|> per message.
      out.markup("<|begin_of_text|>");
      if (!has_system && default_system_)
        out.markup("<|start_header_id|>system<|end_header_id|>\n\n").content(strip(*default_system_)).markup("<|eot_id|>");
      for (const auto& m : messages)
        out.markup("<|start_header_id|>").content(m.role).markup("<|end_header_id|>\n\n").content(strip(m.content))
            .markup("<|eot_id|>");
      if (add_generation_prompt) out.markup("<|start_header_id|>assistant<|end_header_id|>\n\n");
      break;
    }

    case ChatFormat::DeepSeek2: {
      // {bos}{system}\n\n then User: {user}\n\n and Assistant: {assistant}{eos}; contents as they are. The
      // generation prompt "Assistant:" has no space: the model writes it.
      out.markup(kDeepseekBos);
      if (!has_system && default_system_) out.content(*default_system_).markup("\n\n");
      for (const auto& m : messages) {
        if (m.role == "system") out.content(m.content).markup("\n\n");
        else if (m.role == "user") out.markup("User: ").content(m.content).markup("\n\n");
        else if (m.role == "assistant") out.markup("Assistant: ").content(m.content).markup(kDeepseekEos);
      }
      if (add_generation_prompt) out.markup("Assistant:");
      break;
    }
  }
  return out.take();
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  std::string text;
  for (const ChatSegment& s : render_segments(messages, add_generation_prompt)) text += s.text;
  return text;
}

std::vector<int32_t> ChatTemplate::tokenize(const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages,
                                            bool add_generation_prompt) const {
  const std::vector<ChatSegment> segments = render_segments(messages, add_generation_prompt);
  std::vector<TextPart> parts;
  parts.reserve(segments.size());
  for (const ChatSegment& s : segments) parts.push_back({s.text, s.markup});
  const bool add_bos = format_ == ChatFormat::None && tokenizer.spec().add_bos;
  return tokenizer.encode_parts(parts, add_bos);
}

}  // namespace cf
