// The MLA block's split-KV latent attention (docs/mla.md §1.5, launch 2): a phase list on the pipeline layer, written
// only against the device API (nvcc sm_90a and the CPU emulator).
//
// Grid: one CTA per (token, head tile of 16 heads, split), 8 consumer warps + 1 producer warp. The split's cache rows
// are one MQA head of row_elems = r + rope values whose first r values are also the value: the producer streams
// them page by page through the ring (bulk copies of up to item_rows rows of one page) while the consumers
//   1. query:   the tile's absorbed queries [q_lat, q_pe] (T) into shared memory
//   2. attend:  per item the scores [16 heads x rows] on the tensor cores (the heads as one m16 tile, k split over
//               the warps, partials added in warp order), the online-softmax update (a half warp per head), and
//               acc += P x C_kv on the tensor cores (acc: [16 x r] in registers, 8-column tiles over the warps)
//   3. merge:   the split's (max, sum, acc) to the workspace; the last arriver of (token, tile) merges the splits in
//               split order and divides -> o_lat (fp32; NaN for a bad token), which launch 3 (uv_kernel.hpp) reads.
//   4. residual: every CTA writes its slice of residual_out = hidden + residual (nothing else reads them now).
#pragma once
#include <cmath>
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/kernels/mla/kernel_params.hpp"
#include "clusterfusion/kernels/mla/cta_common.hpp"
#include "clusterfusion/kernels/mla/traits.hpp"
#include "clusterfusion/pipeline/cross_cta_sum.hpp"
#include "clusterfusion/pipeline/cta.hpp"
#include "clusterfusion/pipeline/mma.hpp"
#include "clusterfusion/pipeline/ring.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla {

template <typename T>
struct AttentionCta : MlaCta<AttentionParams, AttentionSmall> {
  const int32_t cta = int32_t(dev::block_idx().x), n_ctas = int32_t(dev::grid_dim().x);
  const int32_t b = cta / (p.head_tiles * p.splits), tile = cta / p.splits % p.head_tiles, split = cta % p.splits;
  const int32_t h0 = tile * kHeadTile;
  const int32_t n_heads = p.n_heads - h0 < kHeadTile ? p.n_heads - h0 : kHeadTile;  // heads of this tile
  const bool bad = p.token_bad[b] != 0;
  const int32_t page_base = bad ? 0 : p.kv_indptr[b];
  const pl::Range span = pl::split_range(bad ? 0 : kv_len(), p.splits, split);  // this split's cache rows
  uint8_t* const q = p.layout.q.in(smem);
  float* const partials = p.layout.partials.in(smem);
  uint8_t* const probs = p.layout.probs.in(smem);

  CF_DEVICE explicit AttentionCta(const AttentionParams& params) : MlaCta(params) {}

  CF_DEVICE int32_t kv_len() const {
    const int32_t pages = p.kv_indptr[b + 1] - p.kv_indptr[b];
    return (pages - 1) * p.page_size + (p.kv_last_page_len ? p.kv_last_page_len[b] : p.page_size);
  }
  // Rows of the item that starts at cache row t: up to item_rows, within one page and the split.
  CF_DEVICE int32_t item_rows_at(int32_t t) const {
    int32_t n = p.item_rows;
    const int32_t in_page = p.page_size - t % p.page_size;
    if (in_page < n) n = in_page;
    return span.end - t < n ? span.end - t : n;
  }

  // Producer warp: the split's rows, page by page. Returns the items issued.
  CF_DEVICE int32_t produce() {
    pl::PipelineState st;
    int32_t issued_end = 0;
    for (int32_t t = span.begin; t < span.end; t += item_rows_at(t)) {
      const uint32_t bytes = uint32_t(item_rows_at(t)) * p.row_bytes;
      const bool issue = ring.producer_acquire(st, bytes, kWaitRingStage);
      if (issue && lane == 0) {
        const int64_t page = p.kv_indices[page_base + t / p.page_size];
        const uint8_t* src = static_cast<const uint8_t*>(p.pages) +
                             (page * p.page_size + t % p.page_size) * int64_t(p.row_bytes);
        dev::bulk_copy_g2s(ring.stage(st), src, bytes, ring.full_barrier(st));
      }
      ring.producer_commit(st, issue, issued_end);
    }
    return issued_end;
  }

