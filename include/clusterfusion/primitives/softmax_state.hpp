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

namespace detail {
// 2^(m_old - m_new) (or e^...), 0 for an empty state (m_old = -inf) so that -inf - -inf never makes a NaN.
template <bool kBase2>
CF_HOST_DEVICE float softmax_rescale(float m_old, float m_new) {
  if (m_old == -INFINITY) return 0.0f;
#if defined(CF_DEVICE_CUDA) && defined(__CUDA_ARCH__)
  return kBase2 ? exp2f(m_old - m_new) : expf(m_old - m_new);
#else
  return kBase2 ? std::exp2(m_old - m_new) : std::exp(m_old - m_new);
#endif
}
}  // namespace detail

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
    const float m = higher.m > lower.m ? higher.m : lower.m;
    const float sa = detail::softmax_rescale<kBase2>(lower.m, m);
    const float sb = detail::softmax_rescale<kBase2>(higher.m, m);
    const float l = lower.l * sa + higher.l * sb;
    if (lower.header) {
      lower.v[0] = m;
      lower.v[1] = l;
      lower.v[2] = 0.0f;
      lower.v[3] = 0.0f;
    } else {
      CF_UNROLL
      for (uint32_t i = 0; i < 4; ++i) lower.v[i] = lower.v[i] * sa + higher.v[i] * sb;
    }
    lower.m = m;
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
