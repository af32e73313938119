// Continuous batching (Scheduler) on a tiny random model with a byte-level fake tokenizer: requests decoded together
// give exactly what each gives alone (Generator), long prompts are prefilled in chunks between decode steps,
// cancelled requests free their sequence and KV pages, the queue is bounded, stop strings and OpenAI's penalties.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/scheduler.hpp"
#include "clusterfusion/runtime/session.hpp"
#include "test_models.hpp"

namespace {

using namespace std::chrono_literals;

constexpr int kContext = 64;

std::shared_ptr<cf::ModelWeights> tiny_weights(int vocab) {
  auto c = cf::test::tiny_config();
  c.max_context = kContext;
  c.vocab = vocab;  // the fake tokenizer's size, so every sampled id has text
  return std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(c, 33, cf::DType::F32));
}

cf::BackendOptions backend_options(int max_seqs) {
  cf::BackendOptions o;
  o.max_seqs = max_seqs;
  return o;
}

cf::SchedulerOptions options(int max_queue, int prefill_chunk) {
  cf::SchedulerOptions o;
  o.max_queue = max_queue;
  o.prefill_chunk = prefill_chunk;
  return o;
}

struct Finished {
  std::string text;
  cf::GenerationOutcome outcome;
};

Finished drain(cf::GenerationStream& stream) {
  Finished f;
  for (int waited = 0; waited < 2000; ++waited) {
    auto u = stream.next(10ms);
    f.text += u.text;
    if (u.outcome) {
      f.outcome = *u.outcome;
      return f;
    }
  }
  ADD_FAILURE() << "a request did not finish within 20 s";
  return f;
}

// Waits until the engine has released every slot (outcomes reach their streams just before that).
void wait_idle(const cf::Scheduler& scheduler) {
  for (int i = 0; i < 2000 && !scheduler.idle(); ++i) std::this_thread::sleep_for(5ms);
  ASSERT_TRUE(scheduler.idle());
}

cf::GenerationRequest request(const std::vector<int32_t>& prompt, int max_tokens, float temperature = 0.0f,
                              uint64_t seed = 0) {
  cf::GenerationRequest r;
  r.prompt = prompt;
  r.max_new_tokens = max_tokens;
  r.sampling.temperature = temperature;
  r.sampling.top_p = temperature > 0 ? 0.9f : 1.0f;
  r.sampling.repeat_penalty = 1.1f;
  r.sampling.seed = seed;
  return r;
}

// What the request gives alone, through the single-sequence Generator.
Finished alone(const std::shared_ptr<cf::ModelWeights>& weights, const std::shared_ptr<cf::test::ByteTokenizer>& tok,
               const cf::GenerationRequest& r) {
  cf::Runner runner(cf::create_backend("cpu", weights, {}), 1, kContext);
  cf::Generator g(runner, tok);
  Finished f;
  cf::GenerationOptions options;
  options.max_new_tokens = r.max_new_tokens;
  options.sampling = r.sampling;
  const auto stats = g.generate(r.prompt, options, [&](std::string_view t) {
    f.text += t;
    return true;
  });
  f.outcome.completion_tokens = stats.generated_tokens;
  f.outcome.finish = stats.stop == cf::StopReason::EndOfGeneration ? cf::FinishReason::Stop : cf::FinishReason::Length;
  return f;
}

