// The part of a streaming kernel's per-CTA context that every kernel on the pipeline layer has (docs/pipeline.md
// §4): the thread's ids, the shared-memory base, the mbarrier head and the small buffers of the carve, the bounded
// waits' limit and the weight ring; and the ring's end. A kernel's context derives from it and adds its work split
// and its phases:
//
//   struct MyCta : pl::StreamCta<KernelParams, Barriers, SmallBuffers> {
//     CF_DEVICE explicit MyCta(const KernelParams& p) : StreamCta(p, kStatusTimeout) {}
//     ...
//     CF_DEVICE void finish(int32_t issued_end) { end_ring(issued_end, kStatusDrainTimeout, kWaitDrain); }
//   };
//
// What it needs of the kernel's types: KernelParams has `status` (u32 words), `wait_budget_ns`, `stages` and a
// `layout` with the slots `small` and `ring`; Barriers (the SmemHead) has the ring's `full` and `empty` barriers;
// SmallBuffers has the CTA's `abort` flag.
#pragma once
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/pipeline/roles.hpp"
#include "clusterfusion/pipeline/smem_carve.hpp"
#include "clusterfusion/pipeline/weight_stream.hpp"
#include "clusterfusion/primitives/bounded_wait.hpp"

namespace cf::pipeline {

template <typename KernelParams, typename Barriers, typename SmallBuffers>
struct StreamCta {
  const KernelParams& p;
  const uint32_t tid = dev::thread_rank(), warp = tid / 32, lane = tid % 32;
  uint8_t* const smem = dev::dynamic_smem();
  Barriers* const bars = SmemHead<Barriers>::in(smem);
  SmallBuffers* const small = p.layout.small.in(smem);
  // Bounded waits: the ring's (site given per call) and the kernel's own (its codes on a copy: limit_at).
  const prim::WaitLimit limit;
  const WeightRing ring{bars->full, bars->empty, p.layout.ring.in(smem), p.stages, limit};

  // timeout_word: the status word (u64 at this u32 index) where an expired wait records its site.
  CF_DEVICE StreamCta(const KernelParams& params, uint32_t timeout_word)
      : p(params), limit{reinterpret_cast<uint64_t*>(p.status + timeout_word), p.wait_budget_ns, 0, &small->abort} {}

  CF_DEVICE bool is_producer() const { return warp == uint32_t(kProducerWarp); }
  CF_DEVICE prim::WaitLimit limit_at(uint32_t code) const { return {limit.status, limit.budget_ns, code, limit.abort}; }

  // Every thread: the ring's end (Ring::finish_cta: after an abort the producer's lane 0 drains the copies it issued,
  // items [0, issued_end), recording an expired drain in status word drain_word with code drain_site).
  CF_DEVICE void end_ring(int32_t issued_end, uint32_t drain_word, uint32_t drain_site) const {
    ring.finish_cta(is_producer() && lane == 0, issued_end,
                    {reinterpret_cast<uint64_t*>(p.status + drain_word), p.wait_budget_ns, drain_site, nullptr});
  }
};

}  // namespace cf::pipeline
