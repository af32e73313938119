// Options and model loading shared by the CLI's commands (generate, chat, serve): the model and backend flags, the
// sampling flags and their defaults, and load(), which opens the model and builds a Runner with a progress line.
#pragma once
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "args.hpp"
#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/chat_template.hpp"
#include "clusterfusion/runtime/model.hpp"
#include "clusterfusion/runtime/runner.hpp"
#include "clusterfusion/runtime/session.hpp"

namespace cf::cli {

constexpr int kMaxThreads = 256;
constexpr int kMaxContext = 1 << 20;

// ---- defaults and shared options --------------------------------------------------------------------------------

struct CommonOptions {
  std::optional<std::string> model;
  std::string backend = "auto";
  int threads = 0;
  int context = 0;
  bool quiet = false;

  void add_to(ArgParser& p) {
    p.section("model and backend");
    p.option("model", 'm', "PATH", "model file (.gguf) or safetensors folder [default: " + default_model_path() + "]",
             &model);
    std::string names;
    for (const auto& b : backend_list()) names += (names.empty() ? "" : ", ") + b.name + (b.built ? "" : " (not built)");
    p.option("backend", 0, "NAME", "compute backend: " + names + "; auto = cuda when a usable GPU is present, else cpu [auto]",
             &backend);
    p.option("threads", 't', "N", "worker threads [all cores]", &threads, 0, kMaxThreads);
    p.option("ctx", 'c', "N", "context length in tokens [the model's]", &context, 0, kMaxContext);
    p.flag("quiet", 'q', "no progress bar or summary on stderr", &quiet);
  }

  std::string model_path() const {
    if (model) return *model;
    const std::string path = default_model_path();
    if (!std::filesystem::exists(path))
      throw InputError("no model given (-m PATH) and the default model is missing at " + path +
                       ": run scripts/setup.sh to download it");
    return path;
  }

  // Resolves "auto" and checks the backend can run here (before the model is loaded).
  std::string resolved_backend() const {
    if (backend == "auto") return default_backend_name();
    for (const auto& b : backend_list()) {
      if (b.name != backend) continue;
      const std::string why = backend_unavailable_reason(backend);
      if (!why.empty()) throw UsageError("--backend " + backend + ": " + why);
      return backend;
    }
    std::string names;
    for (const auto& b : backend_list()) names += b.name + ", ";
    throw UsageError("--backend: unknown backend '" + backend + "' (expected one of " + names + "auto)");
  }
};

struct SamplingOptions {
  int max_new_tokens = 256;
  SamplerConfig sampler;
  std::optional<std::string> system;
  std::optional<std::string> template_name;

  SamplingOptions() {
    // SmolLM2's recommended settings (low temperature, nucleus 0.9), a light repetition penalty; seed 0 so that a
    // command run twice prints the same text.
    sampler.temperature = 0.2f;
    sampler.top_p = 0.9f;
    sampler.min_p = 0.05f;
    sampler.repeat_penalty = 1.1f;
    sampler.repeat_window = 64;
    sampler.seed = 0;
  }

  void add_to(ArgParser& p, bool with_max_tokens = true) {
    p.section("generation");
    if (with_max_tokens) p.option("max-tokens", 'n', "N", "tokens to generate at most [256]", &max_new_tokens, 0, kMaxContext);
    p.option("temp", 0, "T", "temperature; 0 = greedy [0.2]", &sampler.temperature);
    p.option("top-k", 0, "K", "sample from the K most likely tokens; 0 = off [0]", &sampler.top_k, 0, 1 << 24);
    p.option("top-p", 0, "P", "nucleus sampling: smallest set with probability P; 1 = off [0.9]", &sampler.top_p);
    p.option("min-p", 0, "P", "drop tokens below P x the most likely one's probability; 0 = off [0.05]", &sampler.min_p);
    p.option("repeat-penalty", 0, "R", "penalise tokens seen in the last --repeat-window tokens; 1 = off [1.1]",
             &sampler.repeat_penalty);
    p.option("repeat-window", 0, "N", "tokens the repetition penalty looks back over [64]", &sampler.repeat_window, 0,
             kMaxContext);
    p.option("seed", 0, "S", "random seed [0]", &sampler.seed);
    p.section("chat format");
    p.option("system", 0, "TEXT", "system prompt (\"\" for none) [the template's default]", &system);
    p.option("template", 0, "NAME", "chat template: chatml, llama2, llama3, none [from the model]", &template_name);
  }

  GenerationOptions generation() const {
    try {
      sampler.validate();
    } catch (const InputError& e) {
      throw UsageError(e.what());
    }
    return {max_new_tokens, sampler};
  }

  ChatTemplate chat_template(const std::optional<std::string>& model_template) const {
    if (!template_name) return ChatTemplate::detect(model_template);
    try {
      ChatTemplate t = ChatTemplate::by_name(*template_name);
      // Keep the model's default system prompt when the override is the model's own family.
      const ChatTemplate detected = ChatTemplate::detect(model_template);
      if (detected.format() == t.format()) t.set_default_system(detected.default_system());
      return t;
    } catch (const InputError& e) {
      throw UsageError(e.what());
    }
  }
};

struct LoadedRunner {
  LoadedModel model;
  std::unique_ptr<Runner> runner;
};

// Loads the model and builds a Runner on the chosen backend with max_seqs sequences of the chosen context (the KV
// pool holds all of them); prints one line (or a progress bar on a terminal) to stderr unless --quiet.
LoadedRunner load(const CommonOptions& common, int max_seqs = 1);

}  // namespace cf::cli
