// The interface every backend implements: cpu (now), emu (fused device kernels on the CPU emulator), cuda (fused
// cluster kernels + CUDA graphs), cuda-unfused (cuBLAS baseline).
//
// A backend owns the model's weights in its own memory and the KV cache storage; the runtime (Runner) owns the
// page table and describes each forward step as a Batch. One Batch may mix sequences (lockstep decode of 1..16
// sequences) and may hold many tokens of one sequence (prefill): a token attends to the first kv_len entries of its
// sequence, its own entry (written in the same call) being the last of them.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "clusterfusion/engine/model_config.hpp"
#include "clusterfusion/runtime/kv_cache.hpp"

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

struct BackendOptions {
  int threads = 0;            // cpu: worker threads, 0 = all hardware threads
  int page_size = 16;         // KV positions per page
  int kv_pages = 0;           // pages in the pool; 0 = enough for max_seqs sequences of the model's full context
  int max_seqs = 1;           // sequences decoded in lockstep (1..16)
  int max_batch_tokens = 256; // largest Batch a forward() accepts (prefill is chunked to this)
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

// Creates a backend by name over the given weights (defined in src/backends, library cf_backends).
// Throws cf::InputError for an unknown name or one not built in this build ("... not built yet").
std::unique_ptr<Backend> create_backend(std::string_view name, std::shared_ptr<const ModelWeights> weights,
                                        const BackendOptions& options);

}  // namespace cf
