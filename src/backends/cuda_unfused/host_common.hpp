// Host helpers shared by the cuda-unfused blocks: the device's SM count, the cuBLAS type of a DType, and reading
// (and clearing) a device status word.
#pragma once
#include <cuda_runtime_api.h>
#include <library_types.h>

#include <cstdint>
#include <string>

#include "clusterfusion/backends/cuda_unfused/ops.hpp"
#include "clusterfusion/cuda/check.hpp"

namespace cf::cuda_unfused::detail {

inline int current_sm_count() {
  int device = 0, sm_count = 0;
  CF_CUDA_CHECK(cudaGetDevice(&device));
  CF_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  return sm_count;
}

inline cudaDataType cuda_type(DType dtype) { return dtype == DType::F16 ? CUDA_R_16F : CUDA_R_16BF; }

// Synchronises `stream`, reads the status word, clears it and throws cf::InputError describing any bit set.
inline void check_and_clear_status(dev::DeviceBuffer<uint32_t>& status, cudaStream_t stream) {
  CF_CUDA_CHECK(cudaStreamSynchronize(stream));
  uint32_t bits = 0;
  CF_CUDA_CHECK(cudaMemcpy(&bits, status.data(), sizeof bits, cudaMemcpyDeviceToHost));
  if (bits == 0) return;
  status.fill_bytes(0);
  throw InputError("cuda-unfused: device-side input check failed: " + describe_status(bits));
}

}  // namespace cf::cuda_unfused::detail
