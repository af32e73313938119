// Device code of the fused FFN block (docs/ffn.md), a phase list on the pipeline layer (docs/pipeline.md). Written
// only against the device API, so it compiles with nvcc for sm_90a and runs on the CPU emulator.
//
// Grid: C clusters of N CTAs. Cluster c owns a slice F_c of ffn_hidden (whole 16-row tiles); rank r of a cluster owns
// a slice K_r of hidden (whole 32-column units), which is both its K-slice of gate/up and its output rows of down.
// Each CTA has 8 consumer warps, one producer warp and one arrival warp. The producer streams the CTA's whole load
// schedule into the ring (PanelStage items): gate rows F_c x K_r, up rows F_c x K_r, then down rows K_r x F_c. The
// consumers run the phases in the same order:
//   1. norm      residual add + sum of squares over K_r; all-gather of the partial sums over the cluster, added in
//                rank order; x_s = x (TA) over K_r
//   2. gate/up   partial gate and up rows of F_c over K_r (tensor cores) -> part (fp32, shared memory)
//   3. act       the owner of a pair of F_c rows sums the N partials in rank order (a cluster exchange), computes
//                silu(gate) * up, rounds to TA and pushes it into every rank's act_s
//   4. down      out rows K_r x the F_c columns -> a partial [K_r rows, batch] per cluster in the global workspace,
//                in output blocks. After a block is stored the arrival warp publishes it (release fence + u32
//                counter atomic); the CTA whose arrival completes a block (the last of the C clusters) sums the
//                block over the clusters in order and writes out and residual_out. Consumers pick up those
//                decisions at their next block boundary (and wait for the remaining ones at the end), so neither the
//                fence nor the atomic's round trip is ever on their path.
// The down weights do not depend on the activations, so the ring fills with them during the exchange of phase 3.
// Ranks visit their output blocks in an order rotated by the cluster index: every block is completed at the end by
// one of the few clusters that visit it last, so the sums are spread over many CTAs (each sums one or two blocks)
// instead of falling to whichever CTA is slowest, which the extra work would keep slowest (docs/ffn.md §2).
// Cross-CTA steps inside the cluster are the collective core's calls (prim::ClusterReduceScatter: DSMEM + mbarrier
// signalling, no cluster barrier after the first), run by the consumer warps only, so the producer keeps streaming.
#pragma once
#include <cmath>
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/kernels/ffn/kernel_params.hpp"
#include "clusterfusion/kernels/ffn/traits.hpp"
#include "clusterfusion/pipeline/cross_cta_sum.hpp"
#include "clusterfusion/pipeline/cta.hpp"
#include "clusterfusion/pipeline/norm_prologue.hpp"
#include "clusterfusion/pipeline/ring.hpp"
#include "clusterfusion/pipeline/trace.hpp"
#include "clusterfusion/pipeline/weight_stream.hpp"
#include "clusterfusion/primitives/cluster_reduce_scatter.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::ffn {
namespace dev = cf::dev;

// One CTA of the kernel: ids, ring and shared memory (pl::StreamCta), the collectives, the work split.
template <typename TW, typename TA, int kBatchTiles>
struct FfnCta : pl::StreamCta<KernelParams, Barriers, SmallBuffers> {
  const int32_t rank = int32_t(dev::block_rank_in_cluster()), n_ranks = int32_t(dev::cluster_size());
  const int32_t cluster = int32_t(dev::cluster_idx().x), n_clusters = int32_t(dev::cluster_grid_dim().x);
  const int32_t batch = p.batch;
  dev::Mbarrier* const stored_bar = bars->stored;    // [kMaxBlocks], by visit position
  dev::Mbarrier* const decided_bar = bars->decided;  // [kMaxBlocks], by visit position

