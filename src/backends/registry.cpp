#include "clusterfusion/common/error.hpp"
#include "clusterfusion/runtime/backend.hpp"
#include "cpu/cpu_backend.hpp"
#include "emu/emu_backend.hpp"
#if defined(CF_HAVE_CUDA_BACKENDS)
#include "cuda/cuda_backend.hpp"
#endif

namespace cf {

namespace {

constexpr bool kCudaBuilt =
#if defined(CF_HAVE_CUDA_BACKENDS)
    true;
#else
    false;
#endif

bool is_gpu_backend(std::string_view name) { return name == "cuda" || name == "cuda-unfused"; }

}  // namespace

std::vector<BackendInfo> backend_list() {
  return {
      {"cpu", true, "reference forward pass on the CPU (threads; AVX-512, AVX2 or portable kernels)"},
      {"emu", true, "fused device kernels run on the CPU emulator (slow: tiny models)"},
      {"cuda", kCudaBuilt, "fused cluster kernels with CUDA graphs (Hopper)"},
      {"cuda-unfused", kCudaBuilt, "cuBLAS + simple kernels with CUDA graphs: the GPU baseline"},
  };
}

std::string backend_unavailable_reason(std::string_view name) {
  if (!is_gpu_backend(name)) return {};
  if (!kCudaBuilt) return "this build has no CUDA (nvcc not found at configure time)";
#if defined(CF_HAVE_CUDA_BACKENDS)
  return cuda_backend_unavailable_reason();
#else
  return {};
#endif
}

std::string default_backend_name() { return backend_unavailable_reason("cuda").empty() ? "cuda" : "cpu"; }

WeightLoadOptions weight_load_options(std::string_view backend) {
  WeightLoadOptions o;
  if (backend == "cpu") {
    o.repack = repack_for_cpu;
  } else {
    o.k_quant_as = DType::F16;
  }
  return o;
}

std::unique_ptr<Backend> create_backend(std::string_view name, std::shared_ptr<const ModelWeights> weights,
                                        const BackendOptions& options) {
  if (name == "cpu") return make_cpu_backend(std::move(weights), options);
  if (name == "emu") return make_emu_backend(std::move(weights), options);
  if (is_gpu_backend(name)) {
    const std::string why = backend_unavailable_reason(name);
    if (!why.empty()) throw InputError("--backend " + std::string(name) + ": " + why);
#if defined(CF_HAVE_CUDA_BACKENDS)
    return make_cuda_backend(name == "cuda" ? CudaMode::Fused : CudaMode::Unfused, std::move(weights), options);
#endif
  }
  std::string known;
  for (const auto& b : backend_list()) known += (known.empty() ? "" : ", ") + b.name;
  throw InputError("--backend: unknown backend '" + std::string(name) + "' (known: " + known + ")");
}

}  // namespace cf
