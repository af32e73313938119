// bench/mla_block: µs per call of the fused MLA decode block (mla::Plan, CUDA-graph replay, rotating input sets),
// bytes read, GB/s and % of the read bandwidth measured in the same process, at DeepSeek-V2-Lite's attention shapes
// (hidden 2048, 16 heads, r 512, rope 64, nope 128, v 128, q_lora null) with random weights made on the GPU.
// The unfused baseline and the torch peer are separate programs.
//
//   cf_bench_mla_block                          # KV 1K/4K/16K x batch 1/16, fp16
//   cf_bench_mla_block --kv 4096 --batch 1 --dtype bf16 --replays 40 --json out.json
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/cuda/check.hpp"
#include "clusterfusion/cuda/device.hpp"
#include "clusterfusion/cuda/stream.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/kernels/mla/launch.hpp"
#include "clusterfusion/reference/mla.hpp"
#include "common/args.hpp"
#include "common/gpu_timing.hpp"
#include "common/report.hpp"

namespace cf::bench {
namespace {

namespace kmla = cf::kernels::mla;

struct Options : GraphBenchOptions {
  std::vector<int> kv_lens = {1024, 4096, 16384};
  std::vector<int> batches = {1, 16};
  std::vector<DType> dtypes = {DType::F16};
  int page_size = 16;
  Options() { json_path = "bench_mla_block.json"; }
};

const char* kUsage =
    "usage: cf_bench_mla_block [options]\n"
    "  --kv LIST             KV lengths attended, the new token included (default 1024,4096,16384)\n"
    "  --batch LIST          batch sizes, 1..16 (default 1,16)\n"
    "  --dtype LIST          fp16,bf16 (default fp16)\n"
    "  --page-size N         latent cache page size (default 16)\n"
    "  --calls N             calls per CUDA graph (default 20)\n"
    "  --replays N           timed graph replays (default 15)\n"
    "  --bandwidth-mib N     buffer size of the bandwidth measurement (default 1024)\n"
    "  --json PATH           where to write the JSON results (default bench_mla_block.json)\n";

Options parse_options(int argc, char** argv) {
  Options o;
  for (ArgReader args(argc, argv, kUsage); args.next();) {
    if (args.is("--kv")) {
      o.kv_lens = parse_int_list(args.value(), "--kv", 1, 1 << 20);
    } else if (args.is("--batch")) {
      o.batches = parse_int_list(args.value(), "--batch", 1, kmla::kMaxBatch);
    } else if (args.is("--dtype")) {
      o.dtypes.clear();
      for (const auto& v : parse_choices(args.value(), "--dtype", {"fp16", "bf16"}))
        o.dtypes.push_back(v == "fp16" ? DType::F16 : DType::BF16);
    } else if (args.is("--page-size")) {
      o.page_size = parse_int(args.value(), "--page-size", 1, 1 << 16);
    } else if (!read_graph_bench_option(args, o)) {
      args.unknown();
    }
  }
  return o;
}

kmla::Shape v2_lite_shape() {
  kmla::Shape s;
  s.hidden = 2048, s.n_heads = 16, s.q_lora_rank = 0, s.kv_lora_rank = 512, s.qk_nope = 128, s.qk_rope = 64;
  s.v_head = 128, s.eps = 1e-6f, s.softmax_scale = 0.11472f;
  return s;
}

// One input set: weights, a latent pool holding every sequence's rows, the page table, activations, its plan.
struct InputSet {
  std::vector<dev::DeviceBuffer<uint16_t>> weights;
  dev::DeviceBuffer<uint16_t> pages, hidden, residual, residual_out, out;
  dev::DeviceBuffer<int32_t> positions, indptr, indices, last_len;
  std::unique_ptr<kmla::Plan> plan;
  kmla::StepArgs step;
};

struct BenchCase {
  DType dtype;
  int kv, batch;
  int64_t weight_bytes, cache_bytes, activation_bytes;
  int64_t read_bytes() const { return weight_bytes + cache_bytes + activation_bytes; }
};

dev::DeviceBuffer<uint16_t> random_matrix(size_t n, DType dt, uint64_t seed, float scale, float offset,
                                          cudaStream_t stream) {
  dev::DeviceBuffer<uint16_t> b(n, "bench weights");
  fill_random(b.data(), n, dt == DType::F16 ? FillType::F16 : FillType::BF16, seed, offset - scale, offset + scale,
              stream);
  return b;
}

std::unique_ptr<InputSet> make_set(const BenchCase& c, const Options& opt, const dev::DeviceBuffer<float>& cos_sin,
                                   int max_positions, uint64_t seed, cudaStream_t stream) {
  auto set = std::make_unique<InputSet>();
  const kmla::Shape s = v2_lite_shape();
  const size_t D = size_t(s.hidden), H = size_t(s.n_heads), R = size_t(s.kv_lora_rank);
  // norm, w_q, w_kv_a, kv_a_norm, w_uk, w_uv, w_o
  const size_t sizes[7] = {D, size_t(s.q_rows()) * D, size_t(s.latent_row()) * D, R, H * size_t(s.qk_nope) * R,
                           H * size_t(s.v_head) * R, D * size_t(s.o_dim())};
  const float scales[7] = {0.1f, 0.04f, 0.04f, 0.1f, 0.1f, 0.05f, 0.04f}, offsets[7] = {1, 0, 0, 1, 0, 0, 0};
  for (int i = 0; i < 7; ++i)
    set->weights.push_back(random_matrix(sizes[i], c.dtype, seed + i, scales[i], offsets[i], stream));
  const int P = opt.page_size, pages_per_seq = (c.kv + P - 1) / P;
  std::vector<int32_t> indptr{0}, indices, last_len, positions;
  for (int b = 0; b < c.batch; ++b) {
    for (int i = 0; i < pages_per_seq; ++i) indices.push_back(b * pages_per_seq + i);
    indptr.push_back(int32_t(indices.size()));
    last_len.push_back((c.kv - 1) % P + 1);
    positions.push_back(c.kv - 1);
  }
  const size_t pool = size_t(c.batch) * size_t(pages_per_seq) * size_t(P) * size_t(s.latent_row());
  set->pages = random_matrix(pool, c.dtype, seed + 10, 1.0f, 0.0f, stream);
  set->hidden = random_matrix(size_t(c.batch) * D, c.dtype, seed + 11, 1.0f, 0.0f, stream);
  set->residual = random_matrix(size_t(c.batch) * D, c.dtype, seed + 12, 1.0f, 0.0f, stream);
  set->residual_out = dev::DeviceBuffer<uint16_t>(size_t(c.batch) * D);
  set->out = dev::DeviceBuffer<uint16_t>(size_t(c.batch) * D);
  for (auto [buf, host] : {std::pair{&set->positions, &positions}, {&set->indptr, &indptr}, {&set->indices, &indices},
                           {&set->last_len, &last_len}}) {
    *buf = dev::DeviceBuffer<int32_t>(host->size());
    buf->upload(*host);
  }
  kmla::PlanConfig cfg;
  cfg.dtype = c.dtype;
  cfg.shape = s;
  kmla::Weights& w = cfg.weights;
  w.norm = set->weights[0].data(), w.w_q = set->weights[1].data(), w.w_kv_a = set->weights[2].data();
  w.kv_a_norm = set->weights[3].data(), w.w_uk = set->weights[4].data(), w.w_uv = set->weights[5].data();
  w.w_o = set->weights[6].data();
  cfg.cache = {set->pages.data(), c.batch * pages_per_seq, P};
  cfg.rope = {cos_sin.data(), max_positions};
  cfg.max_batch = c.batch;
  set->plan = std::make_unique<kmla::Plan>(cfg);
  kmla::StepArgs& a = set->step;
  a.batch = c.batch;
  a.hidden = set->hidden.data(), a.residual = set->residual.data();
  a.residual_out = set->residual_out.data(), a.out = set->out.data();
  a.positions = set->positions.data(), a.kv_indptr = set->indptr.data(), a.kv_indices = set->indices.data();
  a.kv_last_page_len = set->last_len.data(), a.n_indices = int(indices.size());
  return set;
}

BenchCase bench_case(DType dt, int kv, int batch) {
  const kmla::Shape s = v2_lite_shape();
  const int64_t D = s.hidden;
  BenchCase c{dt, kv, batch, 0, 0, 0};
  c.weight_bytes = 2 * (D + int64_t(s.q_rows()) * D + int64_t(s.latent_row()) * D + s.kv_lora_rank +
                        int64_t(s.n_heads) * s.kv_lora_rank * (s.qk_nope + s.v_head) + D * s.o_dim());
  c.cache_bytes = 2 * int64_t(batch) * kv * s.latent_row();
  c.activation_bytes = 2 * 2 * int64_t(batch) * D;  // hidden + residual
  return c;
}

int main_impl(int argc, char** argv) {
  const Options opt = parse_options(argc, argv);
  const std::string no_gpu = cuda::gpu_unavailable_reason();
  if (!no_gpu.empty()) {
    std::fprintf(stderr, "cf_bench_mla_block: no usable CUDA GPU (%s)\n", no_gpu.c_str());
    return 2;
  }
  const cuda::DeviceInfo device = cuda::query_device();
  print_device(device);
  cuda::Stream stream;
  const Bandwidth bw = measure_bandwidth(stream, opt.bandwidth_bytes);
  std::printf("bandwidth (%zu MiB buffers): copy %.0f GB/s (read+write), read %.0f GB/s\n\n", bw.bytes >> 20,
              bw.copy_gbps, bw.read_gbps);

  // YaRN table of V2-Lite (factor 40, original context 4096, mscale 0.707 both)
  int max_kv = 1;
  for (int kv : opt.kv_lens) max_kv = std::max(max_kv, kv);
  ref::YarnRope rope;
  rope.dim = 64, rope.factor = 40.0f, rope.mscale = rope.mscale_all_dim = 0.707f;
  std::vector<float> table(size_t(max_kv) * 64);
  for (int pos = 0; pos < max_kv; ++pos)
    ref::yarn_cos_sin(rope, pos, &table[size_t(pos) * 64], &table[size_t(pos) * 64 + 32]);
  dev::DeviceBuffer<float> cos_sin(table.size());
  cos_sin.upload(table);

  Table t({"case", "sets", "us/call", "MB read", "GB/s", "% of read bw"});
  Json rows = Json::array();
  for (DType dt : opt.dtypes)
    for (int kv : opt.kv_lens)
      for (int batch : opt.batches) {
        const BenchCase c = bench_case(dt, kv, batch);
        const int n_sets = sets_to_defeat_l2(size_t(c.read_bytes()), device.l2_bytes);
        std::vector<std::unique_ptr<InputSet>> sets;
        for (int i = 0; i < n_sets; ++i)
          sets.push_back(make_set(c, opt, cos_sin, max_kv, 1000 * uint64_t(i) + 1, stream));
        for (auto& s : sets) {  // one eager call each: errors surface here, not inside a graph
          s->plan->run(s->step, stream);
          s->plan->check_status(stream);
        }
        auto enqueue = [&](cudaStream_t st, int i) { sets[size_t(i)]->plan->run(sets[size_t(i)]->step, st); };
        const GraphTiming timing =
            time_in_graph(stream, n_sets, opt.calls_per_graph, opt.warmup, opt.replays, enqueue);
        for (auto& s : sets) s->plan->check_status(stream);
        const double us = timing.us_per_call.median, gbps = double(c.read_bytes()) / (us * 1e3);
        const std::string label = format("%s kv%d b%d", dt == DType::F16 ? "fp16" : "bf16", kv, batch);
        t.add_row({label, format("%d", n_sets), format("%.2f", us), format("%.2f", double(c.read_bytes()) / 1e6),
                   format("%.0f", gbps), format("%.1f", 100.0 * gbps / bw.read_gbps)});
        Json row = Json::object();
        row.set("case", label).set("kv", kv).set("batch", batch).set("us_per_call", us);
        row.set("read_bytes", c.read_bytes()).set("gbps", gbps).set("pct_read_bw", 100.0 * gbps / bw.read_gbps);
        row.set("plan", sets[0]->plan->info().describe());
        rows.push(row);
      }
  t.print();
  Json root = report_header("cf_bench_mla_block", device, bw);
  root.set("rows", rows);
  write_file(opt.json_path, root.dump());
  std::printf("\nwrote %s\n", opt.json_path.c_str());
  return 0;
}

}  // namespace
}  // namespace cf::bench

int main(int argc, char** argv) {
  try {
    return cf::bench::main_impl(argc, argv);
  } catch (const cf::InputError& e) {
    std::fprintf(stderr, "cf_bench_mla_block: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cf_bench_mla_block: error: %s\n", e.what());
    return 1;
  }
}
