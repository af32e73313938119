// Llama-family model hyper-parameters, filled from GGUF metadata or config.json, validated once.
#pragma once
#include <cstdint>
#include <string>

#include "clusterfusion/model/types.hpp"  // RopeStyle, DecoderShape

namespace cf {

class GgufFile;
namespace json {
class Value;
}

// What a layer computes: the model description's kinds. Llama-family models have one of each (MHA is GQA with
// n_kv_heads == n_heads); DeepSeek-V2's multi-head latent attention and mixture-of-experts FFN arrive as new kinds
// (docs/mla.md), with their slots in the weight table (model/weight_table.hpp).
enum class AttentionKind : uint8_t { Gqa };  // RoPE on q/k, softmax attention over a KV cache of n_kv_heads heads
enum class FfnKind : uint8_t { SwiGlu };     // down(silu(gate(x)) * up(x))
enum class NormKind : uint8_t { RmsNorm };   // x / rms(x) * weight, before attention, before the FFN, at the end

struct LayerSpec {
  AttentionKind attention = AttentionKind::Gqa;
  FfnKind ffn = FfnKind::SwiGlu;
  NormKind norm = NormKind::RmsNorm;
};

const char* attention_kind_name(AttentionKind kind);
const char* ffn_kind_name(FfnKind kind);

struct ModelConfig {
  std::string arch = "llama";  // "llama", "qwen2", ...
  std::string name;            // human-readable, from metadata when present (terminal_safe: control characters,
                               // bidirectional overrides and invalid UTF-8 escaped; clipped after 120 bytes)
  int n_layers = 0;
  int hidden = 0;      // embedding width
  int n_heads = 0;
  int n_kv_heads = 0;  // == n_heads for MHA
  int head_dim = 0;    // usually hidden / n_heads
  int ffn_hidden = 0;  // SwiGLU intermediate size
  int vocab = 0;
  int max_context = 0;
  float rope_theta = 10000.0f;
  int rope_dim = 0;  // dimensions rotated per head (== head_dim for Llama)
  RopeStyle rope_style = RopeStyle::NeoX;
  float rms_eps = 1e-5f;
  bool tied_embeddings = false;  // lm_head shares token_embd
  bool qkv_bias = false;         // Qwen2-style biases on q/k/v projections

  // Every layer of a Llama-family model has the same kinds.
  LayerSpec layer_spec(int layer) const {
    (void)layer;
    return {};
  }
  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  // The layer shape the kernels and the reference take (model/types.hpp).
  DecoderShape decoder_shape() const {
    return {hidden, n_heads, n_kv_heads, head_dim, ffn_hidden, rope_dim > 0 ? rope_dim : head_dim, rope_style,
            rope_theta, rms_eps};
  }
  // Throws cf::InputError("<source>: <field> = <value>: <why>") when a field is missing, absurd or inconsistent
  // (non-positive sizes, n_heads % n_kv_heads != 0, head_dim odd, rope_dim > head_dim, dims over sane caps ...).
  void validate(const std::string& source) const;
  std::string summary() const;  // multi-line, for `clusterfusion info`

  // Sane upper bounds checked by validate(): larger than any Llama-family model, small enough that derived sizes
  // (n_heads * head_dim, vocab * hidden) cannot overflow.
  static constexpr int kMaxLayers = 1024;
  static constexpr int kMaxHidden = 1 << 16;
  static constexpr int kMaxHeads = 1024;
  static constexpr int kMaxHeadDim = 1024;
  static constexpr int kMaxFfnHidden = 1 << 18;
  static constexpr int kMaxVocab = 1 << 21;
  static constexpr int kMaxContext = 1 << 24;
};

// From GGUF metadata (general.architecture "llama" or "qwen2": <arch>.block_count, .embedding_length,
// .feed_forward_length, .attention.head_count(_kv), .attention.key_length, .rope.freq_base, .rope.dimension_count,
// .attention.layer_norm_rms_epsilon, .context_length) and the tensor list (tied embeddings when output.weight is
// absent, q/k/v biases, vocab from tokenizer.ggml.tokens or token_embd). RoPE style: GPT-J for llama (llama.cpp's
// converter permutes q/k), NeoX for qwen2. Validated; unsupported features (RoPE scaling, MoE) are rejected.
ModelConfig config_from_gguf(const GgufFile& file);

// From a Hugging Face config.json (model_type llama / mistral / qwen2): RoPE style NeoX. `source` names the file in
// errors. Validated; unsupported features (rope_scaling, attention/mlp biases on llama, activations other than
// silu) are rejected.
ModelConfig config_from_hf_json(const json::Value& config, const std::string& source);

}  // namespace cf
