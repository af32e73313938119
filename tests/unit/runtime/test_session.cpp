// Generation sessions on a tiny random model with a byte-level fake tokenizer: stop conditions, streaming, history
// reuse (a second turn runs only its new tokens and gives the same result as running everything afresh).
#include <gtest/gtest.h>

#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/session.hpp"
#include "test_models.hpp"

namespace {

cf::ModelConfig config_with_context(int context) {
  auto c = cf::test::tiny_config();
  c.max_context = context;
  return c;
}

struct Fixture {
  explicit Fixture(int context = 64) : context(context) {}
  int context;
  std::shared_ptr<cf::ModelWeights> weights =
      std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(config_with_context(context), 21, cf::DType::F32));
  std::shared_ptr<cf::test::ByteTokenizer> tokenizer = std::make_shared<cf::test::ByteTokenizer>();
  cf::Runner runner{cf::create_backend("cpu", weights, {}), 1};
  cf::Generator generator{runner, tokenizer};
};

cf::GenerationOptions greedy(int n) {
  cf::GenerationOptions o;
  o.max_new_tokens = n;
  return o;
}

TEST(Generator, StopsAtMaxTokensAndStreamsWhatItGenerates) {
  Fixture f;
  const auto prompt = f.tokenizer->encode("Hello", false, false);
  std::string streamed;
  const auto stats = f.generator.generate(prompt, greedy(7), [&](std::string_view t) {
    streamed += t;
    return true;
  });
  EXPECT_EQ(stats.stop, cf::StopReason::MaxTokens);
  EXPECT_EQ(stats.generated_tokens, 7);
  EXPECT_EQ(stats.prompt_tokens, 5);
  // The history holds what the KV cache holds: the prompt and all generated tokens but the last.
  EXPECT_EQ(f.generator.history().size(), 5u + 6u);
  EXPECT_EQ(f.runner.length(0), 11);
  std::vector<int32_t> generated(f.generator.history().begin() + 5, f.generator.history().end());
  EXPECT_EQ(streamed.substr(0, f.tokenizer->decode(generated).size()), f.tokenizer->decode(generated));
}

// Wraps a backend and, from the n-th forward call on, makes one token overwhelmingly likely.
class ForcingBackend final : public cf::Backend {
 public:
  ForcingBackend(std::unique_ptr<cf::Backend> inner, int from_call, int32_t token)
      : inner_(std::move(inner)), from_call_(from_call), token_(token) {}
  std::string name() const override { return "forcing"; }
  const cf::ModelConfig& config() const override { return inner_->config(); }
  const cf::KvCacheShape& kv_shape() const override { return inner_->kv_shape(); }
  int max_batch_tokens() const override { return inner_->max_batch_tokens(); }
  void forward(const cf::Batch& batch, float* logits) override {
    inner_->forward(batch, logits);
    if (++calls_ >= from_call_)
      for (size_t i = 0; i < batch.logit_tokens.size(); ++i) logits[i * size_t(config().vocab) + size_t(token_)] = 1e4f;
  }

 private:
  std::unique_ptr<cf::Backend> inner_;
  int from_call_, calls_ = 0;
  int32_t token_;
};

TEST(Generator, StopsAtEndOfGenerationToken) {
  Fixture f;
  const int32_t end = f.tokenizer->special("<|im_end|>");
  // Call 1 is the prefill (its logits give token 1); calls 2 and 3 run tokens 1 and 2 (giving 2 and 3); call 4
  // runs token 3 and its logits give the end token.
  cf::Runner runner(std::make_unique<ForcingBackend>(cf::create_backend("cpu", f.weights, {}), 4, end), 1);
  cf::Generator g(runner, f.tokenizer);
  std::string streamed;
  const auto stats = g.generate(f.tokenizer->encode("abc", false, false), greedy(100), [&](std::string_view t) {
    streamed += t;
    return true;
  });
  EXPECT_EQ(stats.stop, cf::StopReason::EndOfGeneration);
  EXPECT_EQ(stats.generated_tokens, 4);  // 3 text tokens, then the end token
  EXPECT_EQ(streamed.find("<|im_end|>"), std::string::npos);  // the end token is not printed
  EXPECT_EQ(g.history().size(), 3u + 3u);
}

