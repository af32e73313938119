// The model types the layers below the file formats need: how RoPE pairs dimensions, and the shapes of a Llama-style
// decoder layer and of its blocks. The kernels' params, the reference and the host's ModelConfig
// (engine/model_config.hpp) all take them from here, so nothing below the formats includes them (no upward include).
#pragma once
#include <cstdint>

namespace cf {

// How RoPE pairs the dimensions of a head.
//   NeoX  (HF "rotate_half"): pairs (i, i + rot_dim/2)
//   GPTJ  (llama.cpp's LLAMA_ROPE_TYPE_NORM): pairs (2i, 2i + 1)
// GGUF llama files hold q/k weights permuted for GPTJ pairing; HF safetensors hold them for NeoX pairing.
enum class RopeStyle : uint8_t { NeoX, GPTJ };

// The attention block of a layer: residual add + RMSNorm, QKV projection, RoPE, attention over the KV cache, O.
struct AttentionBlockShape {
  int hidden = 0;
  int n_heads = 0;
  int n_kv_heads = 0;  // == n_heads for MHA
  int head_dim = 0;
  int rot_dim = 0;     // dimensions rotated per head; 0 = head_dim
  RopeStyle rope_style = RopeStyle::NeoX;
  float rope_theta = 10000.0f;
  float eps = 1e-5f;   // RMSNorm

  int group() const { return n_heads / n_kv_heads; }  // query heads per KV head
  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  int qkv_rows() const { return q_dim() + 2 * kv_dim(); }
  int rotary_dim() const { return rot_dim > 0 ? rot_dim : head_dim; }
};

// The dense SwiGLU FFN block of a layer: residual add + RMSNorm, gate / up, silu(gate) * up, down.
struct FfnBlockShape {
  int hidden = 0;
  int ffn_hidden = 0;
  float eps = 1e-5f;
};

// The final RMSNorm and the LM head.
struct LmHeadShape {
  int hidden = 0;
  int vocab = 0;
  float eps = 1e-5f;
};

// One decoder layer (attention block + FFN block).
struct DecoderShape {
  int hidden = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int ffn_hidden = 0;
  int rot_dim = 0;
  RopeStyle rope_style = RopeStyle::NeoX;
  float rope_theta = 10000.0f;
  float eps = 1e-5f;

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  AttentionBlockShape attention_block() const {
    return {hidden, n_heads, n_kv_heads, head_dim, rot_dim, rope_style, rope_theta, eps};
  }
  FfnBlockShape ffn_block() const { return {hidden, ffn_hidden, eps}; }
};

// The multi-head latent attention block of a DeepSeek-V2 layer (docs/mla.md §1): residual add + RMSNorm, q (or
// q_a -> RMSNorm -> q_b) and kv_a projections, kv_a RMSNorm, RoPE on adjacent pairs of the rope parts, the latent
// cache append, absorbed attention over [c_kv, k_pe] rows, W_UV, O. YaRN is the host's business: the kernels read
// cos/sin (magnitude included) from a table and take the softmax scale as given.
struct MlaBlockShape {
  int hidden = 0;
  int n_heads = 0;
  int q_lora_rank = 0;    // 0: q = x Wq^T (V2-Lite)
  int kv_lora_rank = 0;   // r: the latent's width
  int qk_nope = 0;
  int qk_rope = 0;        // rotated dimensions per head (and of the shared k_pe)
  int v_head = 0;
  float eps = 1e-6f;      // every RMSNorm of the block (input, q_a, kv_a)
  float softmax_scale = 0.0f;

  int q_head() const { return qk_nope + qk_rope; }
  int q_rows() const { return n_heads * q_head(); }
  int latent_row() const { return kv_lora_rank + qk_rope; }  // cache values per token
  int o_dim() const { return n_heads * v_head; }
};

// The mixture-of-experts FFN block of a DeepSeek-V2 layer (docs/mla.md §2): residual add + RMSNorm, router softmax,
// top-k selection, the chosen experts' SwiGLU FFNs weighted, plus the shared experts.
enum class ExpertSelection : uint8_t { Greedy, GroupLimitedGreedy };
struct MoeBlockShape {
  int hidden = 0;
  int n_experts = 0;
  int top_k = 0;
  int expert_ffn = 0;   // moe_intermediate_size
  int shared_ffn = 0;   // n_shared_experts * moe_intermediate_size; 0: none
  bool norm_topk_prob = false;
  float routed_scaling = 1.0f;
  ExpertSelection selection = ExpertSelection::Greedy;
  int n_group = 1;
  int topk_group = 1;
  float eps = 1e-6f;    // the input RMSNorm
};

}  // namespace cf
