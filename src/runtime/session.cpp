#include "clusterfusion/runtime/session.hpp"

#include <chrono>

namespace cf {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

std::string_view stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::EndOfGeneration: return "end of generation";
    case StopReason::MaxTokens: return "max tokens";
    case StopReason::ContextFull: return "context full";
    case StopReason::Stopped: return "stopped";
  }
  return "?";
}

Generator::Generator(Runner& runner, std::shared_ptr<const Tokenizer> tokenizer, int seq)
    : runner_(runner), tokenizer_(std::move(tokenizer)), seq_(seq) {
  CF_CHECK(tokenizer_ != nullptr, "Generator: no tokenizer");
  CF_CHECK_INPUT(tokenizer_->vocab_size() <= runner_.vocab(),
                 "tokenizer has " + std::to_string(tokenizer_->vocab_size()) + " tokens but the model only " +
                     std::to_string(runner_.vocab()));
  runner_.reset(seq_);
}

void Generator::reset() {
  history_.clear();
  runner_.reset(seq_);
}

GenerationStats Generator::generate(const std::vector<int32_t>& prompt, const GenerationOptions& options,
                                    const TextCallback& on_text) {
  CF_CHECK_INPUT(!prompt.empty(), "empty prompt: nothing to generate from");
  CF_CHECK_INPUT(options.max_new_tokens >= 0, "max new tokens must not be negative");
  GenerationStats stats;
  const int context = runner_.context_limit();
  if (int(prompt.size()) >= context) {
    stats.stop = StopReason::ContextFull;
    stats.message = "the prompt has " + std::to_string(prompt.size()) + " tokens, which does not leave room in the " +
                    std::to_string(context) + "-token context (start a new conversation or raise --ctx)";
    return stats;
  }
  // Reuse the KV of the longest common prefix; at least the last prompt token is run again to get its logits.
  size_t common = 0;
  while (common < history_.size() && common < prompt.size() && history_[common] == prompt[common]) ++common;
  if (common == prompt.size()) --common;
  runner_.truncate(seq_, int(common));
  history_.resize(common);

  const auto prompt_start = std::chrono::steady_clock::now();
  const std::span<const int32_t> new_tokens(prompt.data() + common, prompt.size() - common);
  const std::vector<float>* logits = &runner_.prefill(seq_, new_tokens);
  history_.insert(history_.end(), new_tokens.begin(), new_tokens.end());
  stats.prompt_tokens = int(new_tokens.size());
  stats.prompt_seconds = seconds_since(prompt_start);

  const auto gen_start = std::chrono::steady_clock::now();
  Sampler sampler(options.sampling);
  StreamDecoder decoder(tokenizer_);
  const size_t vocab = size_t(runner_.vocab());
  bool stopped_by_callback = false;
  stats.stop = StopReason::MaxTokens;
  while (stats.generated_tokens < options.max_new_tokens) {
    const int32_t token = sampler.sample(std::span<const float>(logits->data(), vocab), history_);
    ++stats.generated_tokens;
    if (tokenizer_->is_end_of_generation(token)) {
      stats.stop = StopReason::EndOfGeneration;
      break;
    }
    const std::string text = decoder.push(token);
    if (!text.empty() && on_text && !on_text(text)) stopped_by_callback = true;
    // The history holds exactly what the KV cache holds: a token that ends the loop is not run (a later turn
    // runs it through the common-prefix logic if the conversation continues after it).
    if (stopped_by_callback) {
      stats.stop = StopReason::Stopped;
      break;
    }
    if (stats.generated_tokens == options.max_new_tokens) break;
    if (runner_.length(seq_) + 1 > context) {
      stats.stop = StopReason::ContextFull;
      stats.message = "context full: reached the " + std::to_string(context) +
                      "-token context (start a new conversation or raise --ctx)";
      break;
    }
    const int32_t seqs[1] = {seq_};
    logits = &runner_.decode(seqs, std::span<const int32_t>(&token, 1));
    history_.push_back(token);
  }
  const std::string rest = decoder.flush();
  if (!rest.empty() && on_text) on_text(rest);
  stats.generate_seconds = seconds_since(gen_start);
  if (stats.stop == StopReason::MaxTokens && stats.message.empty())
    stats.message = "stopped after " + std::to_string(stats.generated_tokens) + " tokens (max tokens)";
  return stats;
}

ChatSession::ChatSession(Generator& generator, ChatTemplate chat_template, std::optional<std::string> system)
    : generator_(generator), template_(std::move(chat_template)) {
  if (system) {
    if (system->empty()) {
      template_.set_default_system(std::nullopt);
    } else {
      messages_.push_back({"system", *system});
    }
  }
}

std::vector<int32_t> ChatSession::render_tokens(bool add_generation_prompt) const {
  return template_.tokenize(generator_.tokenizer(), messages_, add_generation_prompt);
}

GenerationStats ChatSession::send(const std::string& user_text, const GenerationOptions& options,
                                  const TextCallback& on_text, std::string* reply) {
  messages_.push_back({"user", user_text});
  std::string answer;
  const GenerationStats stats = generator_.generate(render_tokens(true), options, [&](std::string_view text) {
    answer += text;
    return on_text ? on_text(text) : true;
  });
  if (stats.stop == StopReason::ContextFull && stats.generated_tokens == 0) {
    messages_.pop_back();  // the turn did not fit: leave the conversation as it was
  } else {
    messages_.push_back({"assistant", answer});
  }
  if (reply) *reply = answer;
  return stats;
}

}  // namespace cf
