// bench/decoder_attention: µs per call of the decoder attention block (CUDA-graph replay, rotating input sets),
// bytes moved, GB/s and % of the read bandwidth measured in the same process, per implementation (cuda-unfused now;
// the fused kernel through the hook in impl.hpp), for Llama-2-7B / Llama-3-8B shapes at several KV lengths and
// batch sizes. Prints tables and writes JSON (--json).
//
//   cf_bench_decoder_attention                 # --quick: both models, KV 1K/4K/16K, batch 1/4/16, fp16 (< 60 s)
//   cf_bench_decoder_attention --models llama2 --kv 1024 --batch 1 --replays 50 --json out.json
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/cuda/device.hpp"
#include "clusterfusion/cuda/stream.hpp"
#include "common/args.hpp"
#include "common/gpu_timing.hpp"
#include "common/report.hpp"
#include "decoder_attention/impl.hpp"

namespace cf::bench {

// ---- case arithmetic -------------------------------------------------------------------------------------------

std::string AttentionBenchCase::label() const {
  return format("%s %s b%d kv%d p%d", model.c_str(), cuda_unfused::dtype_name(dtype), batch, kv_len, page_size);
}
int64_t AttentionBenchCase::weight_bytes() const {
  const int64_t qkv_rows = shape.q_dim() + 2 * shape.kv_dim();
  return 2 * (int64_t(shape.hidden) + qkv_rows * shape.hidden + int64_t(shape.hidden) * shape.q_dim());
}
int64_t AttentionBenchCase::kv_read_bytes() const { return 2 * 2 * int64_t(batch) * kv_len * shape.kv_dim(); }
int64_t AttentionBenchCase::kv_write_bytes() const { return 2 * 2 * int64_t(batch) * shape.kv_dim(); }
int64_t AttentionBenchCase::activation_bytes() const { return 2 * 4 * int64_t(batch) * shape.hidden; }

namespace {

namespace cu = cuda_unfused;

ref::DecoderShape model_shape(const std::string& model) {
  ref::DecoderShape s;
  s.hidden = 4096;
  s.n_heads = 32;
  s.head_dim = 128;
  s.rot_dim = 128;
  s.rope_style = RopeStyle::NeoX;
  s.eps = 1e-5f;
  if (model == "llama2-7b") {
    s.n_kv_heads = 32;
    s.ffn_hidden = 11008;
    s.rope_theta = 10000.0f;
  } else if (model == "llama3-8b") {
    s.n_kv_heads = 8;
    s.ffn_hidden = 14336;
    s.rope_theta = 500000.0f;
  } else if (model == "smollm2-135m") {
    s.hidden = 576;
    s.n_heads = 9;
    s.n_kv_heads = 3;
    s.head_dim = 64;
    s.rot_dim = 64;
    s.ffn_hidden = 1536;
    s.rope_theta = 100000.0f;
  } else {
    throw InputError("--models: unknown model '" + model + "' (known: llama2, llama3, smollm2)");
  }
  return s;
}

// ---- command line ----------------------------------------------------------------------------------------------

struct Options : GraphBenchOptions {
  std::vector<std::string> models = {"llama2-7b", "llama3-8b"};
  std::vector<int> kv_lens = {1024, 4096, 16384};
  std::vector<int> batches = {1, 4, 16};
  std::vector<cu::DType> dtypes = {cu::DType::F16};
  std::vector<std::string> impls;  // empty = all available
  int page_size = 16;
  bool breakdown = true;
  FusedOptions fused;
  Options() { json_path = "bench_decoder_attention.json"; }
};

const char* kUsage =
    "usage: cf_bench_decoder_attention [options]\n"
    "  --quick               default: llama2,llama3 x KV 1024,4096,16384 x batch 1,4,16, fp16, 15 replays\n"
    "  --full                40 replays, fp16 and bf16\n"
    "  --models LIST         llama2,llama3,smollm2\n"
    "  --kv LIST             KV lengths (entries attended, the new token included)\n"
    "  --batch LIST          batch sizes (1..16 typical)\n"
    "  --dtype LIST          fp16,bf16\n"
    "  --page-size N         KV page size (default 16)\n"
    "  --impl LIST           implementations to run (default: all available: cuda-unfused, fused when hooked)\n"
    "  --calls N             calls per CUDA graph (default 20)\n"
    "  --replays N           timed graph replays (default 15)\n"
    "  --no-breakdown        skip the per-stage timing\n"
    "  --bandwidth-mib N     buffer size of the bandwidth measurement (default 1024)\n"
    "  --json PATH           where to write the JSON results (default bench_decoder_attention.json)\n"
    "fused kernel (PlanConfig fields; the defaults are the plan's own choices):\n"
    "  --cluster-size N      2, 4, 8 or 16 CTAs per cluster (default: the one-wave choice, device occupancy)\n"
    "  --max-stages N        ring depth cap, 4..16 (default: as many as fit)\n"
    "  --early-stages N      ring items issued before the norm is done (default 4)\n"
    "  --wait-budget-us N    a wait inside the kernel gives up after N us (default 20000; 0 = never)\n";

Options parse_options(int argc, char** argv) {
  Options o;
  for (ArgReader args(argc, argv, kUsage); args.next();) {
    if (args.is("--quick")) {
      // the defaults
    } else if (args.is("--full")) {
      o.replays = 40;
      o.dtypes = {cu::DType::F16, cu::DType::BF16};
    } else if (args.is("--models")) {
      o.models.clear();
      for (const auto& m : split_list(args.value())) o.models.push_back(canonical_model(m));
    } else if (args.is("--kv")) {
      o.kv_lens = parse_int_list(args.value(), "--kv", 1, 1 << 20);
    } else if (args.is("--batch")) {
      o.batches = parse_int_list(args.value(), "--batch", 1, 256);
    } else if (args.is("--dtype")) {
      o.dtypes.clear();
      for (const auto& v : parse_choices(args.value(), "--dtype", {"fp16", "bf16"}))
        o.dtypes.push_back(v == "fp16" ? cu::DType::F16 : cu::DType::BF16);
    } else if (args.is("--page-size")) {
      o.page_size = parse_int(args.value(), "--page-size", 1, 1 << 20);
    } else if (args.is("--impl")) {
      o.impls = split_list(args.value());  // checked against the available implementations' names in main_impl
    } else if (args.is("--no-breakdown")) {
      o.breakdown = false;
    } else if (args.is("--cluster-size")) {
      o.fused.cluster_size = parse_int(args.value(), "--cluster-size", 2, 16);
      if (o.fused.cluster_size & (o.fused.cluster_size - 1))
        throw InputError("--cluster-size: " + std::to_string(o.fused.cluster_size) + " is not 2, 4, 8 or 16");
    } else if (args.is("--max-stages")) {
      o.fused.max_stages = parse_int(args.value(), "--max-stages", 4, 16);
    } else if (args.is("--early-stages")) {
      o.fused.early_stages = parse_int(args.value(), "--early-stages", 0, 1 << 20);
    } else if (args.is("--wait-budget-us")) {
      o.fused.wait_budget_us = parse_int(args.value(), "--wait-budget-us", 0, 1 << 30);
    } else if (!read_graph_bench_option(args, o)) {
      args.unknown();
    }
  }
  if (o.models.empty() || o.kv_lens.empty() || o.batches.empty() || o.dtypes.empty())
    throw InputError("empty --models / --kv / --batch / --dtype list");
  return o;
}

// ---- device data of one case -----------------------------------------------------------------------------------

struct CaseData {
  AttentionBenchInputs inputs;
  std::vector<dev::DeviceBuffer<uint16_t>> buffers;  // everything of every set
  dev::DeviceBuffer<int32_t> indptr, indices, last_page_len, positions;
  dev::DeviceBuffer<float> rope;
};

int pages_per_sequence(const AttentionBenchCase& c) { return (c.kv_len + c.page_size - 1) / c.page_size; }

size_t bytes_per_set(const AttentionBenchCase& c) {
  const size_t pool = size_t(c.batch) * pages_per_sequence(c) * c.page_size * c.shape.kv_dim();
  return size_t(c.weight_bytes()) + 2 * 2 * pool + size_t(2 * 4 * c.batch * c.shape.hidden);
}

std::unique_ptr<CaseData> make_case_data(const AttentionBenchCase& c, int n_sets, cudaStream_t stream) {
  auto d = std::make_unique<CaseData>();
  d->inputs.c = c;
  const auto& s = c.shape;
  const int pages_per_seq = pages_per_sequence(c);
  const int n_pages = c.batch * pages_per_seq;
  const size_t pool_elements = size_t(n_pages) * c.page_size * s.kv_dim();
  const cuda_unfused::DType dt = c.dtype;
  const FillType ft = dt == cu::DType::F16 ? FillType::F16 : FillType::BF16;
  auto alloc = [&](size_t n, const char* what, float lo, float hi, uint64_t seed) -> uint16_t* {
    d->buffers.emplace_back(n, what);
    uint16_t* p = d->buffers.back().data();
    if (hi > lo) fill_random(p, n, ft, seed, lo, hi, stream);
    return p;
  };
  const float w_in = 2.0f / std::sqrt(float(s.hidden)), w_o = 2.0f / std::sqrt(float(s.q_dim()));
  for (int set = 0; set < n_sets; ++set) {
    const uint64_t seed = 1000 * uint64_t(set + 1);
    AttentionDeviceSet ds;
    ds.norm = alloc(size_t(s.hidden), "norm", 0.5f, 1.5f, seed + 1);
    ds.w_qkv = alloc(size_t(s.q_dim() + 2 * s.kv_dim()) * s.hidden, "w_qkv", -w_in, w_in, seed + 2);
    ds.w_o = alloc(size_t(s.hidden) * s.q_dim(), "w_o", -w_o, w_o, seed + 3);
    ds.hidden = alloc(size_t(c.batch) * s.hidden, "hidden", -1.0f, 1.0f, seed + 4);
    ds.residual = alloc(size_t(c.batch) * s.hidden, "residual", -1.0f, 1.0f, seed + 5);
    ds.residual_out = alloc(size_t(c.batch) * s.hidden, "residual_out", 0, 0, 0);
    ds.out = alloc(size_t(c.batch) * s.hidden, "out", 0, 0, 0);
    ds.k_pages = alloc(pool_elements, "k cache", -1.0f, 1.0f, seed + 6);
    ds.v_pages = alloc(pool_elements, "v cache", -1.0f, 1.0f, seed + 7);
    d->inputs.sets.push_back(ds);
  }
  // Sequence b owns pages [b * pages_per_seq, (b + 1) * pages_per_seq), its last one filled to the remainder.
  std::vector<int32_t> indptr, indices, last, positions;
  for (int b = 0; b <= c.batch; ++b) indptr.push_back(b * pages_per_seq);
  for (int i = 0; i < n_pages; ++i) indices.push_back(i);
  for (int b = 0; b < c.batch; ++b) {
    last.push_back(c.kv_len - (pages_per_seq - 1) * c.page_size);
    positions.push_back(c.kv_len - 1);
  }
  d->indptr = dev::to_device(indptr, "kv_indptr");
  d->indices = dev::to_device(indices, "kv_indices");
  d->last_page_len = dev::to_device(last, "kv_last_page_len");
  d->positions = dev::to_device(positions, "positions");
  d->rope = dev::to_device(cu::make_rope_table(s.rot_dim, s.rope_theta, c.kv_len), "rope table");
  d->inputs.n_pages = n_pages;
  d->inputs.kv_indptr = d->indptr.data();
  d->inputs.kv_indices = d->indices.data();
  d->inputs.kv_last_page_len = d->last_page_len.data();
  d->inputs.n_indices = n_pages;
  d->inputs.positions = d->positions.data();
  d->inputs.rope_cos_sin = d->rope.data();
  d->inputs.rope_max_positions = c.kv_len;
  CF_CUDA_CHECK(cudaStreamSynchronize(stream));
  return d;
}

std::vector<float> download_out(const AttentionBenchInputs& in) {
  const size_t n = size_t(in.c.batch) * in.c.shape.hidden;
  std::vector<uint16_t> bits(n);
  CF_CUDA_CHECK(cudaDeviceSynchronize());
  CF_CUDA_CHECK(cudaMemcpy(bits.data(), in.sets[0].out, n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i)
    out[i] = in.c.dtype == cu::DType::F16 ? f16_bits_to_float(bits[i]) : bf16_bits_to_float(bits[i]);
  return out;
}

// ---- one row ---------------------------------------------------------------------------------------------------

struct Row {
  AttentionBenchCase c;
  std::string impl;
  std::string status = "ok";  // ok | skipped | failed
  std::string message;
  GraphTiming timing;
  std::vector<std::pair<std::string, double>> stages;  // median µs per stage
  double ratio_vs_unfused = NAN;
  double max_diff_vs_unfused = NAN;
  double out_rms = NAN;
  Json plan;  // what the implementation's plan decided (fused: cluster size, max active clusters, ...)
};

double rms_of(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += double(x) * x;
  return v.empty() ? 0.0 : std::sqrt(s / double(v.size()));
}

void run_impl(AttentionBlockImpl& impl, CaseData& data, const Options& opt, cudaStream_t stream, Row& row,
              std::vector<float>& out_host) {
  AttentionBenchInputs& in = data.inputs;
  impl.prepare(in);
  // One eager call on set 0 with a poisoned output: proves every output element is written and finite.
  CF_CUDA_CHECK(cudaMemsetAsync(in.sets[0].out, 0xFF, size_t(in.c.batch) * in.c.shape.hidden * 2, stream));
  impl.enqueue(in, 0, stream);
  impl.check(stream);
  out_host = download_out(in);
  const size_t bad = size_t(std::count_if(out_host.begin(), out_host.end(), [](float v) { return !std::isfinite(v); }));
  if (bad) throw Error(format("output has %zu non-finite values of %zu after one call", bad, out_host.size()));
  row.out_rms = rms_of(out_host);
  const int n_sets = int(in.sets.size());
  row.timing = time_in_graph(stream, n_sets, opt.calls_per_graph, opt.warmup, opt.replays,
                             [&](cudaStream_t st, int set) { impl.enqueue(in, set, st); });
  impl.check(stream);
  if (opt.breakdown) {
    for (auto& [name, fn] : impl.stages(in)) {
      const GraphTiming t = time_in_graph(stream, n_sets, opt.calls_per_graph, 1, std::max(3, opt.replays / 3),
                                            [&fn = fn](cudaStream_t st, int set) { fn(set, st); });
      row.stages.emplace_back(name, t.us_per_call.median);
    }
    impl.check(stream);
  }
  row.plan = impl.plan_json();
  impl.release();
}

}  // namespace

int main_impl(int argc, char** argv) {
  const Options opt = parse_options(argc, argv);
  const std::string no_gpu = cuda::gpu_unavailable_reason();
  if (!no_gpu.empty()) {
    std::fprintf(stderr, "cf_bench_decoder_attention: no usable CUDA GPU (%s)\n", no_gpu.c_str());
    return 2;
  }
  const cuda::DeviceInfo device = cuda::query_device();
  print_device(device);
  cuda::Stream stream;

  const Bandwidth bw = measure_bandwidth(stream, opt.bandwidth_bytes);
  std::printf("bandwidth (%zu MiB buffers, median of %d): copy %.0f GB/s (read+write), read %.0f GB/s\n\n",
              bw.bytes >> 20, bw.read_ms.count, bw.copy_gbps, bw.read_gbps);

  std::vector<std::unique_ptr<AttentionBlockImpl>> impls;
  impls.push_back(make_unfused_impl());
  impls.push_back(make_fused_impl(opt.fused));
  if (!opt.impls.empty()) {
    std::vector<std::unique_ptr<AttentionBlockImpl>> chosen;
    for (auto& impl : impls)
      if (std::find(opt.impls.begin(), opt.impls.end(), impl->name()) != opt.impls.end()) chosen.push_back(std::move(impl));
    for (const auto& want : opt.impls) {
      bool found = false;
      for (const auto& impl : chosen) found |= impl->name() == want;
      if (!found) std::printf("note: implementation '%s' is not available in this build\n", want.c_str());
    }
    impls = std::move(chosen);
  }
  if (impls.empty()) throw InputError("--impl: none of the requested implementations is available");

  std::vector<Row> rows;
  for (const auto& model : opt.models)
    for (cu::DType dtype : opt.dtypes)
      for (int kv_len : opt.kv_lens)
        for (int batch : opt.batches) {
          AttentionBenchCase c;
          c.model = model;
          c.shape = model_shape(model);
          c.dtype = dtype;
          c.batch = batch;
          c.kv_len = kv_len;
          c.page_size = opt.page_size;
          const size_t per_set = bytes_per_set(c);
          size_t free_bytes = 0, total_bytes = 0;
          CF_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
          int n_sets = sets_to_defeat_l2(size_t(c.total_bytes()), device.l2_bytes);
          while (n_sets > 1 && double(per_set) * n_sets > 0.7 * double(free_bytes)) --n_sets;
          std::unique_ptr<CaseData> data;
          std::string setup_error;
          if (double(per_set) > 0.7 * double(free_bytes)) {
            setup_error = format("needs %.1f GiB, %.1f GiB free", double(per_set) / double(1u << 30),
                                 double(free_bytes) / double(1u << 30));
          } else {
            try {
              data = make_case_data(c, n_sets, stream);
            } catch (const std::exception& e) {
              setup_error = std::string("setup failed: ") + e.what();
            }
          }
          std::vector<float> unfused_out;
          double unfused_us = NAN;
          for (auto& impl : impls) {
            Row row;
            row.c = c;
            row.impl = impl->name();
            const std::string unsupported = impl->unsupported_reason(c);
            if (!setup_error.empty()) {
              row.status = "skipped";
              row.message = setup_error;
            } else if (!unsupported.empty()) {
              row.status = "skipped";
              row.message = unsupported;
            } else {
              std::vector<float> out;
              try {
                run_impl(*impl, *data, opt, stream, row, out);
              } catch (const std::exception& e) {
                row.status = "failed";
                row.message = e.what();
                row.plan = impl->plan_json();
                try {
                  impl->release();
                } catch (...) {
                }
                (void)cudaGetLastError();
              }
              if (row.status == "ok") {
                if (row.impl == "cuda-unfused") {
                  unfused_out = out;
                  unfused_us = row.timing.us_per_call.median;
                } else if (!unfused_out.empty()) {
                  row.ratio_vs_unfused = row.timing.us_per_call.median / unfused_us;
                  double diff = 0;
                  for (size_t i = 0; i < out.size(); ++i) diff = std::max(diff, double(std::fabs(out[i] - unfused_out[i])));
                  row.max_diff_vs_unfused = diff;
                }
              }
            }
            std::printf("[%s] %-34s %-13s %s%s%s\n", row.status.c_str(), c.label().c_str(), row.impl.c_str(),
                        row.status == "ok" ? format("%.1f us", row.timing.us_per_call.median).c_str() : "",
                        row.message.empty() ? "" : " ", row.message.c_str());
            std::fflush(stdout);
            rows.push_back(std::move(row));
          }
        }

  // ---- tables ----
  std::printf("\n");
  Table table({"case", "impl", "us/call", "min", "MB moved", "GB/s", "% read bw", "floor us", "x unfused",
               "max|d| vs unfused", "sets"},
              2);
  std::string last_case;
  for (const Row& r : rows) {
    if (!last_case.empty() && r.c.label() != last_case) table.add_separator();
    last_case = r.c.label();
    const double mb = double(r.c.total_bytes()) / 1e6;
    const double floor_us = double(r.c.total_bytes()) / (bw.read_gbps * 1e3);
    if (r.status != "ok") {
      table.add_row({r.c.label(), r.impl, r.status, "", format("%.1f", mb), "", "", format("%.1f", floor_us), "", r.message, ""});
      continue;
    }
    const double us = r.timing.us_per_call.median;
    const double gbps = double(r.c.total_bytes()) / (us * 1e3);
    table.add_row({r.c.label(), r.impl, format("%.1f", us), format("%.1f", r.timing.us_per_call.min), format("%.1f", mb),
                   format("%.0f", gbps), format("%.1f%%", 100.0 * gbps / bw.read_gbps), format("%.1f", floor_us),
                   std::isnan(r.ratio_vs_unfused) ? "-" : format("%.2f", r.ratio_vs_unfused),
                   std::isnan(r.max_diff_vs_unfused) ? "-" : format("%.3g", r.max_diff_vs_unfused),
                   format("%d", r.timing.n_sets)});
  }
  std::printf("decoder attention block, µs per call (median of %d CUDA-graph replays x %d calls); floor = bytes / "
              "measured read bandwidth %.0f GB/s\n",
              opt.replays, opt.calls_per_graph, bw.read_gbps);
  table.print();

  if (opt.breakdown) {
    Table stages({"case", "impl", "stages (µs each, timed alone in a graph)", "sum", "whole"}, 3);
    for (const Row& r : rows) {
      if (r.status != "ok" || r.stages.empty()) continue;
      std::string text;
      double sum = 0;
      for (const auto& [name, us] : r.stages) {
        text += format("%s%s %.1f", text.empty() ? "" : " | ", name.c_str(), us);
        sum += us;
      }
      stages.add_row({r.c.label(), r.impl, text, format("%.1f", sum), format("%.1f", r.timing.us_per_call.median)});
    }
    std::printf("\nwhere the time goes\n");
    stages.print();
  }

  // ---- JSON ----
  Json root = report_header("cf_bench_decoder_attention", device, bw);
  Json settings = Json::object();
  settings.set("calls_per_graph", opt.calls_per_graph);
  settings.set("replays", opt.replays);
  settings.set("page_size", opt.page_size);
  root.set("settings", settings);
  Json jrows = Json::array();
  bool any_failed = false;
  for (const Row& r : rows) {
    any_failed |= r.status == "failed";
    Json j = Json::object();
    j.set("model", r.c.model);
    j.set("dtype", cu::dtype_name(r.c.dtype));
    j.set("batch", r.c.batch);
    j.set("kv_len", r.c.kv_len);
    j.set("page_size", r.c.page_size);
    j.set("impl", r.impl);
    j.set("status", r.status);
    j.set("message", r.message);
    j.set("bytes", r.c.total_bytes());
    j.set("weight_bytes", r.c.weight_bytes());
    j.set("kv_read_bytes", r.c.kv_read_bytes());
    j.set("floor_us", double(r.c.total_bytes()) / (bw.read_gbps * 1e3));
    if (r.status == "ok") {
      const double us = r.timing.us_per_call.median;
      j.set("us_median", us);
      j.set("us_min", r.timing.us_per_call.min);
      j.set("us_max", r.timing.us_per_call.max);
      j.set("gbps", double(r.c.total_bytes()) / (us * 1e3));
      j.set("pct_read_bw", 100.0 * double(r.c.total_bytes()) / (us * 1e3) / bw.read_gbps);
      j.set("n_sets", r.timing.n_sets);
      j.set("ratio_vs_unfused", r.ratio_vs_unfused);
      j.set("max_abs_diff_vs_unfused", r.max_diff_vs_unfused);
      j.set("out_rms", r.out_rms);
      Json st = Json::object();
      for (const auto& [name, us_stage] : r.stages) st.set(name, us_stage);
      j.set("stages_us", st);
    }
    if (!r.plan.is_null()) j.set("plan", r.plan);
    jrows.push(j);
  }
  root.set("rows", jrows);
  write_file(opt.json_path, root.dump());
  std::printf("\nwrote %s\n", opt.json_path.c_str());
  return any_failed ? 1 : 0;
}

}  // namespace cf::bench

int main(int argc, char** argv) {
  try {
    return cf::bench::main_impl(argc, argv);
  } catch (const cf::InputError& e) {
    std::fprintf(stderr, "cf_bench_decoder_attention: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cf_bench_decoder_attention: error: %s\n", e.what());
    return 1;
  }
}
