// What GPU (if any) this process sees. gpu_available() and gpu_unavailable_reason() never throw, also on machines
// with no driver at all, so tests and tools can skip cleanly; query_device() throws cf::CudaError when there is none.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

#include "clusterfusion/cuda/check.hpp"

namespace cf::cuda {

// Empty when a CUDA device is usable, else why not (e.g. "cudaGetDeviceCount: cudaErrorNoDevice (...)").
inline std::string gpu_unavailable_reason() noexcept {
  try {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();  // clear the sticky "last error" so later checks start clean
      return std::string("cudaGetDeviceCount: ") + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")";
    }
    if (count == 0) return "cudaGetDeviceCount: 0 devices";
    return {};
  } catch (...) {
    return "unknown error while asking the CUDA runtime for devices";
  }
}

inline bool gpu_available() noexcept { return gpu_unavailable_reason().empty(); }

struct DeviceInfo {
  int device = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  size_t total_memory_bytes = 0;
  int l2_bytes = 0;
  size_t shared_memory_per_block_optin = 0;
  int sm_clock_khz = 0;      // peak, as the device reports it
  int memory_clock_khz = 0;  // peak
  int memory_bus_bits = 0;
  int driver_version = 0;    // e.g. 13000 for 13.0
  int runtime_version = 0;

  std::string compute_capability() const { return std::to_string(cc_major) + "." + std::to_string(cc_minor); }
  static std::string version_string(int v) { return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10); }
};

inline DeviceInfo query_device(int device = 0) {
  DeviceInfo info;
  info.device = device;
  cudaDeviceProp prop{};
  CF_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  info.name = prop.name;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  info.sm_count = prop.multiProcessorCount;
  info.total_memory_bytes = prop.totalGlobalMem;
  info.l2_bytes = prop.l2CacheSize;
  info.shared_memory_per_block_optin = prop.sharedMemPerBlockOptin;
  info.memory_bus_bits = prop.memoryBusWidth;
  // Clock attributes are informational (deprecated in recent CUDA): 0 when the runtime does not report them.
  if (cudaDeviceGetAttribute(&info.sm_clock_khz, cudaDevAttrClockRate, device) != cudaSuccess) info.sm_clock_khz = 0;
  if (cudaDeviceGetAttribute(&info.memory_clock_khz, cudaDevAttrMemoryClockRate, device) != cudaSuccess)
    info.memory_clock_khz = 0;
  (void)cudaGetLastError();
  CF_CUDA_CHECK(cudaDriverGetVersion(&info.driver_version));
  CF_CUDA_CHECK(cudaRuntimeGetVersion(&info.runtime_version));
  return info;
}

}  // namespace cf::cuda
