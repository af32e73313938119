// clusterfusion: the command-line front end (generate, chat, info, tokenize). Errors are one line on stderr; exit
// code 2 for a bad command line, 1 for anything else that went wrong (including output that could not be written).
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "args.hpp"
#include "serve.hpp"
#include "clusterfusion/common/json.hpp"
#include "clusterfusion/common/text.hpp"
#include "clusterfusion/formats/model_file.hpp"
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

std::string default_model_text() {
  const std::string path = default_model_path();
  return path.empty() ? "none: HOME is not set (set CF_CACHE_DIR)" : path;
}

struct CommonOptions {
  std::optional<std::string> model;
  std::string backend = "auto";
  int threads = 0;
  int context = 0;
  bool quiet = false;
  std::string cpu_arithmetic = cpu_arithmetic_name(kCliCpuArithmetic), kv_type = "f32", cpu_isa = "auto";

  void add_to(ArgParser& p) {
    p.section("model and backend");
    p.option("model", 'm', "PATH", "model file (.gguf) or safetensors folder [default: " + default_model_text() + "]",
             &model);
    std::string names;
    for (const auto& b : backend_list()) names += (names.empty() ? "" : ", ") + b.name + (b.built ? "" : " (not built)");
    p.option("backend", 0, "NAME", "compute backend: " + names + "; auto = cuda when a usable GPU is present, else cpu [auto]",
             &backend);
    p.option("threads", 't', "N", "worker threads [all cores]", &threads, 0, kMaxThreads);
    p.option("ctx", 'c', "N", "context length in tokens [the model's]", &context, 0, kMaxContext);
    p.flag("quiet", 'q', "no progress bar or summary on stderr", &quiet);
    p.section("cpu backend");
    p.option("cpu-arithmetic", 0, "f32|int16|int8",
             "activations in the products with quantised weights, rounded per block of 32: int16 (exact integer "
             "products, logits within ~1e-2 of f32, ~1.5x f32 on prompts), f32 (not rounded: agrees with fp32 "
             "references) or int8 (as llama.cpp: faster still, logits within ~1.5 of f32 on 4-bit models) [" +
                 std::string(cpu_arithmetic_name(kCliCpuArithmetic)) + "]",
             &cpu_arithmetic);
    p.option("kv-type", 0, "f32|f16", "KV cache elements (f16: half the memory) [f32]", &kv_type);
    p.option("cpu-isa", 0, "NAME", "kernel instruction set: auto, avx512, avx2, portable (same results) [auto]",
             &cpu_isa);
  }

  // The cpu backend's settings of BackendOptions, checked.
  void apply_cpu_options(BackendOptions& o) const {
    const std::optional<CpuArithmetic> arithmetic = cpu_arithmetic_from_name(cpu_arithmetic);
    if (!arithmetic) throw UsageError("--cpu-arithmetic: '" + cpu_arithmetic + "' (expected f32, int16 or int8)");
    if (kv_type != "f32" && kv_type != "f16") throw UsageError("--kv-type: '" + kv_type + "' (expected f32 or f16)");
    o.cpu_arithmetic = *arithmetic;
    o.cpu_kv_type = kv_type == "f16" ? DType::F16 : DType::F32;
    o.cpu_isa = cpu_isa;
  }

