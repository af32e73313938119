// The arguments of llama_decoder_layer, llama_ffn_layer and rms_norm as Python passes them, checked once for every
// device: shapes derived from the arrays, dtypes, devices, contiguity. Both extension modules (_core for CPU arrays,
// _cuda for CUDA tensors) parse through these functions, so the same call gives the same error everywhere.
//
// llama_decoder_layer's arrays (the seed's argument order; B = batch, H = hidden):
//   output, residual_output, hidden_states, residual   [B, H]      (residual may be None)
//   qkv_weight [(n_heads + 2 n_kv_heads) hd, H]   o_weight [H, n_heads hd]   rms_weight [H]   qkv_bias [rows] or None
//   paged_kv_indptr int32 [B + 1]   paged_kv_indices int32 [n]   kv_last_page_len int32 [B] or None (pages full)
//   k_cache, v_cache    this layer's pool: [slots, n_kv_heads, hd] (page size 1, the seed's token pool) or
//                       [n_pages, page_size, n_kv_heads, hd]; or (CUDA only) uint64 [n_layers] tables of per-layer
//                       device pointers (the seed's k_data_ptrs) with kv_cache_shape giving the pool's shape
//   positions int32 or int64 [B]    cos_sin float32 [max_positions, rot_dim] (cos of the pairs, then sin) or None
#pragma once
#include <algorithm>
#include <climits>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "clusterfusion/model/config.hpp"

namespace cf::py {

inline constexpr int kMaxLayerBatch = 16;  // the fused kernels' limit; the CPU reference enforces it too

inline RopeStyle parse_rope_style(const std::string& s) {
  if (s == "neox" || s == "NeoX" || s == "half") return RopeStyle::NeoX;
  if (s == "gptj" || s == "GPT-J" || s == "gpt-j" || s == "interleaved") return RopeStyle::GPTJ;
  throw nb::value_error(("rope_style: '" + s + "' is not known (expected 'neox' or 'gptj')").c_str());
}

struct DecoderLayerArgs {
  Array output, residual_output, hidden, qkv_weight, o_weight, kv_indptr, kv_indices, rms_weight, positions;
  std::optional<Array> residual, cos_sin, kv_last_page_len, qkv_bias;
  Array k_cache, v_cache;   // this layer's pages, or (pointer_table) the uint64 tables
  bool pointer_table = false;
  int layer_id = 0;
  float eps = 1e-5f;
  RopeStyle rope_style = RopeStyle::NeoX;
  float rope_theta = 10000.0f;

