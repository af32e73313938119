// bench/ffn: µs per call of the FFN block and of the LM head (final norm + logits + argmax), cuda-unfused vs the
// fused kernels (include/clusterfusion/kernels/ffn, lm_head) in the same run: CUDA-graph replay with rotating input
// sets, bytes moved, GB/s and % of the read bandwidth measured in the same process, the ratio to cuda-unfused and
// the largest output difference between the two. Fused variants with other stage geometries (--stage-units) are
// extra rows ("fused-u8"). Prints a table and writes JSON (--json).
//
//   cf_bench_ffn                    # --quick: Llama-2-7B / Llama-3-8B, FFN + LM head, batch 1 / 8 / 16, fp16,
//                                   # and a stage-units sweep (2, 8) at batch 1
//   cf_bench_ffn --blocks ffn --models llama2 --batch 1 --stage-units 2,4,8 --replays 50 --json out.json
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/half.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/cuda/device.hpp"
#include "clusterfusion/cuda/stream.hpp"
#include "clusterfusion/kernels/ffn/launch.hpp"
#include "clusterfusion/kernels/lm_head/launch.hpp"
#include "common/args.hpp"
#include "common/gpu_timing.hpp"
#include "common/report.hpp"
#include "clusterfusion/backends/cuda_unfused/ops.hpp"

namespace cf::bench {
namespace {

namespace cu = cuda_unfused;
namespace kffn = cf::kernels::ffn;
namespace klm = cf::kernels::lm_head;

// ---- cases -----------------------------------------------------------------------------------------------------

struct ModelShape {
  std::string name;
  int hidden, ffn_hidden, vocab;
};

ModelShape model_shape(const std::string& name) {
  const std::string model = canonical_model(name);
  if (model == "llama2-7b") return {model, 4096, 11008, 32000};
  if (model == "llama3-8b") return {model, 4096, 14336, 128256};
  return {model, 576, 1536, 49152};  // smollm2-135m
}

struct BenchCase {
  std::string block;  // "ffn" or "lm_head"
  ModelShape model;
  cu::DType dtype = cu::DType::F16;
  int batch = 1;
  int stage_units = 0;  // fused variants to run besides the default (0: only the default)

