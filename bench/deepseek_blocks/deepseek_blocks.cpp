// bench/deepseek_blocks: µs per call of DeepSeek-V2-Lite's MLA decode block and MoE FFN block, the fused plans
// (kernels/mla, kernels/moe) against cuda-unfused (backends/cuda_unfused/deepseek.hpp) in the same run: random
// weights made on the GPU, CUDA-graph replay with rotating input sets (repeats are not served from L2), bytes read,
// GB/s and % of the read bandwidth measured in the same process, the fused / unfused time ratio and the largest
// output difference between the two. Prints a table and writes JSON (--json).
//
//   cf_bench_deepseek_blocks      # MLA at KV 1K / 4K / 16K and MoE, batch 1 / 16, fp16, page size 64
//   cf_bench_deepseek_blocks --blocks mla --batch 1 --kv 4096 --impl cuda-unfused --replays 40 --json out.json
//
// Bytes read per call: MLA = every weight + the batch's latent cache rows + activations; MoE = the router (fp32) +
// the shared experts + the experts the batch chose (each once, counted from the routing of every input set) +
// activations. The fused part needs the plans' sources (src/kernels/mla, src/kernels/moe); without them the program
// builds with cuda-unfused only and says so.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "clusterfusion/backends/cuda_unfused/deepseek.hpp"
#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/half.hpp"
#include "clusterfusion/cuda/device.hpp"
#include "clusterfusion/cuda/stream.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "common/args.hpp"
#include "common/gpu_timing.hpp"
#include "common/report.hpp"
#include "deepseek_blocks/impl.hpp"

