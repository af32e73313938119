#include "clusterfusion/server/server.hpp"

#include <dirent.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <ctime>
#include <httplib.h>
#include <mutex>
#include <random>
#include <thread>

#include "chat_page.hpp"

namespace cf::server {

using namespace std::chrono_literals;

bool constant_time_equal(std::string_view given, std::string_view expected) {
  // Every byte of `expected` is compared whatever the input; only the lengths decide the time taken.
  unsigned diff = given.size() == expected.size() ? 0u : 1u;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff |= g ^ static_cast<unsigned char>(expected[i]);
  }
  return diff == 0;
}

namespace {

// cpp-httplib 0.11 (Debian 12's) tells a non-streamed handler nothing about its connection, so the handler finds
// its socket by the two endpoints httplib recorded in the request and peeks at it: end of stream = the client left.
// (A streamed response gets the same check from httplib's DataSink::is_writable.)
class ClientConnection {
 public:
  explicit ClientConnection(const httplib::Request& req) {
    DIR* dir = opendir("/proc/self/fd");
    if (!dir) return;
    while (const dirent* entry = readdir(dir)) {
      char* end = nullptr;
      const long fd = std::strtol(entry->d_name, &end, 10);
      if (end == entry->d_name || *end != '\0') continue;
      struct stat st {};
      if (fstat(int(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
      if (endpoint(int(fd), getpeername) == std::pair(req.remote_addr, req.remote_port) &&
          endpoint(int(fd), getsockname) == std::pair(req.local_addr, req.local_port)) {
        fd_ = int(fd);
        break;
      }
    }
    closedir(dir);
  }

  bool gone() const {
    if (fd_ < 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) return true;
    char c;
    const ssize_t n = recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }

 private:
  using NameFn = int (*)(int, sockaddr*, socklen_t*);
  static std::pair<std::string, int> endpoint(int fd, NameFn name_of) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (name_of(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return {"", -1};
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getnameinfo(reinterpret_cast<sockaddr*>(&addr), len, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
      return {"", -1};
    return {host, std::atoi(port)};
  }
  int fd_ = -1;
};

int64_t unix_now() { return int64_t(std::time(nullptr)); }

std::string sse_event(std::string_view data) {
  std::string e = "data: ";
  e.append(data);
  e.append("\n\n");
  return e;
}

// The routes, for the metrics' endpoint label (anything else is "other", so clients cannot grow the label set).
std::string endpoint_label(const std::string& path) {
  for (const char* route : {"/", "/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions"})
    if (path == route) return path;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

bool is_json_content_type(const std::string& value) {
  std::string media = value.substr(0, value.find(';'));
  while (!media.empty() && media.back() == ' ') media.pop_back();
  for (char& c : media) c = char(std::tolower(static_cast<unsigned char>(c)));
  return media == "application/json";
}

}  // namespace

struct Server::Impl {
  Impl(Scheduler& s, Metrics& metrics, ServedModel m, ServerOptions o)
      : scheduler(s), metrics(metrics), model(std::move(m)), options(std::move(o)) {
    std::random_device seed_source;
    rng.seed((uint64_t(seed_source()) << 32) ^ seed_source());
  }

  Scheduler& scheduler;
  Metrics& metrics;
  ServedModel model;
  ServerOptions options;
  httplib::Server http;
  int port = -1;
  const int64_t started = unix_now();
  std::atomic<bool> draining{false};
  std::atomic<bool> cut_short{false};
  std::atomic<int> in_flight{0};  // generation responses not yet fully written
  std::mutex rng_mutex;
  std::mt19937_64 rng;

  uint64_t random_u64() {
    std::lock_guard lock(rng_mutex);
    return rng();
  }
  std::string random_id(std::string_view prefix) {
    static const char* hex = "0123456789abcdef";
    std::string id(prefix);
    uint64_t a = random_u64(), b = random_u64();
    for (int i = 0; i < 16; ++i, a >>= 4) id.push_back(hex[a & 15]);
    for (int i = 0; i < 8; ++i, b >>= 4) id.push_back(hex[b & 15]);
    return id;
  }

  void install_routes();
  void send_error(httplib::Response& res, const ApiError& e) {
    res.status = e.status();
    if (e.status() == 401) res.set_header("WWW-Authenticate", "Bearer");
    if (e.status() == 503 || e.status() == 429) res.set_header("Retry-After", "1");
    res.set_content(error_body(e), "application/json");
  }
  void authorize(const httplib::Request& req) const;
  void generate(Endpoint endpoint, const httplib::Request& req, httplib::Response& res);
  // The template's markup becomes special tokens; the messages are content only ("<|im_start|>" typed by a user
  // stays text).
  std::vector<int32_t> chat_prompt(const std::vector<ChatMessage>& messages) const {
    return model.chat_template.tokenize(*model.tokenizer, messages, /*add_generation_prompt=*/true);
  }
  void respond_whole(const httplib::Request& req, httplib::Response& res, Endpoint endpoint, const ResponseIds& ids,
                     const std::shared_ptr<GenerationStream>& stream);
  struct StreamState {
    std::shared_ptr<GenerationStream> stream;
    Endpoint endpoint;
    ResponseIds ids;
    bool include_usage;
    bool first = true;   // no event written yet
    bool ended = false;  // the outcome has been taken
  };
  void respond_streamed(httplib::Response& res, Endpoint endpoint, const ResponseIds& ids,
                        std::shared_ptr<GenerationStream> stream, bool include_usage);
  bool stream_step(StreamState& s, httplib::DataSink& sink) noexcept;
  ApiError ended_with_error(const GenerationOutcome& o) const {
    return draining ? ApiError(503, o.error.empty() ? "the server is shutting down" : o.error)
                    : ApiError(500, "generation failed: " + o.error);
  }
};

void Server::Impl::authorize(const httplib::Request& req) const {
  if (!options.api_key) return;
  const std::string header = req.get_header_value("Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  const bool has_bearer = header.size() >= kBearer.size() && header.compare(0, kBearer.size(), kBearer) == 0;
  const std::string_view given = has_bearer ? std::string_view(header).substr(kBearer.size()) : std::string_view();
  if (!constant_time_equal(given, *options.api_key))
    throw ApiError(401,
                   has_bearer ? "incorrect API key provided"
                              : "missing API key: send it as the header 'Authorization: Bearer KEY'",
                   "", "invalid_api_key");
}

void Server::Impl::generate(Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
  authorize(req);
  if (draining) throw ApiError(503, "the server is shutting down");
  if (!is_json_content_type(req.get_header_value("Content-Type")))
    throw ApiError(415, "the request body must be JSON, sent with the header 'Content-Type: application/json'");
  ParsedRequest p = parse_request(endpoint, req.body, options.policy);
  std::vector<int32_t> prompt;
  if (endpoint == Endpoint::ChatCompletions) {
    prompt = chat_prompt(p.messages);
  } else if (const auto* text = std::get_if<std::string>(&p.prompt)) {
    // Plain text is content: special-token text in it stays text.
    prompt = model.tokenizer->encode(*text, model.tokenizer->spec().add_bos, /*parse_special=*/false);
  } else {
    prompt = std::get<std::vector<int32_t>>(p.prompt);
    for (int32_t t : prompt)
      if (t >= model.tokenizer->vocab_size())
        throw ApiError(400, "prompt token id " + std::to_string(t) + " is outside the vocabulary of " +
                                std::to_string(model.tokenizer->vocab_size()) + " tokens",
                       "prompt");
  }
  fit_to_context(p, std::move(prompt), options.policy);
  if (!p.seed_given)
    p.generation.sampling.seed = options.policy.default_seed ? *options.policy.default_seed : random_u64();
  std::shared_ptr<GenerationStream> stream;
  try {
    stream = scheduler.submit(std::move(p.generation));
  } catch (const QueueFullError& e) {
    throw ApiError(503, e.what(), "", "server_busy");
  } catch (const InputError& e) {
    throw ApiError(400, e.what());
  } catch (const Error& e) {
    throw ApiError(503, e.what());  // the scheduler refuses new work: shutting down
  }
  const ResponseIds ids{random_id(endpoint == Endpoint::ChatCompletions ? "chatcmpl-" : "cmpl-"), unix_now(), model.id};
  if (p.stream) {
    respond_streamed(res, endpoint, ids, std::move(stream), p.include_usage);
  } else {
    respond_whole(req, res, endpoint, ids, stream);
  }
}

void Server::Impl::respond_whole(const httplib::Request& req, httplib::Response& res, Endpoint endpoint,
                                 const ResponseIds& ids, const std::shared_ptr<GenerationStream>& stream) {
  ++in_flight;
  struct Done {
    std::atomic<int>& count;
    ~Done() { --count; }
  } done{in_flight};
  const ClientConnection client(req);
  std::string text;
  std::optional<GenerationOutcome> outcome;
  while (!outcome) {
    auto u = stream->next(100ms);
    text += u.text;
    outcome = std::move(u.outcome);
    if (!outcome && client.gone()) stream->cancel();
  }
  if (outcome->finish == FinishReason::Cancelled) {
    res.status = 499;  // nginx's "client closed request": nobody reads it, the metrics count it
    return;
  }
  if (outcome->finish == FinishReason::Error) throw ended_with_error(*outcome);
  res.set_content(response_body(endpoint, ids, text, *outcome), "application/json");
}

void Server::Impl::respond_streamed(httplib::Response& res, Endpoint endpoint, const ResponseIds& ids,
                                    std::shared_ptr<GenerationStream> stream, bool include_usage) {
  auto state = std::make_shared<StreamState>(StreamState{std::move(stream), endpoint, ids, include_usage});
  ++in_flight;
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      // Called again and again by the connection's thread until sink.done() or false (the connection is dropped).
      [this, state](size_t, httplib::DataSink& sink) { return stream_step(*state, sink); },
      [this, state](bool) {
        if (!state->ended) state->stream->cancel();  // the client left, or writing failed
        --in_flight;
      });
}

// One call of a stream's content provider: waits up to 0.1 s for text, writes the events it has. Nothing may throw
// from here (httplib calls it outside its handler's try block).
bool Server::Impl::stream_step(StreamState& s, httplib::DataSink& sink) noexcept {
  try {
    if (!sink.is_writable()) return false;  // the client left
    auto u = s.stream->next(100ms);
    std::string out;
    if (s.first && s.endpoint == Endpoint::ChatCompletions)  // the assistant role comes first
      out += sse_event(chunk_body(s.endpoint, s.ids, "", true, std::nullopt, s.include_usage));
    s.first = false;
    if (!u.text.empty()) out += sse_event(chunk_body(s.endpoint, s.ids, u.text, false, std::nullopt, s.include_usage));
    if (u.outcome) {
      s.ended = true;
      const GenerationOutcome& o = *u.outcome;
      if (o.finish == FinishReason::Cancelled) return false;
      if (o.finish == FinishReason::Error) {
        out += sse_event(error_body(ended_with_error(o)));
      } else {
        out += sse_event(chunk_body(s.endpoint, s.ids, "", false, o.finish, s.include_usage));
        if (s.include_usage) out += sse_event(usage_chunk_body(s.endpoint, s.ids, o));
        out += "data: [DONE]\n\n";
      }
    }
    if (!out.empty() && !sink.write(out.data(), out.size())) return false;
    if (s.ended) sink.done();
    return true;
  } catch (...) {
    return false;  // out of memory: drop the connection; the releaser cancels the request
  }
}

void Server::Impl::install_routes() {
  // Every API handler answers its errors as OpenAI error objects.
  auto api = [this](auto handler) {
    return [this, handler](const httplib::Request& req, httplib::Response& res) {
      try {
        handler(req, res);
      } catch (const ApiError& e) {
        send_error(res, e);
      } catch (const InputError& e) {
        send_error(res, ApiError(400, e.what()));
      } catch (const std::exception& e) {
        send_error(res, ApiError(500, std::string("internal error: ") + e.what()));
      }
    };
  };
  http.Post("/v1/chat/completions", api([this](const httplib::Request& req, httplib::Response& res) {
              generate(Endpoint::ChatCompletions, req, res);
            }));
  http.Post("/v1/completions", api([this](const httplib::Request& req, httplib::Response& res) {
              generate(Endpoint::Completions, req, res);
            }));
  for (const char* route : {"/v1/chat/completions", "/v1/completions"}) {
    http.Get(route, api([](const httplib::Request&, httplib::Response& res) {
               res.set_header("Allow", "POST");
               throw ApiError(405, "this endpoint takes POST requests");
             }));
  }
  http.Get("/v1/models", api([this](const httplib::Request& req, httplib::Response& res) {
             authorize(req);
             res.set_content(model_list_body(model.id, started), "application/json");
           }));
  http.Get(R"(/v1/models/(.+))", api([this](const httplib::Request& req, httplib::Response& res) {
             authorize(req);
             if (req.matches[1] != model.id)
               throw ApiError(404, "the model '" + std::string(req.matches[1]) + "' does not exist (this server has '" +
                                       model.id + "')",
                              "model", "model_not_found");
             res.set_content(model_body(model.id, started), "application/json");
           }));
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    res.status = draining ? 503 : 200;
    res.set_content(draining ? R"({"status":"shutting down"})" : R"({"status":"ok"})", "application/json");
  });
  http.Get("/metrics", api([this](const httplib::Request& req, httplib::Response& res) {
             authorize(req);
             res.set_content(metrics.render(scheduler.stats()), "text/plain; version=0.0.4; charset=utf-8");
           }));
  http.Get("/", [](const httplib::Request&, httplib::Response& res) {
    // The page is the binary's own; it talks only to this server.
    res.set_header("Content-Security-Policy",
                   "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
                   "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("Referrer-Policy", "no-referrer");
    res.set_content(std::string(chat_page_html()), "text/html; charset=utf-8");
  });
  // Anything without a body of its own (unknown paths, 413 for a body over the cap, 400 for broken HTTP) gets an
  // OpenAI error object too.
  http.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req,
                                                                      httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string message = "no route for " + req.method + " " + req.path;
    if (res.status == 413)
      message = "the request body is larger than the server's limit of " + std::to_string(options.max_body_bytes) +
                " bytes";
    else if (res.status != 404)
      message = "bad request (" + std::to_string(res.status) + ")";
    send_error(res, ApiError(res.status, message));
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler([this](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    send_error(res, ApiError(500, "internal error"));
  });
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    metrics.count_response(endpoint_label(req.path), res.status);
  });
}

Server::Server(Scheduler& scheduler, Metrics& metrics, ServedModel model, ServerOptions options)
    : impl_(std::make_unique<Impl>(scheduler, metrics, std::move(model), std::move(options))) {
  CF_CHECK_INPUT(impl_->options.http_threads >= 2, "serve: at least 2 HTTP threads are needed");
  auto& http = impl_->http;
  const size_t threads = size_t(impl_->options.http_threads);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http.set_payload_max_length(impl_->options.max_body_bytes);
  http.set_keep_alive_timeout(5);
  http.set_read_timeout(30);
  http.set_write_timeout(30);
  http.set_tcp_nodelay(true);
  impl_->install_routes();
}

Server::~Server() = default;

void Server::bind() {
  auto& o = impl_->options;
  const std::string where = o.host + ":" + std::to_string(o.port);
  if (o.port == 0) {
    impl_->port = impl_->http.bind_to_any_port(o.host);
  } else if (impl_->http.bind_to_port(o.host, o.port)) {
    impl_->port = o.port;
  }
  if (impl_->port <= 0)
    throw InputError("cannot listen on " + where + ": " + std::string(std::strerror(errno)) +
                     " (is another server using the port? --port picks another)");
}

int Server::port() const { return impl_->port; }

void Server::run() {
  CF_CHECK(impl_->port > 0, "Server::run: bind() first");
  impl_->http.listen_after_bind();
}

void Server::shutdown(std::chrono::milliseconds grace) {
  Impl& s = *impl_;
  if (s.draining.exchange(true)) {
    s.cut_short = true;
    return;
  }
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (!s.scheduler.idle() && !s.cut_short && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  if (!s.scheduler.idle()) s.scheduler.abort_all("the server is shutting down");
  // Let the responses write their last bytes (the error event, the 503) before the listener closes.
  const auto write_deadline = std::chrono::steady_clock::now() + 5s;
  while (s.in_flight > 0 && std::chrono::steady_clock::now() < write_deadline) std::this_thread::sleep_for(10ms);
  s.http.stop();
}

}  // namespace cf::server
