// The best (value, index) candidate of a warp under one strict total order: larger value, then lower index; index -1
// is "no candidate" and loses to every real one. A butterfly over a total order gives every lane the same winner
// whatever the combination order, so argmax-like picks (the LM head's greedy token, the MoE router's top-k experts)
// are deterministic and break ties to the lowest id. A NaN value never beats a real candidate by value; callers that
// must skip NaNs entirely filter them before.
#pragma once
#include <cstdint>

#include "clusterfusion/device/api.hpp"

namespace cf::prim {

// (value, index) beats (best_value, best_index).
CF_DEVICE bool beats(float value, int32_t index, float best_value, int32_t best_index) {
  if (index < 0) return false;
  if (best_index < 0) return true;
  return value > best_value || (value == best_value && index < best_index);
}

// The warp's best candidate, on every lane.
CF_DEVICE void warp_best(float& value, int32_t& index) {
  CF_UNROLL
  for (int m = 16; m >= 1; m >>= 1) {
    const float v = dev::shfl_xor_sync(dev::kFullMask, value, m);
    const int32_t i = dev::shfl_xor_sync(dev::kFullMask, index, m);
    if (beats(v, i, value, index)) value = v, index = i;
  }
}

}  // namespace cf::prim
