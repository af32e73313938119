// Host-side parts of the cuda-unfused MLA / MoE blocks (label unit, CUDA builds, no GPU needed): parameter
// validation names the bad field, the YaRN table equals ref::yarn_cos_sin, the latent split plan stays in range.
#include <gtest/gtest.h>

#include <functional>

#include "deepseek_util.hpp"

namespace cf::test {
namespace {

namespace cu = cuda_unfused;

// Fake, 256-byte aligned addresses: validate() never dereferences them.
template <typename P = void>
P* fake(uintptr_t i) {
  return reinterpret_cast<P*>(uintptr_t(1) << 20 | (i << 8));
}

cu::MlaBlockParams plausible_mla() {
  cu::MlaBlockParams p;
  p.shape = cu::mla_block_shape(mla_shape(256, 4, 0, 64, 32, 32, plain_rope(16)));
  p.batch = 2;
  p.hidden = fake(1);
  p.residual_out = fake(2);
  p.out = fake(3);
  p.weights = {fake(4), fake(5), nullptr, nullptr, nullptr, fake(6), fake(7), fake(8), fake(9), fake(10)};
  p.positions = fake<const int32_t>(11);
  p.rope = {fake<const float>(12), 100, 16};
  p.cache.pages = fake(13);
  p.cache.n_pages = 4;
  p.cache.page_size = 16;
  p.cache.kv_indptr = fake<const int32_t>(14);
  p.cache.kv_indices = fake<const int32_t>(15);
  p.cache.n_indices = 4;
  return p;
}

cu::MoeBlockParams plausible_moe() {
  cu::MoeBlockParams p;
  p.shape.hidden = 256;
  p.shape.n_experts = 8;
  p.shape.top_k = 2;
  p.shape.expert_ffn = 64;
  p.shape.shared_ffn = 128;
  p.batch = 3;
  p.hidden = fake(1);
  p.residual_out = fake(2);
  p.out = fake(3);
  p.weights = {fake(4), fake<const float>(5), fake(6), fake(7), fake(8), fake(9)};
  return p;
}

template <typename P>
void expect_input_error(const P& p, const std::string& where, const std::string& needle) {
  try {
    p.validate();
    ADD_FAILURE() << "expected cf::InputError mentioning '" << needle << "'";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(needle), std::string::npos) << what;
    EXPECT_NE(what.find(where), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << "one line: " << what;
  }
}

TEST(DeepseekHostValidation, MlaBlockParamsNameTheBadField) {
  EXPECT_NO_THROW(plausible_mla().validate());
  cu::MlaBlockParams plain_scale = plausible_mla();
  plain_scale.shape.softmax_scale = 0.0f;  // q_head^-0.5, as the fused plan
  EXPECT_NO_THROW(plain_scale.validate());
  const std::vector<std::pair<std::function<void(cu::MlaBlockParams&)>, std::string>> cases = {
      {[](auto& p) { p.shape.hidden = 260; }, "shape.hidden 260"},
      {[](auto& p) { p.shape.qk_rope = 15; }, "qk_rope 15"},
      {[](auto& p) { p.shape.kv_lora_rank = 1000; }, "at most 768"},
      {[](auto& p) { p.shape.kv_lora_rank = 61; }, "multiple of 8"},
      {[](auto& p) { p.shape.softmax_scale = -1.0f; }, "shape.softmax_scale"},
      {[](auto& p) { p.shape.eps = -1.0f; }, "shape.eps"},
      {[](auto& p) { p.batch = 0; }, "token count 0"},
      {[](auto& p) { p.weights.w_q = nullptr; }, "weights.w_q is null"},
      {[](auto& p) { p.shape.q_lora_rank = 32; }, "weights.w_q_a is null"},
      {[](auto& p) { p.weights.w_q_a = fake(30); }, "q_lora_rank is 0"},
      {[](auto& p) { p.weights.w_uk = nullptr; }, "weights.w_uk"},
      {[](auto& p) { p.out = p.residual_out; }, "out aliases residual_out"},
      {[](auto& p) { p.hidden = reinterpret_cast<const void*>(uintptr_t(0x100002)); }, "hidden is not 16-byte aligned"},
      {[](auto& p) { p.rope.rot_dim = 32; }, "rope.rot_dim 32"},
      {[](auto& p) { p.cache.page_size = 0; }, "cache.page_size 0"},
      {[](auto& p) { p.cache.kv_indices = nullptr; }, "cache.kv_indices is null"},
      {[](auto& p) { p.dtype = cu::DType(7); }, "dtype 7"},
  };
  for (const auto& [corrupt, needle] : cases) {
    cu::MlaBlockParams p = plausible_mla();
    corrupt(p);
    expect_input_error(p, "mla_block", needle);
  }
}

TEST(DeepseekHostValidation, MoeBlockParamsNameTheBadField) {
  EXPECT_NO_THROW(plausible_moe().validate());
  const std::vector<std::pair<std::function<void(cu::MoeBlockParams&)>, std::string>> cases = {
      {[](auto& p) { p.shape.top_k = 9; }, "shape.top_k 9"},
      {[](auto& p) { p.shape.n_experts = 2000; }, "shape.n_experts 2000"},
      {[](auto& p) { p.shape.routed_scaling = 0.0f; }, "shape.routed_scaling"},
      {[](auto& p) {
         p.shape.selection = ExpertSelection::GroupLimitedGreedy;
         p.shape.n_group = 3;
       }, "shape.n_group 3"},
      {[](auto& p) {
         p.shape.selection = ExpertSelection::GroupLimitedGreedy;
         p.shape.n_group = 4;
         p.shape.topk_group = 5;
       }, "shape.topk_group 5"},
      {[](auto& p) {
         p.shape.selection = ExpertSelection::GroupLimitedGreedy;
         p.shape.n_group = 8;
         p.shape.topk_group = 1;
       }, "exceeds the experts"},
      {[](auto& p) { p.weights.router = nullptr; }, "weights.router is null"},
      {[](auto& p) { p.weights.shared_down = nullptr; }, "weights.shared_down is null"},
      {[](auto& p) { p.shape.shared_ffn = 0; }, "shared_ffn is 0"},
      {[](auto& p) { p.out = nullptr; }, "out is null"},
  };
  for (const auto& [corrupt, needle] : cases) {
    cu::MoeBlockParams p = plausible_moe();
    corrupt(p);
    expect_input_error(p, "moe_block", needle);
  }
}

TEST(DeepseekHost, YarnTableIsTheReferencesCosSin) {
  const ref::YarnRope rope = v2_lite_yarn(64);
  const std::vector<float> table = cu::make_yarn_rope_table(rope, 300);
  std::vector<float> cos_row(32), sin_row(32);
  for (int pos : {0, 1, 77, 299}) {
    ref::yarn_cos_sin(rope, pos, cos_row.data(), sin_row.data());
    for (int i = 0; i < 32; ++i) {
      EXPECT_EQ(table[size_t(pos) * 64 + size_t(i)], cos_row[size_t(i)]) << pos << " " << i;
      EXPECT_EQ(table[size_t(pos) * 64 + 32 + size_t(i)], sin_row[size_t(i)]) << pos << " " << i;
    }
  }
  EXPECT_THROW(cu::make_yarn_rope_table(plain_rope(15), 10), InputError);
  EXPECT_THROW(cu::make_yarn_rope_table(rope, 0), InputError);
}

TEST(DeepseekHost, LatentSplitPlanStaysInRange) {
  for (int tokens : {1, 3, 16})
    for (int heads : {1, 16, 128})
      for (int capacity : {1, 64, 256}) {
        const int splits = cu::plan_latent_splits(tokens, heads, 132, capacity);
        EXPECT_GE(splits, 1);
        EXPECT_LE(splits, capacity);
      }
  EXPECT_GT(cu::plan_latent_splits(1, 16, 132, 256), 64) << "batch 1 needs many splits to fill 132 SMs";
}

TEST(DeepseekHost, StatusBitsAreDescribed) {
  EXPECT_EQ(cu::describe_status(cu::kStatusBadRouterScores), "a token's MoE router logits are not all finite");
}

}  // namespace
}  // namespace cf::test
