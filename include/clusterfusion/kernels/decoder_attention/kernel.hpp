// Device code of the fused decoder attention block (docs/attention.md), a phase list on the pipeline layer
// (docs/pipeline.md). Written only against the device API, so it compiles with nvcc for sm_90a and runs on the CPU
// emulator.
//
// Grid: n_kv_heads clusters of N CTAs (cluster = one KV head and its G query heads). Each CTA has 8 consumer warps
// and one producer warp. The producer streams the CTA's whole load schedule into the ring (weight tiles as UnitStage
// items, K/V tiles of kKvTile positions); the consumers run the phases in the same order:
//   1. norm       residual add + sum of squares of the CTA's K-slice; all-gather of the partial sums; x_s = x; then
//                 the "go" that lets the producer fill the whole ring
//   2. QKV        partial q/k/v of the group for the K-slice (tensor cores); reduce-scatter by head (rank order),
//                 the owner adds the bias, rotates, appends k/v to the cache; all-gather of the rounded q/k/v rows
//   3. attention  the CTA's share of every token's cached positions, one ring item per K/V tile, each read by the
//                 warp that owns its stage (pipeline::OwnedRun); states merged over warps (fixed order),
//                 reduce-scattered with prim::SoftmaxMerge by (token, head); the owner merges the new token and
//                 normalises; all-gather of the outputs
//   4. O          the CTA's hidden/N output rows x the group's columns of Wo; partials to the global workspace; then
//                 one release fence and one u32 atomic per row block: the last of the n_kv_heads CTAs of a block
//                 sums the groups in order and writes out (pipeline/cross_cta_sum.hpp)
// Cross-CTA steps inside the cluster are the collective core's calls (prim::ClusterReduceScatter: DSMEM + mbarrier
// signalling, no cluster barrier after the first), run by the consumer warps only, so the producer keeps streaming
// through every exchange.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/kernels/decoder_attention/kernel_params.hpp"
#include "clusterfusion/kernels/decoder_attention/traits.hpp"
#include "clusterfusion/pipeline/cross_cta_sum.hpp"
#include "clusterfusion/pipeline/cta.hpp"
#include "clusterfusion/pipeline/mma.hpp"
#include "clusterfusion/pipeline/norm_prologue.hpp"
#include "clusterfusion/pipeline/ring.hpp"
#include "clusterfusion/pipeline/trace.hpp"
#include "clusterfusion/pipeline/weight_stream.hpp"
#include "clusterfusion/primitives/cluster_reduce_scatter.hpp"
#include "clusterfusion/primitives/element.hpp"
#include "clusterfusion/primitives/softmax_state.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::decoder_attention {
namespace dev = cf::dev;

namespace detail {

// The RoPE pair j (0 <= j < hd/2) of a head: the two dimensions it combines, whether it rotates.
struct RopePair {
  int32_t d1, d2, rotate;
};
CF_DEVICE RopePair rope_pair(int32_t j, int32_t rot_dim, bool neox) {
  const int32_t half = rot_dim / 2;
  if (neox) {
    if (j < half) return {j, j + half, 1};
    const int32_t k = j - half;  // dimensions past rot_dim pass through, in consecutive pairs
    return {rot_dim + 2 * k, rot_dim + 2 * k + 1, 0};
  }
  return {2 * j, 2 * j + 1, j < half ? 1 : 0};
}

// First row of Wqkv of row block rb (0..G-1: query heads of the group, G: k, G+1: v).
CF_DEVICE int32_t qkv_block_row(const KernelParams& p, int32_t group_id, int32_t rb, int32_t head_dim) {
  if (rb < p.group) return (group_id * p.group + rb) * head_dim;
  if (rb == p.group) return p.q_dim + group_id * head_dim;
  return p.q_dim + p.kv_dim + group_id * head_dim;
}

// Ownership for the collectives: rank q owns units split_range(units, parts, q), `per` elements each.
struct UnitBounds {
  int32_t units, parts;
  uint32_t per;
  CF_DEVICE uint32_t operator()(uint32_t q) const {
    return uint32_t(pl::split_range(units, parts, int32_t(q)).begin) * per;
  }
};
// The same for (token, head) units of attn_s, whose token rows are padded: unit u starts at (u / G) row + (u % G) hd.
struct HeadRowBounds {
  int32_t units, parts, group;
  uint32_t row_elems, head_elems;
  CF_DEVICE uint32_t operator()(uint32_t q) const {
    const int32_t u = pl::split_range(units, parts, int32_t(q)).begin;
    return uint32_t(u / group) * row_elems + uint32_t(u % group) * head_elems;
  }
};

}  // namespace detail

// One CTA of the kernel: ids, ring and shared memory (pl::StreamCta), its buffers, the work split; the phases are its
// members.
template <typename TW, typename TA, typename TKV, int kHeadDim, int kBatchTiles>
struct AttentionCta : pl::StreamCta<KernelParams, Barriers, SmallBuffers> {
  static_assert(std::is_same_v<TKV, TA>, "the K/V tiles are MMA operands beside q and P: the activations' type");
  using Tr = Traits<kHeadDim>;
  using Rs32 = prim::ClusterReduceScatter<0, float>;  // sums of squares, partials, states
  using RsA = prim::ClusterReduceScatter<0, TA>;      // q/k/v rows, attention outputs
  using Run = pl::OwnedRun<pl::kStageBytes, pl::kConsumerWarps>;
  static constexpr int kHd = kHeadDim, kW = Tr::kConsumerWarps, kSF = Tr::kStateFloats, kPairs = kHeadDim / 2;
  static_assert(kMaxStages <= 2 * kW, "K/V stage ownership: at most two ring stages per consumer warp");

