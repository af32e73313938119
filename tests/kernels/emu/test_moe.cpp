// The MoE FFN block (router + top-k selection + grouped expert SwiGLU + shared experts) on the emulator against the
// CPU reference: greedy and group-limited selection, renormalised and scaled weights, shared experts or none, batch
// 1 / 3 / 5 / 16, fp16 / bf16, in place; only the chosen experts read (the others NaN); the same bits under other
// schedules and calls; the smallest rings lapped; host validation.
#include <gtest/gtest.h>

#include <cstring>

#include "harness/driver.hpp"
#include "harness/moe.hpp"

namespace cf::test::moe {
namespace {

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  {
    Case c;  // the smallest: 8 experts, top 2, no shared experts, one token
    c.name = "Greedy8Top2";
    cases.push_back(c);
  }
  {
    Case c;  // bf16, three tokens, shared experts, renormalised weights
    c.name = "Bf16Batch3SharedRenorm";
    c.dtype = DType::BF16;
    c.hidden = 128, c.n_experts = 16, c.top_k = 4, c.expert_ffn = 64, c.shared_ffn = 64, c.batch = 3;
    c.norm_topk_prob = true, c.seed = 2;
    cases.push_back(c);
  }
  {
    Case c;  // 16 tokens (two batch tiles), V2's group filter, scale 2.5, a width of 48 (a 3-tile gate/up group)
    c.name = "GroupedScaledBatch16";
    c.hidden = 64, c.n_experts = 16, c.top_k = 3, c.expert_ffn = 48, c.shared_ffn = 64, c.batch = 16;
    c.grouped = true, c.n_group = 4, c.topk_group = 2, c.routed_scaling = 2.5f, c.seed = 3;
    cases.push_back(c);
  }
  {
    Case c;  // bf16 grouped with one group kept, renormalised and scaled, no residual, 96 columns (router tail lanes)
    c.name = "Bf16GroupedRenormScaledNoResidual";
    c.dtype = DType::BF16;
    c.hidden = 96, c.n_experts = 12, c.top_k = 2, c.expert_ffn = 32, c.batch = 5, c.residual = false;
    c.grouped = true, c.n_group = 3, c.topk_group = 1, c.norm_topk_prob = true, c.routed_scaling = 1.5f, c.seed = 4;
    cases.push_back(c);
  }
  {
    Case c;  // outputs over the inputs, 16 tokens, shared experts wider than a routed one (two down chunk widths)
    c.name = "InPlaceBatch16";
    c.hidden = 128, c.n_experts = 8, c.top_k = 4, c.expert_ffn = 32, c.shared_ffn = 64, c.batch = 16;
    c.in_place = true, c.seed = 5;
    cases.push_back(c);
  }
  {
    Case c;  // one token of a plan for 16, routing not reported
    c.name = "Batch1Of16NoRouting";
    c.dtype = DType::BF16;
    c.n_experts = 16, c.top_k = 3, c.expert_ffn = 64, c.shared_ffn = 64, c.max_batch = 16, c.report_routing = false;
    c.seed = 6;
    cases.push_back(c);
  }
  {
    Case c;  // the smallest rings (4 stages) lapped: two CTAs per launch walk many items
    c.name = "FourStagesLapped";
    c.hidden = 128, c.n_experts = 8, c.top_k = 2, c.expert_ffn = 64, c.shared_ffn = 128, c.batch = 3;
    c.sm_count = 2, c.max_stages = 4, c.seed = 7;
    cases.push_back(c);
  }
  {
    Case c;  // hidden 4128: two router chunks per row (4096 + 32 floats), 33 gate/up chunks per panel (rings lap)
    c.name = "WideHiddenTwoRouterChunks";
    c.hidden = 4128, c.n_experts = 4, c.top_k = 1, c.expert_ffn = 32, c.batch = 2, c.sm_count = 3, c.seed = 8;
    cases.push_back(c);
  }
  return cases;
}

class MoeShapes : public ::testing::TestWithParam<Case> {};

TEST_P(MoeShapes, MatchesReference) { run_and_check_any<Op>(GetParam()); }

INSTANTIATE_TEST_SUITE_P(MoeEmu, MoeShapes, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// Every expert no token chose has NaN weights: the output stays finite and within tolerance (only chosen experts
// are read), for one token and for a batch whose choices overlap.
TEST(MoeEmu, ReadsOnlyTheChosenExperts) {
  for (int batch : {1, 3}) {
    Case c;
    c.name = "PoisonedUnchosenBatch" + std::to_string(batch);
    c.hidden = 64, c.n_experts = 16, c.top_k = 2, c.expert_ffn = 32, c.shared_ffn = 64, c.batch = batch;
    c.poison_unchosen = true, c.seed = 10 + uint64_t(batch);
    run_and_check_any<Op>(c);
  }
}

// Equal scores everywhere (a zero router): ties go to the lower id, among experts and, grouped, among groups.
TEST(MoeEmu, TiesGoToTheLowerId) {
  for (bool grouped : {false, true}) {
    Case c;
    c.name = grouped ? "TiedGrouped" : "Tied";
    c.n_experts = 16, c.top_k = 3, c.batch = 2, c.tied_router = true, c.seed = 20;
    if (grouped) c.grouped = true, c.n_group = 4, c.topk_group = 2;
    const RunResult r = run_and_check_any<Op>(c);
    for (int b = 0; b < c.batch; ++b)
      for (int k = 0; k < c.top_k; ++k) EXPECT_EQ(r.ids[size_t(b * c.top_k + k)], k) << c.name << " token " << b;
  }
}

// Two emulator schedules and repeated calls of one plan (its counters reset themselves): the same bits.
TEST(MoeEmu, SameBitsUnderEveryScheduleAndCall) {
  Case c = all_cases()[2];
  c.batch = 6, c.name = "Determinism";
  const HostInputs in = make_inputs<half>(c);
  Op::Launch launch(c, in);
  RunResult first;
  for (uint64_t seed : {11u, 12u, 12u}) {
    launch.poison();
    launch.run(nullptr, seed);
    launch.plan.check_status();
    const RunResult r = launch.result();
    if (seed == 11) first = r;
    EXPECT_TRUE(Op::same_bits(r, first)) << "schedule seed " << seed;
  }
}

TEST(MoeEmu, PlanSizesItsGridsForTheWorstCase) {
  Case c = all_cases()[2];
  const HostInputs in = make_inputs<half>(c);
  Case wide = c;
  wide.sm_count = 132;
  const Op::Launch launch(wide, in);
  const kmoe::LaunchInfo& li = launch.plan.info();
  EXPECT_EQ(li.max_slots, 16);                  // min(16 experts, 16 tokens x top 3)
  EXPECT_EQ(li.router_ctas, 16);                // one per expert
  EXPECT_EQ(li.gate_up_ctas, 1 + 16);           // groups of 8 tiles: one for the shared 64 rows, one per slot
  EXPECT_EQ(li.down_ctas, 1 + 16);              // 48-column chunks, 8 tiles: all 64 output rows in one block
  EXPECT_EQ(li.cluster_size, 1);
  // max_clusters caps every launch (clusters of one CTA); the step still covers every item
  DeviceInputs d = uploaded(c, in);
  kmoe::PlanConfig cfg = plan_config(c, d);
  cfg.max_clusters = 2;
  const kmoe::Plan capped(cfg);
  EXPECT_EQ(capped.info().router_ctas, 2);
  EXPECT_EQ(capped.info().gate_up_ctas, 2);
  EXPECT_EQ(capped.info().down_ctas, 2);
}

TEST(MoeValidation, ErrorsNameTheField) {
  Case c = all_cases()[1];
  const HostInputs in = make_inputs<bfloat16>(c);
  DeviceInputs d = uploaded(c, in);
  auto with = [&](auto edit) {
    kmoe::PlanConfig cfg = plan_config(c, d);
    edit(cfg);
    return [cfg] { kmoe::Plan plan(cfg); };
  };
  expect_input_error(with([](kmoe::PlanConfig& k) { k.shape.hidden = 48; }), "hidden 48");
  expect_input_error(with([](kmoe::PlanConfig& k) { k.shape.n_experts = 300; }), "n_experts 300");
  expect_input_error(with([](kmoe::PlanConfig& k) { k.shape.top_k = 17; }), "top_k 17");
  expect_input_error(with([](kmoe::PlanConfig& k) { k.shape.expert_ffn = 40; }), "expert_ffn 40");
  expect_input_error(with([](kmoe::PlanConfig& k) { k.shape.shared_ffn = 8; }), "shared_ffn 8");
  expect_input_error(with([](kmoe::PlanConfig& k) { k.shape.routed_scaling = 0.0f; }), "routed_scaling");
  expect_input_error(with([](kmoe::PlanConfig& k) {
                       k.shape.selection = ExpertSelection::GroupLimitedGreedy;
                       k.shape.n_group = 3;
                     }),
                     "n_group");
  expect_input_error(with([](kmoe::PlanConfig& k) {
                       k.shape.selection = ExpertSelection::GroupLimitedGreedy;
                       k.shape.n_group = 4, k.shape.topk_group = 1, k.shape.top_k = 5;
                     }),
                     "top_k 5 exceeds");
  expect_input_error(with([](kmoe::PlanConfig& k) { k.max_batch = 17; }), "max_batch 17");
  expect_input_error(with([](kmoe::PlanConfig& k) { k.cluster_size = 4; }), "cluster_size 4");
  expect_input_error(with([](kmoe::PlanConfig& k) { k.max_stages = 2; }), "max_stages 2");
  expect_input_error(with([](kmoe::PlanConfig& k) { k.weights.router = nullptr; }), "weights.router");
  expect_input_error(with([](kmoe::PlanConfig& k) { k.weights.shared_down = nullptr; }), "shared_down");
  expect_input_error(with([](kmoe::PlanConfig& k) { k.weight_dtype = DType::F16; }), "weight_dtype");
  expect_input_error(with([](kmoe::PlanConfig& k) {
                       k.shape.hidden = 8192;
                       k.shape.expert_ffn = 8192;
                       k.max_batch = 16;
                     }),
                     "lower max_batch");

  kmoe::Plan plan(plan_config(c, d));
  auto step = [&](auto edit) {
    kmoe::StepArgs a = step_args(c, d);
    edit(a);
    return [&plan, a] { plan.run(a); };
  };
  expect_input_error(step([](kmoe::StepArgs& a) { a.batch = 4; }), "batch 4 outside [1, 3]");
  expect_input_error(step([](kmoe::StepArgs& a) { a.out = nullptr; }), "out must be set");
  expect_input_error(step([](kmoe::StepArgs& a) { a.out = a.residual_out; }), "different buffers");
  expect_input_error(step([](kmoe::StepArgs& a) { a.hidden = static_cast<const char*>(a.hidden) + 4; }),
                     "16-byte aligned");
}

}  // namespace
}  // namespace cf::test::moe
