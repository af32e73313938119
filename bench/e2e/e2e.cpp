// bench/e2e: decode TPOT (ms per step) of the whole model, the cuda backend (fused cluster kernels) and the
// cuda-unfused backend (cuBLAS + simple kernels) in the same run, on random weights of the Llama-2-7B and Llama-3-8B
// shapes generated on the GPU (no download, no host copy), fp16, at context 1K / 4K / 16K and batch 1 / 4 / 16.
//
// What is timed is the backend's decode step as the runtime replays it: the step's CUDA graph (embedding gather,
// every layer, final norm + LM head), captured once per batch size and replayed with the page table of each
// context. Each batch size gets its own backend whose plans are made for that batch (max_seqs = the batch: a
// batch-1 row is timed with batch-1 plans, as the CLI decodes; --shared-plans sizes one backend for the largest).
// CUDA events around each replay, median over the replays. "forward ms" is the same step through
// Backend::forward() (staging the inputs, replay, logits back to the host, synchronisation): what a user waits per
// token. Bytes per step: every weight matrix and norm + the LM head, the KV cache read (batch x context positions)
// and written (the new token), the embedding rows; % of the read bandwidth measured in the same process.
//
//   cf_bench_e2e --quick                 # < 90 s on an H100: b1 at 1K/4K/16K, b4 and b16 at 1K, both models
//   cf_bench_e2e --models llama2 --ctx 1024,4096,16384 --batch 1,4,16 --json e2e.json
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/cuda/check.hpp"
#include "clusterfusion/cuda/device.hpp"
#include "clusterfusion/cuda/stream.hpp"
#include "clusterfusion/runtime/model.hpp"
#include "common/args.hpp"
#include "common/gpu_timing.hpp"
#include "common/report.hpp"
#include "cuda/gpu_backend.hpp"

