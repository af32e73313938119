// The MLA block's W_UV step (docs/mla.md §1.5, launch 3): o[b][h][j] = W_UV[h][j] . o_lat[b][h], written only
// against the device API (nvcc sm_90a and the CPU emulator).
//
// Grid: CTAs of 8 warps over the (head, 16-row tile) items of W_UV [H, v, r] (128 items for DeepSeek-V2-Lite: 16 KB of
// weights each, the whole 2 MB read once across the GPU). Per item:
//   1. latent: o_lat[b][h] of every token (fp32, merged by the attention's last arrivers) into shared memory
//   2. rows:   warp w takes rows w and w + 8 of the tile; each lane has its 16-byte weight loads in flight at once,
//              sums per token over its columns, then a butterfly per token (fixed order) -> o (T)
// A bad token's o_lat is NaN, so its o is too.
#pragma once
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/kernels/mla/kernel_params.hpp"
#include "clusterfusion/kernels/mla/cta_common.hpp"
#include "clusterfusion/pipeline/roles.hpp"
#include "clusterfusion/primitives/element.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla {

inline constexpr int kUvLoadsPerLane = kMaxLatent / (32 * 8);  // 16-byte weight loads of one row per lane (r <= 512)

template <typename T, int kBatchTiles>
struct UvCta {
  static constexpr int kTokens = kBatchTiles * pl::kMmaN;
  const UvParams& p;
  const uint32_t tid = dev::thread_rank(), warp = tid / 32, lane = tid % 32;
  float* const latent = reinterpret_cast<float*>(dev::dynamic_smem());  // [batch][r]
  const int32_t row_tiles = pl::ceil_div(p.v_head, pl::kTileRows);

  CF_DEVICE explicit UvCta(const UvParams& params) : p(params) {}

  // 1. o_lat of head h for every token.
  CF_DEVICE void load_latent(int32_t h) {
    for (int32_t e = int32_t(tid); e < p.batch * p.r; e += kUvThreads)
      latent[e] = p.o_lat[(int64_t(e / p.r) * p.n_heads + h) * p.r + e % p.r];
    dev::block_sync();
  }

  // 2. Row j of head h for every token.
  CF_DEVICE void row(int32_t h, int32_t j) {
    const T* w = static_cast<const T*>(p.w_uv) + (int64_t(h) * p.v_head + j) * p.r;
    dev::U32x4 wv[kUvLoadsPerLane] = {};
    CF_UNROLL
    for (int k = 0; k < kUvLoadsPerLane; ++k) {
      const int32_t c = (k * 32 + int32_t(lane)) * 8;
      if (c < p.r) wv[k] = dev::load16_global_nc(w + c);
    }
    float acc[kTokens] = {};
    CF_UNROLL
    for (int k = 0; k < kUvLoadsPerLane; ++k) {
      const int32_t c = (k * 32 + int32_t(lane)) * 8;
      if (c >= p.r) break;
      const uint32_t bits[4] = {wv[k].x, wv[k].y, wv[k].z, wv[k].w};
      CF_UNROLL
      for (int e = 0; e < 4; ++e) {
        const dev::Float2 f = prim::unpack2<T>(bits[e]);
        CF_UNROLL
        for (int b = 0; b < kTokens; ++b)
          if (b < p.batch) acc[b] += f.x * latent[b * p.r + c + 2 * e] + f.y * latent[b * p.r + c + 2 * e + 1];
      }
    }
    CF_UNROLL
    for (int b = 0; b < kTokens; ++b) {
      if (b >= p.batch) break;
      const float v = detail::warp_sum(acc[b]);
      if (lane == 0) static_cast<T*>(p.o)[int64_t(b) * p.n_heads * p.v_head + h * p.v_head + j] = dev::from_float<T>(v);
    }
  }

  CF_DEVICE void run() {
    const int32_t items = p.n_heads * row_tiles;
    for (int32_t i = int32_t(dev::block_idx().x); i < items; i += int32_t(dev::grid_dim().x)) {
      const int32_t h = i / row_tiles, j0 = i % row_tiles * pl::kTileRows;
      load_latent(h);
      for (int32_t j = j0 + int32_t(warp); j < j0 + pl::kTileRows && j < p.v_head; j += kUvWarps) row(h, j);
      dev::block_sync();  // the latent buffer is free for the next item
    }
  }
};

template <typename T, int kBatchTiles>
CF_GLOBAL void CF_LAUNCH_BOUNDS(kUvThreads, 1) uv_kernel(const CF_GRID_CONSTANT UvParams p) {
  UvCta<T, kBatchTiles> cta(p);
  cta.run();
}

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla
