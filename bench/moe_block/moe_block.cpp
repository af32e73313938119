// bench/moe_block: µs per call of the fused MoE FFN block (include/clusterfusion/kernels/moe: router + top-k selection
// + the chosen experts' and the shared experts' SwiGLU, three launches) at DeepSeek-V2-Lite's shapes (hidden 2048, 64
// experts, top 6, expert width 1408, 2 shared experts = 2816) with random weights made on the GPU: CUDA-graph replay
// with rotating weight sets, the bytes one call reads (router + the experts the batch chose, counted from the
// reported routing, + shared + norm + activations), GB/s and % of the read bandwidth measured in the same process.
// Prints a table and writes JSON (--json).
//
//   cf_bench_moe_block                                  # batch 1 and 16, fp16
//   cf_bench_moe_block --batch 1,4,16 --dtype fp16,bf16 --replays 40 --json out.json
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/cuda/device.hpp"
#include "clusterfusion/cuda/stream.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/kernels/moe/launch.hpp"
#include "common/args.hpp"
#include "common/gpu_timing.hpp"
#include "common/report.hpp"

namespace cf::bench {
namespace {

namespace kmoe = cf::kernels::moe;

kmoe::Shape v2_lite_shape() {
  kmoe::Shape s;
  s.hidden = 2048, s.n_experts = 64, s.top_k = 6, s.expert_ffn = 1408, s.shared_ffn = 2816;
  return s;
}

struct Options : GraphBenchOptions {
  std::vector<int> batches = {1, 16};
  std::vector<dev::DType> dtypes = {dev::DType::F16};
  Options() { json_path = "bench_moe_block.json"; }
};

const char* kUsage =
    "usage: cf_bench_moe_block [options]\n"
    "  --batch LIST          batch sizes (1..16; default 1,16)\n"
    "  --dtype LIST          fp16,bf16 (default fp16)\n"
    "  --calls N             calls per CUDA graph (default 20)\n"
    "  --replays N           timed graph replays (default 15)\n"
    "  --bandwidth-mib N     buffer size of the bandwidth measurement (default 1024)\n"
    "  --json PATH           where to write the JSON results (default bench_moe_block.json)\n";

Options parse_options(int argc, char** argv) {
  Options o;
  for (ArgReader args(argc, argv, kUsage); args.next();) {
    if (args.is("--batch")) {
      o.batches = parse_int_list(args.value(), "--batch", 1, kmoe::kMaxBatch);
    } else if (args.is("--dtype")) {
      o.dtypes.clear();
      for (const auto& v : parse_choices(args.value(), "--dtype", {"fp16", "bf16"}))
        o.dtypes.push_back(v == "fp16" ? dev::DType::F16 : dev::DType::BF16);
    } else if (!read_graph_bench_option(args, o)) {
      args.unknown();
    }
  }
  return o;
}

// One rotation set: the weights and activations of one call, and its plan.
struct Set {
  std::vector<dev::DeviceBuffer<uint16_t>> halves;
  dev::DeviceBuffer<float> router;
  dev::DeviceBuffer<int32_t> expert_ids;
  dev::DeviceBuffer<float> expert_weights;
  std::unique_ptr<kmoe::Plan> plan;
  kmoe::StepArgs step;
};

std::unique_ptr<Set> make_set(const kmoe::Shape& s, dev::DType dt, int batch, uint64_t seed, cudaStream_t stream) {
  auto set = std::make_unique<Set>();
  const size_t H = size_t(s.hidden), E = size_t(s.n_experts), F = size_t(s.expert_ffn), S = size_t(s.shared_ffn);
  const size_t B = size_t(batch);
  const FillType ft = dt == dev::DType::F16 ? FillType::F16 : FillType::BF16;
  set->halves.reserve(8);
  auto half_buf = [&](size_t n, const char* what, float lo, float hi, uint64_t k) -> uint16_t* {
    set->halves.emplace_back(n, what);
    uint16_t* p = set->halves.back().data();
    if (hi > lo) fill_random(p, n, ft, seed + k, lo, hi, stream);
    return p;
  };
  const float w_in = 2.0f / std::sqrt(float(H)), w_dn = 2.0f / std::sqrt(float(F)), w_sdn = 2.0f / std::sqrt(float(S));
  kmoe::PlanConfig cfg;
  cfg.dtype = dt;
  cfg.shape = s;
  cfg.max_batch = batch;
  cfg.weights.norm = half_buf(H, "norm", 0.5f, 1.5f, 1);
  cfg.weights.w_gate_up = half_buf(E * 2 * F * H, "w_gate_up", -w_in, w_in, 2);
  cfg.weights.w_down = half_buf(E * H * F, "w_down", -w_dn, w_dn, 3);
  cfg.weights.shared_gate_up = half_buf(2 * S * H, "shared_gate_up", -w_in, w_in, 4);
  cfg.weights.shared_down = half_buf(H * S, "shared_down", -w_sdn, w_sdn, 5);
  set->router = dev::DeviceBuffer<float>(E * H, "router");
  const float w_router = 3.0f / std::sqrt(float(H));
  fill_random(set->router.data(), E * H, FillType::F32, seed + 6, -w_router, w_router, stream);
  cfg.weights.router = set->router.data();
  set->expert_ids = dev::DeviceBuffer<int32_t>(B * size_t(s.top_k), "expert_ids");
  set->expert_weights = dev::DeviceBuffer<float>(B * size_t(s.top_k), "expert_weights");
  kmoe::StepArgs& a = set->step;
  a.batch = batch;
  a.hidden = half_buf(B * H, "hidden", -1.0f, 1.0f, 7);
  a.residual = half_buf(B * H, "residual", -1.0f, 1.0f, 8);
  a.residual_out = half_buf(B * H, "residual_out", 0, 0, 0);
  a.out = half_buf(B * H, "out", 0, 0, 0);
  a.expert_ids = set->expert_ids.data();
  a.expert_weights = set->expert_weights.data();
  CF_CUDA_CHECK(cudaStreamSynchronize(stream));
  set->plan = std::make_unique<kmoe::Plan>(cfg);
  return set;
}

// Bytes one call of a set reads: router, the distinct chosen experts, shared experts, norm, hidden + residual; plus
// residual_out + out written. Counted from the routing the set's call reported.
int64_t call_bytes(const kmoe::Shape& s, int batch, const std::vector<int32_t>& ids, int& distinct) {
  distinct = int(std::set<int32_t>(ids.begin(), ids.end()).size());
  const int64_t H = s.hidden;
  return 4 * int64_t(s.n_experts) * H + 2 * 3 * H * (int64_t(distinct) * s.expert_ffn + s.shared_ffn) + 2 * H +
         2 * 4 * int64_t(batch) * H;
}

struct Row {
  int batch = 0;
  dev::DType dtype = dev::DType::F16;
  std::string status = "ok", message, config;
  GraphTiming timing;
  int64_t bytes = 0;  // mean over the sets
  double distinct = 0;
};

void run_case(Row& row, const Options& opt, const cuda::DeviceInfo& device, cudaStream_t stream) {
  const kmoe::Shape s = v2_lite_shape();
  // rotate enough sets that the chosen experts of one pass exceed the L2 several times
  const int64_t per_call = 4 * int64_t(s.n_experts) * s.hidden +
                           2 * 3 * int64_t(s.hidden) * (int64_t(s.top_k) * s.expert_ffn + s.shared_ffn);
  const int n_sets = std::max(2, sets_to_defeat_l2(size_t(per_call), device.l2_bytes, 4));
  std::vector<std::unique_ptr<Set>> sets;
  for (int i = 0; i < n_sets; ++i) sets.push_back(make_set(s, row.dtype, row.batch, 1000 * uint64_t(i + 1), stream));
  row.config = sets[0]->plan->info().describe();
  // one eager call per set with poisoned outputs: every output written and finite, the routing for the byte count
  double bytes = 0, distinct = 0;
  for (auto& set : sets) {
    const size_t n = size_t(row.batch) * s.hidden;
    CF_CUDA_CHECK(cudaMemsetAsync(set->step.out, 0xFF, n * 2, stream));
    set->plan->run(set->step, stream);
    set->plan->check_status(stream);
    const FillType ft = row.dtype == dev::DType::F16 ? FillType::F16 : FillType::BF16;
    if (const size_t bad = count_non_finite(set->step.out, n, ft))
      throw Error(format("output has %zu non-finite values of %zu after one call", bad, n));
    int d = 0;
    bytes += double(call_bytes(s, row.batch, set->expert_ids.download(), d));
    distinct += d;
  }
  row.bytes = int64_t(bytes / n_sets);
  row.distinct = distinct / n_sets;
  row.timing = time_in_graph(stream, n_sets, opt.calls_per_graph, opt.warmup, opt.replays,
                             [&](cudaStream_t st, int i) { sets[size_t(i)]->plan->run(sets[size_t(i)]->step, st); });
  for (auto& set : sets) set->plan->check_status(stream);
}

}  // namespace

int main_impl(int argc, char** argv) {
  const Options opt = parse_options(argc, argv);
  const std::string no_gpu = cuda::gpu_unavailable_reason();
  if (!no_gpu.empty()) {
    std::fprintf(stderr, "cf_bench_moe_block: no usable CUDA GPU (%s)\n", no_gpu.c_str());
    return 2;
  }
  const cuda::DeviceInfo device = cuda::query_device();
  cuda::Stream stream;
  const Bandwidth bw = print_device_and_bandwidth(device, stream, opt.bandwidth_bytes);

  std::vector<Row> rows;
  for (dev::DType dt : opt.dtypes)
    for (int batch : opt.batches) {
      Row row;
      row.batch = batch;
      row.dtype = dt;
      try {
        run_case(row, opt, device, stream);
      } catch (const std::exception& e) {
        row.status = "failed";
        row.message = e.what();
        (void)cudaGetLastError();
      }
      std::printf("[%s] moe v2-lite %s b%d %s%s  %s\n", row.status.c_str(), dt == dev::DType::F16 ? "fp16" : "bf16",
                  batch, row.status == "ok" ? format("%.1f us", row.timing.us_per_call.median).c_str() : "",
                  row.message.c_str(), row.config.c_str());
      std::fflush(stdout);
      rows.push_back(row);
    }

  std::printf("\n");
  Table table({"case", "us/call", "min", "experts", "MB read", "GB/s", "% read bw", "floor us"}, 1);
  Json root = report_header("cf_bench_moe_block", device, bw);
  Json settings = Json::object();
  settings.set("calls_per_graph", opt.calls_per_graph);
  settings.set("replays", opt.replays);
  root.set("settings", settings);
  Json jrows = Json::array();
  bool any_failed = false;
  for (const Row& r : rows) {
    const std::string label = format("moe v2-lite %s b%d", r.dtype == dev::DType::F16 ? "fp16" : "bf16", r.batch);
    const double floor_us = double(r.bytes) / (bw.read_gbps * 1e3);
    Json j = Json::object();
    j.set("block", "moe");
    j.set("model", "deepseek-v2-lite");
    j.set("dtype", r.dtype == dev::DType::F16 ? "fp16" : "bf16");
    j.set("batch", r.batch);
    j.set("impl", "fused");
    j.set("status", r.status);
    j.set("message", r.message);
    j.set("config", r.config);
    any_failed |= r.status != "ok";
    if (r.status != "ok") {
      table.add_row({label, r.status, "", "", "", "", "", r.message.substr(0, 60)});
      jrows.push(j);
      continue;
    }
    const double us = r.timing.us_per_call.median, gbps = double(r.bytes) / (us * 1e3);
    table.add_row({label, format("%.1f", us), format("%.1f", r.timing.us_per_call.min), format("%.1f", r.distinct),
                   format("%.1f", double(r.bytes) / 1e6), format("%.0f", gbps),
                   format("%.1f%%", 100.0 * gbps / bw.read_gbps), format("%.1f", floor_us)});
    j.set("bytes", r.bytes);
    j.set("distinct_experts", r.distinct);
    j.set("floor_us", floor_us);
    j.set("us_median", us);
    j.set("us_min", r.timing.us_per_call.min);
    j.set("gbps", gbps);
    j.set("pct_read_bw", 100.0 * gbps / bw.read_gbps);
    j.set("n_sets", r.timing.n_sets);
    jrows.push(j);
  }
  std::printf("MoE FFN block, µs per call (median of %d CUDA-graph replays x %d calls); bytes = router + the distinct "
              "chosen experts + shared + activations; floor = bytes / measured read bandwidth %.0f GB/s\n",
              opt.replays, opt.calls_per_graph, bw.read_gbps);
  table.print();
  root.set("rows", jrows);
  write_file(opt.json_path, root.dump());
  std::printf("\nwrote %s\n", opt.json_path.c_str());
  return any_failed ? 1 : 0;
}

}  // namespace cf::bench

int main(int argc, char** argv) { return cf::bench::run_main("cf_bench_moe_block", cf::bench::main_impl, argc, argv); }
