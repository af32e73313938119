// Tile sizes, thread roles and the shared-memory carve of the fused decoder attention kernel (docs/attention.md §1).
// Everything derived from head_dim is a compile-time constant of Traits<kHeadDim>; what depends on runtime shapes
// (batch capacity, group size, cluster size) is computed on the host by make_layout() and passed in KernelParams.
#pragma once
#include <algorithm>
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/kernels/decoder_attention/params.hpp"
#include "clusterfusion/pipeline/cross_cta_sum.hpp"
#include "clusterfusion/pipeline/norm_prologue.hpp"
#include "clusterfusion/pipeline/roles.hpp"
#include "clusterfusion/pipeline/smem_carve.hpp"
#include "clusterfusion/pipeline/weight_stream.hpp"
#include "clusterfusion/primitives/cluster_reduce_scatter.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::decoder_attention {

namespace pl = cf::pipeline;

inline constexpr int kMaxClusterSize = 16;  // cluster sizes 2, 4, 8, 16 (loops over ranks unroll to this bound)
inline constexpr int kMaxStages = pl::kMaxStages;
// Ring stages the producer issues before the consumers' norm is done (the rest follow the "go" barrier): enough to
// keep this SM's share of HBM busy during the norm, few enough that the norm's own loads do not queue behind a
// GPU-wide flood of weight tiles. PlanConfig::early_stages overrides it (experiments).
inline constexpr int kDefaultEarlyStages = 4;
inline constexpr int kPageWindow = 32;  // page indices the producer holds per window (one per lane)

// Named barriers (id 0 is __syncthreads; 1 is the consumer warps', pipeline/roles.hpp).
inline constexpr uint32_t kGoBarrier = 2;  // consumers -> producer: the norm is done, stream at full depth

template <int kHeadDim>
struct Traits {
  static_assert(kHeadDim == 64 || kHeadDim == 128, "head_dim 64 or 128");
  static constexpr int kHd = kHeadDim;
  static constexpr int kConsumerWarps = pl::kConsumerWarps;
  static constexpr int kConsumerThreads = pl::kConsumerThreads;
  static constexpr int kProducerWarp = pl::kProducerWarp;  // the last warp issues every load
  static constexpr int kThreads = pl::kThreads;

  // Weight tiles: TMA boxes of 32 columns x head_dim rows (64-byte rows, so the A-fragment loads of a quarter warp
  // hit 8 distinct 16-byte bank groups without swizzling). A stage holds kUnitsPerStage boxes side by side.
  static constexpr int kUnitCols = pl::kUnitCols;
  static constexpr int kUnitBytes = kUnitCols * kHeadDim * 2;  // one box
  static constexpr int kUnitsPerStage = 8192 / (kHeadDim * kUnitCols);  // 2 (hd 128) or 4 (hd 64): 16 KB
  static constexpr int kWeightStageBytes = kUnitsPerStage * kUnitBytes;
  static constexpr int kMTiles = kHeadDim / pl::kMmaM;              // m16 tiles per head_dim rows
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
  static constexpr int kSTiles = kKvTile / pl::kMmaN;          // n8 tiles of scores per KV stage
  static constexpr int kPvSteps = kKvTile / pl::kMmaK;         // k16 steps of P V per KV stage

  static constexpr int kStageBytes = ((std::max(kWeightStageBytes, kKvStageBytes) + 127) / 128) * 128;
  static_assert(kStageBytes == pl::kStageBytes, "weight and K/V stages fill the pipeline's 16 KB stages");
  // Attention fragments: 16-byte loads of q / K cover 32 head dims (two k16 steps); n8 tiles of the output (head
  // dims, permuted: kernel.hpp); 16-byte V loads of 8 lanes cover 64 head dims.
  static constexpr int kDBlocks = kHeadDim / 32;
  static constexpr int kOTiles = kHeadDim / pl::kMmaN;
  static constexpr int kColBlocks = kHeadDim / 64;
  // O finish: the last arriver sums kGroupsPerChunk KV-head groups' partials per step, all loads in flight.
  static constexpr int kGroupsPerChunk = pl::kSlicesPerChunk;
  // QKV owner: the bias and cos/sin of a thread's first kPrefetchPairs RoPE pairs are loaded before the exchange.
  static constexpr int kPrefetchPairs = 4;

