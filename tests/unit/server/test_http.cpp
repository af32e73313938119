// The HTTP server in-process on a tiny random model (loopback, any free port): answers, SSE streams, errors as
// OpenAI error objects, the API key, the body cap, and clients that leave mid-request (their sequences and KV pages
// are freed). The Python tests (tests/server) run the real binary on the real model with the openai client.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <httplib.h>
#include <thread>

#include "clusterfusion/common/json.hpp"
#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/server/server.hpp"
#include "test_models.hpp"

namespace {

using namespace std::chrono_literals;

// Slows every forward call down, so that a request lasts long enough for a client to leave in the middle.
class SlowBackend final : public cf::Backend {
 public:
  explicit SlowBackend(std::unique_ptr<cf::Backend> inner) : inner_(std::move(inner)) {}
  std::string name() const override { return "slow"; }
  const cf::ModelConfig& config() const override { return inner_->config(); }
  const cf::KvCacheShape& kv_shape() const override { return inner_->kv_shape(); }
  int max_batch_tokens() const override { return inner_->max_batch_tokens(); }
  void forward(const cf::Batch& batch, float* logits) override {
    std::this_thread::sleep_for(3ms);
    inner_->forward(batch, logits);
  }

 private:
  std::unique_ptr<cf::Backend> inner_;
};

constexpr int kContext = 64;
constexpr const char* kKey = "test-key";

struct Harness {
  Harness() {
    auto c = cf::test::tiny_config();
    c.max_context = kContext;
    c.vocab = tokenizer->vocab_size();
    weights = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(c, 5, cf::DType::F32));
    cf::BackendOptions b;
    b.max_seqs = 2;
    runner = std::make_unique<cf::Runner>(std::make_unique<SlowBackend>(cf::create_backend("cpu", weights, b)), 2,
                                          kContext);
    cf::SchedulerOptions so;
    so.max_queue = 4;
    so.on_finish = [this](const cf::GenerationOutcome& o) { metrics.record_outcome(o); };
    scheduler = std::make_unique<cf::Scheduler>(*runner, tokenizer, so);
    cf::server::ServerOptions options;
    options.port = 0;
    options.api_key = kKey;
    options.max_body_bytes = 4096;
    options.http_threads = 8;
    options.policy.context = kContext;
    server = std::make_unique<cf::server::Server>(
        *scheduler, metrics, cf::server::ServedModel{"tiny", tokenizer, cf::ChatTemplate::by_name("chatml")}, options);
    server->bind();
    serving = std::thread([this] { server->run(); });
  }
  ~Harness() {
    server->shutdown(0ms);
    serving.join();
  }

  httplib::Client client() const {
    httplib::Client c("127.0.0.1", server->port());
    c.set_bearer_token_auth(kKey);
    c.set_read_timeout(20, 0);
    return c;
  }
  // Waits until no request is running and returns the KV pages still held.
  int pages_when_idle() {
    for (int i = 0; i < 1000 && !scheduler->idle(); ++i) std::this_thread::sleep_for(5ms);
    EXPECT_TRUE(scheduler->idle());
    return runner->kv_pages_in_use();
  }

  std::shared_ptr<cf::test::ByteTokenizer> tokenizer = std::make_shared<cf::test::ByteTokenizer>();
  std::shared_ptr<cf::ModelWeights> weights;
  std::unique_ptr<cf::Runner> runner;
  cf::server::Metrics metrics;
  std::unique_ptr<cf::Scheduler> scheduler;
  std::unique_ptr<cf::server::Server> server;
  std::thread serving;
};

const std::string kChat = R"({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 6, "temperature": 0})";

std::string error_message(const httplib::Result& r) {
  return cf::json::parse(r->body).at("error").at("message").as_string();
}

TEST(HttpServer, AnswersAndStreamsTheSameText) {
  Harness h;
  auto c = h.client();
  auto whole = c.Post("/v1/chat/completions", kChat, "application/json");
  ASSERT_TRUE(whole);
  ASSERT_EQ(whole->status, 200) << whole->body;
  const auto doc = cf::json::parse(whole->body);
  const std::string text = doc.at("choices").as_array().at(0).at("message").at("content").as_string();
  EXPECT_EQ(doc.at("usage").at("completion_tokens").as_int(), 6);

  std::string streamed_body = kChat;
  streamed_body.insert(streamed_body.size() - 1, R"(, "stream": true)");
  auto streamed = c.Post("/v1/chat/completions", streamed_body, "application/json");
  ASSERT_TRUE(streamed);
  ASSERT_EQ(streamed->status, 200);
  EXPECT_EQ(streamed->get_header_value("Content-Type"), "text/event-stream");
  std::string joined;
  size_t at = 0;
  bool done = false;
  while ((at = streamed->body.find("data: ", at)) != std::string::npos) {
    const size_t end = streamed->body.find("\n\n", at);
    ASSERT_NE(end, std::string::npos);
    const std::string data = streamed->body.substr(at + 6, end - at - 6);
    at = end;
    if (data == "[DONE]") {
      done = true;
      continue;
    }
    const auto chunk = cf::json::parse(data);
    const auto& delta = chunk.at("choices").as_array().at(0).at("delta");
    if (const auto* content = delta.find("content")) joined += content->as_string();
  }
  EXPECT_TRUE(done);
  EXPECT_EQ(joined, text) << streamed->body;
  EXPECT_EQ(h.pages_when_idle(), 0);
}

TEST(HttpServer, ErrorsAreOpenAiErrorObjects) {
  Harness h;
  auto c = h.client();
  auto bad_json = c.Post("/v1/chat/completions", "{\"messages\": [", "application/json");
  ASSERT_TRUE(bad_json);
  EXPECT_EQ(bad_json->status, 400);
  EXPECT_NE(error_message(bad_json).find("not valid JSON"), std::string::npos);
  auto not_json = c.Post("/v1/chat/completions", kChat, "text/plain");
  EXPECT_EQ(not_json->status, 415);
  auto too_big = c.Post("/v1/chat/completions", std::string(5000, ' ') + kChat, "application/json");
  ASSERT_TRUE(too_big);
  EXPECT_EQ(too_big->status, 413);
  EXPECT_NE(error_message(too_big).find("4096"), std::string::npos);
  auto nowhere = c.Get("/v2/anything");
  EXPECT_EQ(nowhere->status, 404);
  EXPECT_FALSE(error_message(nowhere).empty());
  auto past_context = c.Post("/v1/completions", R"({"prompt": "abc", "max_tokens": 64})", "application/json");
  EXPECT_EQ(past_context->status, 400);

  httplib::Client anonymous("127.0.0.1", h.server->port());
  auto no_key = anonymous.Post("/v1/chat/completions", kChat, "application/json");
  EXPECT_EQ(no_key->status, 401);
  EXPECT_EQ(no_key->get_header_value("WWW-Authenticate"), "Bearer");
  EXPECT_EQ(anonymous.Get("/metrics")->status, 401);
  EXPECT_EQ(anonymous.Get("/health")->status, 200);
  auto page = anonymous.Get("/");
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("<html"), std::string::npos);
  EXPECT_NE(page->get_header_value("Content-Security-Policy").find("default-src 'none'"), std::string::npos);
  // Still serving after all that.
  EXPECT_EQ(c.Post("/v1/chat/completions", kChat, "application/json")->status, 200);
}

// Sends a request on a raw socket, reads `read_bytes` of the answer (0: nothing), and closes the connection.
void leave_mid_request(int port, const std::string& body, size_t read_bytes) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const std::string request = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              "Authorization: Bearer " + std::string(kKey) + "\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(send(fd, request.data(), request.size(), 0), ssize_t(request.size()));
  std::string got;
  char buf[256];
  while (got.size() < read_bytes) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    ASSERT_GT(n, 0);
    got.append(buf, size_t(n));
  }
  std::this_thread::sleep_for(30ms);
  close(fd);
}

TEST(HttpServer, ClientsThatLeaveFreeTheirSequences) {
  Harness h;
  const std::string longer = R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 40)";
  leave_mid_request(h.server->port(), longer + R"(, "stream": true})", 400);  // a few chunks in
  leave_mid_request(h.server->port(), longer + "}", 0);                          // waiting for the whole answer
  EXPECT_EQ(h.pages_when_idle(), 0);
  const std::string metrics = h.metrics.render(h.scheduler->stats());
  EXPECT_NE(metrics.find("clusterfusion_requests_finished_total{reason=\"cancelled\"} 2\n"), std::string::npos)
      << metrics;
  EXPECT_EQ(h.client().Post("/v1/chat/completions", kChat, "application/json")->status, 200);
}

}  // namespace
