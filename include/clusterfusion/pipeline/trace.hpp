// The phase trace of the fused kernels: with a plan's `trace` option each CTA records the SM clock at its phase
// boundaries (the kernel's TracePoint enum) into a [grid][points] array that Plan::read_trace() returns, for
// performance work (where does a CTA's time go). Off (a null array) it costs one predicated branch per point.
// The emulator records 0.
#pragma once
#include <cstdint>

#include "clusterfusion/device/api.hpp"

namespace cf::pipeline {

CF_DEVICE uint64_t clock_now() {
#if defined(CF_DEVICE_CUDA)
  return uint64_t(clock64());
#else
  return 0;
#endif
}

// One thread per CTA and point: points[CTA][point] = the SM clock, when the plan asked for a trace (points not
// null). Takes the kernel parameter itself, not a copy, so that a trace costs no register while it is off.
CF_DEVICE void trace_point(uint64_t* points, uint32_t per_cta, uint32_t point) {
  if (points) points[dev::block_idx().x * per_cta + point] = clock_now();
}

}  // namespace cf::pipeline
