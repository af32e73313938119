// Host-side expectations for the kernels in api_kernels.hpp, matvec_pipeline.hpp and planted_bugs.hpp: each check
// returns "" when the device output is right, else a one-line description of the first difference. Shared by the
// emulator tests and the GPU tests, so both builds are held to the same results.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "clusterfusion/common/half.hpp"
#include "kernels/api_kernels.hpp"
#include "kernels/matvec_pipeline.hpp"
#include "kernels/planted_bugs.hpp"

namespace cf::test {

template <typename T>
std::string first_difference(const std::vector<T>& got, const std::vector<T>& want, const char* what) {
  if (got.size() != want.size())
    return std::string(what) + ": size " + std::to_string(got.size()) + ", want " + std::to_string(want.size());
  for (size_t i = 0; i < got.size(); ++i)
    if (!(got[i] == want[i]))
      return std::string(what) + "[" + std::to_string(i) + "] = " + std::to_string(got[i]) + ", want " +
             std::to_string(want[i]);
  return "";
}

inline std::string check_ids(const std::vector<IdsRecord>& recs, dev::Dim3 grid, dev::Dim3 cluster,
                             dev::Dim3 block, uint32_t smem) {
  const uint32_t nthreads = uint32_t(block.volume());
  size_t i = 0;
  for (uint32_t bz = 0; bz < grid.z; ++bz)
    for (uint32_t by = 0; by < grid.y; ++by)
      for (uint32_t bx = 0; bx < grid.x; ++bx)
        for (uint32_t t = 0; t < nthreads; ++t, ++i) {
          const IdsRecord& r = recs[i];
          const uint32_t want_thread[3] = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
          const uint32_t want_block[3] = {bx, by, bz};
          const uint32_t in_cluster[3] = {bx % cluster.x, by % cluster.y, bz % cluster.z};
          const uint32_t cidx[3] = {bx / cluster.x, by / cluster.y, bz / cluster.z};
          const uint32_t cgrid[3] = {grid.x / cluster.x, grid.y / cluster.y, grid.z / cluster.z};
          const uint32_t bd[3] = {block.x, block.y, block.z}, gd[3] = {grid.x, grid.y, grid.z};
          const uint32_t cd[3] = {cluster.x, cluster.y, cluster.z};
          const std::string at = "record " + std::to_string(i) + ": ";
          for (int d = 0; d < 3; ++d) {
            if (r.thread[d] != want_thread[d]) return at + "thread_idx";
            if (r.block[d] != want_block[d]) return at + "block_idx";
            if (r.block_dim[d] != bd[d]) return at + "block_dim";
            if (r.grid_dim[d] != gd[d]) return at + "grid_dim";
            if (r.cluster_dim[d] != cd[d]) return at + "cluster_dim";
            if (r.cluster_idx[d] != cidx[d]) return at + "cluster_idx";
            if (r.cluster_grid[d] != cgrid[d]) return at + "cluster_grid_dim";
            if (r.block_in_cluster[d] != in_cluster[d]) return at + "block_idx_in_cluster";
          }
          const uint32_t rank = in_cluster[0] + cluster.x * (in_cluster[1] + cluster.y * in_cluster[2]);
          if (r.thread_rank != t) return at + "thread_rank";
          if (r.lane != t % 32) return at + "lane_id";
          if (r.warp != t / 32) return at + "warp_id";
          if (r.num_threads != nthreads) return at + "num_threads";
          if (r.num_warps != (nthreads + 31) / 32) return at + "num_warps";
          if (r.cluster_rank != rank) return at + "block_rank_in_cluster = " + std::to_string(r.cluster_rank);
          if (r.cluster_size != cluster.volume()) return at + "cluster_size";
          if (r.smem_size != smem) return at + "dynamic_smem_size = " + std::to_string(r.smem_size);
        }
  return "";
}

inline std::vector<uint32_t> expected_barriers(uint32_t blocks, uint32_t threads) {
  std::vector<uint32_t> want;
  for (uint32_t b = 0; b < blocks; ++b) {
    for (uint32_t t = 0; t < threads; ++t) want.push_back(3 * ((t + 1) % threads) + 1);
    for (uint32_t t = 0; t < threads; ++t) {
      const uint32_t warp = t / 32;
      want.push_back(warp % 2 == 0 ? 0 : 100 + warp - 1);
    }
  }
  return want;
}

inline std::string check_dsmem(const DsmemResult& r, uint32_t clusters, uint32_t size, uint32_t threads) {
  std::vector<uint32_t> values, counters;
  for (uint32_t c = 0; c < clusters; ++c)
    for (uint32_t rank = 0; rank < size; ++rank) {
      for (uint32_t t = 0; t < threads; ++t) values.push_back(1000 * ((rank + 1) % size) + t);
      counters.push_back(size * threads);
    }
  std::string d = first_difference(r.peer_values, values, "peer value");
  return d.empty() ? first_difference(r.counters, counters, "DSMEM atomic counter") : d;
}

inline std::string check_mbarrier(const MbarrierResult& r, uint32_t blocks, uint32_t threads) {
  std::vector<uint32_t> want;
  for (uint32_t b = 0; b < blocks; ++b)
    for (uint32_t round = 0; round < kMbarRounds; ++round)
      for (uint32_t t = 0; t < threads; ++t) want.push_back(t < 32 ? 0 : round * 100 + t % 32);
  std::string d = first_difference(r.out, want, "mbarrier round value");
  return d.empty() ? first_difference(r.remote_done, std::vector<uint32_t>(blocks, 1), "remote arrival") : d;
}

inline std::vector<uint32_t> bulk_input(uint32_t blocks, uint32_t words) {
  std::vector<uint32_t> src(size_t(blocks) * words);
  for (size_t i = 0; i < src.size(); ++i) src[i] = uint32_t(i * 2654435761u);
  return src;
}
inline std::vector<uint32_t> expected_bulk(const std::vector<uint32_t>& src, uint32_t clusters, uint32_t size,
                                           uint32_t words) {
  std::vector<uint32_t> want(src.size());
  for (uint32_t c = 0; c < clusters; ++c)
    for (uint32_t rank = 0; rank < size; ++rank) {
      const uint32_t left = (rank + size - 1) % size;  // our inbox holds the left peer's staging
      for (uint32_t i = 0; i < words; ++i)
        want[(size_t(c) * size + rank) * words + i] = src[(size_t(c) * size + left) * words + i] + 1;
    }
  return want;
}

// A height x width fp16 matrix (row stride `stride` elements, padding poisoned) of distinct small values.
inline std::vector<uint16_t> tma_matrix(uint32_t width, uint32_t height, uint32_t stride) {
  std::vector<uint16_t> m(size_t(stride) * height, 0x7e00);
  for (uint32_t y = 0; y < height; ++y)
    for (uint32_t x = 0; x < width; ++x) m[size_t(y) * stride + x] = cf::half(float(y * 64 + x) * 0.25f).bits;
  return m;
}
inline std::vector<uint16_t> expected_tma(const std::vector<uint16_t>& m, uint32_t width, uint32_t height,
                                          uint32_t stride, const std::vector<int32_t>& coords) {
  std::vector<uint16_t> want;
  for (size_t b = 0; b < coords.size() / 2; ++b)
    for (uint32_t r = 0; r < kTmaBoxH; ++r)
      for (uint32_t c = 0; c < kTmaBoxW; ++c) {
        const int64_t x = coords[2 * b] + int64_t(c), y = coords[2 * b + 1] + int64_t(r);
        const bool inside = x >= 0 && y >= 0 && x < int64_t(width) && y < int64_t(height);
        want.push_back(inside ? m[size_t(y) * stride + size_t(x)] : 0);
      }
  return want;
}

inline std::string check_warp(const std::vector<WarpRecord>& recs) {
  for (uint32_t t = 0; t < recs.size(); ++t) {
    const WarpRecord& r = recs[t];
    const uint32_t lane = t % 32;
    const std::string at = "thread " + std::to_string(t) + ": ";
    if (r.idx_full != float(31 - lane) * 1.5f) return at + "shfl_sync";
    if (r.idx_width8 != float((lane & ~7u) + 3) * 1.5f) return at + "shfl_sync width 8";
    if (r.xor_sum != 528) return at + "shfl_xor_sync butterfly sum = " + std::to_string(r.xor_sum);
    if (r.down != 10 * (lane + 3 < 32 ? lane + 3 : lane)) return at + "shfl_down_sync";
    if (r.up_width16 != 10 * ((lane % 16) >= 2 ? lane - 2 : lane)) return at + "shfl_up_sync width 16";
    const uint64_t src = lane ^ 5u;
    if (r.wide != ((src << 40) | src)) return at + "64-bit shfl_xor_sync";
    if (r.half_bits != cf::half(float((lane + 1) % 32) + 0.5f).bits) return at + "fp16 shfl_sync";
    if (r.ballot != 0x49249249u) return at + "ballot_sync";
    if (r.any_true != 1 || r.all_true != 1 || r.all_false != 0) return at + "any_sync/all_sync";
    if (r.low_half_sum != (lane < 16 ? lane + (lane ^ 1u) : 0)) return at + "partial-mask shfl_xor_sync";
  }
  return "";
}

inline std::vector<uint16_t> vector_input(uint32_t threads) {
  std::vector<uint16_t> in(size_t(threads) * 8);
  for (size_t i = 0; i < in.size(); ++i) in[i] = cf::half(float(int(i % 97) - 48) * 0.125f).bits;
  return in;
}
inline std::string check_vector(const VectorResult& r, const std::vector<uint16_t>& in, uint32_t threads) {
  for (size_t i = 0; i < in.size(); ++i) {
    const float f = cf::f16_bits_to_float(in[i]);
    if (r.out[i] != cf::half(f * 2.0f + 1.0f).bits) return "fp16 pair round trip at " + std::to_string(i);
    if (r.out_bf16[i] != cf::bfloat16(f).bits) return "bf16 conversion at " + std::to_string(i);
  }
  const auto& c = r.counters;
  if (c[0] != threads) return "atomic_add = " + std::to_string(c[0]);
  if (c[1] != threads - 1) return "atomic_max = " + std::to_string(c[1]);
  if (c[2] != 0) return "atomic_min = " + std::to_string(c[2]);
  uint64_t wide;
  std::memcpy(&wide, &c[4], 8);
  if (wide != uint64_t(threads) << 33) return "64-bit atomic_add";
  if (c[6] < 1 || c[6] > threads) return "atomic_cas = " + std::to_string(c[6]);
  if (c[7] != 77) return "atomic_exch";
  if (int32_t(c[8]) != -int32_t(threads)) return "int32 atomic_add = " + std::to_string(int32_t(c[8]));
  if (int32_t(c[9]) != 0) return "int32 atomic_max";
  if (int32_t(c[10]) != -int32_t(threads - 1)) return "int32 atomic_min";
  return "";
}

// mma inputs (A 16x16, B 16x8 as fp16 or bf16 bits, C 16x8) and the check of every warp's D against fp64.
struct MmaData {
  std::vector<uint16_t> a, b;
  std::vector<float> c;
};
inline MmaData mma_data(bool bf16, uint32_t seed = 11) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  auto bits = [&](float f) { return bf16 ? cf::bfloat16(f).bits : cf::half(f).bits; };
  MmaData m;
  for (int i = 0; i < 16 * 16; ++i) m.a.push_back(bits(dist(rng)));
  for (int i = 0; i < 16 * 8; ++i) m.b.push_back(bits(dist(rng)));
  for (int i = 0; i < 16 * 8; ++i) m.c.push_back(dist(rng));
  return m;
}
inline std::string check_mma(const std::vector<float>& d, const MmaData& m, bool bf16, uint32_t warps) {
  auto value = [&](uint16_t b) { return double(bf16 ? cf::bf16_bits_to_float(b) : cf::f16_bits_to_float(b)); };
  for (uint32_t w = 0; w < warps; ++w)
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 8; ++j) {
        double want = m.c[i * 8 + j];
        for (int k = 0; k < 16; ++k) want += value(m.a[i * 16 + k]) * value(m.b[k * 8 + j]);
        const double got = d[(size_t(w) * 16 + i) * 8 + j];
        if (!(std::fabs(got - want) <= 1e-4 + 1e-4 * std::fabs(want)))
          return "mma warp " + std::to_string(w) + " D[" + std::to_string(i) + "][" + std::to_string(j) +
                 "] = " + std::to_string(got) + ", want " + std::to_string(want);
      }
  return "";
}

