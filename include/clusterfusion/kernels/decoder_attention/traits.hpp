// Tile sizes, thread roles and the shared-memory carve of the fused decoder attention kernel (docs/attention.md §1).
// Everything derived from head_dim is a compile-time constant of Traits<kHeadDim>; what depends on runtime shapes
// (batch capacity, group size, cluster size) is computed on the host by make_layout() and passed in KernelParams.
#pragma once
#include <algorithm>
#include <cstdint>

#include "clusterfusion/device/types.hpp"
#include "clusterfusion/kernels/decoder_attention/kernel_params.hpp"
#include "clusterfusion/primitives/cluster_reduce_scatter.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::decoder_attention {

inline constexpr int kMaxClusterSize = 16;  // cluster sizes 2, 4, 8, 16 (loops over ranks unroll to this bound)
inline constexpr int kMaxStages = 16;
// Ring stages the producer issues before the consumers' norm is done (the rest follow the "go" barrier): enough to
// keep this SM's share of HBM busy during the norm, few enough that the norm's own loads do not queue behind a
// GPU-wide flood of weight tiles. PlanConfig::early_stages overrides it (experiments).
inline constexpr int kDefaultEarlyStages = 4;
inline constexpr int kPageWindow = 32;  // page indices the producer holds per window (one per lane)

// Named barriers (id 0 is __syncthreads).
inline constexpr uint32_t kConsumerBarrier = 1;  // the 8 consumer warps (also the collectives' thread group)
inline constexpr uint32_t kGoBarrier = 2;        // consumers -> producer: the norm is done, stream at full depth

template <int kHeadDim>
struct Traits {
  static_assert(kHeadDim == 64 || kHeadDim == 128, "head_dim 64 or 128");
  static constexpr int kHd = kHeadDim;
  static constexpr int kConsumerWarps = 8;
  static constexpr int kConsumerThreads = kConsumerWarps * 32;
  static constexpr int kProducerWarp = kConsumerWarps;  // the last warp issues every load
  static constexpr int kThreads = kConsumerThreads + 32;

  // Weight tiles: TMA boxes of 32 columns x head_dim rows (64-byte rows, so the A-fragment loads of a quarter warp
  // hit 8 distinct 16-byte bank groups without swizzling). A stage holds kUnitsPerStage boxes side by side.
  static constexpr int kUnitCols = 32;
  static constexpr int kUnitBytes = kUnitCols * kHeadDim * 2;  // one box
  static constexpr int kUnitsPerStage = 8192 / (kHeadDim * kUnitCols);  // 2 (hd 128) or 4 (hd 64): 16 KB
  static constexpr int kWeightStageBytes = kUnitsPerStage * kUnitBytes;
  static constexpr int kMTiles = kHeadDim / 16;                    // m16 tiles per head_dim rows
  static constexpr int kKGroups = kConsumerWarps / kMTiles;        // warps sharing one m tile, splitting the units
  static constexpr int kUnitsPerKGroup = kUnitsPerStage / kKGroups;
  static_assert(kKGroups * kMTiles == kConsumerWarps && kUnitsPerKGroup * kKGroups == kUnitsPerStage);

  // KV stages: kKvTile positions of one token, K rows then V rows, dense (head_dim * 2 bytes per row, as the cache
  // stores them), 16 KB: filled by a few TMA boxes of up to kKvTile rows (one box per page chunk) under one
  // full-barrier phase. Dense rows cost 2-way bank conflicts on the K fragment loads (8 rows x 64 bytes per
  // instruction) and none on V (16-byte loads of 8 consecutive columns; the n index of P V is permuted).
  static constexpr int kRowBytes = kHeadDim * 2;
  static constexpr int kKvTile = 8192 / kRowBytes;             // 32 (hd 128) or 64 (hd 64) positions
  static constexpr int kKvStageBytes = 2 * kKvTile * kRowBytes;  // 16 KB
  static constexpr int kMaxBoxesPerLane = kKvTile / 32;        // boxes of one row (page size 1): 1 or 2 per lane
  static constexpr int kSTiles = kKvTile / 8;                  // n8 tiles of scores per KV stage
  static constexpr int kPvSteps = kKvTile / 16;                // k16 steps of P V per KV stage

  static constexpr int kStageBytes = ((std::max(kWeightStageBytes, kKvStageBytes) + 127) / 128) * 128;

  static constexpr int kQStride = kRowBytes + 64;  // qkv_s rows (q heads, k, v of a token): conflict-free A loads
  static constexpr int kStateFloats = kHeadDim + 4;  // prim::SoftmaxState<hd>: m, l, 2 pad, acc[hd]
};

// Byte offsets of every buffer in dynamic shared memory; identical in every CTA of the cluster.
struct Layout {
  uint32_t off_rs32, off_rs16, off_tokens, off_small, off_flags, off_pages, off_x, off_qkv, off_attn, off_part,
      off_scratch, off_state, off_opart, off_ring;
  uint32_t x_stride, attn_stride;
  uint32_t fixed_bytes;  // everything before the ring
  uint32_t stage_bytes;
};

