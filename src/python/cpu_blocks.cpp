#include "cpu_blocks.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/half.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/kernels/decoder_attention/launch.hpp"
#include "clusterfusion/kernels/ffn/launch.hpp"
#include "clusterfusion/reference/attention.hpp"
#include "clusterfusion/reference/decoder.hpp"
#include "clusterfusion/reference/moe.hpp"
#include "clusterfusion/reference/ops.hpp"
#include "clusterfusion/kernels/mla/launch.hpp"
#include "clusterfusion/kernels/moe/launch.hpp"

namespace cf::py {
namespace {

namespace da = cf::kernels::decoder_attention;
namespace ffn = cf::kernels::ffn;

template <typename F>
void with_storage_type(Elem e, F&& f) {
  switch (e) {
    case Elem::F32: f(float{}); return;
    case Elem::F16: f(cf::half{}); return;
    case Elem::BF16: f(cf::bfloat16{}); return;
    default: break;
  }
  throw InputError(std::string("dtype ") + elem_name(e) + " is not supported (float32, float16 or bfloat16)");
}

template <typename T>
const T* cptr(const Array& a) {
  return static_cast<const T*>(a.data());
}
template <typename T>
T* mptr(const Array& a) {
  return static_cast<T*>(a.data());
}
template <typename T>
const T* cptr(const std::optional<Array>& a) {
  return a ? static_cast<const T*>(a->data()) : nullptr;
}

// The host page table of a call: positions as int32, kv_last_page_len filled in (page_size where not given), and
// every entry checked (cf::InputError naming the sequence and entry).
struct HostPageTable {
  std::vector<int32_t> positions, last_page_len;
};

// Args: DecoderLayerArgs or MlaLayerArgs (the same page-table fields).
template <typename Args>
HostPageTable check_page_table(const Args& a) {
  HostPageTable t;
  t.positions.resize(static_cast<size_t>(a.batch));
  for (int b = 0; b < a.batch; ++b) {
    const int64_t p = a.positions.elem == Elem::I64 ? cptr<int64_t>(a.positions)[b] : cptr<int32_t>(a.positions)[b];
    if (p < 0 || p > int64_t(INT32_MAX) / 2)
      throw InputError("positions[" + std::to_string(b) + "] = " + std::to_string(p) + " outside [0, 2^30)");
    t.positions[size_t(b)] = int32_t(p);
  }
  if (a.kv_last_page_len) {
    const int32_t* last = cptr<int32_t>(a.kv_last_page_len);
    t.last_page_len.assign(last, last + a.batch);
  } else {
    t.last_page_len.assign(size_t(a.batch), a.page_size);
  }
  da::validate_page_table(a.batch, cptr<int32_t>(a.kv_indptr), cptr<int32_t>(a.kv_indices), a.n_indices,
                          t.last_page_len.data(), a.n_pages, a.page_size, t.positions.data(), a.cos_sin_rows);
  return t;
}

// ---- reference ------------------------------------------------------------------------------------------------

// The attention block of cf::ref::attention_block (reference/decoder.hpp), with the seed's fused QKV matrix and
// RoPE from a cos/sin table when one is given. fp32 inside; the KV cache and outputs are stored in T.
template <typename T>
void decoder_layer_reference(const DecoderLayerArgs& a, const HostPageTable& table) {
  const int H = a.hidden_size, qd = a.q_dim(), kvd = a.kv_dim();
  const T* w_qkv = cptr<T>(a.qkv_weight);
  const T* bias = cptr<T>(a.qkv_bias);
  ref::AttentionWeights<T> w;
  w.norm = cptr<T>(a.rms_weight);
  w.wq = w_qkv;
  w.wk = w_qkv + int64_t(qd) * H;
  w.wv = w_qkv + int64_t(qd + kvd) * H;
  w.bq = bias;
  w.bk = bias ? bias + qd : nullptr;
  w.bv = bias ? bias + qd + kvd : nullptr;
  w.wo = cptr<T>(a.o_weight);
  T* k_pages = mptr<T>(a.k_cache);
  T* v_pages = mptr<T>(a.v_cache);
  const int32_t* indptr = cptr<int32_t>(a.kv_indptr);
  const int32_t* indices = cptr<int32_t>(a.kv_indices);
  const ref::AttentionShape shape{a.n_heads, a.n_kv_heads, a.head_dim};
  const float scale = ref::default_attention_scale(a.head_dim);
  const int half_rot = a.rot_dim / 2;

  const size_t hidden_n = size_t(H), q_n = size_t(qd), kv_n = size_t(kvd);
  std::vector<float> x(hidden_n), q(q_n), k(kv_n), v(kv_n), attn(q_n);
  for (int b = 0; b < a.batch; ++b) {
    const T* hb = cptr<T>(a.hidden) + int64_t(b) * H;
    T* rb = mptr<T>(a.residual_output) + int64_t(b) * H;
    if (a.residual) {
      ref::add_rmsnorm(hb, cptr<T>(a.residual) + int64_t(b) * H, w.norm, rb, x.data(), H, a.eps);
    } else {
      ref::rmsnorm(hb, w.norm, x.data(), H, a.eps);
      for (int i = 0; i < H; ++i) rb[i] = hb[i];  // after the norm: rb may alias hb
    }
    ref::matvec(w.wq, x.data(), q.data(), qd, H, w.bq);
    ref::matvec(w.wk, x.data(), k.data(), kvd, H, w.bk);
    ref::matvec(w.wv, x.data(), v.data(), kvd, H, w.bv);
    const int pos = table.positions[size_t(b)];
    if (a.cos_sin) {
      const float* row = cptr<float>(a.cos_sin) + int64_t(pos) * a.rot_dim;
      ref::rope_with_cache(q.data(), q.data(), a.n_heads, a.head_dim, a.rot_dim, row, row + half_rot, a.rope_style);
      ref::rope_with_cache(k.data(), k.data(), a.n_kv_heads, a.head_dim, a.rot_dim, row, row + half_rot,
                           a.rope_style);
    } else {
      ref::rope(q.data(), q.data(), a.n_heads, a.head_dim, a.rot_dim, pos, a.rope_theta, a.rope_style);
      ref::rope(k.data(), k.data(), a.n_kv_heads, a.head_dim, a.rot_dim, pos, a.rope_theta, a.rope_style);
    }
    // Append k, v at the sequence's last position (the page table already counts the new token).
    const int n_seq_pages = indptr[b + 1] - indptr[b];
    const int32_t last = table.last_page_len[size_t(b)];
    const int kv_len = ref::paged_kv_len(n_seq_pages, last, a.page_size);
    const int32_t* page_ids = indices + indptr[b];
    const int slot_pos = kv_len - 1;
    const int64_t slot =
        (int64_t(page_ids[slot_pos / a.page_size]) * a.page_size + slot_pos % a.page_size) * int64_t(kvd);
    for (int i = 0; i < kvd; ++i) {
      k_pages[slot + i] = from_float<T>(k[size_t(i)]);
      v_pages[slot + i] = from_float<T>(v[size_t(i)]);
    }
    const int32_t one_seq[2] = {0, n_seq_pages};
    ref::decode_attention_paged(q.data(), k_pages, v_pages, attn.data(), 1, one_seq, page_ids, &last, a.page_size,
                                shape, scale);
    ref::matvec(w.wo, attn.data(), mptr<T>(a.output) + int64_t(b) * H, H, qd);
  }
}

template <typename T>
void ffn_layer_reference(const FfnLayerArgs& a) {
  ref::DecoderShape s;
  s.hidden = a.hidden_size;
  s.ffn_hidden = a.ffn_hidden;
  s.eps = a.eps;
  ref::FfnWeights<T> w;
  w.norm = cptr<T>(a.rms_weight);
  w.w_gate = cptr<T>(a.gate_up_weight);
  w.w_up = w.w_gate + int64_t(a.ffn_hidden) * a.hidden_size;
  w.w_down = cptr<T>(a.down_weight);
  // Row by row so that outputs may alias the inputs of the same row (as the kernels allow).
  for (int b = 0; b < a.batch; ++b) {
    const int64_t off = int64_t(b) * a.hidden_size;
    ref::ffn_block(cptr<T>(a.hidden) + off, a.residual ? cptr<T>(a.residual) + off : nullptr,
                   mptr<T>(a.residual_output) + off, mptr<T>(a.output) + off, w, s, 1);
  }
}

// ---- emulator ---------------------------------------------------------------------------------------------------

// A copy of a host array in emulated device memory (guard page after its end: out-of-bounds accesses are reported).
class EmuCopy {
 public:
  explicit EmuCopy(const void* src, size_t bytes) : buffer_(bytes) {
    if (bytes) buffer_.upload(static_cast<const uint8_t*>(src), bytes);
  }
  explicit EmuCopy(const Array& a) : EmuCopy(a.data(), a.bytes()) {}
  void* data() const { return buffer_.data(); }
  void copy_to(const Array& a) const {
    if (a.bytes()) buffer_.download(static_cast<uint8_t*>(a.data()), a.bytes());
  }

