// Bounded mbarrier waits: no wait inside a fused kernel can hang the GPU (docs/reliability.md, "Hangs").
//
//   const prim::WaitLimit limit{timeout_word, p.wait_budget_ns, kWaitQkvTile, &small->abort};
//   if (prim::bounded_wait(bar, parity, limit)) { ... the phase completed: read what it guards ... }
//
// A wait that has not completed after `budget_ns` of wall time (dev::globaltimer_ns: %globaltimer on the GPU; on the
// emulator a virtual clock that jumps only while no thread of the cluster can make progress, so a wait that can
// complete never expires there) gives up: it records where (`code` and the block) in the launch's 64-bit status word,
// raises the CTA's abort flag and returns false. Of several expired waits the word keeps the likeliest cause: one
// that waits for something outside its CTA's own threads (a copy, a peer) rather than a `consequence` wait (a
// producer waiting for its consumers to release a stage), and of those the one that started first
// (wait_status.hpp). With the flag up every bounded wait of the CTA returns false at once, so the CTA runs to its end
// without waiting: the same barriers and arrivals in the same order (peers are not left waiting), garbage results,
// done within microseconds. What a failed wait guarded must not be read (an async copy may still be writing it; the
// emulator reports such a read), and before the CTA exits its producer drains the copies it issued (drain_ring). The
// host turns the status word into an error naming the kernel and the wait (Plan::check_status()).
//
// status == nullptr: an unbounded wait (tests on the emulator, which reports a deadlock itself); budget_ns == 0: no
// time limit, but the abort flag is still honoured.
#pragma once
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/primitives/wait_status.hpp"

namespace cf::prim {

inline constexpr uint64_t kDefaultWaitBudgetNs = 20'000'000;  // 20 ms: a legitimate wait takes microseconds

struct WaitLimit {
  uint64_t* status = nullptr;              // global, 8-byte aligned: 0, or timeout_status() of the earliest expiry
  uint64_t budget_ns = kDefaultWaitBudgetNs;
  uint32_t code = 1;                       // what the kernel calls this wait (1..255; callers may add an offset)
  uint32_t* abort = nullptr;               // optional: the CTA's shared-memory abort flag (0 until a wait expires)
  bool consequence = false;                // waits for this CTA's own threads: reported only if no other wait expired
};

CF_DEVICE bool abort_raised(const WaitLimit& limit) {
  return limit.abort != nullptr && dev::load_flag(limit.abort) != 0;
}

// Waits for the phase of `bar` with this parity; false if the wait expired or the CTA is aborting. code_offset is
// added to limit.code (a collective adds its call index, so every call site has its own code).
CF_DEVICE bool bounded_wait(dev::Mbarrier& bar, uint32_t parity, const WaitLimit& limit, uint32_t code_offset = 0) {
  if (limit.status == nullptr) {
    bar.wait(parity);
    return true;
  }
  // The wait's start. On the GPU a failed try_wait returns within the hardware's suspend limit (microseconds), so
  // the clock is read after the first one and the common case reads none; the emulator's try_wait blocks until the
  // cluster stalls, so there the clock is read first (it orders the expired waits by start).
#if defined(CF_DEVICE_CUDA)
  if (bar.try_wait(parity)) return true;
  const uint64_t start = dev::globaltimer_ns();
#else
  const uint64_t start = dev::globaltimer_ns();
  if (bar.try_wait(parity)) return true;
#endif
  for (;;) {
    if (abort_raised(limit)) return false;
    if (bar.try_wait(parity)) return true;
    if (limit.budget_ns != 0 && dev::globaltimer_ns() - start > limit.budget_ns) {
      if (limit.abort != nullptr) dev::store_flag(limit.abort, 1u);
      (void)dev::atomic_max(limit.status, timeout_status(limit.consequence, start, limit.code + code_offset,
                                                               dev::block_idx().x));
      return false;
    }
  }
}

// Producer, before its CTA ends after an abort: waits until every copy it issued into a ring of `stages` stages has
// landed (items [0, issued_end); only the last item of each stage can be outstanding: an item is issued after the
// previous one of its stage was released, and after an abort nothing more is issued), so no copy writes into the
// shared memory of an exited CTA. `limit` should have no abort flag and its own status word: a drain that expires
// leaves a copy in flight, which the host treats as fatal.
CF_DEVICE bool drain_ring(dev::Mbarrier* full, int32_t stages, int32_t issued_end, const WaitLimit& limit) {
  bool landed = true;
  for (int32_t it = issued_end > stages ? issued_end - stages : 0; it < issued_end; ++it)
    landed = bounded_wait(full[it % stages], uint32_t((it / stages) & 1), limit) && landed;
  return landed;
}

}  // namespace cf::prim
