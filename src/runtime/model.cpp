#include "clusterfusion/runtime/model.hpp"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/formats/model_file.hpp"

namespace cf {

LoadedModel load_model(const std::string& path, const WeightLoadOptions& options, const LoadProgress& progress) {
  auto file = open_model_file(path);
  LoadedModel m;
  try {
    if (options.check_finite) check_weights_finite(*file);
    m.path = path;
    m.format = file->format();
    m.tokenizer = Tokenizer::create(file->tokenizer_spec());
    m.chat_template = file->chat_template();
    m.weights = std::make_shared<const ModelWeights>(ModelWeights::load(*file, options, progress));
  } catch (const InputError&) {
    file->check_unchanged();  // a file that changed while it was read: that is the error, not what it caused
    throw;
  }
  // Every weight is copied now: the copy is of one version of the file, or this says it is not.
  file->check_unchanged();
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

// DeepSeek-V2-Lite's shapes (its config.json): MLA without q compression, 64 experts of which 6 per token, 2 shared,
// the first layer dense, YaRN x40.
ModelConfig deepseek_v2_lite_shape() {
  ModelConfig c = llama_shape("DeepSeek-V2-Lite shape", 27, 2048, 16, 16, 10944, 102400, 163840, 10000.0f, 1e-6f, false);
  c.arch = "deepseek2";
  c.attention = AttentionKind::Mla;
  c.mla = {0, 512, 128, 128, false};
  c.rope_dim = 64;
  c.head_dim = c.mla.qk_nope + c.rope_dim;
  c.yarn = {40.0f, 4096, 32.0f, 1.0f, 0.707f, 0.707f};
  c.moe.n_experts = 64;
  c.moe.n_shared = 2;
  c.moe.top_k = 6;
  c.moe.first_dense = 1;
  c.moe.expert_ffn = 1408;
  return c;
}

}  // namespace

std::vector<std::string> model_preset_names() { return {"smollm2-135m", "llama2-7b", "llama3-8b", "deepseek-v2-lite"}; }

ModelConfig model_preset(std::string_view name) {
  if (name == "smollm2-135m") return llama_shape("SmolLM2-135M shape", 30, 576, 9, 3, 1536, 49152, 8192, 100000.0f, 1e-5f, true);
  if (name == "llama2-7b") return llama_shape("Llama-2-7B shape", 32, 4096, 32, 32, 11008, 32000, 4096, 10000.0f, 1e-5f, false);
  if (name == "llama3-8b") return llama_shape("Llama-3-8B shape", 32, 4096, 32, 8, 14336, 128256, 8192, 500000.0f, 1e-5f, false);
  if (name == "deepseek-v2-lite") return deepseek_v2_lite_shape();
  std::string known;
  for (const auto& n : model_preset_names()) known += (known.empty() ? "" : ", ") + n;
  throw InputError("unknown model preset '" + std::string(name) + "' (known: " + known + ")");
}

namespace {
// The home folder: $HOME when it is an absolute path, else the account's entry (as Python's expanduser does when HOME
// is unset); empty when neither says.
std::string home_dir() {
  if (const char* h = std::getenv("HOME"); h && h[0] == '/') return h;
  std::vector<char> buffer(16384);
  passwd entry {};
  passwd* found = nullptr;
  if (::getpwuid_r(::getuid(), &entry, buffer.data(), buffer.size(), &found) == 0 && found && found->pw_dir &&
      found->pw_dir[0] == '/')
    return found->pw_dir;
  return {};
}
}  // namespace

std::string cache_dir() {
  if (const char* d = std::getenv("CF_CACHE_DIR"); d && *d) return d;
  // The XDG specification says to ignore a relative XDG_CACHE_HOME.
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && x[0] == '/') return std::string(x) + "/clusterfusion";
  const std::string home = home_dir();
  return home.empty() ? std::string() : home + "/.cache/clusterfusion";
}

std::string default_model_path() {
  const std::string dir = cache_dir();
  return dir.empty() ? std::string() : dir + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

std::string require_default_model(std::string_view how_to_choose) {
  const std::string path = default_model_path();
  const std::string prefix = "no model given (" + std::string(how_to_choose) + ") and ";
  if (path.empty())
    throw InputError(prefix + "no folder for the default model: HOME is not set and the account has no home folder "
                              "(set CF_CACHE_DIR)");
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) return path;
  const int err = errno;
  if (err == ENOENT) throw InputError(prefix + "the default model is missing at " + path + ": run scripts/setup.sh to download it");
  if (err == ENOTDIR) throw InputError(path + ": a part of the path before the last name is a file, not a folder");
  throw InputError(path + ": " + std::strerror(err));
}

}  // namespace cf
