// Streaming a weight matrix through a ring of shared-memory stages and multiplying it with a small batch of
// activation rows on the tensor cores: the device-side building blocks of the FFN block and the LM head
// (docs/ffn.md §1). Written only against the device API (nvcc sm_90a and the CPU emulator).
//
// Geometry. A weight matrix W [rows, cols] (row-major) is cut into tiles of 16 rows x 32 columns (one "unit" of 32
// columns = 64 bytes per row). A *group* is up to M consecutive 16-row tiles; a ring *stage* holds the group's tiles
// for U consecutive units, M * U = 16, laid out unit-major: unit u at byte u * M * 1024, tile t of it at + t * 1024,
// row r of the tile at + r * 64. 64-byte rows make the 16-byte A-fragment loads of a quarter warp hit 8 distinct
// 16-byte bank groups without swizzling. A full group of a unit is one TMA box {32, 16 M}; a partial group (fewer
// than M tiles left) is one box {32, 16} per tile. Every box delivers its whole size (rows or columns past the
// matrix read as zero), so the expect-tx count of a stage is tiles x units x 1024.
//
// Work of the 8 consumer warps on a stage: warp w takes tile w % M and units 2 (w / M) and 2 (w / M) + 1 (its
// "k-group", KG = U / 2 of them): acc[token tile] += W_tile x act^T with mma.m16n8k16 (rows = m, tokens = n, the 16
// columns of a k-step permuted identically in A and B so each lane loads 16 contiguous bytes). At the end of a group
// the KG partial sums of each (row, token) are added in k-group order (store_group_partials + group_value).
#pragma once
#include <cmath>
#include <cstdint>

#include "clusterfusion/device/api.hpp"

namespace cf::kernels::weight_stream {
namespace dev = cf::dev;

inline constexpr int kTileRows = 16;
inline constexpr int kUnitCols = 32;
inline constexpr int kUnitRowBytes = kUnitCols * 2;             // 64
inline constexpr int kTileUnitBytes = kTileRows * kUnitRowBytes;  // 1 KB: one tile of one unit
inline constexpr int kTilesTimesUnits = 16;                     // M * U
inline constexpr int kStageBytes = kTilesTimesUnits * kTileUnitBytes;  // 16 KB
inline constexpr int kConsumerWarps = 8;
inline constexpr int kConsumerThreads = kConsumerWarps * 32;
inline constexpr int kProducerWarp = kConsumerWarps;  // the last warp issues every load
inline constexpr int kThreads = kConsumerThreads + 32;
inline constexpr int kUnitsPerWarp = 2;  // units of a stage one consumer warp multiplies
inline constexpr int kDefaultStageUnits = 4;
inline constexpr int kMinStages = 4;
inline constexpr int kMaxStages = 16;

// M (tiles per group) and U (units per stage) of a stage_units choice U in {2, 4, 8, 16}.
struct StageShape {
  int32_t tiles;  // M
  int32_t units;  // U
  CF_HOST_DEVICE int32_t k_groups() const { return units / kUnitsPerWarp; }
};
CF_HOST_DEVICE StageShape stage_shape(int32_t units) { return {kTilesTimesUnits / units, units}; }

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
CF_HOST_DEVICE int32_t ceil_div(int32_t a, int32_t b) { return (a + b - 1) / b; }

// ---- bounded waits ----------------------------------------------------------------------------------------------

// Every mbarrier wait is bounded on the GPU: after kMaxPolls failed polls (seconds; a legitimate wait is
// microseconds) it gives up and sets *timeout_word, so a bug ends the kernel with a message instead of hanging the
// machine. The emulator reports a deadlock itself.
inline constexpr uint32_t kMaxPolls = 1u << 24;
CF_DEVICE void wait(dev::Mbarrier& bar, uint32_t parity, uint32_t* timeout_word) {
#if defined(CF_DEVICE_CUDA)
  for (uint32_t polls = 0; !bar.try_wait(parity);) {
    if (++polls == kMaxPolls) {
      if (*timeout_word == 0) (void)dev::atomic_exch(timeout_word, 1u);
      return;
    }
  }
#else
  (void)timeout_word;
  bar.wait(parity);
#endif
}

// ---- the ring -----------------------------------------------------------------------------------------------------

// Item `it` of the load schedule lives in stage it % stages; its full/empty barriers complete once per lap.
struct Ring {
  dev::Mbarrier* full;   // [stages], count 1 (the producer's arrive_expect_tx)
  dev::Mbarrier* empty;  // [stages], count kConsumerWarps
  uint8_t* stages_base;
  int32_t stages;
  uint32_t* timeout_word;

