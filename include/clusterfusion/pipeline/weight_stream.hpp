// The weight stream: a weight matrix streamed through the ring (ring.hpp) in 16 KB stages and multiplied with a small
// batch of activation rows on the tensor cores (mma.hpp, K32 fragments: weights = A, tokens = B). Two named stage
// layouts, one loader and one MMA each, on one fragment core (mma_k32_tokens):
//
// PanelStage (FFN, LM head; docs/ffn.md §1). A matrix W [rows, cols] (row-major) is cut into tiles of 16 rows. An
//   item is a *panel*: up to M consecutive tiles x one *chunk* of `cols` columns (cols <= 256, a multiple of 16), one
//   TMA box {cols, 16} per tile, so every box reads 16 row segments of 2 * cols contiguous bytes (narrow boxes were
//   slow on the H100: docs/ffn.md §2). Tile-major, row pitch 2 * cols: tile t at byte t * 32 * cols. M * cols <= 512
//   keeps a stage within 16 KB. A slice's last chunk may be narrower (its own tensor map: BoxMaps). Warp w takes tile
//   w % M and the 32-column units 2 (w / M), 2 (w / M) + 1 (its "k-group"); the k-group partial sums of each
//   (row, token) are added in k-group order at the end of a group (store_group_partials + group_value).
//
// UnitStage (attention; docs/attention.md §1). An item is up to U boxes of 32 columns x R rows side by side (R = the
//   head dim, 64-byte rows: conflict-free A loads without swizzle). Warp w takes m-tile w % (R / 16) and the units
//   of its k-group w / (R / 16).
#pragma once
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/device/tensor_map.hpp"
#include "clusterfusion/pipeline/mma.hpp"
#include "clusterfusion/pipeline/ring.hpp"
#include "clusterfusion/pipeline/roles.hpp"
#include "clusterfusion/pipeline/smem_carve.hpp"