  const uint32_t g = lane / 4, t = lane % 4;  // mma fragment coordinates
  const int32_t rank = int32_t(dev::block_rank_in_cluster()), n_ranks = int32_t(dev::cluster_size());
  const int32_t group_id = int32_t(dev::cluster_idx().x);
  const int32_t G = p.group, batch = p.batch, rows_qkv = p.group + 2;  // rows per token: q heads, k, v
  TokenInfo* const tokens = p.layout.tokens.in(smem);
  uint8_t* const qkv_s = p.layout.qkv.in(smem);  // [token][G + 2 rows: q heads, k, v][kQStride bytes]
  uint8_t* const attn_s = p.layout.attn.in(smem);
  float* const scratch = p.layout.scratch.in(smem);
  // The K-slice of hidden (QKV inputs) and the output-row slice (O rows) of this rank.
  const pl::Range units = pl::split_range(p.units_total, n_ranks, rank);
  const int32_t col0 = units.begin * Tr::kUnitCols, n_cols = units.size() * Tr::kUnitCols;
  const pl::Range out_units = pl::split_range(p.out_row_units, n_ranks, rank);
  const int32_t o_begin = out_units.begin * pl::kTileRows, o_rows = out_units.size() * pl::kTileRows;
  const int32_t o_blocks = (o_rows + kHd - 1) / kHd;
  const int32_t qkv_stages_per_block = pl::ceil_div(units.size(), Tr::kUnitsPerStage);
  const int32_t wo_units = p.group * kHd / Tr::kUnitCols;
  const int32_t wo_stages_per_block = pl::ceil_div(wo_units, Tr::kUnitsPerStage);
  TKV* const k_cache =
      static_cast<TKV*>(p.k_layer_table ? reinterpret_cast<void*>(p.k_layer_table[p.layer_id]) : p.k_pages);
  TKV* const v_cache =
      static_cast<TKV*>(p.v_layer_table ? reinterpret_cast<void*>(p.v_layer_table[p.layer_id]) : p.v_pages);

  CF_DEVICE explicit AttentionCta(const KernelParams& params) : StreamCta(params, kStatusTimeout) {}

  CF_DEVICE void trace(TracePoint point) const { pl::trace_point(p.trace, kTraceSlots, point); }
  CF_DEVICE void set_status(uint32_t bit) const {
    if (p.status[bit] == 0) (void)dev::atomic_exch(&p.status[bit], 1u);
  }
  // The consumer warps' collectives (one object each for all its calls: it counts them; their wait codes are the
  // base plus the call index).
  CF_DEVICE Rs32 collectives32() const { return Rs32(bars->rs32, pl::consumer_group(), limit_at(kWaitRs32)); }
  CF_DEVICE RsA collectives16() const { return RsA(bars->rs16, pl::consumer_group(), limit_at(kWaitRs16)); }
  // The bytes of a K/V tile item of n_boxes boxes (K and V).
  CF_DEVICE int32_t kv_item_bytes(int32_t n_boxes) const { return n_boxes * p.kv_box_rows * Tr::kRowBytes * 2; }

  // ---- setup -------------------------------------------------------------------------------------------------------

  // Thread b < batch: the facts of token b; a bad page table or position is reported (once per launch) and makes
  // the token attend over its own new k/v only, unappended, with a NaN output.
  CF_DEVICE TokenInfo token_info(int32_t b) const {
    TokenInfo info{};
    const int32_t start = p.kv_indptr[b], end = p.kv_indptr[b + 1];
    const int32_t last = p.kv_last_page_len ? p.kv_last_page_len[b] : p.page_size;
    const int64_t pos64 = p.positions64 ? p.positions64[b] : int64_t(p.positions[b]);
    const bool reporter = group_id == 0 && rank == 0;
    bool bad = false;
    if (start < 0 || end < start || end > p.n_indices || last < 1 || last > p.page_size) {
      bad = true;
      if (reporter) set_status(kStatusBadPageTable);
    } else if (end == start) {
      bad = true;
      if (reporter) set_status(kStatusBadKvLen);
    }
    if (pos64 < 0 || pos64 > INT32_MAX || (p.cos_sin != nullptr && pos64 >= p.cos_sin_rows)) {
      bad = true;
      if (reporter) set_status(kStatusBadPosition);
    }
    info.new_page = -1;
    if (!bad) {
      const int64_t kv_len = int64_t(end - start - 1) * p.page_size + last;
      const int32_t page = p.kv_indices[end - 1];  // the new k/v go to the last position of the last page
      if (page < 0 || page >= p.n_pages) {
        bad = true;
        if (reporter) set_status(kStatusBadPageId);
      } else {
        info.old_len = int32_t(kv_len - 1);
        info.new_page = page;
        info.new_offset = last - 1;
      }
    }
    info.bad = bad ? 1 : 0;
    info.position = bad ? 0 : int32_t(pos64);
    info.page_base = bad ? 0 : start;
    const pl::Range tiles = pl::split_range((info.old_len + Tr::kKvTile - 1) / Tr::kKvTile, n_ranks, rank);
    info.tile_begin = tiles.begin;
    info.tile_end = tiles.end;
    return info;
  }

  CF_DEVICE void setup() {
    if (tid == 0) {
      ring.init();
      small->abort = 0;
    }
    if (tid < uint32_t(Tr::kConsumerThreads)) {
      collectives32().init();
      collectives16().init();
    }
    if (int32_t(tid) < batch) {
      // built in a register copy first: the emulator's access instrumentation does not see a struct that the callee
      // builds in place in shared memory through the return slot (its reads were reported uninitialised)
      const TokenInfo info = token_info(int32_t(tid));
      tokens[tid] = info;
    }
    dev::cluster_sync();  // barriers initialised and token table visible; every CTA of the cluster started
    if (tid == 0) trace(kTraceStart);
  }

  // ---- producer ----------------------------------------------------------------------------------------------------

  // Before item st.count: past the first early_stages items, the consumers' "go" (their norm is done), once.
  CF_DEVICE void gate(const pl::PipelineState& st, bool& went) const {
    if (!went && st.count >= p.early_stages) {
      dev::named_barrier_sync(kGoBarrier, Tr::kThreads);
      went = true;
    }
  }

