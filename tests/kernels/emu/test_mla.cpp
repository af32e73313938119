// The fused MLA decode block on the emulator against the CPU reference (harness/mla.hpp): q_lora null and set, page
// sizes 1 / 3 / 16, batch 1 / 3 / 16, fp16 and bf16, KV lengths over several splits, YaRN, DeepSeek-V2-Lite's head
// shapes; determinism across schedules; bad page tables and positions; host validation.
#include <gtest/gtest.h>

#include "harness/driver.hpp"
#include "harness/mla.hpp"

namespace cf::test::mla {
namespace {

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  {
    Case c;  // the smallest: 2 heads, page size 3, rows over 4 splits
    c.name = "Hidden64Heads2Page3";
    c.kv_lens = {11};
    cases.push_back(c);
  }
  {
    Case c;  // q_lora set (q_a -> RMSNorm -> q_b), bf16, 3 tokens of different lengths, page size 1
    c.name = "QLoraBf16Batch3Page1";
    c.dtype = DType::BF16;
    c.hidden = 128, c.n_heads = 4, c.q_lora = 64, c.r = 64, c.nope = 32, c.v = 32;
    c.batch = 3, c.page_size = 1, c.kv_lens = {0, 7, 20}, c.max_clusters = 9, c.seed = 2;  // 3 splits a token
    cases.push_back(c);
  }
  {
    Case c;  // 16 tokens (two batch tiles), page size 16, no residual, YaRN, 6 CTAs per launch
    c.name = "Batch16Page16NoResidualYarn";
    c.hidden = 96, c.n_heads = 3, c.r = 48, c.nope = 24, c.v = 32;
    c.batch = 16, c.page_size = 16, c.kv_lens = {3, 17, 40, 1}, c.residual = false, c.yarn_factor = 40.0f;
    c.max_clusters = 6, c.seed = 3;
    cases.push_back(c);
  }
  {
    Case c;  // in place: residual_out over hidden, out over residual; batch 2 over 3 splits each
    c.name = "InPlaceBatch2";
    c.batch = 2, c.page_size = 4, c.kv_lens = {13, 6}, c.in_place = true, c.max_clusters = 6, c.seed = 7;
    cases.push_back(c);
  }
  {
    Case c;  // 20 heads: two head tiles (16 + 4), q_lora, bf16, long rows over 8 splits
    c.name = "Heads20TwoTilesBf16";
    c.dtype = DType::BF16;
    c.hidden = 64, c.n_heads = 20, c.q_lora = 32, c.r = 32, c.nope = 16, c.v = 16;
    c.batch = 1, c.page_size = 5, c.kv_lens = {70}, c.max_clusters = 16, c.seed = 4;
    cases.push_back(c);
  }
  {
    Case c;  // one CTA per launch and 4 ring stages: the weight ring (16 Wo items) and the cache ring (22 items of at
             // most 7 rows, one page each) lap several times
    c.name = "RingLapsOneCta";
    c.hidden = 256, c.n_heads = 8, c.r = 64, c.nope = 32, c.v = 64;
    c.page_size = 7, c.kv_lens = {150}, c.max_clusters = 1, c.max_stages = 4, c.seed = 6;
    cases.push_back(c);
  }
  {
    Case c;  // DeepSeek-V2-Lite's head shapes (16 heads, r 512, rope 64, nope 128, v 128) on a small hidden
    c.name = "V2LiteHeadShapes";
    c.hidden = 128, c.n_heads = 16, c.r = 512, c.rope = 64, c.nope = 128, c.v = 128;
    c.batch = 1, c.page_size = 16, c.kv_lens = {40}, c.yarn_factor = 40.0f, c.max_clusters = 4, c.seed = 5;
    cases.push_back(c);
  }
  return cases;
}

class MlaEmu : public ::testing::TestWithParam<Case> {};

TEST_P(MlaEmu, MatchesReference) { run_and_check_any<Op>(GetParam()); }

INSTANTIATE_TEST_SUITE_P(Cases, MlaEmu, ::testing::ValuesIn(all_cases()),
                         [](const auto& info) { return info.param.name; });

// Two schedule seeds: the same bits (every sum in a fixed order, the split merge by the last arriver in split order).
TEST(MlaEmuDeterminism, BitIdenticalAcrossSchedules) {
  Case c;
  c.name = "Determinism";
  c.hidden = 64, c.n_heads = 4, c.batch = 3, c.page_size = 2, c.kv_lens = {9, 30, 4}, c.max_clusters = 6;
  with_element_type(c.dtype, [&]<typename T>() {
    const HostInputs in = make_inputs<T>(c);
    const RunResult a = run_once<Op>(c, in, 1), b = run_once<Op>(c, in, 2);
    EXPECT_TRUE(Op::same_bits(a, b)) << "schedule seeds 1 and 2 differ";
  });
}

// A bad position / page id / kv_indptr of one token: check_status names it, that token's row is NaN and nothing of it
// is appended; the other tokens are right.
void expect_bad_token(BadToken bad, int token, const std::string& name, const std::string& fragment) {
  Case c;
  c.name = name;
  c.batch = 3, c.bad = bad, c.bad_token = token, c.kv_lens = {4, 6, 8};
  with_element_type(c.dtype, [&]<typename T>() {
    const HostInputs in = make_inputs<T>(c);
    const Oracle o = make_oracle<T>(c, in);
    Op::Launch launch(c, in);
    launch.poison();
    launch.run(nullptr, 0);
    expect_input_error([&] { launch.plan.check_status(); }, fragment);
    const CheckReport rep = check_result<T>(c, in, o, launch.result());
    EXPECT_TRUE(rep.ok) << rep.message;
    launch.plan.check_status();  // the words were cleared
  });
}
TEST(MlaEmuBadInput, PositionPastTheTable) {
  expect_bad_token(BadToken::Position, 1, "BadPosition", "position is negative or past the cos/sin table");
}
TEST(MlaEmuBadInput, PageIdOutsideThePool) {
  expect_bad_token(BadToken::PageId, 0, "BadPageId", "kv_indices entry is outside");
}
TEST(MlaEmuBadInput, DecreasingIndptr) {
  expect_bad_token(BadToken::IndptrOrder, 2, "BadIndptr", "kv_indptr / kv_last_page_len is inconsistent");
}
TEST(MlaEmuBadInput, LastPageLenPastThePage) {
  expect_bad_token(BadToken::LastPageLen, 1, "BadLastPageLen", "kv_indptr / kv_last_page_len is inconsistent");
}

// Host validation: one-line errors naming the field.
TEST(MlaEmuValidation, ConfigAndStepErrors) {
  Case c;
  c.name = "Validation";
  const HostInputs in = make_inputs<half>(c);
  DeviceInputs d = uploaded(c, in);
  const kmla::PlanConfig good = plan_config(c, in, d);
  auto with = [&](auto&& change) {
    kmla::PlanConfig cfg = good;
    change(cfg);
    return cfg;
  };
  expect_input_error([&] { kmla::validate_config(with([](auto& g) { g.shape.hidden = 60; })); }, "hidden 60");
  expect_input_error([&] { kmla::validate_config(with([](auto& g) { g.shape.qk_rope = 6; })); }, "qk_rope 6");
  expect_input_error([&] { kmla::validate_config(with([](auto& g) { g.shape.kv_lora_rank = 1024; })); },
                     "kv_lora_rank 1024");
  expect_input_error([&] { kmla::validate_config(with([](auto& g) { g.shape.q_lora_rank = 16; })); },
                     "q_lora_rank 16");
  expect_input_error([&] { kmla::validate_config(with([](auto& g) { g.max_batch = 17; })); }, "max_batch 17");
  expect_input_error([&] { kmla::validate_config(with([](auto& g) { g.weights.w_q = nullptr; })); }, "w_q");
  expect_input_error([&] { kmla::validate_config(with([](auto& g) { g.shape.q_lora_rank = 32; })); }, "w_q_a");
  expect_input_error([&] { kmla::validate_config(with([](auto& g) { g.cache.page_size = 0; })); }, "page_size");
  expect_input_error([&] { kmla::validate_config(with([](auto& g) { g.rope.cos_sin = nullptr; })); }, "cos_sin");
  expect_input_error([&] { kmla::validate_config(with([](auto& g) { g.dtype = DType::F32; })); }, "F16 or BF16");
  expect_input_error([&] { kmla::validate_config(with([](auto& g) { g.cluster_size = 4; })); }, "cluster_size 4");
  expect_input_error([&] { kmla::validate_config(with([](auto& g) { g.max_stages = 2; })); }, "max_stages 2");
  // DeepSeek-V2's output width (128 heads x 128) at batch 16: the input rows leave no room for the ring
  auto v2_output = [](auto& g) { g.shape.n_heads = 128, g.shape.v_head = 128, g.max_batch = 16; };
  expect_input_error([&] { kmla::Plan big(with(v2_output)); }, "lower max_batch");
  kmla::Plan plan(good);
  kmla::StepArgs step = step_args(c, in, d);
  expect_input_error([&] { kmla::StepArgs s = step; s.batch = 2; plan.run(s); }, "batch 2");
  expect_input_error([&] { kmla::StepArgs s = step; s.positions = nullptr; plan.run(s); }, "positions");
  expect_input_error([&] { kmla::StepArgs s = step; s.out = s.residual_out; plan.run(s); }, "alias");
  EXPECT_NE(plan.info().describe().find("attention"), std::string::npos);
}

// The plan's splits at DeepSeek-V2-Lite's shapes on 132 SMs (docs/mla.md §1.5): every launch one wave of CTAs.
TEST(MlaEmuPlan, V2LiteSplits) {
  dev::DeviceBuffer<uint16_t> dummy(8);  // the plan reads no weight; pointers must be set and aligned
  dev::DeviceBuffer<float> table(64);
  kmla::PlanConfig cfg;
  cfg.shape.hidden = 2048, cfg.shape.n_heads = 16, cfg.shape.kv_lora_rank = 512, cfg.shape.qk_nope = 128;
  cfg.shape.qk_rope = 64, cfg.shape.v_head = 128;
  void* w = dummy.data();
  cfg.weights = {w, w, nullptr, nullptr, nullptr, w, w, w, w, w};
  cfg.cache = {w, 1, 16};
  cfg.rope = {table.data(), 1};
  for (int batch : {1, 16}) {
    cfg.max_batch = batch;
    const kmla::Plan plan(cfg);
    const kmla::LaunchInfo& li = plan.info();
    EXPECT_EQ(li.cluster_size, 1);
    EXPECT_EQ(li.projection_clusters, 132);  // 228 tiles of [Wq; Wkv_a]
    EXPECT_EQ(li.attention_ctas, batch == 1 ? 132 : 128) << "batch " << batch;
    EXPECT_EQ(li.uv_ctas, 128);              // 16 heads x 8 row tiles
    EXPECT_EQ(li.output_clusters, 128);      // 128 tiles of Wo
    std::printf("batch %d: %s\n", batch, li.describe().c_str());
  }
}

}  // namespace
}  // namespace cf::test::mla