TEST(Scheduler, ConcurrentRequestsGiveWhatEachGivesAlone) {
  auto tok = std::make_shared<cf::test::ByteTokenizer>();
  auto weights = tiny_weights(tok->vocab_size());
  cf::Runner runner(cf::create_backend("cpu", weights, backend_options(3)), 3, kContext);
  auto o = options(8, 5);  // small chunks: prefill interleaves with decoding
  std::atomic<int> finished_count{0};
  o.on_finish = [&](const cf::GenerationOutcome&) { ++finished_count; };
  cf::Scheduler scheduler(runner, tok, o);
  std::vector<cf::GenerationRequest> requests;
  const char* prompts[] = {"Hello there", "a", "The quick brown fox jumps over", "xyz", "0123456789abcdef", "Hi"};
  for (int i = 0; i < 6; ++i)
    requests.push_back(request(tok->encode(prompts[i], false, false), 10 + 4 * i, i % 2 ? 0.8f : 0.0f, 100 + i));
  std::vector<std::shared_ptr<cf::GenerationStream>> streams;
  for (const auto& r : requests) streams.push_back(scheduler.submit(r));  // 3 run, 3 wait for a slot
  for (size_t i = 0; i < requests.size(); ++i) {
    const Finished got = drain(*streams[i]);
    const Finished want = alone(weights, tok, requests[i]);
    EXPECT_EQ(got.text, want.text) << "request " << i;
    EXPECT_EQ(got.outcome.completion_tokens, want.outcome.completion_tokens) << "request " << i;
    EXPECT_EQ(got.outcome.finish, want.outcome.finish) << "request " << i;
    EXPECT_EQ(got.outcome.prompt_tokens, int(requests[i].prompt.size()));
  }
  EXPECT_EQ(finished_count, 6);
  wait_idle(scheduler);
  const auto stats = scheduler.stats();
  EXPECT_GT(stats.decode_rows, stats.decode_steps) << "no decode step ever had more than one sequence";
  EXPECT_EQ(stats.running, 0);
  EXPECT_EQ(stats.queued, 0);
  EXPECT_EQ(stats.kv_pages_in_use, 0);
}

// Records each forward call's shape, and lets calls through only while it has permits (to hold requests in place).
class RecordingBackend final : public cf::Backend {
 public:
  explicit RecordingBackend(std::unique_ptr<cf::Backend> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return "recording"; }
  const cf::ModelConfig& config() const override { return inner_->config(); }
  const cf::KvCacheShape& kv_shape() const override { return inner_->kv_shape(); }
  int max_batch_tokens() const override { return inner_->max_batch_tokens(); }
  void forward(const cf::Batch& batch, float* logits) override {
    {
      std::unique_lock lock(mutex_);
      calls_.push_back({batch.n_tokens(), batch.n_seqs()});
      ++started_;
      changed_.notify_all();
      changed_.wait(lock, [&] { return permits_ > 0; });
      --permits_;
    }
    inner_->forward(batch, logits);
  }
  struct Call {
    int tokens, seqs;
  };
  std::vector<Call> calls() {
    std::lock_guard lock(mutex_);
    return calls_;
  }
  // Lets the next n calls run (a large n: all of them).
  void allow(int n) {
    std::lock_guard lock(mutex_);
    permits_ = n;
    changed_.notify_all();
  }
  void open() { allow(1 << 30); }
  void wait_started(int n) {
    std::unique_lock lock(mutex_);
    ASSERT_TRUE(changed_.wait_for(lock, 20s, [&] { return started_ >= n; }));
  }

 private:
  std::unique_ptr<cf::Backend> inner_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<Call> calls_;
  int started_ = 0;
  int permits_ = 1 << 30;
};

// A scheduler over a RecordingBackend on the tiny model, with `slots` sequences.
struct Recorded {
  Recorded(int slots, cf::SchedulerOptions o)
      : weights(tiny_weights(tok->vocab_size())),
        recording(new RecordingBackend(cf::create_backend("cpu", weights, backend_options(slots)))),
        rec(*recording),
        runner(std::move(recording), slots, kContext),
        scheduler(runner, tok, std::move(o)) {}
  std::shared_ptr<cf::test::ByteTokenizer> tok = std::make_shared<cf::test::ByteTokenizer>();
  std::shared_ptr<cf::ModelWeights> weights;
  std::unique_ptr<RecordingBackend> recording;  // moved into the runner
  RecordingBackend& rec;
  cf::Runner runner;
  cf::Scheduler scheduler;
};

