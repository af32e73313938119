// Launching a kernel, in both builds:
//
//   dev::LaunchConfig cfg;
//   cfg.grid = {16}; cfg.cluster = {4}; cfg.block = {128}; cfg.smem_bytes = kSmemBytes; cfg.name = "matvec";
//   dev::launch(cfg, matvec_kernel<2>, params);       // kernel: CF_GLOBAL void k(const CF_GRID_CONSTANT P p)
//
// CUDA: cudaLaunchKernelEx with the cluster-dimension attribute on cfg.stream (asynchronous); before the first
// launch of a kernel it checks that the kernel has no static __shared__ memory, and sets
// cudaFuncAttributeMaxDynamicSharedMemorySize (above 48 KB) / NonPortableClusterSizeAllowed as needed.
// Launch failures throw cf::Error naming the kernel.
// Emulator: runs the whole grid on the calling thread before returning (cluster after cluster, the CTAs of a
// cluster co-scheduled); a detected bug throws cf::dev::EmuError naming kernel, block, thread, operation and source
// line. Launches are serialised process-wide.
// Both: an invalid configuration for Hopper throws cf::InputError before anything runs (validate_launch_config).
#pragma once
#include <cstdint>
#include <string>
#include <type_traits>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/device/types.hpp"

#if defined(CF_RUNTIME_CUDA)
#include <cuda_runtime.h>

#include <mutex>
#include <unordered_map>

#include "clusterfusion/cuda/check.hpp"
#endif

namespace cf::dev::inline CF_BUILD_NAMESPACE {

#if defined(CF_RUNTIME_CUDA)
using Stream = cudaStream_t;
#else
using Stream = void*;
#endif

struct LaunchConfig {
  Dim3 grid;                               // in blocks; each dimension a multiple of `cluster`'s
  Dim3 block;                              // threads per block (<= 1024)
  Dim3 cluster;                            // blocks per cluster (<= 8, or <= 16 with allow_nonportable_cluster)
  size_t smem_bytes = 0;                   // dynamic shared memory per block (<= 227 KB)
  Stream stream = nullptr;                 // CUDA stream (ignored by the emulator)
  const char* name = "kernel";             // for error reports
  bool allow_nonportable_cluster = false;  // opt in to clusters of 9..16 blocks
  uint64_t emu_seed = 0;                   // emulator schedule seed; 0: $CF_EMU_SEED, else 1
};

namespace detail {
inline std::string dim_string(const Dim3& d) {
  return std::to_string(d.x) + "x" + std::to_string(d.y) + "x" + std::to_string(d.z);
}
}  // namespace detail

// Throws cf::InputError naming the kernel and the violated Hopper limit.
inline void validate_launch_config(const LaunchConfig& cfg) {
  const std::string who = std::string("launch '") + (cfg.name ? cfg.name : "kernel") + "': ";
  auto fail = [&](const std::string& what) { throw InputError(who + what); };
  const Dim3 &g = cfg.grid, &b = cfg.block, &c = cfg.cluster;
  if (g.volume() == 0 || b.volume() == 0 || c.volume() == 0)
    fail("grid " + detail::dim_string(g) + ", block " + detail::dim_string(b) + " and cluster " +
         detail::dim_string(c) + " must all be at least 1 in every dimension");
  if (b.volume() > kMaxThreadsPerBlock || b.z > kMaxBlockDimZ)
    fail("block " + detail::dim_string(b) + " has " + std::to_string(b.volume()) +
         " threads; Hopper allows at most 1024 per block (and z <= 64)");
  if (g.x > 0x7fffffffu || g.y > 65535u || g.z > 65535u)
    fail("grid " + detail::dim_string(g) + " exceeds 2^31-1 x 65535 x 65535");
  const uint64_t cluster_blocks = c.volume();
  if (cluster_blocks > kMaxClusterSize)
    fail("cluster " + detail::dim_string(c) + " has " + std::to_string(cluster_blocks) +
         " blocks; the hardware maximum is 16");
  if (cluster_blocks > kMaxPortableClusterSize && !cfg.allow_nonportable_cluster)
    fail("cluster " + detail::dim_string(c) + " has " + std::to_string(cluster_blocks) +
         " blocks; more than 8 needs allow_nonportable_cluster = true");
  if (g.x % c.x != 0 || g.y % c.y != 0 || g.z % c.z != 0)
    fail("grid " + detail::dim_string(g) + " is not a multiple of the cluster " + detail::dim_string(c) +
         " in every dimension");
  if (cfg.smem_bytes > kMaxSmemPerBlock)
    fail("dynamic shared memory " + std::to_string(cfg.smem_bytes) + " bytes exceeds Hopper's 227 KB (" +
         std::to_string(kMaxSmemPerBlock) + " bytes) per block");
}

#if defined(CF_RUNTIME_CUDA)

// The project's one CUDA error path (cuda/check.hpp): a failed call becomes a cf::CudaError naming `what`.
inline void check_cuda(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess) cuda::throw_cuda_error(err, what);
}

// True when a CUDA device is usable (GPU tests skip otherwise).
inline bool device_available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return count > 0;
}

// SMs of the current device (plans split work per SM); `who` names the caller in the error.
inline int sm_count(const std::string& who) {
  int device = 0, count = 0;
  check_cuda(cudaGetDevice(&device), who + ": cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device),
             who + ": cudaDeviceGetAttribute(MultiProcessorCount)");
  return count;
}

