// The engine behind clusterfusion.Model: load_model + create_backend + Runner + Generator, as the CLI's `generate`
// does it (same chat template handling, same sampler), so the same settings give the same text. Generation is pulled
// a token at a time (start / step / finish), so no thread runs behind a Python iterator.
#include "engine.hpp"

#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/chat_template.hpp"
#include "clusterfusion/runtime/model.hpp"
#include "clusterfusion/runtime/runner.hpp"
#include "clusterfusion/runtime/session.hpp"

namespace cf::py {
namespace {

constexpr int kMaxThreads = 256;

const char* rope_style_name(RopeStyle s) { return s == RopeStyle::NeoX ? "neox" : "gptj"; }

class EngineModel {
 public:
  EngineModel(const std::optional<std::string>& path, const std::string& backend, int context, int threads,
              const std::string& cpu_arithmetic) {
    CF_CHECK_INPUT(threads >= 0 && threads <= kMaxThreads,
                   "threads: " + std::to_string(threads) + " outside [0, " + std::to_string(kMaxThreads) + "]");
    CF_CHECK_INPUT(context >= 0, "context: must be >= 0 (0 = the model's context length)");
    const std::optional<CpuArithmetic> arithmetic = cpu_arithmetic_from_name(cpu_arithmetic);
    CF_CHECK_INPUT(arithmetic.has_value(), "cpu_arithmetic: '" + cpu_arithmetic + "' (expected f32, int16 or int8)");
    const std::string file = path ? *path : require_default_model("Model(path)");
    OpenModelOptions options;  // as the CLI
    options.backend = backend;
    options.backend_options.threads = threads;
    options.backend_options.cpu_arithmetic = *arithmetic;
    options.context = context;
    OpenedModel opened = open_model(file, options);
    model_ = std::move(opened.model);
    context_ = opened.context;
    runner_ = std::move(opened.runner);
    backend_name_ = backend;
    generator_ = std::make_unique<Generator>(*runner_, model_.tokenizer);
    template_ = ChatTemplate::detect(model_.chat_template);
  }

  nb::dict config() const {
    const ModelConfig& c = model_.weights->config;
    nb::dict d;
    d["path"] = model_.path;
    d["format"] = model_.format;
    d["backend"] = backend_name_;
    d["context"] = context_;
    d["arch"] = c.arch;
    d["name"] = c.name;
    d["n_layers"] = c.n_layers;
    d["hidden"] = c.hidden;
    d["n_heads"] = c.n_heads;
    d["n_kv_heads"] = c.n_kv_heads;
    d["head_dim"] = c.head_dim;
    d["ffn_hidden"] = c.ffn_hidden;
    d["vocab"] = c.vocab;
    d["max_context"] = c.max_context;
    d["rope_theta"] = c.rope_theta;
    d["rope_dim"] = c.rope_dim > 0 ? c.rope_dim : c.head_dim;
    d["rope_style"] = rope_style_name(c.rope_style);
    d["rms_eps"] = c.rms_eps;
    d["tied_embeddings"] = c.tied_embeddings;
    d["qkv_bias"] = c.qkv_bias;
    d["chat_template"] = template_.name();
    d["bos_id"] = model_.tokenizer->spec().bos;
    d["eos_id"] = model_.tokenizer->spec().eos;
    d["end_of_generation_ids"] = model_.tokenizer->spec().end_of_generation;
    return d;
  }

  std::vector<int32_t> tokenize(const std::string& text, std::optional<bool> add_bos, bool parse_special) const {
    const Tokenizer& tok = *model_.tokenizer;
    return tok.encode(text, add_bos.value_or(tok.spec().add_bos), parse_special);
  }

  std::string detokenize(const std::vector<int32_t>& ids) const { return model_.tokenizer->decode(ids); }