TEST(Scheduler, LongPromptIsPrefilledInChunksBetweenDecodeSteps) {
  Recorded r(2, options(4, 8));
  r.rec.allow(0);
  auto running = r.scheduler.submit(request(r.tok->encode("go", false, false), 30));
  r.rec.wait_started(1);  // "go" is being prefilled; the long prompt arrives meanwhile
  std::vector<int32_t> long_prompt = r.tok->encode(std::string(40, 'x'), false, false);
  auto late = r.scheduler.submit(request(long_prompt, 5));
  r.rec.open();
  drain(*running);
  drain(*late);
  // The 40-token prompt goes in 5 chunks of 8; each chunk is followed by a decode step of the running request.
  const auto calls = r.rec.calls();
  int chunks = 0;
  for (size_t i = 0; i < calls.size(); ++i) {
    if (calls[i].tokens != 8) continue;
    ++chunks;
    ASSERT_LT(i + 1, calls.size());
    EXPECT_EQ(calls[i + 1].tokens, calls[i + 1].seqs) << "call " << i + 1 << " after a chunk is not a decode step";
  }
  EXPECT_EQ(chunks, 5);
  bool batched = false;
  for (const auto& c : calls) batched |= c.seqs == 2 && c.tokens == 2;
  EXPECT_TRUE(batched) << "the two requests never decoded in one step";
}

TEST(Scheduler, CancelFreesTheSequenceAndItsPages) {
  Recorded r(1, options(4, 16));
  r.rec.allow(3);
  auto first = r.scheduler.submit(request(r.tok->encode("running", false, false), 50));
  auto waiting = r.scheduler.submit(request(r.tok->encode("queued", false, false), 50));
  r.rec.wait_started(4);  // prefill and 2 decode steps of the first ran, the 3rd waits; the second request waits
                        // for the only slot
  EXPECT_EQ(r.scheduler.stats().queued, 1);
  EXPECT_GT(r.scheduler.stats().kv_pages_in_use, 0);
  waiting->cancel();
  first->cancel();
  r.rec.open();
  const Finished a = drain(*first), b = drain(*waiting);
  EXPECT_EQ(a.outcome.finish, cf::FinishReason::Cancelled);
  EXPECT_LT(a.outcome.completion_tokens, 50);
  EXPECT_EQ(b.outcome.finish, cf::FinishReason::Cancelled);
  EXPECT_EQ(b.outcome.completion_tokens, 0);
  wait_idle(r.scheduler);
  const auto stats = r.scheduler.stats();
  EXPECT_EQ(stats.running, 0);
  EXPECT_EQ(stats.kv_pages_in_use, 0);
  // The slot is usable again.
  EXPECT_EQ(drain(*r.scheduler.submit(request(r.tok->encode("next", false, false), 3))).outcome.completion_tokens, 3);
}

TEST(Scheduler, QueueIsBoundedAndAbortEndsEverything) {
  Recorded r(1, options(2, 16));
  r.rec.allow(0);
  const auto prompt = r.tok->encode("abc", false, false);
  std::vector<std::shared_ptr<cf::GenerationStream>> accepted;
  for (int i = 0; i < 3; ++i) accepted.push_back(r.scheduler.submit(request(prompt, 20)));  // 1 slot + 2 queued
  EXPECT_THROW(r.scheduler.submit(request(prompt, 20)), cf::QueueFullError);
  r.scheduler.abort_all("shutting down");
  r.rec.open();
  for (auto& s : accepted) {
    const Finished f = drain(*s);
    EXPECT_EQ(f.outcome.finish, cf::FinishReason::Error);
    EXPECT_EQ(f.outcome.error, "shutting down");
  }
  EXPECT_THROW(r.scheduler.submit(request(prompt, 20)), cf::Error);
  wait_idle(r.scheduler);
  EXPECT_EQ(r.scheduler.stats().kv_pages_in_use, 0);
}

