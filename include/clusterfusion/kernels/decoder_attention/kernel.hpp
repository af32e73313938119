// Device code of the fused decoder attention block (docs/attention.md). Written only against the device API, so
// it compiles with nvcc for sm_90a and runs on the CPU emulator.
//
// Grid: n_kv_heads clusters of N CTAs (cluster = one KV head and its G query heads). Each CTA has 8 consumer warps
// and one producer warp. The producer streams the CTA's whole load schedule into a ring of `stages` shared-memory
// stages (full/empty mbarrier pairs); the consumers run the phases in the same order:
//   1. norm       residual add + sum of squares of the CTA's K-slice; all-gather of the partial sums
//                 (ClusterReduceScatter::all_gather); x_s = x (T); then the "go" that lets the producer fill the ring
//   2. QKV        partial q/k/v of the group for the K-slice (tensor cores); reduce-scatter by head (rank order,
//                 ClusterReduceScatter), the owner adds the bias, rotates, appends k/v to the cache; all-gather of
//                 the rounded q/k/v rows
//   3. attention  the CTA's share of every token's cached positions in tiles of 32 (hd 128) / 64 (hd 64) positions,
//                 one ring stage each (a few TMA boxes), each read by the warp that owns its ring stage; states
//                 merged over warps (fixed order), reduce-scattered with prim::SoftmaxMerge by (token, head); the
//                 owner merges the new token and normalises; all-gather of the outputs
//   4. O          the CTA's hidden/N output rows x the group's columns of Wo; partials to the global workspace; then
//                 one release fence and one u32 atomic per row block: the last of the n_kv_heads CTAs of a block
//                 sums the groups in order and writes out
// Cross-CTA steps inside the cluster are the collectives (DSMEM + mbarrier signalling, no cluster barrier after the
// first), run by the consumer warps only, so the producer keeps streaming through every exchange.
#pragma once
#include <cmath>
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/kernels/decoder_attention/kernel_params.hpp"
#include "clusterfusion/kernels/decoder_attention/traits.hpp"
#include "clusterfusion/primitives/cluster_reduce_scatter.hpp"
#include "clusterfusion/primitives/softmax_state.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::decoder_attention {
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

// Every wait is bounded (prim::bounded_wait): after p.wait_budget_ns it records its WaitSite (base + the wait's
// offset) in the timeout status word and raises the CTA's abort flag, after which no wait of the CTA blocks: the
// kernel ends with a status instead of hanging the machine.
CF_DEVICE prim::WaitLimit wait_limit(const KernelParams& p, uint32_t* abort, uint32_t site_base,
                                     uint32_t word = kStatusTimeout) {
  return {reinterpret_cast<uint64_t*>(p.status + word), p.wait_budget_ns, site_base, abort};
}

// SM clock for the optional phase trace (0 on the emulator).
CF_DEVICE uint64_t clock_now() {
#if defined(CF_DEVICE_CUDA)
  return uint64_t(clock64());
#else
  return 0;
#endif
}

// Ownership for the collectives: rank q owns units split_range(units, parts, q), `per` elements each.
struct UnitBounds {
  int32_t units, parts;
  uint32_t per;
  CF_DEVICE uint32_t operator()(uint32_t q) const { return uint32_t(split_range(units, parts, int32_t(q)).begin) * per; }
};
// The same for (token, head) units of attn_s, whose token rows are padded: unit u starts at (u / G) row + (u % G) hd.
struct HeadRowBounds {
  int32_t units, parts, group;
  uint32_t row_elems, head_elems;
  CF_DEVICE uint32_t operator()(uint32_t q) const {
    const int32_t u = split_range(units, parts, int32_t(q)).begin;
    return uint32_t(u / group) * row_elems + uint32_t(u % group) * head_elems;
  }
};
struct Stride {
  uint32_t per;
  CF_DEVICE uint32_t operator()(uint32_t q) const { return q * per; }
};

}  // namespace detail


// ---- the kernel ---------------------------------------------------------------------------------------------------

