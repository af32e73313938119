// On the default model (SmolLM2-135M-Instruct Q4_1, skipped when absent): the cpu backend against the reference
// forward pass, bit-identical logits for 1 and 2 threads, and a greedy continuation that must name Paris.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "clusterfusion/reference/ops.hpp"
#include "clusterfusion/reference/tolerance.hpp"
#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/model.hpp"
#include "clusterfusion/runtime/runner.hpp"
#include "clusterfusion/runtime/session.hpp"
#include "test_models.hpp"

namespace {

const cf::LoadedModel* default_model() {
  static const std::optional<cf::LoadedModel> model = []() -> std::optional<cf::LoadedModel> {
    if (!std::filesystem::exists(cf::default_model_path())) return std::nullopt;
    return cf::load_model(cf::default_model_path());
  }();
  return model ? &*model : nullptr;
}

cf::Runner make_runner(const cf::LoadedModel& m, int threads,
                       cf::CpuArithmetic arithmetic = cf::BackendOptions{}.cpu_arithmetic) {
  cf::BackendOptions o;
  o.threads = threads;
  o.cpu_arithmetic = arithmetic;
  o.kv_pages = 64;  // 1024 positions
  return cf::Runner(cf::create_backend("cpu", m.weights, o), 1, 1024);
}

#define REQUIRE_DEFAULT_MODEL()                                                                   \
  const cf::LoadedModel* model = default_model();                                                 \
  if (!model) GTEST_SKIP() << "default model absent at " << cf::default_model_path() << ": run scripts/setup.sh"

// The fp32 arithmetic under the tolerance policy (the default int16 one: tests/unit/runtime/test_golden.cpp).
TEST(RealModel, CpuBackendMatchesReferenceForward) {
  REQUIRE_DEFAULT_MODEL();
  const auto tokens = model->tokenizer->encode("The quick brown fox", false, false);
  ASSERT_GE(tokens.size(), 3u);
  auto runner = make_runner(*model, 2, cf::CpuArithmetic::F32);
  const auto got = cf::teacher_forced_logits(runner, tokens);
  const auto want = cf::test::reference_logits(*model->weights, tokens);
  const size_t v = size_t(model->weights->config.vocab);
  for (size_t t = 0; t < tokens.size(); ++t) {
    const auto report = cf::ref::check_tolerance<float>(std::span(got).subspan(t * v, v), std::span(want).subspan(t * v, v));
    EXPECT_TRUE(report.ok) << "position " << t << ": " << report.message;
    EXPECT_EQ(cf::ref::argmax(got.data() + t * v, int(v)), cf::ref::argmax(want.data() + t * v, int(v)));
  }
}

TEST(RealModel, LogitsBitIdenticalForOneAndTwoThreads) {
  REQUIRE_DEFAULT_MODEL();
  const auto tokens = model->tokenizer->encode("<|im_start|>user\nHello there!<|im_end|>\n", false, true);
  for (cf::CpuArithmetic arithmetic : {cf::CpuArithmetic::F32, cf::kCliCpuArithmetic}) {
    auto one = make_runner(*model, 1, arithmetic), two = make_runner(*model, 2, arithmetic);
    const auto a = cf::teacher_forced_logits(one, tokens), b = cf::teacher_forced_logits(two, tokens);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << cf::cpu_arithmetic_name(arithmetic);
  }
}

TEST(RealModel, GreedyChatAnswerNamesParis) {
  REQUIRE_DEFAULT_MODEL();
  auto runner = make_runner(*model, 2);
  cf::Generator generator(runner, model->tokenizer);
  cf::ChatSession chat(generator, cf::ChatTemplate::detect(model->chat_template));
  cf::GenerationOptions options;
  options.max_new_tokens = 20;  // greedy by default
  std::string reply;
  const auto stats = chat.send("What is the capital of France?", options, {}, &reply);
  EXPECT_NE(reply.find("Paris"), std::string::npos) << reply;
  EXPECT_GT(stats.generated_tokens, 0);
}

}  // namespace
