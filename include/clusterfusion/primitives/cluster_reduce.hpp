// ClusterReduce: all-reduce (and reduce-to-root) of a shared-memory buffer across the N CTAs of a thread-block
// cluster, over distributed shared memory, deterministic, usable many times inside one fused kernel.
//
//   namespace prim = cf::prim;
//   using Reduce = prim::ClusterReduce<4, float>;                    // N = cluster size, element type
//   constexpr uint32_t kCap = 1024;                                  // most elements per call
//   // carve (same offset in every CTA, 16-byte aligned): Reduce::workspace_bytes(kCap) bytes
//   Reduce reduce(smem + kReduceOff, kCap);                          // every thread of the block
//   reduce.init();
//   dev::cluster_sync();                                             // before the first call (start-up barrier)
//   for (...) {
//     ... write partial[0 .. count) in this CTA's shared memory ...
//     reduce.all_reduce(partial, count, prim::Sum{});                // every thread of every CTA
//     ... partial now holds the sum over the cluster, the same bits on every CTA ...
//   }
//   dev::cluster_sync();                                             // before exit
//
// Template arguments: N (2..16; > 8 needs LaunchConfig::allow_nonportable_cluster), T (float, dev::f16, dev::bf16),
// Strategy (Linear / Tree) and Transport (Pull / Push), defaults kDefaultStrategy / kDefaultTransport (collective.hpp).
// The common contract (workspace, init, who calls, teardown) is in collective.hpp; ops in ops.hpp and
// softmax_state.hpp; algorithms, handshake and the determinism argument in docs/collectives.md.
//
// Calls (all threads of the group, every CTA, same count; buf in this CTA's shared or global memory, any offset):
//   all_reduce(buf, count, op)          buf[0..count) := op-reduction over the N CTAs' buf, on every CTA.
//   reduce_to_root(buf, count, root, op) the same result on CTA `root` only; other CTAs' buf is left unchanged.
// On return the group has synchronised: buf's new contents are visible to every group thread, and buf may be
// overwritten at once (the collective copied it into the workspace first).
//
// Determinism: the combination order is a fixed expression tree over the ranks (Linear: ((x0 + x1) + x2) + ...;
// Tree: pairs of aligned rank groups, lower group on the left, extra ranks r >= P folded as (x(r-P) + x(r)) first),
// evaluated identically on every rank, so results are bit-identical across ranks and runs. Elements are combined in
// fp32 and rounded to T whenever a value is stored: Linear rounds once; Tree rounds after every round (for fp16/bf16
// the two strategies can differ in the last bit, each one deterministic).
#pragma once
#include <cstdint>
#include <type_traits>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/primitives/collective.hpp"
#include "clusterfusion/primitives/ops.hpp"

namespace cf::prim {
namespace detail {

// Linear: one exchange (LinearExchange), then every rank combines blocks 0..N-1 in rank order.
template <uint32_t N, typename T, Transport X>
class LinearReduce {
 public:
  using Exchange = LinearExchange<N, T, X>;
  CF_HOST_DEVICE static constexpr uint32_t workspace_bytes(uint32_t capacity) {
    return Exchange::workspace_bytes(capacity);
  }
  CF_DEVICE LinearReduce(void* workspace, uint32_t capacity, const ThreadGroup& g, const WaitLimit& limit)
      : ex_(workspace, capacity, g, limit) {}
  CF_DEVICE void init() { ex_.init(); }

