#include "clusterfusion/runtime/session.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace cf {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// NaN or Inf logits mean the forward pass overflowed (weights out of range, a corrupt file that passed the load
// checks): an error, not a reply that ends at once because NaN compared as the end token.
void check_logits_finite(std::span<const float> logits, int step) {
  for (const float x : logits)
    if (!std::isfinite(x))
      throw Error("the model computed NaN or infinite logits for generated token " + std::to_string(step + 1) +
                  ": its weights are corrupt or out of range");
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

TokenLogprobs token_logprobs(std::span<const float> logits, int32_t token, int top_n) {
  CF_CHECK(token >= 0 && size_t(token) < logits.size(), "token_logprobs: token outside the logits");
  float max_logit = logits[0];
  for (const float x : logits) max_logit = std::max(max_logit, x);
  double sum = 0;
  for (const float x : logits) sum += std::exp(double(x) - max_logit);
  const double log_z = double(max_logit) + std::log(sum);
  TokenLogprobs out;
  out.token = token;
  out.logprob = float(double(logits[size_t(token)]) - log_z);
  const size_t n = std::min(logits.size(), size_t(std::max(top_n, 0)));
  if (n == 0) return out;
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i);
  const auto more_likely = [&](int32_t a, int32_t b) {
    return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
  };
  std::partial_sort(ids.begin(), ids.begin() + long(n), ids.end(), more_likely);
  for (size_t i = 0; i < n; ++i) out.top.emplace_back(ids[i], float(double(logits[size_t(ids[i])]) - log_z));
  return out;
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
  CF_CHECK_INPUT(options.top_logprobs >= 0 && options.top_logprobs <= GenerationOptions::kMaxTopLogprobs,
                 "top logprobs must be in 0.." + std::to_string(GenerationOptions::kMaxTopLogprobs));
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
    const std::span<const float> row(logits->data(), vocab);
    check_logits_finite(row, stats.generated_tokens);
    const int32_t token = sampler.sample(row, history_);
    ++stats.generated_tokens;
    if (options.on_token) options.on_token(token_logprobs(row, token, options.top_logprobs));
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
