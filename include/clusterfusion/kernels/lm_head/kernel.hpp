// Device code of the final norm + LM head + greedy argmax (docs/ffn.md §5), a phase list on the pipeline layer
// (docs/pipeline.md). Written only against the device API (nvcc sm_90a and the CPU emulator).
//
// Grid: one CTA per SM (no cluster: the vocabulary rows are independent), 8 consumer warps + 1 producer warp. CTA i
// owns a contiguous slice of the vocabulary in 16-row tiles. The producer streams its rows x all of hidden into the
// ring (PanelStage) from the first cycle; the consumers
//   1. norm:    residual add + sum of squares over the whole of hidden per token, x_s = x (every CTA the same bits)
//   2. logits:  per group of M tiles, the logits (tensor cores, k-groups added in order) -> `logits` (fp32) and,
//               through the group's scratch, the CTA's running argmax per token (lowest id on ties, NaN skipped)
//   3. pick:    its candidates -> the workspace; the CTA that arrives last (u32 counter, reset by it) reduces the
//               candidates of all CTAs per token and writes `tokens`.
#pragma once
#include <cmath>
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/kernels/lm_head/kernel_params.hpp"
#include "clusterfusion/kernels/lm_head/traits.hpp"
#include "clusterfusion/pipeline/cross_cta_sum.hpp"
#include "clusterfusion/pipeline/cta.hpp"
#include "clusterfusion/pipeline/norm_prologue.hpp"
#include "clusterfusion/pipeline/ring.hpp"
#include "clusterfusion/pipeline/trace.hpp"
#include "clusterfusion/pipeline/weight_stream.hpp"
#include "clusterfusion/primitives/warp_argmax.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::lm_head {
namespace dev = cf::dev;

// One CTA of the kernel: its ids, ring and shared memory (pl::StreamCta), its buffers and work split.
template <typename TW, typename TA, int kBatchTiles>
struct LmHeadCta : pl::StreamCta<KernelParams, Barriers, SmallBuffers> {
  const int32_t cta = int32_t(dev::block_idx().x), n_ctas = int32_t(dev::grid_dim().x);
  uint8_t* const x_s = p.layout.x.in(smem);
  float* const scratch = p.layout.scratch.in(smem);
  const pl::Range tiles = pl::split_range(p.vocab_tiles, n_ctas, cta);
  const int32_t groups = pl::ceil_div(tiles.size(), p.tiles);
  const int32_t items = pl::ceil_div(p.hidden, p.chunk_cols);  // ring items per group

  CF_DEVICE void trace(TracePoint point) const { pl::trace_point(p.trace, kTraceSlots, point); }
  CF_DEVICE explicit LmHeadCta(const KernelParams& params) : StreamCta(params, kStatusTimeout) {}
  CF_DEVICE int32_t group_tiles(int32_t grp) const {
    const int32_t t0 = grp * p.tiles;
    return tiles.size() - t0 < p.tiles ? tiles.size() - t0 : p.tiles;
  }

  CF_DEVICE void setup() {
    if (tid == 0) {
      ring.init();
      small->abort = 0;
    }
    dev::block_sync();
    if (tid == 0) trace(kTraceStart);
  }

  // Producer warp: this CTA's vocabulary rows x the whole of hidden, group after group. Returns the items issued.
  CF_DEVICE int32_t produce() {
    pl::PipelineState st;
    int32_t issued_end = 0;
    for (int32_t grp = 0; grp < groups; ++grp)
      for (int32_t s = 0; s < items; ++s)
        pl::load_panel(ring, st, issued_end, kWaitRingStage, p.w, pl::chunk_width(p.hidden, p.chunk_cols, s),
                       (tiles.begin + grp * p.tiles) * pl::kTileRows, group_tiles(grp), s * p.chunk_cols);
    if (lane == 0) trace(kTraceProducerDone);
    return issued_end;
  }

  // 1. Consumers: x_s over the whole of hidden; the running best of every token reset.
  CF_DEVICE void norm() {
    if (int32_t(tid) < p.batch) {
      small->best_value[tid] = -INFINITY;
      small->best_index[tid] = -1;
    }
    const pl::NormPrologue<TA> np{static_cast<const TA*>(p.hidden_in), static_cast<const TA*>(p.residual),
                                  static_cast<const TA*>(p.norm), p.hidden, p.batch, 0, p.hidden, small->norm_red};
    np.run(tid, p.eps, small->inv_rms, x_s, p.layout.x_stride);
    if (tid == 0) trace(kTraceNormDone);
  }