// Weights that are finite but huge overflow the forward pass: the logits are NaN. Before, greedy sampling then picked
// token 0 (NaN compares false), which could be the end token: an empty reply and success. Now it is an error.
TEST(Generator, NonFiniteLogitsAreAnError) {
  Fixture f;
  auto weights = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(config_with_context(64), 21, cf::DType::F32));
  for (float& w : weights->output_norm) w = 3e38f;
  cf::Runner runner(cf::create_backend("cpu", weights, {}), 1);
  cf::Generator g(runner, f.tokenizer);
  try {
    g.generate(f.tokenizer->encode("abc", false, false), greedy(4), {});
    ADD_FAILURE() << "no error";
  } catch (const cf::Error& e) {
    EXPECT_NE(std::string(e.what()).find("NaN or infinite logits for generated token 1"), std::string::npos) << e.what();
  }
}

TEST(Generator, ContextFullStopsWithAClearMessage) {
  Fixture f;  // context 64
  const auto prompt = f.tokenizer->encode(std::string(60, 'x'), false, false);
  const auto stats = f.generator.generate(prompt, greedy(100), {});
  EXPECT_EQ(stats.stop, cf::StopReason::ContextFull);
  EXPECT_NE(stats.message.find("context"), std::string::npos);
  EXPECT_LE(stats.generated_tokens, 5);
  const auto too_long = f.tokenizer->encode(std::string(70, 'y'), false, false);
  const auto stats2 = f.generator.generate(too_long, greedy(10), {});
  EXPECT_EQ(stats2.stop, cf::StopReason::ContextFull);
  EXPECT_EQ(stats2.generated_tokens, 0);
  EXPECT_NE(stats2.message.find("70 tokens"), std::string::npos) << stats2.message;
}

TEST(Generator, CallbackCanStop) {
  Fixture f;
  int calls = 0;
  const auto stats = f.generator.generate(f.tokenizer->encode("Hi", false, false), greedy(50), [&](std::string_view) {
    return ++calls < 3;
  });
  EXPECT_EQ(stats.stop, cf::StopReason::Stopped);
  EXPECT_EQ(calls, 3);
}

TEST(Generator, ContinuingReusesTheCacheAndMatchesAFreshRun) {
  Fixture f;
  const auto first = f.tokenizer->encode("The first part", false, false);
  f.generator.generate(first, greedy(4), {});
  std::vector<int32_t> second = f.generator.history();
  const auto more = f.tokenizer->encode(" and more", false, false);
  second.insert(second.end(), more.begin(), more.end());
  std::string continued;
  const auto stats = f.generator.generate(second, greedy(6), [&](std::string_view t) {
    continued += t;
    return true;
  });
  EXPECT_EQ(stats.prompt_tokens, int(more.size()));  // only the new tokens ran

  Fixture fresh;
  std::string from_scratch;
  const auto fresh_stats = fresh.generator.generate(second, greedy(6), [&](std::string_view t) {
    from_scratch += t;
    return true;
  });
  EXPECT_EQ(fresh_stats.prompt_tokens, int(second.size()));
  EXPECT_EQ(continued, from_scratch);
  EXPECT_EQ(f.generator.history(), fresh.generator.history());
}

TEST(ChatSession, TurnsAccumulateAndRenderWithTheTemplate) {
  Fixture f(256);
  auto t = cf::ChatTemplate::by_name("chatml");
  t.set_default_system("Be nice.");
  cf::ChatSession chat(f.generator, t);
  std::string reply1, reply2;
  chat.send("hi", greedy(5), {}, &reply1);
  ASSERT_EQ(chat.messages().size(), 2u);
  EXPECT_EQ(chat.messages()[1].role, "assistant");
  EXPECT_EQ(chat.messages()[1].content, reply1);
  const auto stats = chat.send("again", greedy(5), {}, &reply2);
  EXPECT_EQ(chat.messages().size(), 4u);
  // The second turn ran only what the first did not leave in the cache: far fewer tokens than the whole text.
  const auto all = chat.render_tokens(false);
  EXPECT_LT(stats.prompt_tokens, int(all.size()) / 2);
  const std::string text = f.tokenizer->decode(chat.render_tokens(true));
  EXPECT_EQ(text.rfind("<|im_start|>system\nBe nice.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n", 0), 0u) << text;

  // An explicit empty system prompt removes the default one.
  Fixture g(256);
  cf::ChatSession no_system(g.generator, t, std::string());
  no_system.send("hi", greedy(1), {});
  EXPECT_EQ(g.tokenizer->decode(no_system.render_tokens(false)).rfind("<|im_start|>user\nhi", 0), 0u);
}

}  // namespace
