// Thread roles and the shared-memory carve of the fused FFN kernel (docs/ffn.md §1). Tile and stage geometry is in
// weight_stream.hpp; what depends on runtime shapes (batch capacity, cluster size and count) is computed on the host
// by make_layout() and passed in KernelParams.
#pragma once
#include <algorithm>
#include <cstdint>

#include "clusterfusion/kernels/ffn/params.hpp"
#include "clusterfusion/kernels/ffn/weight_stream.hpp"

namespace cf::kernels::ffn {

namespace ws = cf::kernels::weight_stream;

inline constexpr int kMaxClusterSize = 8;     // cluster sizes 2, 4, 8 (loops over ranks unroll to this bound)
inline constexpr int kExchangeBarriers = 3;   // sumsq, part, act (each used once per launch)
inline constexpr int kClustersPerChunk = 8;   // the last arriver sums the clusters' partials 8 at a time
inline constexpr int kPreferredStages = 6;    // 96 KB in flight per SM: the launcher avoids splits with fewer

// Small per-CTA scalars.
struct SmallBuffers {
  float sumsq_local[kMaxBatch];     // this CTA's sum of squares per token (read by peers)
  float inv_rms[kMaxBatch];
  float norm_red[kMaxBatch][8];     // per warp partial sums of squares
  uint32_t last_flag;               // the output group this CTA sums (broadcast; ~0u: none)
  uint32_t pad[3];
};

// Byte offsets of every buffer in dynamic shared memory; identical in every CTA of the cluster.
struct Layout {
  uint32_t off_small, off_x, off_part, off_scratch, off_ring;
  uint32_t x_stride, act_stride;
  uint32_t fixed_bytes;  // everything before the ring
};

// The work split of a launch (identical on the host and the device).
struct Split {
  int32_t cluster_size, clusters;
  int32_t ffn_tiles_max;     // largest F-slice of a cluster, in 16-row tiles
  int32_t hidden_units_max;  // largest K-slice / output-row slice of a rank, in 32-column units
};

inline Split make_split(const Shape& s, int cluster_size, int clusters) {
  Split sp{};
  sp.cluster_size = cluster_size;
  sp.clusters = clusters;
  sp.ffn_tiles_max = ws::ceil_div(s.ffn_hidden / ws::kTileRows, clusters);
  sp.hidden_units_max = ws::ceil_div(s.hidden / ws::kUnitCols, cluster_size);
  return sp;
}

// Weight bytes the busiest CTA streams (gate + up rows of its F-slice x its K-slice, its output rows x the F-slice
// rounded up to whole 32-column units): the quantity the launcher minimises (docs/ffn.md §2).
inline int64_t max_cta_weight_bytes(const Shape& s, const Split& sp) {
  const int64_t f_rows = int64_t(sp.ffn_tiles_max) * ws::kTileRows;
  const int64_t k_cols = int64_t(sp.hidden_units_max) * ws::kUnitCols;
  const int64_t f_cols_loaded = int64_t(ws::ceil_div(int32_t(f_rows), ws::kUnitCols)) * ws::kUnitCols;
  (void)s;
  return 2 * (2 * f_rows * k_cols + k_cols * f_cols_loaded);
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
  take(uint64_t(2 * ws::kMaxStages + kExchangeBarriers) * 8);  // mbarriers at offset 0
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
  // per-chunk sums [chunks][16 M][batch] (M <= 8).
  const uint64_t part_bytes = uint64_t(2) * f_rows * max_batch * 4;
  const uint64_t chunks = uint64_t(ws::ceil_div(sp.clusters, kClustersPerChunk));
  const uint64_t finish_bytes = chunks * 8 * ws::kTileRows * max_batch * 4;
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
