// Device code of the final norm + LM head + greedy argmax (docs/ffn.md §5). Written only against the device API.
//
// Grid: one CTA per SM (no cluster: the vocabulary rows are independent), 8 consumer warps + 1 producer warp. CTA i
// owns a contiguous slice of the vocabulary in 16-row tiles. The producer streams its rows x all of hidden into the
// ring (kernels/ffn/weight_stream.hpp) from the first cycle; the consumers
//   1. norm: residual add + sum of squares over the whole of hidden per token, x_s = x (T) (every CTA the same bits)
//   2. per group of M tiles: logits (tensor cores, k-groups added in order) -> `logits` (fp32) and, through the
//      group's scratch, the CTA's running argmax per token (lowest id on ties, NaN skipped)
//   3. its candidates -> the workspace; the CTA that arrives last (u32 counter, reset by it) reduces the candidates
//      of all CTAs per token and writes `tokens`.
#pragma once
#include <cmath>
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/kernels/ffn/weight_stream.hpp"
#include "clusterfusion/kernels/lm_head/kernel_params.hpp"
#include "clusterfusion/kernels/lm_head/traits.hpp"

namespace cf::kernels::lm_head {
namespace dev = cf::dev;

namespace detail {
// (value, index) beats (best_value, best_index): a strict total order on candidates (larger value, then lower id);
// index -1 is "no candidate" and loses to every real one. NaN values are never candidates.
CF_DEVICE bool beats(float value, int32_t index, float best_value, int32_t best_index) {
  if (index < 0) return false;
  if (best_index < 0) return true;
  return value > best_value || (value == best_value && index < best_index);
}
// The best candidate of the warp (every lane gets it): a butterfly over the total order, so the result does not
// depend on the combination order.
CF_DEVICE void warp_best(float& value, int32_t& index) {
  CF_UNROLL
  for (int m = 16; m >= 1; m >>= 1) {
    const float v = dev::shfl_xor_sync(dev::kFullMask, value, m);
    const int32_t i = dev::shfl_xor_sync(dev::kFullMask, index, m);
    if (beats(v, i, value, index)) value = v, index = i;
  }
}
}  // namespace detail

template <typename T, int kBatchTiles>
CF_GLOBAL void CF_LAUNCH_BOUNDS(ws::kThreads, 1) lm_head_kernel(const CF_GRID_CONSTANT KernelParams p) {
  using ws::Range;
  constexpr int kCt = ws::kConsumerThreads;

  uint8_t* smem = dev::dynamic_smem();
  const uint32_t tid = dev::thread_rank(), warp = tid / 32, lane = tid % 32;
  const int32_t cta = int32_t(dev::block_idx().x), n_ctas = int32_t(dev::grid_dim().x);
  const int32_t batch = p.batch;
  const int32_t M = p.tiles;

  auto* full = reinterpret_cast<dev::Mbarrier*>(smem);
  auto* empty = full + ws::kMaxStages;
  auto* small = reinterpret_cast<SmallBuffers*>(smem + p.off_small);
  uint8_t* x_s = smem + p.off_x;
  float* scratch = reinterpret_cast<float*>(smem + p.off_scratch);
  const prim::WaitLimit limit{reinterpret_cast<uint64_t*>(p.status + kStatusTimeout), p.wait_budget_ns, 0,
                              &small->abort};
  const ws::Ring ring{full, empty, smem + p.off_ring, p.stages, limit};

  const Range tiles = ws::split_range(p.vocab_tiles, n_ctas, cta);
  const int32_t groups = ws::ceil_div(tiles.size(), M);
  const int32_t items = ws::ceil_div(p.hidden, p.chunk_cols);

  if (tid == 0) {
    for (int32_t s = 0; s < p.stages; ++s) {
      full[s].init(1);
      empty[s].init(ws::kConsumerWarps);
    }
    dev::fence_mbarrier_init();
    small->abort = 0;
  }
  dev::block_sync();
  int32_t issued_end = 0;  // producer: ring items [0, issued_end) were issued (none after an abort)

  if (warp == uint32_t(ws::kProducerWarp)) {
    // ==== producer: this CTA's vocabulary rows x the whole of hidden, group after group ===========================
    int32_t item = 0;
    for (int32_t grp = 0; grp < groups; ++grp) {
      const int32_t t0 = grp * M, nt = tiles.size() - t0 < M ? tiles.size() - t0 : M;
      for (int32_t s = 0; s < items; ++s)
        if (ws::load_panel(ring, item++, kWaitRingStage, p.w, ws::chunk_width(p.hidden, p.chunk_cols, s),
                           (tiles.begin + t0) * ws::kTileRows, nt, s * p.chunk_cols, lane))
          issued_end = item;
    }
  } else {
    // ==== consumers ================================================================================================
    const uint32_t ctid = tid;
    auto consumers_sync = [&] { dev::named_barrier_sync(1, kCt); };
    const T* const hidden_in = static_cast<const T*>(p.hidden_in);
    const T* const residual = static_cast<const T*>(p.residual);
    const T* const norm_w = static_cast<const T*>(p.norm);
    const int32_t H = p.hidden;

    // ---- 1. norm over the whole of hidden ---------------------------------------------------------------------------
    auto load_sum8 = [&](int32_t b, int32_t c, float (&v)[8]) {
      const int64_t at = int64_t(b) * H + c;
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
    const int32_t tpt_log2 = batch <= 1 ? 8 : batch <= 2 ? 7 : batch <= 4 ? 6 : batch <= 8 ? 5 : 4;
    const int32_t tpt = 1 << tpt_log2;  // threads per token (a power of two)
    {
      const int32_t b = int32_t(ctid) >> tpt_log2, sub = int32_t(ctid) & (tpt - 1);
      float sq = 0.0f;
      if (b < batch) {
        constexpr int kInFlight = 4;
        for (int32_t c0 = sub * 8; c0 < H; c0 += tpt * 8 * kInFlight) {
          float v[kInFlight][8];
          CF_UNROLL
          for (int k = 0; k < kInFlight; ++k)
            if (c0 + k * tpt * 8 < H) load_sum8(b, c0 + k * tpt * 8, v[k]);
          CF_UNROLL
          for (int k = 0; k < kInFlight; ++k)
            if (c0 + k * tpt * 8 < H) {
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
      small->inv_rms[ctid] = 1.0f / std::sqrt(sq / float(H) + p.eps);
      small->best_value[ctid] = -INFINITY;
      small->best_index[ctid] = -1;
    }
    consumers_sync();
    {
      constexpr int kInFlight = 2;
      const int32_t chunks = batch * H / 8;
      for (int32_t i0 = int32_t(ctid); i0 < chunks; i0 += kCt * kInFlight) {
        float v[kInFlight][8];
        dev::U32x4 wv[kInFlight];
        CF_UNROLL
        for (int k = 0; k < kInFlight; ++k) {
          const int32_t i = i0 + k * kCt;
          if (i < chunks) {
            const int32_t b = i * 8 / H, c = i * 8 % H;
            load_sum8(b, c, v[k]);
            wv[k] = dev::load16(norm_w + c);
          }
        }
        CF_UNROLL
        for (int k = 0; k < kInFlight; ++k) {
          const int32_t i = i0 + k * kCt;
          if (i < chunks) {
            const int32_t b = i * 8 / H, c = i * 8 % H;
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

    // ---- 2. logits and the running argmax, group after group -------------------------------------------------------
    int32_t item = 0;
    for (int32_t grp = 0; grp < groups; ++grp) {
      const int32_t t0 = grp * M, nt = tiles.size() - t0 < M ? tiles.size() - t0 : M;
      float acc[kBatchTiles][4] = {};
      for (int32_t s = 0; s < items; ++s) {
        if (ring.wait_full(item, kWaitTile))
          ws::panel_mma<T, kBatchTiles>(ring.stage(item), M, nt, ws::chunk_width(H, p.chunk_cols, s), x_s, p.x_stride,
                                        s * p.chunk_cols, H, batch, warp, lane, acc);
        ring.release(item, lane);
        ++item;
      }
      ws::store_group_partials<kBatchTiles>(scratch, M, nt, batch, warp, lane, acc);
      consumers_sync();
      const int32_t row0 = (tiles.begin + t0) * ws::kTileRows, n_rows = nt * ws::kTileRows;
      for (int32_t e = int32_t(ctid); e < n_rows * batch; e += kCt) {
        const int32_t r = e / batch, b = e % batch, row = row0 + r;
        const float v = ws::group_value(scratch, M, batch, e);
        if (row < p.vocab && p.logits) p.logits[int64_t(b) * p.vocab + row] = v;
        // in place: no other thread reads element e's partials; rows past the vocabulary never win
        scratch[e] = row < p.vocab ? v : NAN;
      }
      consumers_sync();
      // warp w keeps the running best of tokens w, w + 8 (rows visited in increasing order)
      for (int32_t b = int32_t(warp); b < batch; b += ws::kConsumerWarps) {
        float value = -INFINITY;
        int32_t index = -1;
        for (int32_t r = int32_t(lane); r < n_rows; r += 32) {
          const float v = scratch[r * batch + b];
          if (!std::isnan(v) && detail::beats(v, row0 + r, value, index)) value = v, index = row0 + r;
        }
        detail::warp_best(value, index);
        if (lane == 0 && detail::beats(value, index, small->best_value[b], small->best_index[b])) {
          small->best_value[b] = value;
          small->best_index[b] = index;
        }
      }
      consumers_sync();  // the scan is done before the next group's partials overwrite the scratch
    }

    // ---- 3. candidates, the last arriver picks the tokens ----------------------------------------------------------
    if (int32_t(ctid) < batch) {
      p.cand_value[cta * batch + int32_t(ctid)] = small->best_value[ctid];
      p.cand_index[cta * batch + int32_t(ctid)] = small->best_index[ctid];
    }
    consumers_sync();
    if (ctid == 0) {
      dev::threadfence();  // release: this CTA's candidates before its arrival
      const uint32_t old = dev::atomic_add(p.counter, 1u);
      uint32_t last = 0;
      if (old == uint32_t(n_ctas - 1)) {
        last = 1;
        (void)dev::atomic_exch(p.counter, 0u);  // for the next launch
        dev::threadfence();                     // acquire: every CTA's candidates
      }
      small->last_flag = last;
    }
    consumers_sync();
    if (small->last_flag && p.tokens) {
      for (int32_t b = int32_t(warp); b < batch; b += ws::kConsumerWarps) {
        float value = -INFINITY;
        int32_t index = -1;
        // every lane's candidates loaded first (all in flight: this is the kernel's tail), then compared
        for (int32_t c0 = 0; c0 < n_ctas; c0 += 32 * kCandidatesInFlight) {
          float v[kCandidatesInFlight];
          int32_t i[kCandidatesInFlight];
          CF_UNROLL
          for (int k = 0; k < kCandidatesInFlight; ++k) {
            const int32_t c = c0 + k * 32 + int32_t(lane);
            v[k] = c < n_ctas ? ws::load_volatile(p.cand_value + c * batch + b) : -INFINITY;
            i[k] = c < n_ctas ? ws::load_volatile(p.cand_index + c * batch + b) : -1;
          }
          CF_UNROLL
          for (int k = 0; k < kCandidatesInFlight; ++k)
            if (detail::beats(v[k], i[k], value, index)) value = v[k], index = i[k];
        }
        detail::warp_best(value, index);
        if (lane == 0) p.tokens[b] = index < 0 ? 0 : index;
      }
    }
  }
  // After an expired wait: every thread is past its last wait; the producer waits until the copies it issued have
  // landed, so none writes into this CTA's shared memory after it ends (one block barrier per launch otherwise).
  dev::block_sync();
  if (warp == uint32_t(ws::kProducerWarp) && lane == 0 && prim::abort_raised(limit))
    ring.drain(issued_end, {reinterpret_cast<uint64_t*>(p.status + kStatusDrainTimeout), p.wait_budget_ns, kWaitDrain,
                            nullptr});
}

}  // namespace cf::kernels::lm_head
