// What the MLA block's kernels share (rows_kernel.hpp, attention_kernel.hpp, uv_kernel.hpp): small device helpers
// and the start and end of a CTA that streams through the ring.
#pragma once
#include <cmath>
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/kernels/mla/params.hpp"
#include "clusterfusion/kernels/mla/traits.hpp"
#include "clusterfusion/pipeline/cta.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla {
namespace dev = cf::dev;

namespace detail {
// A float another CTA of this launch wrote (read once by the last arriver: never a stale L1 line).
CF_DEVICE float fresh(const float* p) { return *static_cast<const volatile float*>(p); }
// The butterfly sum of a warp: every lane gets the same bits.
CF_DEVICE float warp_sum(float v) {
  CF_UNROLL
  for (int m = 16; m >= 1; m >>= 1) v += dev::shfl_xor_sync(dev::kFullMask, v, m);
  return v;
}
CF_DEVICE void set_status(uint32_t* status, uint32_t bit) {
  if (status[bit] == 0) (void)dev::atomic_exch(&status[bit], 1u);
}
// cos and sin of rope pair i at `position` (the table's row: rope/2 cosines, then the sines).
CF_DEVICE dev::Float2 rope_cos_sin(const float* cos_sin, int32_t rope, int32_t position, int32_t i) {
  const float* row = cos_sin + int64_t(position) * rope;
  return {row[i], row[rope / 2 + i]};
}
CF_DEVICE float exp_of(float x) {
#if defined(CF_DEVICE_CUDA) && defined(__CUDA_ARCH__)
  return expf(x);
#else
  return std::exp(x);
#endif
}
}  // namespace detail

// A streaming CTA of the block (pl::StreamCta with the block's barriers and status words): the ring set up before
// the phases, drained after them.
template <typename Params, typename Small>
struct MlaCta : pl::StreamCta<Params, Barriers, Small> {
  using Base = pl::StreamCta<Params, Barriers, Small>;
  CF_DEVICE explicit MlaCta(const Params& params) : Base(params, kStatusTimeout) {}

  CF_DEVICE void setup() {
    if (this->tid == 0) {
      this->ring.init();
      this->small->abort = 0;
    }
    dev::block_sync();
  }
  // Every thread, last: the ring's end (Ring::finish_cta).
  CF_DEVICE void finish(int32_t issued_end) { this->end_ring(issued_end, kStatusDrainTimeout, kWaitDrain); }
};

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla
