// Streaming a weight matrix through a ring of shared-memory stages and multiplying it with a small batch of
// activation rows on the tensor cores: the device-side building blocks of the FFN block and the LM head
// (docs/ffn.md §1). Written only against the device API (nvcc sm_90a and the CPU emulator).
//
// Geometry. A weight matrix W [rows, cols] (row-major) is cut into tiles of 16 rows. A ring *item* (one stage) is a
// *panel*: up to M consecutive tiles x one *chunk* of `cols` consecutive columns (cols <= 256, a multiple of 16),
// loaded as one TMA box {cols, 16} per tile, so every box reads 16 row segments of 2 * cols contiguous bytes (the
// H100 measurement of the first design, whose boxes were 64 bytes wide, showed narrow and small boxes to be slow:
// docs/ffn.md §2). A stage is tile-major and row-major inside a tile (row pitch 2 * cols bytes): tile t at byte
// t * 32 * cols, row r at + r * 2 * cols. M * cols <= 512 keeps a stage within 16 KB. A slice's last chunk may be
// narrower than the others: each width has its own tensor map (BoxMaps), so no box reads past the slice.
//
// Work of the 8 consumer warps on a stage: warp w takes tile w % M and the 32-column units 2 (w / M) and
// 2 (w / M) + 1 of the chunk (its "k-group", 8 / M of them; M * cols <= 512 means every unit has a warp):
// acc[token tile] += W_tile x act^T with mma.m16n8k16 (rows = m, tokens = n, the 16 columns of a k-step permuted
// identically in A and B so each lane loads 16 contiguous bytes; rows of 2 * cols bytes cost at most 2-way bank
// conflicts on these loads, which the streaming-bound consumers absorb). At the end of a group (all chunks of the
// same tiles) the k-group partial sums of each (row, token) are added in k-group order (store_group_partials +
// group_value).
#pragma once
#include <cmath>
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/primitives/bounded_wait.hpp"

namespace cf::kernels::weight_stream {
namespace dev = cf::dev;

inline constexpr int kTileRows = 16;
inline constexpr int kUnitCols = 32;
inline constexpr int kUnitRowBytes = kUnitCols * 2;  // 64
inline constexpr int kStageBytes = 16 * 1024;
inline constexpr int kMaxPanelTiles = 8;                          // M <= 8 (one warp per tile at least)
inline constexpr int kMaxChunkCols = int(dev::kMaxTmaBoxDim);    // 256: a box is at most 256 elements wide
inline constexpr int kStageTileCols = kStageBytes / (kTileRows * 2);  // 512: M * cols of a full stage
inline constexpr int kConsumerWarps = 8;
inline constexpr int kConsumerThreads = kConsumerWarps * 32;
inline constexpr int kProducerWarp = kConsumerWarps;  // the warp after the consumers issues every load
inline constexpr int kThreads = kConsumerThreads + 32;  // consumers + producer (a kernel may add warps after them)
inline constexpr int kUnitsPerWarp = 2;  // units of a chunk one consumer warp multiplies
// Boxes of >= 4 KB streamed at the bandwidth share on the H100; 2 KB and 1 KB boxes cost ~0.9 / ~1.5 µs per 16 KB
// stage instead of ~0.75 (bench/results/2026-11-26-b4022ab-h100.txt, docs/ffn.md §2.1).
inline constexpr int kMinFastBoxBytes = 4096;
// Chunks of 128 columns: boxes {128, 16} of 4 KB, 4 tiles per stage; U 8 (8 KB boxes) is the other candidate, measured
// beside it by cf_bench_ffn --quick.
inline constexpr int kDefaultStageUnits = 4;
inline constexpr int kMinStages = 4;
inline constexpr int kMaxStages = 16;
inline constexpr int kBoxWidths = 3;  // tensor maps per matrix: the full chunk and two tail widths

static_assert(kTileRows * kDefaultStageUnits * kUnitCols * 2 >= kMinFastBoxBytes, "default boxes must be >= 4 KB");

CF_HOST_DEVICE int32_t ceil_div(int32_t a, int32_t b) { return (a + b - 1) / b; }

// Tiles per stage (M) for chunks of at most `cols` columns: the largest power of two <= 8 with M * cols <= 512.
CF_HOST_DEVICE int32_t panel_tiles(int32_t cols) {
  int32_t m = kMaxPanelTiles;
  while (m > 1 && m * cols > kStageTileCols) m /= 2;
  return m;
}
// Bytes of a panel of `tiles` tiles x `cols` columns (what its boxes deliver).
CF_HOST_DEVICE uint32_t panel_bytes(int32_t tiles, int32_t cols) {
  return uint32_t(tiles) * uint32_t(kTileRows) * uint32_t(cols) * 2u;
}

// ---- element types ----------------------------------------------------------------------------------------------

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

// Data that other CTAs wrote during this launch (after the counter handshake) is read with volatile loads, which do
// not allocate in (or hit) the SM's L1: a line loaded earlier for a neighbouring group could hold stale values.
CF_DEVICE dev::U32x4 load16_volatile(const void* p) {
  const volatile uint32_t* v = static_cast<const volatile uint32_t*>(p);
  return {v[0], v[1], v[2], v[3]};
}
template <typename T>
CF_DEVICE T load_volatile(const T* p) {
  return *static_cast<const volatile T*>(p);
}

// ---- work splits ------------------------------------------------------------------------------------------------

struct Range {
  int32_t begin, end;
  CF_HOST_DEVICE int32_t size() const { return end - begin; }
};
// Part i of `parts` near-equal contiguous parts of [0, total).
CF_HOST_DEVICE Range split_range(int32_t total, int32_t parts, int32_t i) {
  return {int32_t(int64_t(total) * i / parts), int32_t(int64_t(total) * (i + 1) / parts)};
}

// ---- tensor maps ----------------------------------------------------------------------------------------------------

// The boxes {cols[i], 16} of one weight matrix: [0] the full chunk width, [1] and [2] the last (narrower) chunk of
// the two kinds of slices a near-equal split makes (0: not needed). A panel of width w uses the map of width w.
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

// ---- the ring -----------------------------------------------------------------------------------------------------

// Item `it` of the load schedule lives in stage it % stages; its full/empty barriers complete once per lap. Every
// consumer warp reads every item, so the previous use of a stage was waited for by the same warp (the parity wait
// cannot pass on a stale phase). Waits are bounded (prim::bounded_wait): `limit` names the kernel's waits (its
// status word, budget and abort flag; code 0: the callers give the site).
struct Ring {
  dev::Mbarrier* full;   // [stages], count 1 (the producer's arrive_expect_tx)
  dev::Mbarrier* empty;  // [stages], count kConsumerWarps
  uint8_t* stages_base;
  int32_t stages;
  prim::WaitLimit limit;

