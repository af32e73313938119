// The reference's MLA and MoE shapes (reference/mla.hpp, moe.hpp) of a DeepSeek-V2 model's config, for code that
// runs the model's layers (the cpu backend, tests chaining the reference blocks). Here, not in reference/: the
// reference takes no model config (nothing below the file formats includes them).
#pragma once
#include "clusterfusion/model/config.hpp"
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
