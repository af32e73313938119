// Reference multi-head latent attention (MLA, DeepSeek-V2/V3), the math of docs/mla.md: plain functions over arrays,
// no file format behind them. Storage types as in ops.hpp (inputs/weights read as T/W, fp32 arithmetic, outputs through
// from_float<Out>); matrices are [out, in] row-major.
//
// One token at `position`, x = the attention input (already RMS-normed):
//   q        = x Wq^T                   or  rmsnorm(x Wq_a^T) * q_a_norm  Wq_b^T       [n_heads, nope + rope]
//   kv       = x Wkv_a^T                                                            [kv_lora + rope]
//   c_kv     = rmsnorm(kv[:kv_lora]) * kv_a_norm;   k_pe = RoPE(kv[kv_lora:])          (one k_pe shared by all heads)
//   q_pe     = RoPE(q[h][nope:])
// Latent cache row of a token: [c_kv (kv_lora), k_pe (rope)]: kv_lora + rope values, whatever the head count.
// Expanded form (prefill): per head k_nope = W_UK[h] c_kv, v = W_UV[h] c_kv, score = (q_nope.k_nope + q_pe.k_pe)*s.
// Absorbed form (decode): q_lat[h] = W_UK[h]^T q_nope[h] (kv_lora values), score = (q_lat.c_kv + q_pe.k_pe)*s:
//   every head attends over the same cache rows (an MQA of head size kv_lora + rope whose values are c_kv);
//   o_lat[h] = sum_t p[h][t] c_kv[t],  o[h] = W_UV[h] o_lat[h],  out = concat_h o[h] Wo^T.
// RoPE rotates adjacent pairs (2i, 2i+1) of the rope part (the GGUF layout and llama.cpp's; HF's code de-interleaves
// first, which permutes q_pe and k_pe alike and leaves every score unchanged), with YaRN frequencies and magnitude.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>
#include <vector>

#include "clusterfusion/common/half.hpp"
#include "clusterfusion/reference/attention.hpp"  // SoftmaxState
#include "clusterfusion/reference/ops.hpp"

namespace cf::ref {

// ---- YaRN RoPE ---------------------------------------------------------------------------------------------------

// RoPE of the rope part: `dim` dimensions, dim/2 pairs. factor <= 1 means plain RoPE (no YaRN).
struct YarnRope {
  int dim = 0;
  float theta = 10000.0f;
  float factor = 1.0f;               // rope_scaling.factor (context extension)
  int original_context = 4096;       // rope_scaling.original_max_position_embeddings
  float beta_fast = 32.0f;           // pairs rotating more than beta_fast times over original_context: unchanged
  float beta_slow = 1.0f;            // pairs rotating fewer than beta_slow times: frequency / factor
  float mscale = 1.0f;               // rope_scaling.mscale
  float mscale_all_dim = 0.0f;       // rope_scaling.mscale_all_dim (0: absent)

