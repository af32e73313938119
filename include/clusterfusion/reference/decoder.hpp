// Reference Llama decoder blocks, composed from the ops in ops.hpp and attention.hpp. These are the oracles of the
// fused kernels (docs/attention.md, docs/ffn.md) and, chained, of the backends' full forward pass.
//
// Semantics follow SGLang / ClusterFusion: each block takes the previous block's output and the running residual,
//   residual_out = hidden + residual          (residual == nullptr means residual_out = hidden: the first layer)
//   x            = rmsnorm(residual_out) * norm
// then computes its output from x. The caller adds the last output into the residual before the final norm.
// Everything is fp32 inside; the KV cache is written in its storage type (the only rounding on the way).
#pragma once
#include <cstdint>
#include <vector>

#include "clusterfusion/model/types.hpp"
#include "clusterfusion/reference/attention.hpp"
#include "clusterfusion/reference/ops.hpp"

namespace cf::ref {

// The layer shape (model/types.hpp); its heads as the attention reference takes them.
using cf::DecoderShape;
inline AttentionShape heads_of(const DecoderShape& s) { return {s.n_heads, s.n_kv_heads, s.head_dim}; }

// Weights of the attention block; matrices are [out, in]. Biases are optional (Qwen2-style), null when absent.
template <typename W>
struct AttentionWeights {
  const W* norm = nullptr;  // [hidden]
  const W* wq = nullptr;    // [q_dim, hidden]
  const W* wk = nullptr;    // [kv_dim, hidden]
  const W* wv = nullptr;    // [kv_dim, hidden]
  const W* bq = nullptr;    // [q_dim]
  const W* bk = nullptr;    // [kv_dim]
  const W* bv = nullptr;    // [kv_dim]
  const W* wo = nullptr;    // [hidden, q_dim]
};

template <typename W>
struct FfnWeights {
  const W* norm = nullptr;    // [hidden]
  const W* w_gate = nullptr;  // [ffn_hidden, hidden]
  const W* w_up = nullptr;    // [ffn_hidden, hidden]
  const W* w_down = nullptr;  // [hidden, ffn_hidden]
};

// A paged KV cache of one layer (layout in attention.hpp). kv_indptr / kv_indices / kv_last_page_len describe each
// sequence's cache AFTER this step's append: the new token's k, v go to logical index kv_len - 1.
// A contiguous cache is the special case of one page per sequence of page_size = capacity.
template <typename KV>
struct PagedKv {
  KV* k_pages = nullptr;
  KV* v_pages = nullptr;
  int page_size = 0;
  const int32_t* kv_indptr = nullptr;
  const int32_t* kv_indices = nullptr;
  const int32_t* kv_last_page_len = nullptr;
};

// Decode attention block for `batch` tokens, one per sequence (token b belongs to sequence b of the page table):
//   residual_out = hidden + residual; x = rmsnorm(residual_out) * norm;
//   q, k, v = x Wq^T + bq, x Wk^T + bk, x Wv^T + bv;  RoPE(q, k) at positions[b];  append k, v;
//   a = attention of q over the sequence's cache (scale 1/sqrt(head_dim));  out = a Wo^T
// hidden, residual, residual_out, out: [batch, hidden].
template <typename T, typename W, typename KV, typename Out>
void attention_block(const T* hidden, const T* residual, T* residual_out, Out* out, const AttentionWeights<W>& w,
                     const DecoderShape& s, const int32_t* positions, int batch, const PagedKv<KV>& kv) {
  std::vector<float> x(size_t(s.hidden)), q(size_t(s.q_dim())), k(size_t(s.kv_dim())), v(size_t(s.kv_dim()));
  std::vector<float> attn(size_t(s.q_dim()));
  const int64_t kv_row = s.kv_dim();
  for (int b = 0; b < batch; ++b) {
    const T* hb = hidden + int64_t(b) * s.hidden;
    T* rb = residual_out + int64_t(b) * s.hidden;
    if (residual) {
      add_rmsnorm(hb, residual + int64_t(b) * s.hidden, w.norm, rb, x.data(), s.hidden, s.eps);
    } else {
      for (int i = 0; i < s.hidden; ++i) rb[i] = hb[i];
      rmsnorm(hb, w.norm, x.data(), s.hidden, s.eps);
    }
    matvec(w.wq, x.data(), q.data(), s.q_dim(), s.hidden, w.bq);
    matvec(w.wk, x.data(), k.data(), s.kv_dim(), s.hidden, w.bk);
    matvec(w.wv, x.data(), v.data(), s.kv_dim(), s.hidden, w.bv);
    rope(q.data(), q.data(), s.n_heads, s.head_dim, s.rot_dim, positions[b], s.rope_theta, s.rope_style);
    rope(k.data(), k.data(), s.n_kv_heads, s.head_dim, s.rot_dim, positions[b], s.rope_theta, s.rope_style);

    const int n_pages = kv.kv_indptr[b + 1] - kv.kv_indptr[b];
    const int kv_len = paged_kv_len(n_pages, kv.kv_last_page_len[b], kv.page_size);
    const int32_t* page_ids = kv.kv_indices + kv.kv_indptr[b];
    const int slot_pos = kv_len - 1;
    const int64_t slot = (int64_t(page_ids[slot_pos / kv.page_size]) * kv.page_size + slot_pos % kv.page_size) * kv_row;
    for (int i = 0; i < s.kv_dim(); ++i) {
      kv.k_pages[slot + i] = from_float<KV>(k[size_t(i)]);
      kv.v_pages[slot + i] = from_float<KV>(v[size_t(i)]);
    }
    const int32_t last_len = kv.kv_last_page_len[b];
    const int32_t one_seq_indptr[2] = {0, n_pages};
    decode_attention_paged(q.data(), kv.k_pages, kv.v_pages, attn.data(), 1, one_seq_indptr, page_ids, &last_len,
                           kv.page_size, heads_of(s), default_attention_scale(s.head_dim));
    matvec(w.wo, attn.data(), out + int64_t(b) * s.hidden, s.hidden, s.q_dim());
  }
}

// FFN block for `batch` tokens:
//   residual_out = hidden + residual; x = rmsnorm(residual_out) * norm; out = (silu(x Wg^T) * (x Wu^T)) Wd^T
template <typename T, typename W, typename Out>
void ffn_block(const T* hidden, const T* residual, T* residual_out, Out* out, const FfnWeights<W>& w,
               const DecoderShape& s, int batch) {
  std::vector<float> x(size_t(s.hidden)), gate(size_t(s.ffn_hidden)), up(size_t(s.ffn_hidden)), act(size_t(s.ffn_hidden));
  for (int b = 0; b < batch; ++b) {
    const T* hb = hidden + int64_t(b) * s.hidden;
    T* rb = residual_out + int64_t(b) * s.hidden;
    if (residual) {
      add_rmsnorm(hb, residual + int64_t(b) * s.hidden, w.norm, rb, x.data(), s.hidden, s.eps);
    } else {
      for (int i = 0; i < s.hidden; ++i) rb[i] = hb[i];
      rmsnorm(hb, w.norm, x.data(), s.hidden, s.eps);
    }
    matvec(w.w_gate, x.data(), gate.data(), s.ffn_hidden, s.hidden);
    matvec(w.w_up, x.data(), up.data(), s.ffn_hidden, s.hidden);
    swiglu(gate.data(), up.data(), act.data(), s.ffn_hidden);
    matvec(w.w_down, act.data(), out + int64_t(b) * s.hidden, s.hidden, s.ffn_hidden);
  }
}

// Final norm and LM head for `batch` tokens: residual_out = hidden + residual; logits = rmsnorm(residual_out) Wout^T.
template <typename T, typename W, typename Out>
void lm_head(const T* hidden, const T* residual, const W* norm, const W* w_out, Out* logits, const DecoderShape& s,
             int vocab, int batch) {
  std::vector<float> x(size_t(s.hidden)), sum(size_t(s.hidden));
  for (int b = 0; b < batch; ++b) {
    add_rmsnorm(hidden + int64_t(b) * s.hidden, residual + int64_t(b) * s.hidden, norm, sum.data(), x.data(),
                s.hidden, s.eps);
    matvec(w_out, x.data(), logits + int64_t(b) * vocab, vocab, s.hidden);
  }
}

}  // namespace cf::ref