  std::string label() const {
    return format("%s %s %s b%d", block.c_str(), model.name.c_str(), cu::dtype_name(dtype), batch);
  }
  int64_t weight_bytes() const {
    const int64_t H = model.hidden;
    if (block == "ffn") return 2 * (3 * int64_t(model.ffn_hidden) * H + H);
    return 2 * (int64_t(model.vocab) * H + H);
  }
  // hidden + residual read; ffn: residual_out + out written; lm_head: logits (fp32) + tokens written
  int64_t activation_bytes() const {
    const int64_t H = model.hidden;
    if (block == "ffn") return 2 * 4 * int64_t(batch) * H;
    return 2 * 2 * int64_t(batch) * H + 4 * int64_t(batch) * model.vocab + 4 * batch;
  }
  int64_t total_bytes() const { return weight_bytes() + activation_bytes(); }
};

// ---- options ---------------------------------------------------------------------------------------------------

struct Options : GraphBenchOptions {
  std::vector<std::string> blocks = {"ffn", "lm_head"};
  std::vector<std::string> models = {"llama2-7b", "llama3-8b"};
  std::vector<int> batches = {1, 8, 16};
  std::vector<cu::DType> dtypes = {cu::DType::F16};
  std::vector<int> stage_units = {};   // extra fused variants (all batches)
  std::vector<int> sweep_units = {2, 8};  // extra fused variants at batch 1 only (--quick)
  std::vector<std::string> impls;      // empty = all
  Options() { json_path = "bench_ffn.json"; }
};

const char* kUsage =
    "usage: cf_bench_ffn [options]\n"
    "  --quick               default: ffn,lm_head x llama2,llama3 x batch 1,8,16, fp16; stage units 2,8 at batch 1\n"
    "  --full                40 replays, fp16 and bf16\n"
    "  --blocks LIST         ffn,lm_head\n"
    "  --models LIST         llama2,llama3,smollm2\n"
    "  --batch LIST          batch sizes (1..16)\n"
    "  --dtype LIST          fp16,bf16\n"
    "  --stage-units LIST    extra fused variants (chunks of 2,4,8 32-column units) at every batch\n"
    "  --no-sweep            no stage-units sweep at batch 1\n"
    "  --impl LIST           cuda-unfused,fused (default both)\n"
    "  --calls N             calls per CUDA graph (default 20)\n"
    "  --replays N           timed graph replays (default 15)\n"
    "  --bandwidth-mib N     buffer size of the bandwidth measurement (default 1024)\n"
    "  --json PATH           where to write the JSON results (default bench_ffn.json)\n";

Options parse_options(int argc, char** argv) {
  Options o;
  for (ArgReader args(argc, argv, kUsage); args.next();) {
    if (args.is("--quick")) {
    } else if (args.is("--full")) {
      o.replays = 40;
      o.dtypes = {cu::DType::F16, cu::DType::BF16};
    } else if (args.is("--blocks")) {
      o.blocks = parse_choices(args.value(), "--blocks", {"ffn", "lm_head"});
    } else if (args.is("--models")) {
      o.models.clear();
      for (const auto& m : split_list(args.value())) o.models.push_back(model_shape(m).name);
    } else if (args.is("--batch")) {
      o.batches = parse_int_list(args.value(), "--batch", 1, 16);
    } else if (args.is("--dtype")) {
      o.dtypes.clear();
      for (const auto& v : parse_choices(args.value(), "--dtype", {"fp16", "bf16"}))
        o.dtypes.push_back(v == "fp16" ? cu::DType::F16 : cu::DType::BF16);
    } else if (args.is("--stage-units")) {
      o.stage_units = parse_int_list(args.value(), "--stage-units", 2, 8);
    } else if (args.is("--no-sweep")) {
      o.sweep_units.clear();
    } else if (args.is("--impl")) {
      o.impls = parse_choices(args.value(), "--impl", {"cuda-unfused", "fused"});
    } else if (!read_graph_bench_option(args, o)) {
      args.unknown();
    }
  }
  return o;
}

bool wanted(const Options& o, const std::string& impl) {
  if (o.impls.empty()) return true;
  const std::string base = impl.rfind("fused", 0) == 0 ? "fused" : impl;
  return std::find(o.impls.begin(), o.impls.end(), base) != o.impls.end();
}

// ---- device data -----------------------------------------------------------------------------------------------

// One rotation set: every weight and activation of one call.
struct DeviceSet {
  const void* norm = nullptr;
  const void* w_gate_up = nullptr;  // ffn: [2F, H]
  const void* w_down = nullptr;     // ffn: [H, F]
  const void* w_out = nullptr;      // lm_head: [V, H]
  const void* hidden = nullptr;
  const void* residual = nullptr;
  void* residual_out = nullptr;
  void* out = nullptr;              // ffn: [B, H]
  float* logits = nullptr;          // lm_head: [B, V]
  int32_t* tokens = nullptr;        // lm_head: [B]
};

struct CaseData {
  BenchCase c;
  std::vector<dev::DeviceBuffer<uint16_t>> halves;
  std::vector<dev::DeviceBuffer<float>> floats;
  std::vector<dev::DeviceBuffer<int32_t>> ints;
  std::vector<DeviceSet> sets;
};

size_t bytes_per_set(const BenchCase& c) { return size_t(c.total_bytes()); }

std::unique_ptr<CaseData> make_case_data(const BenchCase& c, int n_sets, cudaStream_t stream) {
  auto d = std::make_unique<CaseData>();
  d->c = c;
  const size_t H = size_t(c.model.hidden), F = size_t(c.model.ffn_hidden), V = size_t(c.model.vocab);
  const size_t B = size_t(c.batch);
  const FillType ft = c.dtype == cu::DType::F16 ? FillType::F16 : FillType::BF16;
  auto half_buf = [&](size_t n, const char* what, float lo, float hi, uint64_t seed) -> uint16_t* {
    d->halves.emplace_back(n, what);
    uint16_t* p = d->halves.back().data();
    if (hi > lo) fill_random(p, n, ft, seed, lo, hi, stream);
    return p;
  };
  for (int set = 0; set < n_sets; ++set) {
    const uint64_t seed = 1000 * uint64_t(set + 1);
    DeviceSet s;
    s.norm = half_buf(H, "norm", 0.5f, 1.5f, seed + 1);
    s.hidden = half_buf(B * H, "hidden", -1.0f, 1.0f, seed + 2);
    s.residual = half_buf(B * H, "residual", -1.0f, 1.0f, seed + 3);
    if (c.block == "ffn") {
      const float w_in = 2.0f / std::sqrt(float(H)), w_dn = 2.0f / std::sqrt(float(F));
      s.w_gate_up = half_buf(2 * F * H, "w_gate_up", -w_in, w_in, seed + 4);
      s.w_down = half_buf(H * F, "w_down", -w_dn, w_dn, seed + 5);
      s.residual_out = half_buf(B * H, "residual_out", 0, 0, 0);
      s.out = half_buf(B * H, "out", 0, 0, 0);
    } else {
      const float w_in = 2.0f / std::sqrt(float(H));
      s.w_out = half_buf(V * H, "w_out", -w_in, w_in, seed + 4);
      d->floats.emplace_back(B * V, "logits");
      s.logits = d->floats.back().data();
      d->ints.emplace_back(B, "tokens");
      s.tokens = d->ints.back().data();
    }
    d->sets.push_back(s);
  }
  CF_CUDA_CHECK(cudaStreamSynchronize(stream));
  return d;
}

// ---- implementations -------------------------------------------------------------------------------------------

class Impl {
 public:
  virtual ~Impl() = default;
  virtual std::string name() const = 0;
  virtual void prepare(const CaseData& d) = 0;            // not timed
  virtual void enqueue(const CaseData& d, int set, cudaStream_t stream) = 0;  // graph-capturable
  virtual void check(cudaStream_t stream) = 0;           // synchronises; throws on a device-side problem
  virtual std::string describe() const { return {}; }
  virtual Json plan_json() const { return Json(); }  // what the plan decided (cluster size, max active clusters)
};

class UnfusedImpl final : public Impl {
 public:
  std::string name() const override { return "cuda-unfused"; }
  void prepare(const CaseData& d) override {
    ref::DecoderShape shape;
    shape.hidden = d.c.model.hidden;
    shape.ffn_hidden = d.c.block == "ffn" ? d.c.model.ffn_hidden : 0;
    ws_ = std::make_unique<cu::Workspace>(shape, d.c.batch);
    shape_ = shape;
  }
  void enqueue(const CaseData& d, int set, cudaStream_t stream) override {
    const DeviceSet& s = d.sets.at(size_t(set));
    if (d.c.block == "ffn") {
      cu::FfnBlockParams p;
      p.dtype = d.c.dtype;
      p.shape = shape_;
      p.batch = d.c.batch;
      p.hidden = s.hidden;
      p.residual = s.residual;
      p.residual_out = s.residual_out;
      p.out = s.out;
      p.norm = s.norm;
      p.w_gate_up = s.w_gate_up;
      p.w_down = s.w_down;
      cu::ffn_block(p, *ws_, stream);
    } else {
      cu::LmHeadParams p;
      p.dtype = d.c.dtype;
      p.shape = shape_;
      p.batch = d.c.batch;
      p.vocab = d.c.model.vocab;
      p.hidden = s.hidden;
      p.residual = s.residual;
      p.norm = s.norm;
      p.w_out = s.w_out;
      p.logits = s.logits;
      p.tokens = s.tokens;
      cu::lm_head(p, *ws_, stream);
    }
  }
  void check(cudaStream_t stream) override { ws_->check_status(stream); }

