// clusterfusion: the command-line front end (generate, chat, info). Errors are one line on stderr; exit code 2 for
// a bad command line, 1 for anything else that went wrong.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "args.hpp"
#include "clusterfusion/common/json.hpp"
#include "clusterfusion/engine/model_file.hpp"
#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/chat_template.hpp"
#include "clusterfusion/runtime/model.hpp"
#include "clusterfusion/runtime/runner.hpp"
#include "clusterfusion/runtime/session.hpp"
#include "clusterfusion/runtime/weights.hpp"

namespace cf::cli {

namespace {

constexpr int kMaxThreads = 256;
constexpr int kMaxContext = 1 << 20;

// ---- defaults and shared options --------------------------------------------------------------------------------

struct CommonOptions {
  std::optional<std::string> model;
  std::string backend = "auto";
  int threads = 0;
  int context = 0;
  bool quiet = false;
  std::string cpu_arithmetic = "f32", kv_type = "f32", cpu_isa = "auto";

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
    p.section("cpu backend");
    p.option("cpu-arithmetic", 0, "f32|int8",
             "activations in the products with quantised weights: f32 (agrees with fp32 references) or int8 (blocks "
             "of 32 as llama.cpp: faster prompts, logits within ~1 of f32 on 4-bit models) [f32]",
             &cpu_arithmetic);
    p.option("kv-type", 0, "f32|f16", "KV cache elements (f16: half the memory) [f32]", &kv_type);
    p.option("cpu-isa", 0, "NAME", "kernel instruction set: auto, avx512, avx2, portable (same results) [auto]",
             &cpu_isa);
  }

