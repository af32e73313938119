// Reference mixture-of-experts FFN (DeepSeek-V2/V3 style), the math of docs/mla.md: plain functions over arrays, no
// file format behind them. Storage types as in ops.hpp; matrices are [out, in] row-major.
//
// For one token x (already RMS-normed):
//   p        = softmax(x Wr^T)                                        router scores over n_experts
//   S        = top_k experts by p (greedy), or within the topk_group groups with the highest single score
//              (group_limited_greedy, DeepSeek-V2); ties go to the lower expert id
//   g_e      = p_e for e in S; renormalised to sum 1 if norm_topk_prob (and top_k > 1); then times
//              routed_scaling_factor (llama.cpp's and DeepSeek-V3's order; for DeepSeek-V2's code, which never does
//              both, a loader gives routed_scaling_factor 1 when it renormalises: docs/mla.md)
//   out      = sum_{e in S} g_e * expert_e(x) + shared(x),   expert(x) = (silu(x Wg^T) * (x Wu^T)) Wd^T
// Only the selected experts' weights are read.
#pragma once
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "clusterfusion/common/half.hpp"
#include "clusterfusion/reference/ops.hpp"

namespace cf::ref {

enum class TopkMethod { Greedy, GroupLimitedGreedy };

struct MoeShape {
  int hidden = 0;
  int n_experts = 0;
  int top_k = 0;                     // num_experts_per_tok
  int expert_ffn = 0;                // moe_intermediate_size
  int shared_ffn = 0;                // n_shared_experts * moe_intermediate_size (0: no shared expert)
  bool norm_topk_prob = false;
  float routed_scaling_factor = 1.0f;
  TopkMethod method = TopkMethod::Greedy;
  int n_group = 1;                   // group_limited_greedy: experts split into n_group equal groups
  int topk_group = 1;                // ... of which the topk_group best are eligible

  // "" when the shape can be used, else a one-line reason
  std::string check() const {
    if (hidden <= 0 || n_experts <= 0 || expert_ffn <= 0 || shared_ffn < 0)
      return "MoE shape: hidden, n_routed_experts and moe_intermediate_size must be positive";
    if (top_k <= 0 || top_k > n_experts)
      return "MoE shape: num_experts_per_tok must be in 1.." + std::to_string(n_experts);
    if (!(routed_scaling_factor > 0.0f)) return "MoE shape: routed_scaling_factor must be > 0";
    if (method == TopkMethod::GroupLimitedGreedy) {
      if (n_group <= 0 || n_experts % n_group)
        return "MoE shape: group_limited_greedy needs n_group dividing n_routed_experts (" +
               std::to_string(n_experts) + "), got " + std::to_string(n_group);
      if (topk_group <= 0 || topk_group > n_group)
        return "MoE shape: topk_group must be in 1..n_group (" + std::to_string(n_group) + ")";
      if (top_k > topk_group * (n_experts / n_group))
        return "MoE shape: num_experts_per_tok exceeds the experts of the topk_group groups";
    }
    return "";
  }
};

// The weights of one expert (or of the shared experts, which are one wider FFN): [ffn, hidden], [ffn, hidden],
// [hidden, ffn].
template <typename W>
struct ExpertWeights {
  const W* gate = nullptr;
  const W* up = nullptr;
  const W* down = nullptr;
};

template <typename W>
struct MoeWeights {
  const W* router = nullptr;                  // [n_experts, hidden] (HF mlp.gate, GGUF ffn_gate_inp)
  const ExpertWeights<W>* experts = nullptr;  // n_experts entries (GGUF: views of the stacked *_exps tensors)
  ExpertWeights<W> shared;                    // null pointers when shared_ffn == 0
};

// Chosen experts of one token, by score descending (ties: lower id first), with their weights g_e.
struct Routing {
  std::vector<int> ids;
  std::vector<float> weights;
};

// Selection and weights from the router's softmax scores p [n_experts].
inline Routing select_experts(const float* p, const MoeShape& s) {
  std::vector<float> eligible(p, p + s.n_experts);
  if (s.method == TopkMethod::GroupLimitedGreedy) {
    const int per_group = s.n_experts / s.n_group;
    std::vector<float> group_best(size_t(s.n_group));
    for (int g = 0; g < s.n_group; ++g)
      group_best[size_t(g)] = *std::max_element(p + g * per_group, p + (g + 1) * per_group);
    std::vector<int> groups(size_t(s.n_group));
    std::iota(groups.begin(), groups.end(), 0);
    std::stable_sort(groups.begin(), groups.end(), [&](int a, int b) { return group_best[size_t(a)] > group_best[size_t(b)]; });
    std::vector<bool> kept(size_t(s.n_group), false);
    for (int i = 0; i < s.topk_group; ++i) kept[size_t(groups[size_t(i)])] = true;
    for (int e = 0; e < s.n_experts; ++e)
      if (!kept[size_t(e / per_group)]) eligible[size_t(e)] = 0.0f;  // as modeling_deepseek.py's masked_fill
  }
  std::vector<int> order(size_t(s.n_experts));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return eligible[size_t(a)] > eligible[size_t(b)]; });
  Routing r;
  r.ids.assign(order.begin(), order.begin() + s.top_k);
  for (int e : r.ids) r.weights.push_back(eligible[size_t(e)]);
  if (s.norm_topk_prob && s.top_k > 1) {
    float sum = 0.0f;
    for (float g : r.weights) sum += g;
    for (float& g : r.weights) g /= sum;
  }
  for (float& g : r.weights) g *= s.routed_scaling_factor;
  return r;
}

// Router softmax and selection for one token.
template <typename T, typename W>
Routing moe_route(const T* x, const W* router, const MoeShape& s) {
  std::vector<float> p(size_t(s.n_experts));
  matvec(router, x, p.data(), s.n_experts, s.hidden);
  softmax(p.data(), p.data(), s.n_experts);
  return select_experts(p.data(), s);
}

// acc[hidden] += scale * expert(x) for one SwiGLU expert of width ffn.
template <typename T, typename W>
void add_expert(const T* x, const ExpertWeights<W>& e, int hidden, int ffn, float scale, float* acc) {
  std::vector<float> gate(static_cast<size_t>(ffn)), up(gate.size()), act(gate.size()), y(static_cast<size_t>(hidden));
  matvec(e.gate, x, gate.data(), ffn, hidden);
  matvec(e.up, x, up.data(), ffn, hidden);
  swiglu(gate.data(), up.data(), act.data(), ffn);
  matvec(e.down, act.data(), y.data(), hidden, ffn);
  for (int i = 0; i < hidden; ++i) acc[i] += scale * y[size_t(i)];
}

// The MoE FFN of one token: shared experts plus the weighted selected experts. Returns the routing.
template <typename T, typename W, typename Out>
Routing moe_ffn(const T* x, const MoeWeights<W>& w, const MoeShape& s, Out* out) {
  const Routing r = moe_route(x, w.router, s);
  std::vector<float> acc(size_t(s.hidden), 0.0f);
  if (s.shared_ffn > 0) add_expert(x, w.shared, s.hidden, s.shared_ffn, 1.0f, acc.data());
  for (size_t i = 0; i < r.ids.size(); ++i)
    add_expert(x, w.experts[r.ids[i]], s.hidden, s.expert_ffn, r.weights[i], acc.data());
  for (int i = 0; i < s.hidden; ++i) out[i] = from_float<Out>(acc[size_t(i)]);
  return r;
}

}  // namespace cf::ref
