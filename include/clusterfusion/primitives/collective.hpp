// Shared pieces of the cluster collectives (cluster_reduce.hpp, cluster_gather.hpp): the strategy and transport
// choices, the thread group that runs a collective, and the helpers both use (bounded mbarrier waits, group-strided
// copies between shared-memory blocks). Kernels include cluster_reduce.hpp / cluster_gather.hpp, not this file.
//
// Contract shared by every collective object (ClusterReduce, ClusterGather):
//   - Workspace: the caller carves `workspace_bytes(capacity)` bytes of dynamic shared memory, 16-byte aligned, at
//     the SAME offset in every CTA of the cluster (peers address it through map_shared_rank / bulk_copy_s2peer).
//     It holds the mbarriers and the send/receive blocks; the caller never touches it after construction.
//   - Setup: construct the object in every thread of the group, call init() (the group's thread 0 initialises the
//     mbarriers), then a cluster_sync() by the whole cluster before the first collective call (the kernel's usual
//     start-up cluster_sync serves, if init() comes before it).
//   - Calls: every thread of the group, in every CTA of the cluster, makes the same sequence of calls with the same
//     counts (counts <= capacity). The object keeps the call counter (mbarrier phase parity) in registers, so keep
//     one object per workspace and pass it by reference. Inputs must be complete and visible to the whole group at
//     the call (a block_sync / group barrier after writing them); on return the group has synchronised.
//   - Teardown: end the kernel (or reuse the workspace memory) only after a cluster_sync() that follows the last call
//     in every CTA: peers may still read this CTA's blocks or signal its mbarriers until then.
#pragma once
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/primitives/bounded_wait.hpp"

namespace cf::prim {
namespace dev = cf::dev;

// Schedule of a collective over the cluster's N ranks.
enum class Strategy : uint8_t {
  Linear,  // one exchange: every rank sends its block to every other rank and combines all N in rank order.
           // One signal round-trip per call; each rank reads (N-1) blocks.
  Tree,    // recursive doubling (butterfly) over the largest power of two P <= N in log2(P) rounds; ranks >= P fold
           // into rank - P first and get the result back last. Each rank reads one block per round.
};

// How a block moves between CTAs.
enum class Transport : uint8_t {
  Pull,  // the receiver loads the sender's block from the sender's shared memory (ld through map_shared_rank),
         // after the sender signalled it ready with a remote mbarrier arrive
  Push,  // the sender bulk-copies its block into the receiver's shared memory (cp.async.bulk shared::cluster),
         // announced with arrive_expect_tx_remote and completing on the receiver's mbarrier
};

// The defaults (template arguments left out). Chosen by reasoning before a GPU measurement exists (see
// docs/collectives.md): at the sizes a fused decode kernel reduces (<= 16 KB per CTA) latency is dominated by
// signal round-trips, so one exchange (Linear) beats log2 N rounds; Pull needs no async-proxy fence and no extra
// receive blocks.
template <uint32_t N>
inline constexpr Strategy kDefaultStrategy = Strategy::Linear;
template <uint32_t N>
inline constexpr Transport kDefaultTransport = Transport::Pull;

inline constexpr uint32_t kMinClusterSize = 2;
inline constexpr uint32_t kMaxClusterSize = dev::kMaxClusterSize;  // 16 needs LaunchConfig::allow_nonportable_cluster

// The threads of one CTA that run a collective: the whole block (default) or a subset synchronised by a named
// barrier, e.g. one warp group while other warps keep streaming weights. Every CTA of the cluster uses the same
// group shape. size: a multiple of 32, at least 32; rank: this thread's index in [0, size).
struct ThreadGroup {
  uint32_t rank = 0;
  uint32_t size = 0;
  uint32_t barrier_id = 0;  // 0: the group is the whole block and syncs with block_sync(); else named barrier 1..15

