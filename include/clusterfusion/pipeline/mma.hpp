// Tensor-core fragments with named layouts: mma.sync.m16n8k16, fp32 accumulate (device API, api.hpp). Lane (g, t) =
// (lane / 4, lane % 4) of a warp. Both builds.
//
// K32 (the "k-permuted" pair of k16 steps): a 16 x 32 (rows x k) slice of a row-major matrix as the A operands of
// two MMAs, and a 32 x 8 slice as the B operands, with the k index permuted identically in A and B so that every
// lane loads 16 contiguous bytes per row: lane (g, t) holds k = 8t .. 8t + 7 of A rows g and g + 8 and of B column g;
// step 0 takes k = 8t .. 8t + 3, step 1 k = 8t + 4 .. 8t + 7. The sum over the 32 k is the same as unpermuted.
//   AFragK32 a = load_a_k32<TW, TA>(row_g, pitch);     row_g: row g of the 16-row tile at the lane's 8 columns
//   BFragK32 b = b_k32(dev::load16(col_g));            col_g: the B column (an activation row) at the same 8 k
//   mma_k32<TA>(acc, a, b);                            acc[4] += A B over the 32 k
// Accumulator (C, D: 16 x 8): lane (g, t) holds rows g (c0, c1) and g + 8 (c2, c3) at columns 2t, 2t + 1;
// for_each_accumulator visits them.
//
// Element types: the weights TW are the A operand, the activations TA the B operand. Today both are the same 16-bit
// type (the MMA takes one); an FP8 weight type is a conversion of the A registers inside load_a_k32 (a new
// specialisation), nothing else of a kernel changes.
#pragma once
#include <cstdint>
#include <type_traits>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/primitives/element.hpp"

namespace cf::pipeline {
namespace dev = cf::dev;

// The shape of one mma.sync.m16n8k16: a tile of kMmaM rows (weight rows, or query heads) x kMmaN columns (tokens,
// or K/V positions), kMmaK deep.
inline constexpr int kMmaM = 16, kMmaN = 8, kMmaK = 16;

struct AFragK32 {
  uint32_t k0[4], k1[4];
};
struct BFragK32 {
  uint32_t k0[2], k1[2];
};

// The A operands of a 16 x 32 slice: row_g points at row g of the tile, at this lane's 8 columns (8t ..).
template <typename TW, typename TA>
CF_DEVICE AFragK32 load_a_k32(const uint8_t* row_g, uint32_t pitch) {
  static_assert(std::is_same_v<TW, TA>, "weights and activations of one 16-bit type (FP8 weights: convert here)");
  const dev::U32x4 lo = dev::load16(row_g);
  const dev::U32x4 hi = dev::load16(row_g + 8 * pitch);
  return {{lo.x, hi.x, lo.y, hi.y}, {lo.z, hi.z, lo.w, hi.w}};
}
// The same from registers already loaded (rows g and g + 8), e.g. q fragments.
CF_DEVICE AFragK32 a_k32(const dev::U32x4& lo, const dev::U32x4& hi) {
  return {{lo.x, hi.x, lo.y, hi.y}, {lo.z, hi.z, lo.w, hi.w}};
}
// The B operands of a 32 x 8 slice from the 16 bytes lane (g, t) loaded (column g, k = 8t .. 8t + 7).
CF_DEVICE BFragK32 b_k32(const dev::U32x4& v) { return {{v.x, v.y}, {v.z, v.w}}; }

template <typename T>
CF_DEVICE void mma_k32(float (&acc)[4], const AFragK32& a, const BFragK32& b) {
  prim::Half<T>::mma(acc, a.k0, b.k0);
  prim::Half<T>::mma(acc, a.k1, b.k1);
}

// f(row, col, value) for the four accumulators of lane (g, t): rows g, g + 8 of the tile, columns 2t, 2t + 1.
template <typename F>
CF_DEVICE void for_each_accumulator(const float (&acc)[4], uint32_t lane, F&& f) {
  const int32_t g = int32_t(lane / 4), t = int32_t(lane % 4);
  CF_UNROLL
  for (int h = 0; h < 2; ++h) {
    CF_UNROLL
    for (int c = 0; c < 2; ++c) f(g + 8 * h, 2 * t + c, acc[2 * h + c]);
  }
}

}  // namespace cf::pipeline
