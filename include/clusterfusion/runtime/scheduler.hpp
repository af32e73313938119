// Continuous batching over one Runner (the server's engine). Requests wait in a bounded queue, take a free sequence
// slot between steps and leave the batch as soon as they finish or are cancelled (their KV pages go back to the pool
// at that step boundary). Each step of the engine thread is at most one prefill chunk of one waiting prompt followed
// by one lockstep decode step of every running sequence, so a long prompt delays running streams by one chunk per
// token, not by its whole prefill. Sampling is per request (own Sampler, seed, stop strings), and a sequence's tokens
// do not depend on what else is in the batch (the cpu backend's logits are bit-identical for any batch).
//
//   Scheduler scheduler(runner, tokenizer, {});
//   auto stream = scheduler.submit(request);           // QueueFullError when the queue is full
//   for (auto u = stream->next(100ms); !u.outcome; u = stream->next(100ms)) print(u.text);
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "clusterfusion/tokenizer/tokenizer.hpp"
#include "clusterfusion/runtime/runner.hpp"
#include "clusterfusion/runtime/sampler.hpp"

namespace cf {

struct GenerationRequest {
  std::vector<int32_t> prompt;  // at least one token, fewer than the runner's context
  int max_new_tokens = 256;     // sampled tokens at most (an end-of-generation token counts)
  SamplerConfig sampling;
  // OpenAI's penalties: each generated token's logit is lowered by presence (once it has appeared) plus
  // frequency x its count so far. 0 = off; [-2, 2].
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::vector<std::string> stop;  // generation ends before the first of these strings (not included in the text)
};

// Stop: an end-of-generation token or a stop string. Length: max_new_tokens or a full context.
enum class FinishReason { Stop, Length, Cancelled, Error };
std::string_view finish_reason_name(FinishReason r);  // "stop", "length", "cancelled", "error"

struct GenerationOutcome {
  FinishReason finish = FinishReason::Stop;
  int prompt_tokens = 0;
  int completion_tokens = 0;   // tokens sampled (an end-of-generation token included)
  double first_token_seconds = 0;  // from submit() to the first sampled token (0 when none was sampled)
  double decode_seconds = 0;       // from the first sampled token to the end
  std::string error;               // for FinishReason::Error: what went wrong, one line
};

// What one request produces, read by its consumer (e.g. an HTTP thread) while the engine thread writes it.
class GenerationStream {
 public:
  struct Update {
    std::string text;                         // produced since the previous next()
    std::optional<GenerationOutcome> outcome;  // set once the request has ended (text holds its last piece)
  };
  // Waits up to `timeout` for new text or the end.
  Update next(std::chrono::milliseconds timeout);
  // Ends the request (FinishReason::Cancelled): the engine frees its sequence and KV pages at the next step
  // boundary, or drops it from the queue. Safe from any thread, any number of times.
  void cancel();
  bool cancelled() const { return cancelled_.load(); }

 private:
  friend class Scheduler;
  void append(std::string_view text);
  void finish(GenerationOutcome outcome);
  std::mutex mutex_;
  std::condition_variable changed_;
  std::string text_;
  std::optional<GenerationOutcome> outcome_;
  bool delivered_ = false;
  std::atomic<bool> cancelled_{false};
  std::function<void()> wake_engine_;
};

// Holds back streamed text that may be the start of a stop string, and cuts the text at the first stop string.
class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops);
  // Appends text; returns what can be emitted now. Once a stop string is seen, matched() is true and everything
  // from it on is dropped.
  std::string push(std::string_view text);
  // At the end of generation: the held-back text (empty after a match).
  std::string flush();
  bool matched() const { return matched_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool matched_ = false;
};

// Thrown by submit() when the queue holds SchedulerOptions::max_queue requests already.
class QueueFullError : public Error {
 public:
  using Error::Error;
};

struct SchedulerOptions {
  int max_queue = 32;       // requests waiting for a sequence slot; one more is refused with QueueFullError
  int prefill_chunk = 128;  // prompt tokens per step while other sequences decode
  // Called on the engine thread with every request's outcome, once, as it ends (e.g. to count it in metrics).
  std::function<void(const GenerationOutcome&)> on_finish;
};

struct SchedulerStats {
  int slots = 0;           // sequences the runner decodes in lockstep (the batch limit)
  int running = 0;         // requests holding a slot (prefilling or decoding)
  int queued = 0;          // requests waiting for a slot
  int kv_pages = 0;        // pages in the KV pool
  int kv_pages_in_use = 0; // pages held by sequences (the runner's page table)
  uint64_t decode_steps = 0;
  uint64_t decode_rows = 0;  // sum of the decode steps' batch sizes
  uint64_t prefill_chunks = 0;
  uint64_t prompt_tokens = 0;     // prompt tokens run through the model
  uint64_t generated_tokens = 0;  // tokens sampled
};

class Scheduler {
 public:
  // The runner's max_seqs is the batch limit; its sequences must not be used by anyone else while this lives.
  Scheduler(Runner& runner, std::shared_ptr<const Tokenizer> tokenizer, SchedulerOptions options = {});
  ~Scheduler();  // ends every request (FinishReason::Error) and stops the engine thread
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  int context_limit() const { return runner_.context_limit(); }

  // Queues a request. Throws InputError for an empty prompt, one that leaves no room in the context or bad
  // sampling settings, QueueFullError when the queue is full, Error after abort_all().
  std::shared_ptr<GenerationStream> submit(GenerationRequest request);

  // Ends every queued and running request with FinishReason::Error(message) at the next step boundary and refuses
  // new ones from now on (graceful shutdown's last step).
  void abort_all(const std::string& message);
  // True when no request is queued or running.
  bool idle() const;
  SchedulerStats stats() const;

 private:
  struct Active;
  void engine_loop();
  void admit_locked();
  void end_cancelled_and_aborted();
  void prefill_step(Active& a);
  void decode_step();
  void accept_token(Active& a, int32_t token);
  int32_t sample(Active& a, std::span<const float> logits);
  void finish(Active& a, FinishReason reason, std::string error = {});
  void release_finished();

  Runner& runner_;
  std::shared_ptr<const Tokenizer> tokenizer_;
  SchedulerOptions options_;

  mutable std::mutex mutex_;  // guards everything below up to the engine's own state
  std::condition_variable wake_;
  struct Queued;
  std::deque<std::unique_ptr<Queued>> queue_;
  std::vector<bool> slot_busy_;
  std::optional<std::string> abort_message_;
  bool stopping_ = false;
  SchedulerStats stats_;

  std::vector<std::unique_ptr<Active>> active_;  // engine thread only
  std::thread engine_;
};

}  // namespace cf
