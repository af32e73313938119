// The residual + RMSNorm prologue of every block kernel, run by the consumer warps while the producer streams:
//
//   h + r               residual_out's value, in fp32 (the sum of the 16-bit inputs)
//   x = (h + r) / rms * w   rounded to TA into x_s, the tensor cores' B operand
//
// over a CTA's columns [col0, col0 + n_cols) of hidden (a cluster splits hidden; the LM head takes all of it). The
// rms needs the sum of squares over the whole of hidden: a CTA computes its partial per token (partial_sum_squares);
// run_in_cluster all-gathers the partials over the cluster and adds them in rank order (the same bits on every
// rank), run takes a CTA's own sums; both then write x_s (write_normed).
#pragma once
#include <cmath>
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/primitives/element.hpp"
#include "clusterfusion/pipeline/roles.hpp"
#include "clusterfusion/primitives/cluster_reduce_scatter.hpp"

namespace cf::pipeline {

inline constexpr int kNormPartsMax = 8;  // warps of a token's thread group (256 threads / 32)

// The prologue's view of its inputs and buffers. TA: the activations' type.
template <typename TA>
struct NormPrologue {
  const TA* hidden_in;   // [batch, hidden]
  const TA* residual;    // [batch, hidden] or null
  const TA* norm_w;      // [hidden]
  int32_t hidden;        // row length of hidden_in / residual
  int32_t batch;
  int32_t col0, n_cols;  // this CTA's columns (multiples of 8)
  float (*norm_red)[kNormPartsMax];  // [kMaxBatch][8] shared: per warp partial sums of squares

  // h + r of token b at columns c .. c + 7 (8 per 16-byte load).
  CF_DEVICE void load_sum8(int32_t b, int32_t c, float (&v)[8]) const {
    const int64_t at = int64_t(b) * hidden + c;
    const dev::U32x4 h = dev::load16(hidden_in + at);
    const uint32_t hw[4] = {h.x, h.y, h.z, h.w};
    uint32_t rw[4] = {0, 0, 0, 0};
    if (residual) {
      const dev::U32x4 r = dev::load16(residual + at);
      rw[0] = r.x, rw[1] = r.y, rw[2] = r.z, rw[3] = r.w;
    }
    CF_UNROLL
    for (int k = 0; k < 4; ++k) {
      const dev::Float2 hf = prim::unpack2<TA>(hw[k]);
      const dev::Float2 rf = residual ? prim::unpack2<TA>(rw[k]) : dev::Float2{0.0f, 0.0f};
      v[2 * k] = hf.x + rf.x;
      v[2 * k + 1] = hf.y + rf.y;
    }
  }

  // Threads per token of the sum of squares: 256 / batch rounded down to a power of two, >= 16.
  CF_DEVICE int32_t threads_per_token_log2() const {
    return batch <= 1 ? 8 : batch <= 2 ? 7 : batch <= 4 ? 6 : batch <= 8 ? 5 : 4;
  }

  // Consumer threads: every token's group of threads strides over its 8-column chunks with 4 loads in flight and
  // reduces with shuffles in a fixed order; then (after a consumer barrier) thread b < batch returns token b's
  // partial sum of squares over the CTA's columns, adding the warps' parts in order. Other threads return 0.
  CF_DEVICE float partial_sum_squares(uint32_t ctid) const {
    const int32_t tpt_log2 = threads_per_token_log2(), tpt = 1 << tpt_log2;
    const uint32_t warp = ctid / 32, lane = ctid % 32;
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
    if (tpt >= 32 && lane == 0 && b < batch) norm_red[b][warp & uint32_t((tpt >> 5) - 1)] = sq;
    if (tpt < 32 && sub == 0 && b < batch) norm_red[b][0] = sq;
    consumers_sync();
    float total = 0.0f;
    if (int32_t(ctid) < batch) {
      const int parts = tpt >= 32 ? tpt / 32 : 1;
      for (int w = 0; w < parts; ++w) total += norm_red[ctid][w];
    }
    return total;
  }