  bool yarn() const { return factor > 1.0f; }
};

// YaRN's magnitude correction 0.1 * mscale * ln(factor) + 1 (1 when factor <= 1).
inline double yarn_get_mscale(double factor, double mscale) {
  return factor <= 1.0 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

// First and last pair of the ramp between original and interpolated frequencies (both clamped to [0, dim-1]).
inline void yarn_correction_range(const YarnRope& r, int& low, int& high) {
  const auto correction_dim = [&](double rotations) {
    return double(r.dim) * std::log(double(r.original_context) / (rotations * 2.0 * std::numbers::pi)) /
           (2.0 * std::log(double(r.theta)));
  };
  low = std::max(int(std::floor(correction_dim(r.beta_fast))), 0);
  high = std::min(int(std::ceil(correction_dim(r.beta_slow))), r.dim - 1);
}

// Inverse frequency of pair i: theta^(-2i/dim), blended towards theta^(-2i/dim) / factor by YaRN's linear ramp.
inline double yarn_inv_freq(const YarnRope& r, int pair) {
  const double original = std::pow(double(r.theta), -2.0 * double(pair) / double(r.dim));
  if (!r.yarn()) return original;
  int low, high;
  yarn_correction_range(r, low, high);
  const double span = high > low ? double(high - low) : 0.001;
  const double interp = std::clamp((double(pair) - low) / span, 0.0, 1.0);
  return original * (1.0 - interp) + original / double(r.factor) * interp;
}

// Factor on cos/sin: mscale(factor, mscale) / mscale(factor, mscale_all_dim) (1 for DeepSeek-V2's configs, where both
// are 0.707; HF applies it, llama.cpp assumes it is 1).
inline double yarn_rope_magnitude(const YarnRope& r) {
  if (!r.yarn()) return 1.0;
  return yarn_get_mscale(r.factor, r.mscale) / yarn_get_mscale(r.factor, r.mscale_all_dim);
}

// cos/sin (times the magnitude) of the dim/2 pairs at `position`; angles in double.
inline void yarn_cos_sin(const YarnRope& r, int position, float* cos_out, float* sin_out) {
  const double magnitude = yarn_rope_magnitude(r);
  for (int i = 0; i < r.dim / 2; ++i) {
    const double angle = double(position) * yarn_inv_freq(r, i);
    cos_out[i] = float(std::cos(angle) * magnitude);
    sin_out[i] = float(std::sin(angle) * magnitude);
  }
}

// The cos/sin table of positions [0, positions): per position the r.dim/2 values of yarn_cos_sin's cos, then its sin
// ([positions, r.dim], the device MLA block's RoPE table); the same values as yarn_cos_sin, frequencies computed once.
inline std::vector<float> yarn_cos_sin_table(const YarnRope& r, int positions) {
  const int pairs = r.dim / 2;
  const double magnitude = yarn_rope_magnitude(r);
  std::vector<double> inv_freq(static_cast<size_t>(pairs));
  for (int i = 0; i < pairs; ++i) inv_freq[size_t(i)] = yarn_inv_freq(r, i);
  std::vector<float> table(size_t(positions) * size_t(r.dim));
  for (int pos = 0; pos < positions; ++pos) {
    float* row = table.data() + size_t(pos) * size_t(r.dim);
    for (int i = 0; i < pairs; ++i) {
      const double angle = double(pos) * inv_freq[size_t(i)];
      row[i] = float(std::cos(angle) * magnitude);
      row[pairs + i] = float(std::sin(angle) * magnitude);
    }
  }
  return table;
}

// Rotates r.dim values at x + h * stride for each of n_vectors vectors, adjacent pairs. y may alias x.
template <typename T, typename Out>
void yarn_rope(const T* x, Out* y, int n_vectors, int64_t stride, int position, const YarnRope& r) {
  std::vector<float> cos_row(size_t(r.dim / 2)), sin_row(size_t(r.dim / 2));
  yarn_cos_sin(r, position, cos_row.data(), sin_row.data());
  for (int h = 0; h < n_vectors; ++h) {
    const T* xh = x + h * stride;
    Out* yh = y + h * stride;
    for (int i = 0; i < r.dim / 2; ++i) {
      const float a = to_float(xh[2 * i]), b = to_float(xh[2 * i + 1]);
      yh[2 * i] = from_float<Out>(a * cos_row[size_t(i)] - b * sin_row[size_t(i)]);
      yh[2 * i + 1] = from_float<Out>(a * sin_row[size_t(i)] + b * cos_row[size_t(i)]);
    }
  }
}

// ---- shapes and weights ------------------------------------------------------------------------------------------

struct MlaShape {
  int hidden = 0;
  int n_heads = 0;
  int q_lora_rank = 0;   // 0: q = x Wq^T (DeepSeek-V2-Lite); else q_a -> RMSNorm -> q_b
  int kv_lora_rank = 0;  // width of the latent c_kv
  int qk_nope = 0;       // per-head query/key dimensions without RoPE
  int v_head = 0;        // per-head value dimension
  float eps = 1e-6f;     // RMSNorm of q_a and of c_kv
  YarnRope rope;         // rope.dim = qk_rope_head_dim

  int qk_rope() const { return rope.dim; }
  int q_head() const { return qk_nope + rope.dim; }
  int latent_row() const { return kv_lora_rank + rope.dim; }  // cache values per token (576 for V2-Lite)
  // 1/sqrt(q_head) times mscale(factor, mscale_all_dim)^2 when YaRN and mscale_all_dim are set (the authors' code and
  // llama.cpp; transformers' own port omits the mscale^2)
  float softmax_scale() const {
    double s = 1.0 / std::sqrt(double(q_head()));
    if (rope.yarn() && rope.mscale_all_dim != 0.0f) {
      const double m = yarn_get_mscale(rope.factor, rope.mscale_all_dim);
      s *= m * m;
    }
    return float(s);
  }
  // "" when the shape can be used, else a one-line reason
  std::string check() const {
    if (hidden <= 0 || n_heads <= 0 || kv_lora_rank <= 0 || qk_nope <= 0 || v_head <= 0 || q_lora_rank < 0)
      return "MLA shape: hidden, heads, kv_lora_rank, qk_nope_head_dim and v_head_dim must be positive";
    if (rope.dim <= 0 || rope.dim % 2) return "MLA shape: qk_rope_head_dim must be positive and even";
    if (rope.theta <= 1.0f) return "MLA shape: rope theta must be > 1";
    if (rope.yarn() && (rope.original_context <= 0 || rope.beta_fast <= 0.0f || rope.beta_slow <= 0.0f))
      return "MLA shape: YaRN needs original_max_position_embeddings, beta_fast and beta_slow > 0";
    return "";
  }
};

// Weights of one MLA layer ([out, in] row-major). The kv_b projection comes in one of two layouts:
//   wkv_b  [n_heads * (nope + v), kv_lora]: per head nope rows (W_UK) then v rows (W_UV) (HF kv_b_proj, old GGUFs'
//          attn_kv_b)
//   wk_b   [n_heads, kv_lora, nope] (W_UK transposed per head) and wv_b [n_heads, v, kv_lora] (GGUF attn_k_b /
//          attn_v_b, as llama.cpp's converter writes them since the split)
template <typename W>
struct MlaWeights {
  const W* wq = nullptr;         // [n_heads * q_head, hidden]          (q_lora_rank == 0)
  const W* wq_a = nullptr;       // [q_lora, hidden]                     (q_lora_rank > 0)
  const W* q_a_norm = nullptr;   // [q_lora]
  const W* wq_b = nullptr;       // [n_heads * q_head, q_lora]
  const W* wkv_a = nullptr;      // [kv_lora + rope, hidden]  (HF kv_a_proj_with_mqa, GGUF attn_kv_a_mqa)
  const W* kv_a_norm = nullptr;  // [kv_lora]
  const W* wkv_b = nullptr;      // see above
  const W* wk_b = nullptr;
  const W* wv_b = nullptr;
  const W* wo = nullptr;         // [hidden, n_heads * v]

  // W_UK[h][n][c] (nope row n, latent column c) and W_UV[h][j][c] in either layout
  float uk(const MlaShape& s, int h, int n, int c) const {
    if (wkv_b) return to_float(wkv_b[(int64_t(h) * (s.qk_nope + s.v_head) + n) * s.kv_lora_rank + c]);
    return to_float(wk_b[(int64_t(h) * s.kv_lora_rank + c) * s.qk_nope + n]);
  }
  float uv(const MlaShape& s, int h, int j, int c) const {
    if (wkv_b) return to_float(wkv_b[(int64_t(h) * (s.qk_nope + s.v_head) + s.qk_nope + j) * s.kv_lora_rank + c]);
    return to_float(wv_b[(int64_t(h) * s.v_head + j) * s.kv_lora_rank + c]);
  }
};

// ---- phases ------------------------------------------------------------------------------------------------------

// q [n_heads, q_head] with RoPE on each head's rope part, and the token's latent cache row [c_kv, k_pe] (roped).
template <typename T, typename W, typename Q, typename KV>
void mla_project(const T* x, const MlaWeights<W>& w, const MlaShape& s, int position, Q* q, KV* latent_row) {
  std::vector<float> qf(size_t(s.n_heads) * s.q_head()), kv(size_t(s.latent_row()));
  if (s.q_lora_rank == 0) {
    matvec(w.wq, x, qf.data(), s.n_heads * s.q_head(), s.hidden);
  } else {
    std::vector<float> qa(size_t(s.q_lora_rank));
    matvec(w.wq_a, x, qa.data(), s.q_lora_rank, s.hidden);
    rmsnorm(qa.data(), w.q_a_norm, qa.data(), s.q_lora_rank, s.eps);
    matvec(w.wq_b, qa.data(), qf.data(), s.n_heads * s.q_head(), s.q_lora_rank);
  }
  yarn_rope(qf.data() + s.qk_nope, qf.data() + s.qk_nope, s.n_heads, s.q_head(), position, s.rope);
  matvec(w.wkv_a, x, kv.data(), s.latent_row(), s.hidden);
  rmsnorm(kv.data(), w.kv_a_norm, kv.data(), s.kv_lora_rank, s.eps);
  yarn_rope(kv.data() + s.kv_lora_rank, kv.data() + s.kv_lora_rank, 1, 0, position, s.rope);
  for (size_t i = 0; i < qf.size(); ++i) q[i] = from_float<Q>(qf[i]);
  for (size_t i = 0; i < kv.size(); ++i) latent_row[i] = from_float<KV>(kv[i]);
}

// The absorbed query of each head, laid out like a cache row: [W_UK[h]^T q_nope[h] (kv_lora), q_pe[h] (rope)].
template <typename Q, typename W, typename Out>
void mla_absorb_query(const Q* q, const MlaWeights<W>& w, const MlaShape& s, Out* q_latent) {
  for (int h = 0; h < s.n_heads; ++h) {
    const Q* qh = q + int64_t(h) * s.q_head();
    Out* out = q_latent + int64_t(h) * s.latent_row();
    for (int c = 0; c < s.kv_lora_rank; ++c) {
      float acc = 0.0f;
      for (int n = 0; n < s.qk_nope; ++n) acc += w.uk(s, h, n, c) * to_float(qh[n]);
      out[c] = from_float<Out>(acc);
    }
    for (int i = 0; i < s.qk_rope(); ++i) out[s.kv_lora_rank + i] = from_float<Out>(to_float(qh[s.qk_nope + i]));
  }
}

// Latent attention of every head's absorbed query over kv_len cache rows (two-pass softmax):
//   o_latent[h] = sum_t softmax_t(q_latent[h] . row_t * scale) * row_t[:kv_lora]
template <typename Q, typename KV, typename Out>
void mla_attention_latent(const Q* q_latent, const KV* cache, int kv_len, const MlaShape& s, Out* o_latent) {
  const int row = s.latent_row();
  const float scale = s.softmax_scale();
  std::vector<float> scores(size_t(kv_len > 0 ? kv_len : 1));
  for (int h = 0; h < s.n_heads; ++h) {
    const Q* qh = q_latent + int64_t(h) * row;
    Out* oh = o_latent + int64_t(h) * s.kv_lora_rank;
    for (int t = 0; t < kv_len; ++t) {
      float dot = 0.0f;
      for (int i = 0; i < row; ++i) dot += to_float(qh[i]) * to_float(cache[int64_t(t) * row + i]);
      scores[size_t(t)] = dot * scale;
    }
    softmax(scores.data(), scores.data(), kv_len);
    for (int c = 0; c < s.kv_lora_rank; ++c) {
      float acc = 0.0f;
      for (int t = 0; t < kv_len; ++t) acc += scores[size_t(t)] * to_float(cache[int64_t(t) * row + c]);
      oh[c] = from_float<Out>(acc);
    }
  }
}

// Online-softmax state of head h over cache rows [begin, end): acc holds the unnormalised sum of c_kv rows, so
// split-KV latent attention is the same merge() as for ordinary attention.
template <typename Q, typename KV>
SoftmaxState mla_attention_state(const Q* q_latent, const KV* cache, int h, int begin, int end, const MlaShape& s) {
  const int row = s.latent_row();
  const Q* qh = q_latent + int64_t(h) * row;
  SoftmaxState state(s.kv_lora_rank);
  for (int t = begin; t < end; ++t) {
    const KV* rt = cache + int64_t(t) * row;
    float dot = 0.0f;
    for (int i = 0; i < row; ++i) dot += to_float(qh[i]) * to_float(rt[i]);
    state.add(dot * s.softmax_scale(), rt);
  }
  return state;
}

// out = concat_h (W_UV[h] o_latent[h]) Wo^T
template <typename T, typename W, typename Out>
void mla_output(const T* o_latent, const MlaWeights<W>& w, const MlaShape& s, Out* out) {
  std::vector<float> o(size_t(s.n_heads) * s.v_head);
  for (int h = 0; h < s.n_heads; ++h)
    for (int j = 0; j < s.v_head; ++j) {
      float acc = 0.0f;
      for (int c = 0; c < s.kv_lora_rank; ++c)
        acc += w.uv(s, h, j, c) * to_float(o_latent[int64_t(h) * s.kv_lora_rank + c]);
      o[size_t(h) * s.v_head + j] = acc;
    }
  matvec(w.wo, o.data(), out, s.hidden, s.n_heads * s.v_head);
}

// ---- whole layer -------------------------------------------------------------------------------------------------

// Decode of one token (absorbed form): writes its latent row to cache[kv_len_before] (rounded to KV) and attends over
// rows 0 .. kv_len_before. cache is [capacity, kv_lora + rope].
template <typename T, typename W, typename KV, typename Out>
void mla_decode(const T* x, const MlaWeights<W>& w, const MlaShape& s, int position, KV* cache, int kv_len_before,
                Out* out) {
  std::vector<float> q(size_t(s.n_heads) * s.q_head()), q_latent(size_t(s.n_heads) * s.latent_row());
  std::vector<float> o_latent(size_t(s.n_heads) * s.kv_lora_rank);
  mla_project(x, w, s, position, q.data(), cache + int64_t(kv_len_before) * s.latent_row());
  mla_absorb_query(q.data(), w, s, q_latent.data());
  mla_attention_latent(q_latent.data(), cache, kv_len_before + 1, s, o_latent.data());
  mla_output(o_latent.data(), w, s, out);
}

// Causal prefill of n_tokens tokens (x [n_tokens, hidden], positions start ..) in the expanded form: per-head keys and
// values are materialised from the latent rows (the rows are written to cache[kv_len_before ..] first, rounded to KV,
// and the keys and values are made from the stored rows, so decode continues from exactly what prefill used).
template <typename T, typename W, typename KV, typename Out>
void mla_prefill_expanded(const T* x, const MlaWeights<W>& w, const MlaShape& s, int start_position, int n_tokens,
                          KV* cache, int kv_len_before, Out* out) {
  const int row = s.latent_row(), nope = s.qk_nope, rope_dim = s.qk_rope();
  const int kv_len = kv_len_before + n_tokens;
  std::vector<float> q(size_t(n_tokens) * s.n_heads * s.q_head());
  for (int t = 0; t < n_tokens; ++t)
    mla_project(x + int64_t(t) * s.hidden, w, s, start_position + t, q.data() + size_t(t) * s.n_heads * s.q_head(),
                cache + int64_t(kv_len_before + t) * row);
  // k_nope[t][h][n] = W_UK[h] c_kv[t],  v[t][h][j] = W_UV[h] c_kv[t]
  std::vector<float> k_nope(size_t(kv_len) * s.n_heads * nope), v(size_t(kv_len) * s.n_heads * s.v_head);
  for (int t = 0; t < kv_len; ++t)
    for (int h = 0; h < s.n_heads; ++h) {
      const KV* c_kv = cache + int64_t(t) * row;
      for (int n = 0; n < nope; ++n) {
        float acc = 0.0f;
        for (int c = 0; c < s.kv_lora_rank; ++c) acc += w.uk(s, h, n, c) * to_float(c_kv[c]);
        k_nope[(size_t(t) * s.n_heads + h) * nope + n] = acc;
      }
      for (int j = 0; j < s.v_head; ++j) {
        float acc = 0.0f;
        for (int c = 0; c < s.kv_lora_rank; ++c) acc += w.uv(s, h, j, c) * to_float(c_kv[c]);
        v[(size_t(t) * s.n_heads + h) * s.v_head + j] = acc;
      }
    }
  const float scale = s.softmax_scale();
  std::vector<float> scores(static_cast<size_t>(kv_len)), o(size_t(s.n_heads) * s.v_head);
  for (int i = 0; i < n_tokens; ++i) {
    const int visible = kv_len_before + i + 1;  // causal: rows 0 .. own row
    for (int h = 0; h < s.n_heads; ++h) {
      const float* qh = q.data() + (size_t(i) * s.n_heads + h) * s.q_head();
      for (int t = 0; t < visible; ++t) {
        const float* kn = k_nope.data() + (size_t(t) * s.n_heads + h) * nope;
        const KV* k_pe = cache + int64_t(t) * row + s.kv_lora_rank;
        float dot = 0.0f;
        for (int n = 0; n < nope; ++n) dot += qh[n] * kn[n];
        for (int r = 0; r < rope_dim; ++r) dot += qh[nope + r] * to_float(k_pe[r]);
        scores[size_t(t)] = dot * scale;
      }
      softmax(scores.data(), scores.data(), visible);
      for (int j = 0; j < s.v_head; ++j) {
        float acc = 0.0f;
        for (int t = 0; t < visible; ++t) acc += scores[size_t(t)] * v[(size_t(t) * s.n_heads + h) * s.v_head + j];
        o[size_t(h) * s.v_head + j] = acc;
      }
    }
    matvec(w.wo, o.data(), out + int64_t(i) * s.hidden, s.hidden, s.n_heads * s.v_head);
  }
}

}  // namespace cf::ref
