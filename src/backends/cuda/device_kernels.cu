#include "cuda/device_kernels.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/cuda/check.hpp"

namespace cf::gpu {

namespace {

constexpr int kGatherThreads = 128;
constexpr int kFillThreads = 256;
constexpr int kFillMaxBlocks = 4096;
constexpr int kElementsPerVector = 8;  // 8 x 16-bit = one 16-byte access

__global__ void __launch_bounds__(kGatherThreads)
    gather_rows_kernel(const uint4* table, const int32_t* index, int vectors_per_row, uint4* out) {
  const int row = blockIdx.x;
  const uint4* src = table + size_t(index[row]) * vectors_per_row;
  uint4* dst = out + size_t(row) * vectors_per_row;
  for (int i = threadIdx.x; i < vectors_per_row; i += blockDim.x) dst[i] = src[i];
}

__device__ __forceinline__ float hash_uniform(uint64_t seed, size_t index) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + index + 1;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return float(z >> 40) * (1.0f / 16777216.0f);
}

template <bool kBf16>
__global__ void __launch_bounds__(kFillThreads) fill_kernel(uint16_t* data, size_t n, uint64_t seed, float lo, float hi) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float v = lo + (hi - lo) * hash_uniform(seed, i);
    if constexpr (kBf16)
      data[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
    else
      data[i] = __half_as_ushort(__float2half_rn(v));
  }
}

}  // namespace

void gather_rows(const uint16_t* table, const int32_t* index, int rows, int width, uint16_t* out, cudaStream_t stream) {
  CF_CHECK(width % kElementsPerVector == 0, "gather_rows: width " + std::to_string(width) + " is not a multiple of 8");
  if (rows <= 0) return;
  gather_rows_kernel<<<rows, kGatherThreads, 0, stream>>>(reinterpret_cast<const uint4*>(table), index,
                                                           width / kElementsPerVector, reinterpret_cast<uint4*>(out));
  CF_CUDA_CHECK_LAUNCH("gather_rows_kernel");
}

void fill_uniform(uint16_t* data, size_t n, device_layout::Storage storage, uint64_t seed, float lo, float hi,
                  cudaStream_t stream) {
  if (n == 0) return;
  const int blocks = int(std::min<size_t>((n + kFillThreads - 1) / kFillThreads, kFillMaxBlocks));
  if (storage == device_layout::Storage::BF16)
    fill_kernel<true><<<blocks, kFillThreads, 0, stream>>>(data, n, seed, lo, hi);
  else
    fill_kernel<false><<<blocks, kFillThreads, 0, stream>>>(data, n, seed, lo, hi);
  CF_CUDA_CHECK_LAUNCH("fill_kernel");
}

}  // namespace cf::gpu
