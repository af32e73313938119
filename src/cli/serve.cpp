// `clusterfusion serve`: loads the model, starts the continuous-batching scheduler and the OpenAI-compatible HTTP
// server (src/server), and shuts down gracefully on SIGINT / SIGTERM.
#include "serve.hpp"

#ifdef CF_HAVE_SERVER
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
#include <iostream>
#include <thread>

#include "clusterfusion/runtime/scheduler.hpp"
#include "clusterfusion/server/metrics.hpp"
#include "clusterfusion/server/server.hpp"
#include "options.hpp"

namespace cf::cli {

namespace {

constexpr int kMaxBatch = 16;  // the backends' lockstep decode limit

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8080;
  std::optional<std::string> api_key, api_key_file, alias;
  int max_batch = 8;
  int queue = 32;
  int max_tokens = 0;
  int prefill_chunk = 64;
  int max_body_kb = 4096;
  int grace_seconds = 10;

  void add_to(ArgParser& p) {
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
    p.option("max-body-kb", 0, "N", "largest request body in KiB; larger ones get 413 [4096]", &max_body_kb, 1,
             1 << 20);
    p.option("shutdown-grace", 0, "S", "seconds in-flight requests may finish after SIGINT / SIGTERM [10]",
             &grace_seconds, 0, 3600);
  }

  std::optional<std::string> key() const {
    if (api_key && api_key_file) throw UsageError("--api-key and --api-key-file: give one of them");
    if (api_key) {
      if (api_key->empty()) throw UsageError("--api-key: the key must not be empty");
      return api_key;
    }
    if (!api_key_file) return std::nullopt;
    std::ifstream in(*api_key_file);
    if (!in) throw UsageError("--api-key-file: cannot read " + *api_key_file);
    std::string k;
    std::getline(in, k);
    while (!k.empty() && (k.back() == '\r' || k.back() == ' ')) k.pop_back();
    if (k.empty()) throw UsageError("--api-key-file: " + *api_key_file + " holds no key on its first line");
    return k;
  }
};

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

}  // namespace

int cmd_serve(const std::vector<std::string>& args) {
  CommonOptions common;
  SamplingOptions sampling;
  ServeOptions serve;
  ArgParser p("clusterfusion serve [options]",
              "Serves the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions,\n"
              "/v1/models, /health, /metrics) with continuous batching, and a chat page at http://HOST:PORT/.\n"
              "The sampling options below are the defaults for requests that leave those fields out; a request\n"
              "without a seed gets a random one unless --seed is given.\n"
              "SIGINT / SIGTERM (Ctrl-C) stop it gracefully; a second one stops it at once.");
  constexpr uint64_t kNoSeed = ~uint64_t(0);  // --seed not given
  sampling.sampler.seed = kNoSeed;
  serve.add_to(p);
  sampling.add_to(p, /*with_max_tokens=*/false);
  common.add_to(p);
  if (!p.parse(args)) {
    std::cout << p.help();
    return 0;
  }
  std::optional<uint64_t> default_seed;
  if (sampling.sampler.seed != kNoSeed) default_seed = sampling.sampler.seed;
  sampling.sampler.seed = 0;
  const GenerationOptions defaults = sampling.generation();
  (void)sampling.chat_template(std::nullopt);  // checks --template before loading
  const std::optional<std::string> api_key = serve.key();
  if (serve.port != 0) check_can_listen(serve.host, serve.port);

  // Signals are taken by sigtimedwait() below, so every thread started from here on has them blocked.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  LoadedRunner m = load(common, serve.max_batch);
  ChatTemplate chat_template = sampling.chat_template(m.model.chat_template);
  if (sampling.system) chat_template.set_default_system(sampling.system->empty() ? std::nullopt : sampling.system);

  server::Metrics metrics;
  SchedulerOptions scheduler_options;
  scheduler_options.max_queue = serve.queue;
  scheduler_options.prefill_chunk = serve.prefill_chunk;
  scheduler_options.on_finish = [&metrics](const GenerationOutcome& o) { metrics.record_outcome(o); };
  Scheduler scheduler(*m.runner, m.model.tokenizer, scheduler_options);

  server::ServerOptions options;
  options.host = serve.host;
  options.port = serve.port;
  options.api_key = api_key;
  options.max_body_bytes = size_t(serve.max_body_kb) * 1024;
  options.http_threads = serve.max_batch + serve.queue + 16;  // every running and waiting request, and some spare
  options.policy.default_sampling = defaults.sampling;
  options.policy.context = m.runner->context_limit();
  options.policy.max_tokens_cap = serve.max_tokens;
  options.policy.default_seed = default_seed;
  const std::string id = serve.alias ? *serve.alias : model_id(m.model.path);
  server::Server server(scheduler, metrics, {id, m.model.tokenizer, chat_template}, options);
  server.bind();

  std::fprintf(stderr, "serving %s on http://%s:%d/ (batch %d, queue %d, context %d, chat template %s%s)\n",
               id.c_str(), serve.host.c_str(), server.port(), serve.max_batch, serve.queue,
               m.runner->context_limit(), chat_template.name().c_str(), api_key ? ", API key required" : "");
  if (!api_key && serve.host != "127.0.0.1" && serve.host != "localhost" && serve.host != "::1")
    std::fprintf(stderr, "clusterfusion: warning: listening on %s without --api-key: anyone who can reach this "
                         "address can use the server\n", serve.host.c_str());
  std::fprintf(stderr, "press Ctrl-C to stop\n");
  std::fflush(stderr);

  std::atomic<bool> stopped{false};
  std::thread http([&] {
    server.run();
    stopped = true;
  });
  std::thread graceful;
  while (!stopped) {
    const timespec tick{0, 100'000'000};
    const int sig = sigtimedwait(&stop_signals, nullptr, &tick);
    if (sig != SIGINT && sig != SIGTERM) continue;
    if (!graceful.joinable()) {
      std::fprintf(stderr, "\nshutting down: waiting up to %d s for requests in flight (again to stop at once)\n",
                   serve.grace_seconds);
      graceful = std::thread([&] { server.shutdown(std::chrono::seconds(serve.grace_seconds)); });
    } else {
      server.shutdown(std::chrono::milliseconds(0));  // cuts the grace period short
    }
  }
  http.join();
  if (graceful.joinable()) graceful.join();
  std::fprintf(stderr, "stopped\n");
  return 0;
}

}  // namespace cf::cli

#else  // a build without cpp-httplib

namespace cf::cli {
int cmd_serve(const std::vector<std::string>&) {
  throw UsageError("serve: this build has no HTTP server (cpp-httplib was not found at configure time; "
                   "scripts/setup.sh installs it, then reconfigure)");
}
}  // namespace cf::cli

#endif