namespace cf::bench {
namespace {

namespace cu = cuda_unfused;

// ---- shapes and cases ------------------------------------------------------------------------------------------

// ---- options ---------------------------------------------------------------------------------------------------

struct Options : GraphBenchOptions {
  std::vector<std::string> blocks = {"mla", "moe"};
  std::vector<int> batches = {1, 16};
  std::vector<int> kv_lens = {1024, 4096, 16384};
  std::vector<cu::DType> dtypes = {cu::DType::F16};
  std::vector<std::string> impls;  // empty = all
  int page_size = 64;
  Options() { json_path = "bench_deepseek_blocks.json"; }
};

const char* kUsage =
    "usage: cf_bench_deepseek_blocks [options]   (DeepSeek-V2-Lite shapes: hidden 2048, 16 heads, r 512, rope 64,\n"
    "                                             nope 128, v 128; 64 experts top 6, ffn 1408, shared 2816)\n"
    "  --blocks LIST         mla,moe\n"
    "  --batch LIST          batch sizes (1..16; default 1,16)\n"
    "  --kv LIST             MLA cached tokens (default 1024,4096,16384)\n"
    "  --dtype LIST          fp16,bf16 (default fp16)\n"
    "  --page-size N         latent cache page size (default 64)\n"
    "  --impl LIST           cuda-unfused,fused (default both)\n"
    "  --calls N             calls per CUDA graph (default 20)\n"
    "  --replays N           timed graph replays (default 15)\n"
    "  --bandwidth-mib N     buffer size of the bandwidth measurement (default 1024)\n"
    "  --json PATH           where to write the JSON results (default bench_deepseek_blocks.json)\n";

Options parse_options(int argc, char** argv) {
  Options o;
  for (ArgReader args(argc, argv, kUsage); args.next();) {
    if (args.is("--blocks")) {
      o.blocks = parse_choices(args.value(), "--blocks", {"mla", "moe"});
    } else if (args.is("--batch")) {
      o.batches = parse_int_list(args.value(), "--batch", 1, 16);
    } else if (args.is("--kv")) {
      o.kv_lens = parse_int_list(args.value(), "--kv", 1, 1 << 20);
    } else if (args.is("--dtype")) {
      o.dtypes.clear();
      for (const auto& v : parse_choices(args.value(), "--dtype", {"fp16", "bf16"}))
        o.dtypes.push_back(v == "fp16" ? cu::DType::F16 : cu::DType::BF16);
    } else if (args.is("--page-size")) {
      o.page_size = parse_int(args.value(), "--page-size", 1, 1 << 16);
    } else if (args.is("--impl")) {
      o.impls = parse_choices(args.value(), "--impl", {"cuda-unfused", "fused"});
    } else if (!read_graph_bench_option(args, o)) {
      args.unknown();
    }
  }
  return o;
}

bool wanted(const Options& o, const std::string& impl) {
  return o.impls.empty() || std::find(o.impls.begin(), o.impls.end(), impl) != o.impls.end();
}

// ---- device data: one rotation set per call of a graph ------------------------------------------------------------

std::unique_ptr<CaseData> make_case_data(const BenchCase& c, int n_sets, cudaStream_t stream) {
  auto d = std::make_unique<CaseData>();
  const FillType ft = c.dtype == cu::DType::F16 ? FillType::F16 : FillType::BF16;
  auto half_buf = [&](size_t n, const char* what, float lo, float hi, uint64_t seed) -> void* {
    d->halves.emplace_back(n, what);
    void* p = d->halves.back().data();
    if (hi > lo) fill_random(p, n, ft, seed, lo, hi, stream);
    return p;
  };
  const size_t B = size_t(c.batch), hid = size_t(v2_lite().hidden);
  auto w_scale = [](size_t in_dim) { return 2.0f / std::sqrt(float(in_dim)); };
  if (c.block == "mla") {
    const MlaBlockShape s = v2_lite_mla();
    const size_t H = size_t(s.n_heads), r = size_t(s.kv_lora_rank), row = size_t(s.latent_row());
    d->page_size = c.page_size;
    const int pages_per_seq = (c.kv_len + 1 + c.page_size - 1) / c.page_size;
    d->n_pages = c.batch * pages_per_seq;
    std::vector<int32_t> indptr, indices, last;
    for (int b = 0; b <= c.batch; ++b) indptr.push_back(b * pages_per_seq);
    for (int p = 0; p < d->n_pages; ++p) indices.push_back(p);
    for (int b = 0; b < c.batch; ++b) last.push_back(c.kv_len + 1 - (pages_per_seq - 1) * c.page_size);
    d->indptr = dev::to_device(indptr, "kv_indptr");
    d->indices = dev::to_device(indices, "kv_indices");
    d->last_page_len = dev::to_device(last, "kv_last_page_len");
    d->positions = dev::to_device(std::vector<int32_t>(B, c.kv_len), "positions");
    d->max_positions = c.kv_len + 1;
    d->rope = dev::to_device(cu::make_yarn_rope_table(v2_lite_rope(), d->max_positions), "rope table");
    for (int set = 0; set < n_sets; ++set) {
      const uint64_t seed = 1000 * uint64_t(set + 1);
      DeviceSet t;
      t.norm = half_buf(hid, "norm", 0.5f, 1.5f, seed + 1);
      t.w_q = half_buf(size_t(s.q_rows()) * hid, "w_q", -w_scale(hid), w_scale(hid), seed + 2);
      t.w_kv_a = half_buf(row * hid, "w_kv_a", -w_scale(hid), w_scale(hid), seed + 3);
      t.kv_a_norm = half_buf(r, "kv_a_norm", 0.5f, 1.5f, seed + 4);
      t.w_uk = half_buf(H * s.qk_nope * r, "w_uk", -w_scale(s.qk_nope), w_scale(s.qk_nope), seed + 5);
      t.w_uv = half_buf(H * s.v_head * r, "w_uv", -w_scale(r), w_scale(r), seed + 6);
      t.w_o = half_buf(hid * s.o_dim(), "w_o", -w_scale(s.o_dim()), w_scale(s.o_dim()), seed + 7);
      t.pages = half_buf(size_t(d->n_pages) * c.page_size * row, "latent pages", -1.0f, 1.0f, seed + 8);
      t.hidden = half_buf(B * hid, "hidden", -1.0f, 1.0f, seed + 9);
      t.residual = half_buf(B * hid, "residual", -1.0f, 1.0f, seed + 10);
      t.residual_out = half_buf(B * hid, "residual_out", 0, 0, 0);
      t.out = half_buf(B * hid, "out", 0, 0, 0);
      d->sets.push_back(t);
    }
  } else {
    const MoeBlockShape s = v2_lite_moe();
    const size_t E = size_t(s.n_experts), f = size_t(s.expert_ffn), sf = size_t(s.shared_ffn);
    for (int set = 0; set < n_sets; ++set) {
      const uint64_t seed = 2000 * uint64_t(set + 1);
      DeviceSet t;
      t.norm = half_buf(hid, "norm", 0.5f, 1.5f, seed + 1);
      d->floats.emplace_back(E * hid, "router");
      t.router = d->floats.back().data();
      fill_random(t.router, E * hid, FillType::F32, seed + 2, -2 * w_scale(hid), 2 * w_scale(hid), stream);
      t.w_gate_up = half_buf(E * 2 * f * hid, "w_gate_up", -w_scale(hid), w_scale(hid), seed + 3);
      t.w_down = half_buf(E * hid * f, "w_down", -w_scale(f), w_scale(f), seed + 4);
      t.shared_gate_up = half_buf(2 * sf * hid, "shared_gate_up", -w_scale(hid), w_scale(hid), seed + 5);
      t.shared_down = half_buf(hid * sf, "shared_down", -w_scale(sf), w_scale(sf), seed + 6);
      t.hidden = half_buf(B * hid, "hidden", -1.0f, 1.0f, seed + 7);
      t.residual = half_buf(B * hid, "residual", -1.0f, 1.0f, seed + 8);
      t.residual_out = half_buf(B * hid, "residual_out", 0, 0, 0);
      t.out = half_buf(B * hid, "out", 0, 0, 0);
      d->ints.emplace_back(B * s.top_k, "expert ids");
      t.expert_ids = d->ints.back().data();
      d->floats.emplace_back(B * s.top_k, "expert weights");
      t.expert_weights = d->floats.back().data();
      d->sets.push_back(t);
    }
  }
  d->c = c;
  CF_CUDA_CHECK(cudaStreamSynchronize(stream));
  return d;
}

// ---- cuda-unfused --------------------------------------------------------------------------------------------

class UnfusedImpl final : public Impl {
 public:
  std::string name() const override { return "cuda-unfused"; }
  void prepare(const CaseData& d) override {
    if (d.c.block == "mla")
      mla_ = std::make_unique<cu::MlaWorkspace>(v2_lite_mla(), d.c.batch);
    else
      moe_ = std::make_unique<cu::MoeWorkspace>(v2_lite_moe(), d.c.batch);
  }
  void enqueue(const CaseData& d, int set, cudaStream_t stream) override {
    const DeviceSet& t = d.sets.at(size_t(set));
    if (d.c.block == "mla") {
      cu::MlaBlockParams p;
      p.dtype = d.c.dtype;
      p.shape = v2_lite_mla();
      p.batch = d.c.batch;
      p.hidden = t.hidden;
      p.residual = t.residual;
      p.residual_out = t.residual_out;
      p.out = t.out;
      p.weights.norm = t.norm;
      p.weights.w_q = t.w_q;
      p.weights.w_kv_a = t.w_kv_a;
      p.weights.kv_a_norm = t.kv_a_norm;
      p.weights.w_uk = t.w_uk;
      p.weights.w_uv = t.w_uv;
      p.weights.w_o = t.w_o;
      p.positions = d.positions.data();
      p.rope = {d.rope.data(), d.max_positions, v2_lite_mla().qk_rope};
      p.cache = {t.pages, d.n_pages, d.page_size, d.indptr.data(), d.indices.data(), d.last_page_len.data(),
                 int(d.indices.size())};
      cu::mla_block(p, *mla_, stream);
    } else {
      cu::MoeBlockParams p;
      p.dtype = d.c.dtype;
      p.shape = v2_lite_moe();
      p.batch = d.c.batch;
      p.hidden = t.hidden;
      p.residual = t.residual;
      p.residual_out = t.residual_out;
      p.out = t.out;
      p.weights = {t.norm, t.router, t.w_gate_up, t.w_down, t.shared_gate_up, t.shared_down};
      p.expert_ids = t.expert_ids;
      p.expert_weights = t.expert_weights;
      cu::moe_block(p, *moe_, stream);
    }
  }
  void check(cudaStream_t stream) override {
    if (mla_) mla_->check_status(stream);
    if (moe_) moe_->check_status(stream);
  }
  std::string describe() const override {
    if (!mla_) return "cuBLAS GEMVs per (token, chosen expert), shared experts as one FFN";
    return format("latent attention: up to %d splits per (token, head)", mla_->split_capacity());
  }

 private:
  std::unique_ptr<cu::MlaWorkspace> mla_;
  std::unique_ptr<cu::MoeWorkspace> moe_;
};

// ---- one row -----------------------------------------------------------------------------------------------------

struct Output {
  std::vector<float> values;   // out of set 0, [batch, hidden]
  std::vector<int32_t> ids;    // moe: the chosen experts of set 0
};

Output download_output(const CaseData& d) {
  CF_CUDA_CHECK(cudaDeviceSynchronize());
  const DeviceSet& t = d.sets[0];
  Output o;
  const size_t n = size_t(d.c.batch) * v2_lite().hidden;
  std::vector<uint16_t> bits(n);
  CF_CUDA_CHECK(cudaMemcpy(bits.data(), t.out, n * 2, cudaMemcpyDeviceToHost));
  o.values.resize(n);
  for (size_t i = 0; i < n; ++i)
    o.values[i] = d.c.dtype == cu::DType::F16 ? f16_bits_to_float(bits[i]) : bf16_bits_to_float(bits[i]);
  if (t.expert_ids) {
    o.ids.resize(size_t(d.c.batch) * v2_lite_moe().top_k);
    CF_CUDA_CHECK(cudaMemcpy(o.ids.data(), t.expert_ids, o.ids.size() * 4, cudaMemcpyDeviceToHost));
  }
  return o;
}

// Distinct experts the batch of each set chose (one eager call per set), averaged over the sets.
double mean_unique_experts(Impl& impl, const CaseData& d, cudaStream_t stream) {
  double total = 0;
  for (size_t set = 0; set < d.sets.size(); ++set) {
    impl.enqueue(d, int(set), stream);
    impl.check(stream);
    std::vector<int32_t> ids(size_t(d.c.batch) * v2_lite_moe().top_k);
    CF_CUDA_CHECK(cudaMemcpy(ids.data(), d.sets[set].expert_ids, ids.size() * 4, cudaMemcpyDeviceToHost));
    total += double(std::set<int32_t>(ids.begin(), ids.end()).size());
  }
  return total / double(d.sets.size());
}

struct Row {
  BenchCase c;
  std::string impl;
  std::string status = "ok";
  std::string message;
  std::string config;
  GraphTiming timing;
  double unique_experts = 0;  // moe
  double ratio_vs_unfused = NAN;
  double max_diff_vs_unfused = NAN;
  double out_rms = NAN;
  int experts_equal = -1;
  int64_t bytes() const { return c.bytes_read(unique_experts); }
};

void run_impl(Impl& impl, CaseData& data, const Options& opt, cudaStream_t stream, Row& row, Output& out) {
  impl.prepare(data);
  row.config = impl.describe();
  const DeviceSet& t0 = data.sets[0];
  CF_CUDA_CHECK(cudaMemsetAsync(t0.out, 0xFF, size_t(data.c.batch) * v2_lite().hidden * 2, stream));  // all written?
  impl.enqueue(data, 0, stream);
  impl.check(stream);
  out = download_output(data);
  const size_t bad =
      size_t(std::count_if(out.values.begin(), out.values.end(), [](float v) { return !std::isfinite(v); }));
  if (bad) throw Error(format("output has %zu non-finite values of %zu after one call", bad, out.values.size()));
  double sum_squares = 0;
  for (float v : out.values) sum_squares += double(v) * v;
  row.out_rms = std::sqrt(sum_squares / double(out.values.size()));
  if (data.c.block == "moe") row.unique_experts = mean_unique_experts(impl, data, stream);
  row.timing = time_in_graph(stream, int(data.sets.size()), opt.calls_per_graph, opt.warmup, opt.replays,
                             [&](cudaStream_t st, int set) { impl.enqueue(data, set, st); });
  impl.check(stream);
}

void compare_with_unfused(Row& row, const Output& out, const Output& unfused, double unfused_us) {
  row.ratio_vs_unfused = row.timing.us_per_call.median / unfused_us;
  double diff = 0;
  for (size_t i = 0; i < out.values.size() && i < unfused.values.size(); ++i)
    diff = std::max(diff, double(std::fabs(out.values[i] - unfused.values[i])));
  row.max_diff_vs_unfused = diff;
  if (!out.ids.empty() && out.ids.size() == unfused.ids.size()) {
    row.experts_equal = 0;
    for (size_t i = 0; i < out.ids.size(); ++i) row.experts_equal += out.ids[i] == unfused.ids[i];
  }
}

// Rotation sets: enough to defeat L2 by the bytes a call reads, as memory allows.
int rotation_sets(const BenchCase& c, const cuda::DeviceInfo& device) {
  const MoeBlockShape moe = v2_lite_moe();
  const int64_t read_estimate = c.bytes_read(std::min(moe.n_experts, moe.top_k * c.batch));
  const int64_t allocated =
      c.block == "mla" ? read_estimate : c.moe_fixed_bytes() + moe.n_experts * c.moe_expert_bytes() + c.activation_bytes();
  size_t free_bytes = 0, total_bytes = 0;
  CF_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  int n = sets_to_defeat_l2(size_t(read_estimate), device.l2_bytes);
  while (n > 1 && double(allocated) * n > 0.6 * double(free_bytes)) --n;
  if (double(allocated) > 0.6 * double(free_bytes))
    throw Error(format("needs %.1f GiB, %.1f GiB free", double(allocated) / double(1u << 30),
                       double(free_bytes) / double(1u << 30)));
  return n;
}

std::vector<Row> run_case(const BenchCase& c, const Options& opt, const cuda::DeviceInfo& device,
                          cudaStream_t stream) {
  std::vector<std::unique_ptr<Impl>> impls;
  if (wanted(opt, "cuda-unfused")) impls.push_back(std::make_unique<UnfusedImpl>());
  if (wanted(opt, "fused")) impls.push_back(make_fused_impl());
  std::unique_ptr<CaseData> data;
  std::string setup_error;
  try {
    data = make_case_data(c, rotation_sets(c, device), stream);
  } catch (const std::exception& e) {
    setup_error = std::string("setup failed: ") + e.what();
  }
  std::vector<Row> rows;
  Output unfused_out;
  double unfused_us = NAN, unfused_experts = 0;
  for (auto& impl : impls) {
    Row row;
    row.c = c;
    row.impl = impl->name();
    row.unique_experts = unfused_experts;
    if (!setup_error.empty() || !impl->available()) {
      row.status = "skipped";
      row.message = setup_error.empty() ? impl->unavailable_reason() : setup_error;
    } else {
      Output out;
      try {
        run_impl(*impl, *data, opt, stream, row, out);
        if (row.impl == "cuda-unfused") {
          unfused_out = out;
          unfused_us = row.timing.us_per_call.median;
          unfused_experts = row.unique_experts;
        } else if (!unfused_out.values.empty()) {
          compare_with_unfused(row, out, unfused_out, unfused_us);
        }
      } catch (const std::exception& e) {
        row.status = "failed";
        row.message = e.what();
        (void)cudaGetLastError();
      }
    }
    std::printf("[%s] %-24s %-13s %s%s%s%s%s\n", row.status.c_str(), c.label().c_str(), row.impl.c_str(),
                row.status == "ok" ? format("%.1f us", row.timing.us_per_call.median).c_str() : "",
                row.message.empty() ? "" : " ", row.message.c_str(), row.config.empty() ? "" : "  ", row.config.c_str());
    std::fflush(stdout);
    impl.reset();
    rows.push_back(std::move(row));
  }
  return rows;
}

// ---- report ------------------------------------------------------------------------------------------------------

void print_table(const std::vector<Row>& rows, const Bandwidth& bw, const Options& opt) {
  Table table({"case", "impl", "us/call", "min", "MB read", "GB/s", "% read bw", "floor us", "fused/unfused",
               "max|d| vs unfused", "experts ="},
              2);
  std::string last_case;
  for (const Row& r : rows) {
    if (!last_case.empty() && r.c.label() != last_case) table.add_separator();
    last_case = r.c.label();
    const double mb = double(r.bytes()) / 1e6, floor_us = double(r.bytes()) / (bw.read_gbps * 1e3);
    if (r.status != "ok") {
      table.add_row({r.c.label(), r.impl, r.status, "", format("%.1f", mb), "", "", format("%.1f", floor_us), "",
                     r.message.substr(0, 60), ""});
      continue;
    }
    const double us = r.timing.us_per_call.median, gbps = double(r.bytes()) / (us * 1e3);
    table.add_row({r.c.label(), r.impl, format("%.1f", us), format("%.1f", r.timing.us_per_call.min),
                   format("%.1f", mb), format("%.0f", gbps), format("%.1f%%", 100.0 * gbps / bw.read_gbps),
                   format("%.1f", floor_us), std::isnan(r.ratio_vs_unfused) ? "-" : format("%.2f", r.ratio_vs_unfused),
                   std::isnan(r.max_diff_vs_unfused) ? "-" : format("%.3g", r.max_diff_vs_unfused),
                   r.experts_equal < 0 ? "-" : format("%d/%d", r.experts_equal, r.c.batch * v2_lite_moe().top_k)});
  }
  std::printf("\nDeepSeek-V2-Lite MLA and MoE blocks, µs per call (median of %d CUDA-graph replays x %d calls); floor "
              "= bytes read / measured read bandwidth %.0f GB/s; MoE bytes count each chosen expert once\n",
              opt.replays, opt.calls_per_graph, bw.read_gbps);
  table.print();
}

Json row_json(const Row& r, const Bandwidth& bw) {
  Json j = Json::object();
  j.set("block", r.c.block);
  j.set("model", "deepseek-v2-lite");
  j.set("dtype", cu::dtype_name(r.c.dtype));
  j.set("batch", r.c.batch);
  j.set("kv_len", r.c.kv_len);
  j.set("page_size", r.c.block == "mla" ? r.c.page_size : 0);
  j.set("impl", r.impl);
  j.set("status", r.status);
  j.set("message", r.message);
  j.set("config", r.config);
  j.set("bytes", r.bytes());
  if (r.c.block == "moe") j.set("unique_experts", r.unique_experts);
  j.set("floor_us", double(r.bytes()) / (bw.read_gbps * 1e3));
  if (r.status == "ok") {
    const double us = r.timing.us_per_call.median;
    j.set("us_median", us);
    j.set("us_min", r.timing.us_per_call.min);
    j.set("us_max", r.timing.us_per_call.max);
    j.set("gbps", double(r.bytes()) / (us * 1e3));
    j.set("pct_read_bw", 100.0 * double(r.bytes()) / (us * 1e3) / bw.read_gbps);
    j.set("n_sets", r.timing.n_sets);
    j.set("out_rms", r.out_rms);
    j.set("ratio_vs_unfused", r.ratio_vs_unfused);
    j.set("max_abs_diff_vs_unfused", r.max_diff_vs_unfused);
    if (r.experts_equal >= 0) j.set("experts_equal_unfused", r.experts_equal);
  }
  return j;
}

}  // namespace

int main_impl(int argc, char** argv) {
  const Options opt = parse_options(argc, argv);
  const std::string no_gpu = cuda::gpu_unavailable_reason();
  if (!no_gpu.empty()) {
    std::fprintf(stderr, "cf_bench_deepseek_blocks: no usable CUDA GPU (%s)\n", no_gpu.c_str());
    return 2;
  }
  const cuda::DeviceInfo device = cuda::query_device();
  if (!fused_plans_built()) std::printf("fused plans: not built into this program (%s)\n", fused_missing_reason());
  cuda::Stream stream;
  const Bandwidth bw = print_device_and_bandwidth(device, stream, opt.bandwidth_bytes);

  std::vector<Row> rows;
  for (const auto& block : opt.blocks)
    for (cu::DType dtype : opt.dtypes)
      for (int batch : opt.batches)
        for (int kv : block == "mla" ? opt.kv_lens : std::vector<int>{0}) {
          BenchCase c;
          c.block = block;
          c.dtype = dtype;
          c.batch = batch;
          c.kv_len = kv;
          c.page_size = opt.page_size;
          for (Row& r : run_case(c, opt, device, stream)) rows.push_back(std::move(r));
        }
  print_table(rows, bw, opt);

  Json root = report_header("cf_bench_deepseek_blocks", device, bw);
  Json settings = Json::object();
  settings.set("calls_per_graph", opt.calls_per_graph);
  settings.set("replays", opt.replays);
  settings.set("page_size", opt.page_size);
  settings.set("fused_built", fused_plans_built());
  root.set("settings", settings);
  Json jrows = Json::array();
  bool any_failed = false;
  for (const Row& r : rows) {
    any_failed |= r.status == "failed";
    jrows.push(row_json(r, bw));
  }
  root.set("rows", jrows);
  write_file(opt.json_path, root.dump());
  std::printf("\nwrote %s\n", opt.json_path.c_str());
  return any_failed ? 1 : 0;
}

}  // namespace cf::bench

int main(int argc, char** argv) {
  return cf::bench::run_main("cf_bench_deepseek_blocks", cf::bench::main_impl, argc, argv);
}
