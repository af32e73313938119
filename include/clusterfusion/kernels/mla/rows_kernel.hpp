// The MLA block's row kernel (docs/mla.md §1.5, launches 1 and 3): a phase list on the pipeline layer, written only
// against the device API (nvcc sm_90a and the CPU emulator).
//
// Grid: CTAs of 8 consumer warps + 1 producer warp, no cluster. The output rows of [W0; W1] (16-row tiles) are split
// into contiguous runs, one per CTA, each over the whole of K; the producer streams the CTA's tiles x K through the
// ring (PanelStage) from the first cycle while the consumers
//   1. input:  build x_s, the batch's input rows (residual add + RMSNorm, RMSNorm of the fp32 q_a, or a copy)
//   2. rows:   per group of tiles the rows on the tensor cores (k-groups added in order) -> fp32 workspace or `out`
//   3. tails:  for each row group it touched (a head's q rows, the kv_a rows) the CTA arrives on the group's counter;
//              the last arriver finishes the group from the workspace: RoPE of q_pe and q_lat = W_UK^T q_nope (tensor
//              cores), or
//              the kv_a RMSNorm, RoPE of k_pe, the page-table checks and the latent row's append.
#pragma once
#include <cmath>
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/kernels/mla/cta_common.hpp"
#include "clusterfusion/kernels/mla/kernel_params.hpp"
#include "clusterfusion/kernels/mla/traits.hpp"
#include "clusterfusion/pipeline/cross_cta_sum.hpp"
#include "clusterfusion/pipeline/cta.hpp"
#include "clusterfusion/pipeline/norm_prologue.hpp"
#include "clusterfusion/pipeline/ring.hpp"
#include "clusterfusion/pipeline/weight_stream.hpp"
#include "clusterfusion/primitives/element.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla {


// A group of consecutive tiles of one matrix streamed together (at most tiles_per_stage).
struct RowGroup {
  int32_t matrix, tile0, n_tiles;  // tile0: within the matrix
};

template <typename TW, typename TA, int kBatchTiles>
struct RowsCta : MlaCta<RowsParams, RowsSmall> {
  static constexpr int kTokens = kBatchTiles * pl::kMmaN;
  const int32_t cta = int32_t(dev::block_idx().x), n_ctas = int32_t(dev::grid_dim().x);
  uint8_t* const x_s = p.layout.x.in(smem);
  float* const scratch = p.layout.scratch.in(smem);
  const pl::Range tiles = pl::split_range(p.total_tiles, n_ctas, cta);
  const int32_t items = pl::ceil_div(p.cols, p.chunk_cols);  // ring items per group

  CF_DEVICE explicit RowsCta(const RowsParams& params) : MlaCta(params) {}

  // This CTA's tiles of matrix m (tiles within the matrix).
  CF_DEVICE pl::Range segment(int32_t m) const {
    const int32_t t0 = p.tiles[0];
    if (m == 0) return {tiles.begin < t0 ? tiles.begin : t0, tiles.end < t0 ? tiles.end : t0};
    return {(tiles.begin > t0 ? tiles.begin : t0) - t0, (tiles.end > t0 ? tiles.end : t0) - t0};
  }
  CF_DEVICE int32_t groups_of(int32_t m) const { return pl::ceil_div(segment(m).size(), p.tiles_per_stage); }
  CF_DEVICE RowGroup group(int32_t i) const {
    const int32_t g0 = groups_of(0), m = i < g0 ? 0 : 1;
    const pl::Range seg = segment(m);
    const int32_t t = seg.begin + (i - (m == 0 ? 0 : g0)) * p.tiles_per_stage;
    return {m, t, seg.end - t < p.tiles_per_stage ? seg.end - t : p.tiles_per_stage};
  }
  CF_DEVICE int32_t n_groups() const { return groups_of(0) + groups_of(1); }

  // Producer warp: the CTA's groups x the whole of K. Returns the items issued.
  CF_DEVICE int32_t produce() {
    pl::PipelineState st;
    int32_t issued_end = 0;
    for (int32_t i = 0; i < n_groups(); ++i) {
      const RowGroup g = group(i);
      for (int32_t s = 0; s < items; ++s)
        pl::load_panel(ring, st, issued_end, kWaitRingStage, p.w[g.matrix], pl::chunk_width(p.cols, p.chunk_cols, s),
                       g.tile0 * pl::kTileRows, g.n_tiles, s * p.chunk_cols);
    }
    return issued_end;
  }

  // 1. Consumers: x_s, the input rows of the batch.
  CF_DEVICE void input() {
    if (p.input == RowsInput::HiddenNorm) {
      const pl::NormPrologue<TA> np{static_cast<const TA*>(p.hidden_in), static_cast<const TA*>(p.residual),
                                    static_cast<const TA*>(p.norm), p.cols, p.batch, 0, p.cols, small->norm_red};
      np.run(tid, p.eps, small->inv_rms, x_s, p.layout.x_stride);
      return;
    }
    // warp per token: the sum of squares (LatentNorm), then the row, rounded to TA
    for (int32_t b = int32_t(warp); b < p.batch; b += pl::kConsumerWarps) {
      uint8_t* row = x_s + uint32_t(b) * p.layout.x_stride;
      if (p.input == RowsInput::Copy) {
        const TA* src = static_cast<const TA*>(p.src_ta) + int64_t(b) * p.cols;
        for (int32_t c = int32_t(lane); c < p.cols; c += 32) reinterpret_cast<TA*>(row)[c] = src[c];
        continue;
      }
      const float* src = p.src_f32 + int64_t(b) * p.src_stride;
      float sq = 0.0f;
      for (int32_t c = int32_t(lane); c < p.cols; c += 32) sq += src[c] * src[c];
      const float inv = 1.0f / std::sqrt(detail::warp_sum(sq) / float(p.cols) + p.eps);
      const TW* w = static_cast<const TW*>(p.norm);
      for (int32_t c = int32_t(lane); c < p.cols; c += 32)
        reinterpret_cast<TA*>(row)[c] = dev::from_float<TA>(src[c] * inv * dev::to_float(w[c]));
    }
    pl::consumers_sync();
  }

  // Row `row` of matrix m for token b: into the workspace or `out`.
  CF_DEVICE void store_row(int32_t m, int32_t row, int32_t b, float v) const {
    if (p.output == RowsOutput::Out)
      static_cast<TA*>(p.out)[int64_t(b) * p.rows[0] + row] = dev::from_float<TA>(v);
    else
      p.proj[int64_t(b) * p.proj_stride + (m == 0 ? 0 : p.rows[0]) + row] = v;
  }

  // 2. Consumers: one group's rows (k-groups in order) through the scratch to their destination.
  CF_DEVICE void group_rows(pl::PipelineState& st, const RowGroup& g) {
    float acc[kBatchTiles][4] = {};
    for (int32_t s = 0; s < items; ++s) {
      if (ring.consumer_wait(st, kWaitWeightTile))
        pl::panel_mma<TW, TA, kBatchTiles>(ring.stage(st), p.tiles_per_stage, g.n_tiles,
                                           pl::chunk_width(p.cols, p.chunk_cols, s), x_s, p.layout.x_stride,
                                           s * p.chunk_cols, p.cols, p.batch, warp, lane, acc);
      ring.consumer_release(st);
    }
    pl::store_group_partials<kBatchTiles>(scratch, p.tiles_per_stage, g.n_tiles, p.batch, warp, lane, acc);
    pl::consumers_sync();
    const int32_t row0 = g.tile0 * pl::kTileRows, n_rows = g.n_tiles * pl::kTileRows;
    for (int32_t e = int32_t(tid); e < n_rows * p.batch; e += pl::kConsumerThreads) {
      const int32_t row = row0 + e / p.batch;
      if (row < p.rows[g.matrix])
        store_row(g.matrix, row, e % p.batch, pl::group_value(scratch, p.tiles_per_stage, p.batch, e));
    }
    pl::consumers_sync();
  }

  CF_DEVICE void rows() {
    pl::PipelineState st;
    for (int32_t i = 0; i < n_groups(); ++i) group_rows(st, group(i));
  }

  // The CTA that owns global tile t (every CTA owns at least one tile).
  CF_DEVICE int32_t owner(int32_t t) const {
    return int32_t((int64_t(t + 1) * n_ctas + p.total_tiles - 1) / p.total_tiles) - 1;
  }
  // Consumers: this CTA's arrival on a group of global tiles [t0, t1); true (for all) when it arrived last.
  CF_DEVICE bool arrive_on(uint32_t* counter, int32_t t0, int32_t t1) {
    if (tid == 0) small->last_flag = pl::arrive_last(counter, uint32_t(owner(t1 - 1) - owner(t0) + 1)) ? 1u : 0u;
    pl::consumers_sync();
    const bool last = small->last_flag != 0;
    pl::consumers_sync();  // everyone read the flag before the next arrival rewrites it
    return last;
  }

