// y = W x with W 576x576 fp16 (row-major), x fp16, y fp32, on one 4-CTA cluster of 128 threads each: the shape of
// the decode kernels. CTA r streams its column slice [144r, 144r+144) of W through a 2-stage TMA pipeline (64-row
// boxes; "full" mbarriers with expect-tx, "empty" mbarriers that all 128 consumers arrive on), accumulates partial
// y over its slice in shared memory, and the cluster reduces the four partials over DSMEM in a fixed order (CTA r
// produces rows [144r, 144r+144)). Used as the emulator's speed test, as a functional test in both builds and, with
// a planted bug, in the planted-bug suite.
#pragma once
#include <cstdint>
#include <vector>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/device/launch.hpp"
#include "clusterfusion/device/tensor_map.hpp"

namespace cf::test {
namespace dev = cf::dev;

struct MatvecShape {
  static constexpr uint32_t kRows = 576, kCols = 576;
  static constexpr uint32_t kClusterSize = 4, kThreads = 128, kStages = 2;
  static constexpr uint32_t kSliceCols = kCols / kClusterSize;   // 144 columns per CTA
  static constexpr uint32_t kBoxRows = 64;                       // rows per TMA box
  static constexpr uint32_t kTiles = kRows / kBoxRows;           // 9 boxes per CTA
  static constexpr uint32_t kThreadCols = kSliceCols / 2;        // two threads per row: 72 columns each
  static constexpr uint32_t kVecsPerThread = kThreadCols / 8;    // 16-byte loads of 8 fp16
  static constexpr uint32_t kTileBytes = kBoxRows * kSliceCols * 2;
  static constexpr uint32_t kRowsPerCta = kRows / kClusterSize;  // reduce: rows owned by each CTA
  // shared-memory carve
  static constexpr uint32_t kFullBarOff = 0;     // kStages mbarriers
  static constexpr uint32_t kEmptyBarOff = 16;   // kStages mbarriers
  static constexpr uint32_t kXBarOff = 32;
  static constexpr uint32_t kXOff = 128;         // kSliceCols fp16
  static constexpr uint32_t kPartialOff = 512;   // kRows fp32
  static constexpr uint32_t kTileOff = 3072;     // kStages boxes, 128-byte aligned
  static constexpr uint32_t kSmemBytes = kTileOff + kStages * kTileBytes;
  static_assert(kThreads == 2 * kBoxRows && kThreadCols % 8 == 0 && kPartialOff + kRows * 4 <= kTileOff);
};

enum class MatvecBug : uint8_t {
  None,
  SkipEmptyWait,  // the producer refills a stage without waiting until every consumer released it
  WrongParity,    // consumers wait on the full barrier with the wrong phase parity
};

struct MatvecParams {
  dev::TensorMap w;
  const dev::f16* x;
  float* y;
};

template <MatvecBug kBug>
CF_GLOBAL void matvec_kernel(const CF_GRID_CONSTANT MatvecParams p) {
  using S = MatvecShape;
  uint8_t* smem = dev::dynamic_smem();
  auto* full = reinterpret_cast<dev::Mbarrier*>(smem + S::kFullBarOff);
  auto* empty = reinterpret_cast<dev::Mbarrier*>(smem + S::kEmptyBarOff);
  auto* x_bar = reinterpret_cast<dev::Mbarrier*>(smem + S::kXBarOff);
  auto* x = reinterpret_cast<dev::f16*>(smem + S::kXOff);
  auto* partial = reinterpret_cast<float*>(smem + S::kPartialOff);
  auto tile = [&](uint32_t stage) { return reinterpret_cast<dev::f16*>(smem + S::kTileOff + stage * S::kTileBytes); };
  const uint32_t t = dev::thread_rank(), rank = dev::block_rank_in_cluster();
  const uint32_t col0 = rank * S::kSliceCols;
  auto issue = [&](uint32_t i) {
    const uint32_t stage = i % S::kStages;
    full[stage].arrive_expect_tx(S::kTileBytes);
    dev::tma_load_2d(tile(stage), p.w, int32_t(col0), int32_t(i * S::kBoxRows), full[stage]);
  };

  if (t == 0) {
    for (uint32_t s = 0; s < S::kStages; ++s) {
      full[s].init(1);
      empty[s].init(S::kThreads);
    }
    x_bar->init(1);
    dev::fence_mbarrier_init();
  }
  dev::cluster_sync();  // barriers initialised, every CTA of the cluster started
  if (t == 0) {
    x_bar->arrive_expect_tx(S::kSliceCols * 2);
    dev::bulk_copy_g2s(x, p.x + col0, S::kSliceCols * 2, *x_bar);
    for (uint32_t i = 0; i < S::kStages; ++i) issue(i);
  }
  x_bar->wait(0);
  const uint32_t row_in_tile = t / 2, part = t % 2;
  float xf[S::kThreadCols];
  CF_UNROLL
  for (uint32_t j = 0; j < S::kThreadCols; ++j) xf[j] = dev::to_float(x[part * S::kThreadCols + j]);

  for (uint32_t i = 0; i < S::kTiles; ++i) {
    const uint32_t stage = i % S::kStages, parity = (i / S::kStages) & 1u;
    full[stage].wait(kBug == MatvecBug::WrongParity ? parity ^ 1u : parity);
    const dev::f16* row = tile(stage) + row_in_tile * S::kSliceCols + part * S::kThreadCols;
    float acc = 0.0f;
    CF_UNROLL
    for (uint32_t v = 0; v < S::kVecsPerThread; ++v) {
      const dev::U32x4 q = dev::load16(row + 8 * v);
      const uint32_t words[4] = {q.x, q.y, q.z, q.w};
      CF_UNROLL
      for (uint32_t k = 0; k < 4; ++k) {
        const dev::Float2 w2 = dev::to_float2(dev::from_bits<dev::f16x2>(words[k]));
        acc += w2.x * xf[8 * v + 2 * k];
        acc += w2.y * xf[8 * v + 2 * k + 1];
      }
    }
    acc += dev::shfl_xor_sync(dev::kFullMask, acc, 1);
    if (part == 0) partial[i * S::kBoxRows + row_in_tile] = acc;
    empty[stage].arrive();
    if (t == 0 && i + S::kStages < S::kTiles) {
      if constexpr (kBug != MatvecBug::SkipEmptyWait) empty[stage].wait(parity);
      issue(i + S::kStages);
    }
  }
  dev::cluster_sync();  // every CTA's partials are complete
  for (uint32_t r = t; r < S::kRowsPerCta; r += S::kThreads) {
    const uint32_t row = rank * S::kRowsPerCta + r;
    float sum = 0.0f;
    for (uint32_t q = 0; q < S::kClusterSize; ++q) sum += dev::map_shared_rank(partial, q)[row];
    p.y[row] = sum;
  }
  dev::cluster_sync();  // no CTA exits while its partials are being read
}

// W: kRows x kCols fp16 bits, x: kCols fp16 bits. Returns y (kRows floats).
template <MatvecBug kBug = MatvecBug::None>
std::vector<float> run_matvec(const std::vector<uint16_t>& w, const std::vector<uint16_t>& x, uint64_t seed = 0) {
  using S = MatvecShape;
  dev::DeviceBuffer<uint16_t> w_dev(w.size()), x_dev(x.size());
  w_dev.upload(w);
  x_dev.upload(x);
  dev::DeviceBuffer<float> y(S::kRows);
  const MatvecParams params{
      dev::make_tensor_map_2d(w_dev.data(), dev::DType::F16, S::kCols, S::kRows, S::kCols * 2, S::kSliceCols,
                              S::kBoxRows),
      reinterpret_cast<const dev::f16*>(x_dev.data()), y.data()};
  dev::LaunchConfig cfg;
  cfg.grid = {S::kClusterSize};
  cfg.cluster = {S::kClusterSize};
  cfg.block = {S::kThreads};
  cfg.smem_bytes = S::kSmemBytes;
  cfg.name = "matvec_pipeline";
  cfg.emu_seed = seed;
  dev::launch(cfg, matvec_kernel<kBug>, params);
  dev::synchronize();
  return y.download();
}

}  // namespace cf::test
