#include "device_layout.hpp"

#include <algorithm>
#include <cmath>
#include <thread>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/half.hpp"
#include "clusterfusion/model/deepseek.hpp"
#include "clusterfusion/reference/ops.hpp"

namespace cf::device_layout {

namespace {

// Rows per thread below which a conversion stays on the calling thread.
constexpr int64_t kMinRowsPerThread = 64;

// The MLA kernel's tile of the q_lora and n_heads x v_head widths (kernels/mla: validate_shape).
constexpr int kMlaWidthMultiple = 32;

}  // namespace

Storage choose_storage(const ModelWeights& w) {
  bool all_bf16 = true;
  w.for_each_matrix([&](const WeightEntry& e, const WeightMatrix& m) {
    all_bf16 = all_bf16 && (m.dtype == DType::BF16 || e.slot == WeightSlot::FfnRouter);
  });
  return all_bf16 ? Storage::BF16 : Storage::F16;
}

const char* storage_name(Storage s) { return s == Storage::F16 ? "fp16" : "bf16"; }

uint16_t to_bits(float x, Storage s) { return s == Storage::F16 ? float_to_f16_bits(x) : float_to_bf16_bits(x); }

void convert_rows(const WeightMatrix& m, int64_t first, int64_t count, Storage s, uint16_t* out) {
  CF_CHECK(first >= 0 && count >= 0 && first + count <= m.rows, "convert_rows: rows out of range of " + m.name);
  const int64_t cols = m.cols;
  auto work = [&](int64_t begin, int64_t end) {
    std::vector<float> row(size_t(cols > 0 ? cols : 1));
    for (int64_t r = begin; r < end; ++r) {
      m.dequantize_rows(first + r, 1, row.data());
      uint16_t* dst = out + r * cols;
      for (int64_t i = 0; i < cols; ++i) dst[i] = to_bits(row[size_t(i)], s);
    }
  };
  const int64_t threads =
      std::clamp<int64_t>(count / kMinRowsPerThread, 1, std::max(1u, std::thread::hardware_concurrency()));
  if (threads == 1) {
    work(0, count);
    return;
  }
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work, count * t / threads, count * (t + 1) / threads);
  work(0, count / threads);
  for (auto& t : pool) t.join();
}

std::vector<uint16_t> convert_stacked(const std::vector<const WeightMatrix*>& parts, Storage s) {
  int64_t rows = 0;
  for (const WeightMatrix* m : parts) {
    CF_CHECK(m->cols == parts.front()->cols, "convert_stacked: " + m->name + " has " + std::to_string(m->cols) +
                                                 " columns, " + parts.front()->name + " " +
                                                 std::to_string(parts.front()->cols));
    rows += m->rows;
  }
  std::vector<uint16_t> out(size_t(rows * parts.front()->cols));
  int64_t row = 0;
  for (const WeightMatrix* m : parts) {
    convert_rows(*m, 0, m->rows, s, out.data() + row * m->cols);
    row += m->rows;
  }
  return out;
}

std::vector<uint16_t> convert_vector(const std::vector<float>& v, Storage s) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = to_bits(v[i], s);
  return out;
}

std::vector<uint16_t> convert_qkv_bias(const LayerWeights& l, Storage s) {
  if (l.q_bias.empty()) return {};
  std::vector<float> all(l.q_bias);
  all.insert(all.end(), l.k_bias.begin(), l.k_bias.end());
  all.insert(all.end(), l.v_bias.begin(), l.v_bias.end());
  return convert_vector(all, s);
}

namespace {

std::vector<float> dequantized(const WeightMatrix& m) {
  std::vector<float> out(size_t(m.rows) * size_t(m.cols));
  m.dequantize_rows(0, m.rows, out.data());
  return out;
}

// W_UK [H, nope, r] and W_UV [H, v, r] from kv_b (per head nope rows, then v rows) or from attn_k_b [H, r, nope]
// (W_UK transposed per head) and attn_v_b [H, v, r].
void absorbed_matrices(const LayerWeights& l, const ModelConfig& c, std::vector<float>& uk, std::vector<float>& uv) {
  const size_t heads = size_t(c.n_heads), r = size_t(c.mla.kv_lora_rank), nope = size_t(c.mla.qk_nope),
               v = size_t(c.mla.v_head);
  uk.assign(heads * nope * r, 0.0f);
  if (c.mla.split_kv_b) {
    const std::vector<float> k_b = dequantized(l.attn_k_b);
    for (size_t h = 0; h < heads; ++h)
      for (size_t col = 0; col < r; ++col)
        for (size_t n = 0; n < nope; ++n) uk[(h * nope + n) * r + col] = k_b[(h * r + col) * nope + n];
    uv = dequantized(l.attn_v_b);
    return;
  }
  const std::vector<float> kv_b = dequantized(l.attn_kv_b);
  uv.assign(heads * v * r, 0.0f);
  for (size_t h = 0; h < heads; ++h) {
    const float* head = kv_b.data() + h * (nope + v) * r;
    std::copy_n(head, nope * r, uk.data() + h * nope * r);
    std::copy_n(head + nope * r, v * r, uv.data() + h * v * r);
  }
}

}  // namespace

MlaBlockShape device_mla_shape(const ModelConfig& c) {
  MlaBlockShape s = mla_block_shape(c);
  while ((s.n_heads * s.v_head) % kMlaWidthMultiple != 0) ++s.v_head;
  if (s.q_lora_rank > 0)
    s.q_lora_rank = (s.q_lora_rank + kMlaWidthMultiple - 1) / kMlaWidthMultiple * kMlaWidthMultiple;
  return s;
}

