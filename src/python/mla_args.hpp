// The arguments of deepseek_decoder_layer (the fused MLA attention block of a DeepSeek-V2 layer, docs/mla.md) as
// Python passes them, checked once for every device (both extension modules parse through here).
//
// Arrays (B = batch, Hd = hidden, H heads, r = kv_lora_rank, q_head = nope + rope):
//   output, residual_output, hidden_states, residual   [B, Hd]      (residual may be None)
//   q_weight [H q_head, Hd], or q_a_weight [q_lora, Hd] + q_a_norm [q_lora] + q_b_weight [H q_head, q_lora]
//   kv_a_weight [r + rope, Hd]   kv_a_norm [r]   uk_weight [H, nope, r]   uv_weight [H, v, r]   o_weight [Hd, H v]
//   rms_weight [Hd]
//   latent_cache  this layer's pool [slots, r + rope] (page size 1) or [n_pages, page_size, r + rope]
//   paged_kv_indptr int32 [B + 1]   paged_kv_indices int32 [n]   kv_last_page_len int32 [B] or None
//   positions int32 or int64 [B]    cos_sin float32 [max_positions, rope]: cos of the rope/2 adjacent pairs, then
//                                   their sin (YaRN's magnitude included)
// H, nope and r come from uk_weight, v from uv_weight, rope from the cache's row width.
#pragma once
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "clusterfusion/device/types.hpp"
#include "layer_args.hpp"

namespace cf::py {

struct MlaLayerArgs {
  Array output, residual_output, hidden, kv_a_weight, kv_a_norm, uk_weight, uv_weight, o_weight, rms_weight,
      latent_cache, kv_indptr, kv_indices, positions, cos_sin;
  std::optional<Array> residual, q_weight, q_a_weight, q_a_norm, q_b_weight, kv_last_page_len;
  float eps = 1e-6f;
  float softmax_scale = 0.0f;

  bool cuda = false;
  int device_id = 0;
  Elem dtype = Elem::F16;
  int batch = 0, hidden_size = 0, n_heads = 0, q_lora_rank = 0, kv_lora_rank = 0, qk_nope = 0, qk_rope = 0,
      v_head = 0;
  int page_size = 1, n_pages = 0, n_indices = 0, cos_sin_rows = 0;