// Matvec inputs and the fp32 reference (fp64 accumulation of the fp16 inputs).
struct MatvecData {
  std::vector<uint16_t> w, x;
  std::vector<double> y;
};
inline MatvecData matvec_data(uint32_t seed = 7) {
  using S = MatvecShape;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  MatvecData d;
  d.w.resize(size_t(S::kRows) * S::kCols);
  d.x.resize(S::kCols);
  for (auto& v : d.w) v = cf::half(dist(rng)).bits;
  for (auto& v : d.x) v = cf::half(dist(rng)).bits;
  d.y.assign(S::kRows, 0.0);
  for (uint32_t r = 0; r < S::kRows; ++r)
    for (uint32_t c = 0; c < S::kCols; ++c)
      d.y[r] += double(cf::f16_bits_to_float(d.w[size_t(r) * S::kCols + c])) * cf::f16_bits_to_float(d.x[c]);
  return d;
}
inline std::string check_matvec(const std::vector<float>& y, const MatvecData& d) {
  if (y.size() != d.y.size()) return "matvec: wrong size";
  for (size_t i = 0; i < y.size(); ++i)
    if (!(std::fabs(double(y[i]) - d.y[i]) <= 1e-3 + 1e-4 * std::fabs(d.y[i])))
      return "matvec y[" + std::to_string(i) + "] = " + std::to_string(y[i]) + ", want " + std::to_string(d.y[i]);
  return "";
}