  // The K-slice / output rows of this rank and the F-slice of this cluster.
  const pl::Range k_units = pl::split_range(p.hidden_units, n_ranks, rank);
  const int32_t col0 = k_units.begin * pl::kUnitCols, n_cols = k_units.size() * pl::kUnitCols;
  const pl::Range f_tiles = pl::split_range(p.ffn_tiles, n_clusters, cluster);
  const int32_t f0 = f_tiles.begin * pl::kTileRows, f_rows = f_tiles.size() * pl::kTileRows;
  const int32_t gu_groups = pl::ceil_div(f_tiles.size(), p.gu_tiles);
  const int32_t gu_items = pl::ceil_div(n_cols, p.gu_cols);
  const int32_t o_tiles = n_cols / pl::kTileRows;
  const int32_t down_groups = pl::ceil_div(o_tiles, p.down_tiles);
  const int32_t down_items = pl::ceil_div(f_rows, p.down_cols);
  const int32_t n_blocks = pl::ceil_div(down_groups, p.block_groups);
  const int32_t block_rows = p.block_groups * p.down_tiles * pl::kTileRows;
  const uint32_t scratch_floats = pl::group_scratch_bytes(batch) / 4;

  CF_DEVICE void trace(TracePoint point) const { pl::trace_point(p.trace, kTraceSlots, point); }
  CF_DEVICE explicit FfnCta(const KernelParams& params) : StreamCta(params, kStatusTimeout) {}

  // The fp32 collectives of the consumer warps (one object for all calls: it counts them); wait codes
  // kWaitNormSums + call: the norm sums, the partials, the activations.
  using Collectives = prim::ClusterReduceScatter<0, float>;
  CF_DEVICE Collectives collectives() const {
    return Collectives(bars->exchange, pl::consumer_group(), limit_at(kWaitNormSums));
  }

  // The output block visited i-th (barriers and flags are indexed by visit position, counters by block).
  CF_DEVICE int32_t block_at(int32_t i) const { return (i + cluster) % n_blocks; }
  CF_DEVICE int32_t gu_group_tiles(int32_t grp) const {
    return f_tiles.size() - grp * p.gu_tiles < p.gu_tiles ? f_tiles.size() - grp * p.gu_tiles : p.gu_tiles;
  }
  CF_DEVICE int32_t down_group_tiles(int32_t grp) const {
    return o_tiles - grp * p.down_tiles < p.down_tiles ? o_tiles - grp * p.down_tiles : p.down_tiles;
  }
  CF_DEVICE int32_t block_groups_end(int32_t blk) const {
    return (blk + 1) * p.block_groups < down_groups ? (blk + 1) * p.block_groups : down_groups;
  }

  CF_DEVICE void setup() {
    if (tid == 0) {
      ring.init();
      for (int32_t b = 0; b < n_blocks; ++b) {
        stored_bar[b].init(1);
        decided_bar[b].init(1);
      }
      dev::fence_mbarrier_init();
      small->abort = 0;
    }
    if (tid < uint32_t(pl::kConsumerThreads)) collectives().init();
    dev::cluster_sync();  // barriers initialised; every CTA of the cluster started
    if (tid == 0) trace(kTraceStart);
  }

  // Producer warp: the whole load schedule in consumption order. Returns the items issued.
  CF_DEVICE int32_t produce() {
    pl::PipelineState st;
    int32_t issued_end = 0;
    for (int half = 0; half < 2; ++half)
      for (int32_t grp = 0; grp < gu_groups; ++grp)
        for (int32_t s = 0; s < gu_items; ++s)
          pl::load_panel(ring, st, issued_end, kWaitRingStage, half == 0 ? p.gate : p.up,
                         pl::chunk_width(n_cols, p.gu_cols, s), f0 + grp * p.gu_tiles * pl::kTileRows,
                         gu_group_tiles(grp), col0 + s * p.gu_cols);
    if (lane == 0) trace(kTraceProducerGateUp);
    for (int32_t i = 0; i < n_blocks; ++i)
      for (int32_t grp = block_at(i) * p.block_groups; grp < block_groups_end(block_at(i)); ++grp)
        for (int32_t s = 0; s < down_items; ++s)
          pl::load_panel(ring, st, issued_end, kWaitRingStage, p.down, pl::chunk_width(f_rows, p.down_cols, s),
                         col0 + grp * p.down_tiles * pl::kTileRows, down_group_tiles(grp), f0 + s * p.down_cols);
    if (lane == 0) trace(kTraceProducerDown);
    return issued_end;
  }

