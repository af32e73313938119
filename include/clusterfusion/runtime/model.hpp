// Loading a model for inference in one call: file -> weights (copied into memory) + tokenizer + chat template, and
// where the default model lives. Used by the CLI, the golden-data tests and benchmarks:
//   auto model = cf::load_model(cf::default_model_path());
//   cf::Runner runner(cf::create_backend("cpu", model.weights, {}), 1, 2048);
//   auto logits = cf::teacher_forced_logits(runner, model.tokenizer->encode(text, false, true));
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "clusterfusion/tokenizer/tokenizer.hpp"
#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/runner.hpp"
#include "clusterfusion/runtime/weights.hpp"

namespace cf {

struct LoadedModel {
  std::string path;
  std::string format;  // "gguf", "safetensors"
  std::shared_ptr<const ModelWeights> weights;
  std::shared_ptr<const Tokenizer> tokenizer;
  std::optional<std::string> chat_template;  // the file's Jinja template, if any
};

// Opens the file, builds the tokenizer and copies the weights (progress reported while copying). The file is closed
// again before returning. Errors are cf::InputError naming the file.
LoadedModel load_model(const std::string& path, const WeightLoadOptions& options = {},
                       const LoadProgress& progress = {});

// How open_model() sets up a model for decoding.
struct OpenModelOptions {
  std::string backend = "cpu";  // a name create_backend() knows ("auto" resolved by the caller)
  // threads and the cpu backend's options; max_seqs and kv_pages are set by open_model from the two fields below
  BackendOptions backend_options;
  int context = 0;   // positions per sequence; 0 or more than the model's: the model's context length
  int max_seqs = 1;  // sequences decoded in lockstep (serve's batch); the KV pool holds all of them at full context
  LoadProgress progress;
};

struct OpenedModel {
  LoadedModel model;
  int context = 0;  // the context in use
  std::unique_ptr<Runner> runner;
};

// The one way from a path to a runner, used by the CLI (generate, chat, serve) and Python's Model: load_model with
// the backend's weight_load_options, the context clamped to the model's, a KV pool for max_seqs sequences, the
// backend and its Runner. Errors are cf::InputError naming the file or the backend's problem. Defined in
// src/backends (it creates a backend).
OpenedModel open_model(const std::string& path, const OpenModelOptions& options);

// Shapes of known models, for random-weight tests and benchmarks (ModelWeights::random(model_preset(name), seed)):
// "smollm2-135m", "llama2-7b", "llama3-8b". RoPE pairing as in their GGUF files (GPT-J). cf::InputError for an
// unknown name, listing the known ones.
ModelConfig model_preset(std::string_view name);
std::vector<std::string> model_preset_names();

// The cache folder: $CF_CACHE_DIR, else $XDG_CACHE_HOME/clusterfusion (when absolute), else
// ~/.cache/clusterfusion with ~ from $HOME (when absolute) or the account's home folder; empty when none is known.
std::string cache_dir();
// <cache_dir>/models/SmolLM2-135M-Instruct.Q4_1.gguf (scripts/setup.sh puts it there); empty without a cache folder.
std::string default_model_path();
// default_model_path() when something is there; else cf::InputError saying why: missing (run scripts/setup.sh), no
// cache folder, or the path cannot be examined (a loop of symbolic links, a file where a folder should be ...).
// how_to_choose names the caller's way of giving a model ("-m PATH").
std::string require_default_model(std::string_view how_to_choose);

}  // namespace cf