TEST(Scheduler, RejectsPromptsThatDoNotFitAndStopsAtTheContext) {
  auto tok = std::make_shared<cf::test::ByteTokenizer>();
  auto weights = tiny_weights(tok->vocab_size());
  cf::Runner runner(cf::create_backend("cpu", weights, backend_options(2)), 2, kContext);
  cf::Scheduler scheduler(runner, tok, {});
  EXPECT_THROW(scheduler.submit(request({}, 5)), cf::InputError);
  EXPECT_THROW(scheduler.submit(request(std::vector<int32_t>(kContext, 'a'), 5)), cf::InputError);
  EXPECT_THROW(scheduler.submit(request({'a', 100000}, 5)), cf::InputError);
  EXPECT_THROW(scheduler.submit(request({'a'}, 0)), cf::InputError);
  auto bad_sampling = request({'a'}, 5);
  bad_sampling.sampling.top_p = 0.0f;
  EXPECT_THROW(scheduler.submit(bad_sampling), cf::InputError);
  // A prompt one short of the context: like the Generator, the first token comes from the prefill and one more
  // fits, then the context is full.
  const auto near_full = request(std::vector<int32_t>(kContext - 1, 'a'), 50);
  const Finished got = drain(*scheduler.submit(near_full));
  const Finished want = alone(weights, tok, near_full);
  EXPECT_EQ(got.outcome.finish, cf::FinishReason::Length);
  EXPECT_EQ(got.outcome.completion_tokens, want.outcome.completion_tokens);
  EXPECT_EQ(got.text, want.text);
}

TEST(Scheduler, StopStringsCutTheText) {
  auto tok = std::make_shared<cf::test::ByteTokenizer>();
  auto weights = tiny_weights(tok->vocab_size());
  cf::Runner runner(cf::create_backend("cpu", weights, backend_options(2)), 2, kContext);
  cf::Scheduler scheduler(runner, tok, {});
  auto r = request(tok->encode("stop here", false, false), 40);
  const std::string full = drain(*scheduler.submit(r)).text;
  ASSERT_GE(full.size(), 12u);
  r.stop = {full.substr(6, 3), "never appears \x01"};
  const Finished cut = drain(*scheduler.submit(r));
  EXPECT_EQ(cut.text, full.substr(0, full.find(r.stop[0])));
  EXPECT_EQ(cut.outcome.finish, cf::FinishReason::Stop);
}

TEST(StopStringFilter, HoldsBackPossibleStartsAndCutsAtTheFirstMatch) {
  cf::StopStringFilter f({"END", "stop!"});
  EXPECT_EQ(f.push("hello E"), "hello ");  // "E" may start "END"
  EXPECT_EQ(f.push("x"), "Ex");
  EXPECT_EQ(f.push("st"), "");
  EXPECT_EQ(f.push("op"), "");
  EXPECT_EQ(f.push("!tail"), "");
  EXPECT_TRUE(f.matched());
  EXPECT_EQ(f.push("more"), "");
  EXPECT_EQ(f.flush(), "");

  cf::StopStringFilter g({"ab", "b"});
  EXPECT_EQ(g.push("xab"), "x");  // the earliest match wins
  EXPECT_TRUE(g.matched());

  cf::StopStringFilter h({"END"});
  EXPECT_EQ(h.push("the EN"), "the ");
  EXPECT_EQ(h.flush(), "EN");  // no match by the end: the held-back text is released
  EXPECT_FALSE(h.matched());

  cf::StopStringFilter none({});
  EXPECT_EQ(none.push("anything"), "anything");
}

// Returns fixed logits for every row: token A 1.0, token B 0.5, everything else far below.
class FixedLogitsBackend final : public cf::Backend {
 public:
  FixedLogitsBackend(std::unique_ptr<cf::Backend> inner, int32_t a, int32_t b)
      : inner_(std::move(inner)), a_(a), b_(b) {}
  std::string name() const override { return "fixed"; }
  const cf::ModelConfig& config() const override { return inner_->config(); }
  const cf::KvCacheShape& kv_shape() const override { return inner_->kv_shape(); }
  int max_batch_tokens() const override { return inner_->max_batch_tokens(); }
  void forward(const cf::Batch& batch, float* logits) override {
    inner_->forward(batch, logits);
    const size_t vocab = size_t(config().vocab);
    for (size_t row = 0; row < batch.logit_tokens.size(); ++row) {
      std::fill_n(logits + row * vocab, vocab, -100.0f);
      logits[row * vocab + size_t(a_)] = 1.0f;
      logits[row * vocab + size_t(b_)] = 0.5f;
    }
  }

