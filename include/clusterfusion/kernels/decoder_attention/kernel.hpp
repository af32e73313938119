// Device code of the fused decoder attention block (docs/attention.md). Written only against the device API, so
// it compiles with nvcc for sm_90a and runs on the CPU emulator.
//
// Grid: n_kv_heads clusters of N CTAs (cluster = one KV head and its G query heads). Each CTA has 8 consumer warps
// and one producer warp. The producer streams the CTA's whole load schedule into a ring of `stages` shared-memory
// stages (full/empty mbarrier pairs); the consumers run the phases in the same order:
//   1. norm       residual add + sum of squares of the CTA's K-slice; all-gather of the partial sums; x_s = x (T)
//   2. QKV        partial q/k/v of the group for the K-slice (tensor cores); pull reduce-scatter by RoPE pair owner:
//                 sum in rank order, bias, RoPE, KV append, push q/k/v to every rank
//   3. attention  the CTA's share of every token's cached positions, warps take KV stages round-robin; states
//                 merged over warps (fixed order), then per (token, head) owner: merge over ranks + the new token,
//                 push the output to every rank
//   4. O          the CTA's hidden/N output rows x the group's columns of Wo; partials to the global workspace; the
//                 last of the n_kv_heads CTAs of a row block (u32 counter) sums the groups in order and writes out
// Cross-CTA steps inside the cluster use DSMEM with mbarrier signalling (no cluster barrier after the first, so the
// producer never has to join one mid-kernel); each exchange barrier and buffer is used once per launch.
#pragma once
#include <cmath>
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/kernels/decoder_attention/kernel_params.hpp"
#include "clusterfusion/kernels/decoder_attention/traits.hpp"

namespace cf::kernels::decoder_attention {
namespace dev = cf::dev;

namespace detail {

// ---- element types ------------------------------------------------------------------------------------------------

template <typename T>
struct Elem;
template <>
struct Elem<dev::f16> {
  using Pair = dev::f16x2;
  static CF_DEVICE void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    dev::mma_m16n8k16_f16(d, a, b, d);
  }
};
template <>
struct Elem<dev::bf16> {
  using Pair = dev::bf16x2;
  static CF_DEVICE void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    dev::mma_m16n8k16_bf16(d, a, b, d);
  }
};

template <typename T>
CF_DEVICE uint32_t pack2(float lo, float hi) {
  return dev::to_bits(dev::from_float2<typename Elem<T>::Pair>(lo, hi));
}
template <typename T>
CF_DEVICE dev::Float2 unpack2(uint32_t bits) {
  return dev::to_float2(dev::from_bits<typename Elem<T>::Pair>(bits));
}
template <typename T>
CF_DEVICE float elem_to_float(uint16_t bits) {
  T v;
  __builtin_memcpy(static_cast<void*>(&v), &bits, 2);
  return dev::to_float(v);
}
template <typename T>
CF_DEVICE uint16_t float_to_elem(float f) {
  const T v = dev::from_float<T>(f);
  uint16_t bits;
  __builtin_memcpy(&bits, static_cast<const void*>(&v), 2);
  return bits;
}
CF_DEVICE uint32_t ld_u32(const void* p) {
  uint32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
}
CF_DEVICE uint16_t ld_u16(const void* p) {
  uint16_t v;
  __builtin_memcpy(&v, p, 2);
  return v;
}
CF_DEVICE void st_u16(void* p, uint16_t v) { __builtin_memcpy(p, &v, 2); }
CF_DEVICE float as_float(uint32_t bits) {
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}
CF_DEVICE uint32_t as_bits(float f) {
  uint32_t bits;
  __builtin_memcpy(&bits, &f, 4);
  return bits;
}

constexpr float kNegInf = -INFINITY;

// ---- work splits (identical in every CTA and in the producer) ---------------------------------------------------

struct Range {
  int32_t begin, end;
  CF_DEVICE int32_t size() const { return end - begin; }
};
CF_HOST_DEVICE Range split_range(int32_t total, int32_t parts, int32_t i) {
  return {int32_t(int64_t(total) * i / parts), int32_t(int64_t(total) * (i + 1) / parts)};
}

// The RoPE pair j (0 <= j < hd/2) of a head: the two dimensions it combines, whether it rotates, its frequency index.
struct RopePair {
  int32_t d1, d2, rotate;
};
CF_DEVICE RopePair rope_pair(int32_t j, int32_t head_dim, int32_t rot_dim, bool neox) {
  const int32_t half = rot_dim / 2;
  if (neox) {
    if (j < half) return {j, j + half, 1};
    const int32_t k = j - half;  // dimensions past rot_dim pass through, in consecutive pairs
    return {rot_dim + 2 * k, rot_dim + 2 * k + 1, 0};
  }
  (void)head_dim;
  return {2 * j, 2 * j + 1, j < half ? 1 : 0};
}

// First row of Wqkv of row block rb (0..G-1: query heads of the group, G: k, G+1: v).
CF_DEVICE int32_t qkv_block_row(const KernelParams& p, int32_t group_id, int32_t rb, int32_t head_dim) {
  if (rb < p.group) return (group_id * p.group + rb) * head_dim;
  if (rb == p.group) return p.q_dim + group_id * head_dim;
  return p.q_dim + p.kv_dim + group_id * head_dim;
}

CF_DEVICE void set_status(const KernelParams& p, uint32_t bit) {
  if (p.status[bit] == 0) (void)dev::atomic_exch(&p.status[bit], 1u);
}

// Every mbarrier wait is bounded on the GPU: after p.max_polls failed polls (default 2^26: seconds, where a
// legitimate wait is microseconds; 0 = unbounded) the wait gives up and sets kStatusTimeout, so a bug ends the kernel
// with a message instead of hanging the machine. The emulator reports a deadlock itself.
CF_DEVICE void wait(dev::Mbarrier& bar, uint32_t parity, const KernelParams& p) {
#if defined(CF_DEVICE_CUDA)
  for (uint32_t polls = 0; !bar.try_wait(parity);) {
    if (++polls == p.max_polls) {
      set_status(p, kStatusTimeout);
      return;
    }
  }
#else
  (void)p;
  bar.wait(parity);
#endif
}

}  // namespace detail