  // 2. Consumers: the logits of one group of tiles into the scratch (k-groups in order), then `logits`.
  CF_DEVICE void group_logits(pl::PipelineState& st, int32_t grp) {
    const int32_t nt = group_tiles(grp);
    float acc[kBatchTiles][4] = {};
    for (int32_t s = 0; s < items; ++s) {
      if (ring.consumer_wait(st, kWaitTile))
        pl::panel_mma<TW, TA, kBatchTiles>(ring.stage(st), p.tiles, nt, pl::chunk_width(p.hidden, p.chunk_cols, s),
                                           x_s, p.layout.x_stride, s * p.chunk_cols, p.hidden, p.batch, warp, lane, acc);
      ring.consumer_release(st);
    }
    pl::store_group_partials<kBatchTiles>(scratch, p.tiles, nt, p.batch, warp, lane, acc);
    pl::consumers_sync();
    const int32_t row0 = (tiles.begin + grp * p.tiles) * pl::kTileRows, n_rows = nt * pl::kTileRows;
    for (int32_t e = int32_t(tid); e < n_rows * p.batch; e += pl::kConsumerThreads) {
      const int32_t r = e / p.batch, b = e % p.batch, row = row0 + r;
      const float v = pl::group_value(scratch, p.tiles, p.batch, e);
      if (row < p.vocab && p.logits) p.logits[int64_t(b) * p.vocab + row] = v;
      // in place: no other thread reads element e's partials; rows past the vocabulary never win
      scratch[e] = row < p.vocab ? v : NAN;
    }
    pl::consumers_sync();
  }

  // 2. Consumers: warp w keeps the running best of tokens w, w + 8 (rows visited in increasing order).
  CF_DEVICE void group_argmax(int32_t grp) {
    const int32_t row0 = (tiles.begin + grp * p.tiles) * pl::kTileRows, n_rows = group_tiles(grp) * pl::kTileRows;
    for (int32_t b = int32_t(warp); b < p.batch; b += pl::kConsumerWarps) {
      float value = -INFINITY;
      int32_t index = -1;
      for (int32_t r = int32_t(lane); r < n_rows; r += 32) {
        const float v = scratch[r * p.batch + b];
        if (!std::isnan(v) && prim::beats(v, row0 + r, value, index)) value = v, index = row0 + r;
      }
      prim::warp_best(value, index);
      if (lane == 0 && prim::beats(value, index, small->best_value[b], small->best_index[b])) {
        small->best_value[b] = value;
        small->best_index[b] = index;
      }
    }
    pl::consumers_sync();  // the scan is done before the next group's partials overwrite the scratch
  }

  CF_DEVICE void logits() {
    pl::PipelineState st;
    for (int32_t grp = 0; grp < groups; ++grp) {
      group_logits(st, grp);
      group_argmax(grp);
    }
    if (tid == 0) trace(kTraceLogitsDone);
  }

  // 3. Consumers: the candidates to the workspace; the last arriver picks every token's best over all CTAs.
  CF_DEVICE void pick_tokens() {
    if (int32_t(tid) < p.batch) {
      p.cand_value[cta * p.batch + int32_t(tid)] = small->best_value[tid];
      p.cand_index[cta * p.batch + int32_t(tid)] = small->best_index[tid];
    }
    pl::consumers_sync();
    if (tid == 0) small->last_flag = pl::arrive_last(p.counter, uint32_t(n_ctas)) ? 1u : 0u;
    pl::consumers_sync();
    if (small->last_flag && p.tokens) {
      for (int32_t b = int32_t(warp); b < p.batch; b += pl::kConsumerWarps) {
        float value = -INFINITY;
        int32_t index = -1;
        // every lane's candidates loaded first (all in flight: this is the kernel's tail), then compared
        for (int32_t c0 = 0; c0 < n_ctas; c0 += 32 * kCandidatesInFlight) {
          float v[kCandidatesInFlight];
          int32_t i[kCandidatesInFlight];
          CF_UNROLL
          for (int k = 0; k < kCandidatesInFlight; ++k) {
            const int32_t c = c0 + k * 32 + int32_t(lane);
            v[k] = c < n_ctas ? *static_cast<const volatile float*>(p.cand_value + c * p.batch + b) : -INFINITY;
            i[k] = c < n_ctas ? *static_cast<const volatile int32_t*>(p.cand_index + c * p.batch + b) : -1;
          }
          CF_UNROLL
          for (int k = 0; k < kCandidatesInFlight; ++k)
            if (prim::beats(v[k], i[k], value, index)) value = v[k], index = i[k];
        }
        prim::warp_best(value, index);
        if (lane == 0) p.tokens[b] = index < 0 ? 0 : index;
      }
    }
    if (tid == 0) trace(kTraceEnd);
  }

  // Every thread: the ring's end (its copies drained after an abort).
  CF_DEVICE void finish(int32_t issued_end) { end_ring(issued_end, kStatusDrainTimeout, kWaitDrain); }
};

template <typename TW, typename TA, int kBatchTiles>
CF_GLOBAL void CF_LAUNCH_BOUNDS(pl::kThreads, 1) lm_head_kernel(const CF_GRID_CONSTANT KernelParams p) {
  LmHeadCta<TW, TA, kBatchTiles> cta(p);
  cta.setup();
  int32_t issued_end = 0;  // producer: ring items [0, issued_end) were issued (none after an abort)
  if (cta.is_producer()) {
    issued_end = cta.produce();
  } else {
    cta.norm();
    cta.logits();
    cta.pick_tokens();
  }
  cta.finish(issued_end);
}

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::lm_head