namespace cf::bench {
namespace {

constexpr int kPageSize = 16;
constexpr uint64_t kWeightSeed = 7;
constexpr uint64_t kCacheSeed = 11;
constexpr double kMemoryHeadroom = 0.9;  // fraction of the free device memory the KV pool may take

// Issue 7's goals and the torch peer measured on one H100 (ANCHORS.md), Llama-2-7B batch 1 (ms per token).
struct Anchor {
  int ctx;
  double goal, torch_compile, torch_graph;
};
constexpr Anchor kLlama2Anchors[] = {{1024, 4.90, 5.53, 6.91}, {4096, 5.47, 6.13, 7.44}, {16384, 7.77, 8.16, 9.56}};

struct Case {
  int batch = 1;
  int ctx = 1024;
};

struct Options {
  std::vector<std::string> models = {"llama2-7b", "llama3-8b"};
  std::vector<Case> cases;   // empty: the product of ctx x batch
  std::vector<int> ctxs = {1024, 4096, 16384};
  std::vector<int> batches = {1, 4, 16};
  std::vector<CudaMode> modes = {CudaMode::Unfused, CudaMode::Fused};
  int replays = 20;
  int warmup = 3;
  int forward_reps = 5;
  size_t bandwidth_bytes = size_t(1) << 30;
  std::string json_path = "e2e.json";
  bool shared_plans = false;  // one backend for every batch size (plans for the largest), as a server would
};

const char* kUsage =
    "usage: cf_bench_e2e [options]\n"
    "  --quick             b1 at 1K/4K/16K, b4 and b16 at 1K, both models, both backends (< 90 s on an H100)\n"
    "  --models LIST       llama2,llama3 (default both)\n"
    "  --ctx LIST          context lengths (default 1024,4096,16384)\n"
    "  --batch LIST        batch sizes 1..16 (default 1,4,16); cases whose KV cache does not fit are skipped\n"
    "  --impl LIST         cuda,cuda-unfused (default both)\n"
    "  --replays N         timed graph replays per case (default 20)\n"
    "  --shared-plans      one backend sized for the largest batch (default: one per batch size, plans for it)\n"
    "  --json PATH         where to write the JSON results (default e2e.json)\n";

Options parse_options(int argc, char** argv) {
  Options o;
  for (ArgReader args(argc, argv, kUsage); args.next();) {
    if (args.is("--quick")) {
      o.cases = {{1, 1024}, {1, 4096}, {1, 16384}, {4, 1024}, {16, 1024}};
      o.replays = 15;
      o.forward_reps = 3;
    } else if (args.is("--models")) {
      o.models.clear();
      for (const auto& m : split_list(args.value())) o.models.push_back(canonical_model(m));
    } else if (args.is("--ctx")) {
      o.ctxs = parse_int_list(args.value(), "--ctx", 1, 1 << 20);
      o.cases.clear();
    } else if (args.is("--batch")) {
      o.batches = parse_int_list(args.value(), "--batch", 1, 16);
      o.cases.clear();
    } else if (args.is("--impl")) {
      o.modes.clear();
      for (const auto& v : parse_choices(args.value(), "--impl", {"cuda", "cuda-unfused"}))
        o.modes.push_back(v == "cuda" ? CudaMode::Fused : CudaMode::Unfused);
    } else if (args.is("--replays")) {
      o.replays = parse_int(args.value(), "--replays", 1, 100000);
    } else if (args.is("--json")) {
      o.json_path = args.value();
    } else if (args.is("--shared-plans")) {
      o.shared_plans = true;
    } else {
      args.unknown();
    }
  }
  if (o.cases.empty())
    for (int b : o.batches)
      for (int c : o.ctxs) o.cases.push_back({b, c});
  return o;
}

int pages_for(int positions) { return (positions + kPageSize - 1) / kPageSize; }

// A decode step of `batch` sequences that each hold `ctx` cached positions and append one token at position ctx.
// Sequence b owns pages [b * pages_per_seq, ...) of the pool.
Batch decode_batch(int batch, int ctx, int pages_per_seq, int vocab) {
  Batch b;
  b.kv_indptr.push_back(0);
  const int len = ctx + 1, pages = pages_for(len);
  for (int s = 0; s < batch; ++s) {
    b.tokens.push_back(int32_t((s * 7919 + 13) % vocab));
    b.positions.push_back(ctx);
    b.token_seq.push_back(s);
    b.kv_len.push_back(len);
    for (int p = 0; p < pages; ++p) b.kv_indices.push_back(s * pages_per_seq + p);
    b.kv_indptr.push_back(int32_t(b.kv_indices.size()));
    b.kv_last_page_len.push_back(len - (pages - 1) * kPageSize);
    b.kv_slot.push_back((s * pages_per_seq + (len - 1) / kPageSize) * kPageSize + (len - 1) % kPageSize);
    b.logit_tokens.push_back(s);
  }
  return b;
}

struct Row {
  std::string model, impl;
  int batch = 0, ctx = 0;
  std::string status = "ok", message;
  Stats ms;
  double forward_ms = NAN;
  double bytes = 0, gbps = 0, pct_read_bw = 0, floor_ms = 0, ratio_vs_unfused = NAN;
  size_t graph_nodes = 0;
  std::string launch;
};

double kv_bytes_per_position(const ModelConfig& c) { return 2.0 * c.n_layers * c.kv_dim() * 2.0; }  // K and V, fp16

// Writes the JSON report of the rows so far (after every case: a crash later still leaves the results).
void write_report(const Options& opt, const cuda::DeviceInfo& device, const Bandwidth& bw, const std::vector<Row>& rows,
                  std::chrono::steady_clock::time_point t_start) {
  Json j = Json::object();
  j.set("benchmark", "e2e");
  j.set("git_sha", git_sha());
  j.set("time", utc_now());
  j.set("device", device_json(device));
  Json jbw = Json::object();
  jbw.set("copy_gbps", bw.copy_gbps);
  jbw.set("read_gbps", bw.read_gbps);
  jbw.set("bytes", bw.bytes);
  j.set("bandwidth", jbw);
  Json anchors = Json::array();
  for (const Anchor& a : kLlama2Anchors) {
    Json ja = Json::object();
    ja.set("model", "llama2-7b");
    ja.set("batch", 1);
    ja.set("ctx", a.ctx);
    ja.set("goal_ms", a.goal);
    ja.set("torch_compile_graph_ms", a.torch_compile);
    ja.set("torch_graph_ms", a.torch_graph);
    anchors.push(ja);
  }
  j.set("anchors", anchors);
  Json jrows = Json::array();
  for (const Row& r : rows) {
    Json jr = Json::object();
    jr.set("model", r.model);
    jr.set("impl", r.impl);
    jr.set("batch", r.batch);
    jr.set("ctx", r.ctx);
    jr.set("status", r.status);
    if (!r.message.empty()) jr.set("message", r.message);
    jr.set("bytes", r.bytes);
    jr.set("floor_ms", r.floor_ms);
    if (r.status == "ok") {
      jr.set("ms_median", r.ms.median);
      jr.set("ms_min", r.ms.min);
      jr.set("ms_max", r.ms.max);
      jr.set("forward_ms", r.forward_ms);
      jr.set("tok_per_s", r.batch * 1e3 / r.ms.median);
      jr.set("gbps", r.gbps);
      jr.set("pct_read_bw", r.pct_read_bw);
      if (!std::isnan(r.ratio_vs_unfused)) jr.set("ratio_vs_unfused", r.ratio_vs_unfused);
      jr.set("graph_nodes", r.graph_nodes);
      jr.set("launch", r.launch);
    }
    jrows.push(jr);
  }
  j.set("rows", jrows);
  j.set("seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count());
  write_file(opt.json_path, j.dump());
}

int main_impl(int argc, char** argv) {
  const Options opt = parse_options(argc, argv);
  const auto t_start = std::chrono::steady_clock::now();
  const std::string no_gpu = cuda::gpu_unavailable_reason();
  if (!no_gpu.empty()) {
    std::fprintf(stderr, "cf_bench_e2e: no usable CUDA GPU (%s)\n", no_gpu.c_str());
    return 2;
  }
  const std::string why = cuda_backend_unavailable_reason();
  if (!why.empty()) {
    std::fprintf(stderr, "cf_bench_e2e: %s\n", why.c_str());
    return 2;
  }
  const cuda::DeviceInfo device = cuda::query_device();
  print_device(device);
  std::vector<Row> rows;
  Bandwidth bw;
  {
    cuda::Stream stream;
    bw = measure_bandwidth(stream, opt.bandwidth_bytes);
  }
  std::printf("bandwidth (%zu MiB buffers, median of %d): copy %.0f GB/s (read+write), read %.0f GB/s\n\n",
              bw.bytes >> 20, bw.read_ms.count, bw.copy_gbps, bw.read_gbps);

  for (const std::string& model_name : opt.models) {
    const ModelConfig config = model_preset(model_name);
    const auto t_model = std::chrono::steady_clock::now();
    auto model = gpu::DeviceModel::random(config, gpu::Storage::F16, kWeightSeed);
    size_t free_bytes = 0, total_bytes = 0;
    CF_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    // The KV pool holds the largest case that fits; cases beyond the memory are reported as skipped.
    const double per_page = kv_bytes_per_position(config) * kPageSize;
    std::vector<Case> fitting;
    int max_ctx = 0, max_batch = 0;
    int64_t pool_pages = 0;
    for (const Case& c : opt.cases) {
      const int64_t pages = int64_t(c.batch) * pages_for(c.ctx + 1);
      if (double(pages) * per_page > kMemoryHeadroom * double(free_bytes) - 2e9) {
        for (CudaMode mode : opt.modes) {
          Row r;
          r.model = model_name;
          r.impl = gpu::mode_name(mode);
          r.batch = c.batch;
          r.ctx = c.ctx;
          r.status = "skipped";
          r.message = format("KV cache of %.1f GB does not fit beside the weights (%.1f GB free)",
                             double(pages) * per_page / 1e9, double(free_bytes) / 1e9);
          rows.push_back(r);
        }
        continue;
      }
      fitting.push_back(c);
      max_ctx = std::max(max_ctx, c.ctx);
      max_batch = std::max(max_batch, c.batch);
    }
    if (fitting.empty()) continue;
    // Pages per sequence: the longest context; the pool: max over the cases of batch x that (sequences share ids).
    const int pages_per_seq = pages_for(max_ctx + 1);
    for (const Case& c : fitting) pool_pages = std::max<int64_t>(pool_pages, int64_t(c.batch) * pages_per_seq);
    // Fall back to per-case layout when the product is too big: pages_per_seq of the largest batch at its context.
    if (double(pool_pages) * per_page > kMemoryHeadroom * double(free_bytes) - 2e9) {
      pool_pages = 0;
      for (const Case& c : fitting) pool_pages = std::max<int64_t>(pool_pages, int64_t(c.batch) * pages_for(c.ctx + 1));
    }
    gpu::GpuOptions g;
    g.page_size = kPageSize;
    g.kv_pages = int(pool_pages);
    g.max_seqs = max_batch;
    g.max_batch_tokens = max_batch;  // no prefill here: keeps the activation and logit buffers small
    g.max_positions = max_ctx + 1;
    KvCacheShape kv_shape = g.kv_shape(config);
    auto kv = std::make_shared<gpu::DeviceKvCache>(kv_shape);
    kv->fill_random(gpu::Storage::F16, kCacheSeed, nullptr);
    CF_CUDA_CHECK(cudaDeviceSynchronize());
    std::printf("%s: %.2f GB of weights, KV pool %.2f GB (%lld pages of %d), set up in %.1f s\n",
                config.name.c_str(), double(model->device_bytes()) / 1e9, double(kv->bytes()) / 1e9,
                (long long)pool_pages, kPageSize,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t_model).count());

    std::map<std::pair<int, int>, double> unfused_ms;
    // The backends: one per batch size (its plans made for that batch), or one for all (--shared-plans).
    std::vector<int> plan_batches;
    for (const Case& c : fitting)
      if (std::find(plan_batches.begin(), plan_batches.end(), c.batch) == plan_batches.end())
        plan_batches.push_back(c.batch);
    if (opt.shared_plans) plan_batches = {max_batch};
    for (CudaMode mode : opt.modes) {
      for (int plan_batch : plan_batches) {
        std::unique_ptr<gpu::GpuBackend> backend;
        std::string setup_error;
        gpu::GpuOptions gb = g;
        gb.max_seqs = plan_batch;
        gb.max_batch_tokens = plan_batch;
        try {
          backend = std::make_unique<gpu::GpuBackend>(mode, model, kv, gb);
        } catch (const std::exception& e) {
          setup_error = e.what();
        }
        for (const Case& c : fitting) {
          if (!opt.shared_plans && c.batch != plan_batch) continue;
          Row r;
          r.model = model_name;
          r.impl = gpu::mode_name(mode);
          r.batch = c.batch;
          r.ctx = c.ctx;
          const double kv_read = double(c.batch) * c.ctx * kv_bytes_per_position(config);
          const double kv_write = double(c.batch) * kv_bytes_per_position(config);
          r.bytes = double(model->step_weight_bytes()) + kv_read + kv_write + 2.0 * c.batch * config.hidden;
          r.floor_ms = r.bytes / (bw.read_gbps * 1e9) * 1e3;
          if (!backend) {
            r.status = "failed";
            r.message = "setup: " + setup_error;
            rows.push_back(r);
            continue;
          }
          const int pps = int(pool_pages / c.batch) >= pages_per_seq ? pages_per_seq : pages_for(c.ctx + 1);
          try {
            const Batch batch = decode_batch(c.batch, c.ctx, pps, config.vocab);
            backend->stage_decode(batch);
            for (int i = 0; i < opt.warmup; ++i) backend->replay_decode(c.batch);
            backend->check_status();
            std::vector<cuda::Event> start(size_t(opt.replays)), stop(size_t(opt.replays));
            for (int i = 0; i < opt.replays; ++i) {
              start[size_t(i)].record(backend->stream());
              backend->replay_decode(c.batch);
              stop[size_t(i)].record(backend->stream());
            }
            CF_CUDA_CHECK(cudaStreamSynchronize(backend->stream()));
            std::vector<double> ms;
            for (int i = 0; i < opt.replays; ++i) ms.push_back(stop[size_t(i)].elapsed_ms_since(start[size_t(i)]));
            r.ms = summarize(ms);
            backend->check_status();
            // The same step through forward(): staging, replay, logits to the host.
            std::vector<float> logits(size_t(c.batch) * size_t(config.vocab));
            std::vector<double> fwd;
            for (int i = 0; i < opt.forward_reps; ++i) {
              const auto t0 = std::chrono::steady_clock::now();
              backend->forward(batch, logits.data());
              fwd.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
            }
            r.forward_ms = summarize(fwd).median;
            size_t non_finite = 0;
            for (float x : logits) non_finite += std::isfinite(x) ? 0 : 1;
            if (non_finite > 0) {
              r.status = "failed";
              r.message = format("%zu non-finite logits", non_finite);
            }
            r.gbps = r.bytes / (r.ms.median * 1e-3) / 1e9;
            r.pct_read_bw = 100.0 * r.gbps / bw.read_gbps;
            r.graph_nodes = backend->graph_nodes(c.batch);
            r.launch = backend->describe(c.batch);
            if (mode == CudaMode::Unfused) unfused_ms[{c.batch, c.ctx}] = r.ms.median;
            auto it = unfused_ms.find({c.batch, c.ctx});
            if (mode == CudaMode::Fused && it != unfused_ms.end()) r.ratio_vs_unfused = it->second / r.ms.median;
          } catch (const std::exception& e) {
            r.status = "failed";
            r.message = e.what();
          }
          std::printf("  %-10s %-13s b%-2d ctx %-6d %s\n", model_name.c_str(), r.impl.c_str(), c.batch, c.ctx,
                      r.status == "ok" ? format("%8.3f ms/step (forward %.3f ms), %5.1f%% of read bandwidth",
                                                r.ms.median, r.forward_ms, r.pct_read_bw).c_str()
                                       : (r.status + ": " + r.message).c_str());
          std::fflush(stdout);
          rows.push_back(r);
          write_report(opt, device, bw, rows, t_start);
        }
      }
    }
  }

  // ---- report ----
  std::printf("\n");
  Table table({"model", "impl", "batch", "ctx", "ms/step", "tok/s", "forward ms", "GB/step", "GB/s", "%read bw",
               "floor ms", "x unfused"},
              2);
  for (const Row& r : rows) {
    if (r.status != "ok") {
      table.add_row({r.model, r.impl, std::to_string(r.batch), std::to_string(r.ctx), r.status, "", "", "", "", "",
                     "", r.message.substr(0, 60)});
      continue;
    }
    table.add_row({r.model, r.impl, std::to_string(r.batch), std::to_string(r.ctx), format("%.3f", r.ms.median),
                   format("%.0f", r.batch * 1e3 / r.ms.median), format("%.3f", r.forward_ms),
                   format("%.2f", r.bytes / 1e9), format("%.0f", r.gbps), format("%.1f%%", r.pct_read_bw),
                   format("%.2f", r.floor_ms),
                   std::isnan(r.ratio_vs_unfused) ? std::string("-") : format("%.2f", r.ratio_vs_unfused)});
  }
  table.print();
  std::printf("\nLlama-2-7B batch 1 (ms/token): goal / torch.compile+graph / torch graph (ANCHORS.md, one H100)\n");
  for (const Anchor& a : kLlama2Anchors) {
    std::string ours;
    for (const Row& r : rows)
      if (r.model == "llama2-7b" && r.batch == 1 && r.ctx == a.ctx && r.status == "ok")
        ours += format("  %s %.3f", r.impl.c_str(), r.ms.median);
    std::printf("  ctx %-6d goal %.2f  torch.compile %.2f  torch graph %.2f |%s\n", a.ctx, a.goal, a.torch_compile,
                a.torch_graph, ours.c_str());
  }

  write_report(opt, device, bw, rows, t_start);
  std::printf("\nwrote %s (%.1f s)\n", opt.json_path.c_str(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count());
  for (const Row& r : rows)
    if (r.status == "failed") return 1;
  return 0;
}

}  // namespace
}  // namespace cf::bench

int main(int argc, char** argv) {
  try {
    return cf::bench::main_impl(argc, argv);
  } catch (const cf::InputError& e) {
    std::fprintf(stderr, "cf_bench_e2e: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cf_bench_e2e: error: %s\n", e.what());
    return 1;
  }
}
