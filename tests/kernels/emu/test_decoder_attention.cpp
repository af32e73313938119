// The fused decoder attention block on the emulator against cf::ref::attention_block (docs/tolerance.md): every
// option of issue 6 on small shapes plus the SmolLM2-135M layer shape, determinism across schedules, validation.
// The op of the kernel-test harness: harness/attention.hpp.
#include <gtest/gtest.h>

#include <functional>

#include "clusterfusion/device/launch.hpp"
#include "harness/attention.hpp"
#include "harness/driver.hpp"

namespace cf::test::da {
namespace {

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  {
    Case c;  // MHA, head_dim 64, NeoX, computed RoPE, page 16
    c.name = "MhaHd64Page16";
    c.hidden = 256, c.n_heads = 4, c.n_kv_heads = 4, c.head_dim = 64, c.kv_lens = {17}, c.cluster_size = 2;
    cases.push_back(c);
  }
  {
    Case c;  // GQA group 4, head_dim 128, bf16, GPT-J, bias, three tokens with lengths 1 / 17 / 300
    c.name = "GqaHd128Bf16GptjBias";
    c.dtype = DType::BF16;
    c.hidden = 256, c.n_heads = 8, c.n_kv_heads = 2, c.head_dim = 128, c.kv_lens = {1, 17, 300};
    c.rope_style = RopeStyle::GPTJ, c.bias = true, c.cluster_size = 4, c.page_size = 16, c.seed = 2;
    cases.push_back(c);
  }
  {
    Case c;  // one KV head (group 8), page size 1, cos/sin table, cluster 8
    c.name = "MqaGroup8Page1Table";
    c.hidden = 320, c.n_heads = 8, c.n_kv_heads = 1, c.head_dim = 64, c.kv_lens = {1, 17, 40};
    c.page_size = 1, c.cos_sin_table = true, c.cluster_size = 8, c.seed = 3;
    cases.push_back(c);
  }
  {
    Case c;  // SmolLM2-135M's layer: hidden 576, 9 / 3 heads, head_dim 64, theta 1e5
    c.name = "SmolLM2Layer";
    c.hidden = 576, c.n_heads = 9, c.n_kv_heads = 3, c.head_dim = 64, c.rope_theta = 100000.0f;
    c.kv_lens = {300}, c.cluster_size = 4, c.seed = 4;
    cases.push_back(c);
  }
  {
    Case c;  // MHA with 3 heads of 128, odd page size, int64 positions, the seed's per-layer cache tables
    c.name = "Mha3Hd128Page7Int64LayerTable";
    c.dtype = DType::BF16;
    c.hidden = 384, c.n_heads = 3, c.n_kv_heads = 3, c.head_dim = 128, c.kv_lens = {33, 18};
    c.page_size = 7, c.positions64 = true, c.layer_table = true, c.cluster_size = 2, c.seed = 5;
    cases.push_back(c);
  }
  {
    Case c;  // 11 tokens: two batch tiles of the tensor-core steps
    c.name = "Batch11TwoTiles";
    c.hidden = 256, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 64;
    c.kv_lens = {1, 2, 5, 9, 16, 17, 3, 33, 8, 1, 24}, c.page_size = 4, c.cluster_size = 2, c.seed = 6;
    cases.push_back(c);
  }
  {
    Case c;  // first layer (no residual), partial rotary (rot_dim 32 of 64), cluster 4
    c.name = "NoResidualPartialRotary";
    c.hidden = 256, c.n_heads = 4, c.n_kv_heads = 4, c.head_dim = 64, c.rot_dim = 32, c.residual = false;
    c.kv_lens = {21}, c.cluster_size = 4, c.seed = 7;
    cases.push_back(c);
  }
  {
    Case c;  // the largest group (16 query heads per KV head), GPT-J partial rotary, bf16, bias
    c.name = "Group16Bf16";
    c.dtype = DType::BF16;
    c.hidden = 256, c.n_heads = 16, c.n_kv_heads = 1, c.head_dim = 64, c.rot_dim = 48;
    c.rope_style = RopeStyle::GPTJ, c.bias = true, c.kv_lens = {50}, c.cluster_size = 2, c.seed = 8;
    cases.push_back(c);
  }
  {
    Case c;  // page size 1 without kv_last_page_len (the seed's token pool)
    c.name = "Page1NoLastPageLen";
    c.hidden = 256, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 128, c.kv_lens = {9, 30};
    c.page_size = 1, c.null_last_page_len = true, c.cluster_size = 2, c.seed = 9;
    cases.push_back(c);
  }
  {
    Case c;  // contiguous cache: one page per sequence of capacity 64
    c.name = "ContiguousCache";
    c.hidden = 256, c.n_heads = 4, c.n_kv_heads = 4, c.head_dim = 128, c.kv_lens = {50, 64};
    c.page_size = 64, c.extra_pages = 1, c.cluster_size = 4, c.seed = 10;
    cases.push_back(c);
  }
  {
    Case c;  // hidden 576 over 8 CTAs: uneven K-slices (18 units) and row slices (36 units)
    c.name = "UnevenSlicesCluster8";
    c.dtype = DType::BF16;
    c.hidden = 576, c.n_heads = 9, c.n_kv_heads = 3, c.head_dim = 64, c.kv_lens = {70, 5};
    c.cluster_size = 8, c.cos_sin_table = true, c.seed = 11;
    cases.push_back(c);
  }
  {
    Case c;  // 16 tokens (two full batch tiles), outputs written over the inputs (out = hidden, residual_out =
             // residual), cluster 8 with hidden 256: one 32-column unit per CTA
    c.name = "Batch16InPlace";
    c.hidden = 256, c.n_heads = 4, c.n_kv_heads = 1, c.head_dim = 64, c.page_size = 8, c.cluster_size = 8;
    c.kv_lens = {3, 1, 9, 30, 2, 17, 8, 1, 5, 12, 4, 6, 7, 16, 10, 11};
    c.in_place = true, c.seed = 12;
    cases.push_back(c);
  }
  {
    Case c;  // page size 1 with maps (boxes of one row), head_dim 128: the page window advances every tile
    c.name = "LongPage1Hd128";
    c.hidden = 256, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 128, c.kv_lens = {300, 77};
    c.page_size = 1, c.cluster_size = 2, c.seed = 14;
    cases.push_back(c);
  }
  {
    Case c;  // page size 2, head_dim 64: 32 boxes of 2 rows per tile, tiles straddling two page windows
    c.name = "LongPage2Hd64Bf16";
    c.dtype = DType::BF16;
    c.hidden = 256, c.n_heads = 4, c.n_kv_heads = 1, c.head_dim = 64, c.kv_lens = {700, 129};
    c.page_size = 2, c.cluster_size = 2, c.seed = 15;
    cases.push_back(c);
  }
  {
    Case c;  // odd page size through the tensor maps (boxes of one row), head_dim 64: two windows per tile
    c.name = "Page7LongHd64";
    c.hidden = 256, c.n_heads = 8, c.n_kv_heads = 2, c.head_dim = 64, c.kv_lens = {400, 9, 1};
    c.page_size = 7, c.cluster_size = 2, c.seed = 16;
    cases.push_back(c);
  }
  {
    Case c;  // 16 ragged tokens, head_dim 128, page 16 (the GPU's Llama-2 batch-16 case, scaled down)
    c.name = "Batch16RaggedHd128";
    c.hidden = 512, c.n_heads = 4, c.n_kv_heads = 4, c.head_dim = 128, c.page_size = 16, c.cluster_size = 4;
    c.kv_lens.clear();
    for (int b = 0; b < 16; ++b) c.kv_lens.push_back(120 - 7 * b);
    c.seed = 17;
    cases.push_back(c);
  }
  {
    Case c;  // the seed's form of the inputs: page size 1 token pool, per-layer pointer tables, int64 positions, no
             // last-page lengths, a cos/sin table
    c.name = "SeedForm";
    c.hidden = 256, c.n_heads = 4, c.n_kv_heads = 4, c.head_dim = 64, c.kv_lens = {23, 6};
    c.page_size = 1, c.layer_table = true, c.positions64 = true, c.null_last_page_len = true, c.cos_sin_table = true;
    c.cluster_size = 2;
    cases.push_back(c);
  }
  {
    Case c;  // a non-portable cluster of 16 CTAs (one 32-column unit of hidden 512 per CTA)
    c.name = "Cluster16";
    c.hidden = 512, c.n_heads = 8, c.n_kv_heads = 2, c.head_dim = 64, c.kv_lens = {40, 7};
    c.cluster_size = 16, c.seed = 13;
    cases.push_back(c);
  }
  return cases;
}

class Shapes : public ::testing::TestWithParam<Case> {};

TEST_P(Shapes, MatchesReference) { run_and_check_any<Op>(GetParam()); }

INSTANTIATE_TEST_SUITE_P(DecoderAttentionEmu, Shapes, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// Rings of S = 4..13 stages (every depth a plan picks for the Llama shapes, batch 1..16) with more K/V items per CTA
// and token than stages, so stages are reused inside the attention phase: the warp waiting for item i must not see
// the phase of item i - S (the parity of an mbarrier wait tells only adjacent phases apart). One long token (2S + 1
// items per CTA), one just past a lap (S + 2) and short ragged ones: 16 tokens (the largest batch, two batch tiles)
// where the ring of S stages fits beside batch-16 buffers (S <= 8), else 2; cluster sizes 2 / 4 / 8 and head_dim
// 64 / 128 (tiles of 64 / 32 positions) in turn. (Against round-robin consumption, S = 4..7 fail on every seed
// tried: a read of an in-flight copy; S = 9..13 need a copy to land after one issued S - 8 items later, which the
// emulator's delivery order makes rare.)
std::vector<Case> ring_cases() {
  std::vector<Case> cases;
  for (int stages = kda::kMinStages; stages <= 13; ++stages) {
    Case c;
    c.name = "Stages" + std::to_string(stages);
    c.dtype = stages % 4 == 1 ? DType::BF16 : DType::F16;
    c.head_dim = stages % 2 == 0 || stages > 11 ? 64 : 128;  // (13 stages of 16 KB leave too little for hd 128)
    c.cluster_size = stages % 3 == 0 ? 2 : stages % 3 == 1 ? 4 : 8;
    c.hidden = 256, c.n_heads = 4, c.n_kv_heads = 1, c.page_size = 16, c.max_stages = stages;
    const int tile = c.head_dim == 128 ? 32 : 64, per_item = tile * c.cluster_size;
    c.kv_lens.clear();
    const int batch = stages <= 8 ? kda::kMaxBatch : 2;
    for (int b = 0; b < batch; ++b) c.kv_lens.push_back(1 + (b * 37) % 90);
    c.kv_lens.front() = per_item * (2 * stages + 1) - tile / 2;  // the last item of each CTA is partial
    c.kv_lens.back() = per_item * (stages + 2);
    c.seed = uint64_t(100 + stages);
    cases.push_back(c);
  }
  return cases;
}

class RingDepth : public ::testing::TestWithParam<Case> {};

TEST_P(RingDepth, StagesReusedWithinAToken) {
  const Case& c = GetParam();
  {  // the plan really has S stages (the shape leaves room for more)
    const HostInputs in = make_inputs<half>(c);
    DeviceInputs d;
    upload_inputs(c, in, d);
    const kda::Plan plan(plan_config(c, in, d));
    ASSERT_EQ(plan.info().stages, c.max_stages);
    ASSERT_EQ(plan.info().cluster_size, c.cluster_size);
  }
  run_and_check_any<Op>(c);
}

INSTANTIATE_TEST_SUITE_P(DecoderAttentionEmu, RingDepth, ::testing::ValuesIn(ring_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace cf::test::da

namespace cf::test::da {
namespace {

Case determinism_case() {
  Case c = all_cases()[1];  // GQA, bf16, three tokens, cluster 4
  c.name = "Determinism";
  return c;
}

TEST(DecoderAttentionEmu, SameBitsUnderEverySchedule) {
  const Case c = determinism_case();
  const HostInputs in = make_inputs<bfloat16>(c);
  const RunResult first = run_once<Op>(c, in, 1);
  for (uint64_t seed : {7ull, 12345ull, 99991ull}) {
    const RunResult r = run_once<Op>(c, in, seed);
    EXPECT_EQ(r.out, first.out) << "emulator seed " << seed;
    EXPECT_EQ(r.residual_out, first.residual_out) << "emulator seed " << seed;
    EXPECT_EQ(r.k_pages, first.k_pages) << "emulator seed " << seed;
    EXPECT_EQ(r.v_pages, first.v_pages) << "emulator seed " << seed;
  }
}

// A plan reused (as in CUDA-graph replays): the O-block counters must be reset by the last arrivers.
TEST(DecoderAttentionEmu, RepeatedRunsOfOnePlanGiveTheSameBits) {
  Case c = all_cases()[0];
  c.kv_lens = {40, 3};
  const HostInputs in = make_inputs<half>(c);
  DeviceInputs d;
  upload_inputs(c, in, d);
  kda::Plan plan(plan_config(c, in, d));
  const kda::StepArgs step = step_args(c, in, d);
  std::vector<uint16_t> first;
  for (int run = 0; run < 3; ++run) {
    d.out.fill_bytes(0xFF);
    plan.run(step, nullptr, uint64_t(run + 1));
    plan.check_status();
    const std::vector<uint16_t> out = d.out.download();
    if (run == 0) first = out;
    else EXPECT_EQ(out, first) << "run " << run;
  }
}

// Tokens are independent: token 0 of a batch gives the same bits as alone; a token with a broken page table gets a
// NaN row, the status says why, and the others are unaffected.
TEST(DecoderAttentionEmu, BadTokenIsPoisonedOthersUnaffected) {
  Case alone = all_cases()[0];
  alone.kv_lens = {29};
  const HostInputs in_alone = make_inputs<half>(alone);
  const RunResult r_alone = run_once<Op>(alone, in_alone);

  Case pair = alone;
  pair.kv_lens = {29, 12};
  HostInputs in = make_inputs<half>(pair);
  // same data for token 0 as the single-token case
  in.hidden = in_alone.hidden, in.residual = in_alone.residual;
  in.hidden.resize(size_t(2) * pair.hidden, in.hidden[0]);
  in.residual.resize(size_t(2) * pair.hidden, in.residual[0]);
  in.norm = in_alone.norm, in.w_qkv = in_alone.w_qkv, in.w_o = in_alone.w_o, in.b_qkv = in_alone.b_qkv;
  in.k_pages = in_alone.k_pages, in.v_pages = in_alone.v_pages, in.n_pages = in_alone.n_pages;
  in.kv_indices = in_alone.kv_indices;
  in.kv_indices.push_back(0);  // token 1: one page (page 0, shared: it is never written since token 1 is bad)
  in.kv_indptr = {0, int32_t(in_alone.kv_indices.size()), int32_t(in.kv_indices.size())};
  in.kv_last_page_len = {in_alone.kv_last_page_len[0], 0};  // 0: invalid
  in.positions = {in_alone.positions[0], 11};
  in.positions64 = {in_alone.positions64[0], 11};

  DeviceInputs d;
  upload_inputs(pair, in, d);
  d.out.fill_bytes(0xFF);
  kda::Plan plan(plan_config(pair, in, d));
  plan.run(step_args(pair, in, d));
  try {
    plan.check_status();
    ADD_FAILURE() << "check_status did not throw";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("kv_last_page_len"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(plan.check_status());  // cleared
  const std::vector<uint16_t> out = d.out.download();
  for (int i = 0; i < pair.hidden; ++i) {
    EXPECT_EQ(out[size_t(i)], r_alone.out[size_t(i)]) << "token 0 element " << i;
    EXPECT_TRUE(std::isnan(from_bits16<half>(out[size_t(pair.hidden + i)]))) << "token 1 element " << i;
  }
  EXPECT_EQ(d.k_pages.download(), r_alone.k_pages);  // nothing appended for token 1
}

// The phase trace (PlanConfig::trace) changes nothing in the results and has one record per CTA; ring-depth and
// early-stage knobs give the same bits as the defaults (they only change the schedule).
TEST(DecoderAttentionEmu, TraceAndScheduleKnobsKeepTheBits) {
  Case c = all_cases()[1];  // GQA, bf16, three tokens, cluster 4
  c.name = "Knobs";
  const HostInputs in = make_inputs<bfloat16>(c);
  const RunResult base = run_once<Op>(c, in);
  DeviceInputs d;
  upload_inputs(c, in, d);
  kda::PlanConfig cfg = plan_config(c, in, d);
  cfg.trace = true;
  cfg.max_stages = kda::kMinStages;  // the smallest ring
  kda::Plan plan(cfg);
  plan.run(step_args(c, in, d));
  plan.check_status();
  EXPECT_EQ(d.out.download(), base.out);
  EXPECT_EQ(plan.info().stages, kda::kMinStages);
  const std::vector<uint64_t> trace = plan.read_trace();
  EXPECT_EQ(trace.size(), size_t(plan.info().clusters) * plan.info().cluster_size * kda::kTraceSlots);
  kda::PlanConfig no_trace = plan_config(c, in, d);
  kda::Plan plain(no_trace);
  EXPECT_THROW(plain.read_trace(), InputError);
}

// A case whose sequence has no position is rejected by the harness (it used to crash the host reference).
TEST(DecoderAttentionEmu, HarnessRejectsEmptySequences) {
  Case c = all_cases()[0];
  c.kv_lens = {17, 0};
  EXPECT_THROW(make_inputs<half>(c), InputError);
}

TEST(DecoderAttentionEmu, PageIdOutOfRangeIsReported) {
  Case c = all_cases()[0];
  c.kv_lens = {40};
  HostInputs in = make_inputs<half>(c);
  in.kv_indices[0] = in.n_pages + 7;  // an old position's page
  DeviceInputs d;
  upload_inputs(c, in, d);
  kda::Plan plan(plan_config(c, in, d));
  plan.run(step_args(c, in, d));
  try {
    plan.check_status();
    ADD_FAILURE() << "check_status did not throw";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("kv_indices entry is outside"), std::string::npos) << e.what();
  }
}

TEST(DecoderAttentionEmu, PositionPastTheRopeTableIsReported) {
  Case c = all_cases()[0];
  c.cos_sin_table = true;
  HostInputs in = make_inputs<half>(c);
  in.positions[0] = in.rope_rows;
  DeviceInputs d;
  upload_inputs(c, in, d);
  d.out.fill_bytes(0);
  kda::Plan plan(plan_config(c, in, d));
  plan.run(step_args(c, in, d));
  EXPECT_THROW(plan.check_status(), InputError);
  EXPECT_TRUE(std::isnan(from_bits16<half>(d.out.download()[0])));
}

// ---- hangs end as a status, not a hang ------------------------------------------------------------------------------
// A peer that never arrives (the emulator drops the nth remote arrival of the launch): the waiting CTA's wait expires
// (the emulator's clock advances only while nothing can progress), the CTA runs to its end without waiting, its
// producer drains the copies it issued (the emulator would report a copy into the shared memory of an exited block),
// and check_status() names the kernel, the wait and the block; the plan refuses further launches.
void expect_timeout(uint64_t lost_arrival, const char* site) {
  Case c = all_cases()[1];  // GQA, bf16, three tokens, cluster 4: 5 collectives, 3 arrivals each per CTA
  const HostInputs in = make_inputs<bfloat16>(c);
  DeviceInputs d;
  upload_inputs(c, in, d);
  kda::PlanConfig cfg = plan_config(c, in, d);
  cfg.wait_budget_us = 5000;
  kda::Plan plan(cfg);
  dev::emu::lose_remote_arrival(lost_arrival);
  plan.run(step_args(c, in, d));
  try {
    plan.check_status();
    ADD_FAILURE() << "check_status did not throw";
  } catch (const InputError& e) {
    ADD_FAILURE() << "an input error instead of the timeout: " << e.what();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("decoder_attention: a wait inside the kernel timed out after 5 ms in block "), std::string::npos)
        << m;
    EXPECT_NE(m.find(site), std::string::npos) << "wanted '" << site << "' in: " << m;
    EXPECT_EQ(m.find("still in flight"), std::string::npos) << m;
  }
  try {
    plan.run(step_args(c, in, d));
    ADD_FAILURE() << "run() after a timeout did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("earlier launch failed"), std::string::npos) << e.what();
  }
}

TEST(DecoderAttentionEmu, LostArrivalInTheNormExchangeTimesOut) {
  expect_timeout(1, "norm: all-gather of the sums of squares");
}
TEST(DecoderAttentionEmu, LostArrivalInTheSoftmaxExchangeTimesOut) {
  // 4 CTAs x 3 peers x 3 collectives before it (norm, QKV reduce-scatter, QKV all-gather): arrival 37 is in the
  // softmax-state reduce-scatter, when the K/V ring is busy
  expect_timeout(4 * 3 * 3 + 1, "attention: reduce-scatter of the softmax states");
}

// The same launch without a lost arrival: the budget changes nothing (a wait that completes never expires).
TEST(DecoderAttentionEmu, ShortWaitBudgetKeepsTheBits) {
  Case c = all_cases()[1];
  const HostInputs in = make_inputs<bfloat16>(c);
  const RunResult base = run_once<Op>(c, in);
  DeviceInputs d;
  upload_inputs(c, in, d);
  kda::PlanConfig cfg = plan_config(c, in, d);
  cfg.wait_budget_us = 1;
  kda::Plan plan(cfg);
  plan.run(step_args(c, in, d));
  EXPECT_NO_THROW(plan.check_status());
  EXPECT_EQ(d.out.download(), base.out);
}

// ---- host-side validation ----------------------------------------------------------------------------------------

struct ValidationFixture : ::testing::Test {
  Case c = all_cases()[0];
  HostInputs in = make_inputs<half>(c);
  DeviceInputs d;
  void SetUp() override { upload_inputs(c, in, d); }
  kda::PlanConfig config() { return plan_config(c, in, d); }
  static std::string error_of(const std::function<void()>& f) {
    try {
      f();
    } catch (const InputError& e) {
      return e.what();
    }
    return "(no error)";
  }
};

TEST_F(ValidationFixture, PlanConfigErrorsNameTheProblem) {
  auto expect = [&](kda::PlanConfig cfg, const char* needle) {
    const std::string msg = error_of([&] { kda::Plan plan(cfg); });
    EXPECT_NE(msg.find(needle), std::string::npos) << "wanted '" << needle << "' in: " << msg;
  };
  kda::PlanConfig cfg = config();
  {
    auto x = cfg;
    x.shape.head_dim = 96;
    expect(x, "head_dim 96 is not supported");
  }
  {
    auto x = cfg;
    x.shape.n_kv_heads = 3;
    expect(x, "multiple of n_kv_heads");
  }
  {
    auto x = cfg;
    x.shape.n_heads = 68, x.shape.n_kv_heads = 2;
    expect(x, "at most 16 are supported");
  }
  {
    auto x = cfg;
    x.shape.hidden = 250;
    expect(x, "multiple of 32");
  }
  {
    auto x = cfg;
    x.shape.rot_dim = 65;
    expect(x, "rot_dim 65");
  }
  {
    auto x = cfg;
    x.max_batch = 17;
    expect(x, "max_batch 17 outside [1, 16]");
  }
  {
    auto x = cfg;
    x.cluster_size = 3;
    expect(x, "cluster_size 3 is not supported");
  }
  {
    auto x = cfg;
    x.weights.w_qkv = static_cast<const uint8_t*>(x.weights.w_qkv) + 2;
    expect(x, "16-byte aligned");
  }
  {
    auto x = cfg;
    x.cache.k_layer_table = d.k_table.data();
    expect(x, "either k_pages and v_pages");
  }
  {
    auto x = cfg;
    x.cache.page_size = 0;
    expect(x, "page_size 0");
  }
  {
    auto x = cfg;
    x.dtype = DType::F32;
    expect(x, "dtype must be F16 or BF16");
  }
  {
    auto x = cfg;  // buffers too large for shared memory
    x.shape.hidden = 8192, x.shape.n_heads = 16, x.shape.n_kv_heads = 1, x.shape.head_dim = 128;
    x.max_batch = 16, x.cluster_size = 2;
    expect(x, "shared memory");
  }
}

TEST_F(ValidationFixture, StepErrorsNameTheProblem) {
  kda::Plan plan(config());
  auto expect = [&](kda::StepArgs a, const char* needle) {
    const std::string msg = error_of([&] { plan.run(a); });
    EXPECT_NE(msg.find(needle), std::string::npos) << "wanted '" << needle << "' in: " << msg;
  };
  const kda::StepArgs ok = step_args(c, in, d);
  {
    auto a = ok;
    a.batch = 2;
    expect(a, "batch 2 outside [1, 1]");
  }
  {
    auto a = ok;
    a.out = nullptr;
    expect(a, "must be set");
  }
  {
    auto a = ok;
    a.hidden = static_cast<const uint8_t*>(a.hidden) + 4;
    expect(a, "16-byte aligned");
  }
  {
    auto a = ok;
    a.positions64 = d.positions64.data();
    expect(a, "exactly one of positions, positions64");
  }
  {
    auto a = ok;
    a.n_indices = 0;
    expect(a, "n_indices 0");
  }
}

}  // namespace
}  // namespace cf::test::da

namespace cf::test::da {
namespace {

// ---- one wave: the cluster size from the device's occupancy (injected here) -------------------------------------

kda::PlanConfig llama_config(int n_kv_heads, int max_batch = 1) {
  kda::PlanConfig cfg;
  cfg.shape.hidden = 4096, cfg.shape.n_heads = 32, cfg.shape.n_kv_heads = n_kv_heads, cfg.shape.head_dim = 128;
  cfg.max_batch = max_batch;
  return cfg;
}

TEST(DecoderAttentionPlan, MeasuredH100RunsLlama2InOneWaveOfPairs) {
  // cudaOccupancyMaxActiveClusters on the H100 of the first runs (FFN plan): 66 / 30 / 15 clusters of 2 / 4 / 8;
  // 16 is a guess. 32 clusters of 4 would leave 2 for a second wave.
  const kda::Occupancy h100{66, 30, 15, 7};
  for (int max_batch : {1, 8, 16}) {
    const kda::ClusterChoice c = kda::choose_cluster_size(llama_config(32, max_batch), h100);
    EXPECT_EQ(c.cluster_size, 2) << "max_batch " << max_batch;
    EXPECT_EQ(c.max_active_clusters, 66);
    EXPECT_EQ(c.waves, 1);
  }
  const kda::ClusterChoice l3 = kda::choose_cluster_size(llama_config(8), h100);  // 8 clusters of 8 fit, of 16 not
  EXPECT_EQ(l3.cluster_size, 8);
  EXPECT_EQ(l3.waves, 1);
}

TEST(DecoderAttentionPlan, LargestClusterThatFitsOneWave) {
  const kda::Occupancy full_gpcs{66, 33, 16, 8};  // whole GPCs: 32 clusters of 4 fit at once
  EXPECT_EQ(kda::choose_cluster_size(llama_config(32), full_gpcs).cluster_size, 4);
  EXPECT_EQ(kda::choose_cluster_size(llama_config(8), full_gpcs).cluster_size, 16);  // non-portable, all resident
  // the emulator's assumption (132 SMs, no clusters of 16): the cluster sizes the emulator tests were written for
  const kda::Occupancy assumed = kda::Occupancy::assumed(132);
  EXPECT_EQ(kda::choose_cluster_size(llama_config(32), assumed).cluster_size, 4);
  EXPECT_EQ(kda::choose_cluster_size(llama_config(8), assumed).cluster_size, 8);
}

TEST(DecoderAttentionPlan, FewestWavesWhenNoneFitsOneAndTheCallersSize) {
  kda::PlanConfig many = llama_config(32);
  many.shape.hidden = 12800, many.shape.n_heads = 100, many.shape.n_kv_heads = 100;
  const kda::ClusterChoice c = kda::choose_cluster_size(many, kda::Occupancy{66, 30, 15, 7});
  EXPECT_EQ(c.cluster_size, 2);  // 2 waves (4: 4, 8: 7, 16: 15)
  EXPECT_EQ(c.waves, 2);
  kda::PlanConfig fixed = llama_config(32);
  fixed.cluster_size = 4;  // the caller's size is kept; the waves say what it costs
  const kda::ClusterChoice f = kda::choose_cluster_size(fixed, kda::Occupancy{66, 30, 15, 7});
  EXPECT_EQ(f.cluster_size, 4);
  EXPECT_EQ(f.waves, 2);
  kda::PlanConfig narrow = llama_config(2);
  narrow.shape.hidden = 64, narrow.shape.n_heads = 2, narrow.shape.head_dim = 64;  // 2 units: clusters of 2 only
  EXPECT_EQ(kda::choose_cluster_size(narrow, kda::Occupancy{66, 30, 15, 7}).cluster_size, 2);
  EXPECT_THROW(kda::choose_cluster_size(llama_config(32), kda::Occupancy{}), InputError);  // the device runs none
}

TEST(DecoderAttentionPlan, PlanReportsItsChoice) {
  Case c = all_cases()[1];
  c.cluster_size = 0;
  const HostInputs in = make_inputs<bfloat16>(c);
  DeviceInputs d;
  upload_inputs(c, in, d);
  const kda::Plan plan(plan_config(c, in, d));
  const kda::LaunchInfo& li = plan.info();
  EXPECT_EQ(li.cluster_size, 8);  // hidden 256: 8 units; 2 clusters of 8 fit the assumed 16 at once
  EXPECT_EQ(li.max_active_clusters, 16);
  EXPECT_EQ(li.waves, 1);
  EXPECT_FALSE(li.occupancy_queried);
  EXPECT_EQ(li.wait_budget_us, 20000);
}

TEST(DecoderAttentionHost, PageTableValidationNamesTheEntry) {
  const std::vector<int32_t> indptr = {0, 2, 5}, indices = {3, 1, 0, 2, 4}, last = {16, 9}, pos = {31, 40};
  EXPECT_NO_THROW(kda::validate_page_table(2, indptr.data(), indices.data(), 5, last.data(), 5, 16, pos.data(), 64));
  auto message = [&](auto&& call) {
    try {
      call();
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  std::vector<int32_t> bad = indices;
  bad[3] = 9;
  EXPECT_NE(message([&] { kda::validate_page_table(2, indptr.data(), bad.data(), 5, last.data(), 5, 16); })
                .find("sequence 1: kv_indices[3] = 9 outside [0, 5)"),
            std::string::npos);
  const std::vector<int32_t> long_seq = {0, 2, 9}, many = {0, 1, 2, 3, 4, 0, 1, 2, 3};
  EXPECT_NE(message([&] { kda::validate_page_table(2, long_seq.data(), many.data(), 9, last.data(), 5, 16); })
                .find("KV length over capacity"),
            std::string::npos);
  const std::vector<int32_t> zero_last = {16, 0};
  EXPECT_NE(message([&] { kda::validate_page_table(2, indptr.data(), indices.data(), 5, zero_last.data(), 5, 16); })
                .find("kv_last_page_len 0 outside [1, 16]"),
            std::string::npos);
  EXPECT_NE(message([&] { kda::validate_page_table(2, indptr.data(), indices.data(), 4, last.data(), 5, 16); })
                .find("n_indices"),
            std::string::npos);
  EXPECT_NE(message([&] {
              kda::validate_page_table(2, indptr.data(), indices.data(), 5, last.data(), 5, 16, pos.data(), 40);
            }).find("position 40 outside [0, 40)"),
            std::string::npos);
  EXPECT_NE(message([&] { kda::validate_page_table(17, indptr.data(), indices.data(), 5, last.data(), 5, 16); })
                .find("batch 17"),
            std::string::npos);
}

}  // namespace
}  // namespace cf::test::da
