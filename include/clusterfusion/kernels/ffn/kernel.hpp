// Device code of the fused FFN block (docs/ffn.md). Written only against the device API, so it compiles with nvcc
// for sm_90a and runs on the CPU emulator.
//
// Grid: C clusters of N CTAs. Cluster c owns a slice F_c of ffn_hidden (whole 16-row tiles); rank r of a cluster owns
// a slice K_r of hidden (whole 32-column units), which is both its K-slice of gate/up and its output rows of down.
// Each CTA has 8 consumer warps, one producer warp and one arrival warp. The producer streams the CTA's whole load
// schedule into a ring of `stages` 16 KB shared-memory stages (full/empty mbarrier pairs): gate rows F_c x K_r, up
// rows F_c x K_r, then down rows K_r x F_c, as panels of whole tiles x column chunks (weight_stream.hpp). The
// consumers run the phases in the same order:
//   1. norm     residual add + sum of squares over K_r; all-gather of the partial sums over the cluster (DSMEM);
//               x_s = x (T) over K_r
//   2. gate/up  partial gate and up rows of F_c over K_r (tensor cores) -> part (fp32, shared memory)
//   3. act      pull reduce-scatter: the owner of a pair of F_c rows sums the N partials in rank order, computes
//               silu(gate) * up, rounds to T and pushes it into every rank's act_s
//   4. down     out rows K_r x the F_c columns -> a partial [K_r rows, batch] per cluster in the global workspace,
//               in output blocks. After a block is stored the arrival warp publishes it (release fence + u32
//               counter atomic); the CTA whose arrival completes a block (the last of the C clusters) sums the
//               block over the clusters in order and writes out and residual_out. Consumers pick up those
//               decisions at their next block boundary (and wait for the remaining ones at the end), so neither the
//               fence nor the atomic's round trip is ever on their path.
// The down weights do not depend on the activations, so the ring fills with them during the exchange of phase 3.
// Ranks visit their output blocks in an order rotated by the cluster index: every block is completed at the end by
// one of the few clusters that visit it last, so the sums are spread over many CTAs (each sums one or two blocks)
// instead of falling to whichever CTA is slowest, which the extra work would keep slowest (docs/ffn.md §2).
// Cross-CTA steps inside the cluster use DSMEM with mbarrier signalling (no cluster barrier after the first, so the
// producer never joins one mid-kernel); each exchange barrier is used once per launch.
#pragma once
#include <cmath>
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/kernels/ffn/kernel_params.hpp"
#include "clusterfusion/kernels/ffn/traits.hpp"
#include "clusterfusion/kernels/ffn/weight_stream.hpp"

