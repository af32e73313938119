// ClusterReduceScatter: zero-copy reduce-scatter and all-gather over DSMEM with caller-defined ownership, for fused
// kernels that own their buffers (no workspace copy) and may pick the cluster size at run time.
//
//   using RS = prim::ClusterReduceScatter<0, float>;      // N = 0: the launch's cluster size (2..16) at run time
//   RS rs(smem + kRsOff);                                  // workspace: RS::workspace_bytes() (two mbarriers)
//   rs.init();
//   dev::cluster_sync();
//   const prim::EvenSegments seg{count, rs.size()};        // or any bounds(q) functor (see below)
//   rs.reduce_scatter(partial, partial + seg(rank), count, seg, prim::Sum{});  // owner reduces its segment
//   ... owner work on its segment (bias, RoPE, cache append, ...) ...
//   rs.all_gather(partial, count, seg);                    // every rank gets every owner's segment
//
// Ownership: `bounds(q)` (q = 0..n) is the first element of rank q's segment; bounds(0) = 0, bounds(n) = count,
// non-decreasing (empty segments allowed). EvenSegments splits evenly in whole 16-byte vectors.
//
// Calls (every thread of the group, every CTA, same count and bounds; `src`/`data` at the same shared-memory
// offset in every CTA, because peers read them in place through map_shared_rank):
//   reduce_scatter(src, dst, count, bounds, op): dst[i - bounds(rank)] := op-reduction over the ranks of src[i],
//       for i in this rank's segment, combined in rank order (x0 (+) x1 (+) ... as ClusterReduce's Linear strategy:
//       the same bits as its all_reduce). dst may be src + bounds(rank) (in place) for elementwise ops; it must
//       not overlap another rank's segment of src. Vector ops (SoftmaxMerge) read a record's header while other
//       threads store it, so they need a dst apart from src.
//   all_gather(data, count, bounds): data[bounds(q) .. bounds(q+1)) := rank q's, for every q != rank.
//   wait_peers_done(): a call that moves no data; on return every peer has finished every earlier call.
//   exchange(work): a call with the caller's own owner work (e.g. the FFN's owner sums the gate / up partials over
//       the ranks, activates and pushes the result into every rank's buffer): work() runs after every peer reached
//       the call; peer(p, q) gives rank q's copy of p.
//   all_reduce(buf, count, op) = reduce_scatter in place + all_gather (EvenSegments) + wait_peers_done: a zero-copy
//       all-reduce moving 2 (N-1)/N blocks per CTA instead of N-1, in three signal round-trips; buf may be
//       rewritten at once after it.
// In-place rule: peers read `src` (and this rank's segment of `data`) directly, so keep them unchanged until the
// NEXT call on this object has returned (or until the kernel's final cluster_sync); wait_peers_done() is that next
// call when nothing else follows. Rewriting other ranks' segments of `src` by all_gather (the next call) is the
// intended pattern and safe.
// The group synchronises at the start of every call (inputs written by any group thread are seen by all) and at its
// end (results visible to all group threads).
//
// Handshake: the collective core, PeerHandshake (collective.hpp): a call = group sync, one remote arrive per peer,
// wait, read the peers' buffers in place, group sync. Every call signals every peer, so a peer's signal for call c+1
// proves it finished reading call c's buffers: no acknowledgements, no cluster barriers, no parity aliasing. The
// public ClusterReduce / ClusterGather run their Linear strategy on the same handshake. Vector ops (SoftmaxMerge) need bounds on whole vectors (multiples of
// 16 / sizeof(T) elements; for SoftmaxState records, of whole records).
#pragma once
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/primitives/collective.hpp"
#include "clusterfusion/primitives/ops.hpp"

namespace cf::prim {

// Even ownership: rank q owns [q * per, (q + 1) * per) clipped to count, per = ceil(count / n) rounded up to
// `align` elements (default: one 16-byte vector of fp32).
struct EvenSegments {
  uint32_t count = 0;
  uint32_t n = 1;
  uint32_t align = 4;
  CF_HOST_DEVICE uint32_t operator()(uint32_t q) const {
    const uint32_t per = detail::round_up((count + n - 1) / n, align);
    const uint32_t b = q * per;
    return b < count ? b : count;
  }
};

// Fixed ownership: rank q owns [q * per, (q + 1) * per) (count = n * per).
struct FixedSegments {
  uint32_t per = 0;
  CF_HOST_DEVICE uint32_t operator()(uint32_t q) const { return q * per; }
};

template <uint32_t N, typename T>
class ClusterReduceScatter {
 public:
  using Element = T;
  static constexpr uint32_t kClusterSize = N;

  CF_HOST_DEVICE static constexpr uint32_t workspace_bytes() { return detail::PeerHandshake<N>::kBarrierBytes; }

