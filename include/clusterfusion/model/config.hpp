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
// n_kv_heads == n_heads); DeepSeek-V2 has multi-head latent attention in every layer and a mixture-of-experts FFN
// after its first first_dense layers (docs/mla.md), each kind with its slots in the weight table
// (model/weight_table.hpp).
enum class AttentionKind : uint8_t {
  Gqa,  // RoPE on q/k, softmax attention over a KV cache of n_kv_heads heads
  Mla,  // multi-head latent attention: one cached row [c_kv, k_pe] per token, shared by all heads (MlaConfig)
};
enum class FfnKind : uint8_t {
  SwiGlu,  // down(silu(gate(x)) * up(x))
  Moe,     // router softmax, top-k SwiGLU experts of width expert_ffn, plus shared experts (MoeConfig)
};
enum class NormKind : uint8_t { RmsNorm };  // x / rms(x) * weight, before attention, before the FFN, at the end

// Multi-head latent attention (DeepSeek-V2). The query heads are n_heads of head_dim = qk_nope + rope_dim values;
// RoPE (rope_dim, adjacent pairs, YaRN) applies to the last rope_dim of each query head and to the one shared k_pe.
struct MlaConfig {
  int q_lora_rank = 0;   // 0: q = x Wq^T; else q = rmsnorm(x Wq_a^T) Wq_b^T through q_lora_rank values
  int kv_lora_rank = 0;  // width of the cached latent c_kv
  int qk_nope = 0;       // query/key dimensions per head without RoPE
  int v_head = 0;        // value dimensions per head
  // How the file holds kv_b_proj: split into attn_k_b [n_heads, kv_lora, nope] and attn_v_b [n_heads, v, kv_lora]
  // (GGUFs of current converters) or as one matrix [n_heads * (nope + v), kv_lora] (HF kv_b_proj, older GGUFs'
  // attn_kv_b). The weight table lists the form the file has.
  bool split_kv_b = false;
};

// YaRN RoPE scaling (rope_scaling type yarn): off when factor <= 1.
struct YarnConfig {
  float factor = 0.0f;
  int original_context = 0;  // original_max_position_embeddings
  float beta_fast = 32.0f;
  float beta_slow = 1.0f;
  float mscale = 1.0f;
  float mscale_all_dim = 0.0f;  // 0: absent (no mscale^2 in the softmax scale)

  bool enabled() const { return factor > 1.0f; }
};

enum class TopkMethod : uint8_t { Greedy, GroupLimitedGreedy };

// Mixture-of-experts FFN (DeepSeek-V2): layers first_dense.. are MoE, the ones before dense SwiGLU of ffn_hidden.
struct MoeConfig {
  int n_experts = 0;  // routed experts; 0: no MoE layers
  int n_shared = 0;   // shared experts (one SwiGLU of width n_shared * expert_ffn)
  int top_k = 0;      // experts chosen per token
  int first_dense = 0;
  int expert_ffn = 0;  // moe_intermediate_size
  float routed_scaling = 1.0f;  // applied to the chosen weights after the optional renormalisation
  bool norm_topk_prob = false;  // renormalise the chosen weights to sum 1
  TopkMethod method = TopkMethod::Greedy;
  int n_group = 1;     // group_limited_greedy: experts in n_group groups, of which the topk_group best are eligible
  int topk_group = 1;

  int shared_ffn() const { return n_shared * expert_ffn; }
};

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
  AttentionKind attention = AttentionKind::Gqa;
  MlaConfig mla;    // attention == Mla
  YarnConfig yarn;  // RoPE scaling (Mla models)
  MoeConfig moe;    // moe.n_experts > 0

  // Every layer of a Llama-family model has the same kinds; a DeepSeek-V2 model's first moe.first_dense layers have a
  // dense FFN, the others the MoE.
  LayerSpec layer_spec(int layer) const {
    LayerSpec spec;
    spec.attention = attention;
    if (moe.n_experts > 0 && layer >= moe.first_dense) spec.ffn = FfnKind::Moe;
    return spec;
  }
  bool is_mla() const { return attention == AttentionKind::Mla; }
  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  // The layer shape the kernels and the reference take (model/types.hpp).
  DecoderShape decoder_shape() const {
    return {hidden, n_heads, n_kv_heads, head_dim, ffn_hidden, rope_dim > 0 ? rope_dim : head_dim, rope_style,
            rope_theta, rms_eps};
  }
  // Values cached per token and layer: K and V of every KV head, or MLA's latent row [c_kv, k_pe].
  int64_t cache_values_per_token() const {
    return is_mla() ? int64_t(mla.kv_lora_rank) + rope_dim : 2 * int64_t(kv_dim());
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
  static constexpr int kMaxExperts = 1 << 12;

 private:
  void validate_mla(const std::string& source) const;
  void validate_moe(const std::string& source) const;
};

// From GGUF metadata (general.architecture "llama" or "qwen2": <arch>.block_count, .embedding_length,
// .feed_forward_length, .attention.head_count(_kv), .attention.key_length, .rope.freq_base, .rope.dimension_count,
// .attention.layer_norm_rms_epsilon, .context_length) and the tensor list (tied embeddings when output.weight is
// absent, q/k/v biases, vocab from tokenizer.ggml.tokens or token_embd). RoPE style: GPT-J for llama (llama.cpp's
// converter permutes q/k), NeoX for qwen2. Validated; unsupported features (RoPE scaling, MoE) are rejected.
ModelConfig config_from_gguf(const GgufFile& file);

// From a Hugging Face config.json (model_type llama / mistral / qwen2: RoPE style NeoX; deepseek_v2: MLA, MoE and
// YaRN, adjacent-pair RoPE, docs/mla.md). `source` names the file in
// errors. Validated; unsupported features (rope_scaling, attention/mlp biases on llama, activations other than
// silu) are rejected.
ModelConfig config_from_hf_json(const json::Value& config, const std::string& source);

}  // namespace cf