namespace detail {
// Once per kernel: reject static shared memory, raise the dynamic smem limit and allow big clusters as needed.
inline void prepare_kernel(const void* fn, const LaunchConfig& cfg) {
  struct Prepared {
    size_t smem_limit = kDefaultSmemLimit;
    bool nonportable = false;
  };
  static std::mutex mutex;
  static std::unordered_map<const void*, Prepared> prepared;
  const std::lock_guard<std::mutex> lock(mutex);
  const std::string who = std::string("launch '") + cfg.name + "'";
  auto [it, first] = prepared.try_emplace(fn);
  if (first) {
    cudaFuncAttributes attr{};
    check_cuda(cudaFuncGetAttributes(&attr, fn), who + ": cudaFuncGetAttributes");
    if (attr.sharedSizeBytes > 0) {
      prepared.erase(it);
      throw InputError(who + ": kernel has " + std::to_string(attr.sharedSizeBytes) +
                       " bytes of static __shared__ memory; carve all shared memory from dev::dynamic_smem()");
    }
  }
  if (cfg.smem_bytes > it->second.smem_limit) {
    check_cuda(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, int(cfg.smem_bytes)),
               who + ": cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
    it->second.smem_limit = cfg.smem_bytes;
  }
  if (cfg.cluster.volume() > kMaxPortableClusterSize && !it->second.nonportable) {
    check_cuda(cudaFuncSetAttribute(fn, cudaFuncAttributeNonPortableClusterSizeAllowed, 1),
               who + ": cudaFuncSetAttribute(NonPortableClusterSizeAllowed)");
    it->second.nonportable = true;
  }
}
}  // namespace detail

template <typename Params>
void launch(const LaunchConfig& cfg, void (*kernel)(Params), const std::type_identity_t<Params>& params) {
  validate_launch_config(cfg);
  detail::prepare_kernel(reinterpret_cast<const void*>(kernel), cfg);
  cudaLaunchConfig_t lc{};
  lc.gridDim = dim3(cfg.grid.x, cfg.grid.y, cfg.grid.z);
  lc.blockDim = dim3(cfg.block.x, cfg.block.y, cfg.block.z);
  lc.dynamicSmemBytes = cfg.smem_bytes;
  lc.stream = cfg.stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = cfg.cluster.x;
  attr[0].val.clusterDim.y = cfg.cluster.y;
  attr[0].val.clusterDim.z = cfg.cluster.z;
  lc.attrs = attr;
  lc.numAttrs = 1;
  check_cuda(cudaLaunchKernelEx(&lc, kernel, params), std::string("launch '") + cfg.name + "'");
}

// Waits for all work on the device; throws cf::Error if a kernel failed.
inline void synchronize() { check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

}  // namespace cf::dev::inline CF_BUILD_NAMESPACE

#else  // emulator

}  // namespace cf::dev::inline CF_BUILD_NAMESPACE

namespace cf::dev::emu {
using KernelInvoker = void (*)(const void* bound_kernel);
void run_launch(const LaunchConfig& cfg, KernelInvoker invoke, const void* bound_kernel);

// Counters of the last emulated launch on this process (for tests and benchmarks of the emulator itself).
struct LaunchStats {
  uint64_t seed = 0;
  uint64_t clusters = 0;
  uint64_t threads = 0;           // fibers run, all clusters
  uint64_t switches = 0;          // fiber switches
  uint64_t copies = 0;            // bulk/TMA copies delivered
  uint64_t protection_faults = 0; // page faults taken on closed pages that were not errors
  uint64_t checked_accesses = 0;  // plain loads/stores of shared and DeviceBuffer memory the access checks saw
  uint64_t reports = 0;           // findings (every occurrence, before grouping by site)
  uint64_t max_phases = 0;        // most phases any one mbarrier completed (>= 3: a ring wrapped, parities reused)
  double seconds = 0;
};
LaunchStats last_launch_stats();

// The access checks (data races, uninitialised reads, async-proxy fences, exact bounds; docs/emulator.md) are on
// unless $CF_EMU_CHECKS is 0/off; this overrides both ways for the launches that follow, process-wide.
void set_access_checks(bool on);

// Fault injection for tests of the hang paths: the next emulated launch drops its nth remote mbarrier arrival
// (arrive_remote / arrive_expect_tx_remote, counted from 1 across the launch), as if that peer never arrived.
// 0 clears it. The setting is consumed by the next launch.
void lose_remote_arrival(uint64_t nth);
}  // namespace cf::dev::emu

namespace cf::dev::inline CF_BUILD_NAMESPACE {

inline bool device_available() { return true; }

// An H100 SXM's SM count, so emulated plans split work as they would on the GPU.
inline int sm_count(const std::string& /*who*/) { return 132; }

template <typename Params>
void launch(const LaunchConfig& cfg, void (*kernel)(Params), const std::type_identity_t<Params>& params) {
  validate_launch_config(cfg);
  struct Bound {
    void (*kernel)(Params);
    const Params* params;
  };
  const Bound bound{kernel, &params};
  emu::run_launch(
      cfg, [](const void* b) { static_cast<const Bound*>(b)->kernel(*static_cast<const Bound*>(b)->params); }, &bound);
}

inline void synchronize() {}

}  // namespace cf::dev::inline CF_BUILD_NAMESPACE

#endif
