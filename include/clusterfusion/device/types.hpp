// Basic types, limits and function-qualifier macros shared by both builds of the device API.
// Included by api.hpp, launch.hpp and tensor_map.hpp; kernels include api.hpp.
#pragma once
#include <cstddef>
#include <cstdint>

#include "clusterfusion/common/dtype.hpp"

// Two builds of everything device-related, told apart by the target: the emulator build (targets that link cf_emu,
// which defines CF_BUILD_EMU) and the GPU build.
//   CF_DEVICE_CUDA   device code compiled by nvcc (GPU build): api.hpp is the thin PTX layer of cuda.hpp
//   CF_DEVICE_EMU    device code compiled by the host compiler against the emulator (emu.hpp, src/emu)
//   CF_RUNTIME_CUDA  host code of the GPU build, whichever compiler (nvcc or a backend's .cpp): buffers, launches and
//                    tensor maps go through the CUDA runtime (buffer.hpp, launch.hpp, tensor_map.hpp)
// Each build declares its symbols in its own inline namespace, CF_BUILD_NAMESPACE (cf::dev::emu_build::..., or
// gpu_build), so one binary can link both (the CLI holds the emu and the cuda backends) while code names them
// cf::dev::X / cf::kernels::X as usual.
#if defined(CF_BUILD_EMU)
#if defined(__CUDACC__)
#error "the emulator build (CF_BUILD_EMU, from cf_emu) is compiled by the host compiler, not nvcc"
#endif
#define CF_DEVICE_EMU 1
#define CF_BUILD_NAMESPACE emu_build
#else
#define CF_RUNTIME_CUDA 1
#define CF_BUILD_NAMESPACE gpu_build
#if defined(__CUDACC__)
#define CF_DEVICE_CUDA 1
#endif
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
inline constexpr uint32_t kTmaColumnAlign = 16;                // cp.async.bulk.tensor: box column x * element size
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

// Element types: the project-wide enum (common/dtype.hpp); a tensor map describes F32, F16 or BF16 elements.
using cf::DType;
using cf::dtype_bytes;

}  // namespace cf::dev