  std::string model_path() const { return model ? *model : require_default_model("-m PATH"); }

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
    // SmolLM2's recommended settings (low temperature, nucleus 0.9); no repetition penalty, as llama.cpp, so that
    // --temp 0 is plain greedy decoding and gives every engine's greedy text; seed 0 so that a command run twice
    // prints the same text.
    sampler.temperature = 0.2f;
    sampler.top_p = 0.9f;
    sampler.min_p = 0.05f;
    sampler.repeat_penalty = 1.0f;
    sampler.repeat_window = 64;
    sampler.seed = 0;
  }

  void add_to(ArgParser& p, bool with_max_tokens = true) {
    p.section("generation");
    if (with_max_tokens) p.option("max-tokens", 'n', "N", "tokens to generate at most [256]", &max_new_tokens, 0, kMaxContext);
    p.option("temp", 0, "T", "temperature; 0 = greedy (the most likely token each step) [0.2]", &sampler.temperature);
    p.option("top-k", 0, "K", "sample from the K most likely tokens; 0 = off [0]", &sampler.top_k, 0, 1 << 24);
    p.option("top-p", 0, "P", "nucleus sampling: smallest set with probability P; 1 = off [0.9]", &sampler.top_p);
    p.option("min-p", 0, "P", "drop tokens below P x the most likely one's probability; 0 = off [0.05]", &sampler.min_p);
    p.option("repeat-penalty", 0, "R", "penalise tokens seen in the last --repeat-window tokens, 0.01..100; 1 = off [1]",
             &sampler.repeat_penalty);
    p.option("repeat-window", 0, "N", "tokens the repetition penalty looks back over [64]", &sampler.repeat_window, 0,
             kMaxContext);
    p.option("seed", 0, "S", "random seed [0]", &sampler.seed);
    p.section("chat format");
    p.option("system", 0, "TEXT", "system prompt (\"\" for none) [the template's default]", &system);
    p.option("template", 0, "NAME", "chat template: chatml, llama2, llama3, deepseek2, none [from the model]", &template_name);
  }

  GenerationOptions generation() const {
    try {
      sampler.validate();
    } catch (const InputError& e) {
      throw UsageError(e.what());
    }
    GenerationOptions options;
    options.max_new_tokens = max_new_tokens;
    options.sampling = sampler;
    return options;
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

// max_seqs: sequences decoded in lockstep (serve's batch).
OpenedModel load(const CommonOptions& common, int max_seqs = 1) {
  OpenModelOptions options;
  common.apply_cpu_options(options.backend_options);  // bad values are refused before the model is loaded
  options.backend_options.threads = common.threads;
  options.backend = common.resolved_backend();
  options.context = common.context;
  options.max_seqs = max_seqs;
  const std::string& backend = options.backend;
  const auto start = std::chrono::steady_clock::now();
  const std::string path = common.model_path();
  Progress progress("loading " + terminal_safe(std::filesystem::path(path).filename().string(), 60), common.quiet);
  options.progress = [&](size_t done, size_t total) { progress.update(done, total); };
  OpenedModel m = open_model(path, options);
  const ModelConfig& c = m.model.weights->config;
  const int context = m.context;
  const double mb = double(m.model.weights->matrix_bytes()) / 1e6;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  char line[512];
  const bool threaded = backend == "cpu";  // emu runs every device thread as a fiber of one host thread
  const std::string cpu_settings =
      threaded ? ", " + std::to_string(common.threads > 0 ? common.threads
                                                        : int(std::max(1u, std::thread::hardware_concurrency()))) +
                   " thread(s), " + cpu_arithmetic_name(options.backend_options.cpu_arithmetic) + " arithmetic"
               : std::string();
  std::snprintf(line, sizeof line, "loaded %s (%s, %d layers, %.0f MB of weights) in %.2f s; backend %s%s, context %d",
                terminal_safe(path, 300).c_str(), c.name.empty() ? c.arch.c_str() : c.name.c_str(), c.n_layers, mb,
                seconds, backend.c_str(), cpu_settings.c_str(), context);
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

// stdout, checked: output that cannot be written (a full disk, /dev/full, a closed descriptor) is an error, exit 1,
// not lost text and success.
[[noreturn]] void fail_output(int err) {
  throw Error(std::string("cannot write the output to stdout (") + std::strerror(err) + ")");
}

void write_out(std::string_view text) {
  errno = 0;
  if (!text.empty() && std::fwrite(text.data(), 1, text.size(), stdout) != text.size()) fail_output(errno);
  if (std::fflush(stdout) != 0) fail_output(errno);
}

// Generated text. On a terminal it is shown terminal_safe (with its line breaks): a model's vocabulary can hold
// escape sequences that would move the cursor or write the clipboard. Redirected, it is written as generated.
bool print_text(std::string_view text) {
  static const bool terminal = isatty(1) == 1;
  write_out(terminal ? terminal_safe(text, std::string_view::npos, /*keep_line_breaks=*/true) : std::string(text));
  return true;
}

// A token's bytes as a JSON string (a partial UTF-8 sequence shows as U+FFFD; the exact bytes are given beside it).
std::string json_text(std::string_view bytes) { return json::quote(bytes); }

std::string json_bytes(std::string_view bytes) {
  std::string out = "[";
  for (size_t i = 0; i < bytes.size(); ++i) out += (i ? "," : "") + std::to_string(static_cast<unsigned char>(bytes[i]));
  return out + "]";
}

std::string json_number(double x) {
  if (!std::isfinite(x)) return "null";  // cannot happen: the logits are checked finite
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", x);
  return buf;
}

// --logprobs: one JSON object per generated token on stdout (JSON Lines), the shape of OpenAI's logprobs.
void print_logprobs(const Tokenizer& tok, const TokenLogprobs& step) {
  auto token = [&](int32_t id, float logprob) {
    const std::string bytes = tok.token_bytes(id);
    return "\"id\":" + std::to_string(id) + ",\"token\":" + json_text(bytes) + ",\"bytes\":" + json_bytes(bytes) +
           ",\"logprob\":" + json_number(logprob);
  };
  std::string line = "{" + token(step.token, step.logprob) + ",\"top_logprobs\":[";
  for (size_t i = 0; i < step.top.size(); ++i)
    line += (i ? ",{" : "{") + token(step.top[i].first, step.top[i].second) + "}";
  write_out(line + "]}\n");
}

// A line of stdin with a cap: a line that never ends (chat < /dev/zero) is an error, not unbounded memory.
constexpr size_t kMaxInputLine = size_t(4) << 20;
bool read_line(std::string& line) {
  line.clear();
  int c;
  while ((c = std::getchar()) != EOF) {
    if (c == '\n') return true;
    if (line.size() == kMaxInputLine)
      throw InputError("stdin: a line longer than " + std::to_string(kMaxInputLine) +
                       " bytes (each line is one chat turn)");
    line += char(c);
  }
  if (std::ferror(stdin)) throw InputError(std::string("stdin: read failed (") + std::strerror(errno) + ")");
  return !line.empty();
}

// ---- commands -----------------------------------------------------------------------------------------------------
// Each command's options live in a struct whose parser() binds them; run() also asks the parsers which options come
// before a command name (clusterfusion -m model.gguf generate -p hi).

// Parses a command's arguments into what the parser binds; false after printing the help when --help was given.
bool parse_or_help(ArgParser parser, const std::vector<std::string>& args) {
  if (parser.parse(args)) return true;
  write_out(parser.help());
  return false;
}

struct GenerateArgs {
  CommonOptions common;
  SamplingOptions sampling;
  std::optional<std::string> prompt;
  bool raw = false;
  int logprobs = -1;

  ArgParser parser() {
    ArgParser p("clusterfusion generate -p TEXT [options]",
                "Generates a reply to TEXT (as one user turn of the model's chat template, or as plain text with --raw)\n"
                "and streams it to stdout; a summary with tokens/s goes to stderr.");
    p.option("prompt", 'p', "TEXT", "the prompt (required)", &prompt);
    p.flag("raw", 0, "no chat template: continue TEXT as plain text", &raw);
    p.option("logprobs", 0, "N", "print a JSON line per token instead of text: its log-probability, the N most likely (0..20)",
             &logprobs, 0, GenerationOptions::kMaxTopLogprobs);
    sampling.add_to(p);
    common.add_to(p);
    return p;
  }
};

int cmd_generate(const std::vector<std::string>& args) {
  GenerateArgs a;
  if (!parse_or_help(a.parser(), args)) return 0;
  if (!a.prompt) throw UsageError("generate: missing -p TEXT (see --help)");
  GenerationOptions options = a.sampling.generation();
  ChatTemplate chat_template = a.sampling.chat_template(std::nullopt);  // validates --template before loading
  OpenedModel m = load(a.common);
  chat_template = a.sampling.chat_template(m.model.chat_template);
  const Tokenizer& tokenizer = *m.model.tokenizer;
  TextCallback on_text = print_text;
  if (a.logprobs >= 0) {
    options.top_logprobs = a.logprobs;
    options.on_token = [&](const TokenLogprobs& step) { print_logprobs(tokenizer, step); };
    on_text = nullptr;
  }
  Generator generator(*m.runner, m.model.tokenizer);
  GenerationStats stats;
  if (a.raw || chat_template.format() == ChatFormat::None) {
    if (!a.raw && !a.common.quiet)
      std::fprintf(stderr, "(the model has no known chat template: continuing the text as is)\n");
    const auto tokens = tokenizer.encode(*a.prompt, tokenizer.spec().add_bos, /*parse_special=*/false);
    if (tokens.empty()) throw InputError("the prompt encodes to no tokens");
    stats = generator.generate(tokens, options, on_text);
  } else {
    ChatSession chat(generator, chat_template, a.sampling.system);
    stats = chat.send(*a.prompt, options, on_text);
  }
  // A prompt that does not fit the context is an input error (one line, exit 1), not a finished generation.
  if (stats.stop == StopReason::ContextFull && stats.generated_tokens == 0) throw InputError(stats.message);
  if (a.logprobs < 0) write_out("\n");
  print_stats(stats, a.common.quiet);
  return 0;
}

struct ChatArgs {
  CommonOptions common;
  SamplingOptions sampling;

  ArgParser parser() {
    ArgParser p("clusterfusion chat [options]",
                "Interactive chat with history. Each line on stdin is a user turn (works with piped input);\n"
                "/reset starts over, /exit or end of input quits. Replies stream to stdout, summaries to stderr.");
    sampling.add_to(p);
    common.add_to(p);
    return p;
  }
};

int cmd_chat(const std::vector<std::string>& args) {
  ChatArgs a;
  if (!parse_or_help(a.parser(), args)) return 0;
  const GenerationOptions options = a.sampling.generation();
  (void)a.sampling.chat_template(std::nullopt);
  OpenedModel m = load(a.common);
  const ChatTemplate chat_template = a.sampling.chat_template(m.model.chat_template);
  if (chat_template.format() == ChatFormat::None && !a.common.quiet)
    std::fprintf(stderr, "(the model has no known chat template: turns are joined as plain text; see --template)\n");
  Generator generator(*m.runner, m.model.tokenizer);
  auto chat = std::make_unique<ChatSession>(generator, chat_template, a.sampling.system);
  const bool interactive = isatty(0) == 1;
  std::string line;
  while (true) {
    if (interactive) write_out("> ");
    if (!read_line(line)) break;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      generator.reset();
      chat = std::make_unique<ChatSession>(generator, chat_template, a.sampling.system);
      if (interactive) write_out("(history cleared)\n");
      continue;
    }
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const GenerationStats stats = chat->send(line, options, print_text);
    write_out("\n");
    print_stats(stats, a.common.quiet);
  }
  if (interactive) write_out("\n");
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

struct InfoArgs {
  CommonOptions common;
  std::optional<std::string> positional_model;

  ArgParser parser() {
    ArgParser p("clusterfusion info [MODEL]",
                "Prints a model file's configuration, tokenizer, chat template and tensor table.");
    p.positional("MODEL", "model file (.gguf) or safetensors folder [the default model]", &positional_model);
    p.option("model", 'm', "PATH", "same as MODEL", &common.model);
    return p;
  }
};

// Everything `info` prints from the file goes through terminal_safe: names, token texts and the chat template's
// system prompt can hold escape sequences and bidirectional overrides.
int cmd_info(const std::vector<std::string>& args) {
  InfoArgs a;
  if (!parse_or_help(a.parser(), args)) return 0;
  if (a.positional_model) a.common.model = a.positional_model;
  const std::string path = a.common.model_path();
  const auto file = open_model_file(path);
  std::string out = "file: " + terminal_safe(path) + " (" + file->format() + ")\n";
  const std::string summary = file->config().summary();
  out += terminal_safe(summary, std::string_view::npos, /*keep_line_breaks=*/true);
  if (!summary.empty() && summary.back() != '\n') out += "\n";
  // The tokenizer's own spec: creating it also completes the end-of-generation list.
  const auto tokenizer = Tokenizer::create(file->tokenizer_spec());
  const TokenizerSpec& tok = tokenizer->spec();
  out += std::string("tokenizer: ") + (tok.kind == TokenizerSpec::Kind::ByteLevelBPE ? "byte-level BPE" : "SentencePiece");
  if (!tok.pre.empty()) out += " (pre-tokenizer " + terminal_safe(tok.pre, 60) + ")";
  out += ", " + std::to_string(tok.tokens.size()) + " tokens, " + std::to_string(tok.merges.size()) + " merges, bos " +
         std::to_string(tok.bos) + ", eos " + std::to_string(tok.eos) + ", end of generation:";
  for (int32_t id : tok.end_of_generation) {
    out += " " + std::to_string(id);
    if (id >= 0 && size_t(id) < tok.tokens.size()) out += " " + terminal_safe(tok.tokens[size_t(id)], 60);
  }
  out += "\n";
  const ChatTemplate t = ChatTemplate::detect(file->chat_template());
  out += "chat template: " + t.name();
  if (t.default_system()) out += " (default system prompt: \"" + terminal_safe(*t.default_system(), 400) + "\")";
  out += "\n";
  const auto& tensors = file->tensors();
  size_t total = 0, name_width = 4;
  std::vector<std::string> names;
  names.reserve(tensors.size());
  for (const auto& x : tensors) {
    total += x.nbytes;
    names.push_back(terminal_safe(x.name, 200));
    name_width = std::max(name_width, names.back().size());
  }
  char line[512];
  std::snprintf(line, sizeof line, "tensors: %zu, %s\n  %-*s  %-5s  %-16s  %s\n", tensors.size(),
                human_bytes(double(total)).c_str(), int(name_width), "name", "type", "shape", "size");
  out += line;
  write_out(out);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& x = tensors[i];
    std::string row = "  " + names[i] + std::string(name_width - names[i].size(), ' ');
    std::snprintf(line, sizeof line, "  %-5s  %-16s  %s\n", std::string(dtype_name(x.dtype)).c_str(),
                  x.shape_string().c_str(), human_bytes(double(x.nbytes)).c_str());
    write_out(row + line);
  }
  return 0;
}

struct TokenizeArgs {
  CommonOptions common;
  SamplingOptions sampling;  // --system / --template for --chat
  std::optional<std::string> prompt;
  bool special = false, chat = false, ids_only = false, bos = false, no_bos = false;

  ArgParser parser() {
    ArgParser p("clusterfusion tokenize [-p TEXT] [options]",
                "Prints the tokens of TEXT (or of stdin): one line per token with its id and its text as a JSON\n"
                "string, then the count on stderr. Only the tokenizer is read from the model file.");
    p.option("prompt", 'p', "TEXT", "the text [stdin]", &prompt);
    p.flag("special", 0, "special-token text such as <|im_start|> becomes the special token [off: plain text]",
           &special);
    p.flag("bos", 0, "add the BOS token [as the tokenizer says]", &bos);
    p.flag("no-bos", 0, "do not add the BOS token", &no_bos);
    p.flag("chat", 0, "TEXT as one user turn of the chat template, as generate sends it (with --system, --template)",
           &chat);
    p.flag("ids", 0, "only the ids, as one list: [1, 2, 3]", &ids_only);
    p.flag("quiet", 'q', "no token count on stderr", &common.quiet);
    p.section("chat format (with --chat)");
    p.option("system", 0, "TEXT", "system prompt (\"\" for none) [the template's default]", &sampling.system);
    p.option("template", 0, "NAME", "chat template: chatml, llama2, llama3, deepseek2, none [from the model]",
             &sampling.template_name);
    p.section("model");
    p.option("model", 'm', "PATH", "model file (.gguf) or safetensors folder [default: " + default_model_text() + "]",
             &common.model);
    return p;
  }
};

std::string read_all_stdin() {
  std::string text;
  char buffer[65536];
  size_t got;
  while ((got = std::fread(buffer, 1, sizeof buffer, stdin)) > 0) {
    text.append(buffer, got);
    if (text.size() > Tokenizer::kMaxTextBytes)
      throw InputError("stdin: more than the tokenizer's limit of " + std::to_string(Tokenizer::kMaxTextBytes) + " bytes");
  }
  if (std::ferror(stdin)) throw InputError(std::string("stdin: read failed (") + std::strerror(errno) + ")");
  return text;
}

int cmd_tokenize(const std::vector<std::string>& args) {
  TokenizeArgs a;
  if (!parse_or_help(a.parser(), args)) return 0;
  if (a.bos && a.no_bos) throw UsageError("--bos and --no-bos contradict each other");
  if (a.chat && (a.special || a.bos || a.no_bos))
    throw UsageError("--chat tokenizes as the chat template does: --special, --bos and --no-bos do not apply");
  if (!a.chat && (a.sampling.system || a.sampling.template_name))
    throw UsageError("--system and --template need --chat");
  (void)a.sampling.chat_template(std::nullopt);  // validates --template before reading the model
  const std::string text = a.prompt ? *a.prompt : read_all_stdin();
  const auto file = open_model_file(a.common.model_path());
  const auto tokenizer = Tokenizer::create(file->tokenizer_spec());
  std::vector<int32_t> ids;
  if (a.chat) {
    const ChatTemplate t = a.sampling.chat_template(file->chat_template());
    std::vector<ChatMessage> messages;
    if (a.sampling.system && !a.sampling.system->empty()) messages.push_back({"system", *a.sampling.system});
    ChatTemplate shown = t;
    if (a.sampling.system && a.sampling.system->empty()) shown.set_default_system(std::nullopt);
    messages.push_back({"user", text});
    ids = shown.tokenize(*tokenizer, messages, /*add_generation_prompt=*/true);
  } else {
    const bool add_bos = a.bos || (!a.no_bos && tokenizer->spec().add_bos);
    ids = tokenizer->encode(text, add_bos, a.special);
  }
  std::string out;
  if (a.ids_only) {
    out = "[";
    for (size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
    out += "]\n";
  } else {
    for (const int32_t id : ids) {
      out += std::to_string(id) + "\t" + json_text(tokenizer->token_bytes(id));
      if (tokenizer->token_type(id) == kTokenControl) out += "\t(special)";
      out += "\n";
      if (out.size() > (size_t(1) << 16)) {
        write_out(out);
        out.clear();
      }
    }
  }
  write_out(out);
  if (!a.common.quiet) std::fprintf(stderr, "%zu tokens\n", ids.size());
  return 0;
}

// `serve`: the model, backend and sampling options here, the server's own and all the rest in serve.cpp.
struct ServeArgs {
  CommonOptions common;
  SamplingOptions sampling;
  ServeOptions serve;

  ArgParser parser() {
    ArgParser p("clusterfusion serve [options]", kServeDescription);
    serve.add_to(p);
    sampling.add_to(p, /*with_max_tokens=*/false);
    common.add_to(p);
    return p;
  }
};

int cmd_serve(const std::vector<std::string>& args) {
  constexpr uint64_t kNoSeed = ~uint64_t(0);  // tells whether --seed was given
  ServeArgs a;
  a.sampling.sampler.seed = kNoSeed;
  if (!parse_or_help(a.parser(), args)) return 0;
  ServeDefaults defaults;
  if (a.sampling.sampler.seed != kNoSeed) defaults.seed = a.sampling.sampler.seed;
  a.sampling.sampler.seed = 0;
  defaults.sampling = a.sampling.generation().sampling;
  (void)a.sampling.chat_template(std::nullopt);  // validates --template before loading
  const std::optional<std::string> api_key = prepare_serve(a.serve);
  OpenedModel m = load(a.common, a.serve.max_batch);
  ChatTemplate chat_template = a.sampling.chat_template(m.model.chat_template);
  if (a.sampling.system)
    chat_template.set_default_system(a.sampling.system->empty() ? std::nullopt : a.sampling.system);
  return serve(a.serve, api_key, *m.runner, m.model, chat_template, defaults);
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
         "  tokenize      show the token ids and texts of a text (-p TEXT or stdin)\n"
         "  serve         OpenAI-compatible HTTP server with continuous batching and a chat page\n"
         "\n"
         "backends (--backend NAME):\n" +
         backends +
         "\n"
         "The default model is " + default_model_text() + "\n"
         "(scripts/setup.sh downloads it; -m PATH picks another). 'clusterfusion COMMAND --help' for options.\n";
}

// The commands, in the order help lists them; leading_options tells how many of the arguments before a command name
// are that command's options.
struct Command {
  const char* name;
  int (*run)(const std::vector<std::string>& args);
  size_t (*leading_options)(const std::vector<std::string>& args);
};

template <class Args>
size_t leading_options_of(const std::vector<std::string>& args) {
  Args a;
  return a.parser().leading_options(args);
}

const Command kCommands[] = {
    {"generate", cmd_generate, leading_options_of<GenerateArgs>},
    {"chat", cmd_chat, leading_options_of<ChatArgs>},
    {"info", cmd_info, leading_options_of<InfoArgs>},
    {"tokenize", cmd_tokenize, leading_options_of<TokenizeArgs>},
    {"serve", cmd_serve, leading_options_of<ServeArgs>},
};

std::string command_names() {
  std::string names;
  for (const Command& c : kCommands) names += (names.empty() ? "" : ", ") + std::string(c.name);
  return names;
}

}  // namespace

int run(const std::vector<std::string>& args) {
  if (args.empty()) {
    std::fputs(top_help().c_str(), stderr);
    throw UsageError("missing command (" + command_names() + ")");
  }
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    write_out(top_help());
    return 0;
  }
  if (args[0] == "--version") {
    write_out("clusterfusion 0.1.0\n");
    return 0;
  }
  // The command is the first argument that names one and follows only options of that command (options given
  // before the command are passed on to it: clusterfusion -m model.gguf generate -p hi).
  auto run_at = [&](const Command& c, size_t at) {
    std::vector<std::string> rest(args.begin() + long(at) + 1, args.end());
    rest.insert(rest.begin(), args.begin(), args.begin() + long(at));
    return c.run(rest);
  };
  for (size_t at = 0; at < args.size(); ++at)
    for (const Command& c : kCommands)
      if (args[at] == c.name && c.leading_options({args.begin(), args.begin() + long(at)}) == at) return run_at(c, at);
  // Something before the command is not one of its options: its parser says what.
  for (size_t at = 0; at < args.size(); ++at)
    for (const Command& c : kCommands)
      if (args[at] == c.name) return run_at(c, at);
  if (args[0].size() < 2 || args[0][0] != '-')
    throw UsageError("unknown command '" + args[0] + "' (expected " + command_names() + ")");
  throw UsageError("missing command (" + command_names() + ") after the options");
}

}  // namespace cf::cli

namespace {
// Error messages echo arguments and paths as given; the line printed stays one line of valid UTF-8 that reads as
// stored (control characters, bidirectional overrides and bytes of invalid UTF-8 escaped).
std::string one_line(std::string_view message) { return cf::terminal_safe(message); }
}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    const int code = cf::cli::run(args);
    // Whatever went to stdout must have arrived (a full disk or /dev/full is an error, not success).
    if (std::fflush(stdout) != 0 || std::ferror(stdout))
      throw cf::Error(std::string("cannot write the output to stdout (") + std::strerror(errno) + ")");
    return code;
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
