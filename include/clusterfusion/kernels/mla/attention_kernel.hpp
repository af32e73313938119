// The MLA block's split-KV latent attention (docs/mla.md §1.5, launch 2): a phase list on the pipeline layer, written
// only against the device API (nvcc sm_90a and the CPU emulator).
//
// Grid: one CTA per (token, head tile of 16 heads, split), 8 consumer warps + 1 producer warp. The split's cache rows
// are one MQA head of row_elems = r + rope values whose first r values are also the value: the producer streams
// them page by page through the ring (bulk copies of up to item_rows rows of one page) while the consumers
//   1. query:   the tile's absorbed queries [q_lat, q_pe] into shared memory (fp32)
//   2. attend:  per item the scores (a warp per (head, row), butterfly sums), the online-softmax update per head and
//               the accumulation of p x c_kv (a thread per (head, column)); every sum in a fixed order
//   3. merge:   the split's (max, sum, acc) to the workspace; the last arriver of (token, tile) merges the splits in
//               split order, divides, and applies W_UV per head -> o (TA). A bad token's o is NaN.
//   4. residual: every CTA writes its slice of residual_out = hidden + residual (nothing else reads them now).
#pragma once
#include <cmath>
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/kernels/mla/kernel_params.hpp"
#include "clusterfusion/kernels/mla/rows_kernel.hpp"  // detail::
#include "clusterfusion/kernels/mla/traits.hpp"
#include "clusterfusion/pipeline/cross_cta_sum.hpp"
#include "clusterfusion/pipeline/cta.hpp"
#include "clusterfusion/pipeline/ring.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla {

namespace detail {
CF_DEVICE float exp_of(float x) {
#if defined(CF_DEVICE_CUDA) && defined(__CUDA_ARCH__)
  return expf(x);
#else
  return std::exp(x);
#endif
}
}  // namespace detail

template <typename T>
struct AttentionCta : pl::StreamCta<AttentionParams, Barriers, AttentionSmall> {
  const int32_t cta = int32_t(dev::block_idx().x), n_ctas = int32_t(dev::grid_dim().x);
  const int32_t b = cta / (p.head_tiles * p.splits), tile = cta / p.splits % p.head_tiles, split = cta % p.splits;
  const int32_t h0 = tile * kHeadTile;
  const int32_t n_heads = p.n_heads - h0 < kHeadTile ? p.n_heads - h0 : kHeadTile;  // heads of this tile
  const bool bad = p.token_bad[b] != 0;
  const int32_t page_base = bad ? 0 : p.kv_indptr[b];
  const pl::Range span = pl::split_range(bad ? 0 : kv_len(), p.splits, split);  // this split's cache rows
  float* const q = p.layout.q.in(smem);
  float* const acc = p.layout.acc.in(smem);
  float* const scores = p.layout.scores.in(smem);

  CF_DEVICE explicit AttentionCta(const AttentionParams& params) : StreamCta(params, kStatusTimeout) {}

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

