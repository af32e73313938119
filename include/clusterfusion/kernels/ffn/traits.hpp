// Thread roles, the work split and the shared-memory carve of the fused FFN kernel (docs/ffn.md §1). Tile and panel
// geometry is the pipeline's PanelStage (pipeline/weight_stream.hpp); what depends on runtime shapes (batch capacity,
// cluster size and count) is computed on the host by make_split() / make_layout() and passed in KernelParams.
#pragma once
#include <algorithm>
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/kernels/ffn/params.hpp"
#include "clusterfusion/pipeline/cross_cta_sum.hpp"
#include "clusterfusion/pipeline/norm_prologue.hpp"
#include "clusterfusion/pipeline/smem_carve.hpp"
#include "clusterfusion/pipeline/weight_stream.hpp"
#include "clusterfusion/primitives/cluster_reduce_scatter.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::ffn {

namespace pl = cf::pipeline;

// Warps: 8 consumers, the producer, and the arrival warp, which takes the release fence and the counter atomic of
// every output block of the down projection off the consumers' path (docs/ffn.md §2: on the H100 the fence + atomic
// per output group cost ~1.6 µs each when the consumers waited for them).
inline constexpr int kArrivalWarp = pl::kProducerWarp + 1;
inline constexpr int kThreads = pl::kThreads + 32;  // 320

inline constexpr int kMaxClusterSize = 8;     // cluster sizes 2, 4, 8 (loops over ranks unroll to this bound)
inline constexpr int kClustersPerChunk = pl::kSlicesPerChunk;  // the last arriver sums the partials 8 at a time
inline constexpr int kPreferredStages = 6;    // 96 KB in flight per SM: the launcher avoids splits with fewer
inline constexpr int kMaxBlocks = 128;        // output blocks of a rank's down slice (two mbarriers each)
// Output rows x tokens of one block (at least one down group): the sums of a CTA's last blocks are the tail of the
// kernel, and 64 x 9 chunks of 8 clusters is one load per consumer thread (128 rows would be two rounds); more blocks
// cost only more arrivals (the arrival warp takes up to 32 at once).
inline constexpr int kBlockElements = 64;

// Small per-CTA scalars.
struct SmallBuffers {
  float sumsq[kMaxClusterSize * kMaxBatch];      // [rank][token] partial sums of squares (all-gathered)
  float inv_rms[kMaxBatch];
  float norm_red[kMaxBatch][pl::kNormPartsMax];  // per warp partial sums of squares
  uint8_t block_last[kMaxBlocks];                // written by the arrival warp: this CTA arrived last at the block
  int32_t decided_end;                           // blocks [0, decided_end) have a decision (consumer thread 0)
  uint32_t abort;                                // a wait of this CTA expired: the others return at once
  uint32_t pad[2];
};

// Every mbarrier of the kernel, at offset 0 of shared memory (pipeline::SmemHead).
struct Barriers {
  dev::Mbarrier full[pl::kMaxStages], empty[pl::kMaxStages];  // the ring
  dev::Mbarrier stored[kMaxBlocks];   // by visit position: the consumers stored the block's partials
  dev::Mbarrier decided[kMaxBlocks];  // by visit position: the arrival warp knows whether this CTA was last
  dev::Mbarrier exchange[2];          // the collectives' workspace (prim::ClusterReduceScatter)
};
static_assert(sizeof(dev::Mbarrier) * 2 == prim::ClusterReduceScatter<0, float>::workspace_bytes());

// Where every buffer lives in dynamic shared memory; identical in every CTA of the cluster.
struct Layout {
  using Head = pl::SmemHead<Barriers>;
  pl::SmemSlot<SmallBuffers> small;
  // Region X: x_s (this rank's K-slice of the normed input) during gate/up; afterwards act_s (the cluster's whole
  // activation slice; rows sized for whole 32-column units, the columns past F_c never read). Peers write act_s only
  // after this CTA's gate/up.
  pl::SmemSlot<uint8_t> x, act;
  // Region P: the gate/up partials [2 F_c][batch] (read by the peers until the activation exchange); afterwards the
  // last arriver's per-chunk sums of a block [chunks][block rows][batch].
  pl::SmemSlot<float> part, fin;
  pl::SmemSlot<float> scratch;          // k-group scratch, double-buffered (consecutive groups alternate)
  pl::SmemSlot<uint8_t> ring;
  uint32_t x_stride, act_stride;        // bytes per token row of x_s / act_s
  uint32_t fixed_bytes;                 // everything before the ring
};

// The work split of a launch (identical on the host and the device) and the panel geometry of its matrices.
struct Split {
  int32_t cluster_size, clusters;
  int32_t ffn_tiles_max;     // largest F-slice of a cluster, in 16-row tiles
  int32_t hidden_units_max;  // largest K-slice / output-row slice of a rank, in 32-column units
  int32_t gu_cols, gu_tiles;      // gate/up: chunk width (32 U, at most the K-slice) and tiles per stage
  int32_t down_cols, down_tiles;  // down: chunk width (the F-slice, at most 256) and tiles per stage
  int32_t block_groups;           // down groups (of down_tiles tiles) per output block
  int32_t blocks_max;             // output blocks of the largest rank slice (counter stride)
  int32_t block_rows;             // output rows of a full block
};