  // Arrival warp: publishes the output blocks in visit order, several at once when the consumers are ahead. Lane j
  // takes the block visited at position next + j if it is stored already: its arrival (pl::arrive_last: release
  // fence, counter atomic, and for the last arriver the reset and the acquire fence), then decided_bar tells the
  // consumers.
  CF_DEVICE void publish_blocks() {
    uint32_t* const counters = p.counters + rank * p.blocks_max;
    prim::WaitLimit stored_limit = limit_at(kWaitStored);
    stored_limit.consequence = true;  // the consumers are late because something else is
    for (int32_t next = 0; next < n_blocks;) {
      (void)prim::bounded_wait(stored_bar[next], 0, stored_limit);
      const int32_t i = next + int32_t(lane);
      const bool ready = lane == 0 || (i < n_blocks && stored_bar[i].try_wait(0));
      const uint32_t mask = dev::ballot_sync(dev::kFullMask, ready);
      int32_t count = 0;
      while (count < 32 && ((mask >> count) & 1u)) ++count;  // the stored positions next, next + 1, ...
      if (int32_t(lane) < count) {
        small->block_last[i] = pl::arrive_last(counters + block_at(i), uint32_t(n_clusters)) ? 1 : 0;
        decided_bar[i].arrive();
      }
      next += count;
    }
  }

  // 1. Consumers: x_s over K_r, the rms from the cluster's partial sums (all-gathered, added in rank order).
  CF_DEVICE void norm(Collectives& rs) {
    const pl::NormPrologue<TA> np{static_cast<const TA*>(p.hidden_in), static_cast<const TA*>(p.residual),
                                  static_cast<const TA*>(p.norm), p.hidden, batch, col0, n_cols, small->norm_red};
    np.run_in_cluster(tid, p.eps, rs, small->sumsq, small->inv_rms, p.layout.x.in(smem), p.layout.x_stride);
    if (tid == 0) trace(kTraceNormDone);
  }

  // Consumers, end of a group of tiles: the k-group partials summed in order -> dst[row][token] (16 rows per tile).
  CF_DEVICE void store_group(const float (&acc)[kBatchTiles][4], int32_t tiles, int32_t nt, int32_t& group_index,
                             float* dst) {
    float* sc = p.layout.scratch.in(smem) + uint32_t(group_index & 1) * scratch_floats;
    pl::store_group_partials<kBatchTiles>(sc, tiles, nt, batch, warp, lane, acc);
    pl::consumers_sync();
    for (int32_t e = int32_t(tid); e < nt * pl::kTileRows * batch; e += pl::kConsumerThreads)
      dst[e] = pl::group_value(sc, tiles, batch, e);
    ++group_index;
  }

  // 2. Consumers: partial gate and up rows of F_c over K_r -> part [2 F_c][batch].
  CF_DEVICE void gate_up(pl::PipelineState& st, int32_t& group_index) {
    const uint8_t* x_s = p.layout.x.in(smem);
    for (int half = 0; half < 2; ++half) {
      for (int32_t grp = 0; grp < gu_groups; ++grp) {
        const int32_t nt = gu_group_tiles(grp);
        float acc[kBatchTiles][4] = {};
        for (int32_t s = 0; s < gu_items; ++s) {
          if (ring.consumer_wait(st, kWaitGateUpTile))
            pl::panel_mma<TW, TA, kBatchTiles>(ring.stage(st), p.gu_tiles, nt, pl::chunk_width(n_cols, p.gu_cols, s),
                                               x_s, p.layout.x_stride, s * p.gu_cols, n_cols, batch, warp, lane, acc);
          ring.consumer_release(st);
        }
        store_group(acc, p.gu_tiles, nt, group_index,
                    p.layout.part.in(smem) + (half * f_rows + grp * p.gu_tiles * pl::kTileRows) * batch);
      }
    }
    if (tid == 0) trace(kTraceGateUpDone);
  }

