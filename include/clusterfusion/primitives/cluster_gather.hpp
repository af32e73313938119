// ClusterGather: all-gather across the N CTAs of a thread-block cluster over distributed shared memory. After
// all_gather(src, dst, count) every CTA's dst holds [rank 0's src | rank 1's src | ... | rank N-1's src]
// (N * count elements, bit-exact copies).
//
//   using Gather = prim::ClusterGather<4, dev::f16>;
//   Gather gather(smem + kGatherOff, kCap);     // workspace: Gather::workspace_bytes(kCap) bytes, same offset in
//   gather.init();                              // every CTA, 16-byte aligned
//   dev::cluster_sync();
//   gather.all_gather(my_slice, full, count);   // every thread of every CTA; full: N * count elements
//
// Template arguments, contract and waits as for ClusterReduce (collective.hpp, cluster_reduce.hpp). src and dst
// are in this CTA's shared or global memory; src may be dst + rank * count (in place), otherwise they must not
// overlap. On return the group has synchronised and src may be overwritten at once.
#pragma once
#include <cstdint>
#include <type_traits>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/primitives/collective.hpp"

namespace cf::prim {
namespace detail {

template <uint32_t N, typename T, Transport X>
class LinearGather {
 public:
  using Exchange = LinearExchange<N, T, X>;
  CF_HOST_DEVICE static constexpr uint32_t workspace_bytes(uint32_t capacity) {
    return Exchange::workspace_bytes(capacity);
  }
  CF_DEVICE LinearGather(void* workspace, uint32_t capacity, const ThreadGroup& g, const WaitLimit& limit)
      : ex_(workspace, capacity, g, limit) {}
  CF_DEVICE void init() { ex_.init(); }

  CF_DEVICE void run(const T* src, T* dst, uint32_t count) {
    const ThreadGroup& g = ex_.group();
    T* send = ex_.begin();
    group_copy(send, src, count, g);
    ex_.publish(count);
    ex_.wait_ready();
    constexpr uint32_t kVec = kVectorBytes / sizeof(T);
    if (aligned16(dst) && count % kVec == 0) {
      const uint32_t vectors = count / kVec;
      for (uint32_t i = g.rank; i < N * vectors; i += g.size) {
        const uint32_t q = i / vectors, v = i - q * vectors;
        dev::store16(dst + q * count + v * kVec, dev::load16(ex_.block_of(q) + v * kVec));
      }
    } else {
      for (uint32_t i = g.rank; i < N * count; i += g.size) {
        const uint32_t q = i / count;
        dst[i] = ex_.block_of(q)[i - q * count];
      }
    }
    ex_.finish();
  }

 private:
  Exchange ex_;
};

// Tree: recursive doubling; in round k ranks r and r ^ 2^k (< P) exchange every block they hold, so after round k
// rank r holds the blocks of its aligned group of 2^(k+1) ranks (plus those ranks' folded extras). Channels as in
// TreeReduce: fold (extra rank r >= P gives its block to r - P), rounds, unfold (r - P gives all N blocks to r).
// Blocks are gathered at their final positions in a per-parity buffer of N blocks (stride: count rounded up to 16
// bytes), then copied to dst. Handshake (ready mbarriers per parity and channel, no acknowledgements) as in
// TreeReduce.
template <uint32_t N, typename T, Transport X>
class TreeGather {
  using Channels = TreeChannels<N, X>;

 public:
  static constexpr uint32_t kP = Channels::kP, kL = Channels::kL, kExtra = Channels::kExtra;
  static constexpr uint32_t kFold = Channels::kFold, kUnfold = Channels::kUnfold;
  CF_HOST_DEVICE static constexpr bool folds(uint32_t r) { return Channels::folds(r); }

  CF_HOST_DEVICE static constexpr uint32_t workspace_bytes(uint32_t capacity) {
    return Channels::kBarrierBytes + 2 * N * block_bytes<T>(capacity);
  }
  CF_DEVICE TreeGather(void* workspace, uint32_t capacity, const ThreadGroup& g, const WaitLimit& limit)
      : ch_(workspace, g, limit),
        blocks_(static_cast<uint8_t*>(workspace) + Channels::kBarrierBytes),
        half_bytes_(N * block_bytes<T>(capacity)),
        group_(g),
        rank_(dev::block_rank_in_cluster()) {}

