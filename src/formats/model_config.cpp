// ModelConfig: validation, summary, and construction from GGUF metadata or a Hugging Face config.json.
#include "clusterfusion/model/config.hpp"

#include <cmath>
#include <cstdio>
#include <limits>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/json.hpp"
#include "clusterfusion/common/text.hpp"
#include "clusterfusion/formats/gguf.hpp"
#include "mapped_file.hpp"

namespace cf {

namespace {
std::string fmt_float(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// The model's name as the CLI prints it: a file's text must not carry terminal control sequences, bidirectional
// overrides or invalid UTF-8 to the terminal (escaped, common/text.hpp); clipped.
std::string printable_name(const std::string& name) { return terminal_safe(name, 120); }

void check_range(const std::string& source, const char* field, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi)
    throw InputError(source + ": " + field + " = " + std::to_string(v) + ": expected " + std::to_string(lo) + ".." +
                     std::to_string(hi));
}
}  // namespace

const char* attention_kind_name(AttentionKind kind) {
  switch (kind) {
    case AttentionKind::Gqa:
      return "GQA";
    case AttentionKind::Mla:
      return "MLA";
  }
  return "?";
}

const char* ffn_kind_name(FfnKind kind) {
  switch (kind) {
    case FfnKind::SwiGlu:
      return "SwiGLU";
    case FfnKind::Moe:
      return "MoE";
  }
  return "?";
}

void ModelConfig::validate(const std::string& source) const {
  check_range(source, "n_layers", n_layers, 1, kMaxLayers);
  check_range(source, "hidden", hidden, 1, kMaxHidden);
  check_range(source, "n_heads", n_heads, 1, kMaxHeads);
  check_range(source, "n_kv_heads", n_kv_heads, 1, n_heads);
  if (n_heads % n_kv_heads != 0)
    throw InputError(source + ": n_kv_heads = " + std::to_string(n_kv_heads) + ": must divide n_heads = " +
                     std::to_string(n_heads));
  check_range(source, "head_dim", head_dim, 2, kMaxHeadDim);
  if (head_dim % 2 != 0 && !is_mla())  // MLA rotates only the rope part
    throw InputError(source + ": head_dim = " + std::to_string(head_dim) + ": must be even");
  check_range(source, "rope_dim", rope_dim, 2, head_dim);
  if (rope_dim % 2 != 0) throw InputError(source + ": rope_dim = " + std::to_string(rope_dim) + ": must be even");
  check_range(source, "q_dim (n_heads * head_dim)", int64_t(n_heads) * head_dim, 1, int64_t(kMaxHidden) * 4);
  check_range(source, "ffn_hidden", ffn_hidden, 1, kMaxFfnHidden);
  check_range(source, "vocab", vocab, 1, kMaxVocab);
  check_range(source, "max_context", max_context, 1, kMaxContext);
  if (!std::isfinite(rope_theta) || rope_theta <= 0.0f)
    throw InputError(source + ": rope_theta = " + fmt_float(rope_theta) + ": must be a positive number");
  if (!std::isfinite(rms_eps) || rms_eps <= 0.0f || rms_eps >= 1.0f)
    throw InputError(source + ": rms_eps = " + fmt_float(rms_eps) + ": expected 0 < eps < 1");
  if (is_mla()) validate_mla(source);
  if (moe.n_experts > 0) validate_moe(source);
}

void ModelConfig::validate_mla(const std::string& source) const {
  check_range(source, "q_lora_rank", mla.q_lora_rank, 0, kMaxHidden);
  check_range(source, "kv_lora_rank", mla.kv_lora_rank, 1, kMaxHeadDim * 4);
  check_range(source, "qk_nope_head_dim", mla.qk_nope, 1, kMaxHeadDim);
  check_range(source, "v_head_dim", mla.v_head, 1, kMaxHeadDim);
  if (head_dim != mla.qk_nope + rope_dim)
    throw InputError(source + ": head_dim = " + std::to_string(head_dim) + ": must be qk_nope_head_dim + qk_rope_head_dim = " +
                     std::to_string(mla.qk_nope + rope_dim));
  check_range(source, "n_heads * v_head_dim", int64_t(n_heads) * mla.v_head, 1, int64_t(kMaxHidden) * 4);
  if (rope_style != RopeStyle::GPTJ) throw InputError(source + ": MLA rotates adjacent pairs (GPT-J RoPE style)");
  if (yarn.enabled()) {
    check_range(source, "rope_scaling.original_max_position_embeddings", yarn.original_context, 1, kMaxContext);
    if (!std::isfinite(yarn.factor) || yarn.factor > 1e6f)
      throw InputError(source + ": rope_scaling.factor = " + fmt_float(yarn.factor) + ": expected a number <= 1e6");
    for (const auto& [field, v] : {std::pair{"beta_fast", yarn.beta_fast}, std::pair{"beta_slow", yarn.beta_slow}})
      if (!std::isfinite(v) || v <= 0.0f || v > 1e6f)
        throw InputError(source + ": rope_scaling." + field + " = " + fmt_float(v) + ": expected 0 < beta <= 1e6");
    for (const auto& [field, v] : {std::pair{"mscale", yarn.mscale}, std::pair{"mscale_all_dim", yarn.mscale_all_dim}})
      if (!std::isfinite(v) || v < 0.0f || v > 1e3f)
        throw InputError(source + ": rope_scaling." + field + " = " + fmt_float(v) + ": expected 0..1000");
  }
}

void ModelConfig::validate_moe(const std::string& source) const {
  check_range(source, "n_routed_experts", moe.n_experts, 1, kMaxExperts);
  check_range(source, "num_experts_per_tok", moe.top_k, 1, moe.n_experts);
  check_range(source, "n_shared_experts", moe.n_shared, 0, kMaxExperts);
  check_range(source, "first_k_dense_replace", moe.first_dense, 0, n_layers);
  check_range(source, "moe_intermediate_size", moe.expert_ffn, 1, kMaxFfnHidden);
  check_range(source, "n_shared_experts * moe_intermediate_size", int64_t(moe.n_shared) * moe.expert_ffn, 0,
              kMaxFfnHidden);
  check_range(source, "n_routed_experts * moe_intermediate_size", int64_t(moe.n_experts) * moe.expert_ffn, 1,
              int64_t(kMaxFfnHidden) * 64);
  if (!std::isfinite(moe.routed_scaling) || moe.routed_scaling <= 0.0f || moe.routed_scaling > 1e4f)
    throw InputError(source + ": routed_scaling_factor = " + fmt_float(moe.routed_scaling) + ": expected 0 < s <= 1e4");
  if (moe.method == TopkMethod::GroupLimitedGreedy) {
    check_range(source, "n_group", moe.n_group, 1, moe.n_experts);
    if (moe.n_experts % moe.n_group != 0)
      throw InputError(source + ": n_group = " + std::to_string(moe.n_group) + ": must divide n_routed_experts = " +
                       std::to_string(moe.n_experts));
    check_range(source, "topk_group", moe.topk_group, 1, moe.n_group);
    check_range(source, "num_experts_per_tok", moe.top_k, 1, moe.topk_group * (moe.n_experts / moe.n_group));
  }
}

std::string ModelConfig::summary() const {
  std::string s;
  auto line = [&](const char* key, const std::string& value) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "%-13s", key);
    s += buf + value + "\n";
  };
  line("architecture", arch + (name.empty() ? "" : " (" + name + ")"));
  const LayerSpec first = layer_spec(0), last = layer_spec(n_layers - 1);
  const std::string ffn_kinds = first.ffn == last.ffn ? std::string(ffn_kind_name(first.ffn))
                                                      : std::string(ffn_kind_name(first.ffn)) + " / " + ffn_kind_name(last.ffn);
  line("layers", std::to_string(n_layers) + " (" + attention_kind_name(first.attention) + " attention, " + ffn_kinds +
                     " FFN, RMSNorm)");
  line("hidden", std::to_string(hidden));
  if (is_mla())
    line("heads", std::to_string(n_heads) + " query heads of " + std::to_string(head_dim) +
                      " (qk_nope + qk_rope), sharing one latent key/value row");
  else
    line("heads", std::to_string(n_heads) + " query, " + std::to_string(n_kv_heads) + " key/value, head_dim " +
                      std::to_string(head_dim));
  line("ffn hidden", std::to_string(ffn_hidden));
  line("vocab", std::to_string(vocab));
  line("context", std::to_string(max_context));
  line("rope", "theta " + fmt_float(rope_theta) + ", " + std::to_string(rope_dim) + " dims, " +
                   (rope_style == RopeStyle::GPTJ ? "GPT-J (adjacent pairs)" : "NeoX (half-split pairs)"));
  line("rms eps", fmt_float(rms_eps));
  line("embeddings", tied_embeddings ? "tied (output = token_embd)" : "separate output matrix");
  if (!is_mla()) line("qkv bias", qkv_bias ? "yes" : "no");
  if (is_mla()) {
    line("mla", "kv_lora_rank " + std::to_string(mla.kv_lora_rank) + ", qk_nope " + std::to_string(mla.qk_nope) +
                    ", qk_rope " + std::to_string(rope_dim) + ", v_head " + std::to_string(mla.v_head) + ", q " +
                    (mla.q_lora_rank > 0 ? "through q_lora_rank " + std::to_string(mla.q_lora_rank) : "direct") +
                    ", kv_b " + (mla.split_kv_b ? "split (k_b, v_b)" : "one matrix"));
    line("kv cache", std::to_string(cache_values_per_token()) + " values per token and layer (latent row c_kv + k_pe), " +
                         std::to_string(cache_values_per_token() * 4 * n_layers) + " bytes per token in fp32, " +
                         std::to_string(cache_values_per_token() * 2 * n_layers) + " in fp16");
  }
  if (yarn.enabled())
    line("yarn", "factor " + fmt_float(yarn.factor) + ", original context " + std::to_string(yarn.original_context) +
                     ", beta_fast " + fmt_float(yarn.beta_fast) + ", beta_slow " + fmt_float(yarn.beta_slow) +
                     ", mscale " + fmt_float(yarn.mscale) + ", mscale_all_dim " + fmt_float(yarn.mscale_all_dim));
  if (moe.n_experts > 0) {
    std::string method = moe.method == TopkMethod::Greedy
                             ? std::string("greedy")
                             : "group_limited_greedy (" + std::to_string(moe.topk_group) + " of " +
                                   std::to_string(moe.n_group) + " groups)";
    line("moe", std::to_string(moe.n_experts) + " routed experts (top " + std::to_string(moe.top_k) + ", " + method +
                    ", width " + std::to_string(moe.expert_ffn) + "), " + std::to_string(moe.n_shared) +
                    " shared, in layers " + std::to_string(moe.first_dense) + ".." + std::to_string(n_layers - 1) +
                    (moe.first_dense == 1 ? " (layer 0 dense)"
                     : moe.first_dense > 1 ? " (0.." + std::to_string(moe.first_dense - 1) + " dense)"
                                           : "") +
                    ", weights " + (moe.norm_topk_prob ? "renormalised, " : "") + "scaled by " +
                    fmt_float(moe.routed_scaling));
  }
  return s;
}

// ---- GGUF ------------------------------------------------------------------------------------------------------

namespace {
int int_field(const GgufFile& f, const std::string& key, std::optional<int64_t> fallback = std::nullopt) {
  std::optional<int64_t> v = f.get_int(key);
  if (!v) v = fallback;
  if (!v) throw InputError(f.path() + ": missing metadata " + quote_text(key));
  if (*v < 0 || *v > std::numeric_limits<int>::max())
    throw InputError(f.path() + ": metadata " + quote_text(key) + " = " + std::to_string(*v) + " is out of range");
  return int(*v);
}
}  // namespace

namespace {
// The parts of a "deepseek2" file beyond the Llama keys (docs/mla.md §4).
void deepseek2_from_gguf(const GgufFile& f, ModelConfig& c) {
  const std::string p = "deepseek2.";
  const auto fail = [&](const std::string& why) { throw InputError(f.path() + ": " + why); };
  c.attention = AttentionKind::Mla;
  c.rope_style = RopeStyle::GPTJ;  // the converter does not permute q / k_pe: adjacent pairs as in the weights
  c.n_heads = int_field(f, p + "attention.head_count");
  c.mla.kv_lora_rank = int_field(f, p + "attention.kv_lora_rank");
  c.mla.q_lora_rank = int_field(f, p + "attention.q_lora_rank", 0);
  c.rope_dim = int_field(f, p + "rope.dimension_count");
  // Current converters describe the heads in key/value_length_mla (key/value_length then describe the latent MQA
  // view); older ones in key/value_length and write one attn_kv_b.
  const bool mla_keys = f.find(p + "attention.key_length_mla") != nullptr;
  const int q_head = int_field(f, p + (mla_keys ? "attention.key_length_mla" : "attention.key_length"));
  c.mla.v_head = int_field(f, p + (mla_keys ? "attention.value_length_mla" : "attention.value_length"));
  if (q_head <= c.rope_dim)
    fail("attention key length " + std::to_string(q_head) + " must exceed rope.dimension_count " +
         std::to_string(c.rope_dim));
  c.mla.qk_nope = q_head - c.rope_dim;
  c.head_dim = q_head;
  c.n_kv_heads = c.n_heads;
  const bool split = f.find_tensor("blk.0.attn_k_b.weight") != nullptr;
  const bool joint = f.find_tensor("blk.0.attn_kv_b.weight") != nullptr;
  if (split && !mla_keys)
    fail("attn_k_b / attn_v_b without the attention.key_length_mla keys (an early MLA converter): re-convert the "
         "model with a current convert_hf_to_gguf.py");
  if (!split && !joint) fail("missing tensor 'blk.0.attn_kv_b.weight' (or the split 'blk.0.attn_k_b.weight')");
  c.mla.split_kv_b = split;

  if (const auto scaling = f.get_string(p + "rope.scaling.type"); scaling && *scaling != "none") {
    if (*scaling != "yarn") fail("RoPE scaling " + quote_text(*scaling) + " is not supported (deepseek2: yarn)");
    const auto factor = f.get_float(p + "rope.scaling.factor");
    if (!factor) fail("missing metadata '" + p + "rope.scaling.factor'");
    c.yarn.factor = float(*factor);
    c.yarn.original_context = int_field(f, p + "rope.scaling.original_context_length");
    c.yarn.beta_fast = float(f.get_float(p + "rope.scaling.yarn_beta_fast").value_or(32.0));  // llama.cpp's defaults
    c.yarn.beta_slow = float(f.get_float(p + "rope.scaling.yarn_beta_slow").value_or(1.0));
    // The converter writes 0.1 * mscale_all_dim and no mscale; llama.cpp takes mscale = mscale_all_dim.
    c.yarn.mscale_all_dim = float(f.get_float(p + "rope.scaling.yarn_log_multiplier").value_or(0.0) / 0.1);
    c.yarn.mscale = c.yarn.mscale_all_dim;
  }

  c.moe.n_experts = int_field(f, p + "expert_count", 0);
  if (c.moe.n_experts > 0) {
    c.moe.top_k = int_field(f, p + "expert_used_count");
    c.moe.n_shared = int_field(f, p + "expert_shared_count", 0);
    c.moe.first_dense = int_field(f, p + "leading_dense_block_count", 0);
    c.moe.expert_ffn = int_field(f, p + "expert_feed_forward_length");
    c.moe.routed_scaling = float(f.get_float(p + "expert_weights_scale").value_or(1.0));
    c.moe.norm_topk_prob = f.get_bool(p + "expert_weights_norm").value_or(false);
    if (const auto gating = f.get_int(p + "expert_gating_func"); gating && *gating != 1)
      fail("expert_gating_func " + std::to_string(*gating) + " is not supported (1: softmax)");
    if (f.find_tensor("blk." + std::to_string(c.moe.first_dense) + ".exp_probs_b.bias"))
      fail("expert selection bias (exp_probs_b, DeepSeek-V3 routing) is not supported");
    const int64_t groups = f.get_int(p + "expert_group_count").value_or(1);
    const int64_t used_groups = f.get_int(p + "expert_group_used_count").value_or(groups);
    if (groups > 1 && used_groups < groups)
      fail("expert groups (expert_group_count " + std::to_string(groups) + ", used " + std::to_string(used_groups) +
           "): llama.cpp ranks groups differently from DeepSeek-V2's code and the file cannot say which; load the "
           "Hugging Face folder instead");
  }
}
}  // namespace

