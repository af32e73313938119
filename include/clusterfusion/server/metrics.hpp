// The server's counters for GET /metrics, in Prometheus' text format (version 0.0.4): HTTP responses by endpoint and
// status, finished requests by reason, prompt and generated tokens, time to first token and time per output token
// (histograms), and the scheduler's gauges (running, queued, KV pages in use, batch sizes). Thread-safe.
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "clusterfusion/runtime/scheduler.hpp"

namespace cf::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  // The metric's lines: name_bucket{le="..."} (cumulative), name_sum, name_count.
  void render(std::string& out, std::string_view name) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  // endpoint: a route of the server ("/v1/chat/completions", ...) or "other".
  void count_response(const std::string& endpoint, int status);
  void record_outcome(const GenerationOutcome& outcome);
  std::string render(const SchedulerStats& scheduler) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> responses_;
  std::array<uint64_t, 4> finished_{};  // by FinishReason
  uint64_t prompt_tokens_ = 0, completion_tokens_ = 0;
  Histogram time_to_first_token_, time_per_output_token_;
};

}  // namespace cf::server
