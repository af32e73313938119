#include "clusterfusion/server/metrics.hpp"

#include <algorithm>
#include <cstdio>

namespace cf::server {

namespace {

std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

void sample(std::string& out, std::string_view name, std::string_view labels, double value) {
  out.append(name);
  if (!labels.empty()) out.append("{").append(labels).append("}");
  out.append(" ").append(number_text(value)).append("\n");
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  const size_t bucket = size_t(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, std::string_view name) const {
  const std::string bucket = std::string(name) + "_bucket";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    sample(out, bucket, "le=\"" + number_text(bounds_[i]) + "\"", double(cumulative));
  }
  sample(out, bucket, "le=\"+Inf\"", double(count_));
  sample(out, std::string(name) + "_sum", "", sum_);
  sample(out, std::string(name) + "_count", "", double(count_));
}

Metrics::Metrics()
    : time_to_first_token_({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      time_per_output_token_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}) {}

void Metrics::count_response(const std::string& endpoint, int status) {
  std::lock_guard lock(mutex_);
  ++responses_[{endpoint, status}];
}

void Metrics::record_outcome(const GenerationOutcome& o) {
  std::lock_guard lock(mutex_);
  ++finished_[size_t(o.finish)];
  prompt_tokens_ += uint64_t(o.prompt_tokens);
  completion_tokens_ += uint64_t(o.completion_tokens);
  if (o.completion_tokens > 0) time_to_first_token_.observe(o.first_token_seconds);
  if (o.completion_tokens > 1) time_per_output_token_.observe(o.decode_seconds / (o.completion_tokens - 1));
}

std::string Metrics::render(const SchedulerStats& s) const {
  std::lock_guard lock(mutex_);
  std::string out;
  header(out, "clusterfusion_http_responses_total", "counter", "HTTP responses by endpoint and status code.");
  for (const auto& [key, count] : responses_)
    sample(out, "clusterfusion_http_responses_total",
           "endpoint=\"" + key.first + "\",code=\"" + std::to_string(key.second) + "\"", double(count));

  header(out, "clusterfusion_requests_finished_total", "counter",
         "Generation requests that ended, by reason (stop, length, cancelled: the client went away, error).");
  for (FinishReason r : {FinishReason::Stop, FinishReason::Length, FinishReason::Cancelled, FinishReason::Error})
    sample(out, "clusterfusion_requests_finished_total", "reason=\"" + std::string(finish_reason_name(r)) + "\"",
           double(finished_[size_t(r)]));
  header(out, "clusterfusion_prompt_tokens_total", "counter", "Prompt tokens of finished requests.");
  sample(out, "clusterfusion_prompt_tokens_total", "", double(prompt_tokens_));
  header(out, "clusterfusion_generation_tokens_total", "counter", "Tokens generated for finished requests.");
  sample(out, "clusterfusion_generation_tokens_total", "", double(completion_tokens_));

  header(out, "clusterfusion_time_to_first_token_seconds", "histogram",
         "From a request's arrival to its first generated token.");
  time_to_first_token_.render(out, "clusterfusion_time_to_first_token_seconds");
  header(out, "clusterfusion_time_per_output_token_seconds", "histogram",
         "Average time between a request's generated tokens after the first.");
  time_per_output_token_.render(out, "clusterfusion_time_per_output_token_seconds");

  header(out, "clusterfusion_requests_running", "gauge", "Requests holding a sequence of the batch.");
  sample(out, "clusterfusion_requests_running", "", s.running);
  header(out, "clusterfusion_requests_queued", "gauge", "Requests waiting for a sequence (the queue depth).");
  sample(out, "clusterfusion_requests_queued", "", s.queued);
  header(out, "clusterfusion_batch_slots", "gauge", "Sequences decoded together at most (--max-batch).");
  sample(out, "clusterfusion_batch_slots", "", s.slots);
  header(out, "clusterfusion_kv_pages", "gauge", "Pages of the paged KV cache.");
  sample(out, "clusterfusion_kv_pages", "", s.kv_pages);
  header(out, "clusterfusion_kv_pages_in_use", "gauge", "KV pages held by sequences.");
  sample(out, "clusterfusion_kv_pages_in_use", "", s.kv_pages_in_use);
  header(out, "clusterfusion_decode_steps_total", "counter", "Lockstep decode steps run.");
  sample(out, "clusterfusion_decode_steps_total", "", double(s.decode_steps));
  header(out, "clusterfusion_decode_rows_total", "counter",
         "Sequences over all decode steps (divided by the steps: the average batch size).");
  sample(out, "clusterfusion_decode_rows_total", "", double(s.decode_rows));
  header(out, "clusterfusion_prefill_chunks_total", "counter", "Prompt chunks prefilled.");
  sample(out, "clusterfusion_prefill_chunks_total", "", double(s.prefill_chunks));
  return out;
}

}  // namespace cf::server