  // 3. Consumers: the tails of the groups this CTA touched and finished last.
  CF_DEVICE void tails() {
    const pl::Range q = segment(0);
    if (p.head_tails && q.size() > 0) {
      const int32_t h_first = q.begin * pl::kTileRows / p.q_head;
      const int32_t h_last = (q.end * pl::kTileRows - 1) / p.q_head;
      for (int32_t h = h_first; h <= h_last && h < p.n_heads; ++h) {
        const int32_t t0 = h * p.q_head / pl::kTileRows, t1 = pl::ceil_div((h + 1) * p.q_head, pl::kTileRows);
        if (arrive_on(p.counters + h, t0, t1)) absorb_head(h);
      }
    }
    if (p.kv_tail && segment(1).size() > 0 && arrive_on(p.counters + p.n_heads, p.tiles[0], p.total_tiles))
      append_latent();
  }

  // Head tail: q_pe roped and q_lat[h] = W_UK[h]^T q_nope[h] for every token, written to the q_lat workspace.
  CF_DEVICE void absorb_head(int32_t h) {
    uint8_t* qn = p.layout.q_nope.in(smem);  // [batch][q_nope_stride]: q_nope as T, the MMAs' B operand
    TA* q_lat = static_cast<TA*>(p.q_lat);
    const int32_t half = p.rope / 2;
    for (int32_t e = int32_t(tid); e < p.batch * p.nope; e += pl::kConsumerThreads) {
      const int32_t b = e / p.nope, n = e % p.nope;
      reinterpret_cast<TA*>(qn + uint32_t(b) * p.layout.q_nope_stride)[n] =
          dev::from_float<TA>(detail::fresh(p.proj + int64_t(b) * p.proj_stride + h * p.q_head + n));
    }
    for (int32_t e = int32_t(tid); e < p.batch * half; e += pl::kConsumerThreads) {
      const int32_t b = e / half, i = e % half, pos = p.positions[b];
      const float* q_pe = p.proj + int64_t(b) * p.proj_stride + h * p.q_head + p.nope;
      const float x0 = detail::fresh(q_pe + 2 * i), x1 = detail::fresh(q_pe + 2 * i + 1);
      const bool ok = pos >= 0 && pos < p.max_positions;
      const dev::Float2 cs = ok ? detail::rope_cos_sin(p.cos_sin, p.rope, pos, i) : dev::Float2{NAN, NAN};
      TA* dst = q_lat + (int64_t(b) * p.n_heads + h) * p.row_elems + p.r + 2 * i;
      dst[0] = dev::from_float<TA>(x0 * cs.x - x1 * cs.y);
      dst[1] = dev::from_float<TA>(x0 * cs.y + x1 * cs.x);
    }
    pl::consumers_sync();
    for (int32_t c0 = int32_t(warp) * pl::kMmaM; c0 < p.r; c0 += pl::kConsumerWarps * pl::kMmaM)
      absorb_columns(h, c0);
    pl::consumers_sync();  // qn is free for the next head
  }

  // Warp: q_lat[h][c0 .. c0 + 15] of every token on the tensor cores. W_UK[h] is [nope, r]: its contraction runs
  // along the rows, so each k32 slice of 16 columns is transposed through the warp's 16 x 32 tile (lane i: row
  // n0 + i) into the A operand (rows = latent columns); the tokens' q_nope are the B columns.
  CF_DEVICE void absorb_columns(int32_t h, int32_t c0) {
    uint8_t* tile = p.layout.transpose.in(smem) + warp * kTransposeTileBytes;
    const uint8_t* qn = p.layout.q_nope.in(smem);
    const TW* w = static_cast<const TW*>(p.w_uk) + int64_t(h) * p.nope * p.r + c0;
    const uint32_t g = lane / 4, t = lane % 4;
    float acc[kBatchTiles][4] = {};
    for (int32_t n0 = 0; n0 < p.nope; n0 += pl::kUnitCols) {
      const int32_t n = n0 + int32_t(lane);
      dev::U32x4 row[2] = {};
      if (n < p.nope) {
        row[0] = dev::load16_global_nc(w + int64_t(n) * p.r);
        row[1] = dev::load16_global_nc(w + int64_t(n) * p.r + 8);
      }
      const uint32_t bits[8] = {row[0].x, row[0].y, row[0].z, row[0].w, row[1].x, row[1].y, row[1].z, row[1].w};
      dev::syncwarp();  // the previous slice's A loads are done
      CF_UNROLL
      for (int c = 0; c < 16; ++c) {
        const uint16_t v = uint16_t(bits[c / 2] >> (16 * (c % 2)));
        __builtin_memcpy(tile + uint32_t(c) * kTransposePitch + lane * 2, &v, 2);
      }
      dev::syncwarp();
      const int32_t k = n0 + int32_t(t) * 8;  // this lane's 8 rows of the slice
      pl::mma_k32_tokens<TW, TA, kBatchTiles>(tile + g * kTransposePitch + t * 16, kTransposePitch,
                                              qn + uint32_t(k) * 2, p.layout.q_nope_stride, p.batch, k < p.nope,
                                              lane, acc);
    }
    TA* q_lat = static_cast<TA*>(p.q_lat);
    CF_UNROLL
    for (int nt = 0; nt < kBatchTiles; ++nt)
      pl::for_each_accumulator(acc[nt], lane, [&](int32_t c, int32_t col, float v) {
        const int32_t b = nt * pl::kMmaN + col;
        if (b < p.batch) q_lat[(int64_t(b) * p.n_heads + h) * p.row_elems + c0 + c] = dev::from_float<TA>(v);
      });
  }

