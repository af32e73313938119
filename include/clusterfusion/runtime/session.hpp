// Text generation on one sequence of a Runner: history, streaming through StreamDecoder, stop at an
// end-of-generation token, at max tokens or when the context is full; and a chat session (history of messages
// rendered with a ChatTemplate) on top of it.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <utility>
#include <string>
#include <string_view>
#include <vector>

#include "clusterfusion/tokenizer/tokenizer.hpp"
#include "clusterfusion/runtime/chat_template.hpp"
#include "clusterfusion/runtime/runner.hpp"
#include "clusterfusion/runtime/sampler.hpp"

namespace cf {

// The model's distribution at one generated position, as log-probabilities (log-softmax of the logits: before the
// repetition penalty, temperature and filters, so independent of the sampling settings): the sampled token's and
// those of the most likely tokens.
struct TokenLogprobs {
  int32_t token = -1;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // most likely first; ties by smaller id
};
using TokenCallback = std::function<void(const TokenLogprobs& step)>;

struct GenerationOptions {
  static constexpr int kMaxTopLogprobs = 20;
  int max_new_tokens = 256;
  SamplerConfig sampling;
  TokenCallback on_token;  // called for every sampled token (an end token included), before its text is streamed
  int top_logprobs = 0;    // with on_token: the most likely tokens reported per step, 0..kMaxTopLogprobs
};

// Log-softmax of one row of logits: the given token's log-probability and the top_n most likely tokens'.
TokenLogprobs token_logprobs(std::span<const float> logits, int32_t token, int top_n);

enum class StopReason { EndOfGeneration, MaxTokens, ContextFull, Stopped };
std::string_view stop_reason_name(StopReason r);

struct GenerationStats {
  int prompt_tokens = 0;  // tokens actually run through the model for the prompt (history reuse excluded)
  double prompt_seconds = 0;
  int generated_tokens = 0;
  double generate_seconds = 0;  // from the first sampled token to the end
  StopReason stop = StopReason::MaxTokens;
  std::string message;  // why it stopped, one line (e.g. the context-full explanation)

  double prompt_tokens_per_second() const { return prompt_seconds > 0 ? prompt_tokens / prompt_seconds : 0; }
  double generate_tokens_per_second() const { return generate_seconds > 0 ? generated_tokens / generate_seconds : 0; }
};

// Receives each newly decoded piece of text; return false to stop generating.
using TextCallback = std::function<bool(std::string_view text)>;

class Generator {
 public:
  Generator(Runner& runner, std::shared_ptr<const Tokenizer> tokenizer, int seq = 0);

  const std::vector<int32_t>& history() const { return history_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  Runner& runner() { return runner_; }
  void reset();

  // Makes the sequence hold `prompt` (reusing the longest common prefix with the history, so a chat only runs its
  // new tokens), then samples up to max_new_tokens, streaming text to on_text. The sampled tokens, the end token
  // included, join the history. A prompt that does not fit the context stops with StopReason::ContextFull.
  GenerationStats generate(const std::vector<int32_t>& prompt, const GenerationOptions& options,
                           const TextCallback& on_text);

 private:
  friend class Generation;
  Runner& runner_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  int seq_;
  std::vector<int32_t> history_;
};

// One generation, a token at a time: what Generator::generate runs to the end, for callers that pull the text (the
// Python iterator: nothing runs while its consumer is away). The constructor runs the prompt (a prompt that does not
// fit ends it at once with StopReason::ContextFull); each next() runs the token streamed before, samples the next
// one and returns its text. The Generator (and its Runner) must not be used for anything else meanwhile.
class Generation {
 public:
  Generation(Generator& generator, const std::vector<int32_t>& prompt, const GenerationOptions& options);
  bool done() const { return done_; }
  // The next piece of text: may be empty (a character still incomplete); the call that finishes also returns what
  // the decoder held back; "" once done.
  std::string next();
  // Ends early (StopReason::Stopped): the token streamed last is not run. Returns the text held back.
  std::string stop();
  const GenerationStats& stats() const { return stats_; }  // generate_seconds: time spent inside next()

 private:
  std::string finish(StopReason why, std::string message = {});
  Generator& g_;
  GenerationOptions options_;
  Sampler sampler_;
  StreamDecoder decoder_;
  const std::vector<float>* logits_ = nullptr;  // the runner's logits for the next sample
  int32_t pending_ = -1;                        // streamed, not yet run
  GenerationStats stats_;
  bool done_ = false;
};

class ChatSession {
 public:
  // system: overrides the template's default system prompt (an empty string means none).
  ChatSession(Generator& generator, ChatTemplate chat_template, std::optional<std::string> system = std::nullopt);

  const std::vector<ChatMessage>& messages() const { return messages_; }
  const ChatTemplate& chat_template() const { return template_; }
  // Adds a user turn, generates the assistant's reply (streamed) and adds it to the messages.
  GenerationStats send(const std::string& user_text, const GenerationOptions& options, const TextCallback& on_text,
                       std::string* reply = nullptr);
  // The token ids of the conversation so far, rendered (what generate() is given).
  std::vector<int32_t> render_tokens(bool add_generation_prompt) const;
  // The prompt of a next user turn: the conversation so far and that turn, ending where the assistant's reply starts
  // (what send() generates from; for callers that run the generation themselves).
  std::vector<int32_t> prompt_with(const std::string& user_text) const;

 private:
  Generator& generator_;
  ChatTemplate template_;
  std::vector<ChatMessage> messages_;
};

}  // namespace cf
