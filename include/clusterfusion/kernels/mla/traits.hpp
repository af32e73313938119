// The shared-memory carves of the MLA block's two kernels (docs/mla.md §1.5): the row kernel (projections, output)
// and the split-KV latent attention. Tile and stage geometry: pipeline/weight_stream.hpp.
#pragma once
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/kernels/mla/params.hpp"
#include "clusterfusion/pipeline/norm_prologue.hpp"
#include "clusterfusion/pipeline/smem_carve.hpp"
#include "clusterfusion/pipeline/weight_stream.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla {

namespace pl = cf::pipeline;

inline constexpr int kHeadTile = pl::kMmaM;  // query heads of one attention CTA (one m16 tile)
inline constexpr int kMaxItemRows = 32;      // latent rows of one attention ring item (at most one 16 KB stage)

// Every mbarrier of a kernel, at offset 0 of shared memory (pipeline::SmemHead): the ring's.
struct Barriers {
  dev::Mbarrier full[pl::kMaxStages], empty[pl::kMaxStages];
};

// ---- row kernel -----------------------------------------------------------------------------------------------------

struct RowsSmall {
  float inv_rms[kMaxBatch];
  float norm_red[kMaxBatch][pl::kNormPartsMax];  // per warp partial sums of squares (NormPrologue)
  uint32_t last_flag;                            // 1: this CTA arrived last on the group being finished
  uint32_t abort;                                // a wait of this CTA expired: the others return at once
  uint32_t pad[2];
};

// Head tail: each warp's tile that transposes a 16-column x 32-row slice of W_UK (rows of 32 values, 16 B padding).
inline constexpr uint32_t kTransposePitch = pl::kUnitCols * 2 + 16;
inline constexpr uint32_t kTransposeTileBytes = pl::kMmaM * kTransposePitch;

struct RowsLayout {
  using Head = pl::SmemHead<Barriers>;
  pl::SmemSlot<RowsSmall> small;
  pl::SmemSlot<uint8_t> x;          // the input rows (TA), x_stride bytes per token
  pl::SmemSlot<float> scratch;      // a group's k-group partials
  pl::SmemSlot<uint8_t> q_nope;     // head tail: [batch][q_nope_stride] q_nope (TA)
  pl::SmemSlot<uint8_t> transpose;  // head tail: [warp][kTransposeTileBytes]
  pl::SmemSlot<uint8_t> ring;
  uint32_t x_stride, q_nope_stride;
  uint32_t fixed_bytes;             // everything before the ring
};

inline RowsLayout make_rows_layout(int max_batch, int cols, int nope) {
  RowsLayout l{};
  pl::SmemCarve carve(sizeof(Barriers));
  l.small = carve.take<RowsSmall>(1);
  l.x_stride = pl::padded_row_stride(uint64_t(cols) * 2);
  l.x = carve.take<uint8_t>(uint64_t(max_batch) * l.x_stride);
  l.scratch = carve.take<float>(pl::group_scratch_bytes(max_batch) / 4);
  l.q_nope_stride = pl::padded_row_stride(uint64_t(pl::ceil_div(nope, pl::kUnitCols)) * pl::kUnitCols * 2);
  l.q_nope = carve.take<uint8_t>(uint64_t(max_batch) * l.q_nope_stride);
  l.transpose = carve.take<uint8_t>(uint64_t(pl::kConsumerWarps) * kTransposeTileBytes);
  l.ring = carve.take<uint8_t>(0, 1024);
  l.fixed_bytes = l.ring.offset;
  return l;
}

// ---- latent attention -----------------------------------------------------------------------------------------------

struct AttentionSmall {
  float m[kHeadTile], l[kHeadTile], alpha[kHeadTile];  // each head's running max, sum, and this item's rescale
  uint32_t last_flag;
  uint32_t abort;
  uint32_t pad[2];
};

// The latent columns (8 per MMA n-tile) the consumer warps hold in registers: r <= 512.
inline constexpr int kMaxLatentTilesPerWarp = 8;
inline constexpr int kMaxLatent = kMaxLatentTilesPerWarp * pl::kMmaN * pl::kConsumerWarps;
inline constexpr int kUvWarps = pl::kConsumerWarps;  // the W_UV step's CTA: warps only, no ring
inline constexpr int kUvThreads = kUvWarps * 32;
inline constexpr uint32_t kProbPitch = kMaxItemRows * 2 + 16;  // bytes per head of an item's probabilities

struct AttentionLayout {
  using Head = pl::SmemHead<Barriers>;
  pl::SmemSlot<AttentionSmall> small;
  pl::SmemSlot<uint8_t> q;         // [kHeadTile][q_pitch]: the tile's absorbed queries (T), rows past the heads 0
  pl::SmemSlot<float> partials;    // [warps][kHeadTile][kMaxItemRows]: each warp's k-slice of an item's scores
  pl::SmemSlot<uint8_t> probs;     // [kHeadTile][kProbPitch]: an item's probabilities (T), rows past n zero
  pl::SmemSlot<uint8_t> ring;
  uint32_t q_pitch;
  uint32_t fixed_bytes;
};

inline AttentionLayout make_attention_layout(int row_elems) {
  AttentionLayout l{};
  pl::SmemCarve carve(sizeof(Barriers));
  l.small = carve.take<AttentionSmall>(1);
  l.q_pitch = pl::padded_row_stride(uint64_t(row_elems) * 2);
  l.q = carve.take<uint8_t>(uint64_t(kHeadTile) * l.q_pitch);
  l.partials = carve.take<float>(uint64_t(pl::kConsumerWarps) * kHeadTile * kMaxItemRows);
  l.probs = carve.take<uint8_t>(uint64_t(kHeadTile) * kProbPitch);
  l.ring = carve.take<uint8_t>(0, 1024);
  l.fixed_bytes = l.ring.offset;
  return l;
}

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla
