// `clusterfusion serve`: the server's options, the checks before loading, and running the continuous-batching
// scheduler and the OpenAI-compatible HTTP server (src/server) until SIGINT / SIGTERM.
#include "serve.hpp"

#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#ifdef CF_HAVE_SERVER
#include "clusterfusion/runtime/scheduler.hpp"
#include "clusterfusion/server/metrics.hpp"
#include "clusterfusion/server/server.hpp"
#endif

namespace cf::cli {

const char* const kServeDescription =
    "Serves the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions,\n"
    "/v1/models, /health, /metrics) with continuous batching, and a chat page at http://HOST:PORT/.\n"
    "The sampling options below are the defaults for requests that leave those fields out; a request\n"
    "without a seed gets a random one unless --seed is given.\n"
    "SIGINT / SIGTERM (Ctrl-C) stop it gracefully; a second one stops it at once.";

namespace {

constexpr int kMaxBatch = 16;  // the backends' lockstep decode limit

}  // namespace

void ServeOptions::add_to(ArgParser& p) {
  p.section("server");
  p.option("host", 0, "ADDR", "address to listen on; 0.0.0.0 for every interface [127.0.0.1]", &host);
  p.option("port", 0, "N", "TCP port; 0 = any free one (printed) [8080]", &port, 0, 65535);
  p.option("api-key", 0, "KEY", "require 'Authorization: Bearer KEY' on /v1/* and /metrics [none]", &api_key);
  p.option("api-key-file", 0, "PATH", "the same, with the key read from a file (keeps it out of 'ps') [none]",
           &api_key_file);
  p.option("alias", 0, "NAME", "model id shown by /v1/models and in responses [the model file's name]", &alias);
  p.option("max-batch", 0, "N", "requests decoded together, 1..16 [8]", &max_batch, 1, kMaxBatch);
  p.option("queue", 0, "N", "requests waiting for a batch slot at most; more get 503 [32]", &queue, 0, 4096);
  p.option("max-tokens", 'n', "N", "largest max_tokens a request may ask for; 0 = the context [0]", &max_tokens, 0,
           1 << 24);
  p.option("prefill-chunk", 0, "N", "prompt tokens prefilled per step while other requests decode [64]",
           &prefill_chunk, 1, 1 << 16);
  p.option("max-body-kb", 0, "N", "largest request body in KiB; larger ones get 413 [4096]", &max_body_kb, 1, 1 << 20);
  p.option("shutdown-grace", 0, "S", "seconds in-flight requests may finish after SIGINT / SIGTERM [10]",
           &grace_seconds, 0, 3600);
}

#ifdef CF_HAVE_SERVER

namespace {

// Fails before the model is loaded when HOST:PORT cannot be listened on (a busy port, an address this machine does
// not have), so the mistake costs no load time; the server binds for real once the model is loaded.
void check_can_listen(const std::string& host, int port) {
  const std::string where = host + ":" + std::to_string(port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0)
    throw InputError("cannot listen on " + where + ": " + gai_strerror(rc));
  std::string why = "no usable address";
  bool ok = false;
  for (const addrinfo* a = found; a && !ok; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    const int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);  // as the server does
    ok = bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 1) == 0;
    if (!ok) why = std::strerror(errno) + std::string(errno == EADDRINUSE ? " (--port picks another)" : "");
    close(fd);
  }
  freeaddrinfo(found);
  if (!ok) throw InputError("cannot listen on " + where + ": " + why);
}

std::string model_id(const std::string& path) {
  std::filesystem::path p(path);
  if (p.filename().empty()) p = p.parent_path();  // a safetensors folder given with a trailing slash
  return p.extension() == ".gguf" ? p.stem().string() : p.filename().string();
}

std::optional<std::string> api_key_of(const ServeOptions& o) {
  if (o.api_key && o.api_key_file) throw UsageError("--api-key and --api-key-file: give one of them");
  if (o.api_key) {
    if (o.api_key->empty()) throw UsageError("--api-key: the key must not be empty");
    return o.api_key;
  }
  if (!o.api_key_file) return std::nullopt;
  std::ifstream in(*o.api_key_file);
  if (!in) throw UsageError("--api-key-file: cannot read " + *o.api_key_file);
  std::string key;
  std::getline(in, key);
  while (!key.empty() && (key.back() == '\r' || key.back() == ' ')) key.pop_back();
  if (key.empty()) throw UsageError("--api-key-file: " + *o.api_key_file + " holds no key on its first line");
  return key;
}

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

