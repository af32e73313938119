// The reference's MLA and MoE shapes (reference/mla.hpp, moe.hpp) of a DeepSeek-V2 model's config, for code that
// runs the model's layers (the cpu backend, tests chaining the reference blocks). Here, not in reference/: the
// reference takes no model config (nothing below the file formats includes them).
#pragma once
#include "clusterfusion/model/config.hpp"
#include "clusterfusion/model/types.hpp"
#include "clusterfusion/reference/mla.hpp"
#include "clusterfusion/reference/moe.hpp"

namespace cf::ref {

inline MlaShape mla_shape(const ModelConfig& c) {
  MlaShape s;
  s.hidden = c.hidden;
  s.n_heads = c.n_heads;
  s.q_lora_rank = c.mla.q_lora_rank;
  s.kv_lora_rank = c.mla.kv_lora_rank;
  s.qk_nope = c.mla.qk_nope;
  s.v_head = c.mla.v_head;
  s.eps = c.rms_eps;
  s.rope.dim = c.rope_dim;
  s.rope.theta = c.rope_theta;
  s.rope.factor = c.yarn.enabled() ? c.yarn.factor : 1.0f;
  s.rope.original_context = c.yarn.original_context;
  s.rope.beta_fast = c.yarn.beta_fast;
  s.rope.beta_slow = c.yarn.beta_slow;
  s.rope.mscale = c.yarn.mscale;
  s.rope.mscale_all_dim = c.yarn.mscale_all_dim;
  return s;
}

inline MoeShape moe_shape(const ModelConfig& c) {
  MoeShape s;
  s.hidden = c.hidden;
  s.n_experts = c.moe.n_experts;
  s.top_k = c.moe.top_k;
  s.expert_ffn = c.moe.expert_ffn;
  s.shared_ffn = c.moe.shared_ffn();
  s.norm_topk_prob = c.moe.norm_topk_prob;
  s.routed_scaling_factor = c.moe.routed_scaling;
  s.method = c.moe.method == cf::TopkMethod::GroupLimitedGreedy ? TopkMethod::GroupLimitedGreedy
                                                                : TopkMethod::Greedy;
  s.n_group = c.moe.n_group;
  s.topk_group = c.moe.topk_group;
  return s;
}

}  // namespace cf::ref

namespace cf {

// The device blocks' shapes (model/types.hpp) of a DeepSeek-V2 model: the MLA block of every layer, the MoE block of
// the layers from moe.first_dense on. The softmax scale is the reference's (q_head^-0.5 x YaRN mscale^2).
inline MlaBlockShape mla_block_shape(const ModelConfig& c) {
  const ref::MlaShape r = ref::mla_shape(c);
  MlaBlockShape s;
  s.hidden = c.hidden;
  s.n_heads = c.n_heads;
  s.q_lora_rank = c.mla.q_lora_rank;
  s.kv_lora_rank = c.mla.kv_lora_rank;
  s.qk_nope = c.mla.qk_nope;
  s.qk_rope = c.rope_dim;
  s.v_head = c.mla.v_head;
  s.eps = c.rms_eps;
  s.softmax_scale = r.softmax_scale();
  return s;
}

inline MoeBlockShape moe_block_shape(const ModelConfig& c) {
  MoeBlockShape s;
  s.hidden = c.hidden;
  s.n_experts = c.moe.n_experts;
  s.top_k = c.moe.top_k;
  s.expert_ffn = c.moe.expert_ffn;
  s.shared_ffn = c.moe.shared_ffn();
  s.norm_topk_prob = c.moe.norm_topk_prob;
  s.routed_scaling = c.moe.routed_scaling;
  s.selection = c.moe.method == TopkMethod::GroupLimitedGreedy ? ExpertSelection::GroupLimitedGreedy
                                                               : ExpertSelection::Greedy;
  s.n_group = c.moe.n_group;
  s.topk_group = c.moe.topk_group;
  s.eps = c.rms_eps;
  return s;
}

}  // namespace cf