  // The sequence page rel_page of a token (kv_indices), 0 where the CTA reads none.
  CF_DEVICE int32_t page_entry(const TokenInfo& info, int32_t rel_page) const {
    if (info.tile_end <= info.tile_begin || rel_page > (info.old_len - 1) / p.page_size) return 0;
    return p.kv_indices[info.page_base + rel_page];
  }

  // QKV weights: (G+2) row blocks x the K-slice, UnitStage items of up to kUnitsPerStage boxes.
  CF_DEVICE void produce_qkv_weights(pl::PipelineState& st, int32_t& issued_end, bool& went) const {
    for (int32_t rb = 0; rb < G + 2; ++rb) {
      const int32_t row = detail::qkv_block_row(p, group_id, rb, kHd);
      for (int32_t s = 0; s < qkv_stages_per_block; ++s) {
        const int32_t u0 = s * Tr::kUnitsPerStage;
        gate(st, went);
        pl::load_units(ring, st, issued_end, kWaitRingStage, p.w_qkv_map, col0 + u0 * Tr::kUnitCols, row,
                       units.size() - u0 < Tr::kUnitsPerStage ? units.size() - u0 : Tr::kUnitsPerStage,
                       Tr::kUnitBytes);
      }
    }
  }

  // One K/V tile (lanes of the producer warp issue its boxes): box j (R rows of one page) of K and of V; its page
  // from window_a (sequence pages window_base ..) or window_b (the next 32), handed over by shuffles.
  CF_DEVICE void issue_kv_boxes(uint8_t* dst, dev::Mbarrier& bar, int32_t pos_begin, int32_t n_boxes,
                                int32_t window_base, int32_t window_a, int32_t window_b, bool need_b) const {
    const int32_t P = p.page_size, R = p.kv_box_rows;
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
          set_status(kStatusBadPageId);
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

  // This CTA's K/V tiles of token b. A tile is kKvTile positions; its K rows and V rows arrive as boxes of R rows (R
  // divides the page size, so a box never crosses a page), all under one expect-tx of the item. Boxes past the
  // sequence's end are not issued (the consumers mask their rows). Page indices come in windows of 32 (one per
  // lane), the next one loaded a window ahead, so no tile waits for a dependent global load.
  CF_DEVICE void produce_kv_token(pl::PipelineState& st, int32_t& issued_end, bool& went, int32_t b) const {
    const TokenInfo info = tokens[b];
    if (info.tile_end <= info.tile_begin) return;
    const int32_t P = p.page_size, R = p.kv_box_rows;
    int32_t window_base = info.tile_begin * Tr::kKvTile / P;  // sequence page of lane 0 of window_a
    int32_t window_a = p.layout.pages.in(smem)[b * kPageWindow + int32_t(lane)];
    int32_t window_b = page_entry(info, window_base + kPageWindow + int32_t(lane));
    for (int32_t tile = info.tile_begin; tile < info.tile_end; ++tile) {
      const int32_t pos_begin = tile * Tr::kKvTile;
      const int32_t rows = info.old_len - pos_begin < Tr::kKvTile ? info.old_len - pos_begin : Tr::kKvTile;
      const int32_t n_boxes = (rows + R - 1) / R;
      // A tile spans at most 33 pages (page size >= 2), or exactly one or two whole windows (page size 1), so after
      // this every page it needs is in window_a or window_b.
      while (pos_begin / P - window_base >= kPageWindow) {
        window_a = window_b;
        window_base += kPageWindow;
        window_b = page_entry(info, window_base + kPageWindow + int32_t(lane));
      }
      const bool need_b = (pos_begin + (n_boxes - 1) * R) / P - window_base >= kPageWindow;  // warp-uniform
      gate(st, went);
      const bool issue = ring.producer_acquire(st, uint32_t(kv_item_bytes(n_boxes)), kWaitRingStage);
      if (issue)
        issue_kv_boxes(ring.stage(st), ring.full_barrier(st), pos_begin, n_boxes, window_base, window_a, window_b,
                       need_b);
      ring.producer_commit(st, issue, issued_end);
    }
  }

  // O weights: this rank's output rows in head_dim-row blocks (visited in an order rotated by the cluster index) x
  // the group's G * hd columns of Wo.
  CF_DEVICE void produce_wo_weights(pl::PipelineState& st, int32_t& issued_end, bool& went) const {
    for (int32_t i = 0; i < o_blocks; ++i) {
      const int32_t ob = (i + group_id) % o_blocks;
      for (int32_t s = 0; s < wo_stages_per_block; ++s) {
        const int32_t u0 = s * Tr::kUnitsPerStage;
        gate(st, went);
        pl::load_units(ring, st, issued_end, kWaitRingStage, p.w_o_map, group_id * G * kHd + u0 * Tr::kUnitCols,
                       o_begin + ob * kHd, wo_units - u0 < Tr::kUnitsPerStage ? wo_units - u0 : Tr::kUnitsPerStage,
                       Tr::kUnitBytes);
      }
    }
  }

  // Producer warp: the whole load schedule, in consumption order. Returns the items issued.
  CF_DEVICE int32_t produce() {
    pl::PipelineState st;
    int32_t issued_end = 0;
    bool went = false;  // past the consumers' "go" (after the first p.early_stages items)
    // Every token's first page window now, before the weight tiles queue up.
    int32_t first_window[kMaxBatch];
    CF_UNROLL
    for (int b = 0; b < kMaxBatch; ++b) {
      first_window[b] = 0;
      if (b < batch) {
        const TokenInfo info = tokens[b];
        first_window[b] = page_entry(info, info.tile_begin * Tr::kKvTile / p.page_size + int32_t(lane));
      }
    }
    produce_qkv_weights(st, issued_end, went);
    if (lane == 0) trace(kTraceProducerQkv);
    CF_UNROLL
    for (int b = 0; b < kMaxBatch; ++b)
      if (b < batch) p.layout.pages.in(smem)[b * kPageWindow + int32_t(lane)] = first_window[b];
    dev::syncwarp();
    for (int32_t b = 0; b < batch; ++b) produce_kv_token(st, issued_end, went, b);
    if (lane == 0) trace(kTraceProducerKv);
    produce_wo_weights(st, issued_end, went);
    if (!went) dev::named_barrier_sync(kGoBarrier, Tr::kThreads);  // a short schedule: match the consumers' arrival
    if (lane == 0) trace(kTraceProducerWo);
    return issued_end;
  }

  // ---- 1. norm -----------------------------------------------------------------------------------------------------

  CF_DEVICE void norm(Rs32& rs32) {
    const pl::NormPrologue<TA> np{static_cast<const TA*>(p.hidden_in), static_cast<const TA*>(p.residual),
                                  static_cast<const TA*>(p.norm), p.hidden, batch, col0, n_cols, small->norm_red};
    np.run_in_cluster(tid, p.eps, rs32, small->sumsq, small->inv_rms, p.layout.x.in(smem), p.layout.x_stride);
    dev::named_barrier_arrive(kGoBarrier, Tr::kThreads);  // the producer may fill the whole ring now
    if (tid == 0) trace(kTraceNormDone);
  }

  // ---- 2. QKV ------------------------------------------------------------------------------------------------------

  // Partial q/k/v of the K-slice -> part[kg][token][row block][hd] (fp32): the unit (token, row block) is what the
  // reduce-scatter distributes; head_dim 64's two k-groups are added in k-group order.
  CF_DEVICE void qkv_projection(pl::PipelineState& st) {
    const uint8_t* x_s = p.layout.x.in(smem);
    float* const part = p.layout.part.in(smem);
    const int32_t mt = int32_t(warp) % Tr::kMTiles, kg = int32_t(warp) / Tr::kMTiles;
    const int32_t qkv_count = batch * rows_qkv * kHd;
    for (int32_t rb = 0; rb < G + 2; ++rb) {
      float acc[kBatchTiles][4] = {};
      for (int32_t s = 0; s < qkv_stages_per_block; ++s) {
        const int32_t u0 = s * Tr::kUnitsPerStage;
        const int32_t nu = units.size() - u0 < Tr::kUnitsPerStage ? units.size() - u0 : Tr::kUnitsPerStage;
        if (ring.consumer_wait(st, kWaitQkvTile))
          pl::unit_stage_mma<TW, TA, kBatchTiles, kHd, Tr::kUnitsPerKGroup>(
              ring.stage(st), nu, x_s, p.layout.x_stride, u0 * Tr::kUnitCols, batch, warp, lane, acc);
        ring.consumer_release(st);
      }
      CF_UNROLL
      for (int nt = 0; nt < kBatchTiles; ++nt)
        pl::for_each_accumulator(acc[nt], lane, [&](int32_t row, int32_t col, float v) {
          const int32_t token = nt * pl::kMmaN + col;
          if (token < batch) part[kg * qkv_count + (token * rows_qkv + rb) * kHd + mt * pl::kMmaM + row] = v;
        });
    }
    if (tid == 0) trace(kTraceQkvDone);
    if constexpr (Tr::kKGroups > 1) {  // head_dim 64: two warps per m tile; their partials added in k-group order
      static_assert(Tr::kKGroups == 2, "k-group fold written for two k-groups");
      pl::consumers_sync();
      for (int32_t i = int32_t(tid); i < qkv_count; i += Tr::kConsumerThreads) part[i] += part[qkv_count + i];
    }
  }

  // The owner's inputs of RoPE pair i of its units (from global memory: bias, cos/sin), loaded before the
  // reduce-scatter so their latency overlaps it.
  struct PairInputs {
    float b1, b2, cs, sn;
  };
  CF_DEVICE PairInputs pair_inputs(const pl::Range& own, int32_t i) const {
    PairInputs in{0.0f, 0.0f, 1.0f, 0.0f};
    const int32_t u = own.begin + i / kPairs, pair = i % kPairs;
    const int32_t b = u / rows_qkv, rb = u % rows_qkv;
    const detail::RopePair rp = detail::rope_pair(pair, p.rot_dim, p.rope_neox != 0);
    if (p.b_qkv) {
      const TA* const bias = static_cast<const TA*>(p.b_qkv);  // vectors are stored like the activations
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
        const double angle = double(position) * std::pow(double(p.rope_theta), -2.0 * double(f) / double(p.rot_dim));
        in.cs = float(std::cos(angle));
        in.sn = float(std::sin(angle));
      }
    }
    return in;
  }

