// The online-softmax state of flash-decoding and its merge, as a ClusterReduce op, so that split-KV attention
// merges its partial results with one reduce:
//
//   using State = prim::SoftmaxState<128>;                 // m, l, acc[128] in fp32 (one record per head)
//   State* states = ...carved from dynamic smem...;        // kHeads records, contiguous
//   ... each CTA fills its states from its KV range ...
//   reduce.all_reduce(reinterpret_cast<float*>(states), kHeads * State::kFloats, prim::SoftmaxMerge<128>{});
//   out = acc[i] / l                                        // identical bits on every rank
//
// A state over scores s_j (already scaled, in the exponent's base: s_j * log2(e) * softmax_scale for exp2) holds
//   m = max_j s_j,  l = sum_j 2^(s_j - m),  acc[i] = sum_j 2^(s_j - m) * v_j[i]
// (base e with SoftmaxMerge<D, false>). An empty state (no scores) is m = -inf, l = 0, acc = 0; merging with it is
// exact. Merge: m = max(ma, mb), a = 2^(ma - m), b = 2^(mb - m), l = la a + lb b, acc = acca a + accb b.
#pragma once
#include <cmath>
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/primitives/collective.hpp"

namespace cf::prim {

// One record: m, l, two padding floats (so acc starts 16-byte aligned), acc[D]. D a multiple of 4.
template <uint32_t D>
struct alignas(16) SoftmaxState {
  static_assert(D % 4 == 0 && D > 0, "SoftmaxState: head dimension must be a positive multiple of 4");
  static constexpr uint32_t kHeadDim = D;
  static constexpr uint32_t kFloats = D + 4;  // floats per record, what ClusterReduce counts
  float m;
  float l;
  float pad[2];
  float acc[D];
};

// ---- the merge rule, written once ------------------------------------------------------------------------------
// Every combination of online-softmax states goes through these: the tile-by-tile update of a running state in
// registers (SoftmaxRunning), the merge of several states in a fixed order (merged_record_element: the warps of an
// attention CTA), the merge of two states (SoftmaxMerge below: the cluster reduce; merge_weights: a state and a
// single score), so every path rounds alike.

// The weight of a state whose maximum is m_old in a merge whose maximum is m_all >= m_old: 2^(m_old - m_all) (e^...
// with kBase2 false). m_all must be finite; m_old = -inf (an empty state) gives 0.
template <bool kBase2 = true>
CF_HOST_DEVICE float softmax_rescale_finite(float m_old, float m_all) {
#if defined(CF_DEVICE_CUDA) && defined(__CUDA_ARCH__)
  return kBase2 ? exp2f(m_old - m_all) : expf(m_old - m_all);
#else
  return kBase2 ? std::exp2(m_old - m_all) : std::exp(m_old - m_all);
#endif
}
// The same for any m_all: an empty state (m_old = -inf) weighs 0, so that -inf - -inf never makes a NaN.
template <bool kBase2 = true>
CF_HOST_DEVICE float softmax_rescale(float m_old, float m_all) {
  return m_old == -INFINITY ? 0.0f : softmax_rescale_finite<kBase2>(m_old, m_all);
}

// The maximum of a merge of `lower` and `higher` and the weights of the two.
struct SoftmaxWeights {
  float m, lower, higher;
};
template <bool kBase2 = true>
CF_HOST_DEVICE SoftmaxWeights merge_weights(float m_lower, float m_higher) {
  const float m = m_higher > m_lower ? m_higher : m_lower;
  return {m, softmax_rescale<kBase2>(m_lower, m), softmax_rescale<kBase2>(m_higher, m)};
}

// A row's running maximum and sum in registers, updated tile by tile. rescale_to(tile_max) moves the state to
// max(m, tile_max), which must be finite (the tile holds a valid score), and returns the factor every accumulator
// of the row is scaled by.
struct SoftmaxRunning {
  float m = -INFINITY;
  float l = 0.0f;
  CF_DEVICE float rescale_to(float tile_max) {
    const float m_new = std::fmax(m, tile_max);
    const float factor = softmax_rescale_finite(m, m_new);  // m = -inf (no tile yet): 0
    m = m_new;
    l *= factor;
    return factor;
  }
};

// Element e of the merge, in record order 0..n-1, of n SoftmaxState<D> records (record(i) points at record i; base
// 2): the merged m at e = 0, 0 at the padding, else the weighted sum of the records' l (e = 1) or acc[e - 4].
template <typename RecordAt>
CF_DEVICE float merged_record_element(int32_t n, RecordAt record, int32_t e) {
  float m_all = -INFINITY;
  for (int32_t i = 0; i < n; ++i) m_all = std::fmax(m_all, record(i)[0]);
  if (e == 0) return m_all;
  if (e == 2 || e == 3) return 0.0f;
  float value = 0.0f;
  for (int32_t i = 0; i < n; ++i) value += record(i)[e] * softmax_rescale(record(i)[0], m_all);
  return value;
}

// The vector op (ops.hpp) merging SoftmaxState<D> records; the reduced buffer is float[records * (D + 4)].
template <uint32_t D, bool kBase2 = true>
struct SoftmaxMerge {
  using Element = float;
  static constexpr uint32_t kRecordFloats = SoftmaxState<D>::kFloats;
  struct Acc {
    float v[4];
    float m, l;   // the record's header, carried through chains of merges
    bool header;  // this vector is the record's (m, l, pad, pad)
  };
  CF_DEVICE static Acc load(const float* block, uint32_t e0) {
    const uint32_t record = e0 / kRecordFloats * kRecordFloats;
    Acc a;
    const dev::U32x4 raw = dev::load16(block + e0);
    a.v[0] = __builtin_bit_cast(float, raw.x);
    a.v[1] = __builtin_bit_cast(float, raw.y);
    a.v[2] = __builtin_bit_cast(float, raw.z);
    a.v[3] = __builtin_bit_cast(float, raw.w);
    a.header = e0 == record;
    a.m = a.header ? a.v[0] : block[record];
    a.l = a.header ? a.v[1] : block[record + 1];
    return a;
  }
  CF_DEVICE static void combine(Acc& lower, const Acc& higher) {
    const SoftmaxWeights w = merge_weights<kBase2>(lower.m, higher.m);
    const float l = lower.l * w.lower + higher.l * w.higher;
    if (lower.header) {
      lower.v[0] = w.m;
      lower.v[1] = l;
      lower.v[2] = 0.0f;
      lower.v[3] = 0.0f;
    } else {
      CF_UNROLL
      for (uint32_t i = 0; i < 4; ++i) lower.v[i] = lower.v[i] * w.lower + higher.v[i] * w.higher;
    }
    lower.m = w.m;
    lower.l = l;
  }
  CF_DEVICE static void store(float* dst, uint32_t e0, uint32_t n, const Acc& a) {
    if (n == 4 && detail::aligned16(dst + e0)) {
      dev::store16(dst + e0, {__builtin_bit_cast(uint32_t, a.v[0]), __builtin_bit_cast(uint32_t, a.v[1]),
                              __builtin_bit_cast(uint32_t, a.v[2]), __builtin_bit_cast(uint32_t, a.v[3])});
      return;
    }
    for (uint32_t i = 0; i < n; ++i) dst[e0 + i] = a.v[i];
  }
};

}  // namespace cf::prim
