// The warp roles of a streaming kernel's CTA (attention, FFN, LM head, and any kernel written on the pipeline
// layer): consumer warps first (tensor cores, the cluster collectives), then the producer warp that issues every
// load of the ring, then optional warps of the kernel's own (the FFN's arrival warp).
#pragma once
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/primitives/collective.hpp"

namespace cf::pipeline {
namespace dev = cf::dev;

inline constexpr int kConsumerWarps = 8;
inline constexpr int kConsumerThreads = kConsumerWarps * 32;
inline constexpr int kProducerWarp = kConsumerWarps;
inline constexpr int kThreads = kConsumerThreads + 32;  // consumers + producer
// Named barriers (id 0 is block_sync): the consumer warps' own (also the collectives' thread group).
inline constexpr uint32_t kConsumerBarrier = 1;

// The consumer warps as the thread group of the collectives and of OwnedRun::finish.
CF_DEVICE prim::ThreadGroup consumer_group() {
  return prim::ThreadGroup::range(0, kConsumerThreads, kConsumerBarrier);
}
CF_DEVICE void consumers_sync() { dev::named_barrier_sync(kConsumerBarrier, kConsumerThreads); }

}  // namespace cf::pipeline