// Per-token facts every thread needs (filled by threads 0..batch-1 at kernel start).
struct TokenInfo {
  int32_t old_len;     // cached positions before this step (attended from the cache)
  int32_t tile_begin;  // this CTA's KV tiles [tile_begin, tile_end) of the token
  int32_t tile_end;
  int32_t position;    // RoPE position
  int32_t page_base;   // kv_indptr[b]
  int32_t new_page;    // page of the new k/v (-1: none, the token is bad)
  int32_t new_offset;  // its position in that page
  int32_t bad;         // page table or position invalid: output is NaN
};

// Small per-CTA scalars.
struct SmallBuffers {
  float sumsq[kMaxClusterSize * kMaxBatch];  // [rank][token] partial sums of squares (all-gathered)
  float inv_rms[kMaxBatch];
  float norm_red[kMaxBatch][8];              // per warp partial sums of squares
  float new_score[kMaxBatch * kMaxGroup];    // q . k_new (log2-scaled) per (token, head) this CTA owns
  uint32_t abort;                            // a wait of this CTA expired: the others return at once
};

constexpr uint32_t align_up(uint64_t v, uint32_t a) { return uint32_t((v + a - 1) / a * a); }

// Rows of x_s and attn_s are padded to 64 mod 128 bytes (conflict-free B-fragment loads of tokens g, g+1).
constexpr uint32_t padded_row_stride(uint64_t bytes) { return align_up(bytes, 128) + 64; }

// O row blocks of head_dim rows per rank: at most ceil(hidden / 16 / cluster) * 16 rows.
inline int o_blocks_max(int hidden, int cluster_size, int head_dim) {
  const int rows = (hidden / 16 + cluster_size - 1) / cluster_size * 16;
  return (rows + head_dim - 1) / head_dim;
}

template <int kHeadDim>
Layout make_layout(int max_batch, int group, int cluster_size, int hidden) {
  using Tr = Traits<kHeadDim>;
  const int units_total = hidden / Tr::kUnitCols;
  const int max_units_per_rank = (units_total + cluster_size - 1) / cluster_size;
  const int rows = (group + 2) * kHeadDim;  // q heads, k, v of the group
  Layout l{};
  uint32_t off = 0;
  auto take = [&](uint64_t bytes, uint32_t align = 128) {
    off = align_up(off, align);
    const uint32_t at = off;
    off += uint32_t(bytes);
    return at;
  };
  take(uint64_t(2 * kMaxStages) * 8);  // full / empty mbarriers at offset 0
  l.off_rs32 = take(prim::ClusterReduceScatter<0, float>::workspace_bytes(), 16);
  l.off_rs16 = take(prim::ClusterReduceScatter<0, dev::f16>::workspace_bytes(), 16);
  l.off_tokens = take(sizeof(TokenInfo) * kMaxBatch);
  l.off_small = take(sizeof(SmallBuffers));
  l.off_flags = take(uint64_t(o_blocks_max(hidden, cluster_size, kHeadDim)) * 4);  // per O row block: summed here?
  l.off_pages = take(uint64_t(max_batch) * kPageWindow * 4);  // each token's first page window (producer)

  // Region X: x_s during QKV; afterwards qkv_s (q heads, k, v per token, gathered) and attn_s (peers write them
  // only after this CTA's QKV: the gathers start after every rank's reduce-scatter).
  l.x_stride = padded_row_stride(uint64_t(max_units_per_rank) * Tr::kUnitCols * 2);
  l.attn_stride = padded_row_stride(uint64_t(group) * kHeadDim * 2);
  const uint64_t x_bytes = uint64_t(max_batch) * l.x_stride;
  const uint64_t qkv_bytes = align_up(uint64_t(max_batch) * (group + 2) * Tr::kQStride, 128);
  const uint64_t attn_bytes = uint64_t(max_batch) * l.attn_stride;
  const uint32_t region_x = take(std::max(x_bytes, qkv_bytes + attn_bytes));
  l.off_x = region_x;
  l.off_qkv = region_x;
  l.off_attn = uint32_t(region_x + qkv_bytes);

  // Region P: the K-split partials of q/k/v (reduce-scattered in place); afterwards the per-warp softmax states
  // (scratch; later the merged states a rank owns), the CTA's states (reduce-scattered), then the O partials.
  const uint64_t part_bytes = uint64_t(Tr::kKGroups) * rows * max_batch * 4;
  const uint64_t owned_units_max = (uint64_t(max_batch) * group + cluster_size - 1) / cluster_size;
  const uint64_t scratch_bytes =
      align_up(std::max<uint64_t>(uint64_t(Tr::kConsumerWarps) * group, owned_units_max) * Tr::kStateFloats * 4, 128);
  const uint64_t state_bytes = align_up(uint64_t(max_batch) * group * Tr::kStateFloats * 4, 128);
  // opart: the k-group partials of an O block (head_dim 64 only; the cross-group sum needs no shared memory)
  const uint64_t opart_bytes = Tr::kKGroups > 1 ? uint64_t(Tr::kKGroups) * kHeadDim * max_batch * 4 : 0;
  const uint32_t region_p = take(std::max({part_bytes, scratch_bytes + state_bytes, opart_bytes}));
  l.off_part = region_p;
  l.off_scratch = region_p;
  l.off_state = uint32_t(region_p + scratch_bytes);
  l.off_opart = region_p;

  l.off_ring = align_up(off, 1024);
  l.fixed_bytes = l.off_ring;
  l.stage_bytes = Tr::kStageBytes;
  return l;
}

}  // namespace cf::kernels::decoder_attention
