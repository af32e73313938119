// Reads tests/data/golden/deepseek/reference_cases.json (scripts/record_deepseek_golden.py): small random MLA and
// MoE layers whose weights lie on a 2^-k grid (exact in float, half and bfloat16) and the float64 oracle's outputs.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "clusterfusion/common/json.hpp"
#include "clusterfusion/reference/mla.hpp"
#include "clusterfusion/reference/moe.hpp"

namespace cf::test {

inline const json::Value& deepseek_cases() {
  static const json::Value doc = [] {
    std::ifstream in(std::string(CF_SOURCE_DIR) + "/tests/data/golden/deepseek/reference_cases.json");
    std::stringstream text;
    text << in.rdbuf();
    return json::parse(text.str());
  }();
  return doc;
}

// {shape, exponent, q} -> q * 2^-exponent, row-major
template <typename T = float>
std::vector<T> grid_tensor(const json::Value& v) {
  const double scale = std::ldexp(1.0, -int(v.at("exponent").as_int()));
  std::vector<T> out;
  for (const auto& q : v.at("q").as_array()) out.push_back(from_float<T>(float(double(q.as_int()) * scale)));
  return out;
}

inline std::vector<double> numbers(const json::Value& v) {
  std::vector<double> out;
  for (const auto& x : v.as_array()) out.push_back(x.as_number());
  return out;
}

inline ref::MlaShape mla_shape(const json::Value& c) {
  const auto& s = c.at("shape");
  ref::MlaShape shape;
  shape.hidden = int(s.at("hidden").as_int());
  shape.n_heads = int(s.at("n_heads").as_int());
  shape.q_lora_rank = int(s.at("q_lora_rank").as_int());
  shape.kv_lora_rank = int(s.at("kv_lora_rank").as_int());
  shape.qk_nope = int(s.at("qk_nope").as_int());
  shape.v_head = int(s.at("v_head").as_int());
  shape.eps = float(s.at("eps").as_number());
  shape.rope.dim = int(s.at("qk_rope").as_int());
  shape.rope.theta = float(s.at("rope_theta").as_number());
  shape.rope.factor = float(s.at("factor").as_number());
  shape.rope.original_context = int(s.at("original_max_position_embeddings").as_int());
  shape.rope.beta_fast = float(s.at("beta_fast").as_number());
  shape.rope.beta_slow = float(s.at("beta_slow").as_number());
  shape.rope.mscale = float(s.at("mscale").as_number());
  shape.rope.mscale_all_dim = float(s.at("mscale_all_dim").as_number());
  return shape;
}

// The weights of an MLA case in storage type W, in the HF layout (wkv_b) or the GGUF split layout (wk_b, wv_b:
// per head W_UK transposed and W_UV, as llama.cpp's converter writes them).
template <typename W>
struct MlaCaseWeights {
  std::vector<W> wq, wq_a, q_a_norm, wq_b, wkv_a, kv_a_norm, wkv_b, wk_b, wv_b, wo;

  MlaCaseWeights(const json::Value& c, const ref::MlaShape& s, bool split_kv_b) {
    const auto& w = c.at("weights");
    const auto get = [&](const char* name) { return w.find(name) ? grid_tensor<W>(w.at(name)) : std::vector<W>{}; };
    wq = get("q_proj");
    wq_a = get("q_a_proj");
    q_a_norm = get("q_a_layernorm");
    wq_b = get("q_b_proj");
    wkv_a = get("kv_a_proj_with_mqa");
    kv_a_norm = get("kv_a_layernorm");
    wo = get("o_proj");
    const std::vector<W> kv_b = get("kv_b_proj");
    if (!split_kv_b) {
      wkv_b = kv_b;
      return;
    }
    const int rows = s.qk_nope + s.v_head;
    wk_b.resize(size_t(s.n_heads) * s.kv_lora_rank * s.qk_nope);
    wv_b.resize(size_t(s.n_heads) * s.v_head * s.kv_lora_rank);
    for (int h = 0; h < s.n_heads; ++h)
      for (int c2 = 0; c2 < s.kv_lora_rank; ++c2) {
        for (int n = 0; n < s.qk_nope; ++n)
          wk_b[(size_t(h) * s.kv_lora_rank + c2) * s.qk_nope + n] = kv_b[(size_t(h) * rows + n) * s.kv_lora_rank + c2];
        for (int j = 0; j < s.v_head; ++j)
          wv_b[(size_t(h) * s.v_head + j) * s.kv_lora_rank + c2] =
              kv_b[(size_t(h) * rows + s.qk_nope + j) * s.kv_lora_rank + c2];
      }
  }

