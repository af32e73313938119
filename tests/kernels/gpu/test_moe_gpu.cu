// The MoE FFN block (router + selection + grouped expert SwiGLU + shared experts) on a Hopper GPU against the CPU
// reference at DeepSeek-V2-Lite's shapes (hidden 2048, 64 experts, top 6, expert width 1408, shared 2816) at batch 1
// and 16, V2's group filter, bit-identical reruns and CUDA-graph replays (the routing stays on the device), the hang
// path, and small cases for compute-sanitizer (--gtest_filter=*Sanitizer*). Outputs poisoned before every run. Skips
// without a GPU of compute capability 9.
#include <gtest/gtest.h>

#include <string>

#include "gpu/gpu_driver.hpp"
#include "harness/moe.hpp"

namespace cf::test::moe {
namespace {

Case v2_lite_case(int batch, DType dtype = DType::F16) {
  Case c;
  c.name = "v2lite_b" + std::to_string(batch) + (dtype == DType::BF16 ? "_bf16" : "");
  c.dtype = dtype;
  c.hidden = 2048, c.n_experts = 64, c.top_k = 6, c.expert_ffn = 1408, c.shared_ffn = 2816;
  c.batch = batch;
  c.sm_count = 0;  // the device's
  c.seed = uint64_t(batch) * 7 + 1;
  return c;
}

void check_any(const Case& c, bool graph_check = false) { check_on_gpu_any<Op>(c, graph_check); }

TEST(MoeGpu, V2LiteBatch1) {
  REQUIRE_HOPPER();
  check_any(v2_lite_case(1), /*graph_check=*/true);
}
TEST(MoeGpu, V2LiteBatch16) {
  REQUIRE_HOPPER();
  check_any(v2_lite_case(16), /*graph_check=*/true);
}
// V2's (236B) routing rule on V2-Lite's shapes: 8 groups of 8 experts, the best 3 groups eligible; bf16, scale 16.
TEST(MoeGpu, V2LiteGroupedBatch16Bf16) {
  REQUIRE_HOPPER();
  Case c = v2_lite_case(16, DType::BF16);
  c.name += "_grouped";
  c.grouped = true, c.n_group = 8, c.topk_group = 3, c.routed_scaling = 16.0f;
  check_any(c);
}
// Only the chosen experts are read: every other expert's weights NaN, the output finite and within tolerance.
TEST(MoeGpu, V2LiteReadsOnlyTheChosenExperts) {
  REQUIRE_HOPPER();
  Case c = v2_lite_case(3);
  c.name += "_poisoned";
  c.poison_unchosen = true;
  check_any(c);
}

// The hang path on the hardware (expect_prompt_timeout), then a fresh plan on the same context: the right answer.
TEST(MoeGpu, TinyWaitBudgetEndsPromptlyWithATimeout) {
  REQUIRE_HOPPER();
  expect_prompt_timeout_then_recovery<Op>(v2_lite_case(1), "moe");
}

TEST(MoeGpuSanitizer, GroupedPoisonedBatch16) {
  REQUIRE_HOPPER();
  Case c;
  c.name = "SanitizerGroupedPoisoned";
  c.hidden = 256, c.n_experts = 16, c.top_k = 3, c.expert_ffn = 96, c.shared_ffn = 64, c.batch = 16;
  c.grouped = true, c.n_group = 4, c.topk_group = 2, c.norm_topk_prob = true, c.routed_scaling = 2.5f;
  c.poison_unchosen = true, c.sm_count = 12;
  c.wait_budget_us = kSanitizerWaitBudgetUs;
  check_any(c, /*graph_check=*/true);
}

TEST(MoeGpuSanitizer, LappedRingsInPlace) {
  REQUIRE_HOPPER();
  Case c;
  c.name = "SanitizerLappedInPlace";
  c.dtype = DType::BF16;
  c.hidden = 512, c.n_experts = 8, c.top_k = 2, c.expert_ffn = 128, c.shared_ffn = 256, c.batch = 5;
  c.in_place = true, c.sm_count = 2, c.max_stages = 4;
  c.wait_budget_us = kSanitizerWaitBudgetUs;
  check_any(c);
}

}  // namespace
}  // namespace cf::test::moe
