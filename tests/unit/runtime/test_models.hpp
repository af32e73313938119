// Shared helpers of the runtime tests: tiny model configs, a reference forward pass chained from
// clusterfusion/reference blocks, and a byte-level fake tokenizer (so sessions are tested without a model file).
#pragma once
#include <cstring>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "clusterfusion/tokenizer/tokenizer.hpp"
#include "clusterfusion/reference/decoder.hpp"
#include "clusterfusion/runtime/runner.hpp"
#include "clusterfusion/runtime/weights.hpp"

namespace cf::test {

inline bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The logits after each token of `tokens` fed to sequence 0 one decode step at a time ([n, vocab]).
inline std::vector<float> token_by_token_logits(Runner& runner, const std::vector<int32_t>& tokens) {
  std::vector<float> logits;
  for (int32_t token : tokens) {
    const int32_t seq = 0;
    const auto& l = runner.decode(std::span(&seq, 1), std::span(&token, 1));
    logits.insert(logits.end(), l.begin(), l.end());
  }
  return logits;
}

inline ModelConfig tiny_config(RopeStyle style = RopeStyle::GPTJ, bool tied = true, bool bias = false) {
  ModelConfig c;
  c.name = "tiny";
  c.n_layers = 2;
  c.hidden = 64;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.ffn_hidden = 96;
  c.vocab = 300;
  c.max_context = 64;
  c.rope_theta = 10000.0f;
  c.rope_dim = 16;
  c.rope_style = style;
  c.rms_eps = 1e-5f;
  c.tied_embeddings = tied;
  c.qkv_bias = bias;
  return c;
}

// Logits after each token of `tokens` ([n, vocab]) by the reference blocks, one token at a time, fp32 weights
// dequantised from `w` (so the comparison isolates the backend's arithmetic from the weight format).
inline std::vector<float> reference_logits(const ModelWeights& w, const std::vector<int32_t>& tokens) {
  const ModelConfig& c = w.config;
  const auto s = c.decoder_shape();
  const int n = int(tokens.size());
  struct Layer {
    std::vector<float> q, k, v, o, gate, up, down;
  };
  std::vector<Layer> layers;
  for (const auto& l : w.layers)
    layers.push_back({l.attn_q.dequantized(), l.attn_k.dequantized(), l.attn_v.dequantized(), l.attn_output.dequantized(),
                      l.ffn_gate.dequantized(), l.ffn_up.dequantized(), l.ffn_down.dequantized()});
  const std::vector<float> embd = w.token_embd.dequantized(), head = w.lm_head().dequantized();
  // One contiguous cache per layer: a single page holding the whole sequence.
  std::vector<std::vector<float>> k_cache(size_t(c.n_layers), std::vector<float>(size_t(n) * size_t(s.kv_dim())));
  std::vector<std::vector<float>> v_cache = k_cache;
  std::vector<float> logits(size_t(n) * size_t(c.vocab));
  std::vector<float> hidden(size_t(s.hidden)), residual(size_t(s.hidden)), out(size_t(s.hidden)), res_out(size_t(s.hidden));
  for (int t = 0; t < n; ++t) {
    std::copy_n(embd.begin() + long(tokens[size_t(t)]) * s.hidden, s.hidden, hidden.begin());
    const int32_t indptr[2] = {0, 1}, page = 0, len = t + 1, position = t;
    bool first = true;
    for (int li = 0; li < c.n_layers; ++li) {
      const auto& lw = w.layers[size_t(li)];
      const Layer& m = layers[size_t(li)];
      ref::AttentionWeights<float> aw{lw.attn_norm.data(), m.q.data(), m.k.data(), m.v.data(),
                                      c.qkv_bias ? lw.q_bias.data() : nullptr, c.qkv_bias ? lw.k_bias.data() : nullptr,
                                      c.qkv_bias ? lw.v_bias.data() : nullptr, m.o.data()};
      ref::PagedKv<float> kv{k_cache[size_t(li)].data(), v_cache[size_t(li)].data(), n, indptr, &page, &len};
      ref::attention_block(hidden.data(), first ? nullptr : residual.data(), res_out.data(), out.data(), aw, s,
                           &position, 1, kv);
      first = false;
      residual = res_out;
      hidden = out;
      ref::FfnWeights<float> fw{lw.ffn_norm.data(), m.gate.data(), m.up.data(), m.down.data()};
      ref::ffn_block(hidden.data(), residual.data(), res_out.data(), out.data(), fw, s, 1);
      residual = res_out;
      hidden = out;
    }
    ref::lm_head(hidden.data(), residual.data(), w.output_norm.data(), head.data(), logits.data() + size_t(t) * c.vocab,
                 s, c.vocab, 1);
  }
  return logits;
}

// Byte-level fake tokenizer: ids 0..255 are bytes, then special tokens. encode() never merges bytes.
class ByteTokenizer final : public Tokenizer {
 public:
  ByteTokenizer() {
    for (int b = 0; b < 256; ++b) spec_.tokens.push_back(std::string(1, char(b)));
    for (const char* special : {"<eos>", "<|im_start|>", "<|im_end|>"}) {
      specials_[special] = int32_t(spec_.tokens.size());
      spec_.tokens.push_back(special);
    }
    spec_.eos = specials_["<eos>"];
    spec_.end_of_generation = {spec_.eos, specials_["<|im_end|>"]};
  }
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const override {
    std::vector<int32_t> ids;
    size_t i = 0;
    while (i < text.size()) {
      bool matched = false;
      if (parse_special) {
        for (const auto& [piece, id] : specials_) {
          if (text.substr(i, piece.size()) == piece) {
            ids.push_back(id);
            i += piece.size();
            matched = true;
            break;
          }
        }
      }
      if (!matched) ids.push_back(int32_t(uint8_t(text[i++])));
    }
    (void)add_bos;
    return ids;
  }
  // Bytes never merge here, so the parts can be encoded one by one.
  std::vector<int32_t> encode_parts(std::span<const TextPart> parts, bool add_bos) const override {
    std::vector<int32_t> ids;
    for (const TextPart& p : parts) {
      const auto part = encode(p.text, add_bos && ids.empty(), p.parse_special);
      ids.insert(ids.end(), part.begin(), part.end());
    }
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    for (int32_t id : ids) s += token_bytes(id);
    return s;
  }
  std::string token_bytes(int32_t id) const override { return spec_.tokens.at(size_t(id)); }
  // Declared without `override` so this builds against both versions of the Tokenizer interface.
  std::string_view token_text(int32_t id) const { return spec_.tokens.at(size_t(id)); }
  int32_t token_type(int32_t id) const { return id < 256 ? 1 : 3; }
  const TokenizerSpec& spec() const override { return spec_; }
  int32_t find_token(std::string_view piece) const override {
    auto it = specials_.find(std::string(piece));
    return it == specials_.end() ? -1 : it->second;
  }
  int32_t special(const std::string& piece) const { return specials_.at(piece); }

 private:
  TokenizerSpec spec_;
  std::map<std::string, int32_t> specials_;
};

}  // namespace cf::test
