// The interface every backend implements: cpu (reference), emu (fused device kernels on the CPU emulator), cuda
// (fused cluster kernels + CUDA graphs), cuda-unfused (cuBLAS baseline + CUDA graphs).
//
// A backend owns the model's weights in its own memory and the KV cache storage; the runtime (Runner) owns the
// page table and describes each forward step as a Batch. One Batch may mix sequences (lockstep decode of 1..16
// sequences) and may hold many tokens of one sequence (prefill): a token attends to the first kv_len entries of its
// sequence, its own entry (written in the same call) being the last of them.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "clusterfusion/model/config.hpp"
#include "clusterfusion/formats/tensor.hpp"
#include "clusterfusion/runtime/kv_cache.hpp"
#include "clusterfusion/runtime/weights.hpp"

namespace cf {

struct ModelWeights;

struct Batch {
  std::vector<int32_t> tokens;     // [n_tokens]
  std::vector<int32_t> positions;  // [n_tokens] RoPE position
  std::vector<int32_t> token_seq;  // [n_tokens] which of the batch's sequences (index into kv_indptr)
  std::vector<int32_t> kv_slot;    // [n_tokens] physical slot its k, v are written to (page * page_size + offset)
  std::vector<int32_t> kv_len;     // [n_tokens] number of cache entries it attends to (causal)
  // Paged KV description of each sequence after this step's appends: sequence s owns pages
  // kv_indices[kv_indptr[s] .. kv_indptr[s+1]), its last page filled to kv_last_page_len[s].
  std::vector<int32_t> kv_indptr;         // [n_seqs + 1]
  std::vector<int32_t> kv_indices;        // [total pages]
  std::vector<int32_t> kv_last_page_len;  // [n_seqs]
  std::vector<int32_t> logit_tokens;      // tokens whose logits are returned, in this order

  int n_tokens() const { return int(tokens.size()); }
  int n_seqs() const { return int(kv_last_page_len.size()); }
  // Checks internal consistency against a cache shape and vocabulary; throws cf::Error naming the field.
  void validate(const KvCacheShape& kv, int vocab) const;
};

// cpu backend: how activations meet block-quantised weights (Q8_0, Q4_0, Q4_1, k-quants) in matrix products.
// BackendOptions' default is F32, the reference the other backends and the tests compare with; the command line
// (generate, chat, serve) runs Int16 unless told otherwise (kCliCpuArithmetic).
enum class CpuArithmetic : uint8_t {
  F32,   // activations stay fp32: agrees with fp32 references to ~1e-4
  Int16, // activations rounded per block of 32 to 16-bit integers, exact integer dot products (two byte planes):
         // logits within ~1e-2 of f32's, greedy output as f32's up to near ties; ~1.5x f32 on prompts
  Int8,  // activations quantised per block of 32 to int8, integer dot products (as llama.cpp does): faster still;
         // logits differ from fp32 by up to ~1.4 on 4-bit models, like llama.cpp's (tests/data/golden/README.md)
};
inline constexpr CpuArithmetic kCliCpuArithmetic = CpuArithmetic::Int16;

// The names of the command line and the benchmarks ("f32", "int16", "int8"); nullopt for any other name.
inline std::optional<CpuArithmetic> cpu_arithmetic_from_name(std::string_view name) {
  if (name == "f32") return CpuArithmetic::F32;
  if (name == "int16") return CpuArithmetic::Int16;
  if (name == "int8") return CpuArithmetic::Int8;
  return std::nullopt;
}
inline const char* cpu_arithmetic_name(CpuArithmetic a) {
  return a == CpuArithmetic::F32 ? "f32" : a == CpuArithmetic::Int16 ? "int16" : "int8";
}

struct BackendOptions {
  int threads = 0;            // cpu: worker threads, 0 = all hardware threads
  int page_size = 16;         // KV positions per page
  int kv_pages = 0;           // pages in the pool; 0 = enough for max_seqs sequences of the model's full context
  int max_seqs = 1;           // sequences decoded in lockstep (1..16)
  int max_batch_tokens = 256; // largest Batch a forward() accepts (prefill is chunked to this)
  CpuArithmetic cpu_arithmetic = CpuArithmetic::F32;  // see CpuArithmetic
  DType cpu_kv_type = DType::F32;  // cpu: KV cache elements, F32 or F16 (half the memory, fp16 rounding)
  std::string cpu_isa;             // cpu: kernel level "avx512" / "avx2" / "portable" (same results); "" = best
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual const ModelConfig& config() const = 0;
  virtual const KvCacheShape& kv_shape() const = 0;
  virtual int max_batch_tokens() const = 0;
  // Runs the model on `batch`: writes every token's k, v to its slot, then writes the logits of
  // batch.logit_tokens to `logits` ([logit_tokens.size(), vocab] row-major).
  virtual void forward(const Batch& batch, float* logits) = 0;
};

// Names of all backends the project knows, and whether this build has them.
struct BackendInfo {
  std::string name;
  bool built = false;
  std::string description;
};
std::vector<BackendInfo> backend_list();

// Why a known backend cannot run here (empty when it can): "this build has no CUDA (nvcc not found at configure
// time)", "no CUDA GPU found (...)", "needs a Hopper GPU (compute capability 9.x); found ...".
std::string backend_unavailable_reason(std::string_view name);
// "cuda" when this build has it and a usable GPU is present, else "cpu".
std::string default_backend_name();

// How to load a model's weights for a backend (pass to load_model): the device backends take k-quant matrices as
// F16; the cpu backend keeps them and repacks every matrix into its kernels' layout while loading (one copy in
// memory). Any backend also runs on weights loaded with default options (the cpu backend then repacks a copy).
WeightLoadOptions weight_load_options(std::string_view backend);

// Creates a backend by name over the given weights (defined in src/backends, library cf_backends).
// Throws cf::InputError for an unknown name or one that cannot run here ("--backend cuda: <reason>").
std::unique_ptr<Backend> create_backend(std::string_view name, std::shared_ptr<const ModelWeights> weights,
                                        const BackendOptions& options);

}  // namespace cf
