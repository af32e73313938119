// Positive tests of every device-API operation: small kernels plus host drivers that run them and return what the
// device wrote. Compiled by g++ (emulator tests) and nvcc (tests/gpu/device); expectations are computed on the host
// by the tests.
#pragma once
#include <cstdint>
#include <vector>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/device/launch.hpp"
#include "clusterfusion/device/tensor_map.hpp"

namespace cf::test {
namespace dev = cf::dev;

// ---- ids ---------------------------------------------------------------------------------------------------------
struct IdsRecord {
  uint32_t thread[3], block[3], block_dim[3], grid_dim[3];
  uint32_t cluster_dim[3], cluster_idx[3], cluster_grid[3], block_in_cluster[3];
  uint32_t thread_rank, lane, warp, num_threads, num_warps, cluster_rank, cluster_size, smem_size;
};
struct IdsParams {
  IdsRecord* out;
};
CF_DEVICE void put3(uint32_t* dst, dev::Dim3 d) {
  dst[0] = d.x;
  dst[1] = d.y;
  dst[2] = d.z;
}
CF_GLOBAL void ids_kernel(const CF_GRID_CONSTANT IdsParams p) {
  const dev::Dim3 b = dev::block_idx(), g = dev::grid_dim();
  const uint32_t block_linear = b.x + g.x * (b.y + g.y * b.z);
  IdsRecord& r = p.out[block_linear * dev::num_threads() + dev::thread_rank()];
  put3(r.thread, dev::thread_idx());
  put3(r.block, dev::block_idx());
  put3(r.block_dim, dev::block_dim());
  put3(r.grid_dim, dev::grid_dim());
  put3(r.cluster_dim, dev::cluster_dim());
  put3(r.cluster_idx, dev::cluster_idx());
  put3(r.cluster_grid, dev::cluster_grid_dim());
  put3(r.block_in_cluster, dev::block_idx_in_cluster());
  r.thread_rank = dev::thread_rank();
  r.lane = dev::lane_id();
  r.warp = dev::warp_id();
  r.num_threads = dev::num_threads();
  r.num_warps = dev::num_warps();
  r.cluster_rank = dev::block_rank_in_cluster();
  r.cluster_size = dev::cluster_size();
  r.smem_size = dev::dynamic_smem_size();
}
inline std::vector<IdsRecord> run_ids(dev::Dim3 grid, dev::Dim3 cluster, dev::Dim3 block, size_t smem,
                                      uint64_t seed = 0) {
  const size_t n = grid.volume() * block.volume();
  dev::DeviceBuffer<IdsRecord> out(n);
  dev::LaunchConfig cfg;
  cfg.grid = grid;
  cfg.cluster = cluster;
  cfg.block = block;
  cfg.smem_bytes = smem;
  cfg.name = "ids";
  cfg.emu_seed = seed;
  dev::launch(cfg, ids_kernel, IdsParams{out.data()});
  dev::synchronize();
  return out.download();
}

// ---- block_sync and named barriers -------------------------------------------------------------------------------
// Each thread writes smem[t] = 3t+1, block_sync, reads its right neighbour; then warps pair up over named barriers:
// even warp w writes 100+w to smem and arrives on barrier 1 + w/2, odd warp w+1 syncs on it and reads.
struct BarrierParams {
  uint32_t* out;  // [grid][2][threads]
};
CF_GLOBAL void barrier_kernel(const CF_GRID_CONSTANT BarrierParams p) {
  auto* s = reinterpret_cast<uint32_t*>(dev::dynamic_smem());
  const uint32_t t = dev::thread_rank(), n = dev::num_threads();
  uint32_t* out = p.out + dev::block_idx().x * 2 * n;
  s[t] = 3 * t + 1;
  dev::block_sync();
  out[t] = s[(t + 1) % n];
  dev::block_sync();
  const uint32_t warp = dev::warp_id(), lane = dev::lane_id();
  const uint32_t pair_barrier = 1 + warp / 2;
  if (warp % 2 == 0) {
    s[warp * 32 + lane] = 100 + warp;
    dev::named_barrier_arrive(pair_barrier, 64);
    out[n + t] = 0;
  } else {
    dev::named_barrier_sync(pair_barrier, 64);
    out[n + t] = s[(warp - 1) * 32 + lane];
  }
}
inline std::vector<uint32_t> run_barriers(uint32_t blocks, uint32_t threads, uint64_t seed = 0) {
  dev::DeviceBuffer<uint32_t> out(size_t(blocks) * 2 * threads);
  dev::LaunchConfig cfg;
  cfg.grid = {blocks};
  cfg.block = {threads};
  cfg.smem_bytes = threads * sizeof(uint32_t);
  cfg.name = "barriers";
  cfg.emu_seed = seed;
  dev::launch(cfg, barrier_kernel, BarrierParams{out.data()});
  dev::synchronize();
  return out.download();
}

// ---- cluster barrier, DSMEM loads/stores/atomics -----------------------------------------------------------------
// smem: [0] counter (u32), [16..] values (u32 x threads). Each CTA writes values[t] = 1000*rank + t; cluster_sync;
// reads its right peer's values and adds 1 to every peer's counter (DSMEM atomics); cluster_sync; reports.
struct DsmemParams {
  uint32_t* peer_values;  // [grid][threads]
  uint32_t* counters;     // [grid]
};
CF_GLOBAL void dsmem_kernel(const CF_GRID_CONSTANT DsmemParams p) {
  uint8_t* smem = dev::dynamic_smem();
  auto* counter = reinterpret_cast<uint32_t*>(smem);
  auto* values = reinterpret_cast<uint32_t*>(smem + 16);
  const uint32_t t = dev::thread_rank(), rank = dev::block_rank_in_cluster(), size = dev::cluster_size();
  if (t == 0) *counter = 0;
  values[t] = 1000 * rank + t;
  dev::cluster_sync();
  const uint32_t peer = (rank + 1) % size;
  const uint32_t* peer_values = dev::map_shared_rank(values, peer);
  p.peer_values[dev::block_idx().x * dev::num_threads() + t] = peer_values[t];
  for (uint32_t r = 0; r < size; ++r) dev::atomic_add(dev::map_shared_rank(counter, r), 1u);
  dev::cluster_arrive();
  dev::cluster_wait();
  if (t == 0) p.counters[dev::block_idx().x] = *counter;
  dev::cluster_sync();  // no CTA exits while peers may still touch its shared memory
}
struct DsmemResult {
  std::vector<uint32_t> peer_values, counters;
};
inline DsmemResult run_dsmem(uint32_t clusters, uint32_t cluster_size, uint32_t threads, uint64_t seed = 0) {
  const uint32_t blocks = clusters * cluster_size;
  dev::DeviceBuffer<uint32_t> values(size_t(blocks) * threads), counters(blocks);
  dev::LaunchConfig cfg;
  cfg.grid = {blocks};
  cfg.cluster = {cluster_size};
  cfg.block = {threads};
  cfg.smem_bytes = 16 + threads * sizeof(uint32_t);
  cfg.allow_nonportable_cluster = cluster_size > dev::kMaxPortableClusterSize;
  cfg.name = "dsmem";
  cfg.emu_seed = seed;
  dev::launch(cfg, dsmem_kernel, DsmemParams{values.data(), counters.data()});
  dev::synchronize();
  return {values.download(), counters.download()};
}

// ---- mbarriers: local producer/consumer over several phases, remote arrivals ------------------------------------
// smem: [0] bar_full, [8] bar_remote, [128..] data (u32 x 32). Warp 0 produces kRounds rounds: writes data, arrives
// on bar_full (count 32); the other warps wait with the round's parity, read, then block_sync before the next round.
// Then every thread of every CTA arrives on its right peer's bar_remote (count = threads): each CTA waits for it.
inline constexpr uint32_t kMbarRounds = 5;
struct MbarrierParams {
  uint32_t* out;  // [grid][rounds][threads]
  uint32_t* remote_done;  // [grid]
};
CF_GLOBAL void mbarrier_kernel(const CF_GRID_CONSTANT MbarrierParams p) {
  uint8_t* smem = dev::dynamic_smem();
  auto* bar_full = reinterpret_cast<dev::Mbarrier*>(smem);
  auto* bar_remote = reinterpret_cast<dev::Mbarrier*>(smem + 8);
  auto* data = reinterpret_cast<uint32_t*>(smem + 128);
  const uint32_t t = dev::thread_rank(), n = dev::num_threads(), lane = dev::lane_id();
  const uint32_t rank = dev::block_rank_in_cluster(), size = dev::cluster_size();
  if (t == 0) {
    bar_full->init(32);
    bar_remote->init(n);
    dev::fence_mbarrier_init();  // publishes the inits to the cluster; the arrive below may then be relaxed
  }
  dev::cluster_arrive_relaxed();
  dev::cluster_wait();
  uint32_t* out = p.out + dev::block_idx().x * kMbarRounds * n;
  for (uint32_t round = 0; round < kMbarRounds; ++round) {
    if (dev::warp_id() == 0) {
      data[lane] = round * 100 + lane;
      bar_full->arrive();
      out[round * n + t] = 0;
    } else {
      while (!bar_full->try_wait(round & 1)) {
      }
      out[round * n + t] = data[lane];
    }
    dev::block_sync();
  }
  bar_remote->arrive_remote((rank + 1) % size);
  bar_remote->wait(0);
  if (t == 0) p.remote_done[dev::block_idx().x] = 1;
  dev::cluster_sync();
  if (t == 0) {
    bar_full->inval();
    bar_remote->inval();
  }
}
struct MbarrierResult {
  std::vector<uint32_t> out, remote_done;
};
inline MbarrierResult run_mbarrier(uint32_t clusters, uint32_t cluster_size, uint32_t threads, uint64_t seed = 0) {
  const uint32_t blocks = clusters * cluster_size;
  dev::DeviceBuffer<uint32_t> out(size_t(blocks) * kMbarRounds * threads), done(blocks);
  dev::LaunchConfig cfg;
  cfg.grid = {blocks};
  cfg.cluster = {cluster_size};
  cfg.block = {threads};
  cfg.smem_bytes = 128 + 32 * sizeof(uint32_t);
  cfg.name = "mbarrier";
  cfg.emu_seed = seed;
  dev::launch(cfg, mbarrier_kernel, MbarrierParams{out.data(), done.data()});
  dev::synchronize();
  return {out.download(), done.download()};
}

// ---- bulk copies: global -> shared, then a ring push shared -> peer shared (DSMEM) ---------------------------------
// smem: [0] bar_g2s, [8] bar_push, [128] staging (bytes), [128+bytes] inbox (bytes). Thread 0 loads this CTA's
// slice of `src` into staging; every thread adds 1 to each word of staging (generic writes, then
// fence_proxy_async); thread 0 pushes staging into the right peer's inbox; everyone waits for its own inbox.
// kSenderAnnounces: the sender does arrive_expect_tx_remote on the receiver's barrier instead of the receiver
// doing expect_tx + arrive on its own.
struct BulkParams {
  const uint32_t* src;  // [grid][words]
  uint32_t* out;        // [grid][words]: the inbox
  uint32_t words;
};
template <bool kSenderAnnounces>
CF_GLOBAL void bulk_kernel(const CF_GRID_CONSTANT BulkParams p) {
  uint8_t* smem = dev::dynamic_smem();
  auto* bar_g2s = reinterpret_cast<dev::Mbarrier*>(smem);
  auto* bar_push = reinterpret_cast<dev::Mbarrier*>(smem + 8);
  const uint32_t bytes = p.words * 4;
  auto* staging = reinterpret_cast<uint32_t*>(smem + 128);
  auto* inbox = reinterpret_cast<uint32_t*>(smem + 128 + bytes);
  const uint32_t t = dev::thread_rank(), n = dev::num_threads(), block = dev::block_idx().x;
  const uint32_t rank = dev::block_rank_in_cluster(), size = dev::cluster_size();
  if (t == 0) {
    bar_g2s->init(1);
    bar_push->init(1);
    dev::fence_mbarrier_init();
  }
  dev::cluster_sync();
  if (t == 0) {
    bar_g2s->arrive_expect_tx(bytes);
    dev::bulk_copy_g2s(staging, p.src + size_t(block) * p.words, bytes, *bar_g2s);
  }
  bar_g2s->wait(0);
  for (uint32_t i = t; i < p.words; i += n) staging[i] += 1;
  dev::fence_proxy_async();  // generic writes above, read by the bulk copy below
  dev::block_sync();
  if (t == 0) {
    const uint32_t right = (rank + 1) % size;
    if constexpr (kSenderAnnounces) {
      bar_push->arrive_expect_tx_remote(bytes, right);
    } else {
      bar_push->expect_tx(bytes);  // expect our own inbox's bytes (the push from the left peer), then arrive
      bar_push->arrive();
    }
    dev::bulk_copy_s2peer(inbox, staging, bytes, *bar_push, right);
  }
  bar_push->wait(0);
  for (uint32_t i = t; i < p.words; i += n) p.out[size_t(block) * p.words + i] = inbox[i];
  dev::cluster_sync();  // staging must stay intact until the peer's copy completed; nobody exits early
}
template <bool kSenderAnnounces = false>
std::vector<uint32_t> run_bulk(uint32_t clusters, uint32_t cluster_size, uint32_t threads, uint32_t words,
                               const std::vector<uint32_t>& src, uint64_t seed = 0) {
  const uint32_t blocks = clusters * cluster_size;
  dev::DeviceBuffer<uint32_t> in(size_t(blocks) * words), out(size_t(blocks) * words);
  in.upload(src);
  dev::LaunchConfig cfg;
  cfg.grid = {blocks};
  cfg.cluster = {cluster_size};
  cfg.block = {threads};
  cfg.smem_bytes = 128 + 2 * words * 4;
  cfg.name = "bulk";
  cfg.emu_seed = seed;
  dev::launch(cfg, bulk_kernel<kSenderAnnounces>, BulkParams{in.data(), out.data(), words});
  dev::synchronize();
  return out.download();
}

// ---- TMA 2D tile loads with out-of-bounds zero fill --------------------------------------------------------------
// Each block loads box `block` at coords[block] into smem and copies it out. Boxes hang over every edge.
inline constexpr uint32_t kTmaBoxW = 16, kTmaBoxH = 8;
struct TmaParams {
  dev::TensorMap map;
  const int32_t* coords;  // [grid][2]: x, y
  dev::f16* out;          // [grid][kTmaBoxH][kTmaBoxW]
};
CF_GLOBAL void tma_kernel(const CF_GRID_CONSTANT TmaParams p) {
  uint8_t* smem = dev::dynamic_smem();
  auto* bar = reinterpret_cast<dev::Mbarrier*>(smem);
  auto* tile = reinterpret_cast<dev::f16*>(smem + 128);
  const uint32_t t = dev::thread_rank(), block = dev::block_idx().x;
  constexpr uint32_t kBytes = kTmaBoxW * kTmaBoxH * sizeof(dev::f16);
  if (t == 0) {
    bar->init(1);
    dev::fence_mbarrier_init();
  }
  dev::block_sync();
  if (t == 0) {
    bar->arrive_expect_tx(kBytes);
    dev::tma_load_2d(tile, p.map, p.coords[2 * block], p.coords[2 * block + 1], *bar);
  }
  bar->wait(0);
  for (uint32_t i = t; i < kTmaBoxW * kTmaBoxH; i += dev::num_threads())
    p.out[block * kTmaBoxW * kTmaBoxH + i] = tile[i];
}
// `matrix` is height x width fp16 (as bits) with row stride `stride_elems`.
inline std::vector<uint16_t> run_tma(const std::vector<uint16_t>& matrix, uint32_t width, uint32_t height,
                                     uint32_t stride_elems, const std::vector<int32_t>& coords, uint64_t seed = 0) {
  const uint32_t blocks = uint32_t(coords.size() / 2);
  dev::DeviceBuffer<uint16_t> m(matrix.size());
  m.upload(matrix);
  dev::DeviceBuffer<int32_t> c(coords.size());
  c.upload(coords);
  dev::DeviceBuffer<dev::f16> out(size_t(blocks) * kTmaBoxW * kTmaBoxH);
  TmaParams params{dev::make_tensor_map_2d(m.data(), dev::DType::F16, width, height, stride_elems * 2, kTmaBoxW,
                                           kTmaBoxH),
                   c.data(), out.data()};
  dev::LaunchConfig cfg;
  cfg.grid = {blocks};
  cfg.block = {64};
  cfg.smem_bytes = 128 + kTmaBoxW * kTmaBoxH * 2;
  cfg.name = "tma";
  cfg.emu_seed = seed;
  dev::launch(cfg, tma_kernel, params);
  dev::synchronize();
  return out.download<uint16_t>();
}

// ---- warp shuffles and votes -------------------------------------------------------------------------------------
// Per lane of every warp (block of 64 threads): a record of shuffle/vote results on lane-derived values.
struct WarpRecord {
  float idx_full;       // shfl_sync(full, lane*1.5, 31-lane)
  float idx_width8;     // shfl_sync(full, lane*1.5, 3, 8)
  uint32_t xor_sum;     // butterfly sum of lane+1 over 32 lanes
  uint32_t down;        // shfl_down_sync(full, 10*lane, 3)
  uint32_t up_width16;  // shfl_up_sync(full, 10*lane, 2, 16)
  uint64_t wide;        // shfl_xor_sync(full, (lane << 40) | lane, 5): a 64-bit value
  uint32_t half_bits;   // shfl_sync of an f16 from lane (lane+1)%32, as bits
  uint32_t ballot;      // ballot_sync(full, lane % 3 == 0)
  uint32_t any_true, all_true, all_false;
  uint32_t low_half_sum;  // shfl_xor_sync(0x0000ffff, lane, 1) on lanes < 16 only (a partial mask)
};
struct WarpParams {
  WarpRecord* out;
};
CF_GLOBAL void warp_kernel(const CF_GRID_CONSTANT WarpParams p) {
  const uint32_t lane = dev::lane_id();
  WarpRecord& r = p.out[dev::thread_rank()];
  const float f = float(lane) * 1.5f;
  r.idx_full = dev::shfl_sync(dev::kFullMask, f, int(31 - lane));
  r.idx_width8 = dev::shfl_sync(dev::kFullMask, f, 3, 8);
  uint32_t sum = lane + 1;
  for (int offset = 16; offset > 0; offset /= 2) sum += dev::shfl_xor_sync(dev::kFullMask, sum, offset);
  r.xor_sum = sum;
  r.down = dev::shfl_down_sync(dev::kFullMask, 10 * lane, 3);
  r.up_width16 = dev::shfl_up_sync(dev::kFullMask, 10 * lane, 2, 16);
  r.wide = dev::shfl_xor_sync(dev::kFullMask, (uint64_t(lane) << 40) | lane, 5);
  const dev::f16 h = dev::from_float<dev::f16>(float(lane) + 0.5f);
  const dev::f16 got = dev::shfl_sync(dev::kFullMask, h, int((lane + 1) % 32));
  uint16_t bits;
  __builtin_memcpy(&bits, &got, 2);
  r.half_bits = bits;
  r.ballot = dev::ballot_sync(dev::kFullMask, lane % 3 == 0);
  r.any_true = dev::any_sync(dev::kFullMask, lane == 17);
  r.all_true = dev::all_sync(dev::kFullMask, lane < 32);
  r.all_false = dev::all_sync(dev::kFullMask, lane != 4);
  r.low_half_sum = 0;
  if (lane < 16) r.low_half_sum = lane + dev::shfl_xor_sync(0x0000ffffu, lane, 1);
  dev::syncwarp();
}
inline std::vector<WarpRecord> run_warp(uint64_t seed = 0) {
  dev::DeviceBuffer<WarpRecord> out(64);
  dev::LaunchConfig cfg;
  cfg.grid = {1};
  cfg.block = {64};
  cfg.name = "warp";
  cfg.emu_seed = seed;
  dev::launch(cfg, warp_kernel, WarpParams{out.data()});
  dev::synchronize();
  return out.download();
}

// ---- 16-byte vectors, fp16/bf16 conversions, atomics --------------------------------------------------------------
// Each thread: loads 8 fp16 of `in` with load16_global_nc, converts pairs through to_float2/from_float2 (x2 and
// +1), stores them to smem with store16, reads back with load16 and writes `out`; also writes the bf16 of each
// value and does atomics on `counters`: [0] add 1, [1] max t, [2] min t, [4..5] add u64, [6] cas 0->t+1 (one
// wins), [7] exch, [8..10] int32 add/max/min; then the fences and a nanosleep.
struct VectorParams {
  const dev::f16* in;  // [threads * 8]
  dev::f16* out;       // [threads * 8]
  dev::bf16* out_bf16; // [threads * 8]
  uint32_t* counters;  // [12]
};
CF_GLOBAL void vector_kernel(const CF_GRID_CONSTANT VectorParams p) {
  const uint32_t t = dev::thread_rank();
  auto* stage = reinterpret_cast<dev::U32x4*>(dev::dynamic_smem());
  const dev::U32x4 v = dev::load16_global_nc(p.in + 8 * t);
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
  uint32_t outw[4];
  for (int i = 0; i < 4; ++i) {
    const dev::Float2 f = dev::to_float2(dev::from_bits<dev::f16x2>(words[i]));
    outw[i] = dev::to_bits(dev::from_float2<dev::f16x2>(f.x * 2.0f + 1.0f, f.y * 2.0f + 1.0f));
    const dev::bf16x2 b = dev::from_float2<dev::bf16x2>(f.x, f.y);
    p.out_bf16[8 * t + 2 * i] = dev::from_float<dev::bf16>(dev::to_float2(b).x);
    p.out_bf16[8 * t + 2 * i + 1] = dev::from_float<dev::bf16>(dev::to_float2(b).y);
  }
  dev::store16(stage + t, dev::U32x4{outw[0], outw[1], outw[2], outw[3]});
  dev::block_sync();
  dev::store16(p.out + 8 * t, dev::load16(stage + t));
  dev::atomic_add(&p.counters[0], 1u);
  dev::atomic_max(&p.counters[1], t);
  dev::atomic_min(&p.counters[2], t);
  dev::atomic_add(reinterpret_cast<uint64_t*>(&p.counters[4]), uint64_t(1) << 33);
  dev::atomic_cas(&p.counters[6], 0u, t + 1);
  dev::atomic_exch(&p.counters[7], 77u);
  auto* signed_counters = reinterpret_cast<int32_t*>(p.counters + 8);  // [8] add -1, [9] max -t, [10] min -t
  dev::atomic_add(&signed_counters[0], -1);
  dev::atomic_max(&signed_counters[1], -int32_t(t));
  dev::atomic_min(&signed_counters[2], -int32_t(t));
  dev::threadfence();
  dev::threadfence_block();
  dev::fence_cluster();
  dev::nanosleep(100);
}
struct VectorResult {
  std::vector<uint16_t> out, out_bf16;
  std::vector<uint32_t> counters;
};
inline VectorResult run_vector(const std::vector<uint16_t>& in_bits, uint32_t threads, uint64_t seed = 0) {
  dev::DeviceBuffer<uint16_t> in(in_bits.size());
  in.upload(in_bits);
  dev::DeviceBuffer<dev::f16> out(size_t(threads) * 8);
  dev::DeviceBuffer<dev::bf16> out_bf16(size_t(threads) * 8);
  dev::DeviceBuffer<uint32_t> counters(12);
  const std::vector<uint32_t> init = {0, 0, 0xffffffffu, 0, 0, 0, 0, 0, 0, 0x80000000u, 0x7fffffffu, 0};
  counters.upload(init);
  dev::LaunchConfig cfg;
  cfg.grid = {1};
  cfg.block = {threads};
  cfg.smem_bytes = threads * 16;
  cfg.name = "vector";
  cfg.emu_seed = seed;
  dev::launch(cfg, vector_kernel,
              VectorParams{reinterpret_cast<const dev::f16*>(in.data()), out.data(), out_bf16.data(), counters.data()});
  dev::synchronize();
  return {out.download<uint16_t>(), out_bf16.download<uint16_t>(), counters.download()};
}

// ---- mma.sync m16n8k16 ---------------------------------------------------------------------------------------
// Every warp computes D = A B + C for the same A (16x16, m x k), B (16x8, k x n) given row-major as fp16 or bf16
// bits, and C (16x8 fp32), building the fragments as api.hpp documents; warp w writes d[w][16][8].
struct MmaParams {
  const uint16_t* a;
  const uint16_t* b;
  const float* c;
  float* d;
};
template <bool kBf16>
CF_GLOBAL void mma_kernel(const CF_GRID_CONSTANT MmaParams p) {
  const uint32_t lane = dev::lane_id(), g = lane / 4, t = lane % 4;
  auto pack = [](uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); };
  auto at = [&](uint32_t m, uint32_t k) { return pack(p.a[m * 16 + k], p.a[m * 16 + k + 1]); };
  const uint32_t a[4] = {at(g, 2 * t), at(g + 8, 2 * t), at(g, 2 * t + 8), at(g + 8, 2 * t + 8)};
  const uint32_t b[2] = {pack(p.b[(2 * t) * 8 + g], p.b[(2 * t + 1) * 8 + g]),
                         pack(p.b[(2 * t + 8) * 8 + g], p.b[(2 * t + 9) * 8 + g])};
  float acc[4] = {p.c[g * 8 + 2 * t], p.c[g * 8 + 2 * t + 1], p.c[(g + 8) * 8 + 2 * t], p.c[(g + 8) * 8 + 2 * t + 1]};
  if constexpr (kBf16) {
    dev::mma_m16n8k16_bf16(acc, a, b, acc);
  } else {
    dev::mma_m16n8k16_f16(acc, a, b, acc);
  }
  float* d = p.d + dev::warp_id() * 16 * 8;
  d[g * 8 + 2 * t] = acc[0];
  d[g * 8 + 2 * t + 1] = acc[1];
  d[(g + 8) * 8 + 2 * t] = acc[2];
  d[(g + 8) * 8 + 2 * t + 1] = acc[3];
}
template <bool kBf16>
std::vector<float> run_mma(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b, const std::vector<float>& c,
                           uint32_t warps, uint64_t seed = 0) {
  dev::DeviceBuffer<uint16_t> a_dev(a.size()), b_dev(b.size());
  dev::DeviceBuffer<float> c_dev(c.size()), d(size_t(warps) * 16 * 8);
  a_dev.upload(a);
  b_dev.upload(b);
  c_dev.upload(c);
  dev::LaunchConfig cfg;
  cfg.grid = {1};
  cfg.block = {32 * warps};
  cfg.name = "mma";
  cfg.emu_seed = seed;
  dev::launch(cfg, mma_kernel<kBf16>, MmaParams{a_dev.data(), b_dev.data(), c_dev.data(), d.data()});
  dev::synchronize();
  return d.download();
}

}  // namespace cf::test