  // The owner of units [own.begin, own.end): bias, RoPE (no effect on v and unrotated pairs: cs 1, sn 0), round,
  // the qkv_s row, and k / v appended to the cache (the values every rank attends with).
  CF_DEVICE void finish_pair(const pl::Range& own, int32_t i, const PairInputs& in) const {
    const float* const part = p.layout.part.in(smem);
    const int32_t u = own.begin + i / kPairs, pair = i % kPairs;
    const int32_t b = u / rows_qkv, rb = u % rows_qkv;
    const detail::RopePair rp = detail::rope_pair(pair, p.rot_dim, p.rope_neox != 0);
    const float a = part[u * kHd + rp.d1] + in.b1, c = part[u * kHd + rp.d2] + in.b2;
    const float v1 = a * in.cs - c * in.sn, v2 = a * in.sn + c * in.cs;
    uint8_t* dst = qkv_s + uint32_t(u) * Tr::kQStride;
    prim::store_elem<TA>(dst + rp.d1 * 2, v1);
    prim::store_elem<TA>(dst + rp.d2 * 2, v2);
    const TokenInfo& info = tokens[b];
    if (rb >= G && info.new_page >= 0) {
      TKV* cache = rb == G ? k_cache : v_cache;
      const int64_t slot = int64_t(info.new_page) * p.page_size + info.new_offset;
      const int64_t base = (slot * p.n_kv_heads + group_id) * kHd;
      prim::store_elem<TKV>(cache + base + rp.d1, v1);
      prim::store_elem<TKV>(cache + base + rp.d2, v2);
    }
  }

