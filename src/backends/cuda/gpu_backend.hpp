// The GPU backends (docs/architecture.md): `cuda` (the fused cluster kernels: decoder attention, FFN, LM head, MLA,
// MoE) and `cuda-unfused` (cuBLAS + simple kernels: the baseline), one class with two decode paths.
//
//   weights   uploaded once (DeviceModel): every matrix converted to fp16 (bf16 for all-bf16 models; GGUF block
//             types dequantised on the host), q/k/v stacked into w_qkv, gate/up into w_gate_up; or random weights
//             generated on the device (benchmarks: no host copy of a 14 GB model).
//   KV cache  DeviceKvCache: per layer a K and a V pool [n_pages, page_size, n_kv_heads, head_dim] mirroring the
//             Runner's KvPageTable; page ids in a Batch are slots of these pools.
//   decode    a batch of one token per sequence (1..max_seqs sequences): the whole step (embedding gather, every
//             layer, final norm + LM head) is captured ONCE per batch size in a CUDA graph and replayed per token.
//             The graph reads the step's tokens, positions and page table from fixed device buffers, which one
//             cudaMemcpyAsync from pinned memory refreshes before each replay; logits come back in one copy. No
//             host synchronisation inside a step, no descriptor rebuilt per call (the fused plans are built with the
//             graph).
//   prefill   any other batch (many tokens of a sequence): the cuda-unfused blocks over all its tokens at once
//             (cuBLAS GEMMs, causal attention over each token's kv_len) in both modes, then the LM head for the
//             requested rows. GpuOptions::prefill_through_decode instead runs it token by token through the decode
//             graphs (slower; tests use it to check the fused path on prefill too).
//   DeepSeek  MLA attention and dense or MoE FFN layers (ModelConfig::layer_spec): the fused MLA / MoE plans, or the
//             cuda-unfused mla_block / moe_block (backends/cuda_unfused/deepseek.hpp). Both MLA blocks take one token
//             per sequence, so these models' prompts always run token by token through the decode graphs.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/weights.hpp"
#include "common/device_layout.hpp"
#include "cuda/cuda_backend.hpp"
#include "fused/layer_buffers.hpp"

namespace cf::gpu {

using device_layout::Storage;

const char* mode_name(CudaMode mode);  // "cuda", "cuda-unfused"

// The model's weights in device memory, in the layouts of both decode paths (immutable once built; backends share
// it through shared_ptr).
class DeviceModel {
 public:
  // Every layer kind's buffers (fused/layer_buffers.hpp): Llama's w_qkv / w_gate_up, DeepSeek-V2's MLA and MoE.
  using Layer = fused::LayerBuffers;

  // Converts and uploads (throws cf::InputError for shapes no GPU path supports).
  static std::shared_ptr<const DeviceModel> upload(const ModelWeights& weights);
  // Random weights of the config's shapes generated on the device (uniform in +-sqrt(3 / in) for matrices, norms in
  // 1 +- 0.1, embeddings in +-1, like ModelWeights::random); same seed, same bits. Llama-family configs only.
  static std::shared_ptr<const DeviceModel> random(const ModelConfig& config, Storage storage, uint64_t seed);

  const ModelConfig& config() const { return config_; }
  Storage storage() const { return storage_; }
  const std::vector<Layer>& layers() const { return layers_; }
  const uint16_t* token_embd() const { return token_embd_.data(); }
  const uint16_t* output_norm() const { return output_norm_.data(); }
  const uint16_t* lm_head() const { return output_.empty() ? token_embd_.data() : output_.data(); }
  // Bytes of weights one decode step reads: every layer's matrices and norms, the final norm and the LM head (the
  // embedding table only for its tokens' rows, not counted); MoE layers: the top_k chosen experts of one token.
  size_t step_weight_bytes() const;
  size_t device_bytes() const;

 private:
  DeviceModel() = default;
  static std::shared_ptr<DeviceModel> allocate(const ModelConfig& config, Storage storage, bool with_bias,
                                               bool separate_output);
  ModelConfig config_;
  Storage storage_ = Storage::F16;
  std::vector<Layer> layers_;
  dev::DeviceBuffer<uint16_t> token_embd_, output_norm_, output_;
};

// The KV pools of every layer (uninitialised until written). MLA models (shape: one "KV head" of kv_lora + rope
// values): the latent pool in k_layer(), no V pool.
class DeviceKvCache {
 public:
  explicit DeviceKvCache(const KvCacheShape& shape, bool latent = false);
  const KvCacheShape& shape() const { return shape_; }
  void* k_layer(int layer) const;
  void* v_layer(int layer) const;
  size_t bytes() const { return k_.bytes() + v_.bytes(); }
  // Random values in +-1 (benchmarks: attention over a context that was never prefilled).
  void fill_random(Storage storage, uint64_t seed, cudaStream_t stream);

 private:
  KvCacheShape shape_;
  dev::DeviceBuffer<uint16_t> k_, v_;
};

struct GpuOptions {
  int page_size = 16;
  int kv_pages = 0;             // 0: max_seqs sequences of the model's full context
  int max_seqs = 1;             // decode batch, 1..16
  int max_batch_tokens = 256;   // largest prefill batch
  int max_positions = 0;        // RoPE table rows; 0: every position the pool can hold
  bool prefill_through_decode = false;  // always for MLA / MoE models (the MLA blocks take one token per sequence)
  bool use_graphs = true;       // false: launch each step's kernels directly (debugging, graph-vs-eager tests)

  static GpuOptions from(const BackendOptions& options);
  KvCacheShape kv_shape(const ModelConfig& config) const;
};

class GpuBackend final : public Backend {
 public:
  // `kv` may be shared with another backend over the same model (benchmarks), as long as they do not run at once.
  GpuBackend(CudaMode mode, std::shared_ptr<const DeviceModel> model, std::shared_ptr<DeviceKvCache> kv,
             const GpuOptions& options);
  ~GpuBackend() override;

  std::string name() const override;
  const ModelConfig& config() const override;
  const KvCacheShape& kv_shape() const override;
  int max_batch_tokens() const override;
  void forward(const Batch& batch, float* logits) override;

  // ---- the decode graphs, for benchmarks ----
  // Copies a decode batch's inputs into the device buffers the graphs read (async on stream()) and captures the
  // graph of its size if it is new. The batch must be a decode step (one token per sequence).
  void stage_decode(const Batch& batch);
  // Enqueues one replay of the graph of `batch_size` (async; stage_decode first).
  void replay_decode(int batch_size);
  // Synchronises and throws if any kernel reported a bad input or a timeout.
  void check_status();
  cudaStream_t stream() const;
  size_t graph_nodes(int batch_size) const;
  // The decode path's launch shapes for `batch_size` (fused: cluster sizes, stages), one line.
  std::string describe(int batch_size) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cf::gpu