  CF_DEVICE static ThreadGroup block() { return {dev::thread_rank(), dev::num_threads(), 0}; }
  // Threads [first, first + size) of the block (first and size multiples of 32), synchronised on named barrier id.
  CF_DEVICE static ThreadGroup range(uint32_t first, uint32_t size, uint32_t barrier_id) {
    return {dev::thread_rank() - first, size, barrier_id};
  }
  CF_DEVICE void sync() const {
    if (barrier_id == 0) {
      dev::block_sync();
    } else {
      dev::named_barrier_sync(barrier_id, size);
    }
  }
};

// Optional bounded waiting (fused kernels, benchmarks, GPU tests): prim::WaitLimit (bounded_wait.hpp). With a
// status word, a wait that exceeds the budget records `code` + the call index there and gives up (results are then
// garbage, but the kernel ends); null: wait forever (the emulator reports a deadlock instead).

namespace detail {

CF_HOST_DEVICE constexpr uint32_t round_up(uint32_t x, uint32_t to) { return (x + to - 1) / to * to; }
CF_HOST_DEVICE constexpr uint32_t floor_pow2(uint32_t n) {
  uint32_t p = 1;
  while (p * 2 <= n) p *= 2;
  return p;
}
CF_HOST_DEVICE constexpr uint32_t log2_floor(uint32_t n) {
  uint32_t l = 0;
  while ((2u << l) <= n) ++l;
  return l;
}

inline constexpr uint32_t kVectorBytes = 16;     // one load16/store16
inline constexpr uint32_t kBarrierArea = 128;    // mbarriers live in the first bytes of a workspace (padded)

// Bytes of one block of `count` elements in a workspace: whole 16-byte vectors (bulk copies need multiples of 16).
template <typename T>
CF_HOST_DEVICE constexpr uint32_t block_bytes(uint32_t count) {
  return round_up(count * uint32_t(sizeof(T)), kVectorBytes);
}

// The handshake wait of call `call` of a collective (code offset: the call index, capped, so each call of a kernel's
// collective object names its own wait).
CF_DEVICE void wait_phase(dev::Mbarrier& bar, uint32_t parity, const WaitLimit& limit, uint32_t call = 0) {
  (void)bounded_wait(bar, parity, limit, call < 15 ? call : 15);
}

CF_DEVICE bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// dst[i] = src[i] for i < count, spread over the group (16-byte vectors where both are aligned). Any spaces.
template <typename T>
CF_DEVICE void group_copy(T* dst, const T* src, uint32_t count, const ThreadGroup& g) {
  constexpr uint32_t kVec = kVectorBytes / sizeof(T);
  uint32_t done = 0;
  if (aligned16(dst) && aligned16(src)) {
    const uint32_t vectors = count / kVec;
    for (uint32_t v = g.rank; v < vectors; v += g.size) dev::store16(dst + v * kVec, dev::load16(src + v * kVec));
    done = vectors * kVec;
  }
  for (uint32_t i = done + g.rank; i < count; i += g.size) dst[i] = src[i];
}

// group_copy into a workspace block, then zeros up to the block's next 16-byte boundary: the combining loops read
// whole vectors, so the lanes past `count` (whose results are dropped) must hold defined values.
template <typename T>
CF_DEVICE void group_copy_padded(T* dst, const T* src, uint32_t count, const ThreadGroup& g) {
  group_copy(dst, src, count, g);
  constexpr uint32_t kVec = kVectorBytes / sizeof(T);
  const uint32_t end = (count + kVec - 1) / kVec * kVec;
  for (uint32_t i = count + g.rank; i < end; i += g.size) dst[i] = dev::from_float<T>(0.0f);
}


// ---- the collective core --------------------------------------------------------------------------------------
// PeerHandshake is the one handshake every cluster collective of the project rests on: the kernels' zero-copy
// reduce-scatter / all-gather (ClusterReduceScatter, cluster_reduce_scatter.hpp) and the Linear strategy of the
// public ClusterReduce / ClusterGather (LinearExchange below; the Tree strategy pairs ranks over TreeChannels, below).
// One "ready" mbarrier per call parity, n - 1 arrivals per phase (one from each peer). A call:
//   signal:  the group synchronises (its inputs are complete), then group thread q signals peer q: a remote arrive
//            (release, cluster scope), or with Push an arrive with expect-tx plus the bulk copy it announces
//   wait:    every thread waits for the phase of this call's parity (acquire, cluster scope): all peers signalled
//   ...      the call reads the peers' data (in place through map_shared_rank, or the pushed copies)
//   finish:  the group synchronises again
// Why no acknowledgement is needed: every call signals every peer. A rank signals call c+1 only after its group
// finished reading call c's data (the finish in between), and it starts call c+2 (rewriting parity p's blocks)
// only after call c+1's signals from every peer, i.e. after every peer finished reading (Pull) or receiving (Push:
// its ready wait includes our bytes) everything of call c. For the same reason no peer can arrive on ready[p] for
// call c+2 before this rank waited on ready[p] for call c, so no mbarrier runs two phases ahead of its waiter (no
// parity aliasing). This holds for any sequence of calls that all signal every peer, and across objects driven by
// the same thread group in the same order (a peer's signal on a later call of another object also proves it
// finished the earlier call's reads). N = 0: the cluster size at run time.
template <uint32_t N>
class PeerHandshake {
 public:
  static_assert(N == 0 || (N >= kMinClusterSize && N <= kMaxClusterSize), "cluster size must be 0 (runtime) or 2..16");
  static constexpr uint32_t kBarrierBytes = 2 * 8;