namespace cf::kernels::ffn {
namespace dev = cf::dev;

template <typename T, int kBatchTiles>
CF_GLOBAL void CF_LAUNCH_BOUNDS(kThreads, 1) ffn_kernel(const CF_GRID_CONSTANT KernelParams p) {
  using ws::Range;
  constexpr int kCt = ws::kConsumerThreads;

  uint8_t* smem = dev::dynamic_smem();
  const uint32_t tid = dev::thread_rank(), warp = tid / 32, lane = tid % 32;
  const int32_t rank = int32_t(dev::block_rank_in_cluster());
  const int32_t n_ranks = int32_t(dev::cluster_size());
  const int32_t cluster = int32_t(dev::cluster_idx().x);
  const int32_t n_clusters = int32_t(dev::cluster_grid_dim().x);
  const int32_t batch = p.batch;

  auto* full = reinterpret_cast<dev::Mbarrier*>(smem);
  auto* empty = full + ws::kMaxStages;
  auto* sumsq_bar = empty + ws::kMaxStages;
  auto* part_bar = sumsq_bar + 1;
  auto* act_bar = sumsq_bar + 2;
  auto* stored_bar = sumsq_bar + kExchangeBarriers;  // [kMaxBlocks]: consumers stored the block's partials
  auto* decided_bar = stored_bar + kMaxBlocks;       // [kMaxBlocks]: the arrival warp knows whether we were last
  auto* small = reinterpret_cast<SmallBuffers*>(smem + p.off_small);
  uint8_t* x_s = smem + p.off_x;
  uint8_t* act_s = smem + p.off_x;  // region X after gate/up
  float* part = reinterpret_cast<float*>(smem + p.off_part);
  float* fin = reinterpret_cast<float*>(smem + p.off_part);  // region P after the act exchange
  float* scratch = reinterpret_cast<float*>(smem + p.off_scratch);
  // Bounded waits (prim::bounded_wait): the site is given per wait; `consequence` waits are on this CTA's own warps.
  const prim::WaitLimit limit{reinterpret_cast<uint64_t*>(p.status + kStatusTimeout), p.wait_budget_ns, 0,
                              &small->abort};
  auto wait = [&](dev::Mbarrier& bar, WaitSite site, bool consequence = false) {
    prim::WaitLimit l = limit;
    l.consequence = consequence;
    return prim::bounded_wait(bar, 0, l, site);
  };
  const ws::Ring ring{full, empty, smem + p.off_ring, p.stages, limit};

  // The K-slice / output rows of this rank and the F-slice of this cluster.
  const Range k_units = ws::split_range(p.hidden_units, n_ranks, rank);
  const int32_t col0 = k_units.begin * ws::kUnitCols, n_cols = k_units.size() * ws::kUnitCols;
  const Range f_tiles = ws::split_range(p.ffn_tiles, n_clusters, cluster);
  const int32_t f0 = f_tiles.begin * ws::kTileRows, f_rows = f_tiles.size() * ws::kTileRows;
  const int32_t gu_m = p.gu_tiles, down_m = p.down_tiles;
  const int32_t gu_groups = ws::ceil_div(f_tiles.size(), gu_m);
  const int32_t gu_items = ws::ceil_div(n_cols, p.gu_cols);
  const int32_t o_tiles = n_cols / ws::kTileRows;
  const int32_t down_groups = ws::ceil_div(o_tiles, down_m);
  const int32_t down_items = ws::ceil_div(f_rows, p.down_cols);
  const int32_t n_blocks = ws::ceil_div(down_groups, p.block_groups);
  const int32_t block_rows = p.block_groups * down_m * ws::kTileRows;
  // the output block visited i-th (barriers and flags are indexed by visit position, counters by block)
  auto block_at = [&](int32_t i) { return (i + cluster) % n_blocks; };

  // ---- setup ----------------------------------------------------------------------------------------------------
  if (tid == 0) {
    for (int32_t s = 0; s < p.stages; ++s) {
      full[s].init(1);
      empty[s].init(ws::kConsumerWarps);
    }
    for (int i = 0; i < kExchangeBarriers; ++i) sumsq_bar[i].init(uint32_t(n_ranks));
    for (int32_t b = 0; b < n_blocks; ++b) {
      stored_bar[b].init(1);
      decided_bar[b].init(1);
    }
    dev::fence_mbarrier_init();
    small->abort = 0;
  }
  dev::cluster_sync();  // barriers initialised; every CTA of the cluster started
  int32_t issued_end = 0;  // producer: ring items [0, issued_end) were issued (none after an abort)

  if (warp == uint32_t(ws::kProducerWarp)) {
    // ==== producer: the whole load schedule, in consumption order ==================================================
    int32_t item = 0;
    for (int half = 0; half < 2; ++half) {
      const ws::BoxMaps& maps = half == 0 ? p.gate : p.up;
      for (int32_t grp = 0; grp < gu_groups; ++grp) {
        const int32_t t0 = grp * gu_m, nt = f_tiles.size() - t0 < gu_m ? f_tiles.size() - t0 : gu_m;
        for (int32_t s = 0; s < gu_items; ++s)
          if (ws::load_panel(ring, item++, kWaitRingStage, maps, ws::chunk_width(n_cols, p.gu_cols, s),
                             f0 + t0 * ws::kTileRows, nt, col0 + s * p.gu_cols, lane))
            issued_end = item;
      }
    }
    for (int32_t i = 0; i < n_blocks; ++i) {
      const int32_t blk = block_at(i);
      const int32_t g_end = (blk + 1) * p.block_groups < down_groups ? (blk + 1) * p.block_groups : down_groups;
      for (int32_t grp = blk * p.block_groups; grp < g_end; ++grp) {
        const int32_t t0 = grp * down_m, nt = o_tiles - t0 < down_m ? o_tiles - t0 : down_m;
        for (int32_t s = 0; s < down_items; ++s)
          if (ws::load_panel(ring, item++, kWaitRingStage, p.down, ws::chunk_width(f_rows, p.down_cols, s),
                             col0 + t0 * ws::kTileRows, nt, f0 + s * p.down_cols, lane))
            issued_end = item;
      }
    }
  } else if (warp == uint32_t(kArrivalWarp)) {
    // ==== arrival warp: publishes the output blocks in visit order, several at once when the consumers are ahead ===
    // Lane j takes the block visited at position next + j if it is stored already: release fence (the consumers'
    // partial stores, ordered before it through stored_bar), counter atomic, and when it completed the block the
    // acquire fence (the other clusters' partials) and the counter reset for the next launch; then decided_bar
    // tells the consumers.
    uint32_t* const counters = p.counters + rank * p.blocks_max;
    for (int32_t next = 0; next < n_blocks;) {
      (void)wait(stored_bar[next], kWaitStored, /*consequence=*/true);
      const int32_t i = next + int32_t(lane);
      const bool ready = lane == 0 || (i < n_blocks && stored_bar[i].try_wait(0));
      const uint32_t mask = dev::ballot_sync(dev::kFullMask, ready);
      int32_t count = 0;
      while (count < 32 && ((mask >> count) & 1u)) ++count;  // the stored positions next, next + 1, ...
      if (int32_t(lane) < count) {
        uint32_t* const counter = counters + block_at(i);
        dev::threadfence();
        const uint32_t old = dev::atomic_add(counter, 1u);
        const bool last = old == uint32_t(n_clusters - 1);
        if (last) {
          (void)dev::atomic_exch(counter, 0u);
          dev::threadfence();
        }
        small->block_last[i] = last ? 1 : 0;
        decided_bar[i].arrive();
      }
      next += count;
    }
  } else {
    // ==== consumers ==================================================================================================
    const uint32_t ctid = tid;  // 0..255
    auto consumers_sync = [&] { dev::named_barrier_sync(1, kCt); };
    // Signals `bar` in every CTA of the cluster (after this CTA's consumers wrote what the peers will read).
    auto signal_all = [&](dev::Mbarrier* bar) {
      dev::fence_cluster();
      consumers_sync();
      if (ctid == 0)
        for (int32_t r = 0; r < n_ranks; ++r) bar->arrive_remote(uint32_t(r));
    };
    const T* const hidden_in = static_cast<const T*>(p.hidden_in);
    const T* const residual = static_cast<const T*>(p.residual);
    const T* const norm_w = static_cast<const T*>(p.norm);

    // ---- 1. norm ----------------------------------------------------------------------------------------------------
    auto load_sum8 = [&](int32_t b, int32_t c, float (&v)[8]) {
      const int64_t at = int64_t(b) * p.hidden + c;
      const dev::U32x4 h = dev::load16(hidden_in + at);
      const uint32_t hw[4] = {h.x, h.y, h.z, h.w};
      uint32_t rw[4] = {0, 0, 0, 0};
      if (residual) {
        const dev::U32x4 r = dev::load16(residual + at);
        rw[0] = r.x, rw[1] = r.y, rw[2] = r.z, rw[3] = r.w;
      }
      CF_UNROLL
      for (int k = 0; k < 4; ++k) {
        const dev::Float2 hf = ws::unpack2<T>(hw[k]);
        const dev::Float2 rf = residual ? ws::unpack2<T>(rw[k]) : dev::Float2{0.0f, 0.0f};
        v[2 * k] = hf.x + rf.x;
        v[2 * k + 1] = hf.y + rf.y;
      }
    };
    // Sum of squares: every token gets a power-of-two group of consumer threads (256 / batch rounded down to a
    // power of two, >= 16), each thread strides over the token's 8-column chunks with 4 loads in flight; the group
    // reduces with shuffles (and through shared memory across warps) in a fixed order.
    const int32_t tpt_log2 = batch <= 1 ? 8 : batch <= 2 ? 7 : batch <= 4 ? 6 : batch <= 8 ? 5 : 4;
    const int32_t tpt = 1 << tpt_log2;  // threads per token
    {
      const int32_t b = int32_t(ctid) >> tpt_log2, sub = int32_t(ctid) & (tpt - 1);
      float sq = 0.0f;
      if (b < batch) {
        constexpr int kInFlight = 4;
        for (int32_t c0 = sub * 8; c0 < n_cols; c0 += tpt * 8 * kInFlight) {
          float v[kInFlight][8];
          CF_UNROLL
          for (int k = 0; k < kInFlight; ++k)
            if (c0 + k * tpt * 8 < n_cols) load_sum8(b, col0 + c0 + k * tpt * 8, v[k]);
          CF_UNROLL
          for (int k = 0; k < kInFlight; ++k)
            if (c0 + k * tpt * 8 < n_cols) {
              CF_UNROLL
              for (int e = 0; e < 8; ++e) sq += v[k][e] * v[k][e];
            }
        }
      }
      const int width = tpt < 32 ? tpt : 32;
      for (int m = width / 2; m >= 1; m >>= 1) sq += dev::shfl_xor_sync(dev::kFullMask, sq, m);
      if (tpt >= 32 && lane == 0 && b < batch) small->norm_red[b][warp & uint32_t((tpt >> 5) - 1)] = sq;
      if (tpt < 32 && sub == 0 && b < batch) small->norm_red[b][0] = sq;
    }
    consumers_sync();
    if (int32_t(ctid) < batch) {
      float sq = 0.0f;
      const int parts = tpt >= 32 ? tpt / 32 : 1;
      for (int w = 0; w < parts; ++w) sq += small->norm_red[ctid][w];
      small->sumsq_local[ctid] = sq;
    }
    signal_all(sumsq_bar);
    (void)wait(*sumsq_bar, kWaitNormSums);
    if (int32_t(ctid) < batch) {
      float part_sums[kMaxClusterSize];
      CF_UNROLL
      for (int r = 0; r < kMaxClusterSize; ++r)
        part_sums[r] = r < n_ranks ? dev::map_shared_rank(small->sumsq_local, uint32_t(r))[ctid] : 0.0f;
      float total = 0.0f;
      CF_UNROLL
      for (int r = 0; r < kMaxClusterSize; ++r)
        if (r < n_ranks) total += part_sums[r];
      small->inv_rms[ctid] = 1.0f / std::sqrt(total / float(p.hidden) + p.eps);
    }
    consumers_sync();
    {
      constexpr int kInFlight = 2;
      const int32_t chunks = batch * n_cols / 8;
      for (int32_t i0 = int32_t(ctid); i0 < chunks; i0 += kCt * kInFlight) {
        float v[kInFlight][8];
        dev::U32x4 wv[kInFlight];
        CF_UNROLL
        for (int k = 0; k < kInFlight; ++k) {
          const int32_t i = i0 + k * kCt;
          if (i < chunks) {
            const int32_t b = i * 8 / n_cols, c = i * 8 % n_cols;
            load_sum8(b, col0 + c, v[k]);
            wv[k] = dev::load16(norm_w + col0 + c);
          }
        }
        CF_UNROLL
        for (int k = 0; k < kInFlight; ++k) {
          const int32_t i = i0 + k * kCt;
          if (i < chunks) {
            const int32_t b = i * 8 / n_cols, c = i * 8 % n_cols;
            const uint32_t ww[4] = {wv[k].x, wv[k].y, wv[k].z, wv[k].w};
            const float inv = small->inv_rms[b];
            uint32_t xw[4];
            CF_UNROLL
            for (int e = 0; e < 4; ++e) {
              const dev::Float2 wf = ws::unpack2<T>(ww[e]);
              xw[e] = ws::pack2<T>(v[k][2 * e] * inv * wf.x, v[k][2 * e + 1] * inv * wf.y);
            }
            dev::store16(x_s + uint32_t(b) * p.x_stride + uint32_t(c) * 2, {xw[0], xw[1], xw[2], xw[3]});
          }
        }
      }
    }
    consumers_sync();

    // ---- 2. gate/up -------------------------------------------------------------------------------------------------
    const uint32_t scratch_floats = ws::group_scratch_bytes(batch) / 4;
    int32_t item = 0, group_index = 0;
    for (int half = 0; half < 2; ++half) {
      for (int32_t grp = 0; grp < gu_groups; ++grp) {
        const int32_t t0 = grp * gu_m, nt = f_tiles.size() - t0 < gu_m ? f_tiles.size() - t0 : gu_m;
        float acc[kBatchTiles][4] = {};
        for (int32_t s = 0; s < gu_items; ++s) {
          if (ring.wait_full(item, kWaitGateUpTile))
            ws::panel_mma<T, kBatchTiles>(ring.stage(item), gu_m, nt, ws::chunk_width(n_cols, p.gu_cols, s), x_s,
                                          p.x_stride, s * p.gu_cols, n_cols, batch, warp, lane, acc);
          ring.release(item, lane);
          ++item;
        }
        float* sc = scratch + uint32_t(group_index & 1) * scratch_floats;
        ws::store_group_partials<kBatchTiles>(sc, gu_m, nt, batch, warp, lane, acc);
        consumers_sync();
        float* dst = part + (half * f_rows + t0 * ws::kTileRows) * batch;
        for (int32_t e = int32_t(ctid); e < nt * ws::kTileRows * batch; e += kCt)
          dst[e] = ws::group_value(sc, gu_m, batch, e);
        ++group_index;
      }
    }
    signal_all(part_bar);

    // ---- 3. act: owner of row pairs [pairs.begin, pairs.end) sums the ranks' partials, activates, pushes -----------
    (void)wait(*part_bar, kWaitPartials);
    {
      const Range pairs = ws::split_range(f_rows / 2, n_ranks, rank);
      for (int32_t i = int32_t(ctid); i < pairs.size() * batch; i += kCt) {
        const int32_t f = 2 * (pairs.begin + i / batch), b = i % batch;
        // all 4 N loads in flight, then summed in rank order
        float gate[kMaxClusterSize][2], up[kMaxClusterSize][2];
        CF_UNROLL
        for (int r = 0; r < kMaxClusterSize; ++r) {
          if (r < n_ranks) {
            const float* peer = dev::map_shared_rank(part, uint32_t(r));
            CF_UNROLL
            for (int k = 0; k < 2; ++k) {
              gate[r][k] = peer[(f + k) * batch + b];
              up[r][k] = peer[(f_rows + f + k) * batch + b];
            }
          }
        }
        float g_sum[2] = {0.0f, 0.0f}, u_sum[2] = {0.0f, 0.0f};
        CF_UNROLL
        for (int r = 0; r < kMaxClusterSize; ++r) {
          if (r < n_ranks) {
            CF_UNROLL
            for (int k = 0; k < 2; ++k) {
              g_sum[k] += gate[r][k];
              u_sum[k] += up[r][k];
            }
          }
        }
        float a[2];
        CF_UNROLL
        for (int k = 0; k < 2; ++k) a[k] = g_sum[k] / (1.0f + std::exp(-g_sum[k])) * u_sum[k];
        const uint32_t word = ws::pack2<T>(a[0], a[1]);
        // 4-byte aligned: f is even, act_stride a multiple of 64
        auto* const dst = reinterpret_cast<uint32_t*>(act_s + uint32_t(b) * p.act_stride + uint32_t(f) * 2);
        for (int32_t r = 0; r < n_ranks; ++r) *dev::map_shared_rank(dst, uint32_t(r)) = word;
      }
    }
    signal_all(act_bar);
    // the activations of the cluster's whole F-slice are here; peers are done with `part`
    (void)wait(*act_bar, kWaitActivations);

    // ---- 4. down + cross-cluster sum ------------------------------------------------------------------------------
    {
      T* const out = static_cast<T*>(p.out);
      T* const residual_out = static_cast<T*>(p.residual_out);
      const uint32_t ws_cluster_stride = uint32_t(p.hidden) * uint32_t(batch);
      const int32_t chunks = ws::ceil_div(n_clusters, kClustersPerChunk);
      // Sums output block `blk` of this rank over all clusters and writes out / residual_out. Every thread loads a
      // float4 of kClustersPerChunk clusters (all loads in flight at once, and the hidden / residual elements it
      // writes later with them); the chunk sums are added in chunk order.
      auto finish_block = [&](int32_t blk) {
        const int32_t r0 = col0 + blk * block_rows;
        const int32_t nr = n_cols - blk * block_rows < block_rows ? n_cols - blk * block_rows : block_rows;
        const int32_t n_vec = nr * batch / 4;  // nr is a multiple of 16
        const float* base = p.partial + uint32_t(r0) * uint32_t(batch);
        // the first element this thread writes (the one element of most threads: blocks hold <= 512 elements)
        float h0 = 0.0f, r0v = 0.0f;
        if (int32_t(ctid) < nr * batch) {
          const int64_t at = int64_t(int32_t(ctid) % batch) * p.hidden + r0 + int32_t(ctid) / batch;
          h0 = dev::to_float(hidden_in[at]);
          r0v = residual ? dev::to_float(residual[at]) : 0.0f;
        }
        for (int32_t task = int32_t(ctid); task < n_vec * chunks; task += kCt) {
          const int32_t v = task % n_vec, c = task / n_vec;
          dev::U32x4 q[kClustersPerChunk];
          CF_UNROLL
          for (int k = 0; k < kClustersPerChunk; ++k) {
            const int32_t cl = c * kClustersPerChunk + k;
            if (cl < n_clusters)
              q[k] = ws::load16_volatile(base + uint32_t(cl) * ws_cluster_stride + uint32_t(v) * 4);
          }
          float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
          CF_UNROLL
          for (int k = 0; k < kClustersPerChunk; ++k) {
            if (c * kClustersPerChunk + k < n_clusters) {
              sum[0] += ws::as_float(q[k].x), sum[1] += ws::as_float(q[k].y);
              sum[2] += ws::as_float(q[k].z), sum[3] += ws::as_float(q[k].w);
            }
          }
          dev::store16(fin + uint32_t(c * n_vec + v) * 4,
                       {ws::as_bits(sum[0]), ws::as_bits(sum[1]), ws::as_bits(sum[2]), ws::as_bits(sum[3])});
        }
        consumers_sync();
        for (int32_t i = int32_t(ctid); i < nr * batch; i += kCt) {
          float total = 0.0f;
          for (int32_t c = 0; c < chunks; ++c) total += fin[uint32_t(c * nr * batch + i)];
          const int32_t row = r0 + i / batch, b = i % batch;
          const int64_t at = int64_t(b) * p.hidden + row;
          const float h = i == int32_t(ctid) ? h0 : dev::to_float(hidden_in[at]);
          const float r = i == int32_t(ctid) ? r0v : residual ? dev::to_float(residual[at]) : 0.0f;
          residual_out[at] = dev::from_float<T>(h + r);
          out[at] = dev::from_float<T>(total);
        }
        consumers_sync();  // fin is rewritten by the next finish
      };
      // Sums the blocks this CTA completed among those the arrival warp has decided: at a block boundary only the
      // decisions already there (`wait_all` false), at the end all of them. Thread 0 looks, everyone reads its
      // answer after the barrier (a barrier separates consecutive calls, so the answer is not overwritten early).
      int32_t decided_upto = 0;
      auto finish_decided = [&](int32_t stored_end, bool wait_all) {
        if (ctid == 0) {
          int32_t end = decided_upto;
          for (; end < stored_end; ++end) {
            if (wait_all) (void)wait(decided_bar[end], kWaitDecided, /*consequence=*/true);
            else if (!decided_bar[end].try_wait(0)) break;
          }
          small->decided_end = end;
        }
        consumers_sync();
        const int32_t end = small->decided_end;
        for (int32_t i = decided_upto; i < end; ++i)
          if (small->block_last[i]) finish_block(block_at(i));
        decided_upto = end;
      };
      for (int32_t i = 0; i < n_blocks; ++i) {
        const int32_t blk = block_at(i);
        const int32_t g_end = (blk + 1) * p.block_groups < down_groups ? (blk + 1) * p.block_groups : down_groups;
        for (int32_t grp = blk * p.block_groups; grp < g_end; ++grp) {
          const int32_t t0 = grp * down_m, nt = o_tiles - t0 < down_m ? o_tiles - t0 : down_m;
          float acc[kBatchTiles][4] = {};
          for (int32_t s = 0; s < down_items; ++s) {
            if (ring.wait_full(item, kWaitDownTile))
              ws::panel_mma<T, kBatchTiles>(ring.stage(item), down_m, nt, ws::chunk_width(f_rows, p.down_cols, s),
                                            act_s, p.act_stride, s * p.down_cols, f_rows, batch, warp, lane, acc);
            ring.release(item, lane);
            ++item;
          }
          float* sc = scratch + uint32_t(group_index & 1) * scratch_floats;
          ws::store_group_partials<kBatchTiles>(sc, down_m, nt, batch, warp, lane, acc);
          consumers_sync();
          const int32_t r0 = col0 + t0 * ws::kTileRows;
          float* dst = p.partial + uint32_t(cluster) * ws_cluster_stride + uint32_t(r0) * uint32_t(batch);
          for (int32_t e = int32_t(ctid); e < nt * ws::kTileRows * batch; e += kCt)
            dst[e] = ws::group_value(sc, down_m, batch, e);
          ++group_index;
        }
        consumers_sync();  // every partial store of the block happens before the arrival (through stored_bar)
        if (ctid == 0) stored_bar[i].arrive();
        finish_decided(i, false);  // earlier positions: this one's atomic has only just been asked for
      }
      consumers_sync();  // everyone has read the last answer before thread 0 writes the next
      finish_decided(n_blocks, true);
    }
  }
  // After an expired wait: every thread is past its last wait; the producer waits until the copies it issued have
  // landed, so none writes into this CTA's shared memory after it ends (one block barrier per launch otherwise).
  dev::block_sync();
  if (warp == uint32_t(ws::kProducerWarp) && lane == 0 && prim::abort_raised(limit))
    ring.drain(issued_end, {reinterpret_cast<uint64_t*>(p.status + kStatusDrainTimeout), p.wait_budget_ns, kWaitDrain,
                            nullptr});
  dev::cluster_sync();  // no CTA exits while a peer may still read its shared memory
}

}  // namespace cf::kernels::ffn