ModelConfig config_from_gguf(const GgufFile& f) {
  ModelConfig c;
  c.arch = f.require_string("general.architecture");
  if (c.arch != "llama" && c.arch != "qwen2" && c.arch != "deepseek2")
    throw InputError(f.path() + ": unsupported architecture " + quote_text(c.arch) +
                     " (supported: llama, qwen2, deepseek2)");
  c.name = printable_name(f.get_string("general.name").value_or(""));
  const std::string p = c.arch + ".";
  const bool deepseek = c.arch == "deepseek2";
  if (!deepseek && f.get_int(p + "expert_count").value_or(0) > 0)
    throw InputError(f.path() + ": mixture-of-experts models are not supported (" + p + "expert_count > 0)");
  if (const auto scaling = f.get_string(p + "rope.scaling.type"); !deepseek && scaling && *scaling != "none")
    throw InputError(f.path() + ": RoPE scaling " + quote_text(*scaling) + " is not supported");
  if (f.find_tensor("rope_freqs.weight"))
    throw InputError(f.path() + ": RoPE frequency factors (tensor 'rope_freqs.weight', Llama-3.1 style) are not supported");

  c.n_layers = int_field(f, p + "block_count");
  c.hidden = int_field(f, p + "embedding_length");
  c.ffn_hidden = int_field(f, p + "feed_forward_length");
  c.max_context = int_field(f, p + "context_length");
  if (deepseek) {
    deepseek2_from_gguf(f, c);
  } else {
    c.n_heads = int_field(f, p + "attention.head_count");
    c.n_kv_heads = int_field(f, p + "attention.head_count_kv", c.n_heads);
    if (c.n_heads <= 0) throw InputError(f.path() + ": metadata '" + p + "attention.head_count' = 0");
    c.head_dim = int_field(f, p + "attention.key_length", c.hidden / c.n_heads);
    if (const auto vlen = f.get_int(p + "attention.value_length"); vlen && *vlen != c.head_dim)
      throw InputError(f.path() + ": attention.value_length " + std::to_string(*vlen) + " differs from key_length " +
                       std::to_string(c.head_dim) + " (not supported)");
    c.rope_dim = int_field(f, p + "rope.dimension_count", c.head_dim);
    c.rope_style = c.arch == "llama" ? RopeStyle::GPTJ : RopeStyle::NeoX;
  }
  c.rope_theta = float(f.get_float(p + "rope.freq_base").value_or(10000.0));
  const auto eps = f.get_float(p + "attention.layer_norm_rms_epsilon");
  if (!eps) throw InputError(f.path() + ": missing metadata '" + p + "attention.layer_norm_rms_epsilon'");
  c.rms_eps = float(*eps);

  // Vocab: the tokenizer's list when present, else the metadata, else the embedding's rows.
  if (const auto* tokens = f.find("tokenizer.ggml.tokens"); tokens && tokens->is_array()) {
    if (tokens->size() > uint64_t(ModelConfig::kMaxVocab))
      throw InputError(f.path() + ": tokenizer.ggml.tokens has " + std::to_string(tokens->size()) +
                       " entries, more than the limit of " + std::to_string(ModelConfig::kMaxVocab));
    c.vocab = int(tokens->size());
  } else if (f.find(p + "vocab_size")) {
    c.vocab = int_field(f, p + "vocab_size");
  } else if (const auto* emb = f.find_tensor("token_embd.weight"); emb && emb->n_dims == 2 &&
                                                                    emb->ne[1] <= ModelConfig::kMaxVocab) {
    c.vocab = int(emb->ne[1]);
  }
  c.tied_embeddings = f.find_tensor("output.weight") == nullptr;
  c.qkv_bias = !deepseek && f.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.validate(f.path());
  return c;
}