  // Reduce-scatter of the partials by unit (rank order, in place): this rank owns whole heads of whole tokens, so
  // both dimensions of every RoPE pair are here; then the all-gather of the rounded q/k/v rows. Peers' arrivals on
  // the gather also prove they finished reading this CTA's partials: region P may be rewritten after it.
  CF_DEVICE void qkv_exchange(Rs32& rs32, RsA& rs16) {
    float* const part = p.layout.part.in(smem);
    const int32_t qkv_units = batch * rows_qkv;
    const pl::Range own = pl::split_range(qkv_units, n_ranks, rank);
    const int32_t own_pairs = own.size() * kPairs;
    PairInputs prefetched[Tr::kPrefetchPairs];  // a thread's first pairs (all of them for Llama shapes to batch 16)
    CF_UNROLL
    for (int k = 0; k < Tr::kPrefetchPairs; ++k) {
      const int32_t i = int32_t(tid) + k * Tr::kConsumerThreads;
      prefetched[k] = i < own_pairs ? pair_inputs(own, i) : PairInputs{0.0f, 0.0f, 1.0f, 0.0f};
    }
    dev::fence_cluster();
    rs32.reduce_scatter(part, part + own.begin * kHd, uint32_t(qkv_units * kHd),
                        detail::UnitBounds{qkv_units, n_ranks, uint32_t(kHd)}, prim::Sum{});
    CF_UNROLL
    for (int k = 0; k < Tr::kPrefetchPairs; ++k) {
      const int32_t i = int32_t(tid) + k * Tr::kConsumerThreads;
      if (i < own_pairs) finish_pair(own, i, prefetched[k]);
    }
    for (int32_t i = int32_t(tid) + Tr::kPrefetchPairs * Tr::kConsumerThreads; i < own_pairs;
         i += Tr::kConsumerThreads)
      finish_pair(own, i, pair_inputs(own, i));
    dev::fence_cluster();
    rs16.all_gather(reinterpret_cast<TA*>(qkv_s), uint32_t(qkv_units * (Tr::kQStride / 2)),
                    detail::UnitBounds{qkv_units, n_ranks, uint32_t(Tr::kQStride / 2)});
    if (tid == 0) trace(kTraceQkvGathered);
  }

  // ---- 3. attention ------------------------------------------------------------------------------------------------

  // S^T = q K^T of one tile: [heads, positions] (A = q rows g, g+8: m = query heads, k = head dims permuted like
  // K's, read per 32-dim block, 8 live registers; B = K rows). Rows past the valid ones were not loaded (their scores
  // are masked afterwards): they read as zero, not stale data.
  CF_DEVICE void tile_scores(const uint8_t* kst, int32_t valid, const uint8_t* q_lo, bool has_lo, bool has_hi,
                             float (&sc)[Tr::kSTiles][4]) const {
    CF_UNROLL
    for (int db = 0; db < Tr::kDBlocks; ++db) {
      const dev::U32x4 lo = has_lo ? dev::load16(q_lo + db * 64) : dev::U32x4{0, 0, 0, 0};
      const dev::U32x4 hi = has_hi ? dev::load16(q_lo + 8 * Tr::kQStride + db * 64) : dev::U32x4{0, 0, 0, 0};
      const pl::AFragK32 qa = pl::a_k32(lo, hi);
      CF_UNROLL
      for (int nt = 0; nt < Tr::kSTiles; ++nt) {
        const dev::U32x4 kb = nt * 8 + int32_t(g) < valid
                                  ? dev::load16(kst + (nt * 8 + g) * Tr::kRowBytes + db * 64 + t * 16)
                                  : dev::U32x4{0, 0, 0, 0};
        pl::mma_k32<TA>(sc[nt], qa, pl::b_k32(kb));
      }
    }
  }

  // The online-softmax update of one tile (log2 domain; rows g (c0, c1) and g+8 (c2, c3)): positions >= valid are
  // masked, the running states move to the tile's maximum (the factors scale the rows' accumulators) and the scores
  // become the tile's probabilities.
  CF_DEVICE void tile_softmax(float (&sc)[Tr::kSTiles][4], int32_t valid, prim::SoftmaxRunning (&run)[2],
                              float (&corr)[2]) const {
    float row_max[2] = {-INFINITY, -INFINITY};
    CF_UNROLL
    for (int nt = 0; nt < Tr::kSTiles; ++nt) {
      CF_UNROLL
      for (int c = 0; c < 4; ++c) {
        const int32_t pos = nt * pl::kMmaN + 2 * int32_t(t) + (c & 1);
        sc[nt][c] = pos < valid ? sc[nt][c] * p.scale_log2 : -INFINITY;
        row_max[c / 2] = std::fmax(row_max[c / 2], sc[nt][c]);
      }
    }
    CF_UNROLL
    for (int h = 0; h < 2; ++h) {
      row_max[h] = std::fmax(row_max[h], dev::shfl_xor_sync(dev::kFullMask, row_max[h], 1));
      row_max[h] = std::fmax(row_max[h], dev::shfl_xor_sync(dev::kFullMask, row_max[h], 2));
      corr[h] = run[h].rescale_to(row_max[h]);  // finite: position 0 of the tile is valid
    }
    CF_UNROLL
    for (int nt = 0; nt < Tr::kSTiles; ++nt) {
      CF_UNROLL
      for (int c = 0; c < 4; ++c) {
        sc[nt][c] = exp2f(sc[nt][c] - run[c / 2].m);
        run[c / 2].l += sc[nt][c];
      }
    }
  }

