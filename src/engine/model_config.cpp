// ModelConfig: validation, summary, and construction from GGUF metadata or a Hugging Face config.json.
#include "clusterfusion/engine/model_config.hpp"

#include <cmath>
#include <cstdio>
#include <limits>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/json.hpp"
#include "clusterfusion/common/text.hpp"
#include "clusterfusion/engine/gguf.hpp"
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

void ModelConfig::validate(const std::string& source) const {
  check_range(source, "n_layers", n_layers, 1, kMaxLayers);
  check_range(source, "hidden", hidden, 1, kMaxHidden);
  check_range(source, "n_heads", n_heads, 1, kMaxHeads);
  check_range(source, "n_kv_heads", n_kv_heads, 1, n_heads);
  if (n_heads % n_kv_heads != 0)
    throw InputError(source + ": n_kv_heads = " + std::to_string(n_kv_heads) + ": must divide n_heads = " +
                     std::to_string(n_heads));
  check_range(source, "head_dim", head_dim, 2, kMaxHeadDim);
  if (head_dim % 2 != 0) throw InputError(source + ": head_dim = " + std::to_string(head_dim) + ": must be even");
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
}

std::string ModelConfig::summary() const {
  std::string s;
  auto line = [&](const char* key, const std::string& value) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "%-13s", key);
    s += buf + value + "\n";
  };
  line("architecture", arch + (name.empty() ? "" : " (" + name + ")"));
  line("layers", std::to_string(n_layers));
  line("hidden", std::to_string(hidden));
  line("heads", std::to_string(n_heads) + " query, " + std::to_string(n_kv_heads) + " key/value, head_dim " +
                    std::to_string(head_dim));
  line("ffn hidden", std::to_string(ffn_hidden));
  line("vocab", std::to_string(vocab));
  line("context", std::to_string(max_context));
  line("rope", "theta " + fmt_float(rope_theta) + ", " + std::to_string(rope_dim) + " dims, " +
                   (rope_style == RopeStyle::GPTJ ? "GPT-J (adjacent pairs)" : "NeoX (half-split pairs)"));
  line("rms eps", fmt_float(rms_eps));
  line("embeddings", tied_embeddings ? "tied (output = token_embd)" : "separate output matrix");
  line("qkv bias", qkv_bias ? "yes" : "no");
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

ModelConfig config_from_gguf(const GgufFile& f) {
  ModelConfig c;
  c.arch = f.require_string("general.architecture");
  if (c.arch != "llama" && c.arch != "qwen2")
    throw InputError(f.path() + ": unsupported architecture " + quote_text(c.arch) + " (supported: llama, qwen2)");
  c.name = printable_name(f.get_string("general.name").value_or(""));
  const std::string p = c.arch + ".";
  if (f.get_int(p + "expert_count").value_or(0) > 0)
    throw InputError(f.path() + ": mixture-of-experts models are not supported (" + p + "expert_count > 0)");
  if (const auto scaling = f.get_string(p + "rope.scaling.type"); scaling && *scaling != "none")
    throw InputError(f.path() + ": RoPE scaling " + quote_text(*scaling) + " is not supported");
  if (f.find_tensor("rope_freqs.weight"))
    throw InputError(f.path() + ": RoPE frequency factors (tensor 'rope_freqs.weight', Llama-3.1 style) are not supported");

  c.n_layers = int_field(f, p + "block_count");
  c.hidden = int_field(f, p + "embedding_length");
  c.ffn_hidden = int_field(f, p + "feed_forward_length");
  c.n_heads = int_field(f, p + "attention.head_count");
  c.n_kv_heads = int_field(f, p + "attention.head_count_kv", c.n_heads);
  c.max_context = int_field(f, p + "context_length");
  if (c.n_heads <= 0) throw InputError(f.path() + ": metadata '" + p + "attention.head_count' = 0");
  c.head_dim = int_field(f, p + "attention.key_length", c.hidden / c.n_heads);
  if (const auto vlen = f.get_int(p + "attention.value_length"); vlen && *vlen != c.head_dim)
    throw InputError(f.path() + ": attention.value_length " + std::to_string(*vlen) + " differs from key_length " +
                     std::to_string(c.head_dim) + " (not supported)");
  c.rope_dim = int_field(f, p + "rope.dimension_count", c.head_dim);
  c.rope_theta = float(f.get_float(p + "rope.freq_base").value_or(10000.0));
  const auto eps = f.get_float(p + "attention.layer_norm_rms_epsilon");
  if (!eps) throw InputError(f.path() + ": missing metadata '" + p + "attention.layer_norm_rms_epsilon'");
  c.rms_eps = float(*eps);
  c.rope_style = c.arch == "llama" ? RopeStyle::GPTJ : RopeStyle::NeoX;

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
  c.qkv_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
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
}  // namespace

ModelConfig config_from_hf_json(const json::Value& cfg, const std::string& source) {
  if (!cfg.is_object()) throw InputError(source + ": expected a JSON object");
  ModelConfig c;
  const auto* type = present(cfg, "model_type");
  if (!type || !type->is_string()) throw InputError(source + ": missing model_type");
  const std::string& model_type = type->as_string();
  if (model_type == "llama" || model_type == "mistral") c.arch = "llama";
  else if (model_type == "qwen2") c.arch = "qwen2";
  else throw InputError(source + ": unsupported model_type " + quote_text(model_type) + " (supported: llama, mistral, qwen2)");
  if (const auto* n = present(cfg, "_name_or_path"); n && n->is_string()) c.name = printable_name(n->as_string());

  if (const auto* act = present(cfg, "hidden_act"); act && !(act->is_string() && act->as_string() == "silu"))
    throw InputError(source + ": hidden_act must be \"silu\" (SwiGLU)");
  if (const auto* scaling = present(cfg, "rope_scaling")) {
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
  c.n_kv_heads = hf_int(cfg, source, "num_key_value_heads", c.n_heads);
  if (c.n_heads <= 0) throw InputError(source + ": num_attention_heads = 0");
  c.head_dim = hf_int(cfg, source, "head_dim", c.hidden / c.n_heads);
  c.rope_dim = c.head_dim;
  c.vocab = hf_int(cfg, source, "vocab_size");
  c.max_context = hf_int(cfg, source, "max_position_embeddings", 2048);
  c.rope_theta = float(hf_number(cfg, source, "rope_theta", 10000.0));
  c.rms_eps = float(hf_number(cfg, source, "rms_norm_eps", 1e-6));
  c.rope_style = RopeStyle::NeoX;
  c.tied_embeddings = hf_bool(cfg, source, "tie_word_embeddings", false);
  c.qkv_bias = c.arch == "qwen2";
  c.validate(source);
  return c;
}

}  // namespace cf
