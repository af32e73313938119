// The cuda and cuda-unfused backends as the registry creates them (src/backends/registry.cpp). The full interface
// (device weights shared between backends, random device weights, the decode-graph calls benchmarks time) is
// gpu_backend.hpp.
#pragma once
#include <memory>
#include <string>

#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/weights.hpp"

namespace cf {

enum class CudaMode { Fused, Unfused };

// Empty when the cuda backends can run here, else why not: "no CUDA GPU found (...)", "needs a Hopper GPU ...".
std::string cuda_backend_unavailable_reason();

// Uploads the weights (fp16, or bf16 for an all-bf16 model; GGUF block types dequantised) and allocates the KV cache.
std::unique_ptr<Backend> make_cuda_backend(CudaMode mode, std::shared_ptr<const ModelWeights> weights,
                                           const BackendOptions& options);

}  // namespace cf
