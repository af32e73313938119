// The tiny DeepSeek-V2 models (tests/data/deepseek/) run through the float reference (reference/mla.hpp, moe.hpp,
// chained here layer by layer) from every file: the GGUF (split attn_k_b / attn_v_b, stacked experts), the HF folder
// (kv_b_proj, one tensor per expert) and, for tiny_mla, the legacy GGUF (attn_kv_b) must give bit-identical logits;
// the absorbed decode and the expanded prefill must agree; both must match the float64 numpy oracle and llama.cpp's
// F32 run recorded in tests/data/golden/deepseek/<model>.json, and free greedy decoding must reproduce llama.cpp F32's.
// The file reading here is the raw GGUF / safetensors readers only: wiring DeepSeek into the loaders and backends is
// issue 17's next step (docs/mla.md §5).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "clusterfusion/common/json.hpp"
#include "clusterfusion/formats/gguf.hpp"
#include "clusterfusion/formats/safetensors.hpp"
#include "clusterfusion/formats/tensor.hpp"
#include "clusterfusion/reference/mla.hpp"
#include "clusterfusion/reference/moe.hpp"
#include "clusterfusion/reference/ops.hpp"

namespace {

std::string data_path(const std::string& rel) { return std::string(CF_SOURCE_DIR) + "/tests/data/" + rel; }

cf::json::Value read_json(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return cf::json::parse(text.str());
}

// One model as float arrays, by the names of the file it came from, plus the shapes.
struct TinyDeepseek {
  int n_layers = 0, hidden = 0, vocab = 0, first_dense = 0, dense_ffn = 0;
  float eps = 0.0f;
  cf::ref::MlaShape mla;
  cf::ref::MoeShape moe;
  std::map<std::string, std::vector<float>> tensors;
  struct Layer {
    const float* attn_norm;
    const float* ffn_norm;
    cf::ref::MlaWeights<float> attention;
    cf::ref::ExpertWeights<float> dense;  // layers < first_dense
    std::vector<cf::ref::ExpertWeights<float>> experts;
    cf::ref::MoeWeights<float> moe;
  };
  std::vector<Layer> layers;
  const float *embed = nullptr, *output_norm = nullptr, *output = nullptr;

