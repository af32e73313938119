// Device code of the fused FFN block (docs/ffn.md). Written only against the device API, so it compiles with nvcc
// for sm_90a and runs on the CPU emulator.
//
// Grid: C clusters of N CTAs. Cluster c owns a slice F_c of ffn_hidden (whole 16-row tiles); rank r of a cluster owns
// a slice K_r of hidden (whole 32-column units), which is both its K-slice of gate/up and its output rows of down.
// Each CTA has 8 consumer warps and one producer warp. The producer streams the CTA's whole load schedule into a ring
// of `stages` 16 KB shared-memory stages (full/empty mbarrier pairs): gate rows F_c x K_r, up rows F_c x K_r, then
// down rows K_r x F_c. The consumers run the phases in the same order:
//   1. norm     residual add + sum of squares over K_r; all-gather of the partial sums over the cluster (DSMEM);
//               x_s = x (T) over K_r
//   2. gate/up  partial gate and up rows of F_c over K_r (tensor cores) -> part (fp32, shared memory)
//   3. act      pull reduce-scatter: the owner of a pair of F_c rows sums the N partials in rank order, computes
//               silu(gate) * up, rounds to T and pushes it into every rank's act_s
//   4. down     out rows K_r x the F_c columns -> a partial [K_r rows, batch] per cluster in the global workspace;
//               the last of the C CTAs that produce an output group (u32 counter) sums the clusters in order and
//               writes out and residual_out
// The down weights do not depend on the activations, so the ring fills with them during the exchange of phase 3.
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
CF_GLOBAL void CF_LAUNCH_BOUNDS(ws::kThreads, 1) ffn_kernel(const CF_GRID_CONSTANT KernelParams p) {
  using ws::Range;
  constexpr int kCt = ws::kConsumerThreads;

  uint8_t* smem = dev::dynamic_smem();
  const uint32_t tid = dev::thread_rank(), warp = tid / 32, lane = tid % 32;
  const int32_t rank = int32_t(dev::block_rank_in_cluster());
  const int32_t n_ranks = int32_t(dev::cluster_size());
  const int32_t cluster = int32_t(dev::cluster_idx().x);
  const int32_t n_clusters = int32_t(dev::cluster_grid_dim().x);
  const int32_t batch = p.batch;
  const ws::StageShape ss = ws::stage_shape(p.stage_units);
  const int32_t M = ss.tiles, U = ss.units;

  auto* full = reinterpret_cast<dev::Mbarrier*>(smem);
  auto* empty = full + ws::kMaxStages;
  auto* sumsq_bar = empty + ws::kMaxStages;
  auto* part_bar = sumsq_bar + 1;
  auto* act_bar = sumsq_bar + 2;
  auto* small = reinterpret_cast<SmallBuffers*>(smem + p.off_small);
  uint8_t* x_s = smem + p.off_x;
  uint8_t* act_s = smem + p.off_x;  // region X after gate/up
  float* part = reinterpret_cast<float*>(smem + p.off_part);
  float* fin = reinterpret_cast<float*>(smem + p.off_part);  // region P after the act exchange
  float* scratch = reinterpret_cast<float*>(smem + p.off_scratch);
  const ws::Ring ring{full, empty, smem + p.off_ring, p.stages, p.status + kStatusTimeout};

  // The K-slice / output rows of this rank and the F-slice of this cluster.
  const Range k_units = ws::split_range(p.hidden_units, n_ranks, rank);
  const int32_t col0 = k_units.begin * ws::kUnitCols, n_cols = k_units.size() * ws::kUnitCols;
  const Range f_tiles = ws::split_range(p.ffn_tiles, n_clusters, cluster);
  const int32_t f0 = f_tiles.begin * ws::kTileRows, f_rows = f_tiles.size() * ws::kTileRows;
  const int32_t f_units = ws::ceil_div(f_rows, ws::kUnitCols);  // down K-units (the last one may reach past F_c)
  const int32_t gu_groups = ws::ceil_div(f_tiles.size(), M);
  const int32_t gu_items = ws::ceil_div(k_units.size(), U);
  const int32_t o_tiles = n_cols / ws::kTileRows;
  const int32_t down_groups = ws::ceil_div(o_tiles, M);
  const int32_t down_items = ws::ceil_div(f_units, U);

  // ---- setup ----------------------------------------------------------------------------------------------------
  if (tid == 0) {
    for (int32_t s = 0; s < p.stages; ++s) {
      full[s].init(1);
      empty[s].init(ws::kConsumerWarps);
    }
    for (int i = 0; i < kExchangeBarriers; ++i) sumsq_bar[i].init(uint32_t(n_ranks));
    dev::fence_mbarrier_init();
  }
  dev::cluster_sync();  // barriers initialised; every CTA of the cluster started

  if (warp == uint32_t(ws::kProducerWarp)) {
    // ==== producer: the whole load schedule, in consumption order ==================================================
    int32_t item = 0;
    for (int half = 0; half < 2; ++half) {
      const dev::TensorMap& big = half == 0 ? p.gate_big : p.up_big;
      const dev::TensorMap& small_map = half == 0 ? p.gate_small : p.up_small;
      for (int32_t grp = 0; grp < gu_groups; ++grp) {
        const int32_t t0 = grp * M, nt = f_tiles.size() - t0 < M ? f_tiles.size() - t0 : M;
        for (int32_t s = 0; s < gu_items; ++s) {
          const int32_t u0 = s * U, nu = k_units.size() - u0 < U ? k_units.size() - u0 : U;
          ws::load_panel(ring, item++, big, small_map, ss, f0 + t0 * ws::kTileRows, nt, col0 + u0 * ws::kUnitCols,
                         nu, lane);
        }
      }
    }
    // down: this rank's output groups, visited in an order rotated by the cluster index (spreads the last arrivals)
    for (int32_t i = 0; i < down_groups; ++i) {
      const int32_t og = (i + cluster) % down_groups;
      const int32_t t0 = og * M, nt = o_tiles - t0 < M ? o_tiles - t0 : M;
      for (int32_t s = 0; s < down_items; ++s) {
        const int32_t u0 = s * U, nu = f_units - u0 < U ? f_units - u0 : U;
        ws::load_panel(ring, item++, p.down_big, p.down_small, ss, col0 + t0 * ws::kTileRows, nt,
                       f0 + u0 * ws::kUnitCols, nu, lane);
      }
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
    uint32_t* const timeout_word = p.status + kStatusTimeout;
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
    ws::wait(*sumsq_bar, 0, timeout_word);
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
        const int32_t t0 = grp * M, nt = f_tiles.size() - t0 < M ? f_tiles.size() - t0 : M;
        float acc[kBatchTiles][4] = {};
        for (int32_t s = 0; s < gu_items; ++s) {
          const int32_t u0 = s * U, nu = k_units.size() - u0 < U ? k_units.size() - u0 : U;
          ring.wait_full(item);
          ws::panel_mma<T, kBatchTiles>(ring.stage(item), ss, nt, nu, x_s, p.x_stride, u0 * ws::kUnitCols, n_cols,
                                        batch, warp, lane, acc);
          ring.release(item, lane);
          ++item;
        }
        float* sc = scratch + uint32_t(group_index & 1) * scratch_floats;
        ws::store_group_partials<kBatchTiles>(sc, ss, nt, batch, warp, lane, acc);
        consumers_sync();
        float* dst = part + (half * f_rows + t0 * ws::kTileRows) * batch;
        for (int32_t e = int32_t(ctid); e < nt * ws::kTileRows * batch; e += kCt)
          dst[e] = ws::group_value(sc, ss, batch, e);
        ++group_index;
      }
    }
    signal_all(part_bar);

    // ---- 3. act: owner of row pairs [pairs.begin, pairs.end) sums the ranks' partials, activates, pushes -----------
    ws::wait(*part_bar, 0, timeout_word);
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
    ws::wait(*act_bar, 0, timeout_word);

    // ---- 4. down + cross-cluster sum ------------------------------------------------------------------------------
    {
      T* const out = static_cast<T*>(p.out);
      T* const residual_out = static_cast<T*>(p.residual_out);
      const uint32_t ws_cluster_stride = uint32_t(p.hidden) * uint32_t(batch);
      const int32_t chunks = ws::ceil_div(n_clusters, kClustersPerChunk);
      // Sums output group `og` of this rank over all clusters and writes out / residual_out. Every thread loads a
      // float4 of kClustersPerChunk clusters (all loads in flight at once); the chunk sums are added in chunk order.
      auto finish_group = [&](int32_t og) {
        const int32_t t0 = og * M, nt = o_tiles - t0 < M ? o_tiles - t0 : M;
        const int32_t r0 = col0 + t0 * ws::kTileRows, nr = nt * ws::kTileRows;
        const int32_t n_vec = nr * batch / 4;  // nr is a multiple of 16
        const float* base = p.partial + uint32_t(r0) * uint32_t(batch);
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
          const float h = dev::to_float(hidden_in[at]);
          const float r = residual ? dev::to_float(residual[at]) : 0.0f;
          residual_out[at] = dev::from_float<T>(h + r);
          out[at] = dev::from_float<T>(total);
        }
      };
      // The counter of a group is incremented after its partials are stored; the answer (was this CTA the last of
      // the C clusters?) is looked at one group later, so the fence and the atomic's latency overlap the next
      // group's MMAs; the CTA that arrived last sums the group.
      uint32_t pending_old = 0;
      int32_t pending_group = -1;
      auto decide_last = [&] {  // thread 0: the group to finish now (~0u: none)
        uint32_t flag = ~0u;
        if (pending_group >= 0 && pending_old == uint32_t(n_clusters - 1)) {
          flag = uint32_t(pending_group);
          (void)dev::atomic_exch(p.counters + rank * p.groups_max + pending_group, 0u);  // for the next launch
          dev::threadfence();  // acquire: the other clusters' partials of the group
        }
        small->last_flag = flag;
      };
      for (int32_t i = 0; i < down_groups; ++i) {
        const int32_t og = (i + cluster) % down_groups;
        const int32_t t0 = og * M, nt = o_tiles - t0 < M ? o_tiles - t0 : M;
        float acc[kBatchTiles][4] = {};
        for (int32_t s = 0; s < down_items; ++s) {
          const int32_t u0 = s * U, nu = f_units - u0 < U ? f_units - u0 : U;
          ring.wait_full(item);
          ws::panel_mma<T, kBatchTiles>(ring.stage(item), ss, nt, nu, act_s, p.act_stride, u0 * ws::kUnitCols,
                                        f_rows, batch, warp, lane, acc);
          ring.release(item, lane);
          ++item;
        }
        float* sc = scratch + uint32_t(group_index & 1) * scratch_floats;
        ws::store_group_partials<kBatchTiles>(sc, ss, nt, batch, warp, lane, acc);
        consumers_sync();
        const int32_t r0 = col0 + t0 * ws::kTileRows;
        float* dst = p.partial + uint32_t(cluster) * ws_cluster_stride + uint32_t(r0) * uint32_t(batch);
        for (int32_t e = int32_t(ctid); e < nt * ws::kTileRows * batch; e += kCt)
          dst[e] = ws::group_value(sc, ss, batch, e);
        ++group_index;
        consumers_sync();  // the group's partials are stored
        if (ctid == 0) decide_last();
        consumers_sync();
        if (ctid == 0) {
          dev::threadfence();  // release: this CTA's partials before its arrival
          pending_old = dev::atomic_add(p.counters + rank * p.groups_max + og, 1u);
          pending_group = og;
        }
        if (small->last_flag != ~0u) {
          finish_group(int32_t(small->last_flag));
          consumers_sync();  // fin is rewritten by the next finish
        }
      }
      consumers_sync();  // everyone has read the last group's flag
      if (ctid == 0) decide_last();  // waits for the last atomic
      consumers_sync();
      if (small->last_flag != ~0u) finish_group(int32_t(small->last_flag));
    }
  }
  dev::cluster_sync();  // no CTA exits while a peer may still read its shared memory
}

}  // namespace cf::kernels::ffn
