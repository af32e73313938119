// Planted bugs for the emulator's access checks (docs/emulator.md): data races on shared, distributed shared and
// global memory, a missing async-proxy fence, uninitialised reads, accesses one byte past the exact end, divergent
// .aligned barriers, a block exiting before its push is confirmed, a DSMEM read between cluster_arrive and
// cluster_wait, a stale mbarrier parity, and a flag polled with plain loads. Each kernel carries the bug when kBug is true and is its fixed twin when
// false; the emulator must report every bug under every schedule seed (tests/emu/emulator/test_planted_bugs.cpp)
// and the twins must run clean and compute what the expected_* functions say, in both builds (the GPU binary runs
// the twins only). Runners return what the kernel wrote.
#pragma once
#include <cstdint>
#include <vector>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/device/launch.hpp"
#include "kernels/planted_bugs.hpp"

namespace cf::test::races {
namespace dev = cf::dev;
using bugs::config;
using bugs::OutParams;

inline constexpr uint32_t kThreads = 64;

template <typename K, typename P>
std::vector<uint32_t> launch_out(const char* name, uint32_t blocks, uint32_t cluster, uint32_t threads, size_t smem,
                                 uint64_t seed, K kernel, P params, dev::DeviceBuffer<uint32_t>& out) {
  dev::launch(config(name, blocks, cluster, threads, smem, seed), kernel, params);
  dev::synchronize();
  return out.download();
}

// 1. A plain shared-memory race: threads read what another warp writes with no block_sync in between (the words
//    were initialised before, so either order is a race, never an uninitialised read). Twin: block_sync.
//    out[t] = 7 * ((t + 33) % n).
template <bool kBug>
CF_GLOBAL void smem_race(const CF_GRID_CONSTANT OutParams p) {
  auto* s = reinterpret_cast<uint32_t*>(dev::dynamic_smem());
  const uint32_t t = dev::thread_rank(), n = dev::num_threads();
  s[t] = 0;
  dev::block_sync();
  s[t] = 7 * t;
  if constexpr (!kBug) dev::block_sync();
  p.out[t] = s[(t + 33) % n];
}
template <bool kBug>
std::vector<uint32_t> run_smem_race(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(kThreads);
  return launch_out("smem_race", 1, 1, kThreads, kThreads * 4, seed, smem_race<kBug>, OutParams{out.data(), nullptr},
                    out);
}
inline std::vector<uint32_t> expected_smem_race() {
  std::vector<uint32_t> v(kThreads);
  for (uint32_t t = 0; t < kThreads; ++t) v[t] = 7 * ((t + 33) % kThreads);
  return v;
}

// 2. A CTA overwrites its buffer while its peer may still read it through DSMEM: only a block_sync between the peer's
//    read and the overwrite. Twin: a cluster_sync. out[t] = rank 0's buffer as rank 1 read it (t).
template <bool kBug>
CF_GLOBAL void dsmem_overwrite(const CF_GRID_CONSTANT OutParams p) {
  auto* buf = reinterpret_cast<uint32_t*>(dev::dynamic_smem());
  const uint32_t t = dev::thread_rank(), rank = dev::block_rank_in_cluster();
  buf[t] = 100 * rank + t;
  dev::cluster_sync();
  if (rank == 1) p.out[t] = dev::map_shared_rank(buf, 0)[t];
  if constexpr (kBug) {
    dev::block_sync();
  } else {
    dev::cluster_sync();
  }
  if (rank == 0) buf[t] = 0xdead;
  dev::cluster_sync();
}
inline std::vector<uint32_t> ramp0(uint32_t n) {
  std::vector<uint32_t> v(n);
  for (uint32_t i = 0; i < n; ++i) v[i] = i;
  return v;
}
template <bool kBug>
std::vector<uint32_t> run_dsmem_overwrite(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(kThreads);
  return launch_out("dsmem_overwrite", 2, 2, kThreads, kThreads * 4, seed, dsmem_overwrite<kBug>,
                    OutParams{out.data(), nullptr}, out);
}

// 3. Two CTAs of a cluster write the same slot of a third one's shared memory. Twin: a slot each.
//    out[t] = (1000 + t) + (2000 + t).
template <bool kBug>
CF_GLOBAL void dsmem_same_slot(const CF_GRID_CONSTANT OutParams p) {
  auto* slots = reinterpret_cast<uint32_t*>(dev::dynamic_smem());
  const uint32_t t = dev::thread_rank(), rank = dev::block_rank_in_cluster(), n = dev::num_threads();
  dev::cluster_sync();
  if (rank != 0) dev::map_shared_rank(slots, 0)[(kBug ? 0 : rank - 1) * n + t] = 1000 * rank + t;
  dev::cluster_sync();
  if (rank == 0) p.out[t] = slots[t] + slots[n + t];
  dev::cluster_sync();
}
template <bool kBug>
std::vector<uint32_t> run_dsmem_same_slot(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(kThreads);
  return launch_out("dsmem_same_slot", 3, 3, kThreads, 2 * kThreads * 4, seed, dsmem_same_slot<kBug>,
                    OutParams{out.data(), nullptr}, out);
}
inline std::vector<uint32_t> expected_same_slot() {
  std::vector<uint32_t> v(kThreads);
  for (uint32_t t = 0; t < kThreads; ++t) v[t] = 3000 + 2 * t;
  return v;
}

// 4. Two CTAs (two clusters) write the same elements of a global buffer. Twin: a row each. out[b * n + t] = t + 1.
template <bool kBug>
CF_GLOBAL void global_race(const CF_GRID_CONSTANT OutParams p) {
  const uint32_t t = dev::thread_rank(), b = dev::block_idx().x, n = dev::num_threads();
  p.out[(kBug ? 0 : b * n) + t] = t + 1;
}
template <bool kBug>
std::vector<uint32_t> run_global_race(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(2 * kThreads);
  return launch_out("global_race", 2, 1, kThreads, 0, seed, global_race<kBug>, OutParams{out.data(), nullptr}, out);
}
inline std::vector<uint32_t> expected_global_race() {
  std::vector<uint32_t> v(2 * kThreads);
  for (uint32_t i = 0; i < 2 * kThreads; ++i) v[i] = i % kThreads + 1;
  return v;
}

// 5. A signal sent before the data it announces: rank 0 arrives on rank 1's mbarrier (remote), then writes into
//    rank 1's inbox through DSMEM. Twin: write, then arrive. out[t] = 5t + 1.
template <bool kBug>
CF_GLOBAL void remote_arrive_early(const CF_GRID_CONSTANT OutParams p) {
  uint8_t* smem = dev::dynamic_smem();
  auto* bar = reinterpret_cast<dev::Mbarrier*>(smem);
  auto* inbox = reinterpret_cast<uint32_t*>(smem + 128);
  const uint32_t t = dev::thread_rank(), rank = dev::block_rank_in_cluster();
  if (t == 0) {
    bar->init(dev::num_threads());
    dev::fence_mbarrier_init();
  }
  inbox[t] = 0;
  dev::cluster_sync();
  if (rank == 0) {
    if constexpr (kBug) bar->arrive_remote(1);
    dev::map_shared_rank(inbox, 1)[t] = 5 * t + 1;
    if constexpr (!kBug) bar->arrive_remote(1);
  } else {
    bar->wait(0);
    p.out[t] = inbox[t];
  }
  dev::cluster_sync();
}
template <bool kBug>
std::vector<uint32_t> run_remote_arrive_early(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(kThreads);
  return launch_out("remote_arrive_early", 2, 2, kThreads, 128 + kThreads * 4, seed, remote_arrive_early<kBug>,
                    OutParams{out.data(), nullptr}, out);
}

inline std::vector<uint32_t> expected_remote_arrive() {
  std::vector<uint32_t> v(kThreads);
  for (uint32_t t = 0; t < kThreads; ++t) v[t] = 5 * t + 1;
  return v;
}

// 6. Lane 0 writes a word that the other lanes of its warp read, with no syncwarp in between. Twin: syncwarp.
//    out[t] = 3 * warp + 1.
template <bool kBug>
CF_GLOBAL void warp_race(const CF_GRID_CONSTANT OutParams p) {
  auto* s = reinterpret_cast<uint32_t*>(dev::dynamic_smem());
  const uint32_t t = dev::thread_rank(), warp = dev::warp_id();
  if (dev::lane_id() == 0) s[warp] = 0;
  dev::block_sync();
  if (dev::lane_id() == 0) s[warp] = 3 * warp + 1;
  if constexpr (!kBug) dev::syncwarp();
  p.out[t] = s[warp];
}
template <bool kBug>
std::vector<uint32_t> run_warp_race(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(kThreads);
  return launch_out("warp_race", 1, 1, kThreads, 128, seed, warp_race<kBug>, OutParams{out.data(), nullptr}, out);
}
inline std::vector<uint32_t> expected_warp_race() {
  std::vector<uint32_t> v(kThreads);
  for (uint32_t t = 0; t < kThreads; ++t) v[t] = 3 * (t / 32) + 1;
  return v;
}

// 7. The last-block pattern without its fences: every CTA stores a partial and bumps a counter; the CTA that bumps
//    it last sums the partials. Without the release fence before the atomic and the acquire fence after it, nothing
//    orders the other CTAs' stores before the last one's loads. Twin: threadfence() on both sides. out[0] = 10.
struct LastBlockParams {
  uint32_t* out;
  uint32_t* partial;  // [blocks], declared scratch
  uint32_t* counter;
};
inline constexpr uint32_t kLastBlockCtas = 4;
template <bool kBug>
CF_GLOBAL void last_block(const CF_GRID_CONSTANT LastBlockParams p) {
  const uint32_t b = dev::block_idx().x, n_blocks = dev::grid_dim().x;
  if (dev::thread_rank() != 0) return;
  p.partial[b] = b + 1;
  if constexpr (!kBug) dev::threadfence();  // release: the partial before the arrival
  if (dev::atomic_add(p.counter, 1u) == n_blocks - 1) {
    if constexpr (!kBug) dev::threadfence();  // acquire: every partial
    uint32_t sum = 0;
    for (uint32_t c = 0; c < n_blocks; ++c) sum += p.partial[c];
    p.out[0] = sum;
    (void)dev::atomic_exch(p.counter, 0u);
  }
}
template <bool kBug>
std::vector<uint32_t> run_last_block(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(1), partial(kLastBlockCtas), counter(1);
  dev::declare_scratch(partial.data(), partial.bytes());
  return launch_out("last_block", kLastBlockCtas, 1, 32, 0, seed, last_block<kBug>,
                    LastBlockParams{out.data(), partial.data(), counter.data()}, out);
}

// 8. A DSMEM push of a buffer the threads wrote with ordinary stores, with no fence_proxy_async between the stores
//    and the bulk copy (the copy may read stale bytes). Twin: the fence. out[rank][i] = 100 * peer + i.
inline constexpr uint32_t kPushWords = 64;
template <bool kBug>
CF_GLOBAL void push_unfenced(const CF_GRID_CONSTANT OutParams p) {
  uint8_t* smem = dev::dynamic_smem();
  auto* bar = reinterpret_cast<dev::Mbarrier*>(smem);
  auto* staging = reinterpret_cast<uint32_t*>(smem + 128);
  auto* inbox = reinterpret_cast<uint32_t*>(smem + 128 + kPushWords * 4);
  const uint32_t t = dev::thread_rank(), rank = dev::block_rank_in_cluster(), peer = rank ^ 1u;
  if (t == 0) {
    bar->init(1);
    dev::fence_mbarrier_init();
  }
  for (uint32_t i = t; i < kPushWords; i += dev::num_threads()) staging[i] = 100 * rank + i;
  if constexpr (!kBug) dev::fence_proxy_async();  // the generic stores above, before the async proxy reads them
  dev::cluster_sync();
  if (t == 0) {
    bar->arrive_expect_tx_remote(kPushWords * 4, peer);
    dev::bulk_copy_s2peer(inbox, staging, kPushWords * 4, *bar, peer);
  }
  bar->wait(0);
  for (uint32_t i = t; i < kPushWords; i += dev::num_threads()) p.out[rank * kPushWords + i] = inbox[i];
  dev::cluster_sync();  // the peer received our push (its wait) before we exit
}
template <bool kBug>
std::vector<uint32_t> run_push_unfenced(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(2 * kPushWords);
  return launch_out("push_unfenced", 2, 2, kThreads, 128 + 2 * kPushWords * 4, seed, push_unfenced<kBug>,
                    OutParams{out.data(), nullptr}, out);
}
inline std::vector<uint32_t> expected_push_unfenced() {
  std::vector<uint32_t> v(2 * kPushWords);
  for (uint32_t r = 0; r < 2; ++r)
    for (uint32_t i = 0; i < kPushWords; ++i) v[r * kPushWords + i] = 100 * (r ^ 1u) + i;
  return v;
}

// 9. A gather that drops the tail: 10 words copied into shared memory as 16-byte vectors only (words 8 and 9 never
//    arrive), then read. Twin: the scalar tail after the vectors. out[t] = in[t] + 1 for t < 10.
inline constexpr uint32_t kGatherWords = 10;
template <bool kBug>
CF_GLOBAL void gather_tail(const CF_GRID_CONSTANT OutParams p) {
  auto* buf = reinterpret_cast<uint32_t*>(dev::dynamic_smem());
  const uint32_t t = dev::thread_rank();
  constexpr uint32_t kVectors = kGatherWords / 4;
  if (t < kVectors) dev::store16(buf + 4 * t, dev::load16(p.in + 4 * t));
  if constexpr (!kBug)
    for (uint32_t i = kVectors * 4 + t; i < kGatherWords; i += dev::num_threads()) buf[i] = p.in[i];
  dev::block_sync();
  if (t < kGatherWords) p.out[t] = buf[t] + 1;
}
inline std::vector<uint32_t> gather_input() {
  std::vector<uint32_t> v(kGatherWords);
  for (uint32_t i = 0; i < kGatherWords; ++i) v[i] = 40 + 3 * i;
  return v;
}
template <bool kBug>
std::vector<uint32_t> run_gather_tail(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> in(kGatherWords), out(kGatherWords);
  in.upload(gather_input());
  return launch_out("gather_tail", 1, 1, 32, 128, seed, gather_tail<kBug>, OutParams{out.data(), in.data()}, out);
}
inline std::vector<uint32_t> expected_gather() {
  std::vector<uint32_t> v = gather_input();
  for (uint32_t& x : v) x += 1;
  return v;
}

// 10. Declared scratch read before this launch wrote it: the CTAs of a cluster store partials into a global scratch
//     buffer and rank 0 sums them after a cluster_sync, but rank 3 skips its store. Twin: every rank stores.
//     out[0] = 1 + 2 + 3 + 4.
template <bool kBug>
CF_GLOBAL void scratch_unwritten(const CF_GRID_CONSTANT LastBlockParams p) {
  const uint32_t rank = dev::block_rank_in_cluster(), n = dev::cluster_size();
  if (dev::thread_rank() == 0 && !(kBug && rank == n - 1)) p.partial[rank] = rank + 1;
  dev::cluster_sync();
  if (rank == 0 && dev::thread_rank() == 0) {
    uint32_t sum = 0;
    for (uint32_t r = 0; r < n; ++r) sum += p.partial[r];
    p.out[0] = sum;
  }
}
template <bool kBug>
std::vector<uint32_t> run_scratch_unwritten(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(1), partial(4);
  dev::declare_scratch(partial.data(), partial.bytes());
  return launch_out("scratch_unwritten", 4, 4, 32, 0, seed, scratch_unwritten<kBug>,
                    LastBlockParams{out.data(), partial.data(), nullptr}, out);
}

// 11. Shared memory of 200 bytes (not a multiple of 128: the emulator's guard page lies past 256) written one word
//     past its end. 12. A 12-byte DeviceBuffer written one element past its end (inside its 16-byte rounding).
//     Twins: the right bounds. out[t] = t + 1.
inline constexpr uint32_t kOddSmemWords = 50;
template <bool kBug>
CF_GLOBAL void smem_exact_end(const CF_GRID_CONSTANT OutParams p) {
  auto* s = reinterpret_cast<uint32_t*>(dev::dynamic_smem());
  const uint32_t t = dev::thread_rank();
  if (t < kOddSmemWords + (kBug ? 1 : 0)) s[t] = t;  // the bug: thread 50 writes bytes 200..203
  dev::block_sync();
  if (t < kOddSmemWords) p.out[t] = s[t] + 1;
}
template <bool kBug>
std::vector<uint32_t> run_smem_exact_end(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(kOddSmemWords);
  return launch_out("smem_exact_end", 1, 1, kThreads, kOddSmemWords * 4, seed, smem_exact_end<kBug>,
                    OutParams{out.data(), nullptr}, out);
}
inline constexpr uint32_t kOddBufferWords = 3;
template <bool kBug>
CF_GLOBAL void buffer_exact_end(const CF_GRID_CONSTANT OutParams p) {
  const uint32_t t = dev::thread_rank();
  if (t < kOddBufferWords + (kBug ? 1 : 0)) p.out[t] = t + 1;  // the bug: thread 3 writes out[3]
}
template <bool kBug>
std::vector<uint32_t> run_buffer_exact_end(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(kOddBufferWords);
  return launch_out("buffer_exact_end", 1, 1, 32, 0, seed, buffer_exact_end<kBug>, OutParams{out.data(), nullptr},
                    out);
}
inline std::vector<uint32_t> ramp1(uint32_t n) {
  std::vector<uint32_t> v(n);
  for (uint32_t i = 0; i < n; ++i) v[i] = i + 1;
  return v;
}

// 13. cluster_sync reached by the two halves of warp 0 at different calls (barrier.cluster is .aligned).
//     14. The same with a named barrier. Twins: one call for the whole warp. out[t] = t + 1.
template <bool kBug>
CF_GLOBAL void cluster_sync_divergent(const CF_GRID_CONSTANT OutParams p) {
  const uint32_t t = dev::thread_rank(), rank = dev::block_rank_in_cluster();
  if (kBug && dev::warp_id() == 0 && dev::lane_id() < 16) {
    dev::cluster_sync();
  } else {
    dev::cluster_sync();
  }
  if (rank == 0) p.out[t] = t + 1;
  dev::cluster_sync();
}
template <bool kBug>
std::vector<uint32_t> run_cluster_sync_divergent(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(kThreads);
  return launch_out("cluster_sync_divergent", 2, 2, kThreads, 0, seed, cluster_sync_divergent<kBug>,
                    OutParams{out.data(), nullptr}, out);
}
template <bool kBug>
CF_GLOBAL void named_barrier_divergent(const CF_GRID_CONSTANT OutParams p) {
  auto* s = reinterpret_cast<uint32_t*>(dev::dynamic_smem());
  const uint32_t t = dev::thread_rank(), n = dev::num_threads();
  s[t] = t;
  if (kBug && dev::warp_id() == 0 && dev::lane_id() < 16) {
    dev::named_barrier_sync(1, n);
  } else {
    dev::named_barrier_sync(1, n);
  }
  p.out[t] = s[t] + 1;
}
template <bool kBug>
std::vector<uint32_t> run_named_barrier_divergent(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(kThreads);
  return launch_out("named_barrier_divergent", 1, 1, kThreads, kThreads * 4, seed, named_barrier_divergent<kBug>,
                    OutParams{out.data(), nullptr}, out);
}

// 15. A block exits right after pushing its buffer into its peer (DSMEM bulk copy): nothing tells it the copy
//     finished reading its shared memory, whether or not it has landed. Twin: the receiver acknowledges with a
//     remote arrive and the sender waits for it. out[i] = the pushed words (100 + i) as received by rank 1.
template <bool kBug>
CF_GLOBAL void push_exit_unconfirmed(const CF_GRID_CONSTANT OutParams p) {
  uint8_t* smem = dev::dynamic_smem();
  auto* bar_data = reinterpret_cast<dev::Mbarrier*>(smem);
  auto* bar_ack = reinterpret_cast<dev::Mbarrier*>(smem + 8);
  auto* buf = reinterpret_cast<uint32_t*>(smem + 128);
  const uint32_t t = dev::thread_rank(), rank = dev::block_rank_in_cluster();
  if (t == 0) {
    bar_data->init(1);
    bar_ack->init(1);
    dev::fence_mbarrier_init();
  }
  if (rank == 0)
    for (uint32_t i = t; i < kPushWords; i += dev::num_threads()) buf[i] = 100 + i;
  dev::fence_proxy_async();
  dev::cluster_sync();
  if (rank == 0) {
    if (t == 0) {
      bar_data->arrive_expect_tx_remote(kPushWords * 4, 1);
      dev::bulk_copy_s2peer(buf, buf, kPushWords * 4, *bar_data, 1);
      if constexpr (!kBug) bar_ack->wait(0);  // the receiver has it: our buffer is free
    }
  } else {
    bar_data->wait(0);
    if (t == 0 && !kBug) bar_ack->arrive_remote(0);
    for (uint32_t i = t; i < kPushWords; i += dev::num_threads()) p.out[i] = buf[i];
  }
}
template <bool kBug>
std::vector<uint32_t> run_push_exit_unconfirmed(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(kPushWords);
  return launch_out("push_exit_unconfirmed", 2, 2, kThreads, 128 + kPushWords * 4, seed, push_exit_unconfirmed<kBug>,
                    OutParams{out.data(), nullptr}, out);
}
inline std::vector<uint32_t> expected_pushed() {
  std::vector<uint32_t> v(kPushWords);
  for (uint32_t i = 0; i < kPushWords; ++i) v[i] = 100 + i;
  return v;
}

// 16. DSMEM reads between cluster_arrive and cluster_wait (the peer's data is stable then), and no barrier after
//     them: the peer's wait completes with our arrival, before our reads, so it may exit under them. Twin: a final
//     cluster_sync (the correct kernel the emulator once reported). out[r * n + t] = 10 * (r ^ 1) + t.
template <bool kBug>
CF_GLOBAL void read_between_arrive_and_wait(const CF_GRID_CONSTANT OutParams p) {
  auto* buf = reinterpret_cast<uint32_t*>(dev::dynamic_smem());
  const uint32_t t = dev::thread_rank(), rank = dev::block_rank_in_cluster(), n = dev::num_threads();
  buf[t] = 10 * rank + t;
  dev::cluster_sync();
  dev::cluster_arrive();
  p.out[rank * n + t] = dev::map_shared_rank(buf, rank ^ 1u)[t];
  dev::cluster_wait();
  if constexpr (!kBug) dev::cluster_sync();
}
template <bool kBug>
std::vector<uint32_t> run_read_between_arrive_and_wait(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(2 * kThreads);
  return launch_out("read_between_arrive_and_wait", 2, 2, kThreads, kThreads * 4, seed,
                    read_between_arrive_and_wait<kBug>, OutParams{out.data(), nullptr}, out);
}
inline std::vector<uint32_t> expected_arrive_wait() {
  std::vector<uint32_t> v(2 * kThreads);
  for (uint32_t r = 0; r < 2; ++r)
    for (uint32_t t = 0; t < kThreads; ++t) v[r * kThreads + t] = 10 * (r ^ 1u) + t;
  return v;
}

// 17. A one-stage ring of two items whose consumer computes the phase parity with a stale lap count: its second
//     wait (for phase 1) asks for parity 0 again, and returns at once for phase 0, which it already consumed
//     (reading the stage while the second item is in flight). Twin: parity = item & 1. out[i * 32 + lane] = the
//     item's word lane.
template <bool kBug>
CF_GLOBAL void stale_parity(const CF_GRID_CONSTANT OutParams p) {
  uint8_t* smem = dev::dynamic_smem();
  auto* full = reinterpret_cast<dev::Mbarrier*>(smem);
  auto* empty = reinterpret_cast<dev::Mbarrier*>(smem + 8);
  auto* stage = reinterpret_cast<uint32_t*>(smem + 128);
  const uint32_t lane = dev::lane_id(), warp = dev::warp_id();
  constexpr uint32_t kItems = 2, kWords = 32;
  if (dev::thread_rank() == 0) {
    full->init(1);
    empty->init(32);
    dev::fence_mbarrier_init();
  }
  dev::block_sync();
  if (warp == 0) {  // producer
    if (lane == 0) {
      for (uint32_t i = 0; i < kItems; ++i) {
        if (i > 0) empty->wait((i - 1) & 1u);
        full->arrive_expect_tx(kWords * 4);
        dev::bulk_copy_g2s(stage, p.in + i * kWords, kWords * 4, *full);
      }
    }
  } else {  // consumer warp
    for (uint32_t i = 0; i < kItems; ++i) {
      full->wait(kBug ? 0u : (i & 1u));
      p.out[i * kWords + lane] = stage[lane];
      empty->arrive();
    }
  }
}
inline std::vector<uint32_t> ring_input() {
  std::vector<uint32_t> v(64);
  for (uint32_t i = 0; i < 64; ++i) v[i] = 1000 + 7 * i;
  return v;
}
template <bool kBug>
std::vector<uint32_t> run_stale_parity(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> in(64), out(64);
  in.upload(ring_input());
  return launch_out("stale_parity", 1, 1, 64, 128 + 32 * 4, seed, stale_parity<kBug>, OutParams{out.data(), in.data()},
                    out);
}

// 18. An abort flag raised by one thread and polled by the others without synchronisation (bounded waits): with
//     plain (volatile) loads and stores a race; load_flag / store_flag are relaxed atomics and race with nothing.
//     After a block_sync every thread sees it raised: out[t] = 1.
template <bool kBug>
CF_GLOBAL void polled_flag(const CF_GRID_CONSTANT OutParams p) {
  auto* flag = reinterpret_cast<uint32_t*>(dev::dynamic_smem());
  const uint32_t t = dev::thread_rank();
  if (t == 0) *flag = 0;
  dev::block_sync();
  uint32_t seen = 0;
  if constexpr (kBug) {
    if (t == 5) *static_cast<volatile uint32_t*>(flag) = 1;
    seen = *static_cast<volatile uint32_t*>(flag);
  } else {
    if (t == 5) dev::store_flag(flag, 1);
    seen = dev::load_flag(flag);
  }
  dev::block_sync();
  p.out[t] = seen | dev::load_flag(flag);
}
template <bool kBug>
std::vector<uint32_t> run_polled_flag(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(kThreads);
  return launch_out("polled_flag", 1, 1, kThreads, 128, seed, polled_flag<kBug>, OutParams{out.data(), nullptr}, out);
}

}  // namespace cf::test::races