  const float* get(const std::string& name) const {
    const auto it = tensors.find(name);
    return it == tensors.end() ? nullptr : it->second.data();
  }
};

TinyDeepseek from_gguf(const std::string& path) {
  const cf::GgufFile f(path);
  const auto key = [&](const std::string& k) { return "deepseek2." + k; };
  TinyDeepseek m;
  m.n_layers = int(f.require_int(key("block_count")));
  m.hidden = int(f.require_int(key("embedding_length")));
  m.first_dense = int(f.require_int(key("leading_dense_block_count")));
  m.dense_ffn = int(f.require_int(key("feed_forward_length")));
  m.eps = float(*f.get_float(key("attention.layer_norm_rms_epsilon")));
  auto& a = m.mla;
  a.hidden = m.hidden;
  a.n_heads = int(f.require_int(key("attention.head_count")));
  a.q_lora_rank = int(f.get_int(key("attention.q_lora_rank")).value_or(0));
  a.kv_lora_rank = int(f.require_int(key("attention.kv_lora_rank")));
  a.rope.dim = int(f.require_int(key("rope.dimension_count")));
  // current files describe the MQA view in key/value_length and the heads in *_mla; legacy files (attn_kv_b) the
  // heads in key/value_length (docs/mla.md §4)
  const bool legacy = !f.find(key("attention.key_length_mla"));
  a.qk_nope = int(f.require_int(key(legacy ? "attention.key_length" : "attention.key_length_mla"))) - a.rope.dim;
  a.v_head = int(f.require_int(key(legacy ? "attention.value_length" : "attention.value_length_mla")));
  a.eps = m.eps;
  a.rope.theta = float(*f.get_float(key("rope.freq_base")));
  a.rope.factor = float(*f.get_float(key("rope.scaling.factor")));
  a.rope.original_context = int(f.require_int(key("rope.scaling.original_context_length")));
  a.rope.beta_fast = float(f.get_float(key("rope.scaling.yarn_beta_fast")).value_or(32.0));  // llama.cpp's defaults
  a.rope.beta_slow = float(f.get_float(key("rope.scaling.yarn_beta_slow")).value_or(1.0));
  // the converter writes 0.1 * mscale_all_dim and no mscale (llama.cpp takes mscale = mscale_all_dim): docs/mla.md
  a.rope.mscale_all_dim = float(*f.get_float(key("rope.scaling.yarn_log_multiplier")) / 0.1);
  a.rope.mscale = a.rope.mscale_all_dim;
  auto& e = m.moe;
  e.hidden = m.hidden;
  e.n_experts = int(f.require_int(key("expert_count")));
  e.top_k = int(f.require_int(key("expert_used_count")));
  e.expert_ffn = int(f.require_int(key("expert_feed_forward_length")));
  e.shared_ffn = e.expert_ffn * int(f.require_int(key("expert_shared_count")));
  e.norm_topk_prob = f.get_bool(key("expert_weights_norm")).value_or(false);
  e.routed_scaling_factor = float(f.get_float(key("expert_weights_scale")).value_or(1.0));
  for (const auto& t : f.tensors()) m.tensors[t.name] = cf::dequantize_all(f.tensor_ref(t));
  m.vocab = int(m.tensors.at("token_embd.weight").size()) / m.hidden;
  m.embed = m.get("token_embd.weight");
  m.output_norm = m.get("output_norm.weight");
  m.output = m.get("output.weight");
  for (int i = 0; i < m.n_layers; ++i) {
    const auto t = [&](const std::string& n) { return m.get("blk." + std::to_string(i) + "." + n + ".weight"); };
    TinyDeepseek::Layer l{t("attn_norm"), t("ffn_norm"), {}, {}, {}, {}};
    l.attention = {t("attn_q"), t("attn_q_a"), t("attn_q_a_norm"), t("attn_q_b"), t("attn_kv_a_mqa"),
                   t("attn_kv_a_norm"), t("attn_kv_b"), t("attn_k_b"), t("attn_v_b"), t("attn_output")};
    if (i < m.first_dense) {
      l.dense = {t("ffn_gate"), t("ffn_up"), t("ffn_down")};
    } else {
      const size_t up = size_t(e.expert_ffn) * m.hidden;  // elements of one expert's gate / up / down
      for (int x = 0; x < e.n_experts; ++x)
        l.experts.push_back({t("ffn_gate_exps") + x * up, t("ffn_up_exps") + x * up, t("ffn_down_exps") + x * up});
      l.moe = {t("ffn_gate_inp"), nullptr, {t("ffn_gate_shexp"), t("ffn_up_shexp"), t("ffn_down_shexp")}};
    }
    m.layers.push_back(std::move(l));
  }
  for (auto& l : m.layers) l.moe.experts = l.experts.data();
  return m;
}

TinyDeepseek from_hf(const std::string& folder) {
  const auto c = read_json(folder + "/config.json");
  const auto num = [&](const char* k) { return c.at(k).as_number(); };
  TinyDeepseek m;
  m.n_layers = int(num("num_hidden_layers"));
  m.hidden = int(num("hidden_size"));
  m.vocab = int(num("vocab_size"));
  m.first_dense = int(num("first_k_dense_replace"));
  m.dense_ffn = int(num("intermediate_size"));
  m.eps = float(num("rms_norm_eps"));
  auto& a = m.mla;
  a.hidden = m.hidden;
  a.n_heads = int(num("num_attention_heads"));
  a.q_lora_rank = c.at("q_lora_rank").is_null() ? 0 : int(num("q_lora_rank"));
  a.kv_lora_rank = int(num("kv_lora_rank"));
  a.qk_nope = int(num("qk_nope_head_dim"));
  a.v_head = int(num("v_head_dim"));
  a.eps = m.eps;
  a.rope.dim = int(num("qk_rope_head_dim"));
  a.rope.theta = float(num("rope_theta"));
  const auto& y = c.at("rope_scaling");
  a.rope.factor = float(y.at("factor").as_number());
  a.rope.original_context = int(y.at("original_max_position_embeddings").as_number());
  a.rope.beta_fast = float(y.at("beta_fast").as_number());
  a.rope.beta_slow = float(y.at("beta_slow").as_number());
  a.rope.mscale = float(y.at("mscale").as_number());
  a.rope.mscale_all_dim = float(y.at("mscale_all_dim").as_number());
  auto& e = m.moe;
  e.hidden = m.hidden;
  e.n_experts = int(num("n_routed_experts"));
  e.top_k = int(num("num_experts_per_tok"));
  e.expert_ffn = int(num("moe_intermediate_size"));
  e.shared_ffn = e.expert_ffn * int(num("n_shared_experts"));
  e.norm_topk_prob = c.at("norm_topk_prob").as_bool();
  // DeepSeek-V2's code scales only when it does not renormalise (docs/mla.md §2)
  e.routed_scaling_factor = e.norm_topk_prob ? 1.0f : float(num("routed_scaling_factor"));
  const cf::SafetensorsFile f(folder + "/model.safetensors");
  for (const auto& t : f.tensors()) m.tensors[t.name] = cf::dequantize_all(f.tensor_ref(t, t.name));
  m.embed = m.get("model.embed_tokens.weight");
  m.output_norm = m.get("model.norm.weight");
  m.output = m.get("lm_head.weight");
  for (int i = 0; i < m.n_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const auto t = [&](const std::string& n) { return m.get(p + n + ".weight"); };
    TinyDeepseek::Layer l{t("input_layernorm"), t("post_attention_layernorm"), {}, {}, {}, {}};
    l.attention = {t("self_attn.q_proj"), t("self_attn.q_a_proj"), t("self_attn.q_a_layernorm"),
                   t("self_attn.q_b_proj"), t("self_attn.kv_a_proj_with_mqa"), t("self_attn.kv_a_layernorm"),
                   t("self_attn.kv_b_proj"), nullptr, nullptr, t("self_attn.o_proj")};
    if (i < m.first_dense) {
      l.dense = {t("mlp.gate_proj"), t("mlp.up_proj"), t("mlp.down_proj")};
    } else {
      for (int x = 0; x < e.n_experts; ++x) {
        const std::string ex = "mlp.experts." + std::to_string(x) + ".";
        l.experts.push_back({t(ex + "gate_proj"), t(ex + "up_proj"), t(ex + "down_proj")});
      }
      l.moe = {t("mlp.gate"), nullptr,
               {t("mlp.shared_experts.gate_proj"), t("mlp.shared_experts.up_proj"), t("mlp.shared_experts.down_proj")}};
    }
    m.layers.push_back(std::move(l));
  }
  for (auto& l : m.layers) l.moe.experts = l.experts.data();
  return m;
}

// FFN half of a layer for one token: out = dense or MoE FFN of rmsnorm(x).
void ffn(const TinyDeepseek& m, const TinyDeepseek::Layer& l, int layer, const float* x, float* out) {
  std::vector<float> h(size_t(m.hidden));
  cf::ref::rmsnorm(x, l.ffn_norm, h.data(), m.hidden, m.eps);
  if (layer < m.first_dense) {
    std::vector<float> acc(size_t(m.hidden), 0.0f);
    cf::ref::add_expert(h.data(), l.dense, m.hidden, m.dense_ffn, 1.0f, acc.data());
    std::copy(acc.begin(), acc.end(), out);
  } else {
    cf::ref::moe_ffn(h.data(), l.moe, m.moe, out);
  }
}

std::vector<float> lm_head(const TinyDeepseek& m, const float* x) {
  std::vector<float> h(size_t(m.hidden)), logits(size_t(m.vocab));
  cf::ref::rmsnorm(x, m.output_norm, h.data(), m.hidden, m.eps);
  cf::ref::matvec(m.output, h.data(), logits.data(), m.vocab, m.hidden);
  return logits;
}

// Decode one token at a time: absorbed MLA over per-layer latent caches.
class Decoder {
 public:
  Decoder(const TinyDeepseek& m, int capacity)
      : m_(m), caches_(size_t(m.n_layers), std::vector<float>(size_t(capacity) * size_t(m.mla.latent_row()))) {}