  template <typename Op>
  CF_DEVICE void run(T* buf, uint32_t count, uint32_t root) {
    using C = Combiner<Op, T>;
    const ThreadGroup& g = ex_.group();
    T* send = ex_.begin();
    group_copy_padded(send, buf, count, g);
    ex_.publish(count, root);
    ex_.wait_ready();
    if (root == Exchange::kAllPeers || root == ex_.rank()) {
      const T* blocks[N];
      CF_UNROLL
      for (uint32_t q = 0; q < N; ++q) blocks[q] = ex_.block_of(q);
      const uint32_t vectors = (count + C::kElems - 1) / C::kElems;
      for (uint32_t v = g.rank; v < vectors; v += g.size) {
        const uint32_t e0 = v * C::kElems;
        typename C::Acc acc = C::load(blocks[0], e0);
        CF_UNROLL
        for (uint32_t q = 1; q < N; ++q) C::combine(acc, C::load(blocks[q], e0));
        C::store(buf, e0, count - e0 < C::kElems ? count - e0 : C::kElems, acc);
      }
    }
    ex_.finish();
  }

 private:
  Exchange ex_;
};

// Tree: recursive doubling over the TreeChannels pairing (collective.hpp). Value blocks per parity: 0 = the input,
// 1 = after the fold, k + 2 = after round k; Push adds one receive block per channel. Per channel and call the
// sender signals the receiver (Push: with the bytes of its bulk copy) once its group synchronised after writing the
// block; the receiver waits and reads. Fold: rank r >= P sends x_r to r - P, which combines (x_{r-P} (+) x_r);
// round k: ranks r and r ^ 2^k exchange their values and both compute (lower rank's group) (+) (higher rank's
// group); unfold: rank r - P sends the final value back to r >= P.
template <uint32_t N, typename T, Transport X>
class TreeReduce {
  using Channels = TreeChannels<N, X>;

 public:
  static constexpr uint32_t kP = Channels::kP, kL = Channels::kL, kChannels = Channels::kChannels;
  static constexpr uint32_t kFold = Channels::kFold, kUnfold = Channels::kUnfold;
  static constexpr uint32_t kValues = kL + 2;
  static constexpr uint32_t kBlocksPerParity = kValues + (X == Transport::Push ? kChannels : 0);

  CF_HOST_DEVICE static constexpr uint32_t workspace_bytes(uint32_t capacity) {
    return Channels::kBarrierBytes + 2 * kBlocksPerParity * block_bytes<T>(capacity);
  }
  CF_DEVICE TreeReduce(void* workspace, uint32_t capacity, const ThreadGroup& g, const WaitLimit& limit)
      : ch_(workspace, g, limit),
        blocks_(static_cast<uint8_t*>(workspace) + Channels::kBarrierBytes),
        block_bytes_(block_bytes<T>(capacity)) {}

  CF_DEVICE void init() { ch_.init(); }

  template <typename Op>
  CF_DEVICE void run(T* buf, uint32_t count, uint32_t root) {
    using C = Combiner<Op, T>;
    const ThreadGroup& g = ch_.group();
    const uint32_t rank = ch_.rank();
    const bool store_result = root == LinearExchange<N, T, X>::kAllPeers || root == rank;
    const uint32_t vectors = (count + C::kElems - 1) / C::kElems;
    group_copy_padded(value(0), buf, count, g);
    ch_.fence_for_push();
    g.sync();

    if (rank >= kP) {  // extra rank: fold into rank - P, get the result back
      const uint32_t low = rank - kP;
      if (g.rank == 0) send(kFold, low, value(0), count);
      ch_.wait(kUnfold);
      const T* result = incoming(kUnfold, low, kValues - 1);
      if (store_result) group_copy(buf, result, count, g);
      g.sync();
      ch_.end_call();
      return;
    }

    uint32_t current = 0;  // value block holding this rank's running value
    if (Channels::folds(rank)) {  // fold: (x_r) (+) (x_{r+P})
      ch_.wait(kFold);
      const T* other = incoming(kFold, rank + kP, 0);
      for (uint32_t v = g.rank; v < vectors; v += g.size) {
        const uint32_t e0 = v * C::kElems;
        typename C::Acc acc = C::load(value(0), e0);
        C::combine(acc, C::load(other, e0));
        C::store(value(1), e0, C::kElems, acc);
      }
      ch_.fence_for_push();
      g.sync();
      current = 1;
    }
    for (uint32_t k = 0; k < kL; ++k) {
      const uint32_t partner = rank ^ (1u << k), ch = 1 + k;
      if (g.rank == 0) send(ch, partner, value(current), count);
      ch_.wait(ch);
      const uint32_t partner_value = k == 0 ? (Channels::folds(partner) ? 1u : 0u) : k + 1;
      const T* other = incoming(ch, partner, partner_value);
      const T* lower = partner < rank ? other : value(current);
      const T* higher = partner < rank ? value(current) : other;
      const bool last = k + 1 == kL;
      const bool keep = !last || Channels::folds(rank);  // the final value is sent on by the unfold
      const bool to_buf = last && store_result;
      for (uint32_t v = g.rank; v < vectors; v += g.size) {
        const uint32_t e0 = v * C::kElems;
        typename C::Acc acc = C::load(lower, e0);
        C::combine(acc, C::load(higher, e0));
        if (keep) C::store(value(k + 2), e0, C::kElems, acc);
        if (to_buf) C::store(buf, e0, count - e0 < C::kElems ? count - e0 : C::kElems, acc);
      }
      ch_.fence_for_push();
      g.sync();
      current = k + 2;
    }
    if (Channels::folds(rank) && g.rank == 0) send(kUnfold, rank + kP, value(kValues - 1), count);
    ch_.end_call();
  }