  CF_DEVICE void init() { ch_.init(); }

  CF_DEVICE void run(const T* src, T* dst, uint32_t count) {
    const uint32_t stride = block_bytes<T>(count) / sizeof(T);  // elements between blocks
    group_copy(gathered() + rank_ * stride, src, count, group_);
    fence_for_push();
    group_.sync();

    if (rank_ >= kP) {
      const uint32_t low = rank_ - kP;
      if (group_.rank == 0) send(kFold, low, rank_, 1, stride);
      ch_.wait(kUnfold);
      // every block but our own comes from `low`
      copy_out(dst, count, stride, [&](uint32_t s) { return s == rank_ ? gathered() : incoming(low); });
      group_.sync();
      ch_.end_call();
      return;
    }
    if (folds(rank_)) {
      const uint32_t high = rank_ + kP;
      ch_.wait(kFold);
      if constexpr (X == Transport::Pull) copy_blocks(incoming(high), high, 1, count, stride);
      fence_for_push();
      group_.sync();
    }
    for (uint32_t k = 0; k < kL; ++k) {
      const uint32_t partner = rank_ ^ (1u << k), ch = 1 + k;
      const uint32_t mine = rank_ >> k << k, theirs = partner >> k << k, width = 1u << k;
      if (group_.rank == 0) send_group(ch, partner, mine, width, stride);
      ch_.wait(ch);
      const bool last = k + 1 == kL;
      if (last) {
        const T* other = incoming(partner);
        copy_out(dst, count, stride, [&](uint32_t s) {
          const uint32_t base = s >= kP ? s - kP : s;
          return (base >> k << k) == theirs ? other : gathered();
        });
        if (X == Transport::Pull && folds(rank_)) {  // the unfold partner reads all N blocks from us
          copy_blocks(other, theirs, width, count, stride);
          if (folds(theirs)) copy_blocks(other, theirs + kP, min_u(width, kExtra - theirs), count, stride);
        }
      } else if constexpr (X == Transport::Pull) {
        const T* other = incoming(partner);
        copy_blocks(other, theirs, width, count, stride);
        if (folds(theirs)) copy_blocks(other, theirs + kP, min_u(width, kExtra - theirs), count, stride);
      }
      fence_for_push();
      group_.sync();
    }
    if (folds(rank_) && group_.rank == 0) {
      const uint32_t high = rank_ + kP;
      send(kUnfold, high, 0, high, stride);
      if (high + 1 < N) send(kUnfold, high, high + 1, N - high - 1, stride, /*announce=*/false);
    }
    ch_.end_call();
  }