  std::vector<float> step(int token) {
    const size_t d = size_t(m_.hidden);
    std::vector<float> x(m_.embed + size_t(token) * d, m_.embed + size_t(token) * d + d), h(d), y(d);
    for (int i = 0; i < m_.n_layers; ++i) {
      const auto& l = m_.layers[size_t(i)];
      cf::ref::rmsnorm(x.data(), l.attn_norm, h.data(), m_.hidden, m_.eps);
      cf::ref::mla_decode(h.data(), l.attention, m_.mla, position_, caches_[size_t(i)].data(), position_, y.data());
      for (size_t k = 0; k < d; ++k) x[k] += y[k];
      ffn(m_, l, i, x.data(), y.data());
      for (size_t k = 0; k < d; ++k) x[k] += y[k];
    }
    ++position_;
    return lm_head(m_, x.data());
  }

 private:
  const TinyDeepseek& m_;
  std::vector<std::vector<float>> caches_;
  int position_ = 0;
};

// Logits after every token of `tokens`.
std::vector<std::vector<float>> decode(const TinyDeepseek& m, const std::vector<int>& tokens) {
  Decoder decoder(m, int(tokens.size()));
  std::vector<std::vector<float>> logits;
  for (int t : tokens) logits.push_back(decoder.step(t));
  return logits;
}

// The same logits from one causal prefill per layer in the expanded MLA form.
std::vector<std::vector<float>> prefill(const TinyDeepseek& m, const std::vector<int>& tokens) {
  const size_t n = tokens.size(), d = size_t(m.hidden);
  std::vector<float> x(n * d), h(n * d), y(n * d), cache(n * size_t(m.mla.latent_row()));
  for (size_t t = 0; t < n; ++t) std::copy_n(m.embed + size_t(tokens[t]) * d, d, x.begin() + long(t * d));
  for (int i = 0; i < m.n_layers; ++i) {
    const auto& l = m.layers[size_t(i)];
    for (size_t t = 0; t < n; ++t) cf::ref::rmsnorm(&x[t * d], l.attn_norm, &h[t * d], m.hidden, m.eps);
    cf::ref::mla_prefill_expanded(h.data(), l.attention, m.mla, 0, int(n), cache.data(), 0, y.data());
    for (size_t k = 0; k < n * d; ++k) x[k] += y[k];
    for (size_t t = 0; t < n; ++t) ffn(m, l, i, &x[t * d], &y[t * d]);
    for (size_t k = 0; k < n * d; ++k) x[k] += y[k];
  }
  std::vector<std::vector<float>> logits;
  for (size_t t = 0; t < n; ++t) logits.push_back(lm_head(m, &x[t * d]));
  return logits;
}

class TinyDeepseekModel : public ::testing::TestWithParam<std::string> {};

// Every prompt of the golden, teacher-forced on prompt + llama.cpp's continuation, against the float64 oracle
// (docs/tolerance.md's rule for fp32 engines against an fp64 oracle: 1e-3 on the logits at the top-10 ids and the
// log-sum-exp, the argmax wherever the oracle's top-2 margin exceeds 2e-3).
TEST_P(TinyDeepseekModel, BothFilesMatchTheOracle) {
  const std::string name = GetParam();
  const auto golden = read_json(data_path("golden/deepseek/" + name + ".json"));
  const TinyDeepseek gguf = from_gguf(data_path("deepseek/" + name + ".gguf"));
  const TinyDeepseek hf = from_hf(data_path("deepseek/" + name));
  // the same model converted before llama.cpp split attn_kv_b (tiny_mla only)
  std::optional<TinyDeepseek> legacy;
  if (const auto* file = golden.at("model").find("legacy_kv_b_gguf"))
    legacy = from_gguf(std::string(CF_SOURCE_DIR) + "/" + file->at("file").as_string());
  ASSERT_EQ(gguf.mla.check(), "");
  ASSERT_EQ(gguf.moe.check(), "");
  EXPECT_EQ(gguf.mla.q_lora_rank, hf.mla.q_lora_rank);
  EXPECT_EQ(gguf.mla.softmax_scale(), hf.mla.softmax_scale());
  int rows = 0, argmax_checked = 0;
  for (const auto& p : golden.at("prompts").as_array()) {
    std::vector<int> tokens;
    for (const auto& t : p.at("prompt_tokens").as_array()) tokens.push_back(int(t.as_int()));
    for (const auto& t : p.at("generated_tokens").as_array()) tokens.push_back(int(t.as_int()));
    tokens.pop_back();  // row r predicts token r + 1
    const auto from_gguf_file = decode(gguf, tokens);
    const auto from_hf_folder = decode(hf, tokens);
    if (legacy) {
      EXPECT_EQ(decode(*legacy, tokens), from_gguf_file) << "the legacy attn_kv_b file differs";
    }
    const auto prefilled = prefill(hf, tokens);
    const auto& top_ids = p.at("llama_cpp_bf16").at("top_ids").as_array();
    const auto& oracle = p.at("numpy_fp64");
    const std::string prompt = p.at("name").as_string();
    ASSERT_EQ(top_ids.size(), tokens.size()) << prompt;
    for (size_t r = 0; r < tokens.size(); ++r, ++rows) {
      const auto& logits = from_gguf_file[r];
      ASSERT_EQ(logits, from_hf_folder[r]) << prompt << " row " << r << ": the GGUF and the HF folder differ";
      for (size_t k = 0; k < logits.size(); ++k)
        ASSERT_NEAR(prefilled[r][k], logits[k], 1e-4) << prompt << " row " << r << ": prefill != decode";
      const auto& want = oracle.at("logits_at_top_ids").as_array()[r].as_array();
      const auto& llama_f32 = p.at("llama_cpp_f32").at("logits_at_top_ids").as_array()[r].as_array();
      for (size_t k = 0; k < want.size(); ++k) {
        const int id = int(top_ids[r].as_array()[k].as_int());
        EXPECT_NEAR(logits[size_t(id)], want[k].as_number(), 1e-3) << prompt << " row " << r << " id " << id;
        EXPECT_NEAR(logits[size_t(id)], llama_f32[k].as_number(), 1e-3) << prompt << " row " << r << " id " << id;
      }
      double max_logit = -1e30, sum = 0.0;
      for (float v : logits) max_logit = std::fmax(max_logit, double(v));
      for (float v : logits) sum += std::exp(double(v) - max_logit);
      EXPECT_NEAR(max_logit + std::log(sum), oracle.at("lse").as_array()[r].as_number(), 1e-3) << prompt << " row " << r;
      if (oracle.at("top2_margin").as_array()[r].as_number() > 2e-3) {
        EXPECT_EQ(cf::ref::argmax(logits.data(), int(logits.size())), oracle.at("argmax").as_array()[r].as_int())
            << prompt << " row " << r;
        ++argmax_checked;
      }
    }
  }
  EXPECT_GT(rows, 200);
  EXPECT_GT(argmax_checked, rows * 9 / 10);
}

// Free-running greedy decoding from the prompt equals llama.cpp F32's own continuation up to the first near tie.
TEST_P(TinyDeepseekModel, GreedyContinuationMatchesLlamaCppF32) {
  const std::string name = GetParam();
  const auto golden = read_json(data_path("golden/deepseek/" + name + ".json"));
  const TinyDeepseek gguf = from_gguf(data_path("deepseek/" + name + ".gguf"));
  int compared = 0;
  for (const auto& p : golden.at("prompts").as_array()) {
    const auto& want = p.at("f32_greedy").at("generated_tokens").as_array();
    const auto& margins = p.at("f32_greedy").at("top2_margin_fp64").as_array();
    const auto& prompt = p.at("prompt_tokens").as_array();
    Decoder decoder(gguf, int(prompt.size() + want.size()));
    std::vector<float> logits;
    for (const auto& t : prompt) logits = decoder.step(int(t.as_int()));
    for (size_t k = 0; k < want.size() && margins[k].as_number() >= 2e-3; ++k, ++compared) {
      const int token = cf::ref::argmax(logits.data(), int(logits.size()));
      ASSERT_EQ(token, want[k].as_int()) << p.at("name").as_string() << " step " << k;
      logits = decoder.step(token);
    }
  }
  EXPECT_GT(compared, 150);
}

INSTANTIATE_TEST_SUITE_P(Golden, TinyDeepseekModel, ::testing::Values("tiny_mla", "tiny_mla_qlora"));

}  // namespace
