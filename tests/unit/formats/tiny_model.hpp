// A tiny but complete Llama GGUF (2 layers, hidden 64, byte-level BPE vocab) built in memory, for model-file tests
// and fuzz seeds. Options let tests drop or break one piece at a time.
#pragma once
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "gguf_writer.hpp"

namespace cf::test {

struct TinyModelOptions {
  std::string arch = "llama";
  bool tied = true;
  bool with_tokenizer = true;
  bool qkv_bias = false;
  std::string skip_tensor;  // leave this tensor out
  std::string skip_key;     // leave this metadata key out
  uint64_t hidden = 64, ffn = 128;  // k_quants needs multiples of 256
  bool k_quants = false;  // attn_q / ffn_gate Q4_K, attn_k / ffn_up Q5_K, attn_v / ffn_down Q6_K (random super-blocks)
  uint32_t context = 256;
  std::string name = "tiny test model";
  std::string chat_template = "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}";
  std::vector<std::string> extra_control_tokens;  // appended to the vocabulary (type control)
  uint32_t eos = 2;
};

inline constexpr int kTinyLayers = 2, kTinyHeads = 4, kTinyKvHeads = 2;

// GPT-2 byte alphabet tokens ("!".."~", then U+0100.. for the rest), a few merges, and ChatML specials.
inline void tiny_vocab(std::vector<std::string>& tokens, std::vector<int32_t>& types, std::vector<std::string>& merges) {
  tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  types = {3, 3, 3};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    const uint32_t cp = printable ? b : next++;
    std::string s;
    if (cp < 0x80) {
      s += char(cp);
    } else {
      s += char(0xc0 | (cp >> 6));
      s += char(0x80 | (cp & 0x3f));
    }
    tokens.push_back(s);
    types.push_back(1);
  }
  merges = {"h e", "l l", "he ll", "hell o", "\xc4\xa0 w", "o r", "\xc4\xa0w or", "\xc4\xa0wor l", "\xc4\xa0worl d"};
  for (const auto& m : merges) {
    const size_t sp = m.find(' ');
    tokens.push_back(m.substr(0, sp) + m.substr(sp + 1));
    types.push_back(1);
  }
}

