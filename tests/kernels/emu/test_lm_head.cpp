// The LM head (final norm + logits + greedy argmax) on the emulator against the CPU reference: shapes and options,
// ties across CTAs (lowest id), NaN inputs, determinism, plan reuse, validation.
#include <gtest/gtest.h>

#include <algorithm>

#include <cstring>

#include "clusterfusion/device/launch.hpp"
#include "harness/driver.hpp"
#include "harness/lm_head.hpp"

namespace cf::test::lm_head {
namespace {

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  {
    Case c;
    c.name = "Hidden256Vocab500";
    cases.push_back(c);
  }
  {
    Case c;  // bf16, three tokens, no residual, wide chunks (U 8: 256 + 128 columns), vocabulary not a multiple of 16
    c.name = "Bf16Batch3NoResidualU8";
    c.dtype = DType::BF16;
    c.hidden = 384, c.vocab = 1001, c.batch = 3, c.max_ctas = 5, c.stage_units = 8, c.residual = false, c.seed = 2;
    cases.push_back(c);
  }
  {
    Case c;  // SmolLM2's hidden size, one CTA per SM (132 assumed) over 4000 rows
    c.name = "Hidden576Auto";
    c.hidden = 576, c.vocab = 4000, c.max_ctas = 0, c.seed = 3;
    cases.push_back(c);
  }
  {
    Case c;  // 16 tokens (two batch tiles), U 8 with a 32-column tail chunk (288 = 256 + 32), 21 tiles over 3 CTAs,
             // the last one partial
    c.name = "Batch16U8TailChunk";
    c.hidden = 288, c.vocab = 333, c.batch = 16, c.max_ctas = 3, c.stage_units = 8, c.seed = 4;
    cases.push_back(c);
  }
  {
    Case c;  // U 2 (64-column chunks, 8-tile groups), tokens only
    c.name = "TokensOnlyU2";
    c.hidden = 320, c.vocab = 700, c.batch = 2, c.stage_units = 2, c.logits = false, c.seed = 5;
    cases.push_back(c);
  }
  {
    Case c;  // logits only, batch 5 of a plan for 16
    c.name = "LogitsOnlyBatch5Of16";
    c.dtype = DType::BF16;
    c.hidden = 256, c.vocab = 640, c.batch = 5, c.max_batch = 16, c.tokens = false, c.seed = 6;
    cases.push_back(c);
  }
  {
    Case c;  // the best logit tied over rows in three different CTAs: the lowest id wins
    c.name = "TiesAcrossCtas";
    c.hidden = 256, c.vocab = 512, c.batch = 3, c.max_ctas = 4, c.tied_rows = {400, 130, 131, 290}, c.seed = 7;
    cases.push_back(c);
  }
  {
    Case c;  // the smallest ring (4 stages) lapped many times: 2 CTAs of 63 tiles, 16 groups of 4 chunks each
    c.name = "FourStagesLapped";
    c.hidden = 512, c.vocab = 2000, c.batch = 2, c.max_ctas = 2, c.max_stages = 4, c.seed = 9;
    cases.push_back(c);
  }
  {
    Case c;  // a NaN in one token's input: all its logits NaN, token 0; the other tokens unaffected
    c.name = "NanToken";
    c.hidden = 256, c.vocab = 500, c.batch = 3, c.nan_token = 1, c.seed = 8;
    cases.push_back(c);
  }
  return cases;
}

// The grid exercises the smallest ring lapped (more items per CTA than stages) and the largest batch (the LM head has
// no clusters).
TEST(LmHeadEmu, GridCoversRingWrapAndTheLargestBatch) {
  int largest_batch = 0;
  bool smallest_ring = false;
  for (const Case& c : all_cases()) {
    with_element_type(c.dtype, [&]<typename T>() {
      const Op::Launch launch(c, make_inputs<T>(c));
      smallest_ring = smallest_ring || launch.ring_stages() == pipeline::kMinStages;
    });
    largest_batch = std::max(largest_batch, c.batch);
  }
  EXPECT_EQ(largest_batch, klm::kMaxBatch);
  EXPECT_TRUE(smallest_ring);
}

class LmHeadShapes : public ::testing::TestWithParam<Case> {};

TEST_P(LmHeadShapes, MatchesReference) { run_and_check_any<Op>(GetParam()); }

INSTANTIATE_TEST_SUITE_P(LmHeadEmu, LmHeadShapes, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

TEST(LmHeadEmu, TiesPickTheLowestId) {
  Case c = all_cases()[6];
  const HostInputs in = make_inputs<half>(c);
  const RunResult r = run_once<Op>(c, in);
  for (int b = 0; b < c.batch; ++b) EXPECT_EQ(r.tokens[size_t(b)], 130) << "token " << b;
}

TEST(LmHeadEmu, SameBitsUnderEveryScheduleAndCall) {
  Case c = all_cases()[1];
  const HostInputs in = make_inputs<bfloat16>(c);
  DeviceInputs d;
  upload_inputs(c, in, d);
  klm::Plan plan(plan_config(c, d));
  RunResult first;
  for (int call = 0; call < 4; ++call) {
    d.logits.fill_bytes(0xFF);
    d.tokens.fill_bytes(0xFF);
    plan.run(step_args(c, d), nullptr, 30 + call);  // one plan: the arrival counter resets itself
    plan.check_status();
    const RunResult r = download_result(d);
    if (call == 0) first = r;
    EXPECT_EQ(r.tokens, first.tokens) << "call " << call;
    EXPECT_EQ(0, std::memcmp(r.logits.data(), first.logits.data(), r.logits.size() * 4)) << "call " << call;
  }
}

TEST(LmHeadEmu, TraceKeepsTheBits) { expect_trace_keeps_the_bits<Op>(all_cases()[1], klm::kTraceSlots); }

TEST(LmHeadValidation, ErrorsNameTheField) {
  Case c = all_cases()[0];
  const HostInputs in = make_inputs<half>(c);
  DeviceInputs d;
  upload_inputs(c, in, d);
  auto with = [&](auto edit) {
    klm::PlanConfig cfg = plan_config(c, d);
    edit(cfg);
    return [cfg] { klm::Plan plan(cfg); };
  };
  expect_input_error(with([](klm::PlanConfig& k) { k.shape.hidden = 48; }), "hidden 48");
  expect_input_error(with([](klm::PlanConfig& k) { k.shape.vocab = 0; }), "vocab 0");
  expect_input_error(with([](klm::PlanConfig& k) { k.max_batch = 0; }), "max_batch 0");
  expect_input_error(with([](klm::PlanConfig& k) { k.stage_units = 5; }), "stage_units 5");
  expect_input_error(with([](klm::PlanConfig& k) { k.weights.w_out = nullptr; }), "w_out");
  expect_input_error(
      with([](klm::PlanConfig& k) {
        k.shape.hidden = 8192;
        k.max_batch = 16;
      }),
      "lower max_batch");

  klm::Plan plan(plan_config(c, d));
  auto step = [&](auto edit) {
    klm::StepArgs a = step_args(c, d);
    edit(a);
    return [&plan, a] { plan.run(a); };
  };
  expect_input_error(step([](klm::StepArgs& a) { a.batch = 3; }), "batch 3 outside [1, 1]");
  expect_input_error(step([](klm::StepArgs& a) { a.logits = nullptr, a.tokens = nullptr; }), "logits, tokens");
  expect_input_error(step([](klm::StepArgs& a) { a.residual = static_cast<const char*>(a.residual) + 4; }),
                     "16-byte aligned");
}

}  // namespace
}  // namespace cf::test::lm_head
