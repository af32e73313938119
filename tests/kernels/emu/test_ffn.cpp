// The fused FFN block on the emulator against cf::ref::ffn_block (docs/tolerance.md): shapes and options of issue 7
// on small matrices plus the SmolLM2-135M layer shape, determinism across schedules and plan reuse, the launcher's
// split choice, host validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "clusterfusion/device/launch.hpp"
#include "harness/driver.hpp"
#include "harness/ffn.hpp"

namespace cf::test::ffn {
namespace {

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  {
    Case c;  // the smallest: 2 x 3 CTAs, default chunks (128 columns, 4 tiles per stage); F-slices of 10 / 11 tiles
             // (down boxes 160 and 176 columns wide, as the Llama-2-7B split on the H100), one output block per rank
    c.name = "Hidden256Ffn512";
    cases.push_back(c);
  }
  {
    Case c;  // bf16, three tokens, cluster 4, narrow chunks (U 2: 64 columns, 8 tiles per stage) and a 32-column
             // tail of the 96-column K-slices; down: 192-column boxes, 3 output blocks per rank
    c.name = "Bf16Batch3Cluster4U2";
    c.dtype = DType::BF16;
    c.hidden = 384, c.ffn_hidden = 768, c.batch = 3, c.cluster_size = 4, c.max_clusters = 4, c.stage_units = 2;
    c.seed = 2;
    cases.push_back(c);
  }
  {
    Case c;  // the SmolLM2-135M layer shape, cluster size and count chosen by the launcher (132 SMs assumed:
             // 33 clusters of 4, so the last arrivers add 5 chunks of 8 clusters)
    c.name = "SmolLM2Auto";
    c.hidden = 576, c.ffn_hidden = 1536, c.cluster_size = 0, c.max_clusters = 0, c.seed = 3;
    cases.push_back(c);
  }
  {
    Case c;  // uneven everything: 9 units over 8 ranks (K-slices of 32 / 64 columns: chunk 64 and a 32 tail),
             // 33 tiles over 5 clusters (F-slices of 6 and 7 tiles: down boxes 112 / 96, 4 tiles per stage), U 8
    c.name = "UnevenCluster8U8";
    c.hidden = 288, c.ffn_hidden = 528, c.batch = 3, c.cluster_size = 8, c.max_clusters = 5, c.stage_units = 8;
    c.seed = 4;
    cases.push_back(c);
  }
  {
    Case c;  // 16 tokens (two batch tiles), bf16, U 8 (256-column chunks, 2 tiles per stage), F-slices of 576
             // columns (down chunks 256 + 256 + 64), 8 output blocks per rank (the arrival warp takes several)
    c.name = "Batch16U8WideDownBf16";
    c.dtype = DType::BF16;
    c.hidden = 512, c.ffn_hidden = 1152, c.batch = 16, c.cluster_size = 2, c.max_clusters = 2, c.stage_units = 8;
    c.seed = 5;
    cases.push_back(c);
  }
  {
    Case c;  // nine tokens, outputs written over the inputs (out = hidden, residual_out = residual)
    c.name = "Batch9InPlace";
    c.hidden = 320, c.ffn_hidden = 640, c.batch = 9, c.cluster_size = 2, c.max_clusters = 3, c.in_place = true;
    c.seed = 6;
    cases.push_back(c);
  }
  {
    Case c;  // first layer: no residual (residual_out = hidden, written over hidden)
    c.name = "NoResidualInPlace";
    c.hidden = 256, c.ffn_hidden = 768, c.batch = 2, c.cluster_size = 4, c.max_clusters = 2, c.residual = false;
    c.in_place = true, c.eps = 1e-6f, c.seed = 7;
    cases.push_back(c);
  }
  {
    Case c;  // the smallest ring (4 stages) lapped many times; 35 tiles over 3 clusters (11 / 12 / 12)
    c.name = "FourStagesOddTiles";
    c.hidden = 448, c.ffn_hidden = 560, c.batch = 1, c.cluster_size = 2, c.max_clusters = 3, c.max_stages = 4;
    c.seed = 8;
    cases.push_back(c);
  }
  {
    Case c;  // batch 3 of a plan made for 16 (the activation strides of max_batch)
    c.name = "Batch3OfMax16";
    c.dtype = DType::BF16;
    c.hidden = 576, c.ffn_hidden = 1536, c.batch = 3, c.max_batch = 16, c.cluster_size = 4, c.max_clusters = 3;
    c.seed = 9;
    cases.push_back(c);
  }
  return cases;
}

// The grid exercises what hardware bugs hid behind before: the smallest ring lapped (more items per CTA than stages),
// every cluster size the launcher picks and the largest batch.
TEST(FfnEmu, GridCoversRingWrapEveryClusterSizeAndTheLargestBatch) {
  std::set<int> sizes;
  int largest_batch = 0;
  bool smallest_ring = false;
  for (const Case& c : all_cases()) {
    with_element_type(c.dtype, [&]<typename T>() {
      const Op::Launch launch(c, make_inputs<T>(c));
      sizes.insert(launch.plan.info().cluster_size);
      smallest_ring = smallest_ring || launch.ring_stages() == pipeline::kMinStages;
    });
    largest_batch = std::max(largest_batch, c.batch);
  }
  EXPECT_EQ(sizes, (std::set<int>{2, 4, 8}));
  EXPECT_EQ(largest_batch, kffn::kMaxBatch);
  EXPECT_TRUE(smallest_ring);
}

class FfnShapes : public ::testing::TestWithParam<Case> {};

TEST_P(FfnShapes, MatchesReference) { run_and_check_any<Op>(GetParam()); }

INSTANTIATE_TEST_SUITE_P(FfnEmu, FfnShapes, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

TEST(FfnEmu, SameBitsUnderEverySchedule) {
  Case c = all_cases()[3];  // cluster 8, uneven, 4 k-groups
  const HostInputs in = make_inputs<half>(c);
  const RunResult first = run_once<Op>(c, in, 11);
  for (uint64_t seed : {12, 13, 14}) {
    const RunResult again = run_once<Op>(c, in, seed);
    EXPECT_EQ(again.out, first.out) << "schedule seed " << seed;
    EXPECT_EQ(again.residual_out, first.residual_out) << "schedule seed " << seed;
  }
}

TEST(FfnEmu, PlanReuseGivesSameBits) {
  // One plan, several calls: the arrival counters reset themselves (as for CUDA-graph replays).
  Case c = all_cases()[1];
  const HostInputs in = make_inputs<bfloat16>(c);
  DeviceInputs d;
  upload_inputs(c, in, d);
  kffn::Plan plan(plan_config(c, d));
  std::vector<uint16_t> first;
  for (int call = 0; call < 3; ++call) {
    d.out.fill_bytes(0xFF);
    plan.run(step_args(c, d), nullptr, 20 + call);
    plan.check_status();
    const std::vector<uint16_t> out = d.out.download();
    if (call == 0) first = out;
    EXPECT_EQ(out, first) << "call " << call;
  }
  const Oracle o = make_oracle<bfloat16>(c, in);
  const CheckReport rep = check_result<bfloat16>(c, in, o, download_result(c, d));
  EXPECT_TRUE(rep.ok) << rep.message;
}

TEST(FfnEmu, BatchOneAloneEqualsBatchRow) {
  // Tokens are independent: token 1 of a batch of 3 has the bits of the same token run alone (same plan shape).
  Case c = all_cases()[1];
  const HostInputs in = make_inputs<bfloat16>(c);
  const RunResult all = run_once<Op>(c, in);
  Case one = c;
  one.batch = 1;
  HostInputs in1;
  const size_t H = size_t(c.hidden);
  in1 = in;
  in1.hidden.assign(in.hidden.begin() + H, in.hidden.begin() + 2 * H);
  in1.residual.assign(in.residual.begin() + H, in.residual.begin() + 2 * H);
  const RunResult alone = run_once<Op>(one, in1);
  EXPECT_TRUE(std::equal(alone.out.begin(), alone.out.end(), all.out.begin() + H));
}

// A peer that never arrives (the emulator drops the first remote arrival: the sums of squares of the norm): the wait
// expires, the CTA runs to its end without waiting, its producer drains its copies (the emulator would report a copy
// landing in an exited block), and check_status() names the kernel and the wait; the plan refuses further launches.
TEST(FfnEmu, LostArrivalTimesOut) {
  Case c = all_cases()[1];
  const HostInputs in = make_inputs<bfloat16>(c);
  DeviceInputs d;
  upload_inputs(c, in, d);
  kffn::PlanConfig cfg = plan_config(c, d);
  cfg.wait_budget_us = 3000;
  kffn::Plan plan(cfg);
  dev::emu::lose_remote_arrival(1);
  plan.run(step_args(c, d));
  try {
    plan.check_status();
    ADD_FAILURE() << "check_status did not throw";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("ffn: a wait inside the kernel timed out after 3 ms in block "), std::string::npos) << m;
    EXPECT_NE(m.find("norm: waiting for the cluster peers' sums of squares"), std::string::npos) << m;
    EXPECT_EQ(m.find("still in flight"), std::string::npos) << m;
  }
  EXPECT_THROW(plan.run(step_args(c, d)), Error);
}

TEST(FfnEmu, TraceKeepsTheBits) { expect_trace_keeps_the_bits<Op>(all_cases()[1], kffn::kTraceSlots); }

// ---- the launcher's split -------------------------------------------------------------------------------------------

kffn::PlanConfig shape_only(int hidden, int ffn_hidden) {
  kffn::PlanConfig cfg;
  cfg.shape = {hidden, ffn_hidden, 1e-5f};
  return cfg;
}

// Bytes the busiest CTA moves for f_tiles x k_units slices: gate + up + down weights, its fp32 partial.
int64_t cta_bytes(int f_tiles, int k_units, int max_batch) {
  return 2 * 3 * int64_t(f_tiles) * 16 * k_units * 32 + 4 * int64_t(k_units) * 32 * max_batch;
}

TEST(FfnSplit, MeasuredH100PicksTwoCtaClusters) {
  // The H100 of bench/results/2026-11-26-b4022ab-h100.txt runs 66 clusters of 2 and 30 of 4 at one CTA per SM
  // (<= 15 of 8). 132 CTAs in clusters of 2 move the fewest bytes per CTA for both Llama shapes and batch sizes.
  const kffn::Occupancy measured{66, 30, 14};
  for (int max_batch : {1, 16}) {
    kffn::PlanConfig cfg = shape_only(4096, 11008);
    cfg.max_batch = max_batch;
    const kffn::SplitChoice s = kffn::choose_split(cfg, measured);
    EXPECT_EQ(s.cluster_size, 2) << "llama2, max_batch " << max_batch;
    EXPECT_EQ(s.clusters, 66);
    EXPECT_EQ(s.max_cta_bytes, cta_bytes(11, 64, max_batch));
    EXPECT_GE(s.stages, 6);
    cfg.shape = {4096, 14336, 1e-5f};
    const kffn::SplitChoice t = kffn::choose_split(cfg, measured);
    EXPECT_EQ(t.cluster_size, 2) << "llama3, max_batch " << max_batch;
    EXPECT_EQ(t.max_cta_bytes, cta_bytes(14, 64, max_batch));
  }
}

TEST(FfnSplit, FullGpcsPreferEightCtaClusters) {
  // A device with every GPC full (66 / 32 / 16 clusters): 688 tiles are 43 per cluster of 8, fewer bytes per CTA
  // than 22 per cluster of 4 or 11 per cluster of 2; one short GPC (15 clusters of 8) moves Llama-3-8B to clusters of 4.
  const kffn::Occupancy full{66, 32, 16};
  const kffn::SplitChoice s = kffn::choose_split(shape_only(4096, 11008), full);
  EXPECT_EQ(s.cluster_size, 8);
  EXPECT_EQ(s.clusters, 16);
  EXPECT_EQ(s.max_cta_bytes, cta_bytes(43, 16, 1));
  EXPECT_EQ(kffn::choose_split(shape_only(4096, 14336), full).cluster_size, 8);
  const kffn::SplitChoice t = kffn::choose_split(shape_only(4096, 14336), kffn::Occupancy{66, 32, 15});
  EXPECT_EQ(t.cluster_size, 4);
  EXPECT_EQ(t.clusters, 32);
}

TEST(FfnSplit, Batch16KeepsTheRingDeep) {
  // At max_batch 16 the gate/up partials of a cluster of 8 (2 x 896 x 16 x 4 B) leave 3 ring stages; clusters of 4
  // keep >= 6 and move fewer bytes than clusters of 2 (half the fp32 partial per CTA).
  kffn::PlanConfig cfg = shape_only(4096, 14336);
  cfg.max_batch = 16;
  const kffn::SplitChoice s = kffn::choose_split(cfg, kffn::Occupancy{66, 32, 16});
  EXPECT_EQ(s.cluster_size, 4);
  EXPECT_GE(s.stages, 6);
  cfg.max_batch = 1;
  EXPECT_EQ(kffn::choose_split(cfg, kffn::Occupancy{66, 32, 16}).cluster_size, 8);
}

TEST(FfnSplit, SmallShapesAndLimits) {
  kffn::PlanConfig cfg = shape_only(64, 32);  // 2 units, 2 tiles: only clusters of 2, at most 2 clusters
  const kffn::SplitChoice s = kffn::choose_split(cfg, kffn::Occupancy::assumed(132));
  EXPECT_EQ(s.cluster_size, 2);
  EXPECT_EQ(s.clusters, 2);
  cfg.cluster_size = 4;
  EXPECT_THROW(kffn::choose_split(cfg, kffn::Occupancy::assumed(132)), InputError);
  cfg = shape_only(4096, 11008);
  cfg.cluster_size = 2;
  cfg.max_clusters = 5;
  const kffn::SplitChoice f = kffn::choose_split(cfg, kffn::Occupancy::assumed(132));
  EXPECT_EQ(f.cluster_size, 2);
  EXPECT_EQ(f.clusters, 5);
}

// ---- host validation ------------------------------------------------------------------------------------------------

TEST(FfnValidation, ConfigErrorsNameTheField) {
  Case c = all_cases()[0];
  const HostInputs in = make_inputs<half>(c);
  DeviceInputs d;
  upload_inputs(c, in, d);
  auto with = [&](auto edit) {
    kffn::PlanConfig cfg = plan_config(c, d);
    edit(cfg);
    return [cfg] { kffn::Plan plan(cfg); };
  };
  expect_input_error(with([](kffn::PlanConfig& k) { k.shape.hidden = 100; }), "hidden 100");
  expect_input_error(with([](kffn::PlanConfig& k) { k.shape.ffn_hidden = 520 + 4; }), "ffn_hidden 524");
  expect_input_error(with([](kffn::PlanConfig& k) { k.shape.eps = 0.0f; }), "eps");
  expect_input_error(with([](kffn::PlanConfig& k) { k.dtype = DType::F32; }), "dtype");
  expect_input_error(with([](kffn::PlanConfig& k) { k.max_batch = 17; }), "max_batch 17");
  expect_input_error(with([](kffn::PlanConfig& k) { k.cluster_size = 16; }), "cluster_size 16");
  expect_input_error(with([](kffn::PlanConfig& k) { k.stage_units = 3; }), "stage_units 3");
  expect_input_error(with([](kffn::PlanConfig& k) { k.weights.w_down = nullptr; }), "w_down");
  expect_input_error(with([](kffn::PlanConfig& k) { k.weights.w_up = static_cast<const char*>(k.weights.w_up) + 2; }),
                     "16-byte aligned");
  expect_input_error(
      with([](kffn::PlanConfig& k) {
        k.shape.hidden = 224;  // 7 units for 8 ranks
        k.cluster_size = 8;
      }),
      "fewer than the cluster size 8");
}

TEST(FfnValidation, StepErrorsNameTheArgument) {
  Case c = all_cases()[0];
  const HostInputs in = make_inputs<half>(c);
  DeviceInputs d;
  upload_inputs(c, in, d);
  kffn::Plan plan(plan_config(c, d));
  auto with = [&](auto edit) {
    kffn::StepArgs a = step_args(c, d);
    edit(a);
    return [&plan, a] { plan.run(a); };
  };
  expect_input_error(with([](kffn::StepArgs& a) { a.batch = 2; }), "batch 2 outside [1, 1]");
  expect_input_error(with([](kffn::StepArgs& a) { a.batch = 0; }), "batch 0");
  expect_input_error(with([](kffn::StepArgs& a) { a.out = nullptr; }), "out must be set");
  expect_input_error(with([](kffn::StepArgs& a) { a.residual_out = a.out; }), "out and residual_out");
  expect_input_error(with([](kffn::StepArgs& a) { a.hidden = static_cast<const char*>(a.hidden) + 8; }),
                     "16-byte aligned");
}

}  // namespace
}  // namespace cf::test::ffn