inline Split make_split(const Shape& s, int cluster_size, int clusters, int stage_units, int max_batch) {
  Split sp{};
  sp.cluster_size = cluster_size;
  sp.clusters = clusters;
  sp.ffn_tiles_max = pl::ceil_div(s.ffn_hidden / pl::kTileRows, clusters);
  sp.hidden_units_max = pl::ceil_div(s.hidden / pl::kUnitCols, cluster_size);
  sp.gu_cols = std::min(stage_units * pl::kUnitCols, sp.hidden_units_max * pl::kUnitCols);
  sp.gu_tiles = pl::panel_tiles(sp.gu_cols);
  sp.down_cols = std::min(pl::kMaxChunkCols, sp.ffn_tiles_max * pl::kTileRows);
  sp.down_tiles = pl::panel_tiles(sp.down_cols);
  const int32_t group_rows = sp.down_tiles * pl::kTileRows;
  const int32_t groups_max = pl::ceil_div(sp.hidden_units_max * 2, sp.down_tiles);  // output tiles / M
  sp.block_groups = std::max(1, kBlockElements / (group_rows * max_batch));
  sp.block_groups = std::max(sp.block_groups, pl::ceil_div(groups_max, kMaxBlocks));
  sp.blocks_max = pl::ceil_div(groups_max, sp.block_groups);
  sp.block_rows = sp.block_groups * group_rows;
  return sp;
}

// The box widths of gate/up (chunks of a rank's K-slice) and of down (chunks of a cluster's F-slice).
inline pl::ChunkWidths gate_up_widths(const Shape& s, const Split& sp) {
  const int32_t units = s.hidden / pl::kUnitCols;
  const int32_t lo = units / sp.cluster_size * pl::kUnitCols, hi = sp.hidden_units_max * pl::kUnitCols;
  return pl::chunk_widths(sp.gu_cols, lo, hi);
}
inline pl::ChunkWidths down_widths(const Shape& s, const Split& sp) {
  const int32_t tiles = s.ffn_hidden / pl::kTileRows;
  const int32_t lo = tiles / sp.clusters * pl::kTileRows, hi = sp.ffn_tiles_max * pl::kTileRows;
  return pl::chunk_widths(sp.down_cols, lo, hi);
}

// Bytes the busiest CTA moves: the weights of its F-slice x K-slice (gate and up) and of its output rows x F-slice
// (down), plus the fp32 partial of its output rows it writes for the cross-cluster sum (docs/ffn.md §2). The
// quantity the launcher minimises.
inline int64_t max_cta_bytes(const Split& sp, int max_batch) {
  const int64_t f_rows = int64_t(sp.ffn_tiles_max) * pl::kTileRows;
  const int64_t k_cols = int64_t(sp.hidden_units_max) * pl::kUnitCols;
  return 2 * 3 * f_rows * k_cols + 4 * k_cols * max_batch;
}

inline Layout make_layout(int max_batch, const Split& sp) {
  Layout l{};
  pl::SmemCarve carve(sizeof(Barriers));
  l.small = carve.take<SmallBuffers>(1);

  const int32_t f_rows = sp.ffn_tiles_max * pl::kTileRows;
  const int32_t f_cols_padded = pl::ceil_div(f_rows, pl::kUnitCols) * pl::kUnitCols;
  l.x_stride = pl::padded_row_stride(uint64_t(sp.hidden_units_max) * pl::kUnitCols * 2);
  l.act_stride = pl::padded_row_stride(uint64_t(f_cols_padded) * 2);
  pl::SmemRegion x = carve.region();
  l.x = x.take<uint8_t>(uint64_t(max_batch) * l.x_stride);
  x.restart();
  l.act = x.take<uint8_t>(uint64_t(max_batch) * l.act_stride);
  carve.close(x);

  const uint64_t chunks = uint64_t(pl::ceil_div(sp.clusters, kClustersPerChunk));
  pl::SmemRegion part = carve.region();
  l.part = part.take<float>(uint64_t(2) * f_rows * max_batch);
  part.restart();
  l.fin = part.take<float>(chunks * uint64_t(sp.block_rows) * max_batch);
  carve.close(part);

  l.scratch = carve.take<float>(2 * uint64_t(pl::group_scratch_bytes(max_batch)) / 4);
  l.ring = carve.take<uint8_t>(0, 1024);
  l.fixed_bytes = l.ring.offset;
  return l;
}

// Ring stages that fit beside the other buffers in 227 KB (at most kMaxStages, at most max_stages when > 0).
inline int ring_stages(const Layout& l, int max_stages) {
  const size_t budget = 227 * 1024;
  const int fit = l.fixed_bytes < budget ? int((budget - l.fixed_bytes) / pl::kStageBytes) : 0;
  int stages = std::min(fit, pl::kMaxStages);
  if (max_stages > 0) stages = std::min(stages, max_stages);
  return stages;
}

}  // namespace cf::kernels::ffn