MlaLayer convert_mla_layer(const LayerWeights& l, const ModelConfig& c, Storage s) {
  CF_CHECK(c.is_mla(), "convert_mla_layer: not an MLA model");
  const MlaBlockShape shape = device_mla_shape(c);
  const size_t hidden = size_t(c.hidden), heads = size_t(c.n_heads), r = size_t(c.mla.kv_lora_rank);
  const size_t v = size_t(c.mla.v_head), v_pad = size_t(shape.v_head);
  const size_t q_rows = heads * size_t(c.head_dim);
  MlaLayer m;
  m.norm = convert_vector(l.attn_norm, s);
  if (c.mla.q_lora_rank == 0) {
    m.w_q = convert_stacked({&l.attn_q}, s);
  } else {
    const size_t q_lora = size_t(c.mla.q_lora_rank), q_pad = size_t(shape.q_lora_rank);
    m.w_q_a.assign(q_pad * hidden, 0);  // zero rows past q_lora
    convert_rows(l.attn_q_a, 0, int64_t(q_lora), s, m.w_q_a.data());
    std::vector<float> q_a_norm(q_pad, 0.0f);
    const float norm_scale = float(std::sqrt(double(q_lora) / double(q_pad)));
    for (size_t i = 0; i < q_lora; ++i) q_a_norm[i] = l.q_a_norm[i] * norm_scale;
    m.q_a_norm = convert_vector(q_a_norm, s);
    const std::vector<uint16_t> q_b = convert_stacked({&l.attn_q_b}, s);
    m.w_q_b.assign(q_rows * q_pad, 0);  // zero columns past q_lora
    for (size_t row = 0; row < q_rows; ++row)
      std::copy_n(q_b.data() + row * q_lora, q_lora, m.w_q_b.data() + row * q_pad);
  }
  m.w_kv_a = convert_stacked({&l.attn_kv_a}, s);
  m.kv_a_norm = convert_vector(l.kv_a_norm, s);
  std::vector<float> uk, uv;
  absorbed_matrices(l, c, uk, uv);
  m.w_uk = convert_vector(uk, s);
  std::vector<float> uv_padded(heads * v_pad * r, 0.0f);  // zero rows past v per head
  for (size_t h = 0; h < heads; ++h) std::copy_n(uv.data() + h * v * r, v * r, uv_padded.data() + h * v_pad * r);
  m.w_uv = convert_vector(uv_padded, s);
  const std::vector<uint16_t> w_o = convert_stacked({&l.attn_output}, s);
  m.w_o.assign(hidden * heads * v_pad, 0);  // zero columns past v per head
  for (size_t row = 0; row < hidden; ++row)
    for (size_t h = 0; h < heads; ++h)
      std::copy_n(w_o.data() + (row * heads + h) * v, v, m.w_o.data() + (row * heads + h) * v_pad);
  return m;
}

MoeLayer convert_moe_layer(const LayerWeights& l, const ModelConfig& c, Storage s) {
  CF_CHECK(c.moe.n_experts > 0, "convert_moe_layer: not a mixture-of-experts model");
  const int64_t experts = c.moe.n_experts, ffn = c.moe.expert_ffn, hidden = c.hidden;
  MoeLayer m;
  m.norm = convert_vector(l.ffn_norm, s);
  m.router = dequantized(l.ffn_router);
  m.w_gate_up.resize(size_t(experts * 2 * ffn * hidden));
  for (int64_t e = 0; e < experts; ++e) {
    uint16_t* dst = m.w_gate_up.data() + e * 2 * ffn * hidden;
    convert_rows(l.ffn_gate_exps, e * ffn, ffn, s, dst);
    convert_rows(l.ffn_up_exps, e * ffn, ffn, s, dst + ffn * hidden);
  }
  m.w_down = convert_stacked({&l.ffn_down_exps}, s);
  if (c.moe.shared_ffn() > 0) {
    m.shared_gate_up = convert_stacked({&l.ffn_gate_shexp, &l.ffn_up_shexp}, s);
    m.shared_down = convert_stacked({&l.ffn_down_shexp}, s);
  }
  return m;
}

std::vector<float> rope_table(const ModelConfig& c, int positions) {
  const int rot = c.rope_dim > 0 ? c.rope_dim : c.head_dim;
  if (!c.is_mla()) {
    std::vector<float> table(size_t(positions) * size_t(rot));
    for (int pos = 0; pos < positions; ++pos) {
      float* row = table.data() + size_t(pos) * size_t(rot);
      ref::rope_cos_sin(pos, rot, c.rope_theta, row, row + rot / 2);
    }
    return table;
  }
  return ref::yarn_cos_sin_table(ref::mla_shape(c).rope, positions);
}

ModelWeights rounded_copy(const ModelWeights& w, Storage s) {
  const DType t = s == Storage::F16 ? DType::F16 : DType::BF16;
  auto round_vector = [&](const std::vector<float>& v) {
    std::vector<float> out(v.size());
    for (size_t i = 0; i < v.size(); ++i)
      out[i] = s == Storage::F16 ? f16_bits_to_float(float_to_f16_bits(v[i])) : bf16_bits_to_float(float_to_bf16_bits(v[i]));
    return out;
  };
  ModelWeights r;
  r.config = w.config;
  r.layers.resize(w.layers.size());
  for (const WeightEntry& e : weight_table(w.config)) {
    if (e.form == WeightForm::Vector)
      r.vector(e) = round_vector(w.vector(e));
    else if (e.slot == WeightSlot::FfnRouter)
      r.matrix(e) = convert_matrix(w.matrix(e), DType::F32);  // exactly the fp32 values the device reads
    else if (!w.matrix(e).empty())
      r.matrix(e) = convert_matrix(w.matrix(e), t);
  }
  return r;
}

}  // namespace cf::device_layout