 private:
  std::unique_ptr<cu::Workspace> ws_;
  ref::DecoderShape shape_;
};

class FusedImpl final : public Impl {
 public:
  explicit FusedImpl(int stage_units) : stage_units_(stage_units) {}
  std::string name() const override { return stage_units_ ? format("fused-u%d", stage_units_) : "fused"; }
  void prepare(const CaseData& d) override {
    ffn_.clear();
    head_.clear();
    const dev::DType dt = d.c.dtype == cu::DType::F16 ? dev::DType::F16 : dev::DType::BF16;
    for (const DeviceSet& s : d.sets) {
      if (d.c.block == "ffn") {
        kffn::PlanConfig cfg;
        cfg.dtype = dt;
        cfg.shape = {d.c.model.hidden, d.c.model.ffn_hidden, 1e-5f};
        cfg.weights.norm = s.norm;
        cfg.weights.set_fused_gate_up(s.w_gate_up, cfg.shape, dt);
        cfg.weights.w_down = s.w_down;
        cfg.max_batch = d.c.batch;
        cfg.stage_units = stage_units_;
        ffn_.push_back(std::make_unique<kffn::Plan>(cfg));
      } else {
        klm::PlanConfig cfg;
        cfg.dtype = dt;
        cfg.shape = {d.c.model.hidden, d.c.model.vocab, 1e-5f};
        cfg.weights = {s.norm, s.w_out};
        cfg.max_batch = d.c.batch;
        cfg.stage_units = stage_units_;
        head_.push_back(std::make_unique<klm::Plan>(cfg));
      }
    }
  }
  void enqueue(const CaseData& d, int set, cudaStream_t stream) override {
    const DeviceSet& s = d.sets.at(size_t(set));
    if (d.c.block == "ffn")
      ffn_.at(size_t(set))->run({d.c.batch, s.hidden, s.residual, s.residual_out, s.out}, stream);
    else
      head_.at(size_t(set))->run({d.c.batch, s.hidden, s.residual, s.logits, s.tokens}, stream);
  }
  void check(cudaStream_t stream) override {
    for (auto& p : ffn_) p->check_status(stream);
    for (auto& p : head_) p->check_status(stream);
  }
  std::string describe() const override {
    if (!ffn_.empty()) {
      const kffn::LaunchInfo& li = ffn_[0]->info();
      return format("%d clusters x %d CTAs (max active clusters of %d: %d%s), U %d, down %d cols x %d tiles, %d "
                    "blocks of %d rows, %d stages, %zu B smem, busiest CTA %.2f MB",
                    li.clusters, li.cluster_size, li.cluster_size, li.max_active_clusters,
                    li.occupancy_queried ? "" : " assumed", li.stage_units, li.down_cols, li.down_tiles, li.blocks,
                    li.block_rows, li.stages, li.smem_bytes, double(li.max_cta_bytes) / 1e6);
    }
    if (!head_.empty()) {
      const klm::LaunchInfo& li = head_[0]->info();
      return format("%d CTAs, U %d, %d stages, %zu B smem, busiest CTA %.2f MB", li.ctas, li.stage_units, li.stages,
                    li.smem_bytes, double(li.max_cta_weight_bytes) / 1e6);
    }
    return {};
  }
  Json plan_json() const override {
    Json j = Json::object();
    if (!ffn_.empty()) {
      const kffn::LaunchInfo& li = ffn_[0]->info();
      j.set("cluster_size", li.cluster_size);
      j.set("clusters", li.clusters);
      j.set("max_active_clusters", li.max_active_clusters);
      j.set("occupancy_queried", li.occupancy_queried);
      j.set("stages", li.stages);
    } else if (!head_.empty()) {
      const klm::LaunchInfo& li = head_[0]->info();
      j.set("cluster_size", 1);
      j.set("clusters", li.ctas);
      j.set("stages", li.stages);
    } else {
      return Json();
    }
    return j;
  }

