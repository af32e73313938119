// The fused FFN block on a Hopper GPU against cf::ref::ffn_block (tolerance policy) and against cuda-unfused: the
// model shapes of issue 7 (Llama-2-7B 4096 x 11008, Llama-3-8B 4096 x 14336, batch 1 and 8), bit-identical reruns
// and CUDA-graph replays, and small cases meant for compute-sanitizer (--gtest_filter=*Sanitizer*). Outputs are
// poisoned (NaN) before every run; every wait inside the kernel is bounded (a hang ends as a "timed out" status error
// instead). Skips without a GPU of compute capability 9.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "gpu/gpu_driver.hpp"
#include "harness/ffn.hpp"

namespace cf::test::ffn {
namespace {

Case model_case(const std::string& model, int batch, DType dtype = DType::F16) {
  Case c;
  c.name = model + "_b" + std::to_string(batch) + (dtype == DType::BF16 ? "_bf16" : "");
  c.dtype = dtype;
  c.hidden = 4096;
  c.ffn_hidden = model == "llama2" ? 11008 : 14336;
  c.batch = batch;
  c.cluster_size = 0;  // the launcher's choice (docs/ffn.md §2)
  c.max_clusters = 0;
  c.seed = uint64_t(batch) * 17 + (model == "llama2" ? 1 : 2);
  return c;
}

void check_any(const Case& c, bool graph_check = false) { check_on_gpu_any<Op>(c, graph_check); }

TEST(FfnGpu, Llama2Batch1) {
  REQUIRE_HOPPER();
  check_any(model_case("llama2", 1), /*graph_check=*/true);
}
TEST(FfnGpu, Llama2Batch8) {
  REQUIRE_HOPPER();
  check_any(model_case("llama2", 8));
}
TEST(FfnGpu, Llama3Batch1) {
  REQUIRE_HOPPER();
  check_any(model_case("llama3", 1), /*graph_check=*/true);
}
TEST(FfnGpu, Llama3Batch8Bf16) {
  REQUIRE_HOPPER();
  check_any(model_case("llama3", 8, DType::BF16));
}
TEST(FfnGpu, Llama2Batch16) {
  REQUIRE_HOPPER();
  check_any(model_case("llama2", 16));
}

// The hang path on the hardware (expect_prompt_timeout), then a fresh plan on the same context: the right answer.
TEST(FfnGpu, TinyWaitBudgetEndsPromptlyWithATimeout) {
  REQUIRE_HOPPER();
  expect_prompt_timeout_then_recovery<Op>(model_case("llama2", 1), "ffn");
}

// ---- where the time goes: per-phase SM-clock timestamps of every CTA (PlanConfig::trace) ------------------------
TEST(FfnGpuTrace, PhaseTimes) {
  REQUIRE_HOPPER();
  for (const Case& model : {model_case("llama2", 1), model_case("llama3", 1), model_case("llama2", 16)}) {
    Case c = model;
    c.name += "_trace";
    print_phase_trace<Op>(c, kffn::kTraceSlots,
                          {{"norm", kffn::kTraceStart, kffn::kTraceNormDone},
                           {"gate/up", kffn::kTraceNormDone, kffn::kTraceGateUpDone},
                           {"act-exch", kffn::kTraceGateUpDone, kffn::kTraceActDone},
                           {"down", kffn::kTraceActDone, kffn::kTraceDownDone},
                           {"finish", kffn::kTraceDownDone, kffn::kTraceEnd},
                           {"total", kffn::kTraceStart, kffn::kTraceEnd},
                           {"P:gate/up", kffn::kTraceStart, kffn::kTraceProducerGateUp},
                           {"P:down", kffn::kTraceProducerGateUp, kffn::kTraceProducerDown}});
  }
}

// ---- small cases, fast under compute-sanitizer (memcheck, racecheck, synccheck) ------------------------------------

TEST(FfnGpuSanitizer, SmolLM2Batch3) {
  REQUIRE_HOPPER();
  Case c;
  c.name = "SanitizerSmolLM2";
  c.hidden = 576, c.ffn_hidden = 1536, c.batch = 3, c.cluster_size = 4, c.max_clusters = 6;
  c.wait_budget_us = kSanitizerWaitBudgetUs;
  check_any(c, /*graph_check=*/true);
}
TEST(FfnGpuSanitizer, UnevenCluster8Bf16Batch11InPlace) {
  REQUIRE_HOPPER();
  Case c;
  c.name = "SanitizerUneven";
  c.dtype = DType::BF16;
  c.hidden = 288, c.ffn_hidden = 528, c.batch = 11, c.cluster_size = 8, c.max_clusters = 5, c.stage_units = 8;
  c.in_place = true;
  c.wait_budget_us = kSanitizerWaitBudgetUs;
  const HostInputs in = make_inputs<bfloat16>(c);
  const Oracle o = make_oracle<bfloat16>(c, in);
  const CheckReport rep = check_result<bfloat16>(c, in, o, run_once<Op>(c, in));
  EXPECT_TRUE(rep.ok) << rep.message;
}

}  // namespace
}  // namespace cf::test::ffn

// ---- against the cuda-unfused baseline (when it is built) ------------------------------------------------------
#if defined(CF_HAVE_CUDA_UNFUSED)
#include "clusterfusion/backends/cuda_unfused/ops.hpp"

namespace cf::test::ffn {
namespace {

// Both implementations on the same device inputs: both within the policy of the fp32 reference, residual_out
// bit-identical, the fused error not above twice the baseline's; the largest difference between the two printed.
template <typename T>
void compare_with_unfused(const Case& c) {
  namespace cu = cf::cuda_unfused;
  const HostInputs in = make_inputs<T>(c);
  const Oracle o = make_oracle<T>(c, in);
  Op::Launch fused(c, in);
  const RunResult fr = run_checked(fused);
  DeviceInputs& d = fused.d;

  cu::Workspace ws(c.ref_shape(), c.batch);
  cu::FfnBlockParams up;
  up.dtype = c.dtype == DType::F16 ? cu::DType::F16 : cu::DType::BF16;
  up.shape = c.ref_shape();
  up.batch = c.batch;
  up.hidden = d.hidden.data();
  up.residual = c.residual ? d.residual.data() : nullptr;
  up.residual_out = d.residual_out.data();
  up.out = d.out.data();
  up.norm = d.norm.data();
  up.w_gate_up = d.w_gate_up.data();
  up.w_down = d.w_down.data();
  fused.poison();
  cu::ffn_block(up, ws, nullptr);
  ws.check_status(nullptr);
  const RunResult ur = fused.result();
  expect_not_worse_than_unfused<T>(c.name, fr.out, fr.residual_out, ur.out, ur.residual_out, o.out_ref);
}

TEST(FfnGpu, MatchesUnfusedBaseline) {
  REQUIRE_HOPPER();
  compare_with_unfused<half>(model_case("llama2", 1));
  compare_with_unfused<half>(model_case("llama3", 8));
  compare_with_unfused<bfloat16>(model_case("llama2", 3, DType::BF16));
}

}  // namespace
}  // namespace cf::test::ffn
#endif
