// Small device kernels of the GPU backends (device_kernels.cu): row gathers for the embedding lookup and the LM
// head's rows, and seeded random fills for benchmark weights. 16-bit elements (fp16 or bf16, copied as bits).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "common/device_layout.hpp"

namespace cf::gpu {

// out[r, :] = table[index[r], :] for r < rows; width % 8 == 0. Indices were validated on the host.
void gather_rows(const uint16_t* table, const int32_t* index, int rows, int width, uint16_t* out, cudaStream_t stream);

// data[i] = lo + (hi - lo) * u(seed, i) rounded to `storage`, u uniform in [0, 1) from a counter hash.
void fill_uniform(uint16_t* data, size_t n, device_layout::Storage storage, uint64_t seed, float lo, float hi,
                  cudaStream_t stream);

}  // namespace cf::gpu