  static constexpr int kQStride = kRowBytes + 64;  // qkv_s rows (q heads, k, v of a token): conflict-free A loads
  static constexpr int kStateFloats = kHeadDim + 4;  // prim::SoftmaxState<hd>: m, l, 2 pad, acc[hd]
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
  float sumsq[kMaxClusterSize * kMaxBatch];      // [rank][token] partial sums of squares (all-gathered)
  float inv_rms[kMaxBatch];
  float norm_red[kMaxBatch][pl::kNormPartsMax];  // per warp partial sums of squares
  float new_score[kMaxBatch * kMaxGroup];        // q . k_new (log2-scaled) per (token, head) this CTA owns
  uint32_t abort;                                // a wait of this CTA expired: the others return at once
};

// Every mbarrier of the kernel, at offset 0 of shared memory (pipeline::SmemHead).
struct Barriers {
  dev::Mbarrier full[kMaxStages], empty[kMaxStages];  // the ring
  dev::Mbarrier rs32[2], rs16[2];                     // the collectives' workspaces (fp32, then T)
};
static_assert(sizeof(dev::Mbarrier) * 2 == prim::ClusterReduceScatter<0, float>::workspace_bytes());

// Where every buffer lives in dynamic shared memory; identical in every CTA of the cluster.
struct Layout {
  using Head = pl::SmemHead<Barriers>;
  pl::SmemSlot<TokenInfo> tokens;
  pl::SmemSlot<SmallBuffers> small;
  pl::SmemSlot<uint32_t> flags;  // per O row block: this CTA arrived last
  pl::SmemSlot<int32_t> pages;   // each token's first page window (producer)
  // Region X: x_s during QKV; afterwards qkv_s (q heads, k, v per token, gathered) and attn_s (peers write them only
  // after this CTA's QKV: the gathers start after every rank's reduce-scatter).
  pl::SmemSlot<uint8_t> x, qkv, attn;
  // Region P: the K-split partials of q/k/v (reduce-scattered in place); afterwards the per-warp softmax states
  // (scratch; later the merged states a rank owns), the CTA's states (reduce-scattered), then the O partials.
  pl::SmemSlot<float> part, scratch, state, opart;
  pl::SmemSlot<uint8_t> ring;
  uint32_t x_stride, attn_stride;  // bytes per token row of x_s / attn_s
  uint32_t fixed_bytes;            // everything before the ring
  uint32_t stage_bytes;
};

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
  pl::SmemCarve carve(sizeof(Barriers));
  l.tokens = carve.take<TokenInfo>(kMaxBatch);
  l.small = carve.take<SmallBuffers>(1);
  l.flags = carve.take<uint32_t>(uint64_t(o_blocks_max(hidden, cluster_size, kHeadDim)));
  l.pages = carve.take<int32_t>(uint64_t(max_batch) * kPageWindow);

  l.x_stride = pl::padded_row_stride(uint64_t(max_units_per_rank) * Tr::kUnitCols * 2);
  l.attn_stride = pl::padded_row_stride(uint64_t(group) * kHeadDim * 2);
  pl::SmemRegion x = carve.region();
  l.x = x.take<uint8_t>(uint64_t(max_batch) * l.x_stride);
  x.restart();
  l.qkv = x.take<uint8_t>(pl::align_up(uint64_t(max_batch) * (group + 2) * Tr::kQStride, 128));
  l.attn = x.take<uint8_t>(uint64_t(max_batch) * l.attn_stride);
  carve.close(x);

  const uint64_t owned_units_max = (uint64_t(max_batch) * group + cluster_size - 1) / cluster_size;
  pl::SmemRegion part = carve.region();
  l.part = part.take<float>(uint64_t(Tr::kKGroups) * rows * max_batch);
  part.restart();
  l.scratch = part.take<float>(std::max<uint64_t>(uint64_t(Tr::kConsumerWarps) * group, owned_units_max) *
                               Tr::kStateFloats);
  l.state = part.take<float>(uint64_t(max_batch) * group * Tr::kStateFloats);
  part.restart();
  // opart: the k-group partials of an O block (head_dim 64 only; the cross-group sum needs no shared memory)
  l.opart = part.take<float>(Tr::kKGroups > 1 ? uint64_t(Tr::kKGroups) * kHeadDim * max_batch : 0);
  carve.close(part);

  l.ring = carve.take<uint8_t>(0, 1024);
  l.fixed_bytes = l.ring.offset;
  l.stage_bytes = Tr::kStageBytes;
  return l;
}

}  // namespace cf::kernels::decoder_attention
