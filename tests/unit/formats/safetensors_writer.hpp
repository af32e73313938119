// Builds safetensors files and tiny Hugging Face model folders for tests and fuzz seeds.
#pragma once
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "clusterfusion/common/half.hpp"
#include "gguf_writer.hpp"

namespace cf::test {

struct StTensor {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", ...
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

// Header JSON as the format writes it; `header_override` replaces it verbatim when non-empty.
inline std::vector<uint8_t> safetensors_bytes(const std::vector<StTensor>& tensors, std::string header_override = {}) {
  std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    header += ",\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) header += (i ? "," : "") + std::to_string(t.shape[i]);
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + t.data.size()) + "]}";
    offset += t.data.size();
  }
  header += "}";
  if (!header_override.empty()) header = header_override;
  while (header.size() % 8) header += ' ';
  std::vector<uint8_t> out;
  put<uint64_t>(out, header.size());
  put_bytes(out, header.data(), header.size());
  for (const auto& t : tensors) put_bytes(out, t.data.data(), t.data.size());
  return out;
}

// Random values stored as dtype.
inline std::vector<uint8_t> random_tensor_bytes(const std::string& dtype, int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<uint8_t> b;
  for (int64_t i = 0; i < n; ++i) {
    const float x = normal(rng);
    if (dtype == "F32") put<float>(b, x);
    else if (dtype == "I32") put<int32_t>(b, int32_t(x * 1000));
    else if (dtype == "F16") put<uint16_t>(b, cf::float_to_f16_bits(x));
    else put<uint16_t>(b, cf::float_to_bf16_bits(x));
  }
  return b;
}

inline void write_text(const std::filesystem::path& p, const std::string& text) {
  write_file(p.string(), std::vector<uint8_t>(text.begin(), text.end()));
}

// A 2-layer Llama in Hugging Face layout: config.json, model.safetensors (or 2 shards + index), tokenizer files
// copied from `tokenizer_dir` (a folder under tests/data/tokenizer). vocab = 600 (the tiny tokenizers' size).
struct TinyHfOptions {
  std::string dtype = "BF16";
  bool sharded = false;
  bool tied = true;
  std::string model_type = "llama";
  std::string skip_tensor;
  std::string extra_config;  // appended inside config.json's object, e.g. ",\"rope_scaling\":{...}"
  bool tokenizer_model_only = false;  // copy tokenizer.model but not tokenizer.json
  int64_t vocab = 600;                // 600 matches the tiny byte-level tokenizers, 700 tiny_spm
  std::vector<StTensor> extra_tensors;  // appended after the model's own (e.g. tensors the model does not use)
};

inline std::vector<StTensor> tiny_hf_tensors(const TinyHfOptions& o) {
  std::mt19937 rng(3);
  const int64_t vocab = o.vocab, hidden = 64, q = 64, kv = 32, ffn = 128;
  std::vector<StTensor> t;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, std::string dtype = {}) {
    if (name == o.skip_tensor) return;
    if (dtype.empty()) dtype = o.dtype;
    int64_t n = 1;
    for (auto d : shape) n *= d;
    t.push_back({name, dtype, shape, random_tensor_bytes(dtype, n, rng)});
  };
  add("model.embed_tokens.weight", {vocab, hidden});
  add("model.norm.weight", {hidden}, "F32");
  if (!o.tied) add("lm_head.weight", {vocab, hidden});
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {hidden}, "F32");
    add(p + "self_attn.q_proj.weight", {q, hidden});
    add(p + "self_attn.k_proj.weight", {kv, hidden});
    add(p + "self_attn.v_proj.weight", {kv, hidden});
    if (o.model_type == "qwen2") {
      add(p + "self_attn.q_proj.bias", {q});
      add(p + "self_attn.k_proj.bias", {kv});
      add(p + "self_attn.v_proj.bias", {kv});
    }
    add(p + "self_attn.o_proj.weight", {hidden, q});
    add(p + "post_attention_layernorm.weight", {hidden}, "F32");
    add(p + "mlp.gate_proj.weight", {ffn, hidden});
    add(p + "mlp.up_proj.weight", {ffn, hidden});
    add(p + "mlp.down_proj.weight", {hidden, ffn});
  }
  t.insert(t.end(), o.extra_tensors.begin(), o.extra_tensors.end());
  return t;
}

inline void write_tiny_hf_model(const std::filesystem::path& dir, const std::string& tokenizer_dir,
                                const TinyHfOptions& o = {}) {
  std::filesystem::create_directories(dir);
  write_text(dir / "config.json",
             "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"" + o.model_type +
                 "\",\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,"
                 "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"max_position_embeddings\":512,"
                 "\"rms_norm_eps\":1e-05,\"rope_theta\":10000.0,\"vocab_size\":" + std::to_string(o.vocab) + ",\"hidden_act\":\"silu\","
                 "\"tie_word_embeddings\":" + std::string(o.tied ? "true" : "false") +
                 ",\"bos_token_id\":1,\"eos_token_id\":2,\"torch_dtype\":\"bfloat16\"" + o.extra_config + "}");
  const auto tensors = tiny_hf_tensors(o);
  if (!o.sharded) {
    write_file((dir / "model.safetensors").string(), safetensors_bytes(tensors));
  } else {
    const size_t half = tensors.size() / 2;
    const std::vector<StTensor> a(tensors.begin(), tensors.begin() + long(half)), b(tensors.begin() + long(half), tensors.end());
    write_file((dir / "model-00001-of-00002.safetensors").string(), safetensors_bytes(a));
    write_file((dir / "model-00002-of-00002.safetensors").string(), safetensors_bytes(b));
    std::string index = "{\"metadata\":{\"total_size\":0},\"weight_map\":{";
    for (size_t i = 0; i < tensors.size(); ++i)
      index += (i ? "," : "") + std::string("\"") + tensors[i].name + "\":\"model-0000" + (i < half ? "1" : "2") + "-of-00002.safetensors\"";
    write_text(dir / "model.safetensors.index.json", index + "}}");
  }
  const std::filesystem::path src = std::filesystem::path(CF_SOURCE_DIR) / "tests/data/tokenizer" / tokenizer_dir;
  for (const auto* f : {"tokenizer.json", "tokenizer.model"})
    if (std::filesystem::exists(src / f) && !(o.tokenizer_model_only && std::string(f) == "tokenizer.json"))
      std::filesystem::copy_file(src / f, dir / f);
  const bool spm = tokenizer_dir == "tiny_spm";
  write_text(dir / "tokenizer_config.json",
             std::string("{\"bos_token\":\"") + (spm ? "<s>" : "<|im_start|>") + "\",\"eos_token\":\"" +
                 (spm ? "</s>" : "<|im_end|>") + "\",\"add_bos_token\":" + (spm ? "true" : "false") +
                 ",\"chat_template\":\"{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}\"}");
  write_text(dir / "generation_config.json", "{\"eos_token_id\":[2,0]}");
}

}  // namespace cf::test