 private:
  dev::DeviceBuffer<uint8_t> buffer_;
};

dev::DType kernel_dtype(Elem e, const char* what) {
  if (e == Elem::F16) return dev::DType::F16;
  if (e == Elem::BF16) return dev::DType::BF16;
  throw nb::type_error((std::string(what) + ": backend 'emu' runs the fused kernel, which takes float16 or bfloat16 "
                        "arrays (got " + elem_name(e) + "; the reference backend takes float32 too)").c_str());
}

void decoder_layer_emu(const DecoderLayerArgs& a, const HostPageTable& table, const KernelOptions& o) {
  da::PlanConfig cfg;
  cfg.dtype = kernel_dtype(a.dtype, "llama_decoder_layer");
  const EmuCopy hidden(a.hidden), out(a.output), residual_out(a.residual_output), w_qkv(a.qkv_weight),
      w_o(a.o_weight), norm(a.rms_weight), k_pages(a.k_cache), v_pages(a.v_cache), indptr(a.kv_indptr),
      indices(a.kv_indices), last(table.last_page_len.data(), table.last_page_len.size() * sizeof(int32_t)),
      positions(table.positions.data(), table.positions.size() * sizeof(int32_t));
  std::optional<EmuCopy> residual, bias, cos_sin;
  if (a.residual) residual.emplace(*a.residual);
  if (a.qkv_bias) bias.emplace(*a.qkv_bias);
  if (a.cos_sin) cos_sin.emplace(*a.cos_sin);

  cfg.shape.hidden = a.hidden_size;
  cfg.shape.n_heads = a.n_heads;
  cfg.shape.n_kv_heads = a.n_kv_heads;
  cfg.shape.head_dim = a.head_dim;
  cfg.shape.rot_dim = a.rot_dim;
  cfg.shape.rope_style = a.rope_style;
  cfg.shape.rope_theta = a.rope_theta;
  cfg.shape.eps = a.eps;
  cfg.weights.norm = norm.data();
  cfg.weights.w_qkv = w_qkv.data();
  cfg.weights.b_qkv = bias ? bias->data() : nullptr;
  cfg.weights.w_o = w_o.data();
  cfg.cache.k_pages = k_pages.data();
  cfg.cache.v_pages = v_pages.data();
  cfg.cache.n_pages = a.n_pages;
  cfg.cache.page_size = a.page_size;
  if (cos_sin) {
    cfg.rope.cos_sin = static_cast<const float*>(cos_sin->data());
    cfg.rope.max_positions = a.cos_sin_rows;
  }
  cfg.max_batch = o.max_batch > 0 ? o.max_batch : a.batch;
  cfg.cluster_size = o.cluster_size;
  da::Plan plan(cfg);

  da::StepArgs step;
  step.batch = a.batch;
  step.hidden = hidden.data();
  step.residual = residual ? residual->data() : nullptr;
  step.residual_out = residual_out.data();
  step.out = out.data();
  step.positions = static_cast<const int32_t*>(positions.data());
  step.kv_indptr = static_cast<const int32_t*>(indptr.data());
  step.kv_indices = static_cast<const int32_t*>(indices.data());
  step.kv_last_page_len = static_cast<const int32_t*>(last.data());
  step.n_indices = a.n_indices;
  plan.run(step, nullptr, o.emu_seed);
  plan.check_status();
  out.copy_to(a.output);
  residual_out.copy_to(a.residual_output);
  k_pages.copy_to(a.k_cache);
  v_pages.copy_to(a.v_cache);
}

void ffn_layer_emu(const FfnLayerArgs& a, const KernelOptions& o) {
  ffn::PlanConfig cfg;
  cfg.dtype = kernel_dtype(a.dtype, "llama_ffn_layer");
  const EmuCopy hidden(a.hidden), out(a.output), residual_out(a.residual_output), gate_up(a.gate_up_weight),
      down(a.down_weight), norm(a.rms_weight);
  std::optional<EmuCopy> residual;
  if (a.residual) residual.emplace(*a.residual);
  cfg.shape.hidden = a.hidden_size;
  cfg.shape.ffn_hidden = a.ffn_hidden;
  cfg.shape.eps = a.eps;
  cfg.weights.norm = norm.data();
  cfg.weights.set_fused_gate_up(gate_up.data(), cfg.shape, cfg.dtype);
  cfg.weights.w_down = down.data();
  cfg.max_batch = o.max_batch > 0 ? o.max_batch : a.batch;
  cfg.cluster_size = o.cluster_size;
  ffn::Plan plan(cfg);
  ffn::StepArgs step;
  step.batch = a.batch;
  step.hidden = hidden.data();
  step.residual = residual ? residual->data() : nullptr;
  step.residual_out = residual_out.data();
  step.out = out.data();
  plan.run(step, nullptr, o.emu_seed);
  plan.check_status();
  out.copy_to(a.output);
  residual_out.copy_to(a.residual_output);
}

// ---- MLA block (deepseek_decoder_layer) --------------------------------------------------------------------------

// Rotates the adjacent pairs (2i, 2i + 1) of `rope` values at x with a cos_sin table row (cos of the pairs, then sin).
void rotate_pairs(float* x, const float* cos_sin_row, int rope) {
  const float* cos_row = cos_sin_row;
  const float* sin_row = cos_sin_row + rope / 2;
  for (int i = 0; i < rope / 2; ++i) {
    const float a = x[2 * i], b = x[2 * i + 1];
    x[2 * i] = a * cos_row[i] - b * sin_row[i];
    x[2 * i + 1] = a * sin_row[i] + b * cos_row[i];
  }
}

// The absorbed MLA block of docs/mla.md §1 per token: fp32 inside (the reference's functions), the latent row stored
// in T; RoPE from the call's table. The cache rows are an MQA with one "KV head" of r + rope values whose values are
// the rows themselves (the first r outputs of each head are o_latent).
template <typename T>
void mla_layer_reference(const MlaLayerArgs& a, const HostPageTable& table) {
  const int Hd = a.hidden_size, H = a.n_heads, r = a.kv_lora_rank, nope = a.qk_nope, rope = a.qk_rope, v = a.v_head;
  const int qh = a.q_head(), row = a.latent_row();
  const T* norm = cptr<T>(a.rms_weight);
  const T* uk = cptr<T>(a.uk_weight);
  const T* uv = cptr<T>(a.uv_weight);
  T* pages = mptr<T>(a.latent_cache);
  const int32_t* indptr = cptr<int32_t>(a.kv_indptr);
  const int32_t* indices = cptr<int32_t>(a.kv_indices);
  const ref::AttentionShape mqa{H, 1, row};
  std::vector<float> x(static_cast<size_t>(Hd)), q(static_cast<size_t>(H) * qh),
      q_a(static_cast<size_t>(a.q_lora_rank)), latent(static_cast<size_t>(row));
  std::vector<float> q_latent(static_cast<size_t>(H) * row), attn(static_cast<size_t>(H) * row),
      o(static_cast<size_t>(H) * v);
  for (int b = 0; b < a.batch; ++b) {
    const T* hb = cptr<T>(a.hidden) + int64_t(b) * Hd;
    T* rb = mptr<T>(a.residual_output) + int64_t(b) * Hd;
    if (a.residual) {
      ref::add_rmsnorm(hb, cptr<T>(a.residual) + int64_t(b) * Hd, norm, rb, x.data(), Hd, a.eps);
    } else {
      ref::rmsnorm(hb, norm, x.data(), Hd, a.eps);
      for (int i = 0; i < Hd; ++i) rb[i] = hb[i];  // after the norm: rb may alias hb
    }
    if (a.q_weight) {
      ref::matvec(cptr<T>(a.q_weight), x.data(), q.data(), H * qh, Hd);
    } else {
      ref::matvec(cptr<T>(a.q_a_weight), x.data(), q_a.data(), a.q_lora_rank, Hd);
      ref::rmsnorm(q_a.data(), cptr<T>(a.q_a_norm), q_a.data(), a.q_lora_rank, a.eps);
      ref::matvec(cptr<T>(a.q_b_weight), q_a.data(), q.data(), H * qh, a.q_lora_rank);
    }
    ref::matvec(cptr<T>(a.kv_a_weight), x.data(), latent.data(), row, Hd);
    ref::rmsnorm(latent.data(), cptr<T>(a.kv_a_norm), latent.data(), r, a.eps);
    const float* rope_row = cptr<float>(a.cos_sin) + int64_t(table.positions[size_t(b)]) * rope;
    rotate_pairs(latent.data() + r, rope_row, rope);
    for (int h = 0; h < H; ++h) rotate_pairs(q.data() + size_t(h) * qh + nope, rope_row, rope);

    // Append the latent row at the sequence's last position (the page table already counts the new token).
    const int n_seq_pages = indptr[b + 1] - indptr[b];
    const int32_t last = table.last_page_len[size_t(b)];
    const int kv_len = ref::paged_kv_len(n_seq_pages, last, a.page_size);
    const int32_t* page_ids = indices + indptr[b];
    const int slot_pos = kv_len - 1;
    const int64_t slot = (int64_t(page_ids[slot_pos / a.page_size]) * a.page_size + slot_pos % a.page_size) * row;
    for (int i = 0; i < row; ++i) pages[slot + i] = from_float<T>(latent[size_t(i)]);

    // q_latent[h] = [W_UK[h]^T q_nope[h], q_pe[h]]
    for (int h = 0; h < H; ++h) {
      const float* qn = q.data() + size_t(h) * qh;
      float* ql = q_latent.data() + size_t(h) * row;
      for (int c = 0; c < r; ++c) {
        float acc = 0.0f;
        for (int n = 0; n < nope; ++n) acc += to_float(uk[(int64_t(h) * nope + n) * r + c]) * qn[n];
        ql[c] = acc;
      }
      std::copy_n(qn + nope, rope, ql + r);
    }
    const int32_t one_seq[2] = {0, n_seq_pages};
    ref::decode_attention_paged(q_latent.data(), pages, pages, attn.data(), 1, one_seq, page_ids, &last,
                                a.page_size, mqa, a.softmax_scale);
    // o[h] = W_UV[h] o_latent[h]; out = o Wo^T
    for (int h = 0; h < H; ++h)
      for (int j = 0; j < v; ++j) {
        float acc = 0.0f;
        for (int c = 0; c < r; ++c) acc += to_float(uv[(int64_t(h) * v + j) * r + c]) * attn[size_t(h) * row + c];
        o[size_t(h) * v + j] = acc;
      }
    ref::matvec(cptr<T>(a.o_weight), o.data(), mptr<T>(a.output) + int64_t(b) * Hd, Hd, H * v);
  }
}

namespace mla = cf::kernels::mla;

void mla_layer_emu(const MlaLayerArgs& a, const HostPageTable& table, const KernelOptions& o) {
  std::map<const Array*, EmuCopy> copies;  // every array the kernel reads or writes, in emulated device memory
  auto device = [&](const Array& x) -> void* { return copies.try_emplace(&x, x).first->second.data(); };
  const EmuCopy last(table.last_page_len.data(), table.last_page_len.size() * sizeof(int32_t)),
      positions(table.positions.data(), table.positions.size() * sizeof(int32_t));
  mla::Plan plan(mla_plan_config<mla::PlanConfig>(a, kernel_dtype(a.dtype, "deepseek_decoder_layer"), o.max_batch,
                                                  o.cluster_size, device));
  mla::StepArgs step;
  step.batch = a.batch;
  step.hidden = device(a.hidden);
  step.residual = a.residual ? device(*a.residual) : nullptr;
  step.residual_out = device(a.residual_output);
  step.out = device(a.output);
  step.positions = static_cast<const int32_t*>(positions.data());
  step.kv_indptr = static_cast<const int32_t*>(device(a.kv_indptr));
  step.kv_indices = static_cast<const int32_t*>(device(a.kv_indices));
  step.kv_last_page_len = static_cast<const int32_t*>(last.data());
  step.n_indices = a.n_indices;
  plan.run(step, nullptr, o.emu_seed);
  plan.check_status();
  for (const Array* written : {&a.output, &a.residual_output, &a.latent_cache}) copies.at(written).copy_to(*written);
}

// ---- MoE block (deepseek_moe_layer) -----------------------------------------------------------------------------

// cf::ref::moe_ffn per token after the residual add + RMSNorm: the fp32 router, then the shared and chosen experts.
template <typename T>
void moe_layer_reference(const MoeLayerArgs& a) {
  const MoeBlockShape& b = a.shape;
  ref::MoeShape s;
  s.hidden = b.hidden;
  s.n_experts = b.n_experts;
  s.top_k = b.top_k;
  s.expert_ffn = b.expert_ffn;
  s.shared_ffn = b.shared_ffn;
  s.norm_topk_prob = b.norm_topk_prob;
  s.routed_scaling_factor = b.routed_scaling;
  s.method = b.selection == ExpertSelection::GroupLimitedGreedy ? ref::TopkMethod::GroupLimitedGreedy
                                                                 : ref::TopkMethod::Greedy;
  s.n_group = b.n_group;
  s.topk_group = b.topk_group;
  const int64_t H = b.hidden, F = b.expert_ffn;
  std::vector<ref::ExpertWeights<T>> experts(static_cast<size_t>(b.n_experts));
  for (int64_t e = 0; e < b.n_experts; ++e) {
    const T* gate = cptr<T>(a.gate_up_weight) + e * 2 * F * H;
    experts[size_t(e)] = {gate, gate + F * H, cptr<T>(a.down_weight) + e * H * F};
  }
  ref::ExpertWeights<T> shared;
  if (a.shared_gate_up_weight) {
    shared = {cptr<T>(a.shared_gate_up_weight), cptr<T>(a.shared_gate_up_weight) + int64_t(b.shared_ffn) * H,
              cptr<T>(a.shared_down_weight)};
  }
  std::vector<float> x(static_cast<size_t>(H)), acc(static_cast<size_t>(H));
  for (int row = 0; row < a.batch; ++row) {
    const int64_t off = row * H;
    const T* hb = cptr<T>(a.hidden) + off;
    T* rb = mptr<T>(a.residual_output) + off;
    if (a.residual) {
      ref::add_rmsnorm(hb, cptr<T>(a.residual) + off, cptr<T>(a.rms_weight), rb, x.data(), int(H), b.eps);
    } else {
      ref::rmsnorm(hb, cptr<T>(a.rms_weight), x.data(), int(H), b.eps);
      for (int64_t i = 0; i < H; ++i) rb[i] = hb[i];  // after the norm: rb may alias hb
    }
    const ref::Routing r = ref::moe_route(x.data(), cptr<float>(a.router_weight), s);
    std::fill(acc.begin(), acc.end(), 0.0f);
    if (s.shared_ffn > 0) ref::add_expert(x.data(), shared, s.hidden, s.shared_ffn, 1.0f, acc.data());
    for (size_t i = 0; i < r.ids.size(); ++i)
      ref::add_expert(x.data(), experts[size_t(r.ids[i])], s.hidden, s.expert_ffn, r.weights[i], acc.data());
    T* out = mptr<T>(a.output) + off;
    for (int64_t i = 0; i < H; ++i) out[i] = from_float<T>(acc[size_t(i)]);
  }
}

namespace moe = cf::kernels::moe;

void moe_layer_emu(const MoeLayerArgs& a, const KernelOptions& o) {
  std::map<const Array*, EmuCopy> copies;  // every array the kernel reads or writes, in emulated device memory
  auto device = [&](const Array& x) -> void* { return copies.try_emplace(&x, x).first->second.data(); };
  moe::Plan plan(moe_plan_config<moe::PlanConfig>(a, kernel_dtype(a.dtype, "deepseek_moe_layer"), o.max_batch,
                                                  o.cluster_size, device));
  moe::StepArgs step;
  step.batch = a.batch;
  step.hidden = device(a.hidden);
  step.residual = a.residual ? device(*a.residual) : nullptr;
  step.residual_out = device(a.residual_output);
  step.out = device(a.output);
  plan.run(step, nullptr, o.emu_seed);
  plan.check_status();
  for (const Array* written : {&a.output, &a.residual_output}) copies.at(written).copy_to(*written);
}

}  // namespace

void decoder_layer_cpu(const DecoderLayerArgs& a, CpuBackend backend, const KernelOptions& options) {
  const HostPageTable table = check_page_table(a);
  if (backend == CpuBackend::Emu) {
    decoder_layer_emu(a, table, options);
    return;
  }
  with_storage_type(a.dtype, [&](auto t) { decoder_layer_reference<decltype(t)>(a, table); });
}

void ffn_layer_cpu(const FfnLayerArgs& a, CpuBackend backend, const KernelOptions& options) {
  if (backend == CpuBackend::Emu) {
    ffn_layer_emu(a, options);
    return;
  }
  with_storage_type(a.dtype, [&](auto t) { ffn_layer_reference<decltype(t)>(a); });
}

void mla_layer_cpu(const MlaLayerArgs& a, CpuBackend backend, const KernelOptions& options) {
  const HostPageTable table = check_page_table(a);
  if (backend == CpuBackend::Emu) {
    mla_layer_emu(a, table, options);
    return;
  }
  with_storage_type(a.dtype, [&](auto t) { mla_layer_reference<decltype(t)>(a, table); });
}

void moe_layer_cpu(const MoeLayerArgs& a, CpuBackend backend, const KernelOptions& options) {
  if (backend == CpuBackend::Emu) {
    moe_layer_emu(a, options);
    return;
  }
  with_storage_type(a.dtype, [&](auto t) { moe_layer_reference<decltype(t)>(a); });
}

void rms_norm_cpu(const RmsNormArgs& a) {
  with_storage_type(a.dtype, [&](auto t) {
    using T = decltype(t);
    for (int r = 0; r < a.rows; ++r) {
      const int64_t off = int64_t(r) * a.n;
      const T* x = cptr<T>(a.input) + off;
      T* y = mptr<T>(a.output) + off;
      if (a.residual) {
        // residual_output (or a scratch row) receives input + residual; y may alias x.
        std::vector<T> sum_row;
        T* sum = a.residual_output ? mptr<T>(*a.residual_output) + off : (sum_row.resize(size_t(a.n)), sum_row.data());
        std::vector<float> y32(static_cast<size_t>(a.n));
        ref::add_rmsnorm(x, cptr<T>(a.residual) + off, cptr<T>(a.weight), sum, y32.data(), a.n, a.eps);
        for (int i = 0; i < a.n; ++i) y[i] = from_float<T>(y32[size_t(i)]);
      } else {
        std::vector<float> y32(static_cast<size_t>(a.n));
        ref::rmsnorm(x, cptr<T>(a.weight), y32.data(), a.n, a.eps);
        for (int i = 0; i < a.n; ++i) y[i] = from_float<T>(y32[size_t(i)]);
      }
    }
  });
}

}  // namespace cf::py
