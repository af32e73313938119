// The producer / consumer ring of the fused kernels, in CUTLASS's vocabulary (include/cutlass/pipeline/
// sm90_pipeline.hpp, media/docs/cpp/pipeline.md): one producer warp streams a schedule of items (weight tiles, K/V
// tiles) into `stages` shared-memory stages; consumer warps read them. Each stage has a `full` mbarrier (1 arrival:
// the producer's expect-tx, completed by the async copies' bytes) and an `empty` mbarrier (one arrival per consumer
// warp). Both builds; every wait is bounded (prim::bounded_wait): an expired wait records its site in the kernel's
// status word and raises the CTA's abort flag, after which no wait of the ring blocks and nothing more is issued.
//
//   PipelineState      item count, its stage `index` and the `phase` (parity) of that stage's current lap
//   producer (all lanes of the producer warp, in item order):
//     if (ring.producer_acquire(st, bytes, site)) { lane 0 issues copies completing on ring.full_barrier(st) }
//     ring.producer_commit(st);                 // advances st (and what a drain must wait for)
//   consumer warps (every warp reads every item, in order):
//     if (ring.consumer_wait(st, site)) { ... read ring.stage(st) ... }   // false only after an abort
//     ring.consumer_release(st);                // advances st
//   owned runs (an item read by ONE warp, e.g. a K/V tile): OwnedRun, below
//   end of a CTA: ring.finish_cta(...) (every thread; the producer drains its copies when the CTA aborted)
//
// Why the waits are exact. mbarrier.try_wait.parity only tells two adjacent phases apart: a warp waiting for lap j of
// a stage returns at once if the barrier is in lap j - 1 or j + 1. A consumer's wait is exact if that warp itself
// waited for the stage's previous item (lap j - 1 then completed or is in progress, never two behind). Items every
// warp reads guarantee it trivially. Items one warp reads must keep "the same warp reads every item of a stage":
// OwnedRun hands item it only to the owner of stage it % stages (warp s % kConsumerWarps), and its finish() is the
// consumer barrier that ends the run, after which every owned item was waited for by its owner, so shared reads of
// the same stages are exact again. No other way to consume an owned item exists.
//
// The ring is cluster-aware in the CUTLASS sense where the device API allows it: barriers are initialised with
// fence_mbarrier_init (release, cluster scope) before the start-up cluster barrier and waited on with acquire at
// cluster scope, and the empty barrier counts `consumer_arrivals` (a multicast ring would count its peers' consumer
// warps there, releasing with arrive_remote).
#pragma once
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/primitives/bounded_wait.hpp"
#include "clusterfusion/primitives/collective.hpp"  // prim::ThreadGroup

namespace cf::pipeline {
namespace dev = cf::dev;

struct PipelineState {
  int32_t count = 0;   // items since the start of the schedule
  int32_t index = 0;   // stage: count % stages
  uint32_t phase = 0;  // parity of the stage's lap: (count / stages) & 1

  CF_DEVICE void advance(int32_t stages) {
    ++count;
    if (++index == stages) {
      index = 0;
      phase ^= 1u;
    }
  }
  // n items further on (n >= 0).
  CF_DEVICE void advance(int32_t stages, int32_t n) {
    const int32_t at = index + n;
    count += n;
    index = at % stages;
    phase ^= uint32_t((at / stages) & 1);
  }
};

// kStageBytes: bytes per stage; kConsumerWarps: the warps that read (and release) the items.
template <int kStageBytes, int kConsumerWarps>
class Ring {
 public:
  static constexpr int kStage = kStageBytes;
  static constexpr int kWarps = kConsumerWarps;

  // bars: 2 * stages mbarriers (full, then empty); base: the first stage (1024-byte aligned for TMA boxes);
  // limit: the kernel's bounded waits (status word, budget, abort flag; code 0: sites are given per call).
  CF_DEVICE Ring(dev::Mbarrier* full, dev::Mbarrier* empty, uint8_t* base, int32_t stages, const prim::WaitLimit& limit)
      : full_(full), empty_(empty), base_(base), stages_(stages), limit_(limit) {}

  // One thread, before the start-up barrier (block_sync or cluster_sync).
  CF_DEVICE void init() const {
    for (int32_t s = 0; s < stages_; ++s) {
      full_[s].init(1);
      empty_[s].init(kConsumerWarps);
    }
    dev::fence_mbarrier_init();
  }

  CF_DEVICE int32_t stages() const { return stages_; }
  CF_DEVICE const prim::WaitLimit& limit() const { return limit_; }
  CF_DEVICE uint8_t* stage(const PipelineState& s) const {
    return base_ + uint32_t(s.index) * uint32_t(kStageBytes);
  }
  CF_DEVICE dev::Mbarrier& full_barrier(const PipelineState& s) const { return full_[s.index]; }