  CF_DEVICE uint8_t* stage(int32_t it) const { return stages_base + uint32_t(it % stages) * uint32_t(kStageBytes); }
  CF_DEVICE uint32_t parity(int32_t it) const { return uint32_t((it / stages) & 1); }
  // Producer: waits until the consumers released the previous lap's item in this stage (`site`: a consequence wait,
  // the consumers are late because something else is); true if item `it` is to be issued: not after an abort.
  CF_DEVICE bool acquire(int32_t it, uint32_t site) const {
    if (it >= stages) {
      prim::WaitLimit release_limit = limit;
      release_limit.consequence = true;
      (void)prim::bounded_wait(empty[it % stages], uint32_t(((it / stages) - 1) & 1), release_limit, site);
    }
    return !prim::abort_raised(limit);
  }
  // Consumer warp: waits until item `it` has landed; false (every lane) if it must not be read (an abort).
  CF_DEVICE bool wait_full(int32_t it, uint32_t site) const {
    return dev::all_sync(dev::kFullMask, prim::bounded_wait(full[it % stages], parity(it), limit, site));
  }
  // Consumer warp: done with item `it` (every consumer warp calls this once per item, after wait_full).
  CF_DEVICE void release(int32_t it, uint32_t lane) const {
    dev::syncwarp();
    if (lane == 0) empty[it % stages].arrive();
  }
  // Producer lane, at the end of a CTA that aborted: waits until items [0, issued_end) have landed (drain_limit: its
  // own status word, no abort flag).
  CF_DEVICE void drain(int32_t issued_end, const prim::WaitLimit& drain_limit) const {
    (void)prim::drain_ring(full, stages, issued_end, drain_limit);
  }
};

// Producer warp: loads tiles [row0, row0 + 16 n_tiles) x columns [col0, col0 + cols) of a matrix into the stage of
// item `it`, one box {cols, 16} per tile. All lanes call it; returns lane 0's answer: whether it issued the item (not
// after an abort). `site`: the producer's wait site.
CF_DEVICE bool load_panel(const Ring& ring, int32_t it, uint32_t site, const BoxMaps& maps, int32_t cols,
                          int32_t row0, int32_t n_tiles, int32_t col0, uint32_t lane) {
  const bool issue = ring.acquire(it, site);
  if (issue && lane == 0) {
    uint8_t* dst = ring.stage(it);
    dev::Mbarrier& bar = ring.full[it % ring.stages];
    const uint32_t box_bytes = panel_bytes(1, cols);
    bar.arrive_expect_tx(uint32_t(n_tiles) * box_bytes);
    const dev::TensorMap& map = box_map(maps, cols);
    for (int32_t t = 0; t < n_tiles; ++t) dev::tma_load_2d(dst + uint32_t(t) * box_bytes, map, col0, row0 + t * kTileRows, bar);
  }
  dev::syncwarp();
  return issue;
}

// Consumer warp: acc[token tile] += this warp's tile x its units of the stage (a panel of `n_tiles` valid tiles of
// `cols` columns, `tiles` = M tiles per stage), times the activation rows act[token][act_col0 + c ...] (act_stride
// bytes per token; tokens >= batch read as zero). Columns c >= cols of the chunk and columns act_col0 + c >= col_limit
// (a multiple of 8) count as zero in both operands.
template <typename T, int kBatchTiles>
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
    if ((kg * kUnitsPerWarp + uu) * kUnitCols < cols) {
      const bool in_range = c < limit;
      dev::U32x4 alo{0, 0, 0, 0}, ahi{0, 0, 0, 0};
      if (in_range) {
        alo = dev::load16(tile + g * pitch + uint32_t(c) * 2);
        ahi = dev::load16(tile + (g + 8) * pitch + uint32_t(c) * 2);
      }
      const uint32_t a0[4] = {alo.x, ahi.x, alo.y, ahi.y};
      const uint32_t a1[4] = {alo.z, ahi.z, alo.w, ahi.w};
      CF_UNROLL
      for (int nt = 0; nt < kBatchTiles; ++nt) {
        const int32_t token = nt * 8 + int32_t(g);
        dev::U32x4 bx{0, 0, 0, 0};
        if (token < batch && in_range)
          bx = dev::load16(act + uint32_t(token) * act_stride + uint32_t(act_col0 + c) * 2);
        const uint32_t b0[2] = {bx.x, bx.y};
        const uint32_t b1[2] = {bx.z, bx.w};
        Elem<T>::mma(acc[nt], a0, b0);
        Elem<T>::mma(acc[nt], a1, b1);
      }
    }
  }
}