  CF_DEVICE float inv_rms_of(float sum_squares, float eps) const {
    return 1.0f / std::sqrt(sum_squares / float(hidden) + eps);
  }

  // Consumer threads (inv_rms[b] complete and visible): x_s[b][c] = x (TA) over the CTA's columns, x_stride bytes
  // per token row, 2 chunks of 8 columns in flight per thread.
  CF_DEVICE void write_normed(uint32_t ctid, const float* inv_rms, uint8_t* x_s, uint32_t x_stride) const {
    constexpr int kInFlight = 2;
    const int32_t chunks = batch * n_cols / 8;
    for (int32_t i0 = int32_t(ctid); i0 < chunks; i0 += kConsumerThreads * kInFlight) {
      float v[kInFlight][8];
      dev::U32x4 wv[kInFlight];
      CF_UNROLL
      for (int k = 0; k < kInFlight; ++k) {
        const int32_t i = i0 + k * kConsumerThreads;
        if (i < chunks) {
          const int32_t b = i * 8 / n_cols, c = i * 8 % n_cols;
          load_sum8(b, col0 + c, v[k]);
          wv[k] = dev::load16(norm_w + col0 + c);
        }
      }
      CF_UNROLL
      for (int k = 0; k < kInFlight; ++k) {
        const int32_t i = i0 + k * kConsumerThreads;
        if (i < chunks) {
          const int32_t b = i * 8 / n_cols, c = i * 8 % n_cols;
          const uint32_t ww[4] = {wv[k].x, wv[k].y, wv[k].z, wv[k].w};
          const float inv = inv_rms[b];
          uint32_t xw[4];
          CF_UNROLL
          for (int e = 0; e < 4; ++e) {
            const dev::Float2 wf = prim::unpack2<TA>(ww[e]);
            xw[e] = prim::pack2<TA>(v[k][2 * e] * inv * wf.x, v[k][2 * e + 1] * inv * wf.y);
          }
          dev::store16(x_s + uint32_t(b) * x_stride + uint32_t(c) * 2, {xw[0], xw[1], xw[2], xw[3]});
        }
      }
    }
  }

  // The prologue of a CTA that covers all of hidden: inv_rms[b] of its sums, then x_s.
  CF_DEVICE void run(uint32_t ctid, float eps, float* inv_rms, uint8_t* x_s, uint32_t x_stride) const {
    const float sum_squares = partial_sum_squares(ctid);
    if (int32_t(ctid) < batch) inv_rms[ctid] = inv_rms_of(sum_squares, eps);
    consumers_sync();
    write_normed(ctid, inv_rms, x_s, x_stride);
    consumers_sync();
  }

  // The prologue of a CTA of a cluster that splits hidden: the partial sums [rank][token] (`sumsq`, kMaxBatch per
  // rank at most) all-gathered with the collective `rs` (one call; peers read this CTA's row until the next call),
  // added in rank order, then x_s.
  template <typename Collective>
  CF_DEVICE void run_in_cluster(uint32_t ctid, float eps, Collective& rs, float* sumsq, float* inv_rms, uint8_t* x_s,
                                uint32_t x_stride) const {
    const float sum_squares = partial_sum_squares(ctid);
    const int32_t rank = int32_t(rs.rank()), n_ranks = int32_t(rs.size());
    if (int32_t(ctid) < batch) sumsq[rank * batch + int32_t(ctid)] = sum_squares;
    dev::fence_cluster();  // cheap insurance on top of the collective's barrier + release arrive
    rs.all_gather(sumsq, uint32_t(n_ranks * batch), prim::FixedSegments{uint32_t(batch)});
    if (int32_t(ctid) < batch) {
      float total = 0.0f;
      for (int32_t r = 0; r < n_ranks; ++r) total += sumsq[r * batch + int32_t(ctid)];
      inv_rms[ctid] = inv_rms_of(total, eps);
    }
    consumers_sync();
    write_normed(ctid, inv_rms, x_s, x_stride);
    consumers_sync();
  }
};

}  // namespace cf::pipeline