  // 1. Consumers: the tile's queries (rows past the tile's heads zero) and a fresh state per head.
  CF_DEVICE void query() {
    const uint8_t* src = static_cast<const uint8_t*>(p.q_lat) + (int64_t(b) * p.n_heads + h0) * p.row_bytes;
    const int32_t chunks = p.row_elems / 8;  // 16-byte loads
    for (int32_t e = int32_t(tid); e < kHeadTile * chunks; e += pl::kConsumerThreads) {
      const int32_t h = e / chunks, i = e % chunks;
      const dev::U32x4 v = h < n_heads && !bad ? dev::load16(src + h * p.row_bytes + i * 16) : dev::U32x4{0, 0, 0, 0};
      dev::store16(q + uint32_t(h) * p.layout.q_pitch + uint32_t(i) * 16, v);
    }
    if (tid < uint32_t(kHeadTile)) {
      small->m[tid] = -INFINITY;
      small->l[tid] = 0.0f;
      small->alpha[tid] = 1.0f;
    }
    pl::consumers_sync();
  }

  // 2a. Scores on the tensor cores: the 16 heads as the A tile, the item's rows as B columns; warp w takes the k32
  // steps w, w + 8, ... of the row and stores its partial sums (added in warp order by item_softmax).
  CF_DEVICE void item_scores(const uint8_t* rows, int32_t n) {
    constexpr int kRowTiles = kMaxItemRows / pl::kMmaN;
    float acc[kRowTiles][4] = {};
    const uint32_t g = lane / 4, t = lane % 4;
    for (int32_t k0 = int32_t(warp) * pl::kUnitCols; k0 < p.row_elems; k0 += pl::kConsumerWarps * pl::kUnitCols) {
      const int32_t k = k0 + int32_t(t) * 8;  // this lane's 8 columns
      pl::mma_k32_tokens<T, T, kRowTiles>(q + g * p.layout.q_pitch + uint32_t(k) * 2, p.layout.q_pitch,
                                          rows + uint32_t(k) * 2, p.row_bytes, n, k < p.row_elems, lane, acc);
    }
    float* mine = partials + warp * kHeadTile * kMaxItemRows;
    CF_UNROLL
    for (int nt = 0; nt < kRowTiles; ++nt)
      pl::for_each_accumulator(acc[nt], lane, [&](int32_t h, int32_t col, float v) {
        mine[h * kMaxItemRows + nt * pl::kMmaN + col] = v;
      });
    pl::consumers_sync();
  }

