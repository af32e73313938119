// Tile sizes, thread roles and the shared-memory carve of the fused decoder attention kernel (docs/attention.md §1).
// Everything derived from head_dim is a compile-time constant of Traits<kHeadDim>; what depends on runtime shapes
// (batch capacity, group size, cluster size) is computed on the host by make_layout() and passed in KernelParams.
#pragma once
#include <algorithm>
#include <cstdint>

#include "clusterfusion/device/types.hpp"
#include "clusterfusion/kernels/decoder_attention/kernel_params.hpp"

namespace cf::kernels::decoder_attention {

inline constexpr int kMinStages = 4;
inline constexpr int kMaxClusterSize = 16;  // cluster sizes 2, 4, 8, 16 (loops over ranks unroll to this bound)
inline constexpr int kMaxStages = 16;

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

  // KV stages: kKvTile positions of one token, one bulk copy per row, rows padded so the fragment loads are
  // conflict-free: K (16-byte loads by rows g, g+1 of a quarter warp) needs a stride = 64 mod 128 bytes; V (32-bit
  // loads of rows 2t, 2t+1, 2t+8, 2t+9) needs a stride = 4 mod 16 words.
  static constexpr int kKvTile = kHeadDim == 128 ? 16 : 32;
  static constexpr int kRowBytes = kHeadDim * 2;
  static constexpr int kKStride = kRowBytes + 64;
  static constexpr int kVStride = kRowBytes + 16;
  static constexpr int kKvStageBytes = kKvTile * (kKStride + kVStride);
  static constexpr int kKvTxBytes = 2 * kKvTile * kRowBytes;  // bytes the copies of one KV stage deliver
  static constexpr int kSTiles = kKvTile / 8;                  // n8 tiles of scores per KV stage
  static constexpr int kPvSteps = kKvTile / 16;                // k16 steps of P V per KV stage

  static constexpr int kStageBytes = ((std::max(kWeightStageBytes, kKvStageBytes) + 127) / 128) * 128;

  static constexpr int kQStride = kRowBytes + 64;  // q_s rows (one per query head): A fragments, conflict-free
};

// Byte offsets of every buffer in dynamic shared memory; identical in every CTA of the cluster.
struct Layout {
  uint32_t off_tokens, off_small, off_x, off_q, off_knew, off_vnew, off_attn, off_part, off_scratch, off_state,
      off_opart, off_ring;
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
  float sumsq_local[kMaxBatch];            // this CTA's sum of squares per token (read by peers)
  float inv_rms[kMaxBatch];
  float norm_red[kMaxBatch][8];            // per warp partial sums of squares
  float new_score[kMaxBatch * kMaxGroup];  // q . k_new (log2-scaled) per (token, head) this CTA owns
  uint32_t last_flag;                      // the O-block this CTA summed last (broadcast)
  uint32_t pad[3];
};

inline constexpr int kExchangeBarriers = 5;  // sumsq, partial, qkv, state, attn (each used once per launch)

constexpr uint32_t align_up(uint64_t v, uint32_t a) { return uint32_t((v + a - 1) / a * a); }

// Rows of x_s and attn_s are padded to 64 mod 128 bytes (conflict-free B-fragment loads of tokens g, g+1).
constexpr uint32_t padded_row_stride(uint64_t bytes) { return align_up(bytes, 128) + 64; }

template <int kHeadDim>
Layout make_layout(int max_batch, int group, int cluster_size, int hidden, int n_kv_heads) {
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
  take(uint64_t(2 * kMaxStages + kExchangeBarriers) * 8);  // mbarriers at offset 0
  l.off_tokens = take(sizeof(TokenInfo) * kMaxBatch);
  l.off_small = take(sizeof(SmallBuffers));

  // Region X: x_s during QKV; afterwards q_s, k_new, v_new, attn_s (peers write them only after this CTA's QKV).
  l.x_stride = padded_row_stride(uint64_t(max_units_per_rank) * Tr::kUnitCols * 2);
  l.attn_stride = padded_row_stride(uint64_t(group) * kHeadDim * 2);
  const uint64_t x_bytes = uint64_t(max_batch) * l.x_stride;
  const uint64_t q_bytes = align_up(uint64_t(max_batch) * group * Tr::kQStride, 128);
  const uint64_t kv_new_bytes = align_up(uint64_t(max_batch) * kHeadDim * 2, 128);
  const uint64_t attn_bytes = uint64_t(max_batch) * l.attn_stride;
  const uint32_t region_x = take(std::max(x_bytes, q_bytes + 2 * kv_new_bytes + attn_bytes));
  l.off_x = region_x;
  l.off_q = region_x;
  l.off_knew = uint32_t(region_x + q_bytes);
  l.off_vnew = uint32_t(l.off_knew + kv_new_bytes);
  l.off_attn = uint32_t(l.off_vnew + kv_new_bytes);

  // Region P: partial q/k/v (pulled by peers until they push q/k/v back); afterwards the per-warp softmax states,
  // the CTA's states (pulled by peers until they push the attention output), then the O-block partials.
  const uint64_t part_bytes = uint64_t(Tr::kKGroups) * rows * max_batch * 4;
  const uint64_t scratch_bytes = align_up(uint64_t(Tr::kConsumerWarps) * group * (kHeadDim + 2) * 4, 128);
  const uint64_t state_bytes = align_up(uint64_t(max_batch) * group * (kHeadDim + 2) * 4, 128);
  // opart: the k-group partials of an O block, then the per-chunk sums of the last arriver (8 groups per chunk)
  const uint64_t chunks = uint64_t(n_kv_heads + 7) / 8;
  const uint64_t opart_bytes = std::max<uint64_t>(Tr::kKGroups, chunks) * kHeadDim * max_batch * 4;
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