// ---- Hugging Face config.json ----------------------------------------------------------------------------------

namespace {
const json::Value* present(const json::Value& obj, std::string_view key) {
  const auto* v = obj.find(key);
  return (v && !v->is_null()) ? v : nullptr;
}

int hf_int(const json::Value& obj, const std::string& source, const char* key, std::optional<int> fallback = {}) {
  const auto* v = present(obj, key);
  if (!v) {
    if (fallback) return *fallback;
    throw InputError(source + ": missing " + key);
  }
  if (!v->is_integer()) throw InputError(source + ": " + key + " must be an integer");
  const int64_t i = v->as_int();
  if (i < 0 || i > std::numeric_limits<int>::max())
    throw InputError(source + ": " + key + " = " + std::to_string(i) + " is out of range");
  return int(i);
}

double hf_number(const json::Value& obj, const std::string& source, const char* key, double fallback) {
  const auto* v = present(obj, key);
  if (!v) return fallback;
  if (!v->is_number()) throw InputError(source + ": " + key + " must be a number");
  return v->as_number();
}

bool hf_bool(const json::Value& obj, const std::string& source, const char* key, bool fallback) {
  const auto* v = present(obj, key);
  if (!v) return fallback;
  if (!v->is_bool()) throw InputError(source + ": " + key + " must be true or false");
  return v->as_bool();
}

std::string hf_string(const json::Value& obj, const std::string& source, const char* key, const char* fallback) {
  const auto* v = present(obj, key);
  if (!v) return fallback;
  if (!v->is_string()) throw InputError(source + ": " + key + " must be a string");
  return v->as_string();
}

// The field must be absent, null or `expected` (a feature of the architecture we do not implement otherwise).
void hf_require_value(const json::Value& obj, const std::string& source, const char* key, int64_t expected) {
  const auto* v = present(obj, key);
  if (v && !(v->is_integer() && v->as_int() == expected))
    throw InputError(source + ": " + key + " must be " + std::to_string(expected) + " (other values are not supported)");
}

// model_type deepseek_v2 (DeepSeek-V2 / V2-Lite / V2-Chat; docs/mla.md §1-§2).
void deepseek_v2_from_hf(const json::Value& cfg, const std::string& source, ModelConfig& c) {
  c.arch = "deepseek2";
  c.attention = AttentionKind::Mla;
  c.rope_style = RopeStyle::GPTJ;  // adjacent pairs: HF's de-interleave permutes q_pe and k_pe alike (docs/mla.md §1.3)
  if (hf_bool(cfg, source, "attention_bias", false)) throw InputError(source + ": attention_bias is not supported");
  c.mla.q_lora_rank = hf_int(cfg, source, "q_lora_rank", 0);
  if (present(cfg, "q_lora_rank") && c.mla.q_lora_rank == 0)
    throw InputError(source + ": q_lora_rank = 0: expected null (no q compression) or a positive rank");
  c.mla.kv_lora_rank = hf_int(cfg, source, "kv_lora_rank");
  c.mla.qk_nope = hf_int(cfg, source, "qk_nope_head_dim");
  c.rope_dim = hf_int(cfg, source, "qk_rope_head_dim");
  c.mla.v_head = hf_int(cfg, source, "v_head_dim");
  c.head_dim = c.mla.qk_nope + c.rope_dim;
  c.n_kv_heads = c.n_heads;
  c.mla.split_kv_b = false;  // kv_b_proj

  if (const auto* scaling = present(cfg, "rope_scaling")) {
    if (!scaling->is_object()) throw InputError(source + ": rope_scaling must be an object or null");
    std::string type = hf_string(*scaling, source, "type", "");
    if (type.empty()) type = hf_string(*scaling, source, "rope_type", "");
    if (type != "yarn" && type != "default")
      throw InputError(source + ": rope_scaling type " + quote_text(type) + " is not supported (deepseek_v2: yarn)");
    if (type == "yarn") {
      const std::string y = source + " rope_scaling";
      if (!present(*scaling, "factor")) throw InputError(source + ": rope_scaling: missing factor");
      c.yarn.factor = float(hf_number(*scaling, y, "factor", 0.0));
      if (!(c.yarn.factor >= 1.0f)) throw InputError(source + ": rope_scaling.factor = " + fmt_float(c.yarn.factor) + ": expected >= 1");
      c.yarn.original_context = hf_int(*scaling, y, "original_max_position_embeddings");
      c.yarn.beta_fast = float(hf_number(*scaling, y, "beta_fast", 32.0));
      c.yarn.beta_slow = float(hf_number(*scaling, y, "beta_slow", 1.0));
      c.yarn.mscale = float(hf_number(*scaling, y, "mscale", 1.0));
      c.yarn.mscale_all_dim = float(hf_number(*scaling, y, "mscale_all_dim", 0.0));
    }
  }

  c.moe.n_experts = hf_int(cfg, source, "n_routed_experts", 0);
  if (c.moe.n_experts == 0) return;
  c.moe.n_shared = hf_int(cfg, source, "n_shared_experts", 0);
  c.moe.top_k = hf_int(cfg, source, "num_experts_per_tok");
  c.moe.first_dense = hf_int(cfg, source, "first_k_dense_replace", 0);
  c.moe.expert_ffn = hf_int(cfg, source, "moe_intermediate_size");
  c.moe.norm_topk_prob = hf_bool(cfg, source, "norm_topk_prob", false);
  // DeepSeek-V2's code scales the weights only when it does not renormalise them (docs/mla.md §2)
  const double scaling = hf_number(cfg, source, "routed_scaling_factor", 1.0);
  c.moe.routed_scaling = c.moe.norm_topk_prob ? 1.0f : float(scaling);
  const std::string method = hf_string(cfg, source, "topk_method", "greedy");
  if (method == "group_limited_greedy") {
    c.moe.method = TopkMethod::GroupLimitedGreedy;
    c.moe.n_group = hf_int(cfg, source, "n_group");
    c.moe.topk_group = hf_int(cfg, source, "topk_group");
  } else if (method != "greedy") {
    throw InputError(source + ": topk_method " + quote_text(method) +
                     " is not supported (greedy, group_limited_greedy)");
  }
  if (const std::string scoring = hf_string(cfg, source, "scoring_func", "softmax"); scoring != "softmax")
    throw InputError(source + ": scoring_func " + quote_text(scoring) + " is not supported (softmax)");
  hf_require_value(cfg, source, "moe_layer_freq", 1);
  hf_require_value(cfg, source, "ep_size", 1);
}
}  // namespace