  // O += P V: A = P (the score accumulators of two n8 tiles), B = V rows 2t, 2t+1, 2t+8, 2t+9 of the k16 step, 8
  // consecutive head dims per 16-byte load; rows past the valid ones are zero (never stale data). o[cb * 8 + jj]: lane
  // group g loads V columns cb*64 + 8g .. +7 (one 16-byte load per row), so n index g of n tile cb*8 + jj is head dim
  // cb*64 + 8g + jj: accumulator (t, c) holds head dim cb*64 + 8(2t + c) + jj.
  CF_DEVICE void tile_pv(const uint8_t* vst, const float (&sc)[Tr::kSTiles][4], int32_t valid,
                         float (&o)[Tr::kOTiles][4]) const {
    CF_UNROLL
    for (int ks = 0; ks < Tr::kPvSteps; ++ks) {
      const uint32_t pa[4] = {prim::pack2<TA>(sc[2 * ks][0], sc[2 * ks][1]),
                              prim::pack2<TA>(sc[2 * ks][2], sc[2 * ks][3]),
                              prim::pack2<TA>(sc[2 * ks + 1][0], sc[2 * ks + 1][1]),
                              prim::pack2<TA>(sc[2 * ks + 1][2], sc[2 * ks + 1][3])};
      const int32_t r0 = ks * pl::kMmaK + 2 * int32_t(t);
      const int32_t vrows[4] = {r0, r0 + 1, r0 + 8, r0 + 9};
      CF_UNROLL
      for (int cb = 0; cb < Tr::kColBlocks; ++cb) {
        uint32_t w[4][4];
        CF_UNROLL
        for (int k = 0; k < 4; ++k) {
          dev::U32x4 v{0, 0, 0, 0};
          if (vrows[k] < valid) v = dev::load16(vst + vrows[k] * Tr::kRowBytes + cb * 128 + g * 16);
          w[k][0] = v.x, w[k][1] = v.y, w[k][2] = v.z, w[k][3] = v.w;
        }
        CF_UNROLL
        for (int k = 0; k < 4; ++k) {
          const uint32_t be[2] = {(w[0][k] & 0xffffu) | (w[1][k] << 16), (w[2][k] & 0xffffu) | (w[3][k] << 16)};
          const uint32_t bo[2] = {(w[0][k] >> 16) | (w[1][k] & 0xffff0000u),
                                  (w[2][k] >> 16) | (w[3][k] & 0xffff0000u)};
          prim::Half<TA>::mma(o[cb * 8 + 2 * k], pa, be);
          prim::Half<TA>::mma(o[cb * 8 + 2 * k + 1], pa, bo);
        }
      }
    }
  }

  // The warp's state -> scratch records [warp][head] (rows g and g+8 that are real heads), head dims un-permuted.
  CF_DEVICE void store_warp_state(prim::SoftmaxRunning (&run)[2], const float (&o)[Tr::kOTiles][4]) const {
    CF_UNROLL
    for (int h = 0; h < 2; ++h) {
      run[h].l += dev::shfl_xor_sync(dev::kFullMask, run[h].l, 1);
      run[h].l += dev::shfl_xor_sync(dev::kFullMask, run[h].l, 2);
      const int32_t head = int32_t(g) + 8 * h;
      if (head < G) {
        float* rec = scratch + (warp * uint32_t(G) + uint32_t(head)) * kSF;
        CF_UNROLL
        for (int n = 0; n < Tr::kOTiles; ++n) {
          const int32_t d0 = (n / 8) * 64 + 16 * int32_t(t) + (n % 8);  // dims of (t, c = 0) and (t, c = 1)
          rec[4 + d0] = o[n][2 * h];
          rec[4 + d0 + 8] = o[n][2 * h + 1];
        }
        if (t == 0) {
          rec[0] = run[h].m;
          rec[1] = run[h].l;
        }
      }
    }
  }

  // Token b over this CTA's tiles of its cache: the tiles of the owned stages of this warp (OwnedRun), then the
  // warps' states merged in warp order into state[b][h] (prim::SoftmaxState records).
  CF_DEVICE void attend_token(pl::PipelineState& st, int32_t b) {
    const TokenInfo info = tokens[b];
    const uint8_t* const q_lo = qkv_s + uint32_t(b * rows_qkv + int32_t(g)) * Tr::kQStride + t * 16;
    const bool has_lo = int32_t(g) < G, has_hi = int32_t(g) + 8 < G;
    prim::SoftmaxRunning run[2];
    float o[Tr::kOTiles][4] = {};
    Run own(ring, st, info.tile_end - info.tile_begin, warp);
    for (pl::PipelineState it; own.next(it);) {
      if (!ring.consumer_wait(it, kWaitKvTile)) {  // aborting: the tile may never have landed
        own.release(it);
        continue;
      }
      const uint8_t* kst = ring.stage(it);
      const int32_t valid = info.old_len - (info.tile_begin + own.position()) * Tr::kKvTile;  // >= 1 rows hold data
      float sc[Tr::kSTiles][4] = {};
      tile_scores(kst, valid, q_lo, has_lo, has_hi, sc);
      float corr[2];
      tile_softmax(sc, valid, run, corr);
      CF_UNROLL
      for (int n = 0; n < Tr::kOTiles; ++n) o[n][0] *= corr[0], o[n][1] *= corr[0], o[n][2] *= corr[1], o[n][3] *= corr[1];
      tile_pv(kst + Tr::kKvTile * Tr::kRowBytes, sc, valid, o);
      own.release(it);
    }
    store_warp_state(run, o);
    own.finish(st, pl::consumer_group());  // the warps' states are in scratch
    float* const state = p.layout.state.in(smem);
    for (int32_t i = int32_t(tid); i < G * kSF; i += Tr::kConsumerThreads) {
      const int32_t head = i / kSF, e = i % kSF;  // e: 0 = m, 1 = l, 2, 3 = pad, 4.. = acc[d]
      state[(b * G + head) * kSF + e] =
          prim::merged_record_element(kW, [&](int32_t w) { return scratch + (w * G + head) * kSF; }, e);
    }
    pl::consumers_sync();  // scratch is rewritten for the next token
  }