inline std::vector<uint8_t> tiny_model_gguf(const TinyModelOptions& o = {}, GgufWriter* writer_out = nullptr) {
  GgufWriter w;
  auto key = [&](const std::string& k) { return k != o.skip_key; };
  const std::string a = o.arch + ".";
  if (key("general.architecture")) w.add_string("general.architecture", o.arch);
  w.add_string("general.name", o.name);
  if (key(a + "block_count")) w.add_u32(a + "block_count", kTinyLayers);
  if (key(a + "context_length")) w.add_u32(a + "context_length", o.context);
  if (key(a + "embedding_length")) w.add_u32(a + "embedding_length", uint32_t(o.hidden));
  if (key(a + "feed_forward_length")) w.add_u32(a + "feed_forward_length", uint32_t(o.ffn));
  if (key(a + "attention.head_count")) w.add_u32(a + "attention.head_count", kTinyHeads);
  if (key(a + "attention.head_count_kv")) w.add_u32(a + "attention.head_count_kv", kTinyKvHeads);
  if (key(a + "rope.freq_base")) w.add_f32(a + "rope.freq_base", 10000.0f);
  if (key(a + "attention.layer_norm_rms_epsilon")) w.add_f32(a + "attention.layer_norm_rms_epsilon", 1e-5f);
  std::vector<std::string> tokens, merges;
  std::vector<int32_t> types;
  tiny_vocab(tokens, types, merges);
  for (const auto& t : o.extra_control_tokens) {
    tokens.push_back(t);
    types.push_back(3);
  }
  if (o.with_tokenizer) {
    if (key("tokenizer.ggml.model")) w.add_string("tokenizer.ggml.model", "gpt2");
    if (key("tokenizer.ggml.pre")) w.add_string("tokenizer.ggml.pre", "smollm");
    if (key("tokenizer.ggml.tokens")) w.add_string_array("tokenizer.ggml.tokens", tokens);
    if (key("tokenizer.ggml.token_type")) w.add_array<int32_t>("tokenizer.ggml.token_type", GgufTypeCode::I32, types);
    if (key("tokenizer.ggml.merges")) w.add_string_array("tokenizer.ggml.merges", merges);
    w.add_u32("tokenizer.ggml.bos_token_id", 1);
    w.add_u32("tokenizer.ggml.eos_token_id", o.eos);
    w.add_string("tokenizer.chat_template", o.chat_template);
  }
  const uint64_t vocab = tokens.size(), hidden = o.hidden, head_dim = hidden / kTinyHeads, q = hidden,
                 kv = kTinyKvHeads * head_dim, ffn = o.ffn;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  auto f32 = [&](const std::string& name, std::vector<uint64_t> ne) {
    if (name == o.skip_tensor) return;
    uint64_t n = 1;
    for (auto d : ne) n *= d;
    std::vector<float> v(n);
    for (auto& x : v) x = normal(rng);
    w.add_f32_tensor(name, std::move(ne), v);
  };
  // Q8_0 blocks with scale 1/64 and small int8 values: exercises a quantised weight in a model.
  auto q8 = [&](const std::string& name, std::vector<uint64_t> ne) {
    if (name == o.skip_tensor) return;
    const uint64_t blocks = ne[0] * ne[1] / 32;
    std::vector<uint8_t> b(blocks * 34);
    for (uint64_t i = 0; i < blocks; ++i) {
      b[i * 34] = 0x00;
      b[i * 34 + 1] = 0x24;  // f16 0x2400 = 1/64
      for (int j = 0; j < 32; ++j) b[i * 34 + 2 + j] = uint8_t(int8_t(int(rng() % 15) - 7));
    }
    w.add_tensor(name, kGgmlQ8_0, std::move(ne), std::move(b));
  };
  // k-quant super-blocks of random bytes with small finite scales (d, dmin lead Q4_K / Q5_K; Q6_K's d ends it).
  auto kq = [&](const std::string& name, uint32_t type, std::vector<uint64_t> ne) {
    if (name == o.skip_tensor) return;
    const uint64_t block_bytes = type == kGgmlQ4_K ? 144 : type == kGgmlQ5_K ? 176 : 210;
    const uint64_t blocks = ne[0] * ne[1] / 256;
    std::vector<uint8_t> b(blocks * block_bytes);
    for (auto& x : b) x = uint8_t(rng());
    for (uint64_t i = 0; i < blocks; ++i) {
      uint8_t* block = b.data() + i * block_bytes;
      const uint16_t d = 0x1800, dmin = 0x1400;  // f16 1/512, 1/1024
      if (type == kGgmlQ6_K) {
        std::memcpy(block + 208, &d, 2);
      } else {
        std::memcpy(block, &d, 2);
        std::memcpy(block + 2, &dmin, 2);
      }
    }
    w.add_tensor(name, type, std::move(ne), std::move(b));
  };
  auto matrix = [&](const std::string& name, uint32_t k_type, std::vector<uint64_t> ne) {
    if (o.k_quants) kq(name, k_type, std::move(ne));
    else q8(name, std::move(ne));
  };
  f32("token_embd.weight", {hidden, vocab});
  f32("output_norm.weight", {hidden});
  if (!o.tied) f32("output.weight", {hidden, vocab});
  for (int l = 0; l < kTinyLayers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    f32(p + "attn_norm.weight", {hidden});
    matrix(p + "attn_q.weight", kGgmlQ4_K, {hidden, q});
    matrix(p + "attn_k.weight", kGgmlQ5_K, {hidden, kv});
    matrix(p + "attn_v.weight", kGgmlQ6_K, {hidden, kv});
    if (o.qkv_bias) {
      f32(p + "attn_q.bias", {q});
      f32(p + "attn_k.bias", {kv});
      f32(p + "attn_v.bias", {kv});
    }
    f32(p + "attn_output.weight", {q, hidden});
    f32(p + "ffn_norm.weight", {hidden});
    matrix(p + "ffn_gate.weight", kGgmlQ4_K, {hidden, ffn});
    matrix(p + "ffn_up.weight", kGgmlQ5_K, {hidden, ffn});
    if (o.k_quants) kq(p + "ffn_down.weight", kGgmlQ6_K, {ffn, hidden});
    else f32(p + "ffn_down.weight", {ffn, hidden});
  }
  auto bytes = w.build();
  if (writer_out) *writer_out = w;
  return bytes;
}

}  // namespace cf::test