  // workspace: workspace_bytes() bytes of shared memory, 8-byte aligned, the same offset in every CTA.
  CF_DEVICE explicit ClusterReduceScatter(void* workspace, ThreadGroup group = ThreadGroup::block(),
                                          WaitLimit limit = {})
      : hs_(static_cast<dev::Mbarrier*>(workspace), group, limit) {}

  CF_DEVICE void init() { hs_.init(); }
  CF_DEVICE uint32_t size() const { return hs_.size(); }
  CF_DEVICE uint32_t rank() const { return hs_.rank(); }

  // p (at the same shared-memory offset in every CTA) as seen in rank q's shared memory.
  template <typename U>
  CF_DEVICE U* peer(U* p, uint32_t q) const {
    return q == rank() ? p : dev::map_shared_rank(p, q);
  }

  // A call whose owner work is not an elementwise op: `work()` runs once every peer reached this call (so every
  // peer finished every earlier call); it may read the peers' buffers through peer() and write into peer buffers
  // that no peer reads any more. The group synchronises before (inputs complete) and after (results visible).
  template <typename Work>
  CF_DEVICE void exchange(Work&& work) {
    exchange_begin();
    work();
    exchange_end();
  }

  template <typename Bounds, typename Op = Sum>
  CF_DEVICE void reduce_scatter(const T* src, T* dst, uint32_t count, Bounds bounds, Op = {}) {
    using C = detail::Combiner<Op, T>;
    exchange_begin();
    const uint32_t begin = bounds(rank()), end = bounds(rank() + 1);
    const uint32_t n = size();
    uint32_t done = begin;
    if (detail::aligned16(src) && detail::aligned16(dst) && begin % C::kElems == 0) {
      const uint32_t vectors = (end - begin) / C::kElems;
      for (uint32_t v = hs_.group().rank; v < vectors; v += hs_.group().size) {
        const uint32_t e0 = begin + v * C::kElems;
        typename C::Acc acc = C::load(peer(src, 0), e0);
        if constexpr (N != 0) {
          CF_UNROLL
          for (uint32_t q = 1; q < N; ++q) C::combine(acc, C::load(peer(src, q), e0));
        } else {
          for (uint32_t q = 1; q < n; ++q) C::combine(acc, C::load(peer(src, q), e0));
        }
        C::store(dst, e0 - begin, C::kElems, acc);
      }
      done = begin + vectors * C::kElems;
    }
    if constexpr (!VectorOp<Op>) {  // elements outside whole vectors (vector ops need vector-aligned bounds)
      for (uint32_t i = done + hs_.group().rank; i < end; i += hs_.group().size) {
        float acc = dev::to_float(peer(src, 0)[i]);
        for (uint32_t q = 1; q < n; ++q) acc = Op::combine(acc, dev::to_float(peer(src, q)[i]));
        dst[i - begin] = dev::from_float<T>(acc);
      }
    }
    exchange_end();
  }

  template <typename Bounds>
  CF_DEVICE void all_gather(T* data, uint32_t count, Bounds bounds) {
    constexpr uint32_t kVec = detail::kVectorBytes / sizeof(T);
    exchange_begin();
    const uint32_t n = size();
    for (uint32_t q = 0; q < n; ++q) {
      if (q == rank()) continue;
      const uint32_t begin = bounds(q), end = bounds(q + 1);
      const T* from = peer(data, q);
      uint32_t done = begin;
      if (detail::aligned16(data) && begin % kVec == 0) {
        const uint32_t vectors = (end - begin) / kVec;
        for (uint32_t v = hs_.group().rank; v < vectors; v += hs_.group().size)
          dev::store16(data + begin + v * kVec, dev::load16(from + begin + v * kVec));
        done = begin + vectors * kVec;
      }
      for (uint32_t i = done + hs_.group().rank; i < end; i += hs_.group().size) data[i] = from[i];
    }
    exchange_end();
  }

  CF_DEVICE void wait_peers_done() {
    exchange_begin();
    exchange_end();
  }

  // Zero-copy all-reduce: reduce_scatter in place + all_gather, even ownership, then wait_peers_done.
  template <typename Op = Sum>
  CF_DEVICE void all_reduce(T* buf, uint32_t count, Op op = {}) {
    static_assert(!VectorOp<Op>, "in-place all_reduce takes elementwise ops; use reduce_scatter with a separate dst");
    const EvenSegments seg{count, size(), uint32_t(detail::kVectorBytes / sizeof(T))};
    reduce_scatter(buf, buf + seg(rank()), count, seg, op);
    all_gather(buf, count, seg);
    wait_peers_done();
  }

 private:
  CF_DEVICE void exchange_begin() {
    hs_.signal();
    hs_.wait();
  }
  CF_DEVICE void exchange_end() { hs_.finish(); }

  detail::PeerHandshake<N> hs_;
};

}  // namespace cf::prim