  // The owner's merge of the new token: q . k_new (log2-scaled), one warp per unit, into small->new_score.
  CF_DEVICE void new_token_scores(const pl::Range& owned) const {
    for (int32_t u = owned.begin + int32_t(warp); u < owned.end; u += kW) {
      const int32_t b = u / G, head = u % G;
      const uint8_t* q_row = qkv_s + uint32_t(b * rows_qkv + head) * Tr::kQStride;
      const uint8_t* k_row = qkv_s + uint32_t(b * rows_qkv + G) * Tr::kQStride;
      float dot = 0.0f;
      for (int32_t d = int32_t(lane) * 2; d < kHd; d += 64) {
        const dev::Float2 qv = prim::unpack2<TA>(prim::load_u32(q_row + d * 2));
        const dev::Float2 kv = prim::unpack2<TA>(prim::load_u32(k_row + d * 2));
        dot += qv.x * kv.x + qv.y * kv.y;
      }
      CF_UNROLL
      for (int m = 16; m >= 1; m >>= 1) dot += dev::shfl_xor_sync(dev::kFullMask, dot, m);
      if (lane == 0) small->new_score[u - owned.begin] = dot * p.scale_log2;
    }
  }

  // Reduce-scatter of the states with the softmax merge (rank order) into this rank's (token, head) units; the owner
  // merges the new token's own score and value, normalises and rounds into attn_s; the all-gather gives every rank
  // the group's outputs. Peers' arrivals on the gather also prove they finished reading this CTA's states.
  CF_DEVICE void attention_exchange(Rs32& rs32, RsA& rs16) {
    const int32_t attn_units = batch * G;
    const pl::Range owned = pl::split_range(attn_units, n_ranks, rank);
    const float* const merged = scratch;
    dev::fence_cluster();
    rs32.reduce_scatter(p.layout.state.in(smem), scratch, uint32_t(attn_units * kSF),
                        detail::UnitBounds{attn_units, n_ranks, uint32_t(kSF)}, prim::SoftmaxMerge<uint32_t(kHd)>{});
    new_token_scores(owned);
    pl::consumers_sync();
    for (int32_t i = int32_t(tid); i < owned.size() * kHd; i += Tr::kConsumerThreads) {
      const int32_t u = owned.begin + i / kHd, d = i % kHd;
      const int32_t b = u / G, head = u % G;
      const float* rec = merged + (u - owned.begin) * kSF;
      const float s_new = small->new_score[u - owned.begin];
      const prim::SoftmaxWeights w = prim::merge_weights(rec[0], s_new);  // m_old = -inf: no cache, weight 0
      const float v_new = prim::load_elem<TA>(qkv_s + uint32_t(b * rows_qkv + G + 1) * Tr::kQStride + d * 2);
      const float l_all = rec[1] * w.lower + w.higher;
      const float acc = rec[4 + d] * w.lower + w.higher * v_new;
      prim::store_elem<TA>(attn_s + uint32_t(b) * p.layout.attn_stride + uint32_t(head * kHd + d) * 2, acc / l_all);
    }
    dev::fence_cluster();
    rs16.all_gather(reinterpret_cast<TA*>(attn_s), uint32_t(batch) * (p.layout.attn_stride / 2),
                    detail::HeadRowBounds{attn_units, n_ranks, G, p.layout.attn_stride / 2, uint32_t(kHd)});
    if (tid == 0) trace(kTraceAttnGathered);
  }

  // ---- 4. O projection + the cross-group sum -----------------------------------------------------------------------

  // A block's partials [rows][token] (fp32) -> the group's workspace; head_dim 64's k-group partials are added in
  // k-group order through opart first.
  CF_DEVICE void store_o_partials(const float (&acc)[kBatchTiles][4], int32_t r0, int32_t block_rows) {
    float* const ws_group = p.o_partial + uint32_t(group_id) * uint32_t(p.hidden) * uint32_t(batch);
    const int32_t mt = int32_t(warp) % Tr::kMTiles, kg = int32_t(warp) / Tr::kMTiles;
    if constexpr (Tr::kKGroups == 1) {  // each warp holds complete sums of its m tile: store them directly
      CF_UNROLL
      for (int nt = 0; nt < kBatchTiles; ++nt)
        pl::for_each_accumulator(acc[nt], lane, [&](int32_t row, int32_t col, float v) {
          const int32_t token = nt * pl::kMmaN + col, r = mt * pl::kMmaM + row;
          if (token < batch && r < block_rows) ws_group[uint32_t(r0 + r) * uint32_t(batch) + uint32_t(token)] = v;
        });
    } else {
      float* const opart = p.layout.opart.in(smem);
      CF_UNROLL
      for (int nt = 0; nt < kBatchTiles; ++nt)
        pl::for_each_accumulator(acc[nt], lane, [&](int32_t row, int32_t col, float v) {
          const int32_t token = nt * pl::kMmaN + col;
          if (token < batch) opart[(kg * kHd + mt * pl::kMmaM + row) * batch + token] = v;
        });
      pl::consumers_sync();
      for (int32_t e = int32_t(tid); e < block_rows * batch; e += Tr::kConsumerThreads) {
        float sum = 0.0f;
        CF_UNROLL
        for (int k = 0; k < Tr::kKGroups; ++k) sum += opart[k * kHd * batch + e];
        ws_group[uint32_t(r0) * uint32_t(batch) + uint32_t(e)] = sum;
      }
      pl::consumers_sync();  // opart is rewritten by the next block
    }
  }

