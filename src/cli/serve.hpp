// The `serve` command's own part (serve.cpp): its options, the checks that need no model, and running the server
// over a loaded model. main.cpp parses the shared model, backend and sampling options, loads the model and calls
// serve() (its cmd_serve).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "args.hpp"
#include "clusterfusion/runtime/chat_template.hpp"
#include "clusterfusion/runtime/model.hpp"
#include "clusterfusion/runtime/runner.hpp"
#include "clusterfusion/runtime/sampler.hpp"

namespace cf::cli {

extern const char* const kServeDescription;  // the paragraph of `serve --help`

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

  void add_to(ArgParser& p);
};

// What requests that leave them out get.
struct ServeDefaults {
  SamplerConfig sampling;
  std::optional<uint64_t> seed;  // none: a random seed for each request
};

// Checks what needs no model (the API key options, that HOST:PORT can be listened on) and blocks SIGINT / SIGTERM in
// this thread and every thread started from it, so that serve() can take them. Call it before loading the model.
// Returns the API key, if any.
std::optional<std::string> prepare_serve(const ServeOptions& options);

// Serves the model until SIGINT / SIGTERM (a graceful shutdown; a second signal ends it at once). Returns the exit
// code.
int serve(const ServeOptions& options, const std::optional<std::string>& api_key, Runner& runner,
          const LoadedModel& model, const ChatTemplate& chat_template, const ServeDefaults& defaults);

}  // namespace cf::cli
