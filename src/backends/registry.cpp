#include "clusterfusion/common/error.hpp"
#include "clusterfusion/runtime/backend.hpp"
#include "cpu/cpu_backend.hpp"

namespace cf {

std::vector<BackendInfo> backend_list() {
  return {
      {"cpu", true, "reference forward pass on the CPU (threads + AVX2)"},
      {"emu", false, "fused device kernels run on the CPU emulator"},
      {"cuda", false, "fused cluster kernels with CUDA graphs (Hopper)"},
      {"cuda-unfused", false, "cuBLAS + simple kernels: the GPU baseline"},
  };
}

std::unique_ptr<Backend> create_backend(std::string_view name, std::shared_ptr<const ModelWeights> weights,
                                        const BackendOptions& options) {
  if (name == "cpu") return make_cpu_backend(std::move(weights), options);
  std::string known;
  for (const auto& b : backend_list()) {
    if (b.name == name) throw InputError("--backend " + std::string(name) + ": not built yet (" + b.description + ")");
    known += (known.empty() ? "" : ", ") + b.name;
  }
  throw InputError("--backend: unknown backend '" + std::string(name) + "' (known: " + known + ")");
}

}  // namespace cf
