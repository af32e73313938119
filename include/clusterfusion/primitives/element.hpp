// The 16-bit element types on the device (dev::f16, dev::bf16): their pair type, their tensor-core MMA, and the
// conversions every layer above uses (collectives, pipeline, kernels), written once. Both builds.
//
//   prim::Half<T>::mma(acc, a, b)        acc += A B (m16n8k16, fp32 accumulate) with A, B in T
//   prim::pack2<T>(lo, hi) -> uint32_t   two floats rounded to T, lo in the low half
//   prim::unpack2<T>(bits) -> Float2     the reverse
//   prim::load_elem<T>(p) / store_elem<T>(p, f)   one element at any 2-byte aligned address, as float
//   prim::as_float(bits) / as_bits(f)    fp32 <-> its bits
#pragma once
#include <cstdint>

#include "clusterfusion/device/api.hpp"

namespace cf::prim {
namespace dev = cf::dev;

template <typename T>
struct Half;
template <>
struct Half<dev::f16> {
  using Pair = dev::f16x2;
  static CF_DEVICE void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    dev::mma_m16n8k16_f16(d, a, b, d);
  }
};
template <>
struct Half<dev::bf16> {
  using Pair = dev::bf16x2;
  static CF_DEVICE void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    dev::mma_m16n8k16_bf16(d, a, b, d);
  }
};

template <typename T>
CF_DEVICE uint32_t pack2(float lo, float hi) {
  return dev::to_bits(dev::from_float2<typename Half<T>::Pair>(lo, hi));
}
template <typename T>
CF_DEVICE dev::Float2 unpack2(uint32_t bits) {
  return dev::to_float2(dev::from_bits<typename Half<T>::Pair>(bits));
}

template <typename T>
CF_DEVICE float load_elem(const void* p) {
  T v;
  __builtin_memcpy(static_cast<void*>(&v), p, sizeof(T));
  return dev::to_float(v);
}
template <typename T>
CF_DEVICE void store_elem(void* p, float f) {
  const T v = dev::from_float<T>(f);
  __builtin_memcpy(p, static_cast<const void*>(&v), sizeof(T));
}

CF_DEVICE float as_float(uint32_t bits) {
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}
CF_DEVICE uint32_t as_bits(float f) {
  uint32_t bits;
  __builtin_memcpy(&bits, &f, 4);
  return bits;
}
CF_DEVICE uint32_t load_u32(const void* p) {
  uint32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
}

}  // namespace cf::prim