// Consumer warp, end of a group: its k-group's partial sums -> scratch[kg][row in group][token] (fp32, `batch`
// tokens per row, 16 M rows per k-group).
template <int kBatchTiles>
CF_DEVICE void store_group_partials(float* scratch, int32_t tiles, int32_t n_tiles, int32_t batch, uint32_t warp,
                                    uint32_t lane, const float (&acc)[kBatchTiles][4]) {
  const int32_t mt = int32_t(warp) % tiles, kg = int32_t(warp) / tiles;
  if (mt >= n_tiles) return;
  const int32_t g = int32_t(lane / 4), t = int32_t(lane % 4);
  float* base = scratch + kg * tiles * kTileRows * batch;
  CF_UNROLL
  for (int nt = 0; nt < kBatchTiles; ++nt) {
    CF_UNROLL
    for (int h = 0; h < 2; ++h) {
      const int32_t row = mt * kTileRows + g + 8 * h;
      CF_UNROLL
      for (int c = 0; c < 2; ++c) {
        const int32_t token = nt * 8 + 2 * t + c;
        if (token < batch) base[row * batch + token] = acc[nt][2 * h + c];
      }
    }
  }
}

// The value of element e = row * batch + token of a group: its k-group partials added in k-group order.
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

// ---- host-side helpers ----------------------------------------------------------------------------------------------

constexpr uint32_t align_up(uint64_t v, uint32_t a) { return uint32_t((v + a - 1) / a * a); }
// Rows of activation buffers are padded to 64 mod 128 bytes (conflict-free B-fragment loads of tokens g, g+1).
constexpr uint32_t padded_row_stride(uint64_t bytes) { return align_up(bytes, 128) + 64; }

// Checks a stage_units choice U (chunks of 32 U columns for the matrices whose chunk width the caller picks).
constexpr bool valid_stage_units(int units) { return units == 2 || units == 4 || units == 8; }

// The box widths of a matrix whose slices (of slice_lo or slice_hi columns) are cut into chunks of chunk_cols: the
// full chunk and each kind's last chunk (0: that kind has none or shares the other's).
struct ChunkWidths {
  int32_t cols[kBoxWidths];
};
constexpr ChunkWidths chunk_widths(int32_t chunk_cols, int32_t slice_lo, int32_t slice_hi) {
  ChunkWidths w{{chunk_cols, slice_lo % chunk_cols, slice_hi % chunk_cols}};
  if (w.cols[2] == w.cols[1]) w.cols[2] = 0;
  return w;
}

// Host: the maps of a row-major matrix [height, width] (row pitch 2 * width bytes) with boxes {cols, 16} for every
// non-zero width.
inline BoxMaps make_box_maps(const void* base, dev::DType dtype, uint64_t width, uint64_t height,
                             const ChunkWidths& widths) {
  BoxMaps m{};
  for (int i = 0; i < kBoxWidths; ++i) {
    m.cols[i] = widths.cols[i];
    if (widths.cols[i] > 0)
      m.map[i] = dev::make_tensor_map_2d(base, dtype, width, height, width * 2, uint32_t(widths.cols[i]),
                                         uint32_t(kTileRows));
  }
  return m;
}

}  // namespace cf::kernels::weight_stream