  // Starts a generation (runs the prompt, GIL released); step() then pulls it one token at a time. Nothing runs
  // between calls: a stream the caller leaves suspended, abandons or keeps past the interpreter's exit costs nothing
  // and cannot race with anything (there is no thread). One generation at a time (the Python side enforces it).
  // logprobs >= 0: record each sampled token's log-probability and the logprobs most likely tokens' (finish()).
  void start(const std::string& prompt, int max_new_tokens, float temperature, int top_k, float top_p, float min_p,
             float repeat_penalty, int repeat_window, uint64_t seed, bool chat, const std::optional<std::string>& system,
             int logprobs) {
    GenerationOptions options;
    options.max_new_tokens = max_new_tokens;
    options.sampling.temperature = temperature;
    options.sampling.top_k = top_k;
    options.sampling.top_p = top_p;
    options.sampling.min_p = min_p;
    options.sampling.repeat_penalty = repeat_penalty;
    options.sampling.repeat_window = repeat_window;
    options.sampling.seed = seed;
    options.sampling.validate();
    CF_CHECK_INPUT(max_new_tokens >= 0, "max_new_tokens: must be >= 0");
    CF_CHECK_INPUT(logprobs >= -1 && logprobs <= GenerationOptions::kMaxTopLogprobs,
                   "logprobs: must be in 0.." + std::to_string(GenerationOptions::kMaxTopLogprobs));
    steps_.clear();
    recording_ = logprobs >= 0;
    if (recording_) {
      options.top_logprobs = logprobs;
      options.on_token = [this](const TokenLogprobs& step) { steps_.push_back(step); };
    }
    nb::gil_scoped_release no_gil;
    const std::lock_guard<std::mutex> lock(mutex_);
    generation_.reset();
    std::vector<int32_t> tokens;
    if (!chat || template_.format() == ChatFormat::None) {
      tokens = model_.tokenizer->encode(prompt, model_.tokenizer->spec().add_bos, false);
      CF_CHECK_INPUT(!tokens.empty(), "the prompt encodes to no tokens");
    } else {
      tokens = ChatSession(*generator_, template_, system).prompt_with(prompt);
    }
    generation_ = std::make_unique<Generation>(*generator_, tokens, options);
  }

  // The next piece of text (GIL released while the model runs), or None when the generation is over.
  std::optional<nb::str> step() {
    std::string text;
    bool over = false;
    {
      nb::gil_scoped_release no_gil;
      const std::lock_guard<std::mutex> lock(mutex_);
      CF_CHECK(generation_ != nullptr, "step(): no generation started");
      over = generation_->done();
      if (!over) text = generation_->next();
    }
    if (over) return std::nullopt;
    return nb::steal<nb::str>(PyUnicode_DecodeUTF8(text.data(), Py_ssize_t(text.size()), "replace"));
  }

  // Ends the generation (early: stop reason "stopped") and returns its statistics as a dict.
  nb::dict finish() {
    GenerationStats stats;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (generation_) {
        generation_->stop();
        stats = generation_->stats();
        generation_.reset();
      }
    }
    nb::dict d;
    d["prompt_tokens"] = stats.prompt_tokens;
    d["prompt_seconds"] = stats.prompt_seconds;
    d["generated_tokens"] = stats.generated_tokens;
    d["generate_seconds"] = stats.generate_seconds;
    d["prompt_tokens_per_second"] = stats.prompt_tokens_per_second();
    d["generate_tokens_per_second"] = stats.generate_tokens_per_second();
    d["stop"] = std::string(stop_reason_name(stats.stop));
    d["message"] = stats.message;
    if (recording_) {
      const Tokenizer& tok = *model_.tokenizer;
      auto token = [&](int32_t id, float logprob) {
        const std::string bytes = tok.token_bytes(id);
        nb::dict t;
        t["id"] = id;
        t["token"] = nb::steal<nb::str>(PyUnicode_DecodeUTF8(bytes.data(), Py_ssize_t(bytes.size()), "replace"));
        t["bytes"] = nb::bytes(bytes.data(), bytes.size());
        t["logprob"] = logprob;
        return t;
      };
      nb::list steps;
      for (const TokenLogprobs& step : steps_) {
        nb::dict d_step = token(step.token, step.logprob);
        nb::list top;
        for (const auto& [id, logprob] : step.top) top.append(token(id, logprob));
        d_step["top_logprobs"] = top;
        steps.append(d_step);
      }
      d["logprobs"] = steps;
      recording_ = false;
      steps_.clear();
    }
    return d;
  }

