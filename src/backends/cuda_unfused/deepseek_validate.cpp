// Host-side validation of the MLA / MoE params structs: one line per problem, naming the call, the field and what
// was expected (cf::InputError). Needs no GPU (tests/gpu/cuda_unfused/test_deepseek_host.cpp).
#include <cmath>
#include <string>

#include "clusterfusion/backends/cuda_unfused/deepseek.hpp"
#include "cuda_unfused/validate_common.hpp"

namespace cf::cuda_unfused {
namespace {

using namespace detail;

std::string str(int v) { return std::to_string(v); }

void require_positive(int value, const char* where, const char* field) {
  require(value > 0, where, std::string(field) + " " + str(value) + " must be > 0");
}

void require_finite_positive(float value, const char* where, const char* field) {
  require(std::isfinite(value) && value > 0.0f, where,
          std::string(field) + " " + std::to_string(value) + " must be finite and > 0");
}

void validate_latent_cache(const LatentCacheArgs& c, const char* where) {
  require_pointer(c.pages, where, "cache.pages", true);
  require(c.n_pages >= 1, where, "cache.n_pages " + str(c.n_pages) + " must be >= 1");
  require(c.page_size >= 1, where, "cache.page_size " + str(c.page_size) + " must be >= 1");
  require_pointer(c.kv_indptr, where, "cache.kv_indptr", false);
  require_pointer(c.kv_indices, where, "cache.kv_indices", false);
  require(c.n_indices >= 1, where, "cache.n_indices " + str(c.n_indices) + " must be >= 1");
}

void validate_rope_table(const RopeTableArgs& rope, int qk_rope, const char* where) {
  require_pointer(rope.cos_sin, where, "rope.cos_sin", false);
  require(rope.max_positions >= 1, where, "rope.max_positions " + str(rope.max_positions) + " must be >= 1");
  require(rope.rot_dim == qk_rope, where,
          "rope.rot_dim " + str(rope.rot_dim) + " differs from the shape's qk_rope " + str(qk_rope));
}

// The latent row [r + rope] is read in 16-byte pieces and must fit the attention kernel's registers.
void require_latent_row(int kv_lora_rank, int qk_rope, const char* where) {
  require_positive(kv_lora_rank, where, "kv_lora_rank");
  require(qk_rope > 0 && qk_rope % 2 == 0, where, "qk_rope " + str(qk_rope) + " must be positive and even");
  const int row = kv_lora_rank + qk_rope;
  require(row % 8 == 0 && row <= kMaxLatentRow, where,
          "kv_lora_rank + qk_rope = " + str(row) + " must be a multiple of 8 and at most " + str(kMaxLatentRow));
}

void validate_mla_weights(const MlaWeightArgs& w, int q_lora_rank, const char* where) {
  require_pointer(w.norm, where, "weights.norm", true);
  if (q_lora_rank == 0) {
    require_pointer(w.w_q, where, "weights.w_q", false);
    require(!w.w_q_a && !w.w_q_b, where, "weights.w_q_a / w_q_b are set but shape.q_lora_rank is 0 (expected w_q)");
  } else {
    require_pointer(w.w_q_a, where, "weights.w_q_a", false);
    require_pointer(w.q_a_norm, where, "weights.q_a_norm", false);
    require_pointer(w.w_q_b, where, "weights.w_q_b", false);
    require(!w.w_q, where, "weights.w_q is set but shape.q_lora_rank is " + str(q_lora_rank) + " (expected w_q_a, w_q_b)");
  }
  require_pointer(w.w_kv_a, where, "weights.w_kv_a", false);
  require_pointer(w.kv_a_norm, where, "weights.kv_a_norm", false);
  require_pointer(w.w_uk, where, "weights.w_uk", false);
  require_pointer(w.w_uv, where, "weights.w_uv", false);
  require_pointer(w.w_o, where, "weights.w_o", false);
}

// The block's activations: out may alias hidden or residual (read before out is written), not residual_out.
void validate_block_io(const void* hidden, const void* residual, const void* residual_out, const void* out,
                       const char* where) {
  require_pointer(hidden, where, "hidden", true);
  if (residual) require_pointer(residual, where, "residual", true);
  require_pointer(residual_out, where, "residual_out", true);
  require_pointer(out, where, "out", true);
  require(out != residual_out, where, "out aliases residual_out (expected separate buffers)");
}

}  // namespace

void validate_mla_shape(const MlaBlockShape& s, const char* where) {
  require(s.hidden > 0 && s.hidden % 8 == 0, where, "shape.hidden " + str(s.hidden) + " must be a positive multiple of 8");
  require_positive(s.n_heads, where, "shape.n_heads");
  require(s.q_lora_rank >= 0, where, "shape.q_lora_rank " + str(s.q_lora_rank) + " must be >= 0 (0: no q_lora)");
  require_positive(s.qk_nope, where, "shape.qk_nope");
  require_positive(s.v_head, where, "shape.v_head");
  require_latent_row(s.kv_lora_rank, s.qk_rope, where);
  require_finite_positive(s.eps, where, "shape.eps");
  require(std::isfinite(s.softmax_scale) && s.softmax_scale >= 0.0f, where,
          "shape.softmax_scale " + std::to_string(s.softmax_scale) + " must be finite and >= 0 (0: q_head^-0.5)");
}

void validate_moe_shape(const MoeBlockShape& s, const char* where) {
  require(s.hidden > 0 && s.hidden % 8 == 0, where, "shape.hidden " + str(s.hidden) + " must be a positive multiple of 8");
  require(s.n_experts >= 1 && s.n_experts <= kMaxExperts, where,
          "shape.n_experts " + str(s.n_experts) + " out of range (expected 1.." + str(kMaxExperts) + ")");
  require(s.top_k >= 1 && s.top_k <= s.n_experts, where,
          "shape.top_k " + str(s.top_k) + " out of range (expected 1..n_experts " + str(s.n_experts) + ")");
  require_positive(s.expert_ffn, where, "shape.expert_ffn");
  require(s.shared_ffn >= 0, where, "shape.shared_ffn " + str(s.shared_ffn) + " must be >= 0 (0: none)");
  require_finite_positive(s.routed_scaling, where, "shape.routed_scaling");
  require_finite_positive(s.eps, where, "shape.eps");
  require(s.selection == ExpertSelection::Greedy || s.selection == ExpertSelection::GroupLimitedGreedy, where,
          "shape.selection is not Greedy or GroupLimitedGreedy");
  if (s.selection == ExpertSelection::GroupLimitedGreedy) {
    require(s.n_group >= 1 && s.n_experts % s.n_group == 0, where,
            "shape.n_group " + str(s.n_group) + " must divide n_experts " + str(s.n_experts));
    require(s.topk_group >= 1 && s.topk_group <= s.n_group, where,
            "shape.topk_group " + str(s.topk_group) + " out of range (expected 1..n_group " + str(s.n_group) + ")");
    require(s.top_k <= s.topk_group * (s.n_experts / s.n_group), where,
            "shape.top_k " + str(s.top_k) + " exceeds the experts of the topk_group groups (" +
                str(s.topk_group * (s.n_experts / s.n_group)) + ")");
  }
}

void MlaRopeAppendParams::validate() const {
  const char* where = "mla_rope_append";
  require_dtype(dtype, where);
  require_tokens(tokens, where);
  require_positive(n_heads, where, "n_heads");
  require_positive(qk_nope, where, "qk_nope");
  require_latent_row(kv_lora_rank, qk_rope, where);
  require_finite_positive(eps, where, "eps");
  require_pointer(q, where, "q", false);
  require_pointer(kv, where, "kv", false);
  require_pointer(kv_a_norm, where, "kv_a_norm", false);
  require_pointer(positions, where, "positions", false);
  require_pointer(q_nope, where, "q_nope", false);
  require_pointer(q_latent, where, "q_latent", false);
  validate_rope_table(rope, qk_rope, where);
  validate_latent_cache(cache, where);
}

void LatentAttentionParams::validate() const {
  const char* where = "latent_attention";
  require_dtype(dtype, where);
  require_tokens(tokens, where);
  require(n_heads >= 1 && n_heads <= 65535 * kMaxLatentHeadsPerBlock, where,
          "n_heads " + str(n_heads) + " out of range");
  require_latent_row(kv_lora_rank, qk_rope, where);
  require_finite_positive(scale, where, "scale");
  require_pointer(q_latent, where, "q_latent", false);
  require_pointer(o_latent, where, "o_latent", false);
  require_pointer(partial, where, "partial", false);
  require(max_splits >= 1 && max_splits <= kMaxLatentSplits, where,
          "max_splits " + str(max_splits) + " out of range (expected 1.." + str(kMaxLatentSplits) + ")");
  validate_latent_cache(cache, where);
}

void RmsNormRowsParams::validate() const {
  const char* where = "rmsnorm_rows";
  require_dtype(dtype, where);
  require_tokens(rows, where);
  require_positive(n, where, "n");
  require_finite_positive(eps, where, "eps");
  require_pointer(x, where, "x", false);
  require_pointer(weight, where, "weight", false);
  require_pointer(y, where, "y", false);
}

void MlaBlockParams::validate() const {
  const char* where = "mla_block";
  require_dtype(dtype, where);
  validate_mla_shape(shape, where);
  require_tokens(batch, where);
  validate_block_io(hidden, residual, residual_out, out, where);
  validate_mla_weights(weights, shape.q_lora_rank, where);
  require_pointer(positions, where, "positions", false);
  validate_rope_table(rope, shape.qk_rope, where);
  validate_latent_cache(cache, where);
}

void MoeRouteParams::validate() const {
  const char* where = "moe_route";
  require_dtype(dtype, where);
  require_tokens(rows, where);
  validate_moe_shape(shape, where);
  require_pointer(logits, where, "logits", false);
  require_pointer(expert_ids, where, "expert_ids", false);
  require_pointer(expert_weights, where, "expert_weights", false);
  const void* arrays[] = {gate_up_a, gate_up_b, gate_up_c, down_a, down_b, down_c};
  for (const void* a : arrays) require_pointer(a, where, "a pointer array", false);
  require_pointer(w_gate_up, where, "w_gate_up", false);
  require_pointer(w_down, where, "w_down", false);
  require_pointer(x, where, "x", false);
  require_pointer(gate_up, where, "gate_up", false);
  require_pointer(activation, where, "activation", false);
  require_pointer(expert_out, where, "expert_out", false);
}

void MoeCombineParams::validate() const {
  const char* where = "moe_combine";
  require_dtype(dtype, where);
  require_tokens(rows, where);
  require_positive(hidden, where, "hidden");
  require_positive(top_k, where, "top_k");
  require_pointer(expert_out, where, "expert_out", false);
  require_pointer(expert_weights, where, "expert_weights", false);
  require_pointer(out, where, "out", false);
}

void WidenParams::validate() const {
  const char* where = "widen_to_fp32";
  require_dtype(dtype, where);
  require(n >= 1, where, "n " + std::to_string(n) + " must be >= 1");
  require_pointer(x, where, "x", false);
  require_pointer(y, where, "y", false);
}

void MoeBlockParams::validate() const {
  const char* where = "moe_block";
  require_dtype(dtype, where);
  validate_moe_shape(shape, where);
  require_tokens(batch, where);
  validate_block_io(hidden, residual, residual_out, out, where);
  require_pointer(weights.norm, where, "weights.norm", true);
  require_pointer(weights.router, where, "weights.router", false);
  require_pointer(weights.w_gate_up, where, "weights.w_gate_up", false);
  require_pointer(weights.w_down, where, "weights.w_down", false);
  if (shape.shared_ffn > 0) {
    require_pointer(weights.shared_gate_up, where, "weights.shared_gate_up", false);
    require_pointer(weights.shared_down, where, "weights.shared_down", false);
  } else {
    require(!weights.shared_gate_up && !weights.shared_down, where,
            "weights.shared_gate_up / shared_down are set but shape.shared_ffn is 0");
  }
}

}  // namespace cf::cuda_unfused
