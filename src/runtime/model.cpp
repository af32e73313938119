#include "clusterfusion/runtime/model.hpp"

#include <cstdlib>

#include "clusterfusion/engine/model_file.hpp"

namespace cf {

LoadedModel load_model(const std::string& path, const WeightLoadOptions& options, const LoadProgress& progress) {
  auto file = open_model_file(path);
  LoadedModel m;
  m.path = path;
  m.format = file->format();
  m.tokenizer = Tokenizer::create(file->tokenizer_spec());
  m.chat_template = file->chat_template();
  m.weights = std::make_shared<const ModelWeights>(ModelWeights::load(*file, options, progress));
  return m;
}

std::string cache_dir() {
  if (const char* d = std::getenv("CF_CACHE_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/clusterfusion";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.cache/clusterfusion";
}

std::string default_model_path() { return cache_dir() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"; }

}  // namespace cf