  // The ids of the conversation after generate(): the prompt and the sampled tokens the KV cache holds.
  std::vector<int32_t> history() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return generator_->history();
  }
  void reset() {
    const std::lock_guard<std::mutex> lock(mutex_);
    generation_.reset();
    generator_->reset();
  }

 private:
  LoadedModel model_;
  std::string backend_name_;
  int context_ = 0;
  std::unique_ptr<Runner> runner_;
  std::unique_ptr<Generator> generator_;
  ChatTemplate template_;
  std::unique_ptr<Generation> generation_;  // the one in progress, if any
  bool recording_ = false;                  // logprobs asked for
  std::vector<TokenLogprobs> steps_;
  std::mutex mutex_;                        // step() runs without the GIL: history() and reset() wait for it
};

}  // namespace

void bind_engine(nb::module_& m) {
  nb::class_<EngineModel>(m, "_EngineModel",
                          "The engine behind clusterfusion.Model (load, backend, runner, generator); use Model.")
      .def(nb::init<const std::optional<std::string>&, const std::string&, int, int, const std::string&>(),
           nb::arg("path").none(), nb::arg("backend"), nb::arg("context"), nb::arg("threads"),
           nb::arg("cpu_arithmetic") = cpu_arithmetic_name(kCliCpuArithmetic),
           nb::call_guard<nb::gil_scoped_release>())
      .def("config", &EngineModel::config)
      .def("tokenize", &EngineModel::tokenize, nb::arg("text"), nb::arg("add_bos").none(), nb::arg("parse_special"))
      .def("detokenize", &EngineModel::detokenize, nb::arg("ids"))
      .def("start", &EngineModel::start, nb::arg("prompt"), nb::arg("max_new_tokens"), nb::arg("temperature"),
           nb::arg("top_k"), nb::arg("top_p"), nb::arg("min_p"), nb::arg("repeat_penalty"), nb::arg("repeat_window"),
           nb::arg("seed"), nb::arg("chat"), nb::arg("system").none(), nb::arg("logprobs"))
      .def("step", &EngineModel::step)
      .def("finish", &EngineModel::finish)
      .def("history", &EngineModel::history)
      .def("reset", &EngineModel::reset);

  m.def("backend_list", [] {
    nb::list out;
    for (const BackendInfo& b : backend_list()) {
      nb::dict d;
      d["name"] = b.name;
      d["built"] = b.built;
      d["description"] = b.description;
      out.append(d);
    }
    return out;
  }, "The engine's backends: [{'name', 'built', 'description'}] ('built': compiled into this build).");
  m.def("_check_generation_options",
        [](int max_new_tokens, float temperature, int top_k, float top_p, float min_p, float repeat_penalty,
           int repeat_window) {
          CF_CHECK_INPUT(max_new_tokens >= 0, "max_new_tokens: must be >= 0");
          SamplerConfig c;
          c.temperature = temperature;
          c.top_k = top_k;
          c.top_p = top_p;
          c.min_p = min_p;
          c.repeat_penalty = repeat_penalty;
          c.repeat_window = repeat_window;
          try {
            c.validate();
          } catch (const InputError& e) {
            // The sampler names the CLI's flags; say the Python keyword instead.
            static const std::pair<const char*, const char*> names[] = {
                {"--temp", "temperature"}, {"--top-k", "top_k"}, {"--top-p", "top_p"}, {"--min-p", "min_p"},
                {"--repeat-penalty", "repeat_penalty"}, {"--repeat-window", "repeat_window"}};
            std::string message = e.what();
            for (const auto& [flag, keyword] : names)
              if (message.rfind(std::string(flag) + ":", 0) == 0) message = keyword + message.substr(std::strlen(flag));
            throw InputError(message);
          }
        },
        nb::arg("max_new_tokens"), nb::arg("temperature"), nb::arg("top_k"), nb::arg("top_p"), nb::arg("min_p"),
        nb::arg("repeat_penalty"), nb::arg("repeat_window"),
        "Raises ValueError naming the first generation option out of range.");
  m.def("default_model_path", &default_model_path,
        "Where the default model is looked for: $CF_CACHE_DIR, $XDG_CACHE_HOME/clusterfusion or "
        "~/.cache/clusterfusion, then models/SmolLM2-135M-Instruct.Q4_1.gguf.");
}

}  // namespace cf::py
