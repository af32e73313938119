// `clusterfusion serve`: the OpenAI-compatible HTTP server over a Scheduler (continuous batching).
//   POST /v1/chat/completions, POST /v1/completions (both with "stream": true as server-sent events ending with
//   [DONE]), GET /v1/models, GET /v1/models/{id}, GET /health, GET /metrics (Prometheus text), GET / (the built-in
//   chat page; nothing else is served from disk).
// HTTP/1.1 through cpp-httplib: a fixed pool of worker threads, one per open connection; a streamed response is
// written by its connection's thread as the engine produces text, and a client that goes away is noticed within
// ~0.1 s (the socket is checked between waits), which cancels its request and frees its sequence.
// Safe defaults: loopback only unless told otherwise, --api-key compared in constant time, a body size cap, POST
// bodies must be JSON (so a web page elsewhere cannot post to it without CORS, which it does not grant).
#pragma once
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>

#include "clusterfusion/tokenizer/tokenizer.hpp"
#include "clusterfusion/runtime/chat_template.hpp"
#include "clusterfusion/runtime/scheduler.hpp"
#include "clusterfusion/server/metrics.hpp"
#include "clusterfusion/server/openai.hpp"

namespace cf::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                         // 0: any free port (port() says which)
  std::optional<std::string> api_key;      // required as "Authorization: Bearer KEY" on /v1/* and /metrics
  size_t max_body_bytes = size_t(4) << 20; // larger request bodies get 413
  int http_threads = 64;                   // connections served at once (streams included)
  RequestPolicy policy;
};

struct ServedModel {
  std::string id;  // what /v1/models lists and responses name
  std::shared_ptr<const Tokenizer> tokenizer;
  ChatTemplate chat_template;
};

// True when `given` equals `expected`; the time taken depends only on the lengths, not on where they differ.
bool constant_time_equal(std::string_view given, std::string_view expected);

class Server {
 public:
  // Outcomes reach `metrics` through the scheduler's on_finish; the server counts HTTP responses in it.
  Server(Scheduler& scheduler, Metrics& metrics, ServedModel model, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the listening socket; throws cf::InputError ("cannot listen on HOST:PORT: ...") when it cannot.
  void bind();
  int port() const;
  // Serves until shutdown() has finished (bind() first).
  void run();
  // Graceful shutdown, from any thread: new API requests get 503, requests in flight may finish for up to `grace`,
  // then the rest end with an error (a streamed one with an error event), and the server stops listening, which
  // makes run() return. Blocks until done; a second call (e.g. a second Ctrl-C) cuts the grace period short.
  void shutdown(std::chrono::milliseconds grace);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cf::server