  bool cuda = false;
  int device_id = 0;
  Elem dtype = Elem::F16;
  int batch = 0, hidden_size = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, rot_dim = 0;
  int page_size = 1, n_pages = 0, n_indices = 0, cos_sin_rows = 0;

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  int qkv_rows() const { return q_dim() + 2 * kv_dim(); }
};

inline int checked_int(int64_t v, const char* what) {
  if (v > int64_t(INT32_MAX)) throw nb::value_error((std::string(what) + " is too large").c_str());
  return int(v);
}

// The pool's geometry from a 3-D [slots, n_kv, hd] or 4-D [pages, page_size, n_kv, hd] shape.
inline void set_pool_shape(DecoderLayerArgs& a, const std::vector<int64_t>& s, const std::string& who) {
  if (s.size() == 3) {
    a.n_pages = checked_int(s[0], "the KV pool");
    a.page_size = 1;
    a.n_kv_heads = checked_int(s[1], "n_kv_heads");
    a.head_dim = checked_int(s[2], "head_dim");
  } else if (s.size() == 4) {
    a.n_pages = checked_int(s[0], "the KV pool");
    a.page_size = checked_int(s[1], "page_size");
    a.n_kv_heads = checked_int(s[2], "n_kv_heads");
    a.head_dim = checked_int(s[3], "head_dim");
  } else {
    throw nb::value_error((who + ": has shape " + dims_text(s) +
                           ", expected [slots, n_kv_heads, head_dim] or [n_pages, page_size, n_kv_heads, head_dim]")
                              .c_str());
  }
  for (int64_t d : s)
    if (d < 1) throw nb::value_error((who + ": shape " + dims_text(s) + " has an empty dimension").c_str());
  // KV lengths and slot numbers are 32-bit in the kernels ((pages - 1) * page_size + last overflowed before).
  if (int64_t(a.n_pages) * a.page_size > int64_t(INT32_MAX))
    throw nb::value_error((who + ": shape " + dims_text(s) + " holds " + std::to_string(int64_t(a.n_pages) * a.page_size) +
                           " KV positions, more than the 2^31 - 1 supported").c_str());
}

// The activations of every layer: hidden_states [batch, hidden] (float16, bfloat16 or float32; batch 1..16),
// output and residual_output of its shape and dtype, residual (optional) likewise. Sets dtype, batch, hidden_size.
template <typename Args>
void parse_activations(Args& a) {
  a.hidden.expect_ndim(2);
  a.hidden.expect_elem({Elem::F16, Elem::BF16, Elem::F32});
  a.dtype = a.hidden.elem;
  a.batch = checked_int(a.hidden.dim(0), "batch");
  a.hidden_size = checked_int(a.hidden.dim(1), "hidden");
  if (a.batch < 1 || a.batch > kMaxLayerBatch)
    a.hidden.fail_value("batch " + std::to_string(a.batch) + " outside [1, " + std::to_string(kMaxLayerBatch) +
                        "] (hidden_states is [batch, hidden])");
  if (a.hidden_size < 1) a.hidden.fail_value("hidden is 0");
  const std::vector<int64_t> act = {a.batch, a.hidden_size};
  for (Array* x : {&a.output, &a.residual_output}) {
    x->expect_shape(act, "(the shape of hidden_states)");
    expect_same_elem(*x, a.hidden);
  }
  if (a.residual) {
    a.residual->expect_shape(act, "(the shape of hidden_states)");
    expect_same_elem(*a.residual, a.hidden);
  }
}

// The page table and positions of an attention layer: paged_kv_indptr int32 [batch + 1], paged_kv_indices int32
// [n >= batch], kv_last_page_len int32 [batch] (optional), positions int32 or int64 [batch]. Sets n_indices.
template <typename Args>
void parse_page_table(Args& a) {
  a.kv_indptr.expect_elem({Elem::I32});
  a.kv_indptr.expect_shape({a.batch + 1}, "(batch + 1,)");
  a.kv_indices.expect_elem({Elem::I32});
  a.kv_indices.expect_ndim(1);
  a.n_indices = checked_int(a.kv_indices.dim(0), "paged_kv_indices");
  if (a.n_indices < a.batch)
    a.kv_indices.fail_value("has " + std::to_string(a.n_indices) + " entries, fewer than the batch of " +
                            std::to_string(a.batch) + " (every sequence holds at least its new token)");
  if (a.kv_last_page_len) {
    a.kv_last_page_len->expect_elem({Elem::I32});
    a.kv_last_page_len->expect_shape({a.batch}, "(batch,)");
  }
  a.positions.expect_elem({Elem::I32, Elem::I64});
  a.positions.expect_shape({a.batch}, "(batch,)");
}

inline DecoderLayerArgs parse_decoder_layer(nb::handle output, nb::handle residual_output, nb::handle hidden_states,
                                            nb::handle residual, nb::handle qkv_weight, nb::handle o_weight,
                                            nb::handle paged_kv_indptr, nb::handle paged_kv_indices,
                                            nb::handle k_cache, nb::handle v_cache, int layer_id,
                                            nb::handle rms_weight, float eps, nb::handle positions,
                                            nb::handle cos_sin, nb::handle kv_last_page_len, nb::handle qkv_bias,
                                            const std::string& rope_style, float rope_theta,
                                            const std::optional<std::vector<int64_t>>& kv_cache_shape) {
  DecoderLayerArgs a{
      to_array(output, "output", true),
      to_array(residual_output, "residual_output", true),
      to_array(hidden_states, "hidden_states", false),
      to_array(qkv_weight, "qkv_weight", false),
      to_array(o_weight, "o_weight", false),
      to_array(paged_kv_indptr, "paged_kv_indptr", false),
      to_array(paged_kv_indices, "paged_kv_indices", false),
      to_array(rms_weight, "rms_weight", false),
      to_array(positions, "positions", false),
      to_optional_array(residual, "residual", false),
      to_optional_array(cos_sin, "cos_sin", false),
      to_optional_array(kv_last_page_len, "kv_last_page_len", false),
      to_optional_array(qkv_bias, "qkv_bias", false),
      to_array(k_cache, "k_cache", true),
      to_array(v_cache, "v_cache", true),
  };
  a.layer_id = layer_id;
  a.eps = eps;
  a.rope_style = parse_rope_style(rope_style);
  a.rope_theta = rope_theta;
  if (!(eps > 0.0f) || !(eps < 1.0f)) throw nb::value_error(("eps: " + std::to_string(eps) + " must be in (0, 1)").c_str());
  if (!(rope_theta > 0.0f)) throw nb::value_error("rope_theta: must be > 0");

  // Devices: everything where hidden_states is.
  a.cuda = a.hidden.cuda;
  a.device_id = a.hidden.device_id;
  const Array* opt[4] = {a.residual ? &*a.residual : nullptr, a.cos_sin ? &*a.cos_sin : nullptr,
                         a.kv_last_page_len ? &*a.kv_last_page_len : nullptr, a.qkv_bias ? &*a.qkv_bias : nullptr};
  expect_same_device({&a.hidden, &a.output, &a.residual_output, opt[0], &a.qkv_weight, &a.o_weight, &a.kv_indptr,
                      &a.kv_indices, &a.k_cache, &a.v_cache, &a.rms_weight, &a.positions, opt[1], opt[2], opt[3]},
                     a.cuda);

  // Activations.
  parse_activations(a);

  // KV pool: its shape gives n_kv_heads and head_dim.
  if (a.k_cache.ndim() == 1 && a.k_cache.elem == Elem::U64) {
    a.pointer_table = true;
    if (!a.cuda)
      a.k_cache.fail_value("a table of per-layer cache pointers is only accepted with CUDA tensors; on the CPU pass "
                           "the layer's cache array (or a list of per-layer arrays)");
    if (a.v_cache.ndim() != 1 || a.v_cache.elem != Elem::U64)
      a.v_cache.fail_value("k_cache is a uint64 pointer table, so v_cache must be one too");
    if (!kv_cache_shape)
      a.k_cache.fail_value("with per-layer pointer tables, pass kv_cache_shape=(slots, n_kv_heads, head_dim) or "
                           "(n_pages, page_size, n_kv_heads, head_dim): the shape of one layer's pool");
    if (a.layer_id < 0 || a.layer_id >= a.k_cache.dim(0) || a.layer_id >= a.v_cache.dim(0))
      a.k_cache.fail_value("layer_id " + std::to_string(a.layer_id) + " outside the tables' " +
                           std::to_string(std::min(a.k_cache.dim(0), a.v_cache.dim(0))) + " layers");
    set_pool_shape(a, *kv_cache_shape, "kv_cache_shape");
  } else {
    if (a.layer_id < 0) throw nb::value_error("layer_id: must be >= 0");
    set_pool_shape(a, a.k_cache.dims(), "k_cache");
    expect_same_elem(a.k_cache, a.hidden);
    if (a.v_cache.dims() != a.k_cache.dims())
      a.v_cache.fail_value("has shape " + dims_text(a.v_cache.dims()) + ", expected k_cache's " +
                           dims_text(a.k_cache.dims()));
    expect_same_elem(a.v_cache, a.hidden);
  }

  // Weights: o_weight [H, n_heads * hd] gives n_heads.
  a.o_weight.expect_ndim(2);
  expect_same_elem(a.o_weight, a.hidden);
  if (a.o_weight.dim(0) != a.hidden_size || a.o_weight.dim(1) % a.head_dim != 0 || a.o_weight.dim(1) == 0)
    a.o_weight.fail_value("has shape " + dims_text(a.o_weight.dims()) + ", expected (" +
                          std::to_string(a.hidden_size) + ", n_heads * " + std::to_string(a.head_dim) +
                          ") (hidden, n_heads * head_dim; head_dim from the cache)");
  a.n_heads = checked_int(a.o_weight.dim(1) / a.head_dim, "n_heads");
  if (a.n_heads % a.n_kv_heads != 0)
    a.o_weight.fail_value("gives n_heads " + std::to_string(a.n_heads) + ", not a multiple of n_kv_heads " +
                          std::to_string(a.n_kv_heads) + " (from the cache)");
  a.qkv_weight.expect_shape({a.qkv_rows(), a.hidden_size},
                            "((n_heads + 2 n_kv_heads) * head_dim, hidden) with n_heads " +
                                std::to_string(a.n_heads) + ", n_kv_heads " + std::to_string(a.n_kv_heads) +
                                ", head_dim " + std::to_string(a.head_dim));
  expect_same_elem(a.qkv_weight, a.hidden);
  a.rms_weight.expect_shape({a.hidden_size}, "(hidden,)");
  expect_same_elem(a.rms_weight, a.hidden);
  if (a.qkv_bias) {
    a.qkv_bias->expect_shape({a.qkv_rows()}, "((n_heads + 2 n_kv_heads) * head_dim,)");
    expect_same_elem(*a.qkv_bias, a.hidden);
  }

  // Page table and positions.
  parse_page_table(a);

  // RoPE table: [rows, rot_dim], rot_dim even and <= head_dim (partial rotary when smaller).
  a.rot_dim = a.head_dim;
  if (a.cos_sin) {
    a.cos_sin->expect_elem({Elem::F32});
    a.cos_sin->expect_ndim(2);
    a.cos_sin_rows = checked_int(a.cos_sin->dim(0), "cos_sin");
    a.rot_dim = checked_int(a.cos_sin->dim(1), "cos_sin");
    if (a.cos_sin_rows < 1 || a.rot_dim < 2 || a.rot_dim % 2 != 0 || a.rot_dim > a.head_dim)
      a.cos_sin->fail_value("has shape " + dims_text(a.cos_sin->dims()) +
                            ", expected (max_positions, rot_dim) with rot_dim even and <= head_dim " +
                            std::to_string(a.head_dim));
  }

  // Memory: output and residual_output may each be hidden_states or residual exactly (in-place decode loops); the
  // KV pools are written too (pointer tables: only read here, their pools are not visible).
  std::vector<Alias> written = {{&a.output, {&a.hidden, opt[0]}}, {&a.residual_output, {&a.hidden, opt[0]}}};
  if (!a.pointer_table) written.insert(written.end(), {{&a.k_cache, {}}, {&a.v_cache, {}}});
  std::vector<const Array*> read = {&a.hidden, opt[0], &a.qkv_weight, &a.o_weight, &a.rms_weight, opt[3], opt[1],
                                    &a.kv_indptr, &a.kv_indices, opt[2], &a.positions};
  if (a.pointer_table) read.insert(read.end(), {&a.k_cache, &a.v_cache});
  expect_no_overlap(written, read);
  return a;
}

// ---- FFN block and RMSNorm --------------------------------------------------------------------------------------

struct FfnLayerArgs {
  Array output, residual_output, hidden, gate_up_weight, down_weight, rms_weight;
  std::optional<Array> residual;
  float eps = 1e-5f;
  bool cuda = false;
  int device_id = 0;
  Elem dtype = Elem::F16;
  int batch = 0, hidden_size = 0, ffn_hidden = 0;
};

// gate_up_weight [2 ffn_hidden, H] (gate rows, then up rows: SGLang's merged gate_up_proj), down_weight [H, ffn].
inline FfnLayerArgs parse_ffn_layer(nb::handle output, nb::handle residual_output, nb::handle hidden_states,
                                    nb::handle residual, nb::handle gate_up_weight, nb::handle down_weight,
                                    nb::handle rms_weight, float eps) {
  FfnLayerArgs a{to_array(output, "output", true),
                 to_array(residual_output, "residual_output", true),
                 to_array(hidden_states, "hidden_states", false),
                 to_array(gate_up_weight, "gate_up_weight", false),
                 to_array(down_weight, "down_weight", false),
                 to_array(rms_weight, "rms_weight", false),
                 to_optional_array(residual, "residual", false)};
  a.eps = eps;
  if (!(eps > 0.0f) || !(eps < 1.0f)) throw nb::value_error(("eps: " + std::to_string(eps) + " must be in (0, 1)").c_str());
  a.cuda = a.hidden.cuda;
  a.device_id = a.hidden.device_id;
  expect_same_device({&a.hidden, &a.output, &a.residual_output, a.residual ? &*a.residual : nullptr,
                      &a.gate_up_weight, &a.down_weight, &a.rms_weight},
                     a.cuda);
  parse_activations(a);

  a.gate_up_weight.expect_ndim(2);
  expect_same_elem(a.gate_up_weight, a.hidden);
  if (a.gate_up_weight.dim(1) != a.hidden_size || a.gate_up_weight.dim(0) % 2 != 0 || a.gate_up_weight.dim(0) == 0)
    a.gate_up_weight.fail_value("has shape " + dims_text(a.gate_up_weight.dims()) + ", expected (2 * ffn_hidden, " +
                                std::to_string(a.hidden_size) + ") (gate rows, then up rows)");
  a.ffn_hidden = checked_int(a.gate_up_weight.dim(0) / 2, "ffn_hidden");
  a.down_weight.expect_shape({a.hidden_size, a.ffn_hidden}, "(hidden, ffn_hidden)");
  expect_same_elem(a.down_weight, a.hidden);
  a.rms_weight.expect_shape({a.hidden_size}, "(hidden,)");
  expect_same_elem(a.rms_weight, a.hidden);
  const Array* residual_in = a.residual ? &*a.residual : nullptr;
  expect_no_overlap({{&a.output, {&a.hidden, residual_in}}, {&a.residual_output, {&a.hidden, residual_in}}},
                    {&a.hidden, residual_in, &a.gate_up_weight, &a.down_weight, &a.rms_weight});
  return a;
}

struct RmsNormArgs {
  Array output, input, weight;
  std::optional<Array> residual, residual_output;
  float eps = 1e-5f;
  bool cuda = false;
  int device_id = 0;
  Elem dtype = Elem::F16;
  int rows = 0, n = 0;
};

// output = rmsnorm(input [+ residual]) * weight over the last dimension; residual_output (optional) = input +
// residual. input may be 1-D [n] or 2-D [rows, n].
inline RmsNormArgs parse_rms_norm(nb::handle output, nb::handle input, nb::handle weight, float eps,
                                  nb::handle residual, nb::handle residual_output) {
  RmsNormArgs a{to_array(output, "output", true), to_array(input, "input", false), to_array(weight, "weight", false),
                to_optional_array(residual, "residual", false),
                to_optional_array(residual_output, "residual_output", true)};
  a.eps = eps;
  if (!(eps > 0.0f) || !(eps < 1.0f)) throw nb::value_error(("eps: " + std::to_string(eps) + " must be in (0, 1)").c_str());
  a.cuda = a.input.cuda;
  a.device_id = a.input.device_id;
  expect_same_device({&a.input, &a.output, &a.weight, a.residual ? &*a.residual : nullptr,
                      a.residual_output ? &*a.residual_output : nullptr},
                     a.cuda);
  a.input.expect_elem({Elem::F16, Elem::BF16, Elem::F32});
  a.dtype = a.input.elem;
  if (a.input.ndim() != 1 && a.input.ndim() != 2)
    a.input.fail_value("has shape " + dims_text(a.input.dims()) + ", expected (n,) or (rows, n)");
  a.rows = a.input.ndim() == 2 ? checked_int(a.input.dim(0), "rows") : 1;
  a.n = checked_int(a.input.dim(a.input.ndim() - 1), "n");
  if (a.n < 1) a.input.fail_value("the normalised dimension is empty");
  const std::vector<int64_t> shape = a.input.dims();
  a.output.expect_shape(shape, "(the shape of input)");
  expect_same_elem(a.output, a.input);
  a.weight.expect_shape({a.n}, "(n,): the last dimension of input");
  expect_same_elem(a.weight, a.input);
  if (a.residual) {
    a.residual->expect_shape(shape, "(the shape of input)");
    expect_same_elem(*a.residual, a.input);
  }
  if (a.residual_output) {
    if (!a.residual) a.residual_output->fail_value("is given without residual");
    a.residual_output->expect_shape(shape, "(the shape of input)");
    expect_same_elem(*a.residual_output, a.input);
  }
  const Array* residual_in = a.residual ? &*a.residual : nullptr;
  std::vector<Alias> written = {{&a.output, {&a.input, residual_in}}};
  if (a.residual_output) written.push_back({&*a.residual_output, {&a.input, residual_in}});
  expect_no_overlap(written, {&a.input, residual_in, &a.weight});
  return a;
}

}  // namespace cf::py