  CF_DEVICE PeerHandshake(dev::Mbarrier* bars, const ThreadGroup& group, const WaitLimit& limit)
      : bars_(bars), group_(group), limit_(limit), rank_(dev::block_rank_in_cluster()),
        n_(N != 0 ? N : dev::cluster_size()) {}

  // Group thread 0 initialises the barriers; a cluster_sync() must follow before the first call.
  CF_DEVICE void init() {
    if (group_.rank == 0) {
      bars_[0].init(size() - 1);
      bars_[1].init(size() - 1);
      dev::fence_mbarrier_init();
    }
  }
  CF_DEVICE uint32_t size() const { return N != 0 ? N : n_; }
  CF_DEVICE uint32_t rank() const { return rank_; }
  CF_DEVICE const ThreadGroup& group() const { return group_; }
  CF_DEVICE uint32_t parity() const { return calls_ & 1u; }
  CF_DEVICE dev::Mbarrier& ready() { return bars_[parity()]; }

  // Group sync, then group thread q < size() (q != rank) signals peer q with send(ready(), q).
  template <typename Send>
  CF_DEVICE void signal(Send send) {
    group_.sync();
    const uint32_t q = group_.rank;
    if (q < size() && q != rank_) send(ready(), q);
  }
  CF_DEVICE void signal() {
    signal([](dev::Mbarrier& ready, uint32_t q) { ready.arrive_remote(q); });
  }
  // Every peer signalled this call (bounded: the wait's code is the limit's plus the call index, capped at 15).
  CF_DEVICE void wait() { wait_phase(ready(), (calls_ >> 1) & 1u, limit_, calls_); }
  CF_DEVICE void finish() {
    group_.sync();
    ++calls_;
  }

 private:
  dev::Mbarrier* bars_;
  ThreadGroup group_;
  WaitLimit limit_;
  uint32_t rank_;
  uint32_t n_;
  uint32_t calls_ = 0;
};

// The Linear exchange of ClusterReduce and ClusterGather: per call every rank publishes one block (its send block)
// to every other rank over the PeerHandshake, waits until all peers' blocks are there, and reads them.
// Workspace: [ready[2] mbarriers | blocks], blocks 16-byte padded, indexed by call parity p = call & 1:
//   Pull: send[p]        (peers load it through map_shared_rank)
//   Push: slot[p][N]     (slot[p][rank] is the send block; slot[p][q] receives rank q's push)
template <uint32_t N, typename T, Transport X>
class LinearExchange {
 public:
  static_assert(N >= kMinClusterSize && N <= kMaxClusterSize, "cluster size must be 2..16");
  static constexpr uint32_t kBlocksPerParity = X == Transport::Pull ? 1 : N;
  static constexpr uint32_t kAllPeers = ~0u;

  CF_HOST_DEVICE static constexpr uint32_t workspace_bytes(uint32_t capacity) {
    return kBarrierArea + 2 * kBlocksPerParity * block_bytes<T>(capacity);
  }

  CF_DEVICE LinearExchange(void* workspace, uint32_t capacity, const ThreadGroup& group, const WaitLimit& limit)
      : hs_(static_cast<dev::Mbarrier*>(workspace), group, limit),
        blocks_(static_cast<uint8_t*>(workspace) + kBarrierArea),
        block_bytes_(block_bytes<T>(capacity)) {}

  CF_DEVICE void init() { hs_.init(); }
  CF_DEVICE uint32_t rank() const { return hs_.rank(); }
  CF_DEVICE const ThreadGroup& group() const { return hs_.group(); }

  // This call's send block (free to write: see PeerHandshake).
  CF_DEVICE T* begin() { return block(hs_.parity(), X == Transport::Pull ? 0 : rank()); }

  // The send block holds `count` elements (written by any group threads): make it available to the peers.
  // only_to != kAllPeers (Push): only that rank needs the data; the others get a bare arrival.
  CF_DEVICE void publish(uint32_t count, uint32_t only_to = kAllPeers) {
    if constexpr (X == Transport::Push) dev::fence_proxy_async();  // generic writes above, read by the bulk copy
    hs_.signal([&](dev::Mbarrier& ready, uint32_t q) {
      if (X == Transport::Push && (only_to == kAllPeers || only_to == q) && count > 0) {
        const uint32_t bytes = block_bytes<T>(count);
        T* send = block(hs_.parity(), rank());
        ready.arrive_expect_tx_remote(bytes, q);
        dev::bulk_copy_s2peer(send, send, bytes, ready, q);
      } else {
        ready.arrive_remote(q);
      }
    });
  }

  CF_DEVICE void wait_ready() { hs_.wait(); }