// Expected outputs of the planted-bug twins.
namespace bugs {
inline std::vector<uint32_t> copy_input() {
  std::vector<uint32_t> in(kCopyWords);
  for (uint32_t i = 0; i < kCopyWords; ++i) in[i] = 7 * i + 3;
  return in;
}
inline std::vector<uint16_t> tile_matrix() {
  std::vector<uint16_t> m(size_t(kTileW) * 2 * kTileH);
  for (size_t i = 0; i < m.size(); ++i) m[i] = uint16_t(i + 1);
  return m;
}
inline std::vector<uint32_t> expected_tile() {
  const std::vector<uint16_t> m = tile_matrix();
  std::vector<uint32_t> want(kThreads);
  for (uint32_t t = 0; t < kThreads; ++t) want[t] = uint32_t(m[2 * t]) | (uint32_t(m[2 * t + 1]) << 16);
  return want;
}
inline std::vector<uint32_t> expected_peer_values() {
  std::vector<uint32_t> want;
  for (uint32_t rank = 0; rank < 2; ++rank)
    for (uint32_t t = 0; t < kThreads; ++t) want.push_back(1000 * ((rank + 1) % 2) + t);
  return want;
}
inline std::vector<uint32_t> expected_neighbour(uint32_t scale, uint32_t add) {
  std::vector<uint32_t> want(kThreads);
  for (uint32_t t = 0; t < kThreads; ++t) want[t] = scale * ((t + 1) % kThreads) + add;
  return want;
}
inline std::vector<uint32_t> expected_push() {
  std::vector<uint32_t> want;
  for (uint32_t rank = 0; rank < 2; ++rank)
    for (uint32_t i = 0; i < kCopyWords; ++i) want.push_back(100 * (rank ^ 1u) + i);
  return want;
}
}  // namespace bugs

}  // namespace cf::test
