// Thread roles, the work split and the shared-memory carve of the fused FFN kernel (docs/ffn.md §1). Tile and panel
// geometry is in weight_stream.hpp; what depends on runtime shapes (batch capacity, cluster size and count) is
// computed on the host by make_split() / make_layout() and passed in KernelParams.
#pragma once
#include <algorithm>
#include <cstdint>

#include "clusterfusion/kernels/ffn/params.hpp"
#include "clusterfusion/kernels/ffn/weight_stream.hpp"

namespace cf::kernels::ffn {

namespace ws = cf::kernels::weight_stream;

// Warps: 8 consumers, the producer, and the arrival warp, which takes the release fence and the counter atomic of
// every output block of the down projection off the consumers' path (docs/ffn.md §2: on the H100 the fence + atomic
// per output group cost ~1.6 µs each when the consumers waited for them).
inline constexpr int kArrivalWarp = ws::kProducerWarp + 1;
inline constexpr int kThreads = ws::kThreads + 32;  // 320

inline constexpr int kMaxClusterSize = 8;     // cluster sizes 2, 4, 8 (loops over ranks unroll to this bound)
inline constexpr int kExchangeBarriers = 3;   // sumsq, part, act (each used once per launch)
inline constexpr int kClustersPerChunk = 8;   // the last arriver sums the clusters' partials 8 at a time
inline constexpr int kPreferredStages = 6;    // 96 KB in flight per SM: the launcher avoids splits with fewer
inline constexpr int kMaxBlocks = 128;        // output blocks of a rank's down slice (two mbarriers each)
// Output rows x tokens of one block (at least one down group): the sums of a CTA's last blocks are the tail of the
// kernel, and 64 x 9 chunks of 8 clusters is one load per consumer thread (128 rows would be two rounds); more blocks
// cost only more arrivals (the arrival warp takes up to 32 at once).
inline constexpr int kBlockElements = 64;

// Small per-CTA scalars.
struct SmallBuffers {
  float sumsq_local[kMaxBatch];     // this CTA's sum of squares per token (read by peers)
  float inv_rms[kMaxBatch];
  float norm_red[kMaxBatch][8];     // per warp partial sums of squares
  uint8_t block_last[kMaxBlocks];   // written by the arrival warp: this CTA arrived last at the block
  int32_t decided_end;              // blocks [0, decided_end) have a decision (consumer thread 0 broadcasts)
  uint32_t abort;                   // a wait of this CTA expired: the others return at once (prim::WaitLimit)
  uint32_t pad[2];
};

// Byte offsets of every buffer in dynamic shared memory; identical in every CTA of the cluster.
struct Layout {
  uint32_t off_small, off_x, off_part, off_scratch, off_ring;
  uint32_t x_stride, act_stride;
  uint32_t fixed_bytes;  // everything before the ring
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
  sp.ffn_tiles_max = ws::ceil_div(s.ffn_hidden / ws::kTileRows, clusters);
  sp.hidden_units_max = ws::ceil_div(s.hidden / ws::kUnitCols, cluster_size);
  sp.gu_cols = std::min(stage_units * ws::kUnitCols, sp.hidden_units_max * ws::kUnitCols);
  sp.gu_tiles = ws::panel_tiles(sp.gu_cols);
  sp.down_cols = std::min(ws::kMaxChunkCols, sp.ffn_tiles_max * ws::kTileRows);
  sp.down_tiles = ws::panel_tiles(sp.down_cols);
  const int32_t group_rows = sp.down_tiles * ws::kTileRows;
  const int32_t groups_max = ws::ceil_div(sp.hidden_units_max * 2, sp.down_tiles);  // output tiles / M
  sp.block_groups = std::max(1, kBlockElements / (group_rows * max_batch));
  sp.block_groups = std::max(sp.block_groups, ws::ceil_div(groups_max, kMaxBlocks));
  sp.blocks_max = ws::ceil_div(groups_max, sp.block_groups);
  sp.block_rows = sp.block_groups * group_rows;
  return sp;
}

// The box widths of gate/up (chunks of a rank's K-slice) and of down (chunks of a cluster's F-slice).
inline ws::ChunkWidths gate_up_widths(const Shape& s, const Split& sp) {
  const int32_t units = s.hidden / ws::kUnitCols;
  const int32_t lo = units / sp.cluster_size * ws::kUnitCols, hi = sp.hidden_units_max * ws::kUnitCols;
  return ws::chunk_widths(sp.gu_cols, lo, hi);
}
inline ws::ChunkWidths down_widths(const Shape& s, const Split& sp) {
  const int32_t tiles = s.ffn_hidden / ws::kTileRows;
  const int32_t lo = tiles / sp.clusters * ws::kTileRows, hi = sp.ffn_tiles_max * ws::kTileRows;
  return ws::chunk_widths(sp.down_cols, lo, hi);
}

// Bytes the busiest CTA moves: the weights of its F-slice x K-slice (gate and up) and of its output rows x F-slice
// (down), plus the fp32 partial of its output rows it writes for the cross-cluster sum (docs/ffn.md §2). The
// quantity the launcher minimises.
inline int64_t max_cta_bytes(const Split& sp, int max_batch) {
  const int64_t f_rows = int64_t(sp.ffn_tiles_max) * ws::kTileRows;
  const int64_t k_cols = int64_t(sp.hidden_units_max) * ws::kUnitCols;
  return 2 * 3 * f_rows * k_cols + 4 * k_cols * max_batch;
}

inline Layout make_layout(int max_batch, const Split& sp) {
  Layout l{};
  uint32_t off = 0;
  auto take = [&](uint64_t bytes, uint32_t align = 128) {
    off = ws::align_up(off, align);
    const uint32_t at = off;
    off += uint32_t(bytes);
    return at;
  };
  // mbarriers at offset 0: full, empty (ring), the exchanges, stored + decided (per output block)
  take(uint64_t(2 * ws::kMaxStages + kExchangeBarriers + 2 * kMaxBlocks) * 8);
  l.off_small = take(sizeof(SmallBuffers));

  // Region X: x_s (this rank's K-slice of the normed input) during gate/up; afterwards act_s (the cluster's whole
  // activation slice; rows sized for whole 32-column units, the columns past F_c never read). Peers write act_s only
  // after this CTA's gate/up.
  const int32_t f_rows = sp.ffn_tiles_max * ws::kTileRows;
  const int32_t f_cols_padded = ws::ceil_div(f_rows, ws::kUnitCols) * ws::kUnitCols;
  l.x_stride = ws::padded_row_stride(uint64_t(sp.hidden_units_max) * ws::kUnitCols * 2);
  l.act_stride = ws::padded_row_stride(uint64_t(f_cols_padded) * 2);
  l.off_x = take(uint64_t(max_batch) * std::max(l.x_stride, l.act_stride));

  // Region P: the gate/up partials [2 F_c][batch] (pulled by the peers until act_bar); afterwards the last arriver's
  // per-chunk sums of a block [chunks][block rows][batch].
  const uint64_t part_bytes = uint64_t(2) * f_rows * max_batch * 4;
  const uint64_t chunks = uint64_t(ws::ceil_div(sp.clusters, kClustersPerChunk));
  const uint64_t finish_bytes = chunks * uint64_t(sp.block_rows) * max_batch * 4;
  l.off_part = take(std::max(part_bytes, finish_bytes));

  // k-group scratch, double-buffered (consecutive groups alternate)
  l.off_scratch = take(2 * uint64_t(ws::group_scratch_bytes(max_batch)));

  l.off_ring = ws::align_up(off, 1024);
  l.fixed_bytes = l.off_ring;
  return l;
}

// Ring stages that fit beside the other buffers in 227 KB (at most kMaxStages, at most max_stages when > 0).
inline int ring_stages(const Layout& l, int max_stages) {
  const size_t budget = 227 * 1024;
  const int fit = l.fixed_bytes < budget ? int((budget - l.fixed_bytes) / ws::kStageBytes) : 0;
  int stages = std::min(fit, ws::kMaxStages);
  if (max_stages > 0) stages = std::min(stages, max_stages);
  return stages;
}

}  // namespace cf::kernels::ffn