 private:
  CF_DEVICE static uint32_t min_u(uint32_t a, uint32_t b) { return a < b ? a : b; }
  CF_DEVICE dev::Mbarrier& ready_bar(uint32_t ch) { return ch_.ready(ch); }
  CF_DEVICE T* gathered() { return reinterpret_cast<T*>(blocks_ + ch_.parity() * half_bytes_); }
  CF_DEVICE void fence_for_push() { ch_.fence_for_push(); }
  // Where blocks from `from` are read: its gathered buffer (Pull) or ours, where its pushes landed (Push).
  CF_DEVICE const T* incoming(uint32_t from) {
    if constexpr (X == Transport::Pull) {
      return dev::map_shared_rank(gathered(), from);
    } else {
      return gathered();
    }
  }
  // One thread. Makes blocks [first, first + n) available to `to` on channel ch. Pull: signal only. Push: bulk copy
  // them into the same positions of `to`'s buffer. The unfold sends N - 1 blocks in two copies under one arrival:
  // the first call announces all of them, the second passes announce = false.
  CF_DEVICE void send(uint32_t ch, uint32_t to, uint32_t first, uint32_t n, uint32_t stride, bool announce = true) {
    if constexpr (X == Transport::Pull) {
      if (announce) ready_bar(ch).arrive_remote(to);
    } else {
      const uint32_t bytes = n * stride * uint32_t(sizeof(T));
      if (announce) {
        // The unfold sends N - 1 blocks in two copies; announce all of them with the first.
        const uint32_t total = ch == kUnfold ? (N - 1) * stride * uint32_t(sizeof(T)) : bytes;
        if (total > 0) {
          ready_bar(ch).arrive_expect_tx_remote(total, to);
        } else {
          ready_bar(ch).arrive_remote(to);
        }
      }
      if (bytes > 0) {
        T* blocks = gathered() + first * stride;
        dev::bulk_copy_s2peer(blocks, blocks, bytes, ready_bar(ch), to);
      }
    }
  }
  // Round exchange: this rank's group [mine, mine + width) and its folded extras [mine + P, ...).
  CF_DEVICE void send_group(uint32_t ch, uint32_t to, uint32_t mine, uint32_t width, uint32_t stride) {
    const uint32_t extras = folds(mine) ? min_u(width, kExtra - mine) : 0;
    if (X == Transport::Pull || stride == 0) {
      ready_bar(ch).arrive_remote(to);
    } else {
      const uint32_t block = stride * uint32_t(sizeof(T));
      ready_bar(ch).arrive_expect_tx_remote((width + extras) * block, to);
      T* low = gathered() + mine * stride;
      dev::bulk_copy_s2peer(low, low, width * block, ready_bar(ch), to);
      if (extras > 0) {
        T* high = gathered() + (mine + kP) * stride;
        dev::bulk_copy_s2peer(high, high, extras * block, ready_bar(ch), to);
      }
    }
  }
  // gathered[s] = from[s] for s in [first, first + n) (Pull).
  CF_DEVICE void copy_blocks(const T* from, uint32_t first, uint32_t n, uint32_t count, uint32_t stride) {
    T* to = gathered();
    constexpr uint32_t kVec = kVectorBytes / sizeof(T);
    const uint32_t vectors = stride / kVec;
    for (uint32_t i = group_.rank; i < n * vectors; i += group_.size) {
      const uint32_t s = first + i / vectors, off = s * stride + (i % vectors) * kVec;
      dev::store16(to + off, dev::load16(from + off));
    }
  }
  // dst[s * count + i] = source(s)[s * stride + i] for every block s.
  template <typename Source>
  CF_DEVICE void copy_out(T* dst, uint32_t count, uint32_t stride, Source source) {
    constexpr uint32_t kVec = kVectorBytes / sizeof(T);
    if (aligned16(dst) && count % kVec == 0) {
      const uint32_t vectors = count / kVec;
      for (uint32_t i = group_.rank; i < N * vectors; i += group_.size) {
        const uint32_t s = i / vectors, v = i - s * vectors;
        dev::store16(dst + s * count + v * kVec, dev::load16(source(s) + s * stride + v * kVec));
      }
    } else {
      for (uint32_t i = group_.rank; i < N * count; i += group_.size) {
        const uint32_t s = i / count;
        dst[i] = source(s)[s * stride + (i - s * count)];
      }
    }
  }

  Channels ch_;
  uint8_t* blocks_;
  uint32_t half_bytes_;
  ThreadGroup group_;
  uint32_t rank_;
};

}  // namespace detail

// Capacity: the elements of one rank's slice.
template <uint32_t N, typename T, Strategy S = kDefaultStrategy<N>, Transport X = kDefaultTransport<N>>
class ClusterGather
    : public detail::CollectiveFront<
          N, T, S, X,
          std::conditional_t<S == Strategy::Linear, detail::LinearGather<N, T, X>, detail::TreeGather<N, T, X>>> {
 public:
  CF_DEVICE ClusterGather(void* workspace, uint32_t capacity, ThreadGroup group = ThreadGroup::block(),
                          WaitLimit limit = {})
      : ClusterGather::CollectiveFront(workspace, capacity, group, limit) {}

  // dst[q * count + i] := rank q's src[i] for every rank q, i < count, on every CTA.
  CF_DEVICE void all_gather(const T* src, T* dst, uint32_t count) { this->impl_.run(src, dst, count); }
};

}  // namespace cf::prim