 private:
  std::unique_ptr<cf::Backend> inner_;
  int32_t a_, b_;
};

TEST(Scheduler, PresenceAndFrequencyPenaltiesFollowOpenAIsFormula) {
  auto tok = std::make_shared<cf::test::ByteTokenizer>();
  auto weights = tiny_weights(tok->vocab_size());
  cf::Runner runner(std::make_unique<FixedLogitsBackend>(cf::create_backend("cpu", weights, {}), 'A', 'B'), 1,
                    kContext);
  cf::Scheduler scheduler(runner, tok, {});
  auto greedy_text = [&](float presence, float frequency) {
    auto r = request({'x'}, 8);
    r.sampling.repeat_penalty = 1.0f;
    r.presence_penalty = presence;
    r.frequency_penalty = frequency;
    return drain(*scheduler.submit(r)).text;
  };
  // The expected text, step by step: logit - (count > 0) * presence - count * frequency, argmax.
  auto expected = [](float presence, float frequency) {
    std::string out;
    int count_a = 0, count_b = 0;
    for (int i = 0; i < 8; ++i) {
      const float a = 1.0f - (count_a > 0) * presence - count_a * frequency;
      const float b = 0.5f - (count_b > 0) * presence - count_b * frequency;
      const bool pick_a = a >= b;
      out += pick_a ? 'A' : 'B';
      (pick_a ? count_a : count_b)++;
    }
    return out;
  };
  EXPECT_EQ(greedy_text(0, 0), "AAAAAAAA");
  EXPECT_EQ(greedy_text(0.8f, 0), expected(0.8f, 0));
  EXPECT_EQ(greedy_text(0, 0.3f), expected(0, 0.3f));
  EXPECT_EQ(greedy_text(0.25f, 0.15f), expected(0.25f, 0.15f));
  EXPECT_NE(expected(0, 0.3f), "AAAAAAAA");
}

}  // namespace

namespace {

// Fails one forward call (the n-th) as a broken device would.
class FailingBackend final : public cf::Backend {
 public:
  FailingBackend(std::unique_ptr<cf::Backend> inner, int fail_call) : inner_(std::move(inner)), fail_call_(fail_call) {}
  std::string name() const override { return "failing"; }
  const cf::ModelConfig& config() const override { return inner_->config(); }
  const cf::KvCacheShape& kv_shape() const override { return inner_->kv_shape(); }
  int max_batch_tokens() const override { return inner_->max_batch_tokens(); }
  void forward(const cf::Batch& batch, float* logits) override {
    if (++calls_ == fail_call_) throw cf::Error("device lost");
    inner_->forward(batch, logits);
  }

 private:
  std::unique_ptr<cf::Backend> inner_;
  int fail_call_, calls_ = 0;
};

TEST(Scheduler, AnEngineErrorEndsTheRequestsInThatStepAndNothingElse) {
  auto tok = std::make_shared<cf::test::ByteTokenizer>();
  auto weights = tiny_weights(tok->vocab_size());
  // Call 1 prefills the request, call 2 is its first decode step: that one fails.
  cf::Runner runner(std::make_unique<FailingBackend>(cf::create_backend("cpu", weights, backend_options(2)), 2), 2,
                    kContext);
  cf::Scheduler scheduler(runner, tok, options(4, 16));
  const Finished failed = drain(*scheduler.submit(request(tok->encode("abc", false, false), 10)));
  EXPECT_EQ(failed.outcome.finish, cf::FinishReason::Error);
  EXPECT_NE(failed.outcome.error.find("device lost"), std::string::npos);
  EXPECT_EQ(failed.outcome.completion_tokens, 1);  // the token sampled after the prefill
  wait_idle(scheduler);
  EXPECT_EQ(scheduler.stats().kv_pages_in_use, 0);
  const Finished next = drain(*scheduler.submit(request(tok->encode("abc", false, false), 10)));
  EXPECT_EQ(next.outcome.finish, cf::FinishReason::Length);
  EXPECT_EQ(next.outcome.completion_tokens, 10);
}

}  // namespace