  CF_DEVICE void setup() {
    if (tid == 0) {
      ring.init();
      small->abort = 0;
    }
    dev::block_sync();
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

  // 1. Consumers: the tile's queries (fp32) and a fresh state per head.
  CF_DEVICE void query() {
    const T* src = static_cast<const T*>(p.q_lat) + (int64_t(b) * p.n_heads + h0) * p.row_elems;
    for (int32_t e = int32_t(tid); e < n_heads * p.row_elems; e += pl::kConsumerThreads)
      q[e] = bad ? 0.0f : dev::to_float(src[e]);
    for (int32_t e = int32_t(tid); e < n_heads * p.r; e += pl::kConsumerThreads) acc[e] = 0.0f;
    if (int32_t(tid) < n_heads) {
      small->m[tid] = -INFINITY;
      small->l[tid] = 0.0f;
    }
    pl::consumers_sync();
  }

  // 2a. Scores of the item's n rows, a warp per (head, row).
  CF_DEVICE void item_scores(const uint8_t* rows, int32_t n) {
    for (int32_t e = int32_t(warp); e < n_heads * n; e += pl::kConsumerWarps) {
      const int32_t h = e / n, j = e % n;
      const T* row = reinterpret_cast<const T*>(rows + uint32_t(j) * p.row_bytes);
      const float* qh = q + h * p.row_elems;
      float dot = 0.0f;
      for (int32_t i = int32_t(lane); i < p.row_elems; i += 32) dot += qh[i] * dev::to_float(row[i]);
      dot = detail::warp_sum(dot);
      if (lane == 0) scores[h * kMaxItemRows + j] = dot * p.scale;
    }
    pl::consumers_sync();
  }

  // 2b. Thread h: the online-softmax update of head h; the scores become probabilities.
  CF_DEVICE void item_softmax(int32_t n) {
    if (int32_t(tid) < n_heads) {
      float* s = scores + tid * kMaxItemRows;
      float m_new = small->m[tid];
      for (int32_t j = 0; j < n; ++j) m_new = s[j] > m_new ? s[j] : m_new;
      const float alpha = small->m[tid] == -INFINITY ? 0.0f : detail::exp_of(small->m[tid] - m_new);
      float l = small->l[tid] * alpha;
      for (int32_t j = 0; j < n; ++j) {
        s[j] = detail::exp_of(s[j] - m_new);
        l += s[j];
      }
      small->m[tid] = m_new;
      small->l[tid] = l;
      small->alpha[tid] = alpha;
    }
    pl::consumers_sync();
  }

  // 2c. A thread per (head, column): acc = acc * alpha + sum_j p_j c_kv_j.
  CF_DEVICE void item_accumulate(const uint8_t* rows, int32_t n) {
    for (int32_t e = int32_t(tid); e < n_heads * p.r; e += pl::kConsumerThreads) {
      const int32_t h = e / p.r, c = e % p.r;
      float a = acc[e] * small->alpha[h];
      for (int32_t j = 0; j < n; ++j)
        a += scores[h * kMaxItemRows + j] * dev::to_float(reinterpret_cast<const T*>(rows + uint32_t(j) * p.row_bytes)[c]);
      acc[e] = a;
    }
    pl::consumers_sync();
  }

  CF_DEVICE void attend() {
    pl::PipelineState st;
    for (int32_t t = span.begin; t < span.end; t += item_rows_at(t)) {
      const int32_t n = item_rows_at(t);
      if (ring.consumer_wait(st, kWaitCacheRows)) {
        item_scores(ring.stage(st), n);
        item_softmax(n);
        item_accumulate(ring.stage(st), n);
      }
      ring.consumer_release(st);
    }
  }

  // 3. Consumers: the split's state out; the last arriver merges the splits and applies W_UV.
  CF_DEVICE void merge() {
    const int64_t rec0 = (int64_t(b) * p.n_heads + h0) * p.splits + split;  // head h: rec0 + h * splits
    for (int32_t e = int32_t(tid); e < n_heads * p.r; e += pl::kConsumerThreads)
      p.part_acc[(rec0 + e / p.r * p.splits) * p.r + e % p.r] = acc[e];
    if (int32_t(tid) < n_heads) {
      p.part_ml[(rec0 + tid * p.splits) * 2] = small->m[tid];
      p.part_ml[(rec0 + tid * p.splits) * 2 + 1] = small->l[tid];
    }
    pl::consumers_sync();
    if (tid == 0) small->last_flag = pl::arrive_last(p.counters + b * p.head_tiles + tile, uint32_t(p.splits)) ? 1u : 0u;
    pl::consumers_sync();
    if (small->last_flag == 0) return;
    merge_splits();
    apply_w_uv();
  }

  // The last arriver: o_lat (into acc) = sum_s acc_s e^(m_s - m) / sum_s l_s e^(m_s - m), splits in order.
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
      acc[e] = bad ? NAN : a / l;
    }
    pl::consumers_sync();
  }

  // The last arriver: o[h][j] = W_UV[h][j] . o_lat[h], a warp per (head, j).
  CF_DEVICE void apply_w_uv() {
    const T* w = static_cast<const T*>(p.w_uv);
    for (int32_t e = int32_t(warp); e < n_heads * p.v_head; e += pl::kConsumerWarps) {
      const int32_t h = e / p.v_head, j = e % p.v_head;
      const T* wrow = w + (int64_t(h0 + h) * p.v_head + j) * p.r;
      float dot = 0.0f;
      for (int32_t c = int32_t(lane); c < p.r; c += 32) dot += dev::to_float(wrow[c]) * acc[h * p.r + c];
      dot = detail::warp_sum(dot);
      if (lane == 0)
        static_cast<T*>(p.o)[int64_t(b) * p.n_heads * p.v_head + (h0 + h) * p.v_head + j] = dev::from_float<T>(dot);
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

  CF_DEVICE void finish(int32_t issued_end) { end_ring(issued_end, kStatusDrainTimeout, kWaitDrain); }
};

template <typename T>
CF_GLOBAL void CF_LAUNCH_BOUNDS(pl::kThreads, 1) attention_kernel(const CF_GRID_CONSTANT AttentionParams p) {
  AttentionCta<T> cta(p);
  cta.setup();
  int32_t issued_end = 0;
  if (cta.is_producer()) {
    issued_end = cta.produce();
  } else {
    cta.query();
    cta.attend();
    cta.merge();
    cta.residual();
  }
  cta.finish(issued_end);
}

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla
