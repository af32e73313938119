// The fused MLA decode block on a Hopper GPU against the CPU reference: DeepSeek-V2-Lite's attention shapes (hidden
// 2048, 16 heads, r 512, rope 64, nope 128, v 128) at KV 1K and 4K, batch 1 and 16, fp16 and bf16, q_lora set (V2's
// path) on a smaller hidden; bit-identical reruns and CUDA-graph replays; the hang path; a small case for
// compute-sanitizer (--gtest_filter=*Sanitizer*). Skips without a GPU of compute capability 9.
#include <gtest/gtest.h>

#include <string>

#include "gpu/gpu_driver.hpp"
#include "harness/mla.hpp"

namespace cf::test::mla {
namespace {

Case v2_lite_case(int kv, int batch, DType dtype = DType::F16) {
  Case c;
  c.name = "v2lite_kv" + std::to_string(kv) + "_b" + std::to_string(batch) + (dtype == DType::BF16 ? "_bf16" : "");
  c.dtype = dtype;
  c.hidden = 2048, c.n_heads = 16, c.r = 512, c.rope = 64, c.nope = 128, c.v = 128;
  c.batch = batch, c.page_size = 16, c.kv_lens = {kv - 1, kv / 2 + 3, kv - 40};
  c.yarn_factor = 40.0f;
  c.max_clusters = 0;  // every SM
  c.seed = uint64_t(kv) + uint64_t(batch);
  return c;
}

void check_any(const Case& c, bool graph_check = false) { check_on_gpu_any<Op>(c, graph_check); }

TEST(MlaGpu, V2LiteKv1KBatch1) {
  REQUIRE_HOPPER();
  check_any(v2_lite_case(1024, 1), /*graph_check=*/true);
}
TEST(MlaGpu, V2LiteKv4KBatch1Bf16) {
  REQUIRE_HOPPER();
  check_any(v2_lite_case(4096, 1, DType::BF16));
}
TEST(MlaGpu, V2LiteKv1KBatch16) {
  REQUIRE_HOPPER();
  check_any(v2_lite_case(1024, 16), /*graph_check=*/true);
}
TEST(MlaGpu, QLoraPageSize1) {
  REQUIRE_HOPPER();
  Case c = v2_lite_case(700, 4, DType::BF16);
  c.name = "qlora_page1";
  c.hidden = 512, c.q_lora = 256, c.page_size = 1;
  check_any(c, /*graph_check=*/true);
}

TEST(MlaGpu, TinyWaitBudgetEndsPromptlyWithATimeout) {
  REQUIRE_HOPPER();
  expect_prompt_timeout_then_recovery<Op>(v2_lite_case(1024, 1), "mla");
}

TEST(MlaGpuSanitizer, SmallPagedBatch3) {
  REQUIRE_HOPPER();
  Case c;
  c.name = "SanitizerSmall";
  c.hidden = 128, c.n_heads = 4, c.q_lora = 64, c.r = 64, c.nope = 32, c.v = 32;
  c.batch = 3, c.page_size = 3, c.kv_lens = {5, 40, 13}, c.max_clusters = 12;
  c.wait_budget_us = kSanitizerWaitBudgetUs;
  check_any(c, /*graph_check=*/true);
}

}  // namespace
}  // namespace cf::test::mla
