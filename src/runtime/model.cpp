#include "clusterfusion/runtime/model.hpp"

#include <cstdlib>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/engine/model_file.hpp"

namespace cf {

LoadedModel load_model(const std::string& path, const WeightLoadOptions& options, const LoadProgress& progress) {
  auto file = open_model_file(path);
  if (options.check_finite) check_weights_finite(*file);
  LoadedModel m;
  m.path = path;
  m.format = file->format();
  m.tokenizer = Tokenizer::create(file->tokenizer_spec());
  m.chat_template = file->chat_template();
  m.weights = std::make_shared<const ModelWeights>(ModelWeights::load(*file, options, progress));
  return m;
}

namespace {

ModelConfig llama_shape(std::string name, int layers, int hidden, int heads, int kv_heads, int ffn, int vocab,
                        int context, float theta, float eps, bool tied) {
  ModelConfig c;
  c.arch = "llama";
  c.name = std::move(name);
  c.n_layers = layers;
  c.hidden = hidden;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.ffn_hidden = ffn;
  c.vocab = vocab;
  c.max_context = context;
  c.rope_theta = theta;
  c.rope_dim = c.head_dim;
  c.rope_style = RopeStyle::GPTJ;
  c.rms_eps = eps;
  c.tied_embeddings = tied;
  return c;
}

}  // namespace

std::vector<std::string> model_preset_names() { return {"smollm2-135m", "llama2-7b", "llama3-8b"}; }

ModelConfig model_preset(std::string_view name) {
  if (name == "smollm2-135m") return llama_shape("SmolLM2-135M shape", 30, 576, 9, 3, 1536, 49152, 8192, 100000.0f, 1e-5f, true);
  if (name == "llama2-7b") return llama_shape("Llama-2-7B shape", 32, 4096, 32, 32, 11008, 32000, 4096, 10000.0f, 1e-5f, false);
  if (name == "llama3-8b") return llama_shape("Llama-3-8B shape", 32, 4096, 32, 8, 14336, 128256, 8192, 500000.0f, 1e-5f, false);
  std::string known;
  for (const auto& n : model_preset_names()) known += (known.empty() ? "" : ", ") + n;
  throw InputError("unknown model preset '" + std::string(name) + "' (known: " + known + ")");
}

std::string cache_dir() {
  if (const char* d = std::getenv("CF_CACHE_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/clusterfusion";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.cache/clusterfusion";
}

std::string default_model_path() { return cache_dir() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"; }

}  // namespace cf
