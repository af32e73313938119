// Basic types, limits and function-qualifier macros shared by both builds of the device API.
// Included by api.hpp, launch.hpp and tensor_map.hpp; kernels include api.hpp.
#pragma once
#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define CF_DEVICE_CUDA 1
#else
#define CF_DEVICE_EMU 1
#endif

// Function qualifiers. A kernel is `template <...> CF_GLOBAL void k(const CF_GRID_CONSTANT Params p)`.
// A non-template kernel defined in a header may be included by one .cu file only (nvcc ignores `inline` on
// __global__); on the host CF_GLOBAL is `inline`.
#if defined(CF_DEVICE_CUDA)
#define CF_GLOBAL __global__
#define CF_DEVICE __device__ __forceinline__
#define CF_HOST_DEVICE __host__ __device__ __forceinline__
#define CF_GRID_CONSTANT __grid_constant__
#define CF_LAUNCH_BOUNDS(max_threads, min_blocks) __launch_bounds__(max_threads, min_blocks)
#define CF_UNROLL _Pragma("unroll")
#else
#define CF_GLOBAL inline
#define CF_DEVICE inline
#define CF_HOST_DEVICE inline
#define CF_GRID_CONSTANT
#define CF_LAUNCH_BOUNDS(max_threads, min_blocks)
#define CF_UNROLL
#endif
#define CF_RESTRICT __restrict__

namespace cf::dev {

// Hopper (sm_90) limits checked by the launcher in both builds.
inline constexpr uint32_t kWarpSize = 32;
inline constexpr uint32_t kFullMask = 0xffffffffu;
inline constexpr uint32_t kMaxThreadsPerBlock = 1024;
inline constexpr uint32_t kMaxBlockDimZ = 64;
inline constexpr uint32_t kMaxPortableClusterSize = 8;
inline constexpr uint32_t kMaxClusterSize = 16;                // with LaunchConfig::allow_nonportable_cluster
inline constexpr size_t kMaxSmemPerBlock = 227 * 1024;         // dynamic shared memory per block (opt-in above 48 KB)
inline constexpr size_t kDefaultSmemLimit = 48 * 1024;         // above this CUDA needs cudaFuncSetAttribute
inline constexpr size_t kDynamicSmemAlign = 128;               // dev::dynamic_smem() is at least this aligned
inline constexpr uint32_t kBulkCopyAlign = 16;                 // cp.async.bulk: addresses and size
inline constexpr uint32_t kTmaSmemAlign = 128;                 // cp.async.bulk.tensor destination
inline constexpr uint32_t kMaxTmaBoxDim = 256;
inline constexpr uint32_t kMaxMbarrierCount = (1u << 20) - 1;  // arrival count and tx-count range
inline constexpr uint32_t kMaxNamedBarrier = 15;               // ids 1..15; 0 is block_sync()

struct Dim3 {
  uint32_t x = 1, y = 1, z = 1;
  constexpr Dim3() = default;
  constexpr Dim3(uint32_t x_, uint32_t y_ = 1, uint32_t z_ = 1) : x(x_), y(y_), z(z_) {}  // NOLINT: implicit from int
  constexpr uint64_t volume() const { return uint64_t(x) * y * z; }
  friend constexpr bool operator==(const Dim3& a, const Dim3& b) { return a.x == b.x && a.y == b.y && a.z == b.z; }
};

// Element types a tensor map can describe (TMA copies bytes; the type fixes the element size).
enum class DType : uint8_t { U8, U16, U32, F16, BF16, F32 };

constexpr uint32_t dtype_bytes(DType t) {
  switch (t) {
    case DType::U8: return 1;
    case DType::U16: case DType::F16: case DType::BF16: return 2;
    case DType::U32: case DType::F32: return 4;
  }
  return 0;
}

}  // namespace cf::dev
