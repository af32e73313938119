// Llama-family model hyper-parameters, filled from GGUF metadata or config.json, validated once.
#pragma once
#include <cstdint>
#include <string>

namespace cf {

// How RoPE pairs the dimensions of a head.
//   NeoX  (HF "rotate_half"): pairs (i, i + rot_dim/2)
//   GPTJ  (llama.cpp's LLAMA_ROPE_TYPE_NORM): pairs (2i, 2i + 1)
// GGUF llama files hold q/k weights permuted for GPTJ pairing; HF safetensors hold them for NeoX pairing.
enum class RopeStyle : uint8_t { NeoX, GPTJ };

struct ModelConfig {
  std::string arch = "llama";  // "llama", "qwen2", ...
  std::string name;            // human-readable, from metadata when present
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

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  // Throws cf::InputError("<source>: <field> = <value>: <why>") when a field is missing, absurd or inconsistent
  // (non-positive sizes, n_heads % n_kv_heads != 0, head_dim odd, rope_dim > head_dim, dims over sane caps ...).
  void validate(const std::string& source) const;
  std::string summary() const;  // multi-line, for `clusterfusion info`
};

}  // namespace cf
