// The planted-bug suite: each kernel below carries one classic Hopper bug when kBug is true and is its fixed twin
// when false. The emulator must report every bug (tests/emu/emulator/test_planted_bugs.cpp); the twins must run
// clean and compute the right result in both builds (the GPU binary runs the twins only: the bugs would hang or
// corrupt memory on hardware). Each runner returns what the kernel wrote, for the twin's correctness check.
// Two more planted bugs live in matvec_pipeline.hpp (MatvecBug: a stage refilled before its consumers released
// it, and a wait with the wrong phase parity).
#pragma once
#include <cstdint>
#include <vector>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/device/launch.hpp"
#include "clusterfusion/device/tensor_map.hpp"

namespace cf::test::bugs {
namespace dev = cf::dev;

inline dev::LaunchConfig config(const char* name, uint32_t blocks, uint32_t cluster, uint32_t threads, size_t smem,
                                uint64_t seed) {
  dev::LaunchConfig cfg;
  cfg.grid = {blocks};
  cfg.cluster = {cluster};
  cfg.block = {threads};
  cfg.smem_bytes = smem;
  cfg.name = name;
  cfg.emu_seed = seed;
  return cfg;
}

struct OutParams {
  uint32_t* out;
  const uint32_t* in;
};

inline constexpr uint32_t kThreads = 64;

// 1. DSMEM read of a peer with no cluster barrier since launch (the peer may not even have started).
//    Twin: cluster_sync() first. out[block][t] = peer's value.
template <bool kBug>
CF_GLOBAL void dsmem_before_cluster_sync(const CF_GRID_CONSTANT OutParams p) {
  auto* values = reinterpret_cast<uint32_t*>(dev::dynamic_smem());
  const uint32_t t = dev::thread_rank(), rank = dev::block_rank_in_cluster();
  values[t] = 1000 * rank + t;
  if constexpr (!kBug) dev::cluster_sync();
  p.out[rank * kThreads + t] = dev::map_shared_rank(values, (rank + 1) % dev::cluster_size())[t];
  dev::cluster_sync();
}
template <bool kBug>
std::vector<uint32_t> run_dsmem_before_cluster_sync(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(2 * kThreads);
  dev::launch(config("dsmem_before_cluster_sync", 2, 2, kThreads, kThreads * 4, seed),
              dsmem_before_cluster_sync<kBug>, OutParams{out.data(), nullptr});
  dev::synchronize();
  return out.download();
}

// 2. Missing block_sync between one thread's mbarrier init and the other threads' use of it.
//    Twin: init, fence_mbarrier_init, block_sync. out[t] = 1 after the barrier completed.
template <bool kBug>
CF_GLOBAL void mbarrier_init_unsynced(const CF_GRID_CONSTANT OutParams p) {
  auto* bar = reinterpret_cast<dev::Mbarrier*>(dev::dynamic_smem());
  const uint32_t t = dev::thread_rank();
  if (t == 0) {
    bar->init(kThreads);
    dev::fence_mbarrier_init();
  }
  if constexpr (!kBug) dev::block_sync();
  bar->arrive();
  bar->wait(0);
  p.out[t] = 1;
}
template <bool kBug>
std::vector<uint32_t> run_mbarrier_init_unsynced(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(kThreads);
  dev::launch(config("mbarrier_init_unsynced", 1, 1, kThreads, 128, seed), mbarrier_init_unsynced<kBug>,
              OutParams{out.data(), nullptr});
  dev::synchronize();
  return out.download();
}

// 3./4. expect-tx byte count off by 16 (too small: tx-count underflow; too large: the phase never completes).
//    Twin: the copy's size. out[t] = in[t] after the copy.
inline constexpr uint32_t kCopyWords = 64;
template <int kTxError>
CF_GLOBAL void expect_tx_mismatch(const CF_GRID_CONSTANT OutParams p) {
  uint8_t* smem = dev::dynamic_smem();
  auto* bar = reinterpret_cast<dev::Mbarrier*>(smem);
  auto* buf = reinterpret_cast<uint32_t*>(smem + 128);
  const uint32_t t = dev::thread_rank();
  constexpr uint32_t kBytes = kCopyWords * 4;
  if (t == 0) {
    bar->init(1);
    dev::fence_mbarrier_init();
  }
  dev::block_sync();
  if (t == 0) {
    bar->arrive_expect_tx(uint32_t(int(kBytes) + kTxError));
    dev::bulk_copy_g2s(buf, p.in, kBytes, *bar);
  }
  bar->wait(0);
  p.out[t] = buf[t];
}
template <int kTxError>
std::vector<uint32_t> run_expect_tx_mismatch(uint64_t seed, const std::vector<uint32_t>& in) {
  dev::DeviceBuffer<uint32_t> in_dev(kCopyWords), out(kThreads);
  in_dev.upload(in);
  dev::launch(config("expect_tx_mismatch", 1, 1, kThreads, 128 + kCopyWords * 4, seed), expect_tx_mismatch<kTxError>,
              OutParams{out.data(), in_dev.data()});
  dev::synchronize();
  return out.download();
}

// 5. Reading a TMA tile without waiting on its mbarrier. 6. Off-by-one TMA box: the tensor map's box is one row
//    taller than the buffer reserved for it (the last buffer of shared memory), so the copy overruns it.
//    6b. A box column that is not on a 16-byte boundary (x = 4 fp16 = 8 bytes, as when a column offset is counted
//    in the wrong unit): an illegal instruction on an H100.
//    Twins: wait first / the right box / column 0. out[t] = tile[t] as bits of fp16 pairs.
inline constexpr uint32_t kTileW = 32, kTileH = 4;  // fp16 elements
inline constexpr int32_t kUnalignedColumn = 4;      // 8 bytes into the row
struct TmaBugParams {
  dev::TensorMap map;
  uint32_t* out;
  int32_t x;  // the box's column
};
template <bool kSkipWait>
CF_GLOBAL void tma_read_early(const CF_GRID_CONSTANT TmaBugParams p) {
  uint8_t* smem = dev::dynamic_smem();
  auto* bar = reinterpret_cast<dev::Mbarrier*>(smem);
  auto* tile = reinterpret_cast<uint32_t*>(smem + 128);
  const uint32_t t = dev::thread_rank();
  if (t == 0) {
    bar->init(1);
    dev::fence_mbarrier_init();
  }
  dev::block_sync();
  if (t == 0) {
    bar->arrive_expect_tx(kTileW * kTileH * 2);
    dev::tma_load_2d(tile, p.map, p.x, 0, *bar);
  }
  dev::block_sync();  // the copy is issued (but it need not have landed)
  if constexpr (!kSkipWait) bar->wait(0);
  p.out[t] = tile[t];
  if constexpr (kSkipWait) bar->wait(0);  // too late: the tile was read before
}
template <bool kBug>
std::vector<uint32_t> run_tma_read_early(uint64_t seed, const std::vector<uint16_t>& matrix) {
  dev::DeviceBuffer<uint16_t> m(matrix.size());
  m.upload(matrix);
  dev::DeviceBuffer<uint32_t> out(kThreads);
  const TmaBugParams params{dev::make_tensor_map_2d(m.data(), dev::DType::F16, kTileW, kTileH, kTileW * 2, kTileW,
                                                    kTileH),
                            out.data(), 0};
  dev::launch(config("tma_read_early", 1, 1, kThreads, 128 + kTileW * kTileH * 2, seed), tma_read_early<kBug>,
              params);
  dev::synchronize();
  return out.download();
}
template <bool kBug>
std::vector<uint32_t> run_tma_box_off_by_one(uint64_t seed, const std::vector<uint16_t>& matrix) {
  dev::DeviceBuffer<uint16_t> m(matrix.size());
  m.upload(matrix);
  dev::DeviceBuffer<uint32_t> out(kThreads);
  const uint32_t box_rows = kBug ? kTileH + 1 : kTileH;  // the bug: one row too many
  const TmaBugParams params{dev::make_tensor_map_2d(m.data(), dev::DType::F16, kTileW, 2 * kTileH, kTileW * 2, kTileW,
                                                    box_rows),
                            out.data(), 0};
  dev::launch(config("tma_box_off_by_one", 1, 1, kThreads, 128 + kTileW * kTileH * 2, seed), tma_read_early<false>,
              params);
  dev::synchronize();
  return out.download();
}
template <bool kBug>
std::vector<uint32_t> run_tma_unaligned_column(uint64_t seed, const std::vector<uint16_t>& matrix) {
  dev::DeviceBuffer<uint16_t> m(matrix.size());
  m.upload(matrix);
  dev::DeviceBuffer<uint32_t> out(kThreads);
  const TmaBugParams params{dev::make_tensor_map_2d(m.data(), dev::DType::F16, kTileW, 2 * kTileH, kTileW * 2, kTileW,
                                                    kTileH),
                            out.data(), kBug ? kUnalignedColumn : 0};
  dev::launch(config("tma_unaligned_column", 1, 1, kThreads, 128 + kTileW * kTileH * 2, seed), tma_read_early<false>,
              params);
  dev::synchronize();
  return out.download();
}

// 7. A peer writes into this CTA's shared memory while (or after) it exits: no cluster_sync at the end.
//    Twin: the final cluster_sync. out[t] = what rank 1 holds at the end (42 + t).
template <bool kBug>
CF_GLOBAL void dsmem_after_exit(const CF_GRID_CONSTANT OutParams p) {
  auto* values = reinterpret_cast<uint32_t*>(dev::dynamic_smem());
  const uint32_t t = dev::thread_rank(), rank = dev::block_rank_in_cluster();
  values[t] = 0;
  dev::cluster_sync();
  if (rank == 0) dev::map_shared_rank(values, 1)[t] = 42 + t;
  if constexpr (!kBug) dev::cluster_sync();
  if (rank == 1) p.out[t] = kBug ? 0 : values[t];
}
template <bool kBug>
std::vector<uint32_t> run_dsmem_after_exit(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(kThreads);
  dev::launch(config("dsmem_after_exit", 2, 2, kThreads, kThreads * 4, seed), dsmem_after_exit<kBug>,
              OutParams{out.data(), nullptr});
  dev::synchronize();
  return out.download();
}

// 8. Divergent block_sync: half of warp 0 syncs at one call, the rest of the block at another.
//    9. A warp exits early and the rest of the block reaches block_sync.
//    Twins: every thread at the same block_sync. out[t] = smem[(t+1) % n].
template <bool kBug>
CF_GLOBAL void divergent_block_sync(const CF_GRID_CONSTANT OutParams p) {
  auto* s = reinterpret_cast<uint32_t*>(dev::dynamic_smem());
  const uint32_t t = dev::thread_rank(), n = dev::num_threads();
  s[t] = 5 * t;
  if (kBug && dev::lane_id() < 16) {
    dev::block_sync();
  } else {
    dev::block_sync();
  }
  p.out[t] = s[(t + 1) % n];
}
template <bool kBug>
CF_GLOBAL void exit_before_block_sync(const CF_GRID_CONSTANT OutParams p) {
  auto* s = reinterpret_cast<uint32_t*>(dev::dynamic_smem());
  const uint32_t t = dev::thread_rank(), n = dev::num_threads();
  s[t] = 5 * t;
  if (kBug && t >= n - 32) return;
  dev::block_sync();
  p.out[t] = s[(t + 1) % n];
}
template <bool kBug, bool kExit>
std::vector<uint32_t> run_block_sync_bug(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(kThreads);
  if constexpr (kExit) {
    dev::launch(config("exit_before_block_sync", 1, 1, kThreads, kThreads * 4, seed), exit_before_block_sync<kBug>,
                OutParams{out.data(), nullptr});
  } else {
    dev::launch(config("divergent_block_sync", 1, 1, kThreads, kThreads * 4, seed), divergent_block_sync<kBug>,
                OutParams{out.data(), nullptr});
  }
  dev::synchronize();
  return out.download();
}

// 10. A full-mask shuffle executed by half of the warp: the other lanes went on and exited, so the lanes that
//     shuffle read values of exited lanes. Twin: every lane shuffles. out[t] = lane + (lane ^ 16).
template <bool kBug>
CF_GLOBAL void shuffle_inactive_lanes(const CF_GRID_CONSTANT OutParams p) {
  const uint32_t lane = dev::lane_id();
  uint32_t v = lane;
  if (!kBug || lane < 16) v += dev::shfl_xor_sync(dev::kFullMask, v, 16);
  p.out[dev::thread_rank()] = v;
}
template <bool kBug>
std::vector<uint32_t> run_shuffle_inactive_lanes(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(kThreads);
  dev::launch(config("shuffle_inactive_lanes", 1, 1, kThreads, 0, seed), shuffle_inactive_lanes<kBug>,
              OutParams{out.data(), nullptr});
  dev::synchronize();
  return out.download();
}

// 11. Waiting on a phase that can never complete: one phase completes (phase 0), then everybody waits with parity
//     1, i.e. for phase 1, which nobody arrives on. Twin: parity 0. 12. An mbarrier initialised for every thread
//     of the block while one warp never arrives. Twin: every warp arrives. out[t] = 1.
template <bool kBug>
CF_GLOBAL void wait_wrong_phase_forever(const CF_GRID_CONSTANT OutParams p) {
  auto* bar = reinterpret_cast<dev::Mbarrier*>(dev::dynamic_smem());
  const uint32_t t = dev::thread_rank();
  if (t == 0) {
    bar->init(1);
    dev::fence_mbarrier_init();
  }
  dev::block_sync();
  if (t == 0) bar->arrive();
  dev::block_sync();
  bar->wait(kBug ? 1 : 0);
  p.out[t] = 1;
}
template <bool kBug>
CF_GLOBAL void arrival_count_mismatch(const CF_GRID_CONSTANT OutParams p) {
  auto* bar = reinterpret_cast<dev::Mbarrier*>(dev::dynamic_smem());
  const uint32_t t = dev::thread_rank();
  if (t == 0) {
    bar->init(dev::num_threads());
    dev::fence_mbarrier_init();
  }
  dev::block_sync();
  if (!kBug || dev::warp_id() != 1) bar->arrive();
  bar->wait(0);
  p.out[t] = 1;
}
template <bool kBug, bool kCountMismatch>
std::vector<uint32_t> run_mbarrier_wait_bug(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(kThreads);
  if constexpr (kCountMismatch) {
    dev::launch(config("arrival_count_mismatch", 1, 1, kThreads, 128, seed), arrival_count_mismatch<kBug>,
                OutParams{out.data(), nullptr});
  } else {
    dev::launch(config("wait_wrong_phase_forever", 1, 1, kThreads, 128, seed), wait_wrong_phase_forever<kBug>,
                OutParams{out.data(), nullptr});
  }
  dev::synchronize();
  return out.download();
}

// 13. A prefetch nobody waits for: the block exits with the copy still writing its shared memory.
//     Twin: wait before exiting. out[t] = in[t].
template <bool kBug>
CF_GLOBAL void exit_with_copy_in_flight(const CF_GRID_CONSTANT OutParams p) {
  uint8_t* smem = dev::dynamic_smem();
  auto* bar = reinterpret_cast<dev::Mbarrier*>(smem);
  auto* buf = reinterpret_cast<uint32_t*>(smem + 128);
  const uint32_t t = dev::thread_rank();
  if (t == 0) {
    bar->init(1);
    dev::fence_mbarrier_init();
  }
  dev::block_sync();
  if (t == 0) {
    bar->arrive_expect_tx(kCopyWords * 4);
    dev::bulk_copy_g2s(buf, p.in, kCopyWords * 4, *bar);
  }
  p.out[t] = p.in[t];
  if constexpr (!kBug) bar->wait(0);
}
template <bool kBug>
std::vector<uint32_t> run_exit_with_copy_in_flight(uint64_t seed, const std::vector<uint32_t>& in) {
  dev::DeviceBuffer<uint32_t> in_dev(kCopyWords), out(kThreads);
  in_dev.upload(in);
  dev::launch(config("exit_with_copy_in_flight", 1, 1, kThreads, 128 + kCopyWords * 4, seed),
              exit_with_copy_in_flight<kBug>, OutParams{out.data(), in_dev.data()});
  dev::synchronize();
  return out.download();
}

// 14. Shared memory indexed one past its end. 15. Global memory written one past the end of its buffer.
//     Twins: the right bound. out[t] = smem[(t+1) % n] + 1.
template <bool kBug>
CF_GLOBAL void smem_out_of_bounds(const CF_GRID_CONSTANT OutParams p) {
  auto* s = reinterpret_cast<uint32_t*>(dev::dynamic_smem());
  const uint32_t t = dev::thread_rank(), n = dev::num_threads();
  s[kBug ? t + 1 : t] = t;  // the bug: thread n-1 writes s[n]
  dev::block_sync();
  if (!kBug) p.out[t] = s[(t + 1) % n] + 1;
}
template <bool kBug>
CF_GLOBAL void global_out_of_bounds(const CF_GRID_CONSTANT OutParams p) {
  const uint32_t t = dev::thread_rank();
  p.out[kBug ? t + 1 : t] = t + 1;  // the bug: thread n-1 writes out[n]
}
template <bool kBug, bool kGlobal>
std::vector<uint32_t> run_out_of_bounds(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(kThreads);
  if constexpr (kGlobal) {
    dev::launch(config("global_out_of_bounds", 1, 1, kThreads, 0, seed), global_out_of_bounds<kBug>,
                OutParams{out.data(), nullptr});
  } else {
    dev::launch(config("smem_out_of_bounds", 1, 1, kThreads, kThreads * 4, seed), smem_out_of_bounds<kBug>,
                OutParams{out.data(), nullptr});
  }
  dev::synchronize();
  return out.download();
}

// 16. The sender of a DSMEM push (bulk_copy_s2peer) overwrites its source before the receiver's mbarrier
//     completed. Twin: the sender waits for the receiver's acknowledgement (a remote arrive) first.
//     out[block][word] = the inbox.
template <bool kBug>
CF_GLOBAL void push_source_reused(const CF_GRID_CONSTANT OutParams p) {
  uint8_t* smem = dev::dynamic_smem();
  auto* bar_data = reinterpret_cast<dev::Mbarrier*>(smem);
  auto* bar_ack = reinterpret_cast<dev::Mbarrier*>(smem + 8);
  auto* staging = reinterpret_cast<uint32_t*>(smem + 128);
  auto* inbox = reinterpret_cast<uint32_t*>(smem + 128 + kCopyWords * 4);
  const uint32_t t = dev::thread_rank(), rank = dev::block_rank_in_cluster();
  const uint32_t peer = rank ^ 1u;
  if (t == 0) {
    bar_data->init(1);
    bar_ack->init(1);
    dev::fence_mbarrier_init();
  }
  for (uint32_t i = t; i < kCopyWords; i += kThreads) staging[i] = 100 * rank + i;
  dev::fence_proxy_async();
  dev::cluster_sync();
  if (t == 0) {
    bar_data->arrive_expect_tx(kCopyWords * 4);
    dev::bulk_copy_s2peer(inbox, staging, kCopyWords * 4, *bar_data, peer);
    if constexpr (!kBug) bar_ack->wait(0);  // the peer received our push
    staging[0] = 0xdead;                     // reuse of the source
  }
  bar_data->wait(0);
  if (t == 32) bar_ack->arrive_remote(peer);  // acknowledge the push we received (not thread 0: it may be waiting)
  for (uint32_t i = t; i < kCopyWords; i += kThreads) p.out[rank * kCopyWords + i] = inbox[i];
  dev::cluster_sync();
}
template <bool kBug>
std::vector<uint32_t> run_push_source_reused(uint64_t seed) {
  dev::DeviceBuffer<uint32_t> out(2 * kCopyWords);
  dev::launch(config("push_source_reused", 2, 2, kThreads, 128 + 2 * kCopyWords * 4, seed), push_source_reused<kBug>,
              OutParams{out.data(), nullptr});
  dev::synchronize();
  return out.download();
}

}  // namespace cf::test::bugs
