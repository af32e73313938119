// Reference MLA (reference/mla.hpp) against the float64 numpy oracle's recorded layers (reference_cases.json): YaRN
// frequencies and scales, the projection and latent row, the absorbed query, the layer output in the absorbed
// (decode) and expanded (prefill) forms, with kv_b in the HF and the GGUF split layouts; and the forms against each
// other.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "clusterfusion/reference/mla.hpp"
#include "deepseek_cases.hpp"

namespace {

using cf::test::deepseek_cases;
using cf::test::expect_close;
using cf::test::numbers;

struct Decoded {
  std::vector<float> q, latent, q_latent, out;  // per token, concatenated
};

// Every token of the case through mla_project / mla_absorb_query / mla_decode, cache rows in KV.
template <typename W, typename KV = float>
Decoded decode_case(const cf::json::Value& c, bool split_kv_b) {
  const auto s = cf::test::mla_shape(c);
  const cf::test::MlaCaseWeights<W> weights(c, s, split_kv_b);
  const auto w = weights.view();
  const auto x = cf::test::grid_tensor<float>(c.at("x"));
  const int n_tokens = int(x.size()) / s.hidden;
  const int start = int(c.at("start_position").as_int());
  Decoded d;
  d.q.resize(size_t(n_tokens) * s.n_heads * s.q_head());
  d.q_latent.resize(size_t(n_tokens) * s.n_heads * s.latent_row());
  d.latent.resize(size_t(n_tokens) * s.latent_row());
  d.out.resize(x.size());
  std::vector<KV> cache(d.latent.size());
  std::vector<float> scratch_row(size_t(s.latent_row()));
  for (int t = 0; t < n_tokens; ++t) {
    const float* xt = x.data() + size_t(t) * s.hidden;
    float* qt = d.q.data() + size_t(t) * s.n_heads * s.q_head();
    cf::ref::mla_project(xt, w, s, start + t, qt, d.latent.data() + size_t(t) * s.latent_row());
    cf::ref::mla_absorb_query(qt, w, s, d.q_latent.data() + size_t(t) * s.n_heads * s.latent_row());
    cf::ref::mla_decode(xt, w, s, start + t, cache.data(), t, d.out.data() + size_t(t) * s.hidden);
  }
  return d;
}

template <typename W, typename KV = float>
std::vector<float> prefill_case(const cf::json::Value& c, bool split_kv_b, int first_chunk) {
  const auto s = cf::test::mla_shape(c);
  const cf::test::MlaCaseWeights<W> weights(c, s, split_kv_b);
  const auto x = cf::test::grid_tensor<float>(c.at("x"));
  const int n_tokens = int(x.size()) / s.hidden;
  const int start = int(c.at("start_position").as_int());
  std::vector<float> out(x.size());
  std::vector<KV> cache(size_t(n_tokens) * s.latent_row());
  // two chunks: the second one attends over the first one's cache rows too
  cf::ref::mla_prefill_expanded(x.data(), weights.view(), s, start, first_chunk, cache.data(), 0, out.data());
  cf::ref::mla_prefill_expanded(x.data() + size_t(first_chunk) * s.hidden, weights.view(), s, start + first_chunk,
                                n_tokens - first_chunk, cache.data(), first_chunk,
                                out.data() + size_t(first_chunk) * s.hidden);
  return out;
}

TEST(RefMla, YarnMatchesTheOracle) {
  for (const auto& c : deepseek_cases().at("mla").as_array()) {
    const auto s = cf::test::mla_shape(c);
    const auto& e = c.at("expected");
    const auto inv_freq = numbers(e.at("inv_freq"));
    for (int i = 0; i < s.rope.dim / 2; ++i)
      EXPECT_NEAR(cf::ref::yarn_inv_freq(s.rope, i), inv_freq[size_t(i)], 1e-9 * inv_freq[size_t(i)]) << i;
    int low, high;
    cf::ref::yarn_correction_range(s.rope, low, high);
    EXPECT_EQ(low, e.at("ramp_low").as_int());
    EXPECT_EQ(high, e.at("ramp_high").as_int());
    EXPECT_NEAR(cf::ref::yarn_rope_magnitude(s.rope), e.at("rope_magnitude").as_number(), 1e-12);
    EXPECT_NEAR(s.softmax_scale(), e.at("softmax_scale").as_number(), 1e-7);
  }
}

TEST(RefMla, YarnAtDeepSeekV2LiteShape) {
  const auto& r = deepseek_cases().at("v2_lite_rope");
  cf::ref::YarnRope rope;
  rope.dim = int(r.at("dim").as_int());
  rope.theta = float(r.at("theta").as_number());
  rope.factor = float(r.at("factor").as_number());
  rope.original_context = int(r.at("original_max_position_embeddings").as_int());
  rope.beta_fast = float(r.at("beta_fast").as_number());
  rope.beta_slow = float(r.at("beta_slow").as_number());
  rope.mscale = float(r.at("mscale").as_number());
  rope.mscale_all_dim = float(r.at("mscale_all_dim").as_number());
  int low, high;
  cf::ref::yarn_correction_range(rope, low, high);
  EXPECT_EQ(low, r.at("ramp_low").as_int());
  EXPECT_EQ(high, r.at("ramp_high").as_int());
  const auto inv_freq = numbers(r.at("inv_freq"));
  for (int i = 0; i < rope.dim / 2; ++i)
    EXPECT_NEAR(cf::ref::yarn_inv_freq(rope, i), inv_freq[size_t(i)], 1e-9 * inv_freq[size_t(i)]) << i;
  EXPECT_DOUBLE_EQ(cf::ref::yarn_rope_magnitude(rope), r.at("magnitude").as_number());
}

TEST(RefMla, NoYarnIsPlainRope) {
  cf::ref::YarnRope rope;
  rope.dim = 8;
  rope.theta = 10000.0f;
  for (int i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(cf::ref::yarn_inv_freq(rope, i), std::pow(10000.0, -2.0 * i / 8));
  EXPECT_EQ(cf::ref::yarn_rope_magnitude(rope), 1.0);
  cf::ref::MlaShape s;
  s.qk_nope = 8;
  s.rope = rope;
  EXPECT_FLOAT_EQ(s.softmax_scale(), 0.25f);
}

TEST(RefMla, ProjectionAndAbsorbedQueryMatchTheOracle) {
  for (const auto& c : deepseek_cases().at("mla").as_array()) {
    const std::string name = c.at("name").as_string();
    const auto& e = c.at("expected");
    for (bool split : {false, true}) {
      const Decoded d = decode_case<float>(c, split);
      const std::string what = name + (split ? " (attn_k_b/attn_v_b)" : " (kv_b_proj)");
      expect_close(d.q, numbers(e.at("q")), 0.0, 2e-6, what + " q");
      expect_close(d.latent, numbers(e.at("latent")), 0.0, 2e-6, what + " latent row");
      expect_close(d.q_latent, numbers(e.at("q_latent")), 0.0, 2e-6, what + " absorbed query");
    }
  }
}

TEST(RefMla, AbsorbedDecodeMatchesTheOracle) {
  for (const auto& c : deepseek_cases().at("mla").as_array())
    for (bool split : {false, true})
      expect_close(decode_case<float>(c, split).out, numbers(c.at("expected").at("out")), 0.0, 5e-6,
                   c.at("name").as_string() + (split ? " split" : " kv_b"));
}

TEST(RefMla, ExpandedPrefillMatchesTheOracleAndTheAbsorbedDecode) {
  for (const auto& c : deepseek_cases().at("mla").as_array()) {
    const auto want = numbers(c.at("expected").at("out"));
    const auto decoded = decode_case<float>(c, false).out;
    for (int first_chunk : {1, 3}) {
      const auto prefilled = prefill_case<float>(c, first_chunk == 3, first_chunk);
      expect_close(prefilled, want, 0.0, 5e-6, c.at("name").as_string() + " prefill");
      expect_close(prefilled, std::vector<double>(decoded.begin(), decoded.end()), 0.0, 5e-6,
                   c.at("name").as_string() + " prefill vs decode");
    }
  }
}

// Weights on the 2^-k grid are exact in half and bfloat16: the storage type must not change a single bit.
TEST(RefMla, WeightStorageTypeDoesNotChangeTheMath) {
  for (const auto& c : deepseek_cases().at("mla").as_array()) {
    const auto f = decode_case<float>(c, true).out;
    EXPECT_EQ(decode_case<cf::half>(c, true).out, f);
    EXPECT_EQ(decode_case<cf::bfloat16>(c, true).out, f);
  }
}

// A half-precision latent cache rounds each stored value once: the output moves by about that much, not more.
TEST(RefMla, HalfCacheStaysWithinRounding) {
  for (const auto& c : deepseek_cases().at("mla").as_array()) {
    const auto want = numbers(c.at("expected").at("out"));
    expect_close(decode_case<float, cf::half>(c, false).out, want, 0.0, 4e-3, c.at("name").as_string());
    expect_close(decode_case<float, cf::bfloat16>(c, false).out, want, 0.0, 3e-2, c.at("name").as_string());
  }
}

TEST(RefMla, SplitLatentAttentionEqualsTwoPass) {
  const auto& c = deepseek_cases().at("mla").as_array()[0];
  const auto s = cf::test::mla_shape(c);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const int kv_len = 37;
  std::vector<float> q(size_t(s.n_heads) * s.latent_row()), cache(size_t(kv_len) * s.latent_row());
  for (auto& v : q) v = dist(rng);
  for (auto& v : cache) v = dist(rng);
  std::vector<float> two_pass(size_t(s.n_heads) * s.kv_lora_rank);
  cf::ref::mla_attention_latent(q.data(), cache.data(), kv_len, s, two_pass.data());
  for (int splits : {1, 2, 5, 37}) {
    std::vector<float> merged(two_pass.size());
    for (int h = 0; h < s.n_heads; ++h) {
      cf::ref::SoftmaxState total(s.kv_lora_rank);
      for (int i = 0; i < splits; ++i)
        total = cf::ref::merge(total, cf::ref::mla_attention_state(q.data(), cache.data(), h, kv_len * i / splits,
                                                                    kv_len * (i + 1) / splits, s));
      total.finish(merged.data() + size_t(h) * s.kv_lora_rank);
    }
    for (size_t i = 0; i < merged.size(); ++i) EXPECT_NEAR(merged[i], two_pass[i], 1e-5) << splits << " splits";
  }
}

TEST(RefMla, ShapeCheck) {
  const auto s = cf::test::mla_shape(deepseek_cases().at("mla").as_array()[0]);
  EXPECT_EQ(s.check(), "");
  EXPECT_EQ(s.latent_row(), s.kv_lora_rank + s.rope.dim);
  auto odd = s;
  odd.rope.dim = 7;
  EXPECT_NE(odd.check().find("even"), std::string::npos);
  auto no_heads = s;
  no_heads.n_heads = 0;
  EXPECT_NE(no_heads.check(), "");
  auto no_yarn_context = s;
  no_yarn_context.rope.original_context = 0;
  EXPECT_NE(no_yarn_context.check().find("YaRN"), std::string::npos);
}

// DeepSeek-V2-Lite: 16 heads, kv_lora 512 + rope 64 = 576 cached values per token per layer.
TEST(RefMla, LatentRowOfV2Lite) {
  cf::ref::MlaShape s;
  s.kv_lora_rank = 512;
  s.rope.dim = 64;
  s.qk_nope = 128;
  s.rope.factor = 40.0f;
  s.rope.mscale = s.rope.mscale_all_dim = 0.707f;
  EXPECT_EQ(s.latent_row(), 576);
  EXPECT_EQ(s.q_head(), 192);
  const double m = 0.1 * 0.707 * std::log(40.0) + 1.0;
  EXPECT_NEAR(s.softmax_scale(), m * m / std::sqrt(192.0), 1e-7);
}

}  // namespace
