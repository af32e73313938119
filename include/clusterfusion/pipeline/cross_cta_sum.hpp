// The cross-CTA sum without float atomics (deterministic): CTAs that each hold a partial of the same output block
// (the attention block's KV-head groups, the FFN's clusters, the LM head's vocabulary slices) store their partials
// in a global workspace, then arrive on the block's u32 counter; the CTA whose arrival completes the block (the last
// arriver) reads every partial and combines them in a fixed order, so the bits do not depend on who came last.
//
//   if (arrive_last(counter, n_partials)) { ... sum_slices_chunk(...) over the slices, in order ... }
#pragma once
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/primitives/element.hpp"

namespace cf::pipeline {

// One thread per block: a release fence (the partials this CTA stored before, visible GPU-wide), the counter
// increment, and, for the last of `arrivals` arrivers, the counter's reset for the next launch and an acquire fence
// (the other CTAs' partials). True for the last arriver.
CF_DEVICE bool arrive_last(uint32_t* counter, uint32_t arrivals) {
  dev::threadfence();
  const uint32_t before = dev::atomic_add(counter, 1u);
  const bool last = before == arrivals - 1;
  if (last) {
    (void)dev::atomic_exch(counter, 0u);
    dev::threadfence();
  }
  return last;
}

// Slices summed per step: all their loads are in flight at once (the sum's latency is a few round trips).
inline constexpr int kSlicesPerChunk = 8;

// How the last arriver reads the partials. Cached: plain 16-byte loads (the CTA never read those lines before in
// this launch). Fresh: volatile loads, which neither allocate in nor hit the SM's L1 (a CTA that sums several
// blocks may hold a line of a neighbouring block's partials from before another CTA's store).
enum class PartialLoads { Cached, Fresh };

CF_DEVICE dev::U32x4 load16_fresh(const void* p) {
  const volatile uint32_t* v = static_cast<const volatile uint32_t*>(p);
  return {v[0], v[1], v[2], v[3]};
}

// The 4 floats at `at` of slices first .. first + kSlicesPerChunk - 1 (those < n_slices), slice s at at + s * stride
// floats, summed in slice order.
template <PartialLoads kLoads>
CF_DEVICE void sum_slices_chunk(const float* at, uint32_t stride, int32_t first, int32_t n_slices, float (&sum)[4]) {
  dev::U32x4 q[kSlicesPerChunk];
  CF_UNROLL
  for (int k = 0; k < kSlicesPerChunk; ++k) {
    const int32_t s = first + k;
    if (s < n_slices) {
      const float* p = at + uint32_t(s) * stride;
      q[k] = kLoads == PartialLoads::Fresh ? load16_fresh(p) : dev::load16(p);
    }
  }
  sum[0] = sum[1] = sum[2] = sum[3] = 0.0f;
  CF_UNROLL
  for (int k = 0; k < kSlicesPerChunk; ++k) {
    if (first + k < n_slices) {
      sum[0] += prim::as_float(q[k].x), sum[1] += prim::as_float(q[k].y);
      sum[2] += prim::as_float(q[k].z), sum[3] += prim::as_float(q[k].w);
    }
  }
}

}  // namespace cf::pipeline