  // Head h's score of row j: the warps' partials added in warp order.
  CF_DEVICE float score(int32_t h, int32_t j) const {
    float dot = 0.0f;
    for (int w = 0; w < pl::kConsumerWarps; ++w) dot += partials[(w * kHeadTile + h) * kMaxItemRows + j];
    return dot * p.scale;
  }
  // 2b. 16 threads per head (a half warp), rows j and j + 16 each: the online-softmax update of the head (max and
  // sum by butterflies over the half warp: the same bits in every lane) and the item's probabilities as T.
  CF_DEVICE void item_softmax(int32_t n) {
    static_assert(kHeadTile * kMaxItemRows == 2 * pl::kConsumerThreads, "two rows per consumer thread");
    constexpr int kLanes = kMaxItemRows / 2;
    const int32_t h = int32_t(tid) / kLanes, j = int32_t(tid) % kLanes;
    const float m_old = small->m[h], l_old = small->l[h];
    const float s0 = j < n ? score(h, j) : -INFINITY, s1 = j + kLanes < n ? score(h, j + kLanes) : -INFINITY;
    float m_new = m_old > s0 ? m_old : s0;
    m_new = m_new > s1 ? m_new : s1;
    CF_UNROLL
    for (int m = kLanes / 2; m >= 1; m >>= 1) {
      const float other = dev::shfl_xor_sync(dev::kFullMask, m_new, m);
      m_new = other > m_new ? other : m_new;
    }
    const float e0 = j < n ? detail::exp_of(s0 - m_new) : 0.0f;
    const float e1 = j + kLanes < n ? detail::exp_of(s1 - m_new) : 0.0f;
    T* prob = reinterpret_cast<T*>(probs + uint32_t(h) * kProbPitch);
    prob[j] = dev::from_float<T>(e0);
    prob[j + kLanes] = dev::from_float<T>(e1);
    float sum = e0 + e1;
    CF_UNROLL
    for (int m = kLanes / 2; m >= 1; m >>= 1) sum += dev::shfl_xor_sync(dev::kFullMask, sum, m);
    dev::syncwarp();  // every lane read m_old / l_old before the head's first lane replaces them
    if (j == 0) {
      const float alpha = m_old == -INFINITY ? 0.0f : detail::exp_of(m_old - m_new);
      small->m[h] = m_new;
      small->l[h] = l_old * alpha + sum;
      small->alpha[h] = alpha;
    }
    pl::consumers_sync();
  }