// ---- the kernel ---------------------------------------------------------------------------------------------------

template <typename T, int kHeadDim, int kBatchTiles>
CF_GLOBAL void CF_LAUNCH_BOUNDS(Traits<kHeadDim>::kThreads, 1)
    decoder_attention_kernel(const CF_GRID_CONSTANT KernelParams p) {
  using Tr = Traits<kHeadDim>;
  using E = detail::Elem<T>;
  using detail::Range;
  constexpr int kHd = kHeadDim;
  constexpr int kW = Tr::kConsumerWarps;
  constexpr int kBatchCap = kBatchTiles * 8;
  (void)kBatchCap;

  uint8_t* smem = dev::dynamic_smem();
  const uint32_t tid = dev::thread_rank(), warp = tid / 32, lane = tid % 32;
  const uint32_t g = lane / 4, t = lane % 4;  // mma fragment coordinates
  const int32_t rank = int32_t(dev::block_rank_in_cluster());
  const int32_t n_ranks = int32_t(dev::cluster_size());
  const int32_t group_id = int32_t(dev::cluster_idx().x);
  const int32_t G = p.group;
  const int32_t batch = p.batch;
  const int32_t S = p.stages;

  auto* full = reinterpret_cast<dev::Mbarrier*>(smem);
  auto* empty = full + kMaxStages;
  auto* sumsq_bar = empty + kMaxStages;
  auto* part_bar = sumsq_bar + 1;
  auto* qkv_bar = sumsq_bar + 2;
  auto* state_bar = sumsq_bar + 3;
  auto* attn_bar = sumsq_bar + 4;
  auto* tokens = reinterpret_cast<TokenInfo*>(smem + p.off_tokens);
  auto* small = reinterpret_cast<SmallBuffers*>(smem + p.off_small);
  uint8_t* x_s = smem + p.off_x;
  uint8_t* q_s = smem + p.off_q;
  uint8_t* knew_s = smem + p.off_knew;
  uint8_t* vnew_s = smem + p.off_vnew;
  uint8_t* attn_s = smem + p.off_attn;
  float* part = reinterpret_cast<float*>(smem + p.off_part);
  float* scratch = reinterpret_cast<float*>(smem + p.off_scratch);
  float* state = reinterpret_cast<float*>(smem + p.off_state);
  float* opart = reinterpret_cast<float*>(smem + p.off_opart);
  uint8_t* ring = smem + p.off_ring;
  auto stage_ptr = [&](int32_t item) { return ring + uint32_t(item % S) * uint32_t(Tr::kStageBytes); };
  auto parity = [&](int32_t item) { return uint32_t((item / S) & 1); };

  // The K-slice of hidden (QKV inputs) and the output-row slice (O rows) of this rank.
  const Range units = detail::split_range(p.units_total, n_ranks, rank);
  const int32_t col0 = units.begin * Tr::kUnitCols, n_cols = units.size() * Tr::kUnitCols;
  const Range out_units = detail::split_range(p.out_row_units, n_ranks, rank);
  const int32_t o_begin = out_units.begin * 16, o_rows = out_units.size() * 16;
  const int32_t o_blocks = (o_rows + kHd - 1) / kHd;
  const int32_t qkv_stages_per_block = (units.size() + Tr::kUnitsPerStage - 1) / Tr::kUnitsPerStage;
  const int32_t wo_units = G * kHd / Tr::kUnitCols;
  const int32_t wo_stages_per_block = (wo_units + Tr::kUnitsPerStage - 1) / Tr::kUnitsPerStage;
  const int32_t rows_qkv = (G + 2) * kHd;
  const bool neox = p.rope_neox != 0;

  // ---- setup: barriers, per-token facts ---------------------------------------------------------------------------
  if (tid == 0) {
    for (int32_t s = 0; s < S; ++s) {
      full[s].init(1);
      empty[s].init(kW);
    }
    for (int i = 0; i < kExchangeBarriers; ++i) sumsq_bar[i].init(uint32_t(n_ranks));
    dev::fence_mbarrier_init();
  }
  if (int32_t(tid) < batch) {
    const int32_t b = int32_t(tid);
    TokenInfo info{};
    const int32_t start = p.kv_indptr[b], end = p.kv_indptr[b + 1];
    const int32_t last = p.kv_last_page_len ? p.kv_last_page_len[b] : p.page_size;
    const int64_t pos64 = p.positions64 ? p.positions64[b] : int64_t(p.positions[b]);
    bool bad = false;
    if (start < 0 || end < start || end > p.n_indices || last < 1 || last > p.page_size) {
      bad = true;
      if (group_id == 0 && rank == 0) detail::set_status(p, kStatusBadPageTable);
    } else if (end == start) {
      bad = true;
      if (group_id == 0 && rank == 0) detail::set_status(p, kStatusBadKvLen);
    }
    if (pos64 < 0 || pos64 > INT32_MAX || (p.cos_sin != nullptr && pos64 >= p.cos_sin_rows)) {
      bad = true;
      if (group_id == 0 && rank == 0) detail::set_status(p, kStatusBadPosition);
    }
    info.old_len = 0;
    info.new_page = -1;
    info.new_offset = 0;
    if (!bad) {
      const int64_t kv_len = int64_t(end - start - 1) * p.page_size + last;
      const int32_t page = p.kv_indices[end - 1];  // the new k/v go to the last position of the last page
      if (page < 0 || page >= p.n_pages) {
        bad = true;
        if (group_id == 0 && rank == 0) detail::set_status(p, kStatusBadPageId);
      } else {
        info.old_len = int32_t(kv_len - 1);
        info.new_page = page;
        info.new_offset = last - 1;
      }
    }
    info.bad = bad ? 1 : 0;
    info.position = bad ? 0 : int32_t(pos64);
    info.page_base = bad ? 0 : start;
    const int32_t n_tiles = (info.old_len + Tr::kKvTile - 1) / Tr::kKvTile;
    const Range tiles = detail::split_range(n_tiles, n_ranks, rank);
    info.tile_begin = tiles.begin;
    info.tile_end = tiles.end;
    tokens[b] = info;
  }
  dev::cluster_sync();  // barriers initialised and token table visible; every CTA of the cluster started

  T* const k_cache =
      static_cast<T*>(p.k_layer_table ? reinterpret_cast<void*>(p.k_layer_table[p.layer_id]) : p.k_pages);
  T* const v_cache =
      static_cast<T*>(p.v_layer_table ? reinterpret_cast<void*>(p.v_layer_table[p.layer_id]) : p.v_pages);

  if (warp == uint32_t(Tr::kProducerWarp)) {
    // ==== producer: the whole load schedule, in consumption order ====================================================
    int32_t item = 0;
    auto acquire = [&](int32_t it) {
      if (it >= S) detail::wait(empty[it % S], uint32_t(((it / S) - 1) & 1), p);
    };
    auto load_weights = [&](const dev::TensorMap& map, int32_t x0, int32_t y, int32_t n_units) {
      acquire(item);
      if (lane == 0) {
        uint8_t* dst = stage_ptr(item);
        dev::Mbarrier& bar = full[item % S];
        bar.arrive_expect_tx(uint32_t(n_units * Tr::kUnitBytes));
        for (int32_t u = 0; u < n_units; ++u)
          dev::tma_load_2d(dst + u * Tr::kUnitBytes, map, x0 + u * Tr::kUnitCols, y, bar);
      }
      dev::syncwarp();
      ++item;
    };
    // QKV: (G+2) row blocks x the K-slice.
    for (int32_t rb = 0; rb < G + 2; ++rb) {
      const int32_t row = detail::qkv_block_row(p, group_id, rb, kHd);
      for (int32_t s = 0; s < qkv_stages_per_block; ++s) {
        const int32_t u0 = s * Tr::kUnitsPerStage;
        const int32_t nu = units.size() - u0 < Tr::kUnitsPerStage ? units.size() - u0 : Tr::kUnitsPerStage;
        load_weights(p.w_qkv_map, col0 + u0 * Tr::kUnitCols, row, nu);
      }
    }
    // KV: this CTA's tiles of every token; one bulk copy per K row and V row. The page indices of the stage
    // kKvLookahead items ahead are loaded while this one is issued (registers, shifted each item), so the index
    // latency never serialises the copies.
    constexpr int kCopiesPerLane = (2 * Tr::kKvTile) / 32;  // 1 (hd 128) or 2 (hd 64)
    constexpr int kKvLookahead = 4;
    struct KvCursor {
      int32_t b, tile;  // b == batch: past the last item
    };
    auto first_kv = [&] {
      KvCursor c{0, batch > 0 ? tokens[0].tile_begin : 0};
      while (c.b < batch && c.tile >= tokens[c.b].tile_end) {
        ++c.b;
        if (c.b < batch) c.tile = tokens[c.b].tile_begin;
      }
      return c;
    };
    auto next_kv = [&](KvCursor c) {
      ++c.tile;
      while (c.b < batch && c.tile >= tokens[c.b].tile_end) {
        ++c.b;
        if (c.b < batch) c.tile = tokens[c.b].tile_begin;
      }
      return c;
    };
    // the cache position of copy c of this lane in tile `tile` of token b (rows past the end: a valid duplicate)
    auto copy_pos = [&](const KvCursor& cur, int c) {
      const int32_t row = (int32_t(lane) + 32 * c) % Tr::kKvTile;
      const int32_t pos = cur.tile * Tr::kKvTile + row;
      return pos < tokens[cur.b].old_len ? pos : cur.tile * Tr::kKvTile;
    };
    auto load_page = [&](const KvCursor& cur, int c) -> int32_t {
      if (cur.b >= batch) return 0;
      return p.kv_indices[tokens[cur.b].page_base + copy_pos(cur, c) / p.page_size];
    };
    KvCursor window[kKvLookahead];
    int32_t pages[kKvLookahead][kCopiesPerLane];
    window[0] = first_kv();
    CF_UNROLL
    for (int d = 0; d < kKvLookahead; ++d) {
      if (d > 0) window[d] = next_kv(window[d - 1]);
      CF_UNROLL
      for (int c = 0; c < kCopiesPerLane; ++c) pages[d][c] = load_page(window[d], c);
    }
    while (window[0].b < batch) {
      const KvCursor cur = window[0];
      const void* src[kCopiesPerLane];
      uint32_t dst_off[kCopiesPerLane];
      CF_UNROLL
      for (int c = 0; c < kCopiesPerLane; ++c) {
        const int32_t copy = int32_t(lane) + 32 * c;  // 0..2*kKvTile-1: K rows, then V rows
        const int32_t row = copy % Tr::kKvTile;
        const int32_t pos = copy_pos(cur, c);
        int32_t page = pages[0][c];
        if (page < 0 || page >= p.n_pages) {
          detail::set_status(p, kStatusBadPageId);
          page = 0;
        }
        const int64_t slot = int64_t(page) * p.page_size + pos % p.page_size;
        const int64_t elem = (slot * p.n_kv_heads + group_id) * kHd;
        const bool is_k = copy < Tr::kKvTile;
        src[c] = is_k ? static_cast<const void*>(k_cache + elem) : static_cast<const void*>(v_cache + elem);
        dst_off[c] = is_k ? uint32_t(row * Tr::kKStride) : uint32_t(Tr::kKvTile * Tr::kKStride + row * Tr::kVStride);
      }
      // shift the window and start the index loads of the item kKvLookahead ahead
      CF_UNROLL
      for (int d = 0; d + 1 < kKvLookahead; ++d) {
        window[d] = window[d + 1];
        CF_UNROLL
        for (int c = 0; c < kCopiesPerLane; ++c) pages[d][c] = pages[d + 1][c];
      }
      window[kKvLookahead - 1] = next_kv(window[kKvLookahead - 2]);
      CF_UNROLL
      for (int c = 0; c < kCopiesPerLane; ++c) pages[kKvLookahead - 1][c] = load_page(window[kKvLookahead - 1], c);

      acquire(item);
      uint8_t* dst = stage_ptr(item);
      dev::Mbarrier& bar = full[item % S];
      if (lane == 0) bar.arrive_expect_tx(uint32_t(Tr::kKvTxBytes));
      dev::syncwarp();
      CF_UNROLL
      for (int c = 0; c < kCopiesPerLane; ++c) dev::bulk_copy_g2s(dst + dst_off[c], src[c], Tr::kRowBytes, bar);
      dev::syncwarp();
      ++item;
    }
    // O: this rank's output rows in head_dim-row blocks (visited in an order rotated by the cluster index) x the
    // group's G*hd columns of Wo.
    for (int32_t i = 0; i < o_blocks; ++i) {
      const int32_t ob = (i + group_id) % o_blocks;
      for (int32_t s = 0; s < wo_stages_per_block; ++s) {
        const int32_t u0 = s * Tr::kUnitsPerStage;
        const int32_t nu = wo_units - u0 < Tr::kUnitsPerStage ? wo_units - u0 : Tr::kUnitsPerStage;
        load_weights(p.w_o_map, group_id * G * kHd + u0 * Tr::kUnitCols, o_begin + ob * kHd, nu);
      }
    }
  } else {
    // ==== consumers ==================================================================================================
    const uint32_t ctid = tid;  // 0..255
    auto consumers_sync = [&] { dev::named_barrier_sync(1, Tr::kConsumerThreads); };
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
    // h + r over this rank's columns, 8 per thread per step.
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
        const dev::Float2 hf = detail::unpack2<T>(hw[k]);
        const dev::Float2 rf = residual ? detail::unpack2<T>(rw[k]) : dev::Float2{0.0f, 0.0f};
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
    detail::wait(*sumsq_bar, 0, p);
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
      for (int32_t i0 = int32_t(ctid); i0 < chunks; i0 += Tr::kConsumerThreads * kInFlight) {
        float v[kInFlight][8];
        dev::U32x4 wv[kInFlight];
        CF_UNROLL
        for (int k = 0; k < kInFlight; ++k) {
          const int32_t i = i0 + k * Tr::kConsumerThreads;
          if (i < chunks) {
            const int32_t b = i * 8 / n_cols, c = i * 8 % n_cols;
            load_sum8(b, col0 + c, v[k]);
            wv[k] = dev::load16(norm_w + col0 + c);
          }
        }
        CF_UNROLL
        for (int k = 0; k < kInFlight; ++k) {
          const int32_t i = i0 + k * Tr::kConsumerThreads;
          if (i < chunks) {
            const int32_t b = i * 8 / n_cols, c = i * 8 % n_cols;
            const uint32_t ww[4] = {wv[k].x, wv[k].y, wv[k].z, wv[k].w};
            const float inv = small->inv_rms[b];
            uint32_t xw[4];
            CF_UNROLL
            for (int e = 0; e < 4; ++e) {
              const dev::Float2 wf = detail::unpack2<T>(ww[e]);
              xw[e] = detail::pack2<T>(v[k][2 * e] * inv * wf.x, v[k][2 * e + 1] * inv * wf.y);
            }
            dev::store16(x_s + uint32_t(b) * p.x_stride + uint32_t(c) * 2, {xw[0], xw[1], xw[2], xw[3]});
          }
        }
      }
    }
    consumers_sync();

    // ---- shared matrix step: acc[row tile][tokens] += W_tile (A, from a weight stage) x act^T (B) ---------------
    // One stage holds nu boxes of 32 columns x kHd rows. Warp: m tile = warp % kMTiles, units of its k-group.
    const int32_t mt = int32_t(warp) % Tr::kMTiles, kg = int32_t(warp) / Tr::kMTiles;
    auto weight_stage_mma = [&](const uint8_t* stage, int32_t nu, const uint8_t* act, uint32_t act_stride,
                                int32_t act_col0, float (&acc)[kBatchTiles][4]) {
      CF_UNROLL
      for (int uu = 0; uu < Tr::kUnitsPerKGroup; ++uu) {
        const int32_t u = kg * Tr::kUnitsPerKGroup + uu;
        if (u < nu) {
          const uint8_t* box = stage + u * Tr::kUnitBytes;
          const dev::U32x4 alo = dev::load16(box + (mt * 16 + g) * 64 + t * 16);
          const dev::U32x4 ahi = dev::load16(box + (mt * 16 + g + 8) * 64 + t * 16);
          const uint32_t a0[4] = {alo.x, ahi.x, alo.y, ahi.y};
          const uint32_t a1[4] = {alo.z, ahi.z, alo.w, ahi.w};
          CF_UNROLL
          for (int nt = 0; nt < kBatchTiles; ++nt) {
            const int32_t token = nt * 8 + int32_t(g);
            dev::U32x4 bx{0, 0, 0, 0};
            if (token < batch)
              bx = dev::load16(act + uint32_t(token) * act_stride + uint32_t(act_col0 + u * Tr::kUnitCols + t * 8) * 2);
            const uint32_t b0[2] = {bx.x, bx.y};
            const uint32_t b1[2] = {bx.z, bx.w};
            E::mma(acc[nt], a0, b0);
            E::mma(acc[nt], a1, b1);
          }
        }
      }
    };
    auto release = [&](int32_t it, int n_arrivals) {
      dev::syncwarp();
      if (lane == 0)
        for (int k = 0; k < n_arrivals; ++k) empty[it % S].arrive();
    };

    // ---- 2. QKV -----------------------------------------------------------------------------------------------------
    int32_t item = 0;
    for (int32_t rb = 0; rb < G + 2; ++rb) {
      float acc[kBatchTiles][4] = {};
      for (int32_t s = 0; s < qkv_stages_per_block; ++s) {
        const int32_t u0 = s * Tr::kUnitsPerStage;
        const int32_t nu = units.size() - u0 < Tr::kUnitsPerStage ? units.size() - u0 : Tr::kUnitsPerStage;
        detail::wait(full[item % S], parity(item), p);
        weight_stage_mma(stage_ptr(item), nu, x_s, p.x_stride, u0 * Tr::kUnitCols, acc);
        release(item, 1);
        ++item;
      }
      // part[kg][row][token] (fp32), row = rb*hd + mt*16 + g (+8), tokens 2t, 2t+1 of each n tile
      CF_UNROLL
      for (int nt = 0; nt < kBatchTiles; ++nt) {
        CF_UNROLL
        for (int h = 0; h < 2; ++h) {
          const int32_t row = rb * kHd + mt * 16 + int32_t(g) + 8 * h;
          CF_UNROLL
          for (int c = 0; c < 2; ++c) {
            const int32_t token = nt * 8 + 2 * int32_t(t) + c;
            if (token < batch) part[(kg * rows_qkv + row) * batch + token] = acc[nt][2 * h + c];
          }
        }
      }
    }
    signal_all(part_bar);  // also orders this CTA's last reads of x_s before peers may overwrite region X

    // Owner of RoPE pairs [pairs.begin, pairs.end): sum the partials of all ranks, bias, RoPE, append, push.
    const int32_t pairs_per_head = kHd / 2;
    const Range pairs = detail::split_range((G + 2) * pairs_per_head, n_ranks, rank);
    detail::wait(*part_bar, 0, p);
    {
      const T* const bias = static_cast<const T*>(p.b_qkv);
      for (int32_t i = int32_t(ctid); i < pairs.size() * batch; i += Tr::kConsumerThreads) {
        const int32_t pair = pairs.begin + i / batch, b = i % batch;
        const int32_t rb = pair / pairs_per_head;
        const detail::RopePair rp = detail::rope_pair(pair % pairs_per_head, kHd, p.rot_dim, neox);
        const int32_t r1 = rb * kHd + rp.d1, r2 = rb * kHd + rp.d2;
        // all N x kKGroups loads in flight, then summed in rank order
        float p1[kMaxClusterSize][Tr::kKGroups], p2[kMaxClusterSize][Tr::kKGroups];
        CF_UNROLL
        for (int r = 0; r < kMaxClusterSize; ++r) {
          if (r < n_ranks) {
            const float* peer = dev::map_shared_rank(part, uint32_t(r));
            CF_UNROLL
            for (int k = 0; k < Tr::kKGroups; ++k) {
              p1[r][k] = peer[(k * rows_qkv + r1) * batch + b];
              p2[r][k] = peer[(k * rows_qkv + r2) * batch + b];
            }
          }
        }
        float v1 = 0.0f, v2 = 0.0f;
        CF_UNROLL
        for (int r = 0; r < kMaxClusterSize; ++r) {
          if (r < n_ranks) {
            CF_UNROLL
            for (int k = 0; k < Tr::kKGroups; ++k) {
              v1 += p1[r][k];
              v2 += p2[r][k];
            }
          }
        }
        if (bias) {
          const int32_t row0 = detail::qkv_block_row(p, group_id, rb, kHd);
          v1 += dev::to_float(bias[row0 + rp.d1]);
          v2 += dev::to_float(bias[row0 + rp.d2]);
        }
        const TokenInfo info = tokens[b];
        if (rb <= G && rp.rotate) {
          const int32_t f = pair % pairs_per_head;  // frequency index (== pair index for rotated pairs)
          float cs, sn;
          if (p.cos_sin) {
            const float* row = p.cos_sin + int64_t(info.position) * p.rot_dim;
            cs = row[f];
            sn = row[p.rot_dim / 2 + f];
          } else {
            const double angle =
                double(info.position) * std::pow(double(p.rope_theta), -2.0 * double(f) / double(p.rot_dim));
            cs = float(std::cos(angle));
            sn = float(std::sin(angle));
          }
          const float a = v1, c = v2;
          v1 = a * cs - c * sn;
          v2 = a * sn + c * cs;
        }
        const uint16_t e1 = detail::float_to_elem<T>(v1), e2 = detail::float_to_elem<T>(v2);
        uint8_t* dst;
        if (rb < G) {
          dst = q_s + uint32_t(b * G + rb) * Tr::kQStride;
        } else {
          dst = (rb == G ? knew_s : vnew_s) + uint32_t(b) * kHd * 2;
          if (info.new_page >= 0) {
            T* cache = rb == G ? k_cache : v_cache;
            const int64_t slot = int64_t(info.new_page) * p.page_size + info.new_offset;
            const int64_t base = (slot * p.n_kv_heads + group_id) * kHd;
            detail::st_u16(cache + base + rp.d1, e1);
            detail::st_u16(cache + base + rp.d2, e2);
          }
        }
        for (int32_t r = 0; r < n_ranks; ++r) {
          uint8_t* peer = dev::map_shared_rank(dst, uint32_t(r));
          detail::st_u16(peer + rp.d1 * 2, e1);
          detail::st_u16(peer + rp.d2 * 2, e2);
        }
      }
    }
    signal_all(qkv_bar);
    // q, k_new, v_new of every token are here; peers are done reading this CTA's partials
    detail::wait(*qkv_bar, 0, p);

    // ---- 3. attention -----------------------------------------------------------------------------------------------
    {
      constexpr int kDBlocks = kHd / 32;  // 16-byte loads of q / K cover 32 head dims (two k16 steps)
      constexpr int kOTiles = kHd / 8;
      const uint32_t scratch_ml = uint32_t(kW * G * kHd);  // scratch: O [w][h][d], then (m, l) [w][h]
      const uint32_t state_stride = uint32_t(kHd + 2);     // state: [b][h] = (m, l, acc[hd])
      for (int32_t b = 0; b < batch; ++b) {
        const TokenInfo info = tokens[b];
        const int32_t n_items = info.tile_end - info.tile_begin;
        // q fragments (A: m = query heads g, g+8; k = head dims, permuted like K's)
        uint32_t qa[kDBlocks][2][4];
        CF_UNROLL
        for (int db = 0; db < kDBlocks; ++db) {
          dev::U32x4 lo{0, 0, 0, 0}, hi{0, 0, 0, 0};
          if (int32_t(g) < G) lo = dev::load16(q_s + uint32_t(b * G + int32_t(g)) * Tr::kQStride + db * 64 + t * 16);
          if (int32_t(g) + 8 < G)
            hi = dev::load16(q_s + uint32_t(b * G + int32_t(g) + 8) * Tr::kQStride + db * 64 + t * 16);
          qa[db][0][0] = lo.x, qa[db][0][1] = hi.x, qa[db][0][2] = lo.y, qa[db][0][3] = hi.y;
          qa[db][1][0] = lo.z, qa[db][1][1] = hi.z, qa[db][1][2] = lo.w, qa[db][1][3] = hi.w;
        }
        float m_run[2] = {detail::kNegInf, detail::kNegInf}, l_run[2] = {0.0f, 0.0f};
        float o[kOTiles][4] = {};
        for (int32_t j = int32_t(warp); j < n_items; j += kW) {
          const int32_t it = item + j;
          detail::wait(full[it % S], parity(it), p);
          const uint8_t* kst = stage_ptr(it);
          const uint8_t* vst = kst + Tr::kKvTile * Tr::kKStride;
          const int32_t valid = info.old_len - (info.tile_begin + j) * Tr::kKvTile;  // >= 1
          // S^T = q K^T: [heads, positions]
          float sc[Tr::kSTiles][4];
          CF_UNROLL
          for (int nt = 0; nt < Tr::kSTiles; ++nt) {
            sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
            const uint8_t* krow = kst + (nt * 8 + g) * Tr::kKStride + t * 16;
            CF_UNROLL
            for (int db = 0; db < kDBlocks; ++db) {
              const dev::U32x4 kb = dev::load16(krow + db * 64);
              const uint32_t b0[2] = {kb.x, kb.y};
              const uint32_t b1[2] = {kb.z, kb.w};
              E::mma(sc[nt], qa[db][0], b0);
              E::mma(sc[nt], qa[db][1], b1);
            }
          }
          // online softmax (log2 domain); rows g (c0, c1) and g+8 (c2, c3)
          float row_max[2] = {detail::kNegInf, detail::kNegInf};
          CF_UNROLL
          for (int nt = 0; nt < Tr::kSTiles; ++nt) {
            CF_UNROLL
            for (int c = 0; c < 4; ++c) {
              const int32_t pos = nt * 8 + 2 * int32_t(t) + (c & 1);
              sc[nt][c] = pos < valid ? sc[nt][c] * p.scale_log2 : detail::kNegInf;
              row_max[c / 2] = std::fmax(row_max[c / 2], sc[nt][c]);
            }
          }
          float corr[2];
          CF_UNROLL
          for (int h = 0; h < 2; ++h) {
            row_max[h] = std::fmax(row_max[h], dev::shfl_xor_sync(dev::kFullMask, row_max[h], 1));
            row_max[h] = std::fmax(row_max[h], dev::shfl_xor_sync(dev::kFullMask, row_max[h], 2));
            const float m_new = std::fmax(m_run[h], row_max[h]);  // finite: position 0 of the tile is valid
            corr[h] = exp2f(m_run[h] - m_new);
            m_run[h] = m_new;
            l_run[h] *= corr[h];
          }
          CF_UNROLL
          for (int nt = 0; nt < Tr::kSTiles; ++nt) {
            CF_UNROLL
            for (int c = 0; c < 4; ++c) {
              sc[nt][c] = exp2f(sc[nt][c] - m_run[c / 2]);
              l_run[c / 2] += sc[nt][c];
            }
          }
          CF_UNROLL
          for (int n = 0; n < kOTiles; ++n) {
            o[n][0] *= corr[0], o[n][1] *= corr[0], o[n][2] *= corr[1], o[n][3] *= corr[1];
          }
          // O += P V: A = P (the score accumulators of two n8 tiles), B = V (two head dims per 32-bit load)
          CF_UNROLL
          for (int ks = 0; ks < Tr::kPvSteps; ++ks) {
            const uint32_t pa[4] = {detail::pack2<T>(sc[2 * ks][0], sc[2 * ks][1]),
                                    detail::pack2<T>(sc[2 * ks][2], sc[2 * ks][3]),
                                    detail::pack2<T>(sc[2 * ks + 1][0], sc[2 * ks + 1][1]),
                                    detail::pack2<T>(sc[2 * ks + 1][2], sc[2 * ks + 1][3])};
            const uint8_t* vrow = vst + (ks * 16 + 2 * t) * Tr::kVStride + g * 4;
            CF_UNROLL
            for (int dp = 0; dp < kHd / 16; ++dp) {
              const uint32_t v0 = detail::ld_u32(vrow + dp * 32);
              const uint32_t v1 = detail::ld_u32(vrow + Tr::kVStride + dp * 32);
              const uint32_t v2 = detail::ld_u32(vrow + 8 * Tr::kVStride + dp * 32);
              const uint32_t v3 = detail::ld_u32(vrow + 9 * Tr::kVStride + dp * 32);
              const uint32_t be[2] = {(v0 & 0xffffu) | (v1 << 16), (v2 & 0xffffu) | (v3 << 16)};
              const uint32_t bo[2] = {(v0 >> 16) | (v1 & 0xffff0000u), (v2 >> 16) | (v3 & 0xffff0000u)};
              E::mma(o[2 * dp], pa, be);
              E::mma(o[2 * dp + 1], pa, bo);
            }
          }
          release(it, kW);
        }
        item += n_items;
        // warp state -> scratch (rows g and g+8 that are real heads)
        CF_UNROLL
        for (int h = 0; h < 2; ++h) {
          l_run[h] += dev::shfl_xor_sync(dev::kFullMask, l_run[h], 1);
          l_run[h] += dev::shfl_xor_sync(dev::kFullMask, l_run[h], 2);
          const int32_t head = int32_t(g) + 8 * h;
          if (head < G) {
            float* od = scratch + (warp * uint32_t(G) + uint32_t(head)) * kHd;
            CF_UNROLL
            for (int dp = 0; dp < kHd / 16; ++dp) {
              const int32_t d0 = dp * 16 + 4 * int32_t(t);
              od[d0 + 0] = o[2 * dp][2 * h];
              od[d0 + 1] = o[2 * dp + 1][2 * h];
              od[d0 + 2] = o[2 * dp][2 * h + 1];
              od[d0 + 3] = o[2 * dp + 1][2 * h + 1];
            }
            if (t == 0) {
              scratch[scratch_ml + 2 * (warp * uint32_t(G) + uint32_t(head))] = m_run[h];
              scratch[scratch_ml + 2 * (warp * uint32_t(G) + uint32_t(head)) + 1] = l_run[h];
            }
          }
        }
        consumers_sync();
        // merge the warps' states in warp order -> state[b][h]
        for (int32_t i = int32_t(ctid); i < G * (kHd + 2); i += Tr::kConsumerThreads) {
          const int32_t head = i / (kHd + 2), e = i % (kHd + 2);  // e: 0 = m, 1 = l, 2.. = acc[d]
          float m_all = detail::kNegInf;
          for (int w = 0; w < kW; ++w) m_all = std::fmax(m_all, scratch[scratch_ml + 2 * (w * G + head)]);
          float value = 0.0f;
          if (e == 0) {
            value = m_all;
          } else if (m_all != detail::kNegInf) {
            for (int w = 0; w < kW; ++w) {
              const float mw = scratch[scratch_ml + 2 * (w * G + head)];
              const float x = e == 1 ? scratch[scratch_ml + 2 * (w * G + head) + 1]
                                     : scratch[(uint32_t(w) * G + uint32_t(head)) * kHd + uint32_t(e - 2)];
              value += x * exp2f(mw - m_all);
            }
          }
          state[(uint32_t(b) * G + uint32_t(head)) * state_stride + uint32_t(e)] = value;
        }
        consumers_sync();  // scratch is rewritten for the next token
      }
      signal_all(state_bar);

      // Owner of (token, head) units: merge the states of all ranks (rank order) and the new token; push to all.
      const Range owned = detail::split_range(batch * G, n_ranks, rank);
      detail::wait(*state_bar, 0, p);
      // new-token scores q . k_new, one warp per unit
      for (int32_t u = owned.begin + int32_t(warp); u < owned.end; u += kW) {
        const int32_t b = u / G, head = u % G;
        float dot = 0.0f;
        for (int32_t d = int32_t(lane) * 2; d < kHd; d += 64) {
          const uint8_t* q_row = q_s + uint32_t(b * G + head) * Tr::kQStride;
          const dev::Float2 qv = detail::unpack2<T>(detail::ld_u32(q_row + d * 2));
          const dev::Float2 kv = detail::unpack2<T>(detail::ld_u32(knew_s + uint32_t(b) * kHd * 2 + d * 2));
          dot += qv.x * kv.x + qv.y * kv.y;
        }
        CF_UNROLL
        for (int m = 16; m >= 1; m >>= 1) dot += dev::shfl_xor_sync(dev::kFullMask, dot, m);
        if (lane == 0) small->new_score[u - owned.begin] = dot * p.scale_log2;
      }
      consumers_sync();
      for (int32_t i = int32_t(ctid); i < owned.size() * kHd; i += Tr::kConsumerThreads) {
        const int32_t u = owned.begin + i / kHd, d = i % kHd;
        const int32_t b = u / G, head = u % G;
        const uint32_t at = (uint32_t(b) * G + uint32_t(head)) * state_stride;
        const float s_new = small->new_score[u - owned.begin];
        float mr[kMaxClusterSize], lr[kMaxClusterSize], ar[kMaxClusterSize];
        CF_UNROLL
        for (int r = 0; r < kMaxClusterSize; ++r) {
          mr[r] = detail::kNegInf, lr[r] = 0.0f, ar[r] = 0.0f;
          if (r < n_ranks) {
            const float* peer = dev::map_shared_rank(state, uint32_t(r));
            mr[r] = peer[at];
            lr[r] = peer[at + 1];
            ar[r] = peer[at + 2 + uint32_t(d)];
          }
        }
        float m_all = s_new;
        CF_UNROLL
        for (int r = 0; r < kMaxClusterSize; ++r) m_all = std::fmax(m_all, mr[r]);
        float l_all = 0.0f, acc = 0.0f;
        CF_UNROLL
        for (int r = 0; r < kMaxClusterSize; ++r) {
          if (mr[r] == detail::kNegInf) continue;  // empty state (or no such rank)
          const float w = exp2f(mr[r] - m_all);
          l_all += lr[r] * w;
          acc += ar[r] * w;
        }
        const float w_new = exp2f(s_new - m_all);
        l_all += w_new;
        acc += w_new * detail::elem_to_float<T>(detail::ld_u16(vnew_s + uint32_t(b * kHd + d) * 2));
        const uint16_t e = detail::float_to_elem<T>(acc / l_all);
        for (int32_t r = 0; r < n_ranks; ++r)
          detail::st_u16(dev::map_shared_rank(attn_s, uint32_t(r)) + uint32_t(b) * p.attn_stride +
                             uint32_t(head * kHd + d) * 2,
                         e);
      }
      signal_all(attn_bar);
      // the attention output of every (token, head) of the group is here; peers are done with `state`
      detail::wait(*attn_bar, 0, p);
    }

    // ---- 4. O projection + cross-group sum --------------------------------------------------------------------------
    {
      T* const out = static_cast<T*>(p.out);
      T* const residual_out = static_cast<T*>(p.residual_out);
      const uint32_t ws_group_stride = uint32_t(p.hidden) * uint32_t(batch);
      // Sums block `ob` of this rank's rows over all groups and writes out / residual_out. Every thread loads a
      // float4 of kGroupsPerChunk groups (all loads in flight at once), the chunk sums are combined in chunk order.
      constexpr int kGroupsPerChunk = 8;
      const int32_t chunks = (p.n_kv_heads + kGroupsPerChunk - 1) / kGroupsPerChunk;
      auto finish_block = [&](int32_t ob) {
        const int32_t r0 = o_begin + ob * kHd;
        const int32_t nr = o_rows - ob * kHd < kHd ? o_rows - ob * kHd : kHd;
        const int32_t n_vec = nr * batch / 4;  // nr is a multiple of 16
        const float* base = p.o_partial + uint32_t(r0) * uint32_t(batch);
        for (int32_t task = int32_t(ctid); task < n_vec * chunks; task += Tr::kConsumerThreads) {
          const int32_t v = task % n_vec, c = task / n_vec;
          dev::U32x4 q[kGroupsPerChunk];
          CF_UNROLL
          for (int k = 0; k < kGroupsPerChunk; ++k) {
            const int32_t grp = c * kGroupsPerChunk + k;
            if (grp < p.n_kv_heads) q[k] = dev::load16(base + uint32_t(grp) * ws_group_stride + uint32_t(v) * 4);
          }
          float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
          CF_UNROLL
          for (int k = 0; k < kGroupsPerChunk; ++k) {
            if (c * kGroupsPerChunk + k < p.n_kv_heads) {
              sum[0] += detail::as_float(q[k].x), sum[1] += detail::as_float(q[k].y);
              sum[2] += detail::as_float(q[k].z), sum[3] += detail::as_float(q[k].w);
            }
          }
          dev::store16(opart + uint32_t(c * n_vec + v) * 4, {detail::as_bits(sum[0]), detail::as_bits(sum[1]),
                                                             detail::as_bits(sum[2]), detail::as_bits(sum[3])});
        }
        consumers_sync();
        for (int32_t i = int32_t(ctid); i < nr * batch; i += Tr::kConsumerThreads) {
          float total = 0.0f;
          for (int32_t c = 0; c < chunks; ++c) total += opart[uint32_t(c * nr * batch + i)];
          const int32_t row = r0 + i / batch, b = i % batch;
          const int64_t at = int64_t(b) * p.hidden + row;
          const float h = dev::to_float(hidden_in[at]);
          const float r = residual ? dev::to_float(residual[at]) : 0.0f;
          residual_out[at] = dev::from_float<T>(h + r);
          out[at] = dev::from_float<T>(tokens[b].bad ? NAN : total);
        }
      };
      // The counter of a block is incremented after its partials are stored; the answer (was this CTA the last of
      // the n_kv_heads groups?) is looked at one block later, so the fence and the atomic's latency overlap the next
      // block's MMAs; the CTA that arrived last sums the block.
      uint32_t pending_old = 0;
      int32_t pending_block = -1;
      auto decide_last = [&] {  // thread 0: the block to finish now (~0u: none)
        uint32_t flag = ~0u;
        if (pending_block >= 0 && pending_old == uint32_t(p.n_kv_heads - 1)) {
          flag = uint32_t(pending_block);
          (void)dev::atomic_exch(p.o_counters + rank * p.o_blocks_max + pending_block, 0u);  // for the next launch
          dev::threadfence();  // acquire: the other groups' partials of the block
        }
        small->last_flag = flag;
      };
      for (int32_t i = 0; i < o_blocks; ++i) {
        const int32_t ob = (i + group_id) % o_blocks;
        const int32_t block_rows = o_rows - ob * kHd < kHd ? o_rows - ob * kHd : kHd;
        const bool active = mt * 16 < block_rows;  // m tiles past the rank's rows are loaded but skipped
        float acc[kBatchTiles][4] = {};
        for (int32_t s = 0; s < wo_stages_per_block; ++s) {
          const int32_t u0 = s * Tr::kUnitsPerStage;
          const int32_t nu = wo_units - u0 < Tr::kUnitsPerStage ? wo_units - u0 : Tr::kUnitsPerStage;
          detail::wait(full[item % S], parity(item), p);
          if (active) weight_stage_mma(stage_ptr(item), nu, attn_s, p.attn_stride, u0 * Tr::kUnitCols, acc);
          release(item, 1);
          ++item;
        }
        // k-group partials -> opart[kg][row][token]; summed in k-group order -> the workspace
        CF_UNROLL
        for (int nt = 0; nt < kBatchTiles; ++nt) {
          CF_UNROLL
          for (int h = 0; h < 2; ++h) {
            const int32_t row = mt * 16 + int32_t(g) + 8 * h;
            CF_UNROLL
            for (int c = 0; c < 2; ++c) {
              const int32_t token = nt * 8 + 2 * int32_t(t) + c;
              if (token < batch) opart[(kg * kHd + row) * batch + token] = acc[nt][2 * h + c];
            }
          }
        }
        consumers_sync();
        const int32_t r0 = o_begin + ob * kHd;
        for (int32_t e = int32_t(ctid); e < block_rows * batch; e += Tr::kConsumerThreads) {
          float sum = 0.0f;
          CF_UNROLL
          for (int k = 0; k < Tr::kKGroups; ++k) sum += opart[k * kHd * batch + e];
          p.o_partial[uint32_t(group_id) * ws_group_stride + uint32_t(r0) * uint32_t(batch) + uint32_t(e)] = sum;
        }
        consumers_sync();  // the block's partials are stored (and opart is free)
        if (ctid == 0) decide_last();
        consumers_sync();
        if (ctid == 0) {
          dev::threadfence();  // release: this CTA's partials before its arrival
          pending_old = dev::atomic_add(p.o_counters + rank * p.o_blocks_max + ob, 1u);
          pending_block = ob;
        }
        if (small->last_flag != ~0u) {
          finish_block(int32_t(small->last_flag));
          consumers_sync();  // opart is rewritten by the next block
        }
      }
      consumers_sync();  // everyone has read the last block's flag
      if (ctid == 0) decide_last();  // waits for the last atomic
      consumers_sync();
      if (small->last_flag != ~0u) finish_block(int32_t(small->last_flag));
    }
  }
  dev::cluster_sync();  // no CTA exits while a peer may still read its shared memory
}

}  // namespace cf::kernels::decoder_attention