  int q_head() const { return qk_nope + qk_rope; }
  int latent_row() const { return kv_lora_rank + qk_rope; }
};

namespace detail {

// A weight of the call's dtype with exactly this shape.
inline void expect_weight(const Array& w, const Array& like, const std::vector<int64_t>& shape,
                          const std::string& meaning) {
  w.expect_shape(shape, meaning);
  expect_same_elem(w, like);
}

inline void parse_mla_query(MlaLayerArgs& a) {
  const bool lora_parts = a.q_a_weight || a.q_a_norm || a.q_b_weight;
  if (a.q_weight && lora_parts)
    a.q_weight->fail_value("given together with q_a_weight / q_a_norm / q_b_weight: pass q_weight (q_lora_rank 0, "
                           "DeepSeek-V2-Lite) or the three q_a / q_b arrays (DeepSeek-V2), not both");
  const std::string rows = std::to_string(int64_t(a.n_heads) * a.q_head());
  if (a.q_weight) {
    expect_weight(*a.q_weight, a.hidden, {int64_t(a.n_heads) * a.q_head(), a.hidden_size},
                  "(n_heads * (qk_nope + qk_rope), hidden) = (" + rows + ", " + std::to_string(a.hidden_size) + ")");
    return;
  }
  if (!a.q_a_weight || !a.q_a_norm || !a.q_b_weight)
    throw nb::value_error("q_weight: None, so q_a_weight, q_a_norm and q_b_weight must all be given (the query "
                          "through q_lora_rank values)");
  a.q_a_weight->expect_ndim(2);
  a.q_lora_rank = checked_int(a.q_a_weight->dim(0), "q_lora_rank");
  if (a.q_lora_rank < 1) a.q_a_weight->fail_value("has no rows (q_lora_rank 0)");
  expect_weight(*a.q_a_weight, a.hidden, {a.q_lora_rank, a.hidden_size}, "(q_lora_rank, hidden)");
  expect_weight(*a.q_a_norm, a.hidden, {a.q_lora_rank}, "(q_lora_rank,) from q_a_weight");
  expect_weight(*a.q_b_weight, a.hidden, {int64_t(a.n_heads) * a.q_head(), a.q_lora_rank},
                "(n_heads * (qk_nope + qk_rope), q_lora_rank) = (" + rows + ", " + std::to_string(a.q_lora_rank) +
                    ")");
}

// The latent pool [slots, row] or [n_pages, page_size, row]: page geometry and the row width.
inline int parse_latent_pool(MlaLayerArgs& a) {
  const std::vector<int64_t> s = a.latent_cache.dims();
  if (s.size() != 2 && s.size() != 3)
    a.latent_cache.fail_value("has shape " + dims_text(s) +
                              ", expected [slots, kv_lora_rank + qk_rope] or [n_pages, page_size, kv_lora_rank + "
                              "qk_rope]");
  for (int64_t d : s)
    if (d < 1) a.latent_cache.fail_value("shape " + dims_text(s) + " has an empty dimension");
  a.n_pages = checked_int(s[0], "the latent pool");
  a.page_size = s.size() == 3 ? checked_int(s[1], "page_size") : 1;
  if (int64_t(a.n_pages) * a.page_size > int64_t(INT32_MAX))
    a.latent_cache.fail_value("holds more than the 2^31 - 1 positions supported");
  expect_same_elem(a.latent_cache, a.hidden);
  return checked_int(s.back(), "the latent row");
}

}  // namespace detail

inline MlaLayerArgs parse_mla_layer(nb::handle output, nb::handle residual_output, nb::handle hidden_states,
                                    nb::handle residual, nb::handle q_weight, nb::handle kv_a_weight,
                                    nb::handle kv_a_norm, nb::handle uk_weight, nb::handle uv_weight,
                                    nb::handle o_weight, nb::handle rms_weight, nb::handle latent_cache,
                                    nb::handle paged_kv_indptr, nb::handle paged_kv_indices, nb::handle positions,
                                    nb::handle cos_sin, nb::handle q_a_weight, nb::handle q_a_norm,
                                    nb::handle q_b_weight, nb::handle kv_last_page_len, float eps,
                                    std::optional<float> softmax_scale) {
  MlaLayerArgs a{
      to_array(output, "output", true),
      to_array(residual_output, "residual_output", true),
      to_array(hidden_states, "hidden_states", false),
      to_array(kv_a_weight, "kv_a_weight", false),
      to_array(kv_a_norm, "kv_a_norm", false),
      to_array(uk_weight, "uk_weight", false),
      to_array(uv_weight, "uv_weight", false),
      to_array(o_weight, "o_weight", false),
      to_array(rms_weight, "rms_weight", false),
      to_array(latent_cache, "latent_cache", true),
      to_array(paged_kv_indptr, "paged_kv_indptr", false),
      to_array(paged_kv_indices, "paged_kv_indices", false),
      to_array(positions, "positions", false),
      to_array(cos_sin, "cos_sin", false),
      to_optional_array(residual, "residual", false),
      to_optional_array(q_weight, "q_weight", false),
      to_optional_array(q_a_weight, "q_a_weight", false),
      to_optional_array(q_a_norm, "q_a_norm", false),
      to_optional_array(q_b_weight, "q_b_weight", false),
      to_optional_array(kv_last_page_len, "kv_last_page_len", false),
  };
  a.eps = eps;
  if (!(eps > 0.0f) || !(eps < 1.0f))
    throw nb::value_error(("eps: " + std::to_string(eps) + " must be in (0, 1)").c_str());

  auto opt = [](const std::optional<Array>& x) { return x ? &*x : nullptr; };
  a.cuda = a.hidden.cuda;
  a.device_id = a.hidden.device_id;
  expect_same_device({&a.hidden, &a.output, &a.residual_output, opt(a.residual), opt(a.q_weight), opt(a.q_a_weight),
                      opt(a.q_a_norm), opt(a.q_b_weight), &a.kv_a_weight, &a.kv_a_norm, &a.uk_weight, &a.uv_weight,
                      &a.o_weight, &a.rms_weight, &a.latent_cache, &a.kv_indptr, &a.kv_indices,
                      opt(a.kv_last_page_len), &a.positions, &a.cos_sin},
                     a.cuda);

  // Activations.
  parse_activations(a);

  // Head shapes: uk_weight [H, nope, r], uv_weight [H, v, r], the latent row r + rope.
  a.uk_weight.expect_ndim(3);
  expect_same_elem(a.uk_weight, a.hidden);
  a.n_heads = checked_int(a.uk_weight.dim(0), "n_heads");
  a.qk_nope = checked_int(a.uk_weight.dim(1), "qk_nope");
  a.kv_lora_rank = checked_int(a.uk_weight.dim(2), "kv_lora_rank");
  if (a.n_heads < 1 || a.qk_nope < 1 || a.kv_lora_rank < 1)
    a.uk_weight.fail_value("has shape " + dims_text(a.uk_weight.dims()) + ", expected (n_heads, qk_nope, "
                           "kv_lora_rank), none empty");
  a.uv_weight.expect_ndim(3);
  a.v_head = checked_int(a.uv_weight.dim(1), "v_head");
  if (a.v_head < 1) a.uv_weight.fail_value("has no value rows");
  detail::expect_weight(a.uv_weight, a.hidden, {a.n_heads, a.v_head, a.kv_lora_rank},
                        "(n_heads, v_head, kv_lora_rank) with n_heads and kv_lora_rank from uk_weight");
  const int row = detail::parse_latent_pool(a);
  a.qk_rope = row - a.kv_lora_rank;
  if (a.qk_rope < 2 || a.qk_rope % 2 != 0)
    a.latent_cache.fail_value("rows of " + std::to_string(row) + " values leave qk_rope " + std::to_string(a.qk_rope) +
                              " after kv_lora_rank " + std::to_string(a.kv_lora_rank) +
                              " (from uk_weight); expected a positive even qk_rope");

  // Weights.
  detail::parse_mla_query(a);
  detail::expect_weight(a.kv_a_weight, a.hidden, {a.latent_row(), a.hidden_size},
                        "(kv_lora_rank + qk_rope, hidden): c_kv rows, then k_pe rows");
  detail::expect_weight(a.kv_a_norm, a.hidden, {a.kv_lora_rank}, "(kv_lora_rank,)");
  detail::expect_weight(a.o_weight, a.hidden, {a.hidden_size, int64_t(a.n_heads) * a.v_head},
                        "(hidden, n_heads * v_head)");
  detail::expect_weight(a.rms_weight, a.hidden, {a.hidden_size}, "(hidden,)");

  // Page table, positions, RoPE table.
  parse_page_table(a);
  a.cos_sin.expect_elem({Elem::F32});
  a.cos_sin.expect_shape({-1, a.qk_rope}, "(max_positions, qk_rope): cos of the pairs, then sin");
  a.cos_sin_rows = checked_int(a.cos_sin.dim(0), "cos_sin");
  if (a.cos_sin_rows < 1) a.cos_sin.fail_value("has no rows");

  a.softmax_scale = softmax_scale ? *softmax_scale : float(1.0 / std::sqrt(double(a.q_head())));
  if (!(a.softmax_scale > 0.0f) || !std::isfinite(a.softmax_scale))
    throw nb::value_error(
        ("softmax_scale: " + std::to_string(a.softmax_scale) + " must be positive and finite").c_str());

  const Array* residual_in = opt(a.residual);
  expect_no_overlap({{&a.output, {&a.hidden, residual_in}}, {&a.residual_output, {&a.hidden, residual_in}},
                     {&a.latent_cache, {}}},
                    {&a.hidden, residual_in, opt(a.q_weight), opt(a.q_a_weight), opt(a.q_a_norm), opt(a.q_b_weight),
                     &a.kv_a_weight, &a.kv_a_norm, &a.uk_weight, &a.uv_weight, &a.o_weight, &a.rms_weight,
                     &a.kv_indptr, &a.kv_indices, opt(a.kv_last_page_len), &a.positions, &a.cos_sin});
  return a;
}

// The MLA plan's configuration of a call (kernels/mla/params.hpp's PlanConfig, a template parameter so that each
// module takes its own kernel build's): the shape from the arrays, each weight at `device(array)`, its address where
// the kernel reads it (the array's own data on CUDA, its emulator copy on the CPU).
template <typename PlanConfig, typename Device>
PlanConfig mla_plan_config(const MlaLayerArgs& a, dev::DType dtype, int max_batch, int cluster_size, Device&& device) {
  auto optional = [&](const std::optional<Array>& x) -> const void* { return x ? device(*x) : nullptr; };
  PlanConfig cfg;
  cfg.dtype = dtype;
  cfg.shape.hidden = a.hidden_size;
  cfg.shape.n_heads = a.n_heads;
  cfg.shape.q_lora_rank = a.q_lora_rank;
  cfg.shape.kv_lora_rank = a.kv_lora_rank;
  cfg.shape.qk_nope = a.qk_nope;
  cfg.shape.qk_rope = a.qk_rope;
  cfg.shape.v_head = a.v_head;
  cfg.shape.eps = a.eps;
  cfg.shape.softmax_scale = a.softmax_scale;
  cfg.weights.norm = device(a.rms_weight);
  cfg.weights.w_q = optional(a.q_weight);
  cfg.weights.w_q_a = optional(a.q_a_weight);
  cfg.weights.q_a_norm = optional(a.q_a_norm);
  cfg.weights.w_q_b = optional(a.q_b_weight);
  cfg.weights.w_kv_a = device(a.kv_a_weight);
  cfg.weights.kv_a_norm = device(a.kv_a_norm);
  cfg.weights.w_uk = device(a.uk_weight);
  cfg.weights.w_uv = device(a.uv_weight);
  cfg.weights.w_o = device(a.o_weight);
  cfg.cache.pages = device(a.latent_cache);
  cfg.cache.n_pages = a.n_pages;
  cfg.cache.page_size = a.page_size;
  cfg.rope.cos_sin = static_cast<const float*>(device(a.cos_sin));
  cfg.rope.max_positions = a.cos_sin_rows;
  cfg.max_batch = max_batch > 0 ? max_batch : a.batch;
  cfg.cluster_size = cluster_size;
  return cfg;
}

}  // namespace cf::py