  // Rank q's block of this call (after wait_ready, before finish); this rank's own send block for q == rank().
  CF_DEVICE const T* block_of(uint32_t q) {
    if constexpr (X == Transport::Pull) {
      T* send = block(hs_.parity(), 0);
      return q == rank() ? send : dev::map_shared_rank(send, q);
    } else {
      return block(hs_.parity(), q);
    }
  }

  CF_DEVICE void finish() { hs_.finish(); }

 private:
  CF_DEVICE T* block(uint32_t p, uint32_t index) {
    return reinterpret_cast<T*>(blocks_ + (p * kBlocksPerParity + index) * block_bytes_);
  }

  PeerHandshake<N> hs_;
  uint8_t* blocks_;
  uint32_t block_bytes_;
};

// The pairing of the Tree strategy (ClusterReduce and ClusterGather): recursive doubling over the largest power of
// two P <= N in L = log2 P rounds; ranks r >= P fold into r - P first and get the result back last. One ready
// mbarrier (1 arrival) per channel and call parity: channel 0 the fold, 1 + k round k, L + 1 the unfold. As for the
// PeerHandshake no acknowledgement is needed: every channel is used in both directions every call (rounds are
// pairwise; the fold and the unfold pair up r and r - P), and each signal of call c+1 is sent after the sender's
// group finished call c.
template <uint32_t N, Transport X>
class TreeChannels {
 public:
  static_assert(N >= kMinClusterSize && N <= kMaxClusterSize, "cluster size must be 2..16");
  static constexpr uint32_t kP = floor_pow2(N), kL = log2_floor(N), kExtra = N - kP;
  static constexpr uint32_t kChannels = kL + 2, kFold = 0, kUnfold = kL + 1;
  static constexpr uint32_t kBarrierBytes = round_up(2 * kChannels * 8, kBarrierArea);
  // Rank r < P receives the fold of rank r + P (written so that N = P compiles without a pointless comparison).
  CF_HOST_DEVICE static constexpr bool folds(uint32_t r) {
    if constexpr (kExtra == 0) {
      return false;
    } else {
      return r < kExtra;
    }
  }

  CF_DEVICE TreeChannels(void* workspace, const ThreadGroup& g, const WaitLimit& limit)
      : bars_(static_cast<dev::Mbarrier*>(workspace)), group_(g), limit_(limit), rank_(dev::block_rank_in_cluster()) {}

  CF_DEVICE void init() {
    if (group_.rank == 0) {
      for (uint32_t i = 0; i < 2 * kChannels; ++i) bars_[i].init(1);
      dev::fence_mbarrier_init();
    }
  }
  CF_DEVICE uint32_t parity() const { return calls_ & 1u; }
  CF_DEVICE dev::Mbarrier& ready(uint32_t ch) { return bars_[parity() * kChannels + ch]; }
  // The partner's signal on channel ch of this call.
  CF_DEVICE void wait(uint32_t ch) { wait_phase(ready(ch), (calls_ >> 1) & 1u, limit_); }
  // Push: generic writes of a block before the bulk copy that reads it.
  CF_DEVICE void fence_for_push() {
    if constexpr (X == Transport::Push) dev::fence_proxy_async();
  }
  CF_DEVICE void end_call() { ++calls_; }
  CF_DEVICE const ThreadGroup& group() const { return group_; }
  CF_DEVICE uint32_t rank() const { return rank_; }

 private:
  dev::Mbarrier* bars_;
  ThreadGroup group_;
  WaitLimit limit_;
  uint32_t rank_;
  uint32_t calls_ = 0;
};

// The public face ClusterReduce and ClusterGather share over their Impl (the Linear or the Tree strategy): the
// configuration, the workspace size, construction and init. The collective adds its calls on impl_.
template <uint32_t N, typename T, Strategy S, Transport X, typename Impl>
class CollectiveFront {
 public:
  static constexpr uint32_t kClusterSize = N;
  static constexpr Strategy kStrategy = S;
  static constexpr Transport kTransport = X;
  using Element = T;

  // Shared-memory bytes the workspace needs for calls of up to `capacity` elements (host or device).
  CF_HOST_DEVICE static constexpr uint32_t workspace_bytes(uint32_t capacity) { return Impl::workspace_bytes(capacity); }

  // workspace: workspace_bytes(capacity) bytes of this CTA's shared memory, 16-byte aligned, the same offset in
  // every CTA. group: the threads that make the calls (every CTA the same shape). limit: optional bounded waits.
  CF_DEVICE CollectiveFront(void* workspace, uint32_t capacity, ThreadGroup group, WaitLimit limit)
      : impl_(workspace, capacity, group, limit) {}

  // Every group thread; then a cluster_sync() before the first call.
  CF_DEVICE void init() { impl_.init(); }

 protected:
  Impl impl_;
};

}  // namespace detail
}  // namespace cf::prim