ModelConfig config_from_hf_json(const json::Value& cfg, const std::string& source) {
  if (!cfg.is_object()) throw InputError(source + ": expected a JSON object");
  ModelConfig c;
  const auto* type = present(cfg, "model_type");
  if (!type || !type->is_string()) throw InputError(source + ": missing model_type");
  const std::string& model_type = type->as_string();
  if (model_type == "llama" || model_type == "mistral") c.arch = "llama";
  else if (model_type == "qwen2") c.arch = "qwen2";
  else if (model_type == "deepseek_v2") c.arch = "deepseek2";
  else throw InputError(source + ": unsupported model_type " + quote_text(model_type) + " (supported: llama, mistral, qwen2, deepseek_v2)");
  if (const auto* n = present(cfg, "_name_or_path"); n && n->is_string()) c.name = printable_name(n->as_string());

  if (const auto* act = present(cfg, "hidden_act"); act && !(act->is_string() && act->as_string() == "silu"))
    throw InputError(source + ": hidden_act must be \"silu\" (SwiGLU)");
  if (const auto* scaling = present(cfg, "rope_scaling"); scaling && c.arch != "deepseek2") {
    const auto* kind = scaling->is_object() ? present(*scaling, "rope_type") : nullptr;
    if (!kind) kind = scaling->is_object() ? present(*scaling, "type") : nullptr;
    if (!(kind && kind->is_string() && kind->as_string() == "default"))
      throw InputError(source + ": rope_scaling is not supported");
  }
  if (c.arch == "llama" && (hf_bool(cfg, source, "attention_bias", false) || hf_bool(cfg, source, "mlp_bias", false)))
    throw InputError(source + ": attention_bias / mlp_bias are not supported for llama models");
  if ((model_type == "mistral" && present(cfg, "sliding_window")) || hf_bool(cfg, source, "use_sliding_window", false))
    throw InputError(source + ": sliding-window attention is not supported");

  c.n_layers = hf_int(cfg, source, "num_hidden_layers");
  c.hidden = hf_int(cfg, source, "hidden_size");
  c.ffn_hidden = hf_int(cfg, source, "intermediate_size");
  c.n_heads = hf_int(cfg, source, "num_attention_heads");
  if (c.n_heads <= 0) throw InputError(source + ": num_attention_heads = 0");
  if (c.arch == "deepseek2") {
    deepseek_v2_from_hf(cfg, source, c);
  } else {
    c.n_kv_heads = hf_int(cfg, source, "num_key_value_heads", c.n_heads);
    c.head_dim = hf_int(cfg, source, "head_dim", c.hidden / c.n_heads);
    c.rope_dim = c.head_dim;
    c.rope_style = RopeStyle::NeoX;
  }
  c.vocab = hf_int(cfg, source, "vocab_size");
  c.max_context = hf_int(cfg, source, "max_position_embeddings", 2048);
  c.rope_theta = float(hf_number(cfg, source, "rope_theta", 10000.0));
  c.rms_eps = float(hf_number(cfg, source, "rms_norm_eps", 1e-6));
  c.tied_embeddings = hf_bool(cfg, source, "tie_word_embeddings", false);
  c.qkv_bias = c.arch == "qwen2";
  c.validate(source);
  return c;
}

}  // namespace cf