  // 2c. acc = acc * alpha + P x C_kv on the tensor cores: A = the probabilities (16 heads x the item's rows, one k32
  // step), B = the rows' c_kv, column tile warp + 8 k per register tile k (gathered: the rows are the k dimension).
  CF_DEVICE void item_accumulate(const uint8_t* rows, int32_t n, float (&acc)[kMaxLatentTilesPerWarp][4]) {
    const uint32_t g = lane / 4, t = lane % 4;
    const pl::AFragK32 a = pl::load_a_k32<T, T>(probs + g * kProbPitch + t * 16, kProbPitch);
    const float alpha_lo = small->alpha[g], alpha_hi = small->alpha[g + 8];
    CF_UNROLL
    for (int k = 0; k < kMaxLatentTilesPerWarp; ++k) {
      const int32_t c = (int32_t(warp) + k * pl::kConsumerWarps) * pl::kMmaN + int32_t(g);  // this lane's column
      if (c - int32_t(g) >= p.r) break;
      uint32_t pair[4];
      CF_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int32_t j = int32_t(t) * 8 + 2 * e;
        const uint32_t lo = j < n ? load_u16(rows + uint32_t(j) * p.row_bytes + uint32_t(c) * 2) : 0u;
        const uint32_t hi = j + 1 < n ? load_u16(rows + uint32_t(j + 1) * p.row_bytes + uint32_t(c) * 2) : 0u;
        pair[e] = lo | hi << 16;
      }
      acc[k][0] *= alpha_lo, acc[k][1] *= alpha_lo, acc[k][2] *= alpha_hi, acc[k][3] *= alpha_hi;
      pl::mma_k32<T>(acc[k], a, pl::b_k32({pair[0], pair[1], pair[2], pair[3]}));
    }
  }
  CF_DEVICE static uint32_t load_u16(const uint8_t* at) {
    uint16_t v;
    __builtin_memcpy(&v, at, 2);
    return v;
  }

  // 2. Consumers: the split's items; the state's accumulator stays in registers.
  CF_DEVICE void attend(float (&acc)[kMaxLatentTilesPerWarp][4]) {
    pl::PipelineState st;
    for (int32_t t = span.begin; t < span.end; t += item_rows_at(t)) {
      const int32_t n = item_rows_at(t);
      if (ring.consumer_wait(st, kWaitCacheRows)) {
        item_scores(ring.stage(st), n);
        item_softmax(n);
        item_accumulate(ring.stage(st), n, acc);
      }
      ring.consumer_release(st);
    }
  }

  // 3. Consumers: the split's state out; the last arriver merges the splits and applies W_UV.
  CF_DEVICE void merge(const float (&acc)[kMaxLatentTilesPerWarp][4]) {
    const int64_t rec0 = (int64_t(b) * p.n_heads + h0) * p.splits + split;  // head h: rec0 + h * splits
    CF_UNROLL
    for (int k = 0; k < kMaxLatentTilesPerWarp; ++k) {
      const int32_t c0 = (int32_t(warp) + k * pl::kConsumerWarps) * pl::kMmaN;
      if (c0 >= p.r) break;
      pl::for_each_accumulator(acc[k], lane, [&](int32_t h, int32_t col, float v) {
        if (h < n_heads) p.part_acc[(rec0 + h * p.splits) * p.r + c0 + col] = v;
      });
    }
    if (int32_t(tid) < n_heads) {
      p.part_ml[(rec0 + tid * p.splits) * 2] = small->m[tid];
      p.part_ml[(rec0 + tid * p.splits) * 2 + 1] = small->l[tid];
    }
    pl::consumers_sync();
    if (tid == 0)
      small->last_flag = pl::arrive_last(p.counters + b * p.head_tiles + tile, uint32_t(p.splits)) ? 1u : 0u;
    pl::consumers_sync();
    if (small->last_flag != 0) merge_splits();
  }

  // The last arriver: o_lat = sum_s acc_s e^(m_s - m) / sum_s l_s e^(m_s - m), splits in order, to the workspace.
  CF_DEVICE void merge_splits() {
    const int64_t first = (int64_t(b) * p.n_heads + h0) * p.splits;
    for (int32_t e = int32_t(tid); e < n_heads * p.r; e += pl::kConsumerThreads) {
      const int32_t h = e / p.r, c = e % p.r;
      const int64_t rec = first + int64_t(h) * p.splits;
      float m = -INFINITY;
      for (int32_t s = 0; s < p.splits; ++s) {
        const float ms = detail::fresh(p.part_ml + (rec + s) * 2);
        m = ms > m ? ms : m;
      }
      float l = 0.0f, a = 0.0f;
      for (int32_t s = 0; s < p.splits; ++s) {
        const float ms = detail::fresh(p.part_ml + (rec + s) * 2);
        const float w = ms == -INFINITY ? 0.0f : detail::exp_of(ms - m);
        l += detail::fresh(p.part_ml + (rec + s) * 2 + 1) * w;
        a += detail::fresh(p.part_acc + (rec + s) * p.r + c) * w;
      }
      p.o_lat[(int64_t(b) * p.n_heads + h0 + h) * p.r + c] = bad ? NAN : a / l;
    }
  }

  // 4. Consumers: residual_out's slice of this CTA (8 values per thread and step).
  CF_DEVICE void residual() {
    const int32_t chunks = p.batch * p.hidden / 8;
    const pl::Range mine = pl::split_range(chunks, n_ctas, cta);
    const T* h_in = static_cast<const T*>(p.hidden_in);
    const T* r_in = static_cast<const T*>(p.residual);
    T* out = static_cast<T*>(p.residual_out);
    for (int32_t i = mine.begin + int32_t(tid); i < mine.end; i += pl::kConsumerThreads)
      for (int32_t k = 0; k < 8; ++k) {
        const int64_t at = int64_t(i) * 8 + k;
        out[at] = dev::from_float<T>(dev::to_float(h_in[at]) + (r_in ? dev::to_float(r_in[at]) : 0.0f));
      }
  }
};

template <typename T>
CF_GLOBAL void CF_LAUNCH_BOUNDS(pl::kThreads, 1) attention_kernel(const CF_GRID_CONSTANT AttentionParams p) {
  AttentionCta<T> cta(p);
  cta.setup();
  int32_t issued_end = 0;
  if (cta.is_producer()) {
    issued_end = cta.produce();
  } else {
    float acc[kMaxLatentTilesPerWarp][4] = {};  // o_lat's unnormalised sum: heads x this warp's latent columns
    cta.query();
    cta.attend(acc);
    cta.merge(acc);
    cta.residual();
  }
  cta.finish(issued_end);
}

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla
