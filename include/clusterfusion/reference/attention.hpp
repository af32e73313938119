// Reference decode attention: one query token per sequence attends over that sequence's KV cache, with grouped-query
// attention (GQA), in the plain two-pass form (scores, softmax, weighted sum of V). Also the online-softmax state
// (m, l, acc) and its merge, which turns split-KV attention into a reduction (flash-decoding).
//
// Layouts (row-major, outermost first):
//   q, out                 [n_heads, head_dim] per query token
//   contiguous KV cache    k, v: [kv_len, n_kv_heads, head_dim]
//   paged KV cache         k_pages, v_pages: [n_pages, page_size, n_kv_heads, head_dim]; sequence b owns pages
//                          kv_indices[kv_indptr[b] .. kv_indptr[b+1]) in order, the last one filled to
//                          kv_last_page_len[b] entries (FlashInfer's convention)
// Query head h reads KV head h / (n_heads / n_kv_heads). Scores are scaled by 1/sqrt(head_dim) unless told.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "clusterfusion/common/half.hpp"

namespace cf::ref {

inline float default_attention_scale(int head_dim) { return 1.0f / std::sqrt(float(head_dim)); }

// Online-softmax state of one head over a subset of the KV positions:
//   m   = max score seen,  l = sum of exp(score - m),  acc = sum of exp(score - m) * v   (unnormalised)
// The empty state has m = -inf, l = 0, acc = 0. Merging is associative and commutative up to rounding.
struct SoftmaxState {
  float m = -std::numeric_limits<float>::infinity();
  float l = 0.0f;
  std::vector<float> acc;

  SoftmaxState() = default;
  explicit SoftmaxState(int head_dim) : acc(size_t(head_dim), 0.0f) {}

  bool empty() const { return l == 0.0f; }

  // Adds one KV position with its (already scaled) score and value row.
  template <typename T>
  void add(float score, const T* v) {
    const float new_m = std::fmax(m, score);
    const float old_weight = std::exp(m - new_m);  // exp(-inf) = 0 for the empty state
    const float new_weight = std::exp(score - new_m);
    l = l * old_weight + new_weight;
    for (size_t d = 0; d < acc.size(); ++d) acc[d] = acc[d] * old_weight + new_weight * to_float(v[d]);
    m = new_m;
  }

  // The attention output acc / l (zeros for the empty state).
  template <typename Out>
  void finish(Out* out) const {
    for (size_t d = 0; d < acc.size(); ++d) out[d] = from_float<Out>(empty() ? 0.0f : acc[d] / l);
  }
};

// Combines the states of two disjoint subsets of KV positions into the state of their union.
inline SoftmaxState merge(const SoftmaxState& a, const SoftmaxState& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  SoftmaxState out(int(a.acc.size()));
  out.m = std::fmax(a.m, b.m);
  const float wa = std::exp(a.m - out.m), wb = std::exp(b.m - out.m);
  out.l = a.l * wa + b.l * wb;
  for (size_t d = 0; d < out.acc.size(); ++d) out.acc[d] = a.acc[d] * wa + b.acc[d] * wb;
  return out;
}

// Shapes of one attention call.
struct AttentionShape {
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int group() const { return n_heads / n_kv_heads; }  // query heads per KV head
};

// Decode attention of one query token over a contiguous cache of kv_len positions (two-pass softmax).
template <typename T, typename KV, typename Out>
void decode_attention(const T* q, const KV* k, const KV* v, Out* out, int kv_len, const AttentionShape& shape,
                      float scale) {
  const int hd = shape.head_dim;
  const int64_t kv_row = int64_t(shape.n_kv_heads) * hd;  // elements per cached position
  std::vector<float> scores(size_t(kv_len > 0 ? kv_len : 1));
  for (int h = 0; h < shape.n_heads; ++h) {
    const int kv_head = h / shape.group();
    const T* qh = q + int64_t(h) * hd;
    Out* oh = out + int64_t(h) * hd;
    if (kv_len == 0) {
      for (int d = 0; d < hd; ++d) oh[d] = from_float<Out>(0.0f);
      continue;
    }
    float max_score = -std::numeric_limits<float>::infinity();
    for (int t = 0; t < kv_len; ++t) {
      const KV* kt = k + t * kv_row + int64_t(kv_head) * hd;
      float dot = 0.0f;
      for (int d = 0; d < hd; ++d) dot += to_float(qh[d]) * to_float(kt[d]);
      scores[size_t(t)] = dot * scale;
      max_score = std::fmax(max_score, scores[size_t(t)]);
    }
    float sum = 0.0f;
    for (int t = 0; t < kv_len; ++t) {
      scores[size_t(t)] = std::exp(scores[size_t(t)] - max_score);
      sum += scores[size_t(t)];
    }
    for (int d = 0; d < hd; ++d) {
      float acc = 0.0f;
      for (int t = 0; t < kv_len; ++t) acc += scores[size_t(t)] * to_float(v[t * kv_row + int64_t(kv_head) * hd + d]);
      oh[d] = from_float<Out>(acc / sum);
    }
  }
}

// Online-softmax state of query head `head` over KV positions [begin, end) of a contiguous cache.
template <typename T, typename KV>
SoftmaxState attention_state(const T* q, const KV* k, const KV* v, int head, int begin, int end,
                             const AttentionShape& shape, float scale) {
  const int hd = shape.head_dim;
  const int64_t kv_row = int64_t(shape.n_kv_heads) * hd;
  const int kv_head = head / shape.group();
  const T* qh = q + int64_t(head) * hd;
  SoftmaxState state(hd);
  for (int t = begin; t < end; ++t) {
    const KV* kt = k + t * kv_row + int64_t(kv_head) * hd;
    float dot = 0.0f;
    for (int d = 0; d < hd; ++d) dot += to_float(qh[d]) * to_float(kt[d]);
    state.add(dot * scale, v + t * kv_row + int64_t(kv_head) * hd);
  }
  return state;
}

// Split-KV (flash-decoding) form: the cache is cut into n_splits nearly equal chunks, each gives a SoftmaxState, and
// the states are merged left to right. Equal to decode_attention up to rounding.
template <typename T, typename KV, typename Out>
void decode_attention_split(const T* q, const KV* k, const KV* v, Out* out, int kv_len, const AttentionShape& shape,
                            float scale, int n_splits) {
  for (int h = 0; h < shape.n_heads; ++h) {
    SoftmaxState total(shape.head_dim);
    for (int s = 0; s < n_splits; ++s) {
      const int begin = int(int64_t(kv_len) * s / n_splits), end = int(int64_t(kv_len) * (s + 1) / n_splits);
      total = merge(total, attention_state(q, k, v, h, begin, end, shape, scale));
    }
    total.finish(out + int64_t(h) * shape.head_dim);
  }
}

// Number of cached positions of a paged sequence.
inline int paged_kv_len(int n_pages_of_seq, int last_page_len, int page_size) {
  return n_pages_of_seq == 0 ? 0 : (n_pages_of_seq - 1) * page_size + last_page_len;
}

// Copies the KV of one paged sequence into a contiguous [kv_len, n_kv_heads, head_dim] buffer (as float).
template <typename KV>
std::vector<float> gather_paged_kv(const KV* pages, const int32_t* page_ids, int kv_len, int page_size,
                                   int n_kv_heads, int head_dim) {
  const int64_t kv_row = int64_t(n_kv_heads) * head_dim;
  std::vector<float> out(size_t(int64_t(kv_len) * kv_row));
  for (int t = 0; t < kv_len; ++t) {
    const KV* src = pages + (int64_t(page_ids[t / page_size]) * page_size + t % page_size) * kv_row;
    for (int64_t e = 0; e < kv_row; ++e) out[size_t(t * kv_row + e)] = to_float(src[e]);
  }
  return out;
}

// Batched decode attention over a paged cache: q and out are [batch, n_heads, head_dim].
template <typename T, typename KV, typename Out>
void decode_attention_paged(const T* q, const KV* k_pages, const KV* v_pages, Out* out, int batch,
                            const int32_t* kv_indptr, const int32_t* kv_indices, const int32_t* kv_last_page_len,
                            int page_size, const AttentionShape& shape, float scale) {
  const int64_t q_stride = int64_t(shape.n_heads) * shape.head_dim;
  for (int b = 0; b < batch; ++b) {
    const int n_pages = kv_indptr[b + 1] - kv_indptr[b];
    const int kv_len = paged_kv_len(n_pages, kv_last_page_len[b], page_size);
    const int32_t* page_ids = kv_indices + kv_indptr[b];
    const std::vector<float> k = gather_paged_kv(k_pages, page_ids, kv_len, page_size, shape.n_kv_heads, shape.head_dim);
    const std::vector<float> v = gather_paged_kv(v_pages, page_ids, kv_len, page_size, shape.n_kv_heads, shape.head_dim);
    decode_attention(q + b * q_stride, k.data(), v.data(), out + b * q_stride, kv_len, shape, scale);
  }
}

}  // namespace cf::ref
