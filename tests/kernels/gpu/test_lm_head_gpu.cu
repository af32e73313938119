// The LM head (final norm + logits + greedy argmax) on a Hopper GPU against the CPU reference and cuda-unfused:
// Llama-2-7B (32000 x 4096) and Llama-3-8B (128256 x 4096) at batch 1 and 8, bit-identical reruns and CUDA-graph
// replays, and small cases for compute-sanitizer (--gtest_filter=*Sanitizer*). Outputs poisoned before every run.
// Skips without a GPU of compute capability 9.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "gpu/gpu_driver.hpp"
#include "harness/lm_head.hpp"

namespace cf::test::lm_head {
namespace {

Case model_case(const std::string& model, int batch, DType dtype = DType::F16) {
  Case c;
  c.name = model + "_b" + std::to_string(batch) + (dtype == DType::BF16 ? "_bf16" : "");
  c.dtype = dtype;
  c.hidden = 4096;
  c.vocab = model == "llama2" ? 32000 : 128256;
  c.batch = batch;
  c.max_ctas = 0;  // one per SM
  c.seed = uint64_t(batch) * 13 + (model == "llama2" ? 1 : 2);
  return c;
}

void check_any(const Case& c, bool graph_check = false) { check_on_gpu_any<Op>(c, graph_check); }

TEST(LmHeadGpu, Llama2Batch1) {
  REQUIRE_HOPPER();
  check_any(model_case("llama2", 1), /*graph_check=*/true);
}
TEST(LmHeadGpu, Llama2Batch8) {
  REQUIRE_HOPPER();
  check_any(model_case("llama2", 8));
}
TEST(LmHeadGpu, Llama3Batch1) {
  REQUIRE_HOPPER();
  check_any(model_case("llama3", 1), /*graph_check=*/true);
}
TEST(LmHeadGpu, Llama3Batch8Bf16) {
  REQUIRE_HOPPER();
  check_any(model_case("llama3", 8, DType::BF16));
}

// The hang path on the hardware (expect_prompt_timeout), then a fresh plan on the same context: the right answer.
TEST(LmHeadGpu, TinyWaitBudgetEndsPromptlyWithATimeout) {
  REQUIRE_HOPPER();
  expect_prompt_timeout_then_recovery<Op>(model_case("llama3", 1), "lm_head");
}

// ---- where the time goes: per-phase SM-clock timestamps of every CTA (PlanConfig::trace) ------------------------
TEST(LmHeadGpuTrace, PhaseTimes) {
  REQUIRE_HOPPER();
  for (const Case& model : {model_case("llama2", 1), model_case("llama3", 1), model_case("llama3", 8)}) {
    Case c = model;
    c.name += "_trace";
    print_phase_trace<Op>(c, klm::kTraceSlots,
                          {{"norm", klm::kTraceStart, klm::kTraceNormDone},
                           {"logits", klm::kTraceNormDone, klm::kTraceLogitsDone},
                           {"pick", klm::kTraceLogitsDone, klm::kTraceEnd},
                           {"total", klm::kTraceStart, klm::kTraceEnd},
                           {"P:weights", klm::kTraceStart, klm::kTraceProducerDone}});
  }
}

TEST(LmHeadGpuSanitizer, TiesAndNanBatch16) {
  REQUIRE_HOPPER();
  Case c;
  c.name = "SanitizerTiesNan";
  c.hidden = 576, c.vocab = 4000, c.batch = 16, c.max_ctas = 12, c.stage_units = 8;
  c.tied_rows = {3000, 700, 701, 2100};
  c.nan_token = 5;
  c.wait_budget_us = kSanitizerWaitBudgetUs;
  check_any(c, /*graph_check=*/true);
  const HostInputs in = make_inputs<half>(c);
  const RunResult r = run_once<Op>(c, in);
  for (int b = 0; b < c.batch; ++b) EXPECT_EQ(r.tokens[size_t(b)], b == c.nan_token ? 0 : 700) << "token " << b;
}

}  // namespace
}  // namespace cf::test::lm_head

#if defined(CF_HAVE_CUDA_UNFUSED)
#include "clusterfusion/backends/cuda_unfused/ops.hpp"

namespace cf::test::lm_head {
namespace {

// Same inputs through cuda-unfused's lm_head: the tokens equal wherever the reference's choice is clear (checked for
// both against the reference), logits within the policy for both, the largest difference printed.
template <typename T>
void compare_with_unfused(const Case& c) {
  namespace cu = cf::cuda_unfused;
  const HostInputs in = make_inputs<T>(c);
  const Oracle o = make_oracle<T>(c, in);
  Op::Launch launch(c, in);
  const RunResult fused = run_checked(launch);
  DeviceInputs& d = launch.d;

  ref::DecoderShape shape;
  shape.hidden = c.hidden;
  cu::Workspace ws(shape, c.batch);
  cu::LmHeadParams up;
  up.dtype = c.dtype == DType::F16 ? cu::DType::F16 : cu::DType::BF16;
  up.shape = shape;
  up.batch = c.batch;
  up.vocab = c.vocab;
  up.hidden = d.hidden.data();
  up.residual = c.residual ? d.residual.data() : nullptr;
  up.norm = d.norm.data();
  up.w_out = d.w_out.data();
  up.logits = d.logits.data();
  up.tokens = d.tokens.data();
  launch.poison();
  cu::lm_head(up, ws, nullptr);
  ws.check_status(nullptr);
  const RunResult unfused = launch.result();

  const CheckReport rf = check_result<T>(c, in, o, fused), ru = check_result<T>(c, in, o, unfused);
  EXPECT_TRUE(rf.ok) << "fused: " << rf.message;
  EXPECT_TRUE(ru.ok) << "cuda-unfused: " << ru.message;
  double max_diff = 0.0;
  int same_tokens = 0;
  for (size_t i = 0; i < fused.logits.size(); ++i)
    max_diff = std::max(max_diff, double(std::fabs(fused.logits[i] - unfused.logits[i])));
  for (int b = 0; b < c.batch; ++b) same_tokens += fused.tokens[size_t(b)] == unfused.tokens[size_t(b)];
  std::printf("%s: fused vs cuda-unfused max |logit diff| %.3g, %d of %d tokens equal\n", c.name.c_str(), max_diff,
              same_tokens, c.batch);
}

TEST(LmHeadGpu, MatchesUnfusedBaseline) {
  REQUIRE_HOPPER();
  compare_with_unfused<half>(model_case("llama2", 4));
  compare_with_unfused<bfloat16>(model_case("llama3", 2, DType::BF16));
}

}  // namespace
}  // namespace cf::test::lm_head
#endif