  // 3. Consumers, owner of row pairs of F_c: the N ranks' partials (all loads in flight, summed in rank order),
  // silu(gate) * up rounded to TA, pushed into every rank's act_s.
  CF_DEVICE void activate_owned_rows(const Collectives& rs) {
    const pl::Range pairs = pl::split_range(f_rows / 2, n_ranks, rank);
    float* const part = p.layout.part.in(smem);
    uint8_t* const act_s = p.layout.act.in(smem);
    for (int32_t i = int32_t(tid); i < pairs.size() * batch; i += pl::kConsumerThreads) {
      const int32_t f = 2 * (pairs.begin + i / batch), b = i % batch;
      float gate[kMaxClusterSize][2], up[kMaxClusterSize][2];
      CF_UNROLL
      for (int r = 0; r < kMaxClusterSize; ++r) {
        if (r < n_ranks) {
          const float* peer = rs.peer(part, uint32_t(r));
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
          for (int k = 0; k < 2; ++k) g_sum[k] += gate[r][k], u_sum[k] += up[r][k];
        }
      }
      float a[2];
      CF_UNROLL
      for (int k = 0; k < 2; ++k) a[k] = g_sum[k] / (1.0f + std::exp(-g_sum[k])) * u_sum[k];
      const uint32_t word = prim::pack2<TA>(a[0], a[1]);
      // 4-byte aligned: f is even, act_stride a multiple of 64
      auto* const dst = reinterpret_cast<uint32_t*>(act_s + uint32_t(b) * p.layout.act_stride + uint32_t(f) * 2);
      for (int32_t r = 0; r < n_ranks; ++r) *rs.peer(dst, uint32_t(r)) = word;
    }
  }

  // 3. Consumers: the activation exchange; afterwards the cluster's whole F-slice is in act_s and no peer reads
  // part any more.
  CF_DEVICE void activate(Collectives& rs) {
    dev::fence_cluster();
    rs.exchange([&] { activate_owned_rows(rs); });  // every peer's partials are complete
    dev::fence_cluster();
    rs.wait_peers_done();  // every peer's pushes landed
    if (tid == 0) trace(kTraceActDone);
  }

  // 4. Consumers: sums output block `blk` of this rank over all clusters and writes out / residual_out. Every thread
  // loads a float4 of kClustersPerChunk clusters (all in flight, and the hidden / residual element it writes later
  // with them); the chunk sums are added in chunk order.
  CF_DEVICE void finish_block(int32_t blk) {
    const TA* const hidden_in = static_cast<const TA*>(p.hidden_in);
    const TA* const residual = static_cast<const TA*>(p.residual);
    const int32_t r0 = col0 + blk * block_rows;
    const int32_t nr = n_cols - blk * block_rows < block_rows ? n_cols - blk * block_rows : block_rows;
    const int32_t n_vec = nr * batch / 4;  // nr is a multiple of 16
    const int32_t chunks = pl::ceil_div(n_clusters, kClustersPerChunk);
    const float* base = p.partial + uint32_t(r0) * uint32_t(batch);
    float* const fin = p.layout.fin.in(smem);
    // the first element this thread writes (the one element of most threads: blocks hold <= 512 elements)
    float h0 = 0.0f, r0v = 0.0f;
    if (int32_t(tid) < nr * batch) {
      const int64_t at = int64_t(int32_t(tid) % batch) * p.hidden + r0 + int32_t(tid) / batch;
      h0 = dev::to_float(hidden_in[at]);
      r0v = residual ? dev::to_float(residual[at]) : 0.0f;
    }
    for (int32_t task = int32_t(tid); task < n_vec * chunks; task += pl::kConsumerThreads) {
      const int32_t v = task % n_vec, c = task / n_vec;
      float sum[4];
      pl::sum_slices_chunk<pl::PartialLoads::Fresh>(base + uint32_t(v) * 4, uint32_t(p.hidden) * uint32_t(batch),
                                                     c * kClustersPerChunk, n_clusters, sum);
      dev::store16(fin + uint32_t(c * n_vec + v) * 4,
                   {prim::as_bits(sum[0]), prim::as_bits(sum[1]), prim::as_bits(sum[2]), prim::as_bits(sum[3])});
    }
    pl::consumers_sync();
    for (int32_t i = int32_t(tid); i < nr * batch; i += pl::kConsumerThreads) {
      float total = 0.0f;
      for (int32_t c = 0; c < chunks; ++c) total += fin[uint32_t(c * nr * batch + i)];
      const int64_t at = int64_t(i % batch) * p.hidden + r0 + i / batch;
      const float h = i == int32_t(tid) ? h0 : dev::to_float(hidden_in[at]);
      const float r = i == int32_t(tid) ? r0v : residual ? dev::to_float(residual[at]) : 0.0f;
      static_cast<TA*>(p.residual_out)[at] = dev::from_float<TA>(h + r);
      static_cast<TA*>(p.out)[at] = dev::from_float<TA>(total);
    }
    pl::consumers_sync();  // fin is rewritten by the next finish
  }