  // Lane-uniform: token b's page table and position are usable; reports the problems it finds.
  CF_DEVICE bool token_ok(int32_t b) const {
    const int32_t start = p.kv_indptr[b], end = p.kv_indptr[b + 1];
    const int32_t last = p.kv_last_page_len ? p.kv_last_page_len[b] : p.page_size;
    const int32_t pos = p.positions[b];
    bool ok = true;
    if (start < 0 || end < start || end > p.n_indices || last < 1 || last > p.page_size) {
      ok = false;
      if (lane == 0) detail::set_status(p.status, kStatusBadPageTable);
    } else if (end == start) {
      ok = false;
      if (lane == 0) detail::set_status(p.status, kStatusBadKvLen);
    }
    if (pos < 0 || pos >= p.max_positions) {
      ok = false;
      if (lane == 0) detail::set_status(p.status, kStatusBadPosition);
    }
    if (!ok) return false;
    bool ids_ok = true;
    for (int32_t i = start + int32_t(lane); i < end; i += 32)
      ids_ok = ids_ok && p.kv_indices[i] >= 0 && p.kv_indices[i] < p.n_pages;
    if (!dev::all_sync(dev::kFullMask, ids_ok)) {
      if (lane == 0) detail::set_status(p.status, kStatusBadPageId);
      return false;
    }
    return true;
  }

  // kv tail, warp per token: c_kv = RMSNorm(kv[:r]) * kv_a_norm, k_pe roped, appended at the sequence's last slot.
  CF_DEVICE void append_latent() {
    using TKV = TA;
    const TW* norm_w = static_cast<const TW*>(p.kv_a_norm);
    for (int32_t b = int32_t(warp); b < p.batch; b += pl::kConsumerWarps) {
      const bool ok = token_ok(b);
      if (lane == 0) p.token_bad[b] = ok ? 0u : 1u;
      if (!ok) continue;
      const float* kv = p.proj + int64_t(b) * p.proj_stride + p.rows[0];
      float sq = 0.0f;
      for (int32_t c = int32_t(lane); c < p.r; c += 32) sq += detail::fresh(kv + c) * detail::fresh(kv + c);
      const float inv = 1.0f / std::sqrt(detail::warp_sum(sq) / float(p.r) + p.eps);
      const int32_t end = p.kv_indptr[b + 1], page = p.kv_indices[end - 1];
      const int32_t slot = (p.kv_last_page_len ? p.kv_last_page_len[b] : p.page_size) - 1;
      TKV* dst = static_cast<TKV*>(p.pages) + (int64_t(page) * p.page_size + slot) * p.row_elems;
      for (int32_t c = int32_t(lane); c < p.r; c += 32)
        dst[c] = dev::from_float<TKV>(detail::fresh(kv + c) * inv * dev::to_float(norm_w[c]));
      for (int32_t i = int32_t(lane); i < p.rope / 2; i += 32) {
        const float x0 = detail::fresh(kv + p.r + 2 * i), x1 = detail::fresh(kv + p.r + 2 * i + 1);
        const dev::Float2 cs = detail::rope_cos_sin(p.cos_sin, p.rope, p.positions[b], i);
        dst[p.r + 2 * i] = dev::from_float<TKV>(x0 * cs.x - x1 * cs.y);
        dst[p.r + 2 * i + 1] = dev::from_float<TKV>(x0 * cs.y + x1 * cs.x);
      }
    }
  }
};

template <typename TW, typename TA, int kBatchTiles>
CF_GLOBAL void CF_LAUNCH_BOUNDS(pl::kThreads, 1) rows_kernel(const CF_GRID_CONSTANT RowsParams p) {
  RowsCta<TW, TA, kBatchTiles> cta(p);
  cta.setup();
  int32_t issued_end = 0;  // producer: ring items [0, issued_end) were issued (none after an abort)
  if (cta.is_producer()) {
    issued_end = cta.produce();
  } else {
    cta.input();
    cta.rows();
    cta.tails();
  }
  cta.finish(issued_end);
}

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla
