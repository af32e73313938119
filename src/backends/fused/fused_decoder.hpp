// The decode step of a model from the fused kernels (docs/backends.md): per layer its attention block (decoder
// attention for Llama-family layers, the MLA block for DeepSeek-V2's) and its FFN block (dense SwiGLU, or MoE), then
// the final norm + LM head (+ greedy argmax). Compiled twice from one source: into
// cf_fused_decoder_emu against cf_kernels_emu (the emu backend) and, in CUDA builds, into cf_fused_decoder against
// cf_kernels (the cuda backend). Only the build-agnostic plan headers are used, so pointers are device pointers of
// whichever build links it (emulator memory for the emu backend) and streams are void*.
//
// The residual stream follows the kernels' (SGLang) convention: each block takes `hidden` (the previous block's
// output) and `residual` (the running sum), writes residual_out = hidden + residual, and returns its own output in
// `out`; the LM head adds the last pair before its norm. Layer 0 has no residual yet (its residual_out = the
// embeddings). Two hidden buffers alternate, so no block writes the buffer it reads.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "clusterfusion/device/types.hpp"
#include "clusterfusion/kernels/mla/params.hpp"
#include "clusterfusion/kernels/moe/params.hpp"
#include "clusterfusion/model/config.hpp"
#include "clusterfusion/model/types.hpp"
#include "clusterfusion/runtime/kv_cache.hpp"

namespace cf::fused {
inline namespace CF_BUILD_NAMESPACE {  // one per kernel build (device/types.hpp)

// A DeepSeek-V2 layer's MLA block (layouts of kernels/mla/params.hpp, device_layout::MlaLayer) and its latent pool
// [n_pages, page_size, kv_lora + rope].
struct MlaPointers : kernels::mla::Weights {
  void* latent_pages = nullptr;
};

// A DeepSeek-V2 MoE layer's FFN block (layouts of kernels/moe/params.hpp, device_layout::MoeLayer).
using MoePointers = kernels::moe::Weights;

// Device copies of one layer's weights in the kernels' layouts (all in the decoder's dtype):
// w_qkv [q_dim + 2 kv_dim, hidden] (q rows, k rows, v rows), w_gate_up [2 ffn_hidden, hidden] (gate rows, up rows).
// The layer's kinds (ModelConfig::layer_spec) say which are set: an MLA layer has `mla` instead of the attention
// fields, an MoE layer `moe` instead of the dense FFN's.
struct LayerPointers {
  const void* attn_norm = nullptr;  // [hidden]
  const void* w_qkv = nullptr;
  const void* b_qkv = nullptr;      // optional [q_dim + 2 kv_dim]
  const void* w_o = nullptr;        // [hidden, q_dim]
  const void* ffn_norm = nullptr;   // [hidden]
  const void* w_gate_up = nullptr;
  const void* w_down = nullptr;     // [hidden, ffn_hidden]
  void* k_pages = nullptr;          // this layer's pool [n_pages, page_size, n_kv_heads, head_dim]
  void* v_pages = nullptr;
  MlaPointers mla;
  MoePointers moe;
};

struct ModelPointers {
  std::vector<LayerPointers> layers;
  const void* output_norm = nullptr;  // [hidden]
  const void* lm_head = nullptr;      // [vocab, hidden]
  // RoPE table [max_positions, rot_dim] fp32 (cos of the pairs, then sin); optional for Llama layers (else computed),
  // required for MLA layers (YaRN frequencies and magnitude: device_layout::rope_table)
  const float* cos_sin = nullptr;
  int max_positions = 0;
  // MLA models: the shape of the MLA layouts (device_layout::device_mla_shape: the model's, widths padded to the
  // kernel's tiles)
  MlaBlockShape mla_shape;
};

// Launch shapes; 0 = the kernels' own choice (what the GPU wants). The emu backend asks for small grids: the
// emulator runs every thread as a fiber, so fewer CTAs are faster and cover the same code.
struct Tuning {
  int attention_cluster_size = 0;
  int ffn_cluster_size = 0;
  int ffn_max_clusters = 0;
  int lm_head_max_ctas = 0;
  int mla_cluster_size = 0;
  int mla_max_clusters = 0;
  int moe_cluster_size = 0;
  int moe_max_clusters = 0;
  int sm_count = 0;
};

// Per-step device buffers. The step's input embeddings are in hidden[0]; hidden[1] and residual are scratch.
struct StepBuffers {
  void* hidden[2] = {nullptr, nullptr};  // [max_batch, hidden] each
  void* residual = nullptr;              // [max_batch, hidden]
  const int32_t* positions = nullptr;    // [batch]
  const int32_t* kv_indptr = nullptr;    // [batch + 1], after this step's append (token b = sequence b)
  const int32_t* kv_indices = nullptr;   // [n_indices]
  const int32_t* kv_last_page_len = nullptr;  // [batch]
  int n_indices = 0;                     // capacity of kv_indices
  float* logits = nullptr;               // optional [batch, vocab]
  int32_t* tokens = nullptr;             // optional [batch] greedy tokens
};

class FusedDecoder {
 public:
  // Builds one attention plan (decoder attention or MLA) and one FFN plan (dense or MoE) per layer and the LM-head
  // plan for batches up to max_batch (1..16). Throws cf::InputError when the model's shape is outside what the
  // kernels support (head_dim 64 / 128, ...). MLA models: `kv` is the latent pool's shape (one "KV head" of
  // kv_lora + rope values, as the cpu backend's).
  FusedDecoder(const ModelConfig& config, dev::DType dtype, const ModelPointers& weights, const KvCacheShape& kv,
               int max_batch, const Tuning& tuning = {});
  ~FusedDecoder();
  FusedDecoder(FusedDecoder&&) noexcept;
  FusedDecoder& operator=(FusedDecoder&&) noexcept;

  int max_batch() const { return max_batch_; }

  // Enqueues the whole step (2 n_layers + 1 plan runs; an MLA block is three launches) on `stream`; no
  // synchronisation, CUDA-graph capturable.
  // emu_seed: the emulator's schedule seed (0: $CF_EMU_SEED or 1); ignored on the GPU.
  void run(int batch, const StepBuffers& buffers, void* stream = nullptr, uint64_t emu_seed = 0);

  // Synchronises and throws cf::InputError / cf::Error if any kernel reported a problem (bad page table, timeout).
  void check_status(void* stream = nullptr);

  // The launch shapes the plans chose, one line (for logs).
  std::string describe() const;

 private:
  struct Plans;
  std::unique_ptr<Plans> plans_;
  int max_batch_ = 0;
};

}  // namespace CF_BUILD_NAMESPACE
}  // namespace cf::fused
