// The cpu backend: the full Llama forward pass (GQA, RoPE of the configured style, optional q/k/v biases, tied
// embeddings) over a paged fp32 KV cache, multithreaded over matrix rows and attention heads.
#pragma once
#include <memory>

#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/weights.hpp"

namespace cf {

// Repacks a matrix in place into the cpu kernels' layout (WeightLayout::CpuPacked), for WeightLoadOptions::repack.
void repack_for_cpu(WeightMatrix& m);

std::unique_ptr<Backend> make_cpu_backend(std::shared_ptr<const ModelWeights> weights, const BackendOptions& options);

}  // namespace cf