  // The cpu backend's settings of BackendOptions, checked.
  void apply_cpu_options(BackendOptions& o) const {
    if (cpu_arithmetic != "f32" && cpu_arithmetic != "int8")
      throw UsageError("--cpu-arithmetic: '" + cpu_arithmetic + "' (expected f32 or int8)");
    if (kv_type != "f32" && kv_type != "f16") throw UsageError("--kv-type: '" + kv_type + "' (expected f32 or f16)");
    o.cpu_arithmetic = cpu_arithmetic == "int8" ? CpuArithmetic::Int8 : CpuArithmetic::F32;
    o.cpu_kv_type = kv_type == "f16" ? DType::F16 : DType::F32;
    o.cpu_isa = cpu_isa;
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

// ---- loading ------------------------------------------------------------------------------------------------------

// A progress bar on stderr when it is a terminal; otherwise one line when done.
class Progress {
 public:
  Progress(std::string what, bool quiet) : what_(std::move(what)), quiet_(quiet), tty_(isatty(2) == 1) {}
  void update(size_t done, size_t total) {
    if (quiet_ || !tty_ || total == 0) return;
    const int percent = int(100.0 * double(done) / double(total));
    if (percent == last_percent_) return;
    last_percent_ = percent;
    constexpr int kWidth = 30;
    const int filled = percent * kWidth / 100;
    std::fprintf(stderr, "\r%s [%s%s] %3d%% %.0f/%.0f MB", what_.c_str(), std::string(size_t(filled), '#').c_str(),
                 std::string(size_t(kWidth - filled), ' ').c_str(), percent, double(done) / 1e6, double(total) / 1e6);
    std::fflush(stderr);
  }
  void done(const std::string& summary) {
    if (quiet_) return;
    if (tty_ && last_percent_ >= 0) std::fprintf(stderr, "\r\033[K");
    std::fprintf(stderr, "%s\n", summary.c_str());
  }

 private:
  std::string what_;
  bool quiet_, tty_;
  int last_percent_ = -1;
};

struct LoadedRunner {
  LoadedModel model;
  std::unique_ptr<Runner> runner;
};

LoadedRunner load(const CommonOptions& common) {
  BackendOptions options;
  common.apply_cpu_options(options);  // bad values are refused before the model is loaded
  const std::string backend = common.resolved_backend();
  const auto start = std::chrono::steady_clock::now();
  const std::string path = common.model_path();
  Progress progress("loading " + std::filesystem::path(path).filename().string(), common.quiet);
  LoadedRunner m;
  // k-quants to F16 for the device backends; weights repacked while loading for the cpu backend.
  const WeightLoadOptions load_options = weight_load_options(backend);
  m.model = load_model(path, load_options, [&](size_t done, size_t total) { progress.update(done, total); });
  const auto& weights = m.model.weights;
  const ModelConfig& c = weights->config;
  const int context = common.context > 0 ? std::min(common.context, c.max_context) : c.max_context;
  options.threads = common.threads;
  options.max_seqs = 1;
  options.kv_pages = (context + options.page_size - 1) / options.page_size;
  const double mb = double(weights->matrix_bytes()) / 1e6;
  m.runner = std::make_unique<Runner>(create_backend(backend, weights, options), 1, context);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  char line[512];
  const bool threaded = backend == "cpu";  // emu runs every device thread as a fiber of one host thread
  const std::string threads =
      threaded ? ", " + std::to_string(common.threads > 0 ? common.threads
                                                        : int(std::max(1u, std::thread::hardware_concurrency()))) +
                   " thread(s)"
               : std::string();
  std::snprintf(line, sizeof line, "loaded %s (%s, %d layers, %.0f MB of weights) in %.2f s; backend %s%s, context %d",
                path.c_str(), c.name.empty() ? c.arch.c_str() : c.name.c_str(), c.n_layers, mb, seconds,
                backend.c_str(), threads.c_str(), context);
  progress.done(line);
  if (backend == "emu" && mb > 10.0 && !common.quiet)
    std::fprintf(stderr,
                 "note: --backend emu runs the GPU kernels on the CPU emulator, seconds per token for a model this "
                 "size (it checks the kernels; --backend cpu is the fast CPU path)\n");
  return m;
}

void print_stats(const GenerationStats& s, bool quiet) {
  if (!quiet)
    std::fprintf(stderr, "[prompt: %d tokens, %.1f tok/s | generated: %d tokens, %.1f tok/s | stop: %s]\n",
                 s.prompt_tokens, s.prompt_tokens_per_second(), s.generated_tokens, s.generate_tokens_per_second(),
                 std::string(stop_reason_name(s.stop)).c_str());
  // Not a summary but a problem (a chat turn that did not fit): reported even with -q.
  if (s.stop == StopReason::ContextFull) std::fprintf(stderr, "clusterfusion: %s\n", s.message.c_str());
}

bool print_text(std::string_view text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
  return true;
}

// ---- commands -----------------------------------------------------------------------------------------------------

int cmd_generate(const std::vector<std::string>& args) {
  CommonOptions common;
  SamplingOptions sampling;
  std::optional<std::string> prompt;
  bool raw = false;
  ArgParser p("clusterfusion generate -p TEXT [options]",
              "Generates a reply to TEXT (as one user turn of the model's chat template, or as plain text with --raw)\n"
              "and streams it to stdout; a summary with tokens/s goes to stderr.");
  p.option("prompt", 'p', "TEXT", "the prompt (required)", &prompt);
  p.flag("raw", 0, "no chat template: continue TEXT as plain text", &raw);
  sampling.add_to(p);
  common.add_to(p);
  if (!p.parse(args)) {
    std::cout << p.help();
    return 0;
  }
  if (!prompt) throw UsageError("generate: missing -p TEXT (see --help)");
  const GenerationOptions options = sampling.generation();
  ChatTemplate chat_template = sampling.chat_template(std::nullopt);  // validates --template before loading
  LoadedRunner m = load(common);
  chat_template = sampling.chat_template(m.model.chat_template);
  Generator generator(*m.runner, m.model.tokenizer);
  GenerationStats stats;
  if (raw || chat_template.format() == ChatFormat::None) {
    if (!raw && !common.quiet) std::fprintf(stderr, "(the model has no known chat template: continuing the text as is)\n");
    const auto tokens = m.model.tokenizer->encode(*prompt, m.model.tokenizer->spec().add_bos, /*parse_special=*/false);
    if (tokens.empty()) throw InputError("the prompt encodes to no tokens");
    stats = generator.generate(tokens, options, print_text);
  } else {
    ChatSession chat(generator, chat_template, sampling.system);
    stats = chat.send(*prompt, options, print_text);
  }
  // A prompt that does not fit the context is an input error (one line, exit 1), not a finished generation.
  if (stats.stop == StopReason::ContextFull && stats.generated_tokens == 0) throw InputError(stats.message);
  std::fputs("\n", stdout);
  std::fflush(stdout);
  print_stats(stats, common.quiet);
  return 0;
}

int cmd_chat(const std::vector<std::string>& args) {
  CommonOptions common;
  SamplingOptions sampling;
  ArgParser p("clusterfusion chat [options]",
              "Interactive chat with history. Each line on stdin is a user turn (works with piped input);\n"
              "/reset starts over, /exit or end of input quits. Replies stream to stdout, summaries to stderr.");
  sampling.add_to(p);
  common.add_to(p);
  if (!p.parse(args)) {
    std::cout << p.help();
    return 0;
  }
  const GenerationOptions options = sampling.generation();
  (void)sampling.chat_template(std::nullopt);
  LoadedRunner m = load(common);
  const ChatTemplate chat_template = sampling.chat_template(m.model.chat_template);
  if (chat_template.format() == ChatFormat::None && !common.quiet)
    std::fprintf(stderr, "(the model has no known chat template: turns are joined as plain text; see --template)\n");
  Generator generator(*m.runner, m.model.tokenizer);
  auto chat = std::make_unique<ChatSession>(generator, chat_template, sampling.system);
  const bool interactive = isatty(0) == 1;
  std::string line;
  while (true) {
    if (interactive) {
      std::fputs("> ", stdout);
      std::fflush(stdout);
    }
    if (!std::getline(std::cin, line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      generator.reset();
      chat = std::make_unique<ChatSession>(generator, chat_template, sampling.system);
      if (interactive) std::fputs("(history cleared)\n", stdout);
      continue;
    }
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const GenerationStats stats = chat->send(line, options, print_text);
    std::fputs("\n", stdout);
    std::fflush(stdout);
    print_stats(stats, common.quiet);
  }
  if (interactive) std::fputs("\n", stdout);
  return 0;
}

std::string human_bytes(double b) {
  char s[32];
  if (b >= 1e9) std::snprintf(s, sizeof s, "%.2f GB", b / 1e9);
  else if (b >= 1e6) std::snprintf(s, sizeof s, "%.1f MB", b / 1e6);
  else if (b >= 1e3) std::snprintf(s, sizeof s, "%.1f kB", b / 1e3);
  else std::snprintf(s, sizeof s, "%.0f B", b);
  return s;
}

int cmd_info(const std::vector<std::string>& args) {
  CommonOptions common;
  std::optional<std::string> positional_model;
  ArgParser p("clusterfusion info [MODEL]", "Prints a model file's configuration, tokenizer, chat template and tensor table.");
  p.positional("MODEL", "model file (.gguf) or safetensors folder [the default model]", &positional_model);
  p.option("model", 'm', "PATH", "same as MODEL", &common.model);
  if (!p.parse(args)) {
    std::cout << p.help();
    return 0;
  }
  if (positional_model) common.model = positional_model;
  const std::string path = common.model_path();
  const auto file = open_model_file(path);
  std::printf("file: %s (%s)\n", path.c_str(), file->format().c_str());
  std::printf("%s", file->config().summary().c_str());
  if (!file->config().summary().empty() && file->config().summary().back() != '\n') std::printf("\n");
  // The tokenizer's own spec: creating it also completes the end-of-generation list.
  const auto tokenizer = Tokenizer::create(file->tokenizer_spec());
  const TokenizerSpec& tok = tokenizer->spec();
  std::printf("tokenizer: %s%s%s, %zu tokens, %zu merges, bos %d, eos %d, end of generation:",
              tok.kind == TokenizerSpec::Kind::ByteLevelBPE ? "byte-level BPE" : "SentencePiece",
              tok.pre.empty() ? "" : " (pre-tokenizer ", tok.pre.empty() ? "" : (tok.pre + ")").c_str(), tok.tokens.size(),
              tok.merges.size(), tok.bos, tok.eos);
  for (int32_t id : tok.end_of_generation)
    std::printf(" %d%s", id, id >= 0 && size_t(id) < tok.tokens.size() ? (" " + tok.tokens[size_t(id)]).c_str() : "");
  std::printf("\n");
  const ChatTemplate t = ChatTemplate::detect(file->chat_template());
  std::printf("chat template: %s", t.name().c_str());
  if (t.default_system()) std::printf(" (default system prompt: \"%s\")", t.default_system()->c_str());
  std::printf("\n");
  const auto& tensors = file->tensors();
  size_t total = 0, name_width = 4;
  for (const auto& x : tensors) {
    total += x.nbytes;
    name_width = std::max(name_width, x.name.size());
  }
  std::printf("tensors: %zu, %s\n", tensors.size(), human_bytes(double(total)).c_str());
  std::printf("  %-*s  %-5s  %-16s  %s\n", int(name_width), "name", "type", "shape", "size");
  for (const auto& x : tensors)
    std::printf("  %-*s  %-5s  %-16s  %s\n", int(name_width), x.name.c_str(), std::string(dtype_name(x.dtype)).c_str(),
                x.shape_string().c_str(), human_bytes(double(x.nbytes)).c_str());
  return 0;
}

std::string top_help() {
  std::string backends;
  for (const auto& b : backend_list())
    backends += "  " + b.name + std::string(14 - std::min<size_t>(13, b.name.size()), ' ') + b.description +
                (b.built ? "" : " (not in this build)") + "\n";
  return "usage: clusterfusion COMMAND [options]\n"
         "\n"
         "LLM decoding with fused Hopper cluster kernels (cuda), a cuBLAS baseline (cuda-unfused), their CPU emulation\n"
         "(emu) and a CPU reference (cpu).\n"
         "\n"
         "commands:\n"
         "  generate      generate a reply to one prompt (-p TEXT), streamed to stdout\n"
         "  chat          interactive chat with history (one user turn per stdin line)\n"
         "  info [MODEL]  show a model's configuration, tokenizer and tensors\n"
         "\n"
         "backends (--backend NAME):\n" +
         backends +
         "\n"
         "The default model is " + default_model_path() + "\n"
         "(scripts/setup.sh downloads it; -m PATH picks another). 'clusterfusion COMMAND --help' for options.\n";
}

}  // namespace

int run(const std::vector<std::string>& args) {
  if (args.empty()) {
    std::fputs(top_help().c_str(), stderr);
    throw UsageError("missing command (generate, chat or info)");
  }
  // Options given before the command are passed on to it (e.g. clusterfusion -m model.gguf generate -p hi).
  size_t command_at = 0;
  while (command_at < args.size() && args[command_at].size() > 1 && args[command_at][0] == '-') {
    if (args[command_at] == "--help" || args[command_at] == "-h") {
      std::fputs(top_help().c_str(), stdout);
      return 0;
    }
    if (args[command_at] == "--version") {
      std::puts("clusterfusion 0.1.0");
      return 0;
    }
    const bool has_value = args[command_at].find('=') == std::string::npos && args[command_at] != "-q" &&
                           args[command_at] != "--quiet";
    command_at += has_value ? 2 : 1;
  }
  if (command_at >= args.size()) throw UsageError("missing command (generate, chat or info)");
  const std::string command = args[command_at];
  std::vector<std::string> rest(args.begin() + long(command_at) + 1, args.end());
  rest.insert(rest.begin(), args.begin(), args.begin() + long(command_at));
  if (command == "generate") return cmd_generate(rest);
  if (command == "chat") return cmd_chat(rest);
  if (command == "info") return cmd_info(rest);
  if (command == "help") {
    std::fputs(top_help().c_str(), stdout);
    return 0;
  }
  throw UsageError("unknown command '" + command + "' (expected generate, chat or info)");
}

}  // namespace cf::cli

namespace {
// Error messages echo arguments and paths as given; the line printed stays one line of valid UTF-8 without control
// characters (a newline or an escape sequence in an argument is shown as \xNN, as are bytes of invalid UTF-8).
std::string one_line(std::string_view message) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < message.size();) {
    const auto c = static_cast<unsigned char>(message[i]);
    size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    if (len > 1 && (i + len > message.size() || !cf::json::is_valid_utf8(message.substr(i, len)))) len = 0;
    if (len == 0 || c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
      ++i;
    } else {
      out.append(message.substr(i, len));
      i += len;
    }
  }
  return out;
}
}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    return cf::cli::run(args);
  } catch (const cf::cli::UsageError& e) {
    std::fprintf(stderr, "clusterfusion: %s\n", one_line(e.what()).c_str());
    return 2;
  } catch (const cf::Error& e) {
    std::fprintf(stderr, "clusterfusion: error: %s\n", one_line(e.what()).c_str());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "clusterfusion: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "clusterfusion: internal error: %s\n", one_line(e.what()).c_str());
    return 1;
  }
}