  // 4. Consumers: sums the blocks this CTA completed among those the arrival warp has decided: at a block boundary
  // only the decisions already there (wait_all false), at the end all of them. Thread 0 looks, everyone reads its
  // answer after the barrier (a barrier separates consecutive calls, so the answer is not overwritten early).
  CF_DEVICE void finish_decided(int32_t& decided_upto, int32_t stored_end, bool wait_all) {
    if (tid == 0) {
      prim::WaitLimit decided_limit = limit_at(kWaitDecided);
      decided_limit.consequence = true;
      int32_t end = decided_upto;
      for (; end < stored_end; ++end) {
        if (wait_all) (void)prim::bounded_wait(decided_bar[end], 0, decided_limit);
        else if (!decided_bar[end].try_wait(0)) break;
      }
      small->decided_end = end;
    }
    pl::consumers_sync();
    const int32_t end = small->decided_end;
    for (int32_t i = decided_upto; i < end; ++i)
      if (small->block_last[i]) finish_block(block_at(i));
    decided_upto = end;
  }

  // 4. Consumers: the down projection block by block (partials to the workspace), the blocks this CTA completes
  // summed as their decisions come in.
  CF_DEVICE void down(pl::PipelineState& st, int32_t& group_index) {
    const uint8_t* act_s = p.layout.act.in(smem);
    float* const ws_cluster = p.partial + uint32_t(cluster) * uint32_t(p.hidden) * uint32_t(batch);
    int32_t decided_upto = 0;
    for (int32_t i = 0; i < n_blocks; ++i) {
      for (int32_t grp = block_at(i) * p.block_groups; grp < block_groups_end(block_at(i)); ++grp) {
        const int32_t nt = down_group_tiles(grp);
        float acc[kBatchTiles][4] = {};
        for (int32_t s = 0; s < down_items; ++s) {
          if (ring.consumer_wait(st, kWaitDownTile))
            pl::panel_mma<TW, TA, kBatchTiles>(ring.stage(st), p.down_tiles, nt,
                                               pl::chunk_width(f_rows, p.down_cols, s), act_s, p.layout.act_stride,
                                               s * p.down_cols, f_rows, batch, warp, lane, acc);
          ring.consumer_release(st);
        }
        store_group(acc, p.down_tiles, nt, group_index,
                    ws_cluster + uint32_t(col0 + grp * p.down_tiles * pl::kTileRows) * uint32_t(batch));
      }
      pl::consumers_sync();  // every partial store of the block happens before the arrival (through stored_bar)
      if (tid == 0) stored_bar[i].arrive();
      finish_decided(decided_upto, i, false);  // earlier positions: this one's atomic has only just been asked for
    }
    if (tid == 0) trace(kTraceDownDone);
    pl::consumers_sync();  // everyone has read the last answer before thread 0 writes the next
    finish_decided(decided_upto, n_blocks, true);
    if (tid == 0) trace(kTraceEnd);
  }

  // Every thread: the ring's end (its copies drained after an abort), then no CTA exits while a peer may still read
  // its shared memory.
  CF_DEVICE void finish(int32_t issued_end) {
    end_ring(issued_end, kStatusDrainTimeout, kWaitDrain);
    dev::cluster_sync();
  }
};

template <typename TW, typename TA, int kBatchTiles>
CF_GLOBAL void CF_LAUNCH_BOUNDS(kThreads, 1) ffn_kernel(const CF_GRID_CONSTANT KernelParams p) {
  FfnCta<TW, TA, kBatchTiles> cta(p);
  cta.setup();
  int32_t issued_end = 0;  // producer: ring items [0, issued_end) were issued (none after an abort)
  if (cta.is_producer()) {
    issued_end = cta.produce();
  } else if (cta.warp == uint32_t(kArrivalWarp)) {
    cta.publish_blocks();
  } else {
    pl::PipelineState st;   // the consumers' position in the ring
    int32_t group_index = 0;  // groups stored so far (their scratch buffers alternate)
    auto rs = cta.collectives();
    cta.norm(rs);
    cta.gate_up(st, group_index);
    cta.activate(rs);
    cta.down(st, group_index);
  }
  cta.finish(issued_end);
}

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::ffn