 private:
  int stage_units_;
  std::vector<std::unique_ptr<kffn::Plan>> ffn_;
  std::vector<std::unique_ptr<klm::Plan>> head_;
};

// ---- one row ---------------------------------------------------------------------------------------------------

struct Output {
  std::vector<float> values;    // ffn: out; lm_head: logits
  std::vector<int32_t> tokens;  // lm_head
};

Output download_output(const CaseData& d) {
  CF_CUDA_CHECK(cudaDeviceSynchronize());
  const DeviceSet& s = d.sets[0];
  Output o;
  if (d.c.block == "ffn") {
    const size_t n = size_t(d.c.batch) * d.c.model.hidden;
    std::vector<uint16_t> bits(n);
    CF_CUDA_CHECK(cudaMemcpy(bits.data(), s.out, n * 2, cudaMemcpyDeviceToHost));
    o.values.resize(n);
    for (size_t i = 0; i < n; ++i)
      o.values[i] = d.c.dtype == cu::DType::F16 ? f16_bits_to_float(bits[i]) : bf16_bits_to_float(bits[i]);
  } else {
    o.values.resize(size_t(d.c.batch) * d.c.model.vocab);
    o.tokens.resize(size_t(d.c.batch));
    CF_CUDA_CHECK(cudaMemcpy(o.values.data(), s.logits, o.values.size() * 4, cudaMemcpyDeviceToHost));
    CF_CUDA_CHECK(cudaMemcpy(o.tokens.data(), s.tokens, o.tokens.size() * 4, cudaMemcpyDeviceToHost));
  }
  return o;
}

struct Row {
  BenchCase c;
  std::string impl;
  std::string status = "ok";
  std::string message;
  std::string config;
  Json plan;
  GraphTiming timing;
  double ratio_vs_unfused = NAN;
  double max_diff_vs_unfused = NAN;
  int tokens_equal = -1;
};

void run_impl(Impl& impl, CaseData& data, const Options& opt, cudaStream_t stream, Row& row, Output& out) {
  impl.prepare(data);
  row.config = impl.describe();
  row.plan = impl.plan_json();
  // One eager call on set 0 with poisoned outputs: proves every output is written and finite.
  const DeviceSet& s0 = data.sets[0];
  if (data.c.block == "ffn") {
    CF_CUDA_CHECK(cudaMemsetAsync(s0.out, 0xFF, size_t(data.c.batch) * data.c.model.hidden * 2, stream));
  } else {
    CF_CUDA_CHECK(cudaMemsetAsync(s0.logits, 0xFF, size_t(data.c.batch) * data.c.model.vocab * 4, stream));
    CF_CUDA_CHECK(cudaMemsetAsync(s0.tokens, 0xFF, size_t(data.c.batch) * 4, stream));
  }
  impl.enqueue(data, 0, stream);
  impl.check(stream);
  out = download_output(data);
  const size_t bad =
      size_t(std::count_if(out.values.begin(), out.values.end(), [](float v) { return !std::isfinite(v); }));
  if (bad) throw Error(format("output has %zu non-finite values of %zu after one call", bad, out.values.size()));
  for (int32_t t : out.tokens)
    if (t < 0 || t >= data.c.model.vocab) throw Error(format("token %d outside the vocabulary", t));
  row.timing = time_in_graph(stream, int(data.sets.size()), opt.calls_per_graph, opt.warmup, opt.replays,
                             [&](cudaStream_t st, int set) { impl.enqueue(data, set, st); });
  impl.check(stream);
}

}  // namespace

int main_impl(int argc, char** argv) {
  const Options opt = parse_options(argc, argv);
  const std::string no_gpu = cuda::gpu_unavailable_reason();
  if (!no_gpu.empty()) {
    std::fprintf(stderr, "cf_bench_ffn: no usable CUDA GPU (%s)\n", no_gpu.c_str());
    return 2;
  }
  const cuda::DeviceInfo device = cuda::query_device();
  cuda::Stream stream;
  const Bandwidth bw = print_device_and_bandwidth(device, stream, opt.bandwidth_bytes);

  std::vector<BenchCase> cases;
  for (const auto& block : opt.blocks)
    for (const auto& m : opt.models)
      for (cu::DType dtype : opt.dtypes)
        for (int batch : opt.batches) {
          BenchCase c;
          c.block = block;
          c.model = model_shape(m);
          c.dtype = dtype;
          c.batch = batch;
          cases.push_back(c);
        }

  std::vector<Row> rows;
  for (const BenchCase& c : cases) {
    std::vector<std::unique_ptr<Impl>> impls;
    if (wanted(opt, "cuda-unfused")) impls.push_back(std::make_unique<UnfusedImpl>());
    if (wanted(opt, "fused")) {
      impls.push_back(std::make_unique<FusedImpl>(0));
      std::vector<int> extra = opt.stage_units;
      if (c.batch == 1) extra.insert(extra.end(), opt.sweep_units.begin(), opt.sweep_units.end());
      std::sort(extra.begin(), extra.end());
      extra.erase(std::unique(extra.begin(), extra.end()), extra.end());
      for (int u : extra)
        if (u != 4) impls.push_back(std::make_unique<FusedImpl>(u));  // 4 is the default variant
    }
    size_t free_bytes = 0, total_bytes = 0;
    CF_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    int n_sets = sets_to_defeat_l2(bytes_per_set(c), device.l2_bytes);
    while (n_sets > 1 && double(bytes_per_set(c)) * n_sets > 0.6 * double(free_bytes)) --n_sets;
    std::unique_ptr<CaseData> data;
    std::string setup_error;
    if (double(bytes_per_set(c)) > 0.6 * double(free_bytes)) {
      setup_error = format("needs %.1f GiB, %.1f GiB free", double(bytes_per_set(c)) / double(1u << 30),
                           double(free_bytes) / double(1u << 30));
    } else {
      try {
        data = make_case_data(c, n_sets, stream);
      } catch (const std::exception& e) {
        setup_error = std::string("setup failed: ") + e.what();
      }
    }
    Output unfused_out;
    double unfused_us = NAN;
    for (auto& impl : impls) {
      Row row;
      row.c = c;
      row.impl = impl->name();
      if (!setup_error.empty()) {
        row.status = "skipped";
        row.message = setup_error;
      } else {
        Output out;
        try {
          run_impl(*impl, *data, opt, stream, row, out);
        } catch (const std::exception& e) {
          row.status = "failed";
          row.message = e.what();
          (void)cudaGetLastError();
        }
        if (row.status == "ok") {
          if (row.impl == "cuda-unfused") {
            unfused_out = out;
            unfused_us = row.timing.us_per_call.median;
          } else if (!unfused_out.values.empty()) {
            row.ratio_vs_unfused = row.timing.us_per_call.median / unfused_us;
            double diff = 0;
            for (size_t i = 0; i < out.values.size(); ++i)
              diff = std::max(diff, double(std::fabs(out.values[i] - unfused_out.values[i])));
            row.max_diff_vs_unfused = diff;
            if (!out.tokens.empty()) {
              row.tokens_equal = 0;
              for (size_t b = 0; b < out.tokens.size(); ++b) row.tokens_equal += out.tokens[b] == unfused_out.tokens[b];
            }
          }
        }
      }
      std::printf("[%s] %-28s %-13s %s%s%s%s%s\n", row.status.c_str(), c.label().c_str(), row.impl.c_str(),
                  row.status == "ok" ? format("%.1f us", row.timing.us_per_call.median).c_str() : "",
                  row.message.empty() ? "" : " ", row.message.c_str(), row.config.empty() ? "" : "  ",
                  row.config.c_str());
      std::fflush(stdout);
      impl.reset();
      rows.push_back(std::move(row));
    }
    data.reset();
  }

  // ---- table ----
  std::printf("\n");
  Table table({"case", "impl", "us/call", "min", "MB moved", "GB/s", "% read bw", "floor us", "x unfused",
               "max|d| vs unfused", "tokens ="},
              2);
  std::string last_case;
  for (const Row& r : rows) {
    if (!last_case.empty() && r.c.label() != last_case) table.add_separator();
    last_case = r.c.label();
    const double mb = double(r.c.total_bytes()) / 1e6;
    const double floor_us = double(r.c.total_bytes()) / (bw.read_gbps * 1e3);
    if (r.status != "ok") {
      table.add_row({r.c.label(), r.impl, r.status, "", format("%.1f", mb), "", "", format("%.1f", floor_us), "",
                     r.message.substr(0, 60), ""});
      continue;
    }
    const double us = r.timing.us_per_call.median;
    const double gbps = double(r.c.total_bytes()) / (us * 1e3);
    table.add_row({r.c.label(), r.impl, format("%.1f", us), format("%.1f", r.timing.us_per_call.min),
                   format("%.1f", mb), format("%.0f", gbps), format("%.1f%%", 100.0 * gbps / bw.read_gbps),
                   format("%.1f", floor_us), std::isnan(r.ratio_vs_unfused) ? "-" : format("%.2f", r.ratio_vs_unfused),
                   std::isnan(r.max_diff_vs_unfused) ? "-" : format("%.3g", r.max_diff_vs_unfused),
                   r.tokens_equal < 0 ? "-" : format("%d/%d", r.tokens_equal, r.c.batch)});
  }
  std::printf("FFN block and LM head, µs per call (median of %d CUDA-graph replays x %d calls); floor = bytes / "
              "measured read bandwidth %.0f GB/s\n",
              opt.replays, opt.calls_per_graph, bw.read_gbps);
  table.print();

  // ---- JSON ----
  Json root = report_header("cf_bench_ffn", device, bw);
  Json settings = Json::object();
  settings.set("calls_per_graph", opt.calls_per_graph);
  settings.set("replays", opt.replays);
  root.set("settings", settings);
  Json jrows = Json::array();
  bool any_failed = false;
  for (const Row& r : rows) {
    any_failed |= r.status == "failed";
    Json j = Json::object();
    j.set("block", r.c.block);
    j.set("model", r.c.model.name);
    j.set("dtype", cu::dtype_name(r.c.dtype));
    j.set("batch", r.c.batch);
    j.set("kv_len", 0);  // (the row format of bench/decoder_attention, which bench/gpu_summary.py reads)
    j.set("impl", r.impl);
    j.set("status", r.status);
    j.set("message", r.message);
    j.set("config", r.config);
    if (!r.plan.is_null()) j.set("plan", r.plan);
    j.set("bytes", r.c.total_bytes());
    j.set("weight_bytes", r.c.weight_bytes());
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
      if (r.tokens_equal >= 0) j.set("tokens_equal_unfused", r.tokens_equal);
    }
    jrows.push(j);
  }
  root.set("rows", jrows);
  write_file(opt.json_path, root.dump());
  std::printf("\nwrote %s\n", opt.json_path.c_str());
  return any_failed ? 1 : 0;
}

}  // namespace cf::bench

int main(int argc, char** argv) { return cf::bench::run_main("cf_bench_ffn", cf::bench::main_impl, argc, argv); }