  ref::MlaWeights<W> view() const {
    const auto ptr = [](const std::vector<W>& v) { return v.empty() ? nullptr : v.data(); };
    ref::MlaWeights<W> w;
    w.wq = ptr(wq);
    w.wq_a = ptr(wq_a);
    w.q_a_norm = ptr(q_a_norm);
    w.wq_b = ptr(wq_b);
    w.wkv_a = ptr(wkv_a);
    w.kv_a_norm = ptr(kv_a_norm);
    w.wkv_b = ptr(wkv_b);
    w.wk_b = ptr(wk_b);
    w.wv_b = ptr(wv_b);
    w.wo = ptr(wo);
    return w;
  }
};

inline ref::MoeShape moe_shape(const json::Value& c) {
  const auto& s = c.at("shape");
  ref::MoeShape shape;
  shape.hidden = int(s.at("hidden").as_int());
  shape.n_experts = int(s.at("n_experts").as_int());
  shape.top_k = int(s.at("top_k").as_int());
  shape.expert_ffn = int(s.at("expert_ffn").as_int());
  shape.shared_ffn = int(s.at("shared_ffn").as_int());
  shape.norm_topk_prob = s.at("norm_topk_prob").as_bool();
  shape.routed_scaling_factor = float(s.at("routed_scaling_factor").as_number());
  shape.method = s.at("topk_method").as_string() == "group_limited_greedy" ? ref::TopkMethod::GroupLimitedGreedy
                                                                          : ref::TopkMethod::Greedy;
  shape.n_group = int(s.at("n_group").as_int());
  shape.topk_group = int(s.at("topk_group").as_int());
  return shape;
}

template <typename W>
struct MoeCaseWeights {
  std::vector<W> router;
  std::vector<std::vector<W>> storage;  // every expert matrix, owned
  std::vector<ref::ExpertWeights<W>> experts;
  ref::ExpertWeights<W> shared;

  explicit MoeCaseWeights(const json::Value& c) {
    const auto& w = c.at("weights");
    router = grid_tensor<W>(w.at("router"));
    const auto expert = [&](const json::Value& e) {
      storage.push_back(grid_tensor<W>(e.at("gate")));
      storage.push_back(grid_tensor<W>(e.at("up")));
      storage.push_back(grid_tensor<W>(e.at("down")));
    };
    for (const auto& e : w.at("experts").as_array()) expert(e);
    if (w.find("shared")) expert(w.at("shared"));
    for (size_t i = 0; i + 2 < storage.size(); i += 3)  // pointers after the last push_back: storage is stable now
      experts.push_back({storage[i].data(), storage[i + 1].data(), storage[i + 2].data()});
    if (w.find("shared")) {
      shared = experts.back();
      experts.pop_back();
    }
  }

  ref::MoeWeights<W> view() const { return {router.data(), experts.data(), shared}; }
};

// max |got - want| <= atol + rtol * max|want| over the whole array
inline void expect_close(const std::vector<float>& got, const std::vector<double>& want, double atol, double rtol,
                         const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0.0;
  for (double w : want) scale = std::fmax(scale, std::fabs(w));
  double worst = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (const double d = std::fabs(double(got[i]) - want[i]); d > worst) worst = d, at = i;
  EXPECT_LE(worst, atol + rtol * scale) << what << ": worst at " << at << " got " << got[at] << " want " << want[at];
}

}  // namespace cf::test
