// Aggregate generated tokens/s of a running `clusterfusion serve` with N concurrent streaming clients (N = 1, 4, 8 by
// default), and the ratio to one stream, measured in one run. Each client sends --rounds streamed chat requests one
// after the other (max_tokens --tokens, sampled, a long-story prompt so few end early) and counts the tokens the
// server reports in usage; time to first token is the time to the first text chunk.
//   cf_bench_serve_throughput --port 8080 [--host 127.0.0.1] [--streams 1,4,8] [--tokens 64] [--rounds 2]
//                             [--api-key KEY]
// bench/serve_throughput/run.sh starts a server on the default model and runs this.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <httplib.h>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/json.hpp"
#include "common/args.hpp"
#include "common/report.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string host = "127.0.0.1";
  int port = 8080;
  std::vector<int> streams = {1, 4, 8};
  int tokens = 64;
  int rounds = 2;
  std::string api_key;
};

struct RequestResult {
  int completion_tokens = 0;
  double ttft = 0;
  bool ok = false;
  std::string error;
};

httplib::Headers auth(const Options& o) {
  httplib::Headers h;
  if (!o.api_key.empty()) h.emplace("Authorization", "Bearer " + o.api_key);
  return h;
}

// One streamed request; reads the server-sent events as they arrive.
RequestResult stream_one(const Options& o, int seed) {
  static const char* topics[] = {"a lighthouse keeper", "a dragon", "a lost city", "a robot gardener",
                                 "a storm at sea", "a clockmaker", "a mountain village", "a comet"};
  cf::json::Writer body;
  body.begin_object();
  body.key("messages").begin_array().begin_object().key("role").value("user").key("content")
      .value(std::string("Write a long story about ") + topics[seed % 8] + ".").end_object().end_array();
  body.key("max_tokens").value(o.tokens).key("temperature").value(0.7).key("seed").value(seed);
  body.key("stream").value(true).key("stream_options").begin_object().key("include_usage").value(true).end_object();
  body.end_object();

  httplib::Client client(o.host, o.port);
  client.set_read_timeout(600, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.headers = auth(o);
  req.headers.emplace("Content-Type", "application/json");
  req.body = body.str();
  RequestResult r;
  std::string pending;
  const auto start = Clock::now();
  req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
    pending.append(data, len);
    size_t end;
    while ((end = pending.find("\n\n")) != std::string::npos) {
      const std::string event = pending.substr(0, end);
      pending.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0 || event == "data: [DONE]") continue;
      const auto chunk = cf::json::parse(std::string_view(event).substr(6));
      if (const auto* e = chunk.find("error")) {
        r.error = e->at("message").as_string();
        return false;
      }
      const auto& choices = chunk.at("choices").as_array();
      if (!choices.empty() && r.ttft == 0) {
        const auto* content = choices[0].at("delta").find("content");
        if (content && !content->as_string().empty())
          r.ttft = std::chrono::duration<double>(Clock::now() - start).count();
      }
      if (const auto* usage = chunk.find("usage"); usage && usage->is_object())
        r.completion_tokens = int(usage->at("completion_tokens").as_int());
    }
    return true;
  };
  const auto result = client.send(req);
  if (!result) {
    r.error = "connection failed: " + httplib::to_string(result.error());
  } else if (result->status != 200) {
    r.error = "HTTP " + std::to_string(result->status) + ": " + result->body;
  } else {
    r.ok = r.error.empty();
  }
  return r;
}

std::map<std::string, double> scrape_metrics(const Options& o) {
  httplib::Client client(o.host, o.port);
  auto r = client.Get("/metrics", auth(o));
  if (!r || r->status != 200) throw cf::Error("cannot read /metrics from the server");
  std::map<std::string, double> values;
  size_t at = 0;
  while (at < r->body.size()) {
    size_t end = r->body.find('\n', at);
    if (end == std::string::npos) end = r->body.size();
    const std::string line = r->body.substr(at, end - at);
    at = end + 1;
    const size_t space = line.rfind(' ');
    if (line.empty() || line[0] == '#' || space == std::string::npos) continue;
    values[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return values;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw cf::InputError(a + ": missing value");
      return argv[++i];
    };
    if (a == "--host") o.host = next();
    else if (a == "--port") o.port = cf::bench::parse_int(next(), "--port", 1, 65535);
    else if (a == "--tokens") o.tokens = cf::bench::parse_int(next(), "--tokens", 1, 1 << 16);
    else if (a == "--rounds") o.rounds = cf::bench::parse_int(next(), "--rounds", 1, 1000);
    else if (a == "--api-key") o.api_key = next();
    else if (a == "--streams") {
      o.streams.clear();
      for (const auto& s : cf::bench::split_list(next()))
        o.streams.push_back(cf::bench::parse_int(s, "--streams", 1, 256));
    } else {
      throw cf::InputError("unknown argument '" + a + "' (see the comment at the top of serve_throughput.cpp)");
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options o = parse(argc, argv);
    std::printf("# serve throughput, git %s, server %s:%d, %d tokens x %d rounds per stream\n",
                cf::bench::git_sha().c_str(), o.host.c_str(), o.port, o.tokens, o.rounds);
    stream_one(o, 0);  // warm-up (first-use costs, page faults of the KV cache)
    cf::bench::Table table({"streams", "requests", "tokens", "wall s", "tok/s", "tok/s/stream", "ttft ms (median)",
                            "batch (mean)", "ratio vs 1"});
    double base = 0;
    for (int n : o.streams) {
      const auto before = scrape_metrics(o);
      std::vector<std::vector<RequestResult>> results(static_cast<size_t>(n));
      const auto start = Clock::now();
      std::vector<std::thread> threads;
      for (int s = 0; s < n; ++s)
        threads.emplace_back([&, s] {
          for (int round = 0; round < o.rounds; ++round)
            results[size_t(s)].push_back(stream_one(o, 1 + s * 100 + round));
        });
      for (auto& t : threads) t.join();
      const double wall = std::chrono::duration<double>(Clock::now() - start).count();
      const auto after = scrape_metrics(o);
      int tokens = 0, requests = 0;
      std::vector<double> ttfts;
      for (const auto& stream : results)
        for (const auto& r : stream) {
          if (!r.ok) throw cf::Error("a request failed: " + r.error);
          tokens += r.completion_tokens;
          ttfts.push_back(r.ttft * 1e3);
          ++requests;
        }
      const double rate = tokens / wall;
      if (base == 0) base = rate;
      const double steps = after.at("clusterfusion_decode_steps_total") - before.at("clusterfusion_decode_steps_total");
      const double rows = after.at("clusterfusion_decode_rows_total") - before.at("clusterfusion_decode_rows_total");
      table.add_row({std::to_string(n), std::to_string(requests), std::to_string(tokens),
                     cf::bench::format("%.2f", wall), cf::bench::format("%.1f", rate),
                     cf::bench::format("%.1f", rate / n), cf::bench::format("%.0f", cf::bench::summarize(ttfts).median),
                     cf::bench::format("%.2f", steps > 0 ? rows / steps : 0), cf::bench::format("%.2f", rate / base)});
    }
    table.print();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cf_bench_serve_throughput: %s\n", e.what());
    return 1;
  }
}