namespace cf::pipeline {

inline constexpr int kTileRows = 16;
inline constexpr int kUnitCols = 32;
inline constexpr int kStageBytes = 16 * 1024;
inline constexpr int kMinStages = 4;
inline constexpr int kMaxStages = 16;
inline constexpr int kMaxPanelTiles = 8;                              // M <= 8 (one warp per tile at least)
inline constexpr int kMaxChunkCols = int(dev::kMaxTmaBoxDim);        // 256: a box is at most 256 elements wide
inline constexpr int kStageTileCols = kStageBytes / (kTileRows * 2);  // 512: M * cols of a full stage
inline constexpr int kUnitsPerWarp = 2;                               // units of a panel chunk one warp multiplies
// Boxes of >= 4 KB streamed at the bandwidth share on the H100; 2 KB and 1 KB boxes cost ~0.9 / ~1.5 µs per 16 KB
// stage instead of ~0.75 (bench/results/2026-11-26-b4022ab-h100.txt, docs/ffn.md §2.1).
inline constexpr int kMinFastBoxBytes = 4096;
// Chunks of 128 columns: boxes {128, 16} of 4 KB, 4 tiles per stage; U 8 (8 KB boxes) is the other candidate, measured
// beside it by cf_bench_ffn --quick.
inline constexpr int kDefaultStageUnits = 4;
inline constexpr int kBoxWidths = 3;  // tensor maps per matrix: the full chunk and two tail widths
static_assert(kTileRows * kDefaultStageUnits * kUnitCols * 2 >= kMinFastBoxBytes, "default boxes must be >= 4 KB");

// The ring every streaming kernel uses: 16 KB stages read by the consumer warps.
using WeightRing = Ring<kStageBytes, kConsumerWarps>;

// ---- work splits (identical on the host and in every CTA) ---------------------------------------------------------

CF_HOST_DEVICE int32_t ceil_div(int32_t a, int32_t b) { return (a + b - 1) / b; }

struct Range {
  int32_t begin, end;
  CF_HOST_DEVICE int32_t size() const { return end - begin; }
};
// Part i of `parts` near-equal contiguous parts of [0, total).
CF_HOST_DEVICE Range split_range(int32_t total, int32_t parts, int32_t i) {
  return {int32_t(int64_t(total) * i / parts), int32_t(int64_t(total) * (i + 1) / parts)};
}

// Rows of activation buffers are padded to 64 mod 128 bytes (conflict-free B-fragment loads of tokens g, g+1).
constexpr uint32_t padded_row_stride(uint64_t bytes) { return align_up(bytes, 128) + 64; }

// ---- the fragment core ----------------------------------------------------------------------------------------------

// acc[token tile] += the 16 x 32 weight slice whose row g (at this lane's 8 columns) is a_row_g x the activations of
// tokens nt * 8 + g at act_k (this lane's 8 columns of each token row; act_stride bytes per token). Tokens >= batch
// and, when !in_range, both operands count as zero.
template <typename TW, typename TA, int kBatchTiles>
CF_DEVICE void mma_k32_tokens(const uint8_t* a_row_g, uint32_t pitch, const uint8_t* act_k, uint32_t act_stride,
                              int32_t batch, bool in_range, uint32_t lane, float (&acc)[kBatchTiles][4]) {
  const uint32_t g = lane / 4;
  AFragK32 a{};
  if (in_range) a = load_a_k32<TW, TA>(a_row_g, pitch);
  CF_UNROLL
  for (int nt = 0; nt < kBatchTiles; ++nt) {
    const int32_t token = nt * 8 + int32_t(g);
    dev::U32x4 bx{0, 0, 0, 0};
    if (token < batch && in_range) bx = dev::load16(act_k + uint32_t(token) * act_stride);
    mma_k32<TA>(acc[nt], a, b_k32(bx));
  }
}

// ---- PanelStage: tensor maps and chunk widths ---------------------------------------------------------------------

CF_HOST_DEVICE int32_t panel_tiles(int32_t cols) {  // M for chunks of <= cols: the largest power of two with M cols <= 512
  int32_t m = kMaxPanelTiles;
  while (m > 1 && m * cols > kStageTileCols) m /= 2;
  return m;
}
CF_HOST_DEVICE uint32_t panel_bytes(int32_t tiles, int32_t cols) {
  return uint32_t(tiles) * uint32_t(kTileRows) * uint32_t(cols) * 2u;
}

// The boxes {cols[i], 16} of one matrix: [0] the full chunk width, [1] and [2] the last (narrower) chunk of the two
// kinds of slices a near-equal split makes (0: not needed). A panel of width w uses the map of width w.
struct BoxMaps {
  dev::TensorMap map[kBoxWidths];
  int32_t cols[kBoxWidths];
};
CF_DEVICE const dev::TensorMap& box_map(const BoxMaps& m, int32_t cols) {
  return cols == m.cols[0] ? m.map[0] : cols == m.cols[1] ? m.map[1] : m.map[2];
}
// The chunk widths a slice of `slice_cols` columns is cut into: full chunks of `chunk_cols`, then the rest.
CF_HOST_DEVICE int32_t chunk_width(int32_t slice_cols, int32_t chunk_cols, int32_t chunk) {
  const int32_t left = slice_cols - chunk * chunk_cols;
  return left < chunk_cols ? left : chunk_cols;
}

// Host: a stage_units choice U (chunks of 32 U columns).
constexpr bool valid_stage_units(int units) { return units == 2 || units == 4 || units == 8; }
struct ChunkWidths {
  int32_t cols[kBoxWidths];
};
// The box widths of a matrix whose slices (of slice_lo or slice_hi columns) are cut into chunks of chunk_cols.
constexpr ChunkWidths chunk_widths(int32_t chunk_cols, int32_t slice_lo, int32_t slice_hi) {
  ChunkWidths w{{chunk_cols, slice_lo % chunk_cols, slice_hi % chunk_cols}};
  if (w.cols[2] == w.cols[1]) w.cols[2] = 0;
  return w;
}
// Host: the maps of a row-major matrix [height, width] with boxes {cols, 16} for every non-zero width.
inline BoxMaps make_box_maps(const void* base, DType dtype, uint64_t width, uint64_t height, const ChunkWidths& widths) {
  BoxMaps m{};
  for (int i = 0; i < kBoxWidths; ++i) {
    m.cols[i] = widths.cols[i];
    if (widths.cols[i] > 0)
      m.map[i] = dev::make_tensor_map_2d(base, dtype, width, height, width * dtype_bytes(dtype),
                                         uint32_t(widths.cols[i]), uint32_t(kTileRows));
  }
  return m;
}

// ---- PanelStage: producer and consumers ----------------------------------------------------------------------------

// Producer warp (all lanes): tiles [row0, row0 + 16 n_tiles) x columns [col0, col0 + cols) into the item's stage.
CF_DEVICE void load_panel(const WeightRing& ring, PipelineState& st, int32_t& issued_end, uint32_t site,
                          const BoxMaps& maps, int32_t cols, int32_t row0, int32_t n_tiles, int32_t col0) {
  const uint32_t box_bytes = panel_bytes(1, cols);
  const bool issue = ring.producer_acquire(st, uint32_t(n_tiles) * box_bytes, site);
  if (issue && dev::lane_id() == 0) {
    uint8_t* dst = ring.stage(st);
    const dev::TensorMap& map = box_map(maps, cols);
    for (int32_t t = 0; t < n_tiles; ++t)
      dev::tma_load_2d(dst + uint32_t(t) * box_bytes, map, col0, row0 + t * kTileRows, ring.full_barrier(st));
  }
  ring.producer_commit(st, issue, issued_end);
}

// Consumer warp: acc += this warp's tile x its units of a panel (n_tiles valid tiles of `cols` columns, `tiles` = M
// per stage) times act[token][act_col0 + c ...]; chunk columns past cols and columns act_col0 + c >= col_limit (a
// multiple of 8) count as zero.
template <typename TW, typename TA, int kBatchTiles>
CF_DEVICE void panel_mma(const uint8_t* stage, int32_t tiles, int32_t n_tiles, int32_t cols, const uint8_t* act,
                         uint32_t act_stride, int32_t act_col0, int32_t col_limit, int32_t batch, uint32_t warp,
                         uint32_t lane, float (&acc)[kBatchTiles][4]) {
  const int32_t mt = int32_t(warp) % tiles, kg = int32_t(warp) / tiles;
  if (mt >= n_tiles) return;
  const uint32_t g = lane / 4, t = lane % 4;
  const uint32_t pitch = uint32_t(cols) * 2;
  const uint8_t* tile = stage + uint32_t(mt) * uint32_t(kTileRows) * pitch;
  const int32_t limit = col_limit - act_col0 < cols ? col_limit - act_col0 : cols;  // chunk columns that count
  CF_UNROLL
  for (int uu = 0; uu < kUnitsPerWarp; ++uu) {
    const int32_t c = (kg * kUnitsPerWarp + uu) * kUnitCols + int32_t(t) * 8;  // this lane's 8 chunk columns
    if ((kg * kUnitsPerWarp + uu) * kUnitCols < cols)
      mma_k32_tokens<TW, TA, kBatchTiles>(tile + g * pitch + uint32_t(c) * 2, pitch,
                                          act + uint32_t(act_col0 + c) * 2, act_stride, batch, c < limit, lane, acc);
  }
}

// Consumer warp, end of a group: its k-group's partial sums -> scratch[kg][row in group][token] (fp32, `batch` per
// row, 16 M rows per k-group).
template <int kBatchTiles>
CF_DEVICE void store_group_partials(float* scratch, int32_t tiles, int32_t n_tiles, int32_t batch, uint32_t warp,
                                    uint32_t lane, const float (&acc)[kBatchTiles][4]) {
  const int32_t mt = int32_t(warp) % tiles, kg = int32_t(warp) / tiles;
  if (mt >= n_tiles) return;
  float* base = scratch + kg * tiles * kTileRows * batch;
  CF_UNROLL
  for (int nt = 0; nt < kBatchTiles; ++nt)
    for_each_accumulator(acc[nt], lane, [&](int32_t row, int32_t col, float v) {
      const int32_t token = nt * 8 + col;
      if (token < batch) base[(mt * kTileRows + row) * batch + token] = v;
    });
}
// Element e = row * batch + token of a group: its k-group partials added in k-group order.
CF_DEVICE float group_value(const float* scratch, int32_t tiles, int32_t batch, int32_t e) {
  const int32_t kg_stride = tiles * kTileRows * batch;
  float sum = scratch[e];
  for (int32_t kg = 1; kg < kConsumerWarps / tiles; ++kg) sum += scratch[kg * kg_stride + e];
  return sum;
}
// Bytes of one scratch buffer (all k-groups of a group) for `max_batch` tokens.
constexpr uint32_t group_scratch_bytes(int max_batch) {
  return uint32_t(kConsumerWarps * kTileRows) * uint32_t(max_batch) * 4;  // (8 / M) k-groups x 16 M rows
}

// ---- UnitStage: producer and consumers -----------------------------------------------------------------------------

// Producer warp (all lanes): n_units boxes {32, R} of `map` at columns x0 + 32 u, row y, side by side.
CF_DEVICE void load_units(const WeightRing& ring, PipelineState& st, int32_t& issued_end, uint32_t site,
                          const dev::TensorMap& map, int32_t x0, int32_t y, int32_t n_units, uint32_t unit_bytes) {
  const bool issue = ring.producer_acquire(st, uint32_t(n_units) * unit_bytes, site);
  if (issue && dev::lane_id() == 0) {
    uint8_t* dst = ring.stage(st);
    for (int32_t u = 0; u < n_units; ++u)
      dev::tma_load_2d(dst + uint32_t(u) * unit_bytes, map, x0 + u * kUnitCols, y, ring.full_barrier(st));
  }
  ring.producer_commit(st, issue, issued_end);
}

// Consumer warp: acc += its m-tile x its k-group's units (of the nu in the stage) times act[token][act_col0 + ...].
// kRows: R, the rows of a box; kUnitsPerKGroup: units of one k-group.
template <typename TW, typename TA, int kBatchTiles, int kRows, int kUnitsPerKGroup>
CF_DEVICE void unit_stage_mma(const uint8_t* stage, int32_t nu, const uint8_t* act, uint32_t act_stride,
                              int32_t act_col0, int32_t batch, uint32_t warp, uint32_t lane,
                              float (&acc)[kBatchTiles][4]) {
  constexpr int kMTiles = kRows / 16;
  constexpr uint32_t kUnitBytes = uint32_t(kUnitCols * kRows * 2), kPitch = kUnitCols * 2;
  const int32_t mt = int32_t(warp) % kMTiles, kg = int32_t(warp) / kMTiles;
  const uint32_t g = lane / 4, t = lane % 4;
  CF_UNROLL
  for (int uu = 0; uu < kUnitsPerKGroup; ++uu) {
    const int32_t u = kg * kUnitsPerKGroup + uu;
    if (u < nu)
      mma_k32_tokens<TW, TA, kBatchTiles>(stage + u * kUnitBytes + (mt * 16 + g) * kPitch + t * 16, kPitch,
                                          act + uint32_t(act_col0 + u * kUnitCols + t * 8) * 2, act_stride, batch,
                                          true, lane, acc);
  }
}

}  // namespace cf::pipeline
