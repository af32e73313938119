// The fused decoder attention block on the emulator against cf::ref::attention_block (docs/tolerance.md): every
// option of issue 6 on small shapes plus the SmolLM2-135M layer shape, determinism across schedules, validation.
#include <gtest/gtest.h>

#include <chrono>

#include "clusterfusion/device/launch.hpp"
#include "harness.hpp"

namespace cf::test::da {
namespace {

template <typename T>
RunResult run_and_check(const Case& c, uint64_t emu_seed = 0) {
  const HostInputs in = make_inputs<T>(c);
  const Oracle o = make_oracle<T>(c, in);
  const auto t0 = std::chrono::steady_clock::now();
  RunResult r = run_case(c, in, emu_seed);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto stats = dev::emu::last_launch_stats();
  std::printf("%s: %.2f s, %llu switches, %llu copies\n", c.name.c_str(), secs, (unsigned long long)stats.switches,
              (unsigned long long)stats.copies);
  const CheckReport rep = check_result<T>(c, in, o, r);
  EXPECT_TRUE(rep.ok) << rep.message;
  if (rep.ok) std::printf("  %s\n", rep.message.c_str());
  return r;
}

RunResult run_any(const Case& c, uint64_t emu_seed = 0) {
  return c.dtype == dev::DType::F16 ? run_and_check<half>(c, emu_seed) : run_and_check<bfloat16>(c, emu_seed);
}

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
    c.dtype = dev::DType::BF16;
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
    c.dtype = dev::DType::BF16;
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
    c.dtype = dev::DType::BF16;
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
    c.dtype = dev::DType::BF16;
    c.hidden = 576, c.n_heads = 9, c.n_kv_heads = 3, c.head_dim = 64, c.kv_lens = {70, 5};
    c.cluster_size = 8, c.cos_sin_table = true, c.seed = 11;
    cases.push_back(c);
  }
  return cases;
}

class Shapes : public ::testing::TestWithParam<Case> {};

TEST_P(Shapes, MatchesReference) { run_any(GetParam()); }

INSTANTIATE_TEST_SUITE_P(DecoderAttentionEmu, Shapes, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

}  // namespace
}  // namespace cf::test::da
