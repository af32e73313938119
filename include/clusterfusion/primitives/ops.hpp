// Reduction operators for ClusterReduce (cluster_reduce.hpp).
//
// Two kinds of Op, both stateless structs passed as a template argument (an object of the type may be passed too):
//
// 1. Elementwise ops: every element combined on its own, in fp32 (elements fp32/fp16/bf16 are widened, combined,
//    and rounded back to the element type when stored):
//      struct MyOp {
//        CF_HOST_DEVICE static float identity();                        // e where combine(e, x) == x
//        CF_HOST_DEVICE static float combine(float lower, float higher); // `lower` comes from the lower ranks
//      };
//    Sum, Max, Min below are such ops. combine need not be commutative or associative in floating point: the
//    collective fixes which operand comes from which ranks (see docs/collectives.md), so results are bit-identical
//    on every rank and every run.
//
// 2. Vector ops, for records wider than one element (e.g. SoftmaxMerge in softmax_state.hpp). They see one 16-byte
//    vector of a block at a time, plus whatever else of the block they load (a record header):
//      struct MyVectorOp {
//        using Element = float;                                          // the only element type it accepts
//        struct Acc { ... };                                             // registers for one vector
//        CF_DEVICE static Acc load(const Element* block, uint32_t e0);   // vector at element e0 (16-byte aligned,
//                                                                        // whole vector readable; block may be DSMEM)
//        CF_DEVICE static void combine(Acc& lower, const Acc& higher);   // lower = lower (+) higher
//        CF_DEVICE static void store(Element* dst, uint32_t e0, uint32_t n, const Acc& acc);  // first n elements
//      };
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/primitives/collective.hpp"

namespace cf::prim {

struct Sum {
  CF_HOST_DEVICE static float identity() { return 0.0f; }
  CF_HOST_DEVICE static float combine(float lower, float higher) { return lower + higher; }
};

// Max/Min with a fixed rule for ties and NaN (a NaN in `lower` wins, a NaN in `higher` loses), so host references
// and both builds agree bit for bit, signed zeros included.
struct Max {
  CF_HOST_DEVICE static float identity() { return -INFINITY; }
  CF_HOST_DEVICE static float combine(float lower, float higher) { return higher > lower ? higher : lower; }
};
struct Min {
  CF_HOST_DEVICE static float identity() { return INFINITY; }
  CF_HOST_DEVICE static float combine(float lower, float higher) { return higher < lower ? higher : lower; }
};

template <typename Op>
concept VectorOp = requires { typename Op::Acc; typename Op::Element; };

namespace detail {

// Unpacks/packs 16 bytes of T as floats.
template <typename T>
struct Vec16 {
  static constexpr uint32_t kElems = kVectorBytes / sizeof(T);
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, dev::f16> || std::is_same_v<T, dev::bf16>,
                "cluster collectives: element type must be float, dev::f16 or dev::bf16");
  using Pair = std::conditional_t<std::is_same_v<T, dev::f16>, dev::f16x2, dev::bf16x2>;

  CF_DEVICE static void unpack(const dev::U32x4& raw, float (&out)[kElems]) {
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
    if constexpr (std::is_same_v<T, float>) {
      CF_UNROLL
      for (uint32_t i = 0; i < 4; ++i) out[i] = __builtin_bit_cast(float, words[i]);
    } else {
      CF_UNROLL
      for (uint32_t i = 0; i < 4; ++i) {
        const dev::Float2 f = dev::to_float2(dev::from_bits<Pair>(words[i]));
        out[2 * i] = f.x;
        out[2 * i + 1] = f.y;
      }
    }
  }
  CF_DEVICE static dev::U32x4 pack(const float (&in)[kElems]) {
    uint32_t words[4];
    if constexpr (std::is_same_v<T, float>) {
      CF_UNROLL
      for (uint32_t i = 0; i < 4; ++i) words[i] = __builtin_bit_cast(uint32_t, in[i]);
    } else {
      CF_UNROLL
      for (uint32_t i = 0; i < 4; ++i) words[i] = dev::to_bits(dev::from_float2<Pair>(in[2 * i], in[2 * i + 1]));
    }
    return {words[0], words[1], words[2], words[3]};
  }
};

// The vector interface the collectives use, for both kinds of Op.
template <typename Op, typename T>
struct Combiner {  // elementwise op
  static constexpr uint32_t kElems = Vec16<T>::kElems;
  struct Acc {
    float v[kElems];
  };
  CF_DEVICE static Acc load(const T* block, uint32_t e0) {
    Acc a;
    Vec16<T>::unpack(dev::load16(block + e0), a.v);
    return a;
  }
  CF_DEVICE static void combine(Acc& lower, const Acc& higher) {
    CF_UNROLL
    for (uint32_t i = 0; i < kElems; ++i) lower.v[i] = Op::combine(lower.v[i], higher.v[i]);
  }
  CF_DEVICE static void store(T* dst, uint32_t e0, uint32_t n, const Acc& a) {
    if (n == kElems && aligned16(dst + e0)) {
      dev::store16(dst + e0, Vec16<T>::pack(a.v));
      return;
    }
    for (uint32_t i = 0; i < n; ++i) dst[e0 + i] = dev::from_float<T>(a.v[i]);
  }
};

template <VectorOp Op, typename T>
struct Combiner<Op, T> : Op {
  static_assert(std::is_same_v<typename Op::Element, T>, "this vector op does not take that element type");
  static constexpr uint32_t kElems = kVectorBytes / sizeof(T);
};

}  // namespace detail
}  // namespace cf::prim
