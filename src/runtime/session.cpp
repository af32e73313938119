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
  Generation generation(*this, prompt, options);
  while (!generation.done()) {
    const std::string text = generation.next();
    if (!text.empty() && on_text && !on_text(text)) {
      const std::string rest = generation.stop();
      if (!rest.empty()) on_text(rest);
    }
  }
  return generation.stats();
}

Generation::Generation(Generator& generator, const std::vector<int32_t>& prompt, const GenerationOptions& options)
    : g_(generator), options_(options), sampler_(options.sampling), decoder_(generator.tokenizer_) {
  CF_CHECK_INPUT(!prompt.empty(), "empty prompt: nothing to generate from");
  CF_CHECK_INPUT(options.max_new_tokens >= 0, "max new tokens must not be negative");
  CF_CHECK_INPUT(options.top_logprobs >= 0 && options.top_logprobs <= GenerationOptions::kMaxTopLogprobs,
                 "top logprobs must be in 0.." + std::to_string(GenerationOptions::kMaxTopLogprobs));
  Runner& runner = g_.runner_;
  const int context = runner.context_limit();
  if (int(prompt.size()) >= context) {
    finish(StopReason::ContextFull, "the prompt has " + std::to_string(prompt.size()) +
                                        " tokens, which does not leave room in the " + std::to_string(context) +
                                        "-token context (start a new conversation or raise --ctx)");
    return;
  }
  // Reuse the KV of the longest common prefix; at least the last prompt token is run again to get its logits.
  std::vector<int32_t>& history = g_.history_;
  size_t common = 0;
  while (common < history.size() && common < prompt.size() && history[common] == prompt[common]) ++common;
  if (common == prompt.size()) --common;
  runner.truncate(g_.seq_, int(common));
  history.resize(common);

  const auto prompt_start = std::chrono::steady_clock::now();
  const std::span<const int32_t> new_tokens(prompt.data() + common, prompt.size() - common);
  logits_ = &runner.prefill(g_.seq_, new_tokens);
  history.insert(history.end(), new_tokens.begin(), new_tokens.end());
  stats_.prompt_tokens = int(new_tokens.size());
  stats_.prompt_seconds = seconds_since(prompt_start);
  if (options_.max_new_tokens == 0) finish(StopReason::MaxTokens);
}

std::string Generation::next() {
  if (done_) return {};
  const auto start = std::chrono::steady_clock::now();
  Runner& runner = g_.runner_;
  // The history holds exactly what the KV cache holds: the token streamed last is run only now, when the caller
  // wants more (one that ends the generation is never run; a later turn runs it through the common prefix).
  if (pending_ >= 0) {
    const int32_t seqs[1] = {g_.seq_};
    logits_ = &runner.decode(seqs, std::span<const int32_t>(&pending_, 1));
    g_.history_.push_back(pending_);
    pending_ = -1;
  }
  const std::span<const float> row(logits_->data(), size_t(runner.vocab()));
  check_logits_finite(row, stats_.generated_tokens);
  const int32_t token = sampler_.sample(row, g_.history_);
  ++stats_.generated_tokens;
  if (options_.on_token) options_.on_token(token_logprobs(row, token, options_.top_logprobs));
  std::string text;
  if (g_.tokenizer_->is_end_of_generation(token)) {
    text = finish(StopReason::EndOfGeneration);
  } else {
    text = decoder_.push(token);
    const int context = runner.context_limit();
    if (stats_.generated_tokens == options_.max_new_tokens) {
      text += finish(StopReason::MaxTokens);
    } else if (runner.length(g_.seq_) + 1 > context) {
      text += finish(StopReason::ContextFull, "context full: reached the " + std::to_string(context) +
                                                  "-token context (start a new conversation or raise --ctx)");
    } else {
      pending_ = token;
    }
  }
  stats_.generate_seconds += seconds_since(start);
  return text;
}

std::string Generation::stop() {
  if (done_) return {};
  pending_ = -1;
  return finish(StopReason::Stopped);
}

std::string Generation::finish(StopReason why, std::string message) {
  done_ = true;
  stats_.stop = why;
  stats_.message = std::move(message);
  if (why == StopReason::MaxTokens)
    stats_.message = "stopped after " + std::to_string(stats_.generated_tokens) + " tokens (max tokens)";
  return decoder_.flush();
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

std::vector<int32_t> ChatSession::prompt_with(const std::string& user_text) const {
  std::vector<ChatMessage> messages = messages_;
  messages.push_back({"user", user_text});
  return template_.tokenize(generator_.tokenizer(), messages, /*add_generation_prompt=*/true);
}

GenerationStats ChatSession::send(const std::string& user_text, const GenerationOptions& options,
                                  const TextCallback& on_text, std::string* reply) {
  const std::vector<int32_t> prompt = prompt_with(user_text);
  messages_.push_back({"user", user_text});
  std::string answer;
  const GenerationStats stats = generator_.generate(prompt, options, [&](std::string_view text) {
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