  CF_DEVICE uint8_t* stage(int32_t it) const { return stages_base + uint32_t(it % stages) * uint32_t(kStageBytes); }
  CF_DEVICE uint32_t parity(int32_t it) const { return uint32_t((it / stages) & 1); }
  // Producer: wait until the consumers released the previous lap's item in this stage.
  CF_DEVICE void acquire(int32_t it) const {
    if (it >= stages) wait(empty[it % stages], uint32_t(((it / stages) - 1) & 1), timeout_word);
  }
  // Consumer: wait until item `it` has landed.
  CF_DEVICE void wait_full(int32_t it) const { wait(full[it % stages], parity(it), timeout_word); }
  // Consumer warp: done reading item `it` (every consumer warp calls this once per item, after wait_full).
  CF_DEVICE void release(int32_t it, uint32_t lane) const {
    dev::syncwarp();
    if (lane == 0) empty[it % stages].arrive();
  }
};

// Producer warp: loads tiles [row0, row0 + 16 n_tiles) x units [col0 / 32, + n_units) of a matrix into the stage of
// item `it`. `big` has box {32, 16 M} (used when n_tiles == M), `small` box {32, 16}. All lanes call it.
CF_DEVICE void load_panel(const Ring& ring, int32_t it, const dev::TensorMap& big, const dev::TensorMap& small,
                          StageShape ss, int32_t row0, int32_t n_tiles, int32_t col0, int32_t n_units, uint32_t lane) {
  ring.acquire(it);
  if (lane == 0) {
    uint8_t* dst = ring.stage(it);
    dev::Mbarrier& bar = ring.full[it % ring.stages];
    bar.arrive_expect_tx(uint32_t(n_tiles * n_units * kTileUnitBytes));
    for (int32_t u = 0; u < n_units; ++u) {
      uint8_t* unit_dst = dst + u * ss.tiles * kTileUnitBytes;
      if (n_tiles == ss.tiles) {
        dev::tma_load_2d(unit_dst, big, col0 + u * kUnitCols, row0, bar);
      } else {
        for (int32_t t = 0; t < n_tiles; ++t)
          dev::tma_load_2d(unit_dst + t * kTileUnitBytes, small, col0 + u * kUnitCols, row0 + t * kTileRows, bar);
      }
    }
  }
  dev::syncwarp();
}

// Consumer warp: acc[token tile] += this warp's tile x its units of the stage, times the activation rows
// act[token][act_col0 + unit * 32 ...] (act_stride bytes per token; tokens >= batch read as zero). `n_units` units
// and `n_tiles` tiles of the stage are valid; columns act_col0 + c >= col_limit (a multiple of 8) count as zero in
// both operands (the last unit of a slice that ends inside it: whatever the box loaded there never contributes).
template <typename T, int kBatchTiles>
CF_DEVICE void panel_mma(const uint8_t* stage, StageShape ss, int32_t n_tiles, int32_t n_units, const uint8_t* act,
                         uint32_t act_stride, int32_t act_col0, int32_t col_limit, int32_t batch, uint32_t warp,
                         uint32_t lane, float (&acc)[kBatchTiles][4]) {
  const int32_t mt = int32_t(warp) % ss.tiles, kg = int32_t(warp) / ss.tiles;
  if (mt >= n_tiles) return;
  const uint32_t g = lane / 4, t = lane % 4;
  CF_UNROLL
  for (int uu = 0; uu < kUnitsPerWarp; ++uu) {
    const int32_t u = kg * kUnitsPerWarp + uu;
    if (u < n_units) {
      const uint8_t* box = stage + u * ss.tiles * kTileUnitBytes + mt * kTileUnitBytes;
      const int32_t col = act_col0 + u * kUnitCols + int32_t(t) * 8;  // this lane's 8 columns
      const bool in_range = col < col_limit;
      dev::U32x4 alo{0, 0, 0, 0}, ahi{0, 0, 0, 0};
      if (in_range) {
        alo = dev::load16(box + g * kUnitRowBytes + t * 16);
        ahi = dev::load16(box + (g + 8) * kUnitRowBytes + t * 16);
      }
      const uint32_t a0[4] = {alo.x, ahi.x, alo.y, ahi.y};
      const uint32_t a1[4] = {alo.z, ahi.z, alo.w, ahi.w};
      CF_UNROLL
      for (int nt = 0; nt < kBatchTiles; ++nt) {
        const int32_t token = nt * 8 + int32_t(g);
        dev::U32x4 bx{0, 0, 0, 0};
        if (token < batch && in_range) bx = dev::load16(act + uint32_t(token) * act_stride + uint32_t(col) * 2);
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
CF_DEVICE void store_group_partials(float* scratch, StageShape ss, int32_t n_tiles, int32_t batch, uint32_t warp,
                                    uint32_t lane, const float (&acc)[kBatchTiles][4]) {
  const int32_t mt = int32_t(warp) % ss.tiles, kg = int32_t(warp) / ss.tiles;
  if (mt >= n_tiles) return;
  const int32_t g = int32_t(lane / 4), t = int32_t(lane % 4);
  float* base = scratch + kg * ss.tiles * kTileRows * batch;
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
CF_DEVICE float group_value(const float* scratch, StageShape ss, int32_t batch, int32_t e) {
  const int32_t kg_stride = ss.tiles * kTileRows * batch;
  float sum = scratch[e];
  for (int32_t kg = 1; kg < ss.k_groups(); ++kg) sum += scratch[kg * kg_stride + e];
  return sum;
}

// Bytes of one scratch buffer (all k-groups of a group) for `max_batch` tokens.
constexpr uint32_t group_scratch_bytes(int max_batch) {
  return uint32_t(kConsumerWarps * kTileRows) * uint32_t(max_batch) * 4;  // KG * 16 M = 8 * 16 for every U
}

// ---- host-side helpers ----------------------------------------------------------------------------------------------

constexpr uint32_t align_up(uint64_t v, uint32_t a) { return uint32_t((v + a - 1) / a * a); }
// Rows of activation buffers are padded to 64 mod 128 bytes (conflict-free B-fragment loads of tokens g, g+1).
constexpr uint32_t padded_row_stride(uint64_t bytes) { return align_up(bytes, 128) + 64; }

}  // namespace cf::kernels::weight_stream