  // ---- producer warp (all lanes) --------------------------------------------------------------------------------
  // Waits until the consumers released the stage's previous lap (a `consequence` wait: they are late because
  // something else is); true (warp-uniform) if the item is to be issued, not after an abort. Lane 0 then expects
  // `bytes` on the full barrier: issue exactly that many bytes of copies onto full_barrier(s).
  CF_DEVICE bool producer_acquire(const PipelineState& s, uint32_t bytes, uint32_t site) const {
    if (s.count >= stages_) {
      prim::WaitLimit release_limit = limit_;
      release_limit.consequence = true;
      (void)prim::bounded_wait(empty_[s.index], s.phase ^ 1u, release_limit, site);
    }
    const bool issue = dev::all_sync(dev::kFullMask, !prim::abort_raised(limit_));
    if (issue && dev::lane_id() == 0) full_[s.index].arrive_expect_tx(bytes);
    dev::syncwarp();  // the expected bytes are counted before any lane's copy can complete
    return issue;
  }
  // After the item's copies: the warp reconverges, the state moves on; `issued_end` counts the issued items.
  CF_DEVICE void producer_commit(PipelineState& s, bool issued, int32_t& issued_end) const {
    dev::syncwarp();
    if (issued) issued_end = s.count + 1;
    s.advance(stages_);
  }

  // ---- consumer warps -------------------------------------------------------------------------------------------
  // Waits until the item has landed; false (warp-uniform) if it must not be read (an abort: it may never land).
  CF_DEVICE bool consumer_wait(const PipelineState& s, uint32_t site) const {
    return dev::all_sync(dev::kFullMask, prim::bounded_wait(full_[s.index], s.phase, limit_, site));
  }
  // This warp is done with the item (after consumer_wait, whatever it returned); the state moves on.
  CF_DEVICE void consumer_release(PipelineState& s) const {
    release(s, 1);
    s.advance(stages_);
  }

  // ---- end of the CTA --------------------------------------------------------------------------------------------
  // Every thread of the CTA: after an expired wait every thread is past its last wait (nothing more is issued) and
  // the producer's lane 0 waits until items [0, issued_end) have landed, so no copy writes into the shared memory of
  // an exited CTA (drain_limit: its own status word, no abort flag; a drain that expires too is fatal on the host).
  // One block barrier per launch otherwise.
  CF_DEVICE void finish_cta(bool producer_lane0, int32_t issued_end, const prim::WaitLimit& drain_limit) const {
    dev::block_sync();
    if (producer_lane0 && prim::abort_raised(limit_)) (void)prim::drain_ring(full_, stages_, issued_end, drain_limit);
  }

 private:
  template <int, int>
  friend class OwnedRun;
  CF_DEVICE void release(const PipelineState& s, int arrivals) const {
    dev::syncwarp();
    if (dev::lane_id() == 0)
      for (int k = 0; k < arrivals; ++k) empty_[s.index].arrive();
  }

  dev::Mbarrier* full_;
  dev::Mbarrier* empty_;
  uint8_t* base_;
  int32_t stages_;
  prim::WaitLimit limit_;
};

// A run of n items read by one warp each: item it belongs to the owner of its stage, warp (it % stages) %
// kConsumerWarps (warps w < stages - kConsumerWarps own two stages), which takes them in item order. With at most
// two stages per warp no barrier per item is needed and a stage is refilled as soon as its owner is done with it,
// so stages - 1 items stay in flight while one is read. The owner releases an item for every consumer warp (the
// empty barrier counts kConsumerWarps arrivals per lap, as for shared items).
//
//   pipeline::OwnedRun run(ring, state, n, warp);
//   for (PipelineState it; run.next(it);) {          // it: this warp's next item, run.position(): its index in the run
//     if (ring.consumer_wait(it, site)) { ... }
//     run.release(it);
//   }
//   ... publish what the warp computed (shared memory) ...
//   run.finish(state, consumers);                     // the consumer barrier: afterwards state is past the run
template <int kStageBytes, int kConsumerWarps>
class OwnedRun {
 public:
  using RingT = Ring<kStageBytes, kConsumerWarps>;

  CF_DEVICE OwnedRun(const RingT& ring, const PipelineState& first, int32_t n, uint32_t warp)
      : ring_(ring), first_(first), n_(n) {
    const int32_t S = ring.stages(), w = int32_t(warp);
    // positions in the run of this warp's first item in stage w (and w + kConsumerWarps)
    next_a_ = w < S ? (w - first.index + S) % S : n;
    next_b_ = w + kConsumerWarps < S ? (w + kConsumerWarps - first.index + S) % S : n;
  }

  // This warp's next item of the run (in item order); false when it owns no more. The item's stage and phase are
  // computed from the run's first item (a division per item, but no per-stage state: the K/V loop is the kernels'
  // register peak).
  CF_DEVICE bool next(PipelineState& it) {
    const int32_t j = next_a_ < next_b_ ? next_a_ : next_b_;
    if (j >= n_) return false;
    if (j == next_a_) next_a_ += ring_.stages();
    else next_b_ += ring_.stages();
    position_ = j;
    const int32_t count = first_.count + j;
    it = {count, count % ring_.stages(), uint32_t((count / ring_.stages()) & 1)};
    return true;
  }
  // Index in the run (0 .. n-1) of the item next() returned last.
  CF_DEVICE int32_t position() const { return position_; }

  // The owner is done with the item: it releases the stage for every consumer warp.
  CF_DEVICE void release(const PipelineState& it) const { ring_.release(it, kConsumerWarps); }

  // The consumer warps' barrier that ends the run (call it where the warps publish what they computed from it):
  // afterwards every item was waited for by its owner, and `state` points past the run.
  CF_DEVICE void finish(PipelineState& state, const prim::ThreadGroup& consumers) const {
    consumers.sync();
    state.advance(ring_.stages(), n_);
  }

 private:
  const RingT& ring_;
  PipelineState first_;
  int32_t n_;
  int32_t next_a_, next_b_;
  int32_t position_ = 0;
};

}  // namespace cf::pipeline