template <typename T, int kHeadDim, int kBatchTiles>
CF_GLOBAL void CF_LAUNCH_BOUNDS(Traits<kHeadDim>::kThreads, 1)
    decoder_attention_kernel(const CF_GRID_CONSTANT KernelParams p) {
  using Tr = Traits<kHeadDim>;
  using E = detail::Elem<T>;
  using detail::Range;
  using Rs32 = prim::ClusterReduceScatter<0, float>;
  using RsT = prim::ClusterReduceScatter<0, T>;
  constexpr int kHd = kHeadDim;
  constexpr int kW = Tr::kConsumerWarps;
  constexpr int kBatchCap = kBatchTiles * 8;
  (void)kBatchCap;
  static_assert(kMaxStages <= 2 * kW, "K/V stage ownership: at most two ring stages per consumer warp");

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
  auto* tokens = reinterpret_cast<TokenInfo*>(smem + p.off_tokens);
  auto* small = reinterpret_cast<SmallBuffers*>(smem + p.off_small);
  auto* last_flags = reinterpret_cast<uint32_t*>(smem + p.off_flags);
  auto* page_win = reinterpret_cast<int32_t*>(smem + p.off_pages);
  uint8_t* x_s = smem + p.off_x;
  uint8_t* qkv_s = smem + p.off_qkv;  // [token][G + 2 rows: q heads, k, v][kQStride bytes]
  uint8_t* attn_s = smem + p.off_attn;
  float* part = reinterpret_cast<float*>(smem + p.off_part);
  float* scratch = reinterpret_cast<float*>(smem + p.off_scratch);
  float* state = reinterpret_cast<float*>(smem + p.off_state);
  float* opart = reinterpret_cast<float*>(smem + p.off_opart);
  uint8_t* ring = smem + p.off_ring;
  auto stage_ptr = [&](int32_t item) { return ring + uint32_t(item % S) * uint32_t(Tr::kStageBytes); };
  auto parity = [&](int32_t item) { return uint32_t((item / S) & 1); };
  auto trace = [&](TracePoint point) {
    if (p.trace) p.trace[dev::block_idx().x * uint32_t(kTraceSlots) + point] = detail::clock_now();
  };

  // Bounded waits: the ring's (site given per call) and the collectives' (their call index added to the base).
  const prim::WaitLimit ring_limit = detail::wait_limit(p, &small->abort, 0);
  auto wait = [&](dev::Mbarrier& bar, uint32_t par, WaitSite site) {
    return prim::bounded_wait(bar, par, ring_limit, site);
  };
  // Consumer warps read a stage only if every lane's wait succeeded (the mma fragments take all 32 lanes).
  auto wait_warp = [&](dev::Mbarrier& bar, uint32_t par, WaitSite site) {
    return dev::all_sync(dev::kFullMask, wait(bar, par, site));
  };

  // The collectives run on the 8 consumer warps (named barrier kConsumerBarrier); the producer never joins them.
  const prim::ThreadGroup consumer_group = prim::ThreadGroup::range(0, Tr::kConsumerThreads, kConsumerBarrier);
  // fp32: sums of squares, partials, states; T: q/k/v rows, attention outputs
  Rs32 rs32(smem + p.off_rs32, consumer_group, detail::wait_limit(p, &small->abort, kWaitRs32));
  RsT rs16(smem + p.off_rs16, consumer_group, detail::wait_limit(p, &small->abort, kWaitRs16));

  // The K-slice of hidden (QKV inputs) and the output-row slice (O rows) of this rank.
  const Range units = detail::split_range(p.units_total, n_ranks, rank);
  const int32_t col0 = units.begin * Tr::kUnitCols, n_cols = units.size() * Tr::kUnitCols;
  const Range out_units = detail::split_range(p.out_row_units, n_ranks, rank);
  const int32_t o_begin = out_units.begin * 16, o_rows = out_units.size() * 16;
  const int32_t o_blocks = (o_rows + kHd - 1) / kHd;
  const int32_t qkv_stages_per_block = (units.size() + Tr::kUnitsPerStage - 1) / Tr::kUnitsPerStage;
  const int32_t wo_units = G * kHd / Tr::kUnitCols;
  const int32_t wo_stages_per_block = (wo_units + Tr::kUnitsPerStage - 1) / Tr::kUnitsPerStage;
  const int32_t rows_qkv = G + 2;  // rows per token in qkv_s / head blocks of the QKV projection
  const bool neox = p.rope_neox != 0;

  // ---- setup: barriers, per-token facts ---------------------------------------------------------------------------
  if (tid == 0) {
    for (int32_t s = 0; s < S; ++s) {
      full[s].init(1);
      empty[s].init(kW);
    }
    dev::fence_mbarrier_init();
    small->abort = 0;
  }
  if (tid < uint32_t(Tr::kConsumerThreads)) {
    rs32.init();
    rs16.init();
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
  if (tid == 0) trace(kTraceStart);

  T* const k_cache =
      static_cast<T*>(p.k_layer_table ? reinterpret_cast<void*>(p.k_layer_table[p.layer_id]) : p.k_pages);
  T* const v_cache =
      static_cast<T*>(p.v_layer_table ? reinterpret_cast<void*>(p.v_layer_table[p.layer_id]) : p.v_pages);

  int32_t issued_end = 0;  // producer: ring items [0, issued_end) were issued (none after an abort)
  if (warp == uint32_t(Tr::kProducerWarp)) {
    // ==== producer: the whole load schedule, in consumption order ====================================================
    int32_t item = 0;
    bool went = false;  // past the consumers' "go" (after the first p.early_stages items)
    auto go = [&] {
      if (!went) {
        dev::named_barrier_sync(kGoBarrier, Tr::kThreads);
        went = true;
      }
    };
    // Waits until item `it`'s stage is free; true (warp-uniform) if it is to be issued: not after an abort.
    prim::WaitLimit release_limit = detail::wait_limit(p, &small->abort, kWaitRingStage);
    release_limit.consequence = true;  // the consumers are late because something else is
    auto acquire = [&](int32_t it) {
      if (it >= p.early_stages) go();
      if (it >= S) (void)prim::bounded_wait(empty[it % S], uint32_t(((it / S) - 1) & 1), release_limit);
      const bool issue = dev::all_sync(dev::kFullMask, !prim::abort_raised(ring_limit));
      if (issue) issued_end = it + 1;
      return issue;
    };
    auto load_weights = [&](const dev::TensorMap& map, int32_t x0, int32_t y, int32_t n_units) {
      if (acquire(item) && lane == 0) {
        uint8_t* dst = stage_ptr(item);
        dev::Mbarrier& bar = full[item % S];
        bar.arrive_expect_tx(uint32_t(n_units * Tr::kUnitBytes));
        for (int32_t u = 0; u < n_units; ++u)
          dev::tma_load_2d(dst + u * Tr::kUnitBytes, map, x0 + u * Tr::kUnitCols, y, bar);
      }
      dev::syncwarp();
      ++item;
    };

    // Page indices come in windows of 32 (one per lane, handed to the issuing lanes by shuffles), loaded a window
    // ahead, so no K/V tile waits for a dependent global load (under a full HBM pipe that latency is microseconds).
    // The first window of every token is loaded now, before the weight tiles queue up.
    const int32_t P = p.page_size, R = p.kv_box_rows;
    auto page_entry = [&](const TokenInfo& info, int32_t rel_page) -> int32_t {  // kv_indices of a sequence page
      if (info.tile_end <= info.tile_begin || rel_page > (info.old_len - 1) / P) return 0;
      return p.kv_indices[info.page_base + rel_page];
    };
    int32_t first_window[kMaxBatch];
    CF_UNROLL
    for (int b = 0; b < kMaxBatch; ++b) {
      first_window[b] = 0;
      if (b < batch) {
        const TokenInfo info = tokens[b];
        first_window[b] = page_entry(info, info.tile_begin * Tr::kKvTile / P + int32_t(lane));
      }
    }

    // QKV: (G+2) row blocks x the K-slice.
    for (int32_t rb = 0; rb < G + 2; ++rb) {
      const int32_t row = detail::qkv_block_row(p, group_id, rb, kHd);
      for (int32_t s = 0; s < qkv_stages_per_block; ++s) {
        const int32_t u0 = s * Tr::kUnitsPerStage;
        const int32_t nu = units.size() - u0 < Tr::kUnitsPerStage ? units.size() - u0 : Tr::kUnitsPerStage;
        load_weights(p.w_qkv_map, col0 + u0 * Tr::kUnitCols, row, nu);
      }
    }
    if (lane == 0) trace(kTraceProducerQkv);
    CF_UNROLL
    for (int b = 0; b < kMaxBatch; ++b)
      if (b < batch) page_win[b * kPageWindow + int32_t(lane)] = first_window[b];
    dev::syncwarp();

    // KV: this CTA's tiles of every token. A tile is kKvTile positions; its K rows and V rows arrive as boxes of R
    // rows (R divides the page size, so a box never crosses a page), all under one expect-tx of the stage. Boxes
    // past the sequence's end are not issued (their rows are masked by the consumers).
    for (int32_t b = 0; b < batch; ++b) {
      const TokenInfo info = tokens[b];
      if (info.tile_end <= info.tile_begin) continue;
      int32_t window_base = info.tile_begin * Tr::kKvTile / P;  // sequence page of lane 0 of window_a
      int32_t window_a = page_win[b * kPageWindow + int32_t(lane)];
      int32_t window_b = page_entry(info, window_base + kPageWindow + int32_t(lane));
      for (int32_t tile = info.tile_begin; tile < info.tile_end; ++tile) {
        const int32_t pos_begin = tile * Tr::kKvTile;
        const int32_t rows = info.old_len - pos_begin < Tr::kKvTile ? info.old_len - pos_begin : Tr::kKvTile;
        const int32_t n_boxes = (rows + R - 1) / R;
        // A tile spans at most 33 pages (page size >= 2), or exactly one or two whole windows (page size 1), so
        // after this every page it needs is in window_a or window_b.
        while (pos_begin / P - window_base >= kPageWindow) {
          window_a = window_b;
          window_base += kPageWindow;
          window_b = page_entry(info, window_base + kPageWindow + int32_t(lane));
        }
        const bool need_b = (pos_begin + (n_boxes - 1) * R) / P - window_base >= kPageWindow;  // warp-uniform
        if (acquire(item)) {
          uint8_t* dst = stage_ptr(item);
          dev::Mbarrier& bar = full[item % S];
          if (lane == 0) bar.arrive_expect_tx(uint32_t(n_boxes * R * Tr::kRowBytes * 2));
          dev::syncwarp();
          CF_UNROLL
          for (int c = 0; c < Tr::kMaxBoxesPerLane; ++c) {
            const int32_t j = int32_t(lane) + 32 * c;
            const int32_t pos0 = pos_begin + j * R;
            const int32_t idx = j < n_boxes ? pos0 / P - window_base : 0;  // 0 .. 63
            const int32_t from_a = dev::shfl_sync(dev::kFullMask, window_a, idx & (kPageWindow - 1));
            const int32_t from_b = need_b ? dev::shfl_sync(dev::kFullMask, window_b, idx & (kPageWindow - 1)) : 0;
            if (j < n_boxes) {
              int32_t page = idx < kPageWindow ? from_a : from_b;
              if (page < 0 || page >= p.n_pages) {
                detail::set_status(p, kStatusBadPageId);
                page = 0;
              }
              const int64_t slot = int64_t(page) * P + pos0 % P;
              uint8_t* k_dst = dst + uint32_t(j * R * Tr::kRowBytes);
              uint8_t* v_dst = k_dst + uint32_t(Tr::kKvTile * Tr::kRowBytes);
              if (p.kv_use_maps) {
                dev::tma_load_2d(k_dst, p.k_map, group_id * kHd, int32_t(slot), bar);
                dev::tma_load_2d(v_dst, p.v_map, group_id * kHd, int32_t(slot), bar);
              } else {
                const int64_t elem = (slot * p.n_kv_heads + group_id) * kHd;
                dev::bulk_copy_g2s(k_dst, k_cache + elem, Tr::kRowBytes, bar);
                dev::bulk_copy_g2s(v_dst, v_cache + elem, Tr::kRowBytes, bar);
              }
            }
          }
        }
        dev::syncwarp();
        ++item;
      }
    }
    if (lane == 0) trace(kTraceProducerKv);
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
    go();  // (a schedule shorter than early_stages never waited; the consumers' arrival must be matched)
    if (lane == 0) trace(kTraceProducerWo);
  } else {
    // ==== consumers ==================================================================================================
    const uint32_t ctid = tid;  // 0..255
    auto consumers_sync = [&] { dev::named_barrier_sync(kConsumerBarrier, Tr::kConsumerThreads); };
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
      small->sumsq[rank * batch + int32_t(ctid)] = sq;
    }
    // all-gather of the N partial sums per token; every rank adds them in rank order (same bits everywhere). Before
    // each collective that publishes what this thread wrote, a cluster-scope fence (as the hand-written exchanges
    // had; cheap insurance on top of the collective's barrier + release arrive).
    dev::fence_cluster();
    rs32.all_gather(small->sumsq, uint32_t(n_ranks * batch), detail::Stride{uint32_t(batch)});
    if (int32_t(ctid) < batch) {
      float total = 0.0f;
      for (int32_t r = 0; r < n_ranks; ++r) total += small->sumsq[r * batch + int32_t(ctid)];
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
    dev::named_barrier_arrive(kGoBarrier, Tr::kThreads);  // the producer may fill the whole ring now
    if (ctid == 0) trace(kTraceNormDone);

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
    // part[kg][token][row block][hd] (fp32): the unit (token, row block) is what the reduce-scatter distributes.
    const int32_t qkv_units = batch * rows_qkv;
    const int32_t qkv_count = qkv_units * kHd;
    int32_t item = 0;
    for (int32_t rb = 0; rb < G + 2; ++rb) {
      float acc[kBatchTiles][4] = {};
      for (int32_t s = 0; s < qkv_stages_per_block; ++s) {
        const int32_t u0 = s * Tr::kUnitsPerStage;
        const int32_t nu = units.size() - u0 < Tr::kUnitsPerStage ? units.size() - u0 : Tr::kUnitsPerStage;
        if (wait_warp(full[item % S], parity(item), kWaitQkvTile))
          weight_stage_mma(stage_ptr(item), nu, x_s, p.x_stride, u0 * Tr::kUnitCols, acc);
        release(item, 1);
        ++item;
      }
      CF_UNROLL
      for (int nt = 0; nt < kBatchTiles; ++nt) {
        CF_UNROLL
        for (int h = 0; h < 2; ++h) {
          const int32_t row = mt * 16 + int32_t(g) + 8 * h;
          CF_UNROLL
          for (int c = 0; c < 2; ++c) {
            const int32_t token = nt * 8 + 2 * int32_t(t) + c;
            if (token < batch) part[kg * qkv_count + (token * rows_qkv + rb) * kHd + row] = acc[nt][2 * h + c];
          }
        }
      }
    }
    if (ctid == 0) trace(kTraceQkvDone);
    if constexpr (Tr::kKGroups > 1) {  // head_dim 64: two warps per m tile; their partials added in k-group order
      static_assert(Tr::kKGroups == 2, "k-group fold written for two k-groups");
      consumers_sync();
      for (int32_t i = int32_t(ctid); i < qkv_count; i += Tr::kConsumerThreads) part[i] += part[qkv_count + i];
    }
    // Reduce-scatter by unit (rank order, in place): this rank owns whole heads of whole tokens, so both dimensions
    // of every RoPE pair are here. The collective synchronises the consumer warps first (partials complete).
    const Range own = detail::split_range(qkv_units, n_ranks, rank);
    constexpr int32_t kPairs = kHd / 2;
    const int32_t own_pairs = own.size() * kPairs;
    // The owner's inputs from global memory (bias, cos/sin table), loaded before the reduce-scatter so their latency
    // overlaps it: a thread's first kPrefetch pairs (all of them for Llama shapes up to batch 16).
    struct PairInputs {
      float b1, b2, cs, sn;
    };
    const T* const bias = static_cast<const T*>(p.b_qkv);
    auto pair_inputs = [&](int32_t i) {
      PairInputs in{0.0f, 0.0f, 1.0f, 0.0f};
      const int32_t u = own.begin + i / kPairs, pair = i % kPairs;
      const int32_t b = u / rows_qkv, rb = u % rows_qkv;
      const detail::RopePair rp = detail::rope_pair(pair, kHd, p.rot_dim, neox);
      if (bias) {
        const int32_t row0 = detail::qkv_block_row(p, group_id, rb, kHd);
        in.b1 = dev::to_float(bias[row0 + rp.d1]);
        in.b2 = dev::to_float(bias[row0 + rp.d2]);
      }
      if (rb <= G && rp.rotate) {
        const int32_t f = pair;  // frequency index (== pair index for rotated pairs)
        const int32_t position = tokens[b].position;
        if (p.cos_sin) {
          const float* row = p.cos_sin + int64_t(position) * p.rot_dim;
          in.cs = row[f];
          in.sn = row[p.rot_dim / 2 + f];
        } else {
          const double angle =
              double(position) * std::pow(double(p.rope_theta), -2.0 * double(f) / double(p.rot_dim));
          in.cs = float(std::cos(angle));
          in.sn = float(std::sin(angle));
        }
      }
      return in;
    };
    constexpr int kPrefetch = 4;
    PairInputs prefetched[kPrefetch];
    CF_UNROLL
    for (int k = 0; k < kPrefetch; ++k) {
      const int32_t i = int32_t(ctid) + k * Tr::kConsumerThreads;
      prefetched[k] = i < own_pairs ? pair_inputs(i) : PairInputs{0.0f, 0.0f, 1.0f, 0.0f};
    }
    dev::fence_cluster();
    rs32.reduce_scatter(part, part + own.begin * kHd, uint32_t(qkv_count),
                        detail::UnitBounds{qkv_units, n_ranks, uint32_t(kHd)}, prim::Sum{});
    // Owner of units [own.begin, own.end): bias, RoPE (rotation with no effect on v and unrotated pairs: cs 1, sn 0),
    // round, write the qkv_s row, append k / v to the cache.
    auto finish_pair = [&](int32_t i, const PairInputs& in) {
      const int32_t u = own.begin + i / kPairs, pair = i % kPairs;
      const int32_t b = u / rows_qkv, rb = u % rows_qkv;
      const detail::RopePair rp = detail::rope_pair(pair, kHd, p.rot_dim, neox);
      const float a = part[u * kHd + rp.d1] + in.b1, c = part[u * kHd + rp.d2] + in.b2;
      const float v1 = a * in.cs - c * in.sn, v2 = a * in.sn + c * in.cs;
      const uint16_t e1 = detail::float_to_elem<T>(v1), e2 = detail::float_to_elem<T>(v2);
      uint8_t* dst = qkv_s + uint32_t(u) * Tr::kQStride;
      detail::st_u16(dst + rp.d1 * 2, e1);
      detail::st_u16(dst + rp.d2 * 2, e2);
      const TokenInfo& info = tokens[b];
      if (rb >= G && info.new_page >= 0) {  // k or v: append to the cache (the values every rank attends with)
        T* cache = rb == G ? k_cache : v_cache;
        const int64_t slot = int64_t(info.new_page) * p.page_size + info.new_offset;
        const int64_t base = (slot * p.n_kv_heads + group_id) * kHd;
        detail::st_u16(cache + base + rp.d1, e1);
        detail::st_u16(cache + base + rp.d2, e2);
      }
    };
    CF_UNROLL
    for (int k = 0; k < kPrefetch; ++k) {
      const int32_t i = int32_t(ctid) + k * Tr::kConsumerThreads;
      if (i < own_pairs) finish_pair(i, prefetched[k]);
    }
    for (int32_t i = int32_t(ctid) + kPrefetch * Tr::kConsumerThreads; i < own_pairs; i += Tr::kConsumerThreads)
      finish_pair(i, pair_inputs(i));
    // All-gather of the rounded q/k/v rows. Peers' arrivals here also prove they finished reading this CTA's
    // partials (their reduce-scatter came first), so region P may be rewritten after it (softmax scratch).
    dev::fence_cluster();
    rs16.all_gather(reinterpret_cast<T*>(qkv_s), uint32_t(qkv_units * (Tr::kQStride / 2)),
                    detail::UnitBounds{qkv_units, n_ranks, uint32_t(Tr::kQStride / 2)});
    if (ctid == 0) trace(kTraceQkvGathered);

    // ---- 3. attention -----------------------------------------------------------------------------------------------
    {
      constexpr int kDBlocks = kHd / 32;     // 16-byte loads of q / K cover 32 head dims (two k16 steps)
      constexpr int kOTiles = kHd / 8;       // n8 tiles of the output (head dims, permuted: see below)
      constexpr int kColBlocks = kHd / 64;   // 16-byte V loads of 8 lanes cover 64 head dims
      constexpr int kSF = Tr::kStateFloats;  // SoftmaxState record: m, l, pad, pad, acc[hd]
      for (int32_t b = 0; b < batch; ++b) {
        const TokenInfo info = tokens[b];
        const int32_t n_items = info.tile_end - info.tile_begin;
        // q rows g, g+8 of the token (A fragments: m = query heads, k = head dims permuted like K's), read per
        // 32-dim block inside every tile (8 live registers instead of 32)
        const uint8_t* const q_lo = qkv_s + uint32_t(b * rows_qkv + int32_t(g)) * Tr::kQStride + t * 16;
        const uint8_t* const q_hi = q_lo + 8 * Tr::kQStride;
        const bool has_lo = int32_t(g) < G, has_hi = int32_t(g) + 8 < G;
        float m_run[2] = {detail::kNegInf, detail::kNegInf}, l_run[2] = {0.0f, 0.0f};
        // o[cb * 8 + jj]: the P V accumulators; lane group g loads V columns cb*64 + 8g .. +7 (one 16-byte load per
        // row), so n index g of n tile cb*8 + jj is head dim cb*64 + 8g + jj: accumulator (t, c) holds head dim
        // cb*64 + 8(2t + c) + jj.
        float o[kOTiles][4] = {};
        // Stage ownership: every K/V item of ring stage s is consumed by warp s % kW (warps w < S - kW own two
        // stages), in item order. The previous use of a stage (item it - S) was then waited for and released by this
        // same warp, so its full barrier is one phase behind or complete and the parity wait cannot pass on a stale
        // phase (round-robin over the warps gave item it - S to another warp whenever S % kW != 0: a wait two phases
        // early, a read of an in-flight tile). No barrier per item; a stage is refilled as soon as its owner is done,
        // so S - 1 stages stay in flight while one is read, as before.
        const int32_t stage0 = item % S, w = int32_t(warp);
        int32_t next_a = w < S ? (w - stage0 + S) % S : n_items;                // this token's items in stage w
        int32_t next_b = w + kW < S ? (w + kW - stage0 + S) % S : n_items;      // ... in stage w + kW
        for (;;) {
          const int32_t j = next_a < next_b ? next_a : next_b;
          if (j >= n_items) break;
          if (j == next_a) next_a += S;
          else next_b += S;
          const int32_t it = item + j;
          if (!wait_warp(full[it % S], parity(it), kWaitKvTile)) {  // aborting: the tile may never have landed
            release(it, kW);
            continue;
          }
          const uint8_t* kst = stage_ptr(it);
          const uint8_t* vst = kst + Tr::kKvTile * Tr::kRowBytes;
          const int32_t valid = info.old_len - (info.tile_begin + j) * Tr::kKvTile;  // >= 1 rows hold data
          // S^T = q K^T: [heads, positions]
          float sc[Tr::kSTiles][4] = {};
          CF_UNROLL
          for (int db = 0; db < kDBlocks; ++db) {
            const dev::U32x4 lo = has_lo ? dev::load16(q_lo + db * 64) : dev::U32x4{0, 0, 0, 0};
            const dev::U32x4 hi = has_hi ? dev::load16(q_hi + db * 64) : dev::U32x4{0, 0, 0, 0};
            const uint32_t qa0[4] = {lo.x, hi.x, lo.y, hi.y};
            const uint32_t qa1[4] = {lo.z, hi.z, lo.w, hi.w};
            CF_UNROLL
            for (int nt = 0; nt < Tr::kSTiles; ++nt) {
              const dev::U32x4 kb = dev::load16(kst + (nt * 8 + g) * Tr::kRowBytes + db * 64 + t * 16);
              const uint32_t b0[2] = {kb.x, kb.y};
              const uint32_t b1[2] = {kb.z, kb.w};
              E::mma(sc[nt], qa0, b0);
              E::mma(sc[nt], qa1, b1);
            }
          }
          // online softmax over the tile (log2 domain); rows g (c0, c1) and g+8 (c2, c3)
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
          // O += P V: A = P (the score accumulators of two n8 tiles), B = V rows 2t, 2t+1, 2t+8, 2t+9 of the k16
          // step, 8 consecutive head dims per 16-byte load; rows past the valid ones are zero (never stale data).
          CF_UNROLL
          for (int ks = 0; ks < Tr::kPvSteps; ++ks) {
            const uint32_t pa[4] = {detail::pack2<T>(sc[2 * ks][0], sc[2 * ks][1]),
                                    detail::pack2<T>(sc[2 * ks][2], sc[2 * ks][3]),
                                    detail::pack2<T>(sc[2 * ks + 1][0], sc[2 * ks + 1][1]),
                                    detail::pack2<T>(sc[2 * ks + 1][2], sc[2 * ks + 1][3])};
            const int32_t r0 = ks * 16 + 2 * int32_t(t);
            const int32_t vrows[4] = {r0, r0 + 1, r0 + 8, r0 + 9};
            CF_UNROLL
            for (int cb = 0; cb < kColBlocks; ++cb) {
              dev::U32x4 vw[4];
              CF_UNROLL
              for (int k = 0; k < 4; ++k) {
                vw[k] = dev::U32x4{0, 0, 0, 0};
                if (vrows[k] < valid) vw[k] = dev::load16(vst + vrows[k] * Tr::kRowBytes + cb * 128 + g * 16);
              }
              const uint32_t w0[4] = {vw[0].x, vw[0].y, vw[0].z, vw[0].w};
              const uint32_t w1[4] = {vw[1].x, vw[1].y, vw[1].z, vw[1].w};
              const uint32_t w2[4] = {vw[2].x, vw[2].y, vw[2].z, vw[2].w};
              const uint32_t w3[4] = {vw[3].x, vw[3].y, vw[3].z, vw[3].w};
              CF_UNROLL
              for (int k = 0; k < 4; ++k) {
                const uint32_t be[2] = {(w0[k] & 0xffffu) | (w1[k] << 16), (w2[k] & 0xffffu) | (w3[k] << 16)};
                const uint32_t bo[2] = {(w0[k] >> 16) | (w1[k] & 0xffff0000u), (w2[k] >> 16) | (w3[k] & 0xffff0000u)};
                E::mma(o[cb * 8 + 2 * k], pa, be);
                E::mma(o[cb * 8 + 2 * k + 1], pa, bo);
              }
            }
          }
          release(it, kW);
        }
        item += n_items;
        // warp state -> scratch records [warp][head] (rows g and g+8 that are real heads), head dims un-permuted
        CF_UNROLL
        for (int h = 0; h < 2; ++h) {
          l_run[h] += dev::shfl_xor_sync(dev::kFullMask, l_run[h], 1);
          l_run[h] += dev::shfl_xor_sync(dev::kFullMask, l_run[h], 2);
          const int32_t head = int32_t(g) + 8 * h;
          if (head < G) {
            float* rec = scratch + (warp * uint32_t(G) + uint32_t(head)) * kSF;
            CF_UNROLL
            for (int n = 0; n < kOTiles; ++n) {
              const int32_t d0 = (n / 8) * 64 + 16 * int32_t(t) + (n % 8);  // dims of (t, c = 0) and (t, c = 1)
              rec[4 + d0] = o[n][2 * h];
              rec[4 + d0 + 8] = o[n][2 * h + 1];
            }
            if (t == 0) {
              rec[0] = m_run[h];
              rec[1] = l_run[h];
            }
          }
        }
        consumers_sync();
        // merge the warps' states in warp order -> state[b][h] (a prim::SoftmaxState record)
        for (int32_t i = int32_t(ctid); i < G * kSF; i += Tr::kConsumerThreads) {
          const int32_t head = i / kSF, e = i % kSF;  // e: 0 = m, 1 = l, 2, 3 = pad, 4.. = acc[d]
          float m_all = detail::kNegInf;
          for (int w = 0; w < kW; ++w) m_all = std::fmax(m_all, scratch[(w * G + head) * kSF]);
          float value = 0.0f;
          if (e == 0) {
            value = m_all;
          } else if (e != 2 && e != 3 && m_all != detail::kNegInf) {
            for (int w = 0; w < kW; ++w) {
              const float* rec = scratch + (w * G + head) * kSF;
              value += rec[e] * exp2f(rec[0] - m_all);
            }
          }
          state[(b * G + head) * kSF + e] = value;
        }
        consumers_sync();  // scratch is rewritten for the next token
      }
      if (ctid == 0) trace(kTraceAttnDone);

      // Reduce-scatter of the states with the softmax merge (rank order) into this rank's (token, head) units
      // (scratch); the owner adds the new token's own score and value, normalises, rounds into attn_s, then the
      // all-gather gives every rank the group's outputs.
      const int32_t attn_units = batch * G;
      const Range owned = detail::split_range(attn_units, n_ranks, rank);
      float* merged = scratch;
      dev::fence_cluster();
      rs32.reduce_scatter(state, merged, uint32_t(attn_units * kSF), detail::UnitBounds{attn_units, n_ranks, uint32_t(kSF)},
                          prim::SoftmaxMerge<uint32_t(kHd)>{});
      // new-token scores q . k_new, one warp per unit
      for (int32_t u = owned.begin + int32_t(warp); u < owned.end; u += kW) {
        const int32_t b = u / G, head = u % G;
        const uint8_t* q_row = qkv_s + uint32_t(b * rows_qkv + head) * Tr::kQStride;
        const uint8_t* k_row = qkv_s + uint32_t(b * rows_qkv + G) * Tr::kQStride;
        float dot = 0.0f;
        for (int32_t d = int32_t(lane) * 2; d < kHd; d += 64) {
          const dev::Float2 qv = detail::unpack2<T>(detail::ld_u32(q_row + d * 2));
          const dev::Float2 kv = detail::unpack2<T>(detail::ld_u32(k_row + d * 2));
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
        const float* rec = merged + (u - owned.begin) * kSF;
        const float s_new = small->new_score[u - owned.begin];
        const float m_old = rec[0];
        const float m_all = std::fmax(m_old, s_new);
        const float w_old = m_old == detail::kNegInf ? 0.0f : exp2f(m_old - m_all);  // empty state: no cache
        const float w_new = exp2f(s_new - m_all);
        const float v_new =
            detail::elem_to_float<T>(detail::ld_u16(qkv_s + uint32_t(b * rows_qkv + G + 1) * Tr::kQStride + d * 2));
        const float l_all = rec[1] * w_old + w_new;
        const float acc = rec[4 + d] * w_old + w_new * v_new;
        detail::st_u16(attn_s + uint32_t(b) * p.attn_stride + uint32_t(head * kHd + d) * 2,
                       detail::float_to_elem<T>(acc / l_all));
      }
      // Peers' arrivals here also prove they finished reading this CTA's states: region P is free afterwards.
      dev::fence_cluster();
      rs16.all_gather(reinterpret_cast<T*>(attn_s), uint32_t(batch) * (p.attn_stride / 2),
                      detail::HeadRowBounds{attn_units, n_ranks, G, p.attn_stride / 2, uint32_t(kHd)});
    }
    if (ctid == 0) trace(kTraceAttnGathered);

    // ---- 4. O projection + cross-group sum --------------------------------------------------------------------------
    {
      T* const out = static_cast<T*>(p.out);
      T* const residual_out = static_cast<T*>(p.residual_out);
      const uint32_t ws_group_stride = uint32_t(p.hidden) * uint32_t(batch);
      float* const ws_group = p.o_partial + uint32_t(group_id) * ws_group_stride;
      // Sums every block this CTA completed (last_flags) over all groups and writes out / residual_out, all blocks in
      // one pass with no barrier: a task is one float4 of a block's [rows][batch] partials; its thread loads the
      // hidden / residual elements it will write, then per chunk the float4s of kGroupsPerChunk groups (all in
      // flight), and adds the chunk sums in chunk order (fixed order: the same bits whoever finishes the block).
      // Tasks are dealt to the consumer threads in turn across the blocks, so the latency is a few round trips
      // (chunks, and the tasks per thread) for all flagged blocks together, not two per block.
      constexpr int kGroupsPerChunk = 8;
      const int32_t chunks = (p.n_kv_heads + kGroupsPerChunk - 1) / kGroupsPerChunk;
      auto finish_task = [&](int32_t r0, int32_t v) {
        const float* part_v = p.o_partial + uint32_t(r0) * uint32_t(batch) + uint32_t(v) * 4;
        int64_t at[4];
        float h[4], r[4], total[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        CF_UNROLL
        for (int e = 0; e < 4; ++e) {
          const int32_t i = 4 * v + e, b = i % batch;
          at[e] = int64_t(b) * p.hidden + r0 + i / batch;
          h[e] = dev::to_float(hidden_in[at[e]]);
          r[e] = residual ? dev::to_float(residual[at[e]]) : 0.0f;
        }
        for (int32_t c = 0; c < chunks; ++c) {
          dev::U32x4 q[kGroupsPerChunk];
          CF_UNROLL
          for (int k = 0; k < kGroupsPerChunk; ++k) {
            const int32_t grp = c * kGroupsPerChunk + k;
            if (grp < p.n_kv_heads) q[k] = dev::load16(part_v + uint32_t(grp) * ws_group_stride);
          }
          float sum[4] = {0.0f, 0.0f, 0.0f, 0.0f};
          CF_UNROLL
          for (int k = 0; k < kGroupsPerChunk; ++k) {
            if (c * kGroupsPerChunk + k < p.n_kv_heads) {
              sum[0] += detail::as_float(q[k].x), sum[1] += detail::as_float(q[k].y);
              sum[2] += detail::as_float(q[k].z), sum[3] += detail::as_float(q[k].w);
            }
          }
          CF_UNROLL
          for (int e = 0; e < 4; ++e) total[e] += sum[e];
        }
        CF_UNROLL
        for (int e = 0; e < 4; ++e) {
          residual_out[at[e]] = dev::from_float<T>(h[e] + r[e]);
          out[at[e]] = dev::from_float<T>(tokens[(4 * v + e) % batch].bad ? NAN : total[e]);
        }
      };
      auto finish_flagged_blocks = [&] {
        int32_t first = 0;  // task index of the block's first float4, counted over the flagged blocks
        for (int32_t ob = 0; ob < o_blocks; ++ob) {
          if (!last_flags[ob]) continue;
          const int32_t nr = o_rows - ob * kHd < kHd ? o_rows - ob * kHd : kHd;
          const int32_t n_vec = nr * batch / 4;  // nr is a multiple of 16
          const int32_t start = ((int32_t(ctid) - first) % Tr::kConsumerThreads + Tr::kConsumerThreads) %
                                Tr::kConsumerThreads;
          for (int32_t v = start; v < n_vec; v += Tr::kConsumerThreads) finish_task(o_begin + ob * kHd, v);
          first += n_vec;
        }
      };
      // Every block's partial goes to the workspace as soon as its MMAs are done (plain stores, nothing waits for
      // them); the arrivals come after the last block: one release fence and one atomic per block, all blocks at
      // once, instead of a fence round trip (microseconds under a full HBM pipe) per block.
      for (int32_t i = 0; i < o_blocks; ++i) {
        const int32_t ob = (i + group_id) % o_blocks;
        const int32_t block_rows = o_rows - ob * kHd < kHd ? o_rows - ob * kHd : kHd;
        const bool active = mt * 16 < block_rows;  // m tiles past the rank's rows are loaded but skipped
        float acc[kBatchTiles][4] = {};
        for (int32_t s = 0; s < wo_stages_per_block; ++s) {
          const int32_t u0 = s * Tr::kUnitsPerStage;
          const int32_t nu = wo_units - u0 < Tr::kUnitsPerStage ? wo_units - u0 : Tr::kUnitsPerStage;
          if (wait_warp(full[item % S], parity(item), kWaitWoTile) && active)
            weight_stage_mma(stage_ptr(item), nu, attn_s, p.attn_stride, u0 * Tr::kUnitCols, acc);
          release(item, 1);
          ++item;
        }
        const int32_t r0 = o_begin + ob * kHd;
        if constexpr (Tr::kKGroups == 1) {  // each warp holds complete sums of its m tile: store them directly
          CF_UNROLL
          for (int nt = 0; nt < kBatchTiles; ++nt) {
            CF_UNROLL
            for (int h = 0; h < 2; ++h) {
              const int32_t row = mt * 16 + int32_t(g) + 8 * h;
              CF_UNROLL
              for (int c = 0; c < 2; ++c) {
                const int32_t token = nt * 8 + 2 * int32_t(t) + c;
                if (token < batch && row < block_rows)
                  ws_group[uint32_t(r0 + row) * uint32_t(batch) + uint32_t(token)] = acc[nt][2 * h + c];
              }
            }
          }
        } else {  // k-group partials -> opart[kg][row][token]; summed in k-group order -> the workspace
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
          for (int32_t e = int32_t(ctid); e < block_rows * batch; e += Tr::kConsumerThreads) {
            float sum = 0.0f;
            CF_UNROLL
            for (int k = 0; k < Tr::kKGroups; ++k) sum += opart[k * kHd * batch + e];
            ws_group[uint32_t(r0) * uint32_t(batch) + uint32_t(e)] = sum;
          }
          consumers_sync();  // opart is rewritten by the next block
        }
      }
      consumers_sync();  // every partial of this CTA is stored (the fences below are cumulative over them)
      if (ctid == 0) trace(kTraceOLoopDone);
      for (int32_t ob = int32_t(ctid); ob < o_blocks; ob += Tr::kConsumerThreads) {
        uint32_t* counter = p.o_counters + rank * p.o_blocks_max + ob;
        dev::threadfence();  // release: this CTA's partials before its arrival
        const uint32_t before = dev::atomic_add(counter, 1u);
        const bool last = before == uint32_t(p.n_kv_heads - 1);
        if (last) {
          (void)dev::atomic_exch(counter, 0u);  // for the next launch
          dev::threadfence();                   // acquire: the other groups' partials of the block
        }
        last_flags[ob] = last ? 1u : 0u;
      }
      consumers_sync();
      finish_flagged_blocks();
    }
  }
  if (tid == 0) trace(kTraceEnd);
  // After an expired wait: every thread is past its last wait (nothing more is issued); the producer waits until the
  // copies it issued have landed, so none writes into this CTA's shared memory after it ends (a drain that expires
  // too is reported on its own status word, fatal on the host). One block barrier per launch otherwise.
  dev::block_sync();
  if (warp == uint32_t(Tr::kProducerWarp) && lane == 0 && prim::abort_raised(ring_limit)) {
    (void)prim::drain_ring(full, S, issued_end, detail::wait_limit(p, nullptr, kWaitDrain, kStatusDrainTimeout));
  }
  dev::cluster_sync();  // no CTA exits while a peer may still read its shared memory
}

}  // namespace cf::kernels::decoder_attention