 private:
  CF_DEVICE T* value(uint32_t index) {
    return reinterpret_cast<T*>(blocks_ + (ch_.parity() * kBlocksPerParity + index) * block_bytes_);
  }
  CF_DEVICE T* receive_block(uint32_t ch) { return value(kValues + ch); }
  // One thread: make `src` (this rank's value block) available to `to` on channel ch.
  CF_DEVICE void send(uint32_t ch, uint32_t to, T* src, uint32_t count) {
    if (X == Transport::Pull || count == 0) {
      ch_.ready(ch).arrive_remote(to);
    } else {
      const uint32_t bytes = block_bytes<T>(count);
      ch_.ready(ch).arrive_expect_tx_remote(bytes, to);
      dev::bulk_copy_s2peer(receive_block(ch), src, bytes, ch_.ready(ch), to);
    }
  }
  // The block `from` sent on channel ch (its value block `from_value` for Pull), after the channel's wait.
  CF_DEVICE const T* incoming(uint32_t ch, uint32_t from, uint32_t from_value) {
    if constexpr (X == Transport::Pull) {
      return dev::map_shared_rank(value(from_value), from);
    } else {
      return receive_block(ch);
    }
  }

  Channels ch_;
  uint8_t* blocks_;
  uint32_t block_bytes_;
};

}  // namespace detail

// Capacity: the elements of one call.
template <uint32_t N, typename T, Strategy S = kDefaultStrategy<N>, Transport X = kDefaultTransport<N>>
class ClusterReduce
    : public detail::CollectiveFront<
          N, T, S, X,
          std::conditional_t<S == Strategy::Linear, detail::LinearReduce<N, T, X>, detail::TreeReduce<N, T, X>>> {
 public:
  CF_DEVICE ClusterReduce(void* workspace, uint32_t capacity, ThreadGroup group = ThreadGroup::block(),
                          WaitLimit limit = {})
      : ClusterReduce::CollectiveFront(workspace, capacity, group, limit) {}

  template <typename Op = Sum>
  CF_DEVICE void all_reduce(T* buf, uint32_t count, Op = {}) {
    this->impl_.template run<Op>(buf, count, detail::LinearExchange<N, T, X>::kAllPeers);
  }
  template <typename Op = Sum>
  CF_DEVICE void reduce_to_root(T* buf, uint32_t count, uint32_t root, Op = {}) {
    this->impl_.template run<Op>(buf, count, root);
  }
};

}  // namespace cf::prim