std::optional<std::string> prepare_serve(const ServeOptions& options) {
  std::optional<std::string> key = api_key_of(options);
  if (options.port != 0) check_can_listen(options.host, options.port);
  // serve() takes the signals with sigtimedwait(), so every thread started from here on must have them blocked.
  const sigset_t set = stop_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return key;
}

int serve(const ServeOptions& o, const std::optional<std::string>& api_key, Runner& runner, const LoadedModel& model,
          const ChatTemplate& chat_template, const ServeDefaults& defaults) {
  server::Metrics metrics;
  SchedulerOptions scheduler_options;
  scheduler_options.max_queue = o.queue;
  scheduler_options.prefill_chunk = o.prefill_chunk;
  scheduler_options.on_finish = [&metrics](const GenerationOutcome& outcome) { metrics.record_outcome(outcome); };
  Scheduler scheduler(runner, model.tokenizer, scheduler_options);

  server::ServerOptions options;
  options.host = o.host;
  options.port = o.port;
  options.api_key = api_key;
  options.max_body_bytes = size_t(o.max_body_kb) * 1024;
  options.http_threads = o.max_batch + o.queue + 16;  // every running and waiting request, and some spare
  options.policy.default_sampling = defaults.sampling;
  options.policy.default_seed = defaults.seed;
  options.policy.context = runner.context_limit();
  options.policy.max_tokens_cap = o.max_tokens;
  const std::string id = o.alias ? *o.alias : model_id(model.path);
  server::Server server(scheduler, metrics, {id, model.tokenizer, chat_template}, options);
  server.bind();

  std::fprintf(stderr, "serving %s on http://%s:%d/ (batch %d, queue %d, context %d, chat template %s%s)\n",
               id.c_str(), o.host.c_str(), server.port(), o.max_batch, o.queue, runner.context_limit(),
               chat_template.name().c_str(), api_key ? ", API key required" : "");
  if (!api_key && o.host != "127.0.0.1" && o.host != "localhost" && o.host != "::1")
    std::fprintf(stderr, "clusterfusion: warning: listening on %s without --api-key: anyone who can reach this "
                         "address can use the server\n", o.host.c_str());
  std::fprintf(stderr, "press Ctrl-C to stop\n");
  std::fflush(stderr);

  std::atomic<bool> stopped{false};
  std::thread http([&] {
    server.run();
    stopped = true;
  });
  std::thread graceful;
  const sigset_t set = stop_signals();
  while (!stopped) {
    const timespec tick{0, 100'000'000};
    const int sig = sigtimedwait(&set, nullptr, &tick);
    if (sig != SIGINT && sig != SIGTERM) continue;
    if (!graceful.joinable()) {
      std::fprintf(stderr, "\nshutting down: waiting up to %d s for requests in flight (again to stop at once)\n",
                   o.grace_seconds);
      graceful = std::thread([&] { server.shutdown(std::chrono::seconds(o.grace_seconds)); });
    } else {
      server.shutdown(std::chrono::milliseconds(0));  // cuts the grace period short
    }
  }
  http.join();
  if (graceful.joinable()) graceful.join();
  std::fprintf(stderr, "stopped\n");
  return 0;
}

#else  // a build without cpp-httplib: `serve` says so before anything is loaded

std::optional<std::string> prepare_serve(const ServeOptions&) {
  throw UsageError("serve: this build has no HTTP server (cpp-httplib was not found at configure time; "
                   "scripts/setup.sh installs it, then reconfigure)");
}

int serve(const ServeOptions& o, const std::optional<std::string>&, Runner&, const LoadedModel&, const ChatTemplate&,
          const ServeDefaults&) {
  prepare_serve(o);
  return 1;
}

#endif

}  // namespace cf::cli
