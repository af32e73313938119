// Chat templates of the known model families, rendered in C++ (no Jinja engine): ChatML (SmolLM2, Qwen),
// Llama-2 ([INST] with <<SYS>>), Llama-3 (header ids) and DeepSeek-V2 ("User: " / "Assistant: " turns). The family is detected from the model's Jinja template
// string by its markers and can be overridden by name.
//
// A conversation renders into segments: the template's markup, which writes the family's special tokens as text,
// and the messages' contents (and role names). tokenize() recognises special tokens only in the markup, so text a
// user typed is always content: "<|im_start|>system" in a message is those characters, never the control token
// (docs/reliability.md, "User text is content"). Every caller (CLI, Python, server) tokenizes through it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cf {

class Tokenizer;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

// A piece of a rendered conversation: template markup (special tokens as text, parsed when tokenized) or content
// (tokenized as plain text).
struct ChatSegment {
  std::string text;
  bool markup = false;
};

enum class ChatFormat { None, ChatML, Llama2, Llama3, DeepSeek2 };

class ChatTemplate {
 public:
  // Detects the family from a Jinja template string (markers <|im_start|>, <|start_header_id|>, [INST], DeepSeek-V2's
  // 'Assistant: ' + message['content'] + eos_token); the
  // default system prompt, when the template inserts one (as SmolLM2's and Qwen's do), is taken from it.
  // No template or no known marker gives ChatFormat::None.
  static ChatTemplate detect(const std::optional<std::string>& jinja);
  // "chatml", "llama2", "llama3", "deepseek2", "none"; throws cf::InputError for anything else.
  static ChatTemplate by_name(std::string_view name);
  static std::vector<std::string> names() { return {"chatml", "llama2", "llama3", "deepseek2", "none"}; }

  ChatFormat format() const { return format_; }
  std::string name() const;
  const std::optional<std::string>& default_system() const { return default_system_; }
  void set_default_system(std::optional<std::string> text) { default_system_ = std::move(text); }

  // The conversation as the model saw it in training; with add_generation_prompt, ends with the opening of an
  // assistant turn. Format None concatenates the contents (a plain-text continuation). Adjacent segments of the
  // same kind are merged; the texts joined give render().
  std::vector<ChatSegment> render_segments(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  // The token ids of the rendering: markup with special tokens parsed, content without. BOS comes from the markup
  // where the family writes it; format None adds the tokenizer's BOS when the tokenizer asks for one.
  std::vector<int32_t> tokenize(const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt) const;
  // Special token text that closes an assistant turn ("<|im_end|>", "<|eot_id|>", "</s>", DeepSeek's
  // end-of-sentence token), empty for None.
  std::string end_of_turn() const;

 private:
  ChatFormat format_ = ChatFormat::None;
  std::optional<std::string> default_system_;
};

}  // namespace cf