  // Every block's partial goes to the workspace as soon as its MMAs are done (plain stores, nothing waits for them).
  CF_DEVICE void o_projection(pl::PipelineState& st) {
    const int32_t mt = int32_t(warp) % Tr::kMTiles;
    for (int32_t i = 0; i < o_blocks; ++i) {
      const int32_t ob = (i + group_id) % o_blocks;
      const int32_t block_rows = o_rows - ob * kHd < kHd ? o_rows - ob * kHd : kHd;
      const bool active = mt * pl::kMmaM < block_rows;  // m tiles past the rank's rows are loaded but skipped
      float acc[kBatchTiles][4] = {};
      for (int32_t s = 0; s < wo_stages_per_block; ++s) {
        const int32_t u0 = s * Tr::kUnitsPerStage;
        const int32_t nu = wo_units - u0 < Tr::kUnitsPerStage ? wo_units - u0 : Tr::kUnitsPerStage;
        if (ring.consumer_wait(st, kWaitWoTile) && active)
          pl::unit_stage_mma<TW, TA, kBatchTiles, kHd, Tr::kUnitsPerKGroup>(
              ring.stage(st), nu, attn_s, p.layout.attn_stride, u0 * Tr::kUnitCols, batch, warp, lane, acc);
        ring.consumer_release(st);
      }
      store_o_partials(acc, o_begin + ob * kHd, block_rows);
    }
    pl::consumers_sync();  // every partial of this CTA is stored (the fences of the arrivals are cumulative)
    if (tid == 0) trace(kTraceOLoopDone);
  }

  // One float4 (task v) of a completed block's [rows][batch] sums: the hidden / residual elements it writes, then
  // the groups' partials kGroupsPerChunk at a time (all in flight), chunk sums added in chunk order.
  CF_DEVICE void finish_task(int32_t r0, int32_t v) const {
    const TA* const hidden_in = static_cast<const TA*>(p.hidden_in);
    const TA* const residual = static_cast<const TA*>(p.residual);
    const uint32_t group_stride = uint32_t(p.hidden) * uint32_t(batch);
    int64_t at[4];
    float h[4], r[4], total[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    CF_UNROLL
    for (int e = 0; e < 4; ++e) {
      const int32_t i = 4 * v + e, b = i % batch;
      at[e] = int64_t(b) * p.hidden + r0 + i / batch;
      h[e] = dev::to_float(hidden_in[at[e]]);
      r[e] = residual ? dev::to_float(residual[at[e]]) : 0.0f;
    }
    for (int32_t c = 0; c * Tr::kGroupsPerChunk < p.n_kv_heads; ++c) {
      float sum[4];
      pl::sum_slices_chunk<pl::PartialLoads::Cached>(p.o_partial + uint32_t(r0) * uint32_t(batch) + uint32_t(v) * 4,
                                                      group_stride, c * Tr::kGroupsPerChunk, p.n_kv_heads, sum);
      CF_UNROLL
      for (int e = 0; e < 4; ++e) total[e] += sum[e];
    }
    CF_UNROLL
    for (int e = 0; e < 4; ++e) {
      static_cast<TA*>(p.residual_out)[at[e]] = dev::from_float<TA>(h[e] + r[e]);
      static_cast<TA*>(p.out)[at[e]] = dev::from_float<TA>(tokens[(4 * v + e) % batch].bad ? NAN : total[e]);
    }
  }

  // The arrivals (one release fence and one atomic per block, all blocks at once, instead of a fence round trip per
  // block), then the sums of every block this CTA completed, in one pass with no barrier: tasks dealt to the
  // consumer threads in turn across the blocks, so the latency is a few round trips for all of them together.
  CF_DEVICE void o_sum() {
    uint32_t* const last_flags = p.layout.flags.in(smem);
    for (int32_t ob = int32_t(tid); ob < o_blocks; ob += Tr::kConsumerThreads)
      last_flags[ob] = pl::arrive_last(p.o_counters + rank * p.o_blocks_max + ob, uint32_t(p.n_kv_heads)) ? 1u : 0u;
    pl::consumers_sync();
    int32_t first = 0;  // task index of the block's first float4, counted over the flagged blocks
    for (int32_t ob = 0; ob < o_blocks; ++ob) {
      if (!last_flags[ob]) continue;
      const int32_t nr = o_rows - ob * kHd < kHd ? o_rows - ob * kHd : kHd;
      const int32_t n_vec = nr * batch / 4;  // nr is a multiple of 16
      const int32_t start =
          ((int32_t(tid) - first) % Tr::kConsumerThreads + Tr::kConsumerThreads) % Tr::kConsumerThreads;
      for (int32_t v = start; v < n_vec; v += Tr::kConsumerThreads) finish_task(o_begin + ob * kHd, v);
      first += n_vec;
    }
  }

  // Every thread: the ring's end (its copies drained after an abort), then no CTA exits while a peer may still read
  // its shared memory.
  CF_DEVICE void finish(int32_t issued_end) {
    if (tid == 0) trace(kTraceEnd);
    end_ring(issued_end, kStatusDrainTimeout, kWaitDrain);
    dev::cluster_sync();
  }
};

template <typename TW, typename TA, typename TKV, int kHeadDim, int kBatchTiles>
CF_GLOBAL void CF_LAUNCH_BOUNDS(Traits<kHeadDim>::kThreads, 1)
    decoder_attention_kernel(const CF_GRID_CONSTANT KernelParams p) {
  AttentionCta<TW, TA, TKV, kHeadDim, kBatchTiles> cta(p);
  cta.setup();
  int32_t issued_end = 0;  // producer: ring items [0, issued_end) were issued (none after an abort)
  if (cta.is_producer()) {
    issued_end = cta.produce();
  } else {
    auto rs32 = cta.collectives32();
    auto rs16 = cta.collectives16();
    pl::PipelineState st;  // the consumers' position in the ring
    cta.norm(rs32);
    cta.qkv_projection(st);
    cta.qkv_exchange(rs32, rs16);
    for (int32_t b = 0; b < cta.batch; ++b) cta.attend_token(st, b);
    if (cta.tid == 0) cta.trace(kTraceAttnDone);
    cta.attention_exchange(rs32, rs16);
    cta.o_projection(st);
    cta.o_sum();
  }
  cta.finish(issued_end);
}

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::decoder_attention
