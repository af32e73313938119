// llama-bench's two tests for the cpu backend on a model file, measured the way llama-bench measures them, so
// bench/cpu_vs_llamacpp.sh can put both side by side:
//   ppN: a prompt of N random tokens in one batch, from an empty cache (logits of its last token);
//   tgN: N decode steps of one random token each, from an empty cache (logits every step).
// One warm-up of each test, then --reps timed repetitions; one line per test:
//   test=pp64 threads=2 arithmetic=f32 kv=f32 isa=avx512 reps=3 tok_s=123.4 sd=1.2 weight_bytes_per_token=96600000
// and with --bandwidth the machine's copy bandwidth (a 256 MB memcpy, best of 5, `threads` copies in parallel):
//   copy_bandwidth_gb_s=20.1
//
//   cf_bench_cpu_model --model PATH [--threads N] [--prompt 64] [--gen 64] [--reps 3]
//                      [--arithmetic f32|int16|int8] [--int8] [--kv-f16] [--isa auto|avx512|avx2|portable] [--bandwidth]
// --arithmetic: the cpu backend's (default: the command line's, int16); --int8 = --arithmetic int8.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/model.hpp"
#include "clusterfusion/runtime/runner.hpp"
#include "common/args.hpp"
#include "isa.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string model, isa;
  int threads = 0, prompt = 64, gen = 64, reps = 3;
  cf::CpuArithmetic arithmetic = cf::kCliCpuArithmetic;
  bool kv_f16 = false, bandwidth = false;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw cf::InputError(a + ": missing value");
      return argv[++i];
    };
    if (a == "--model") o.model = value();
    else if (a == "--threads") o.threads = cf::bench::parse_int(value(), "--threads", 0, 256);
    else if (a == "--prompt") o.prompt = cf::bench::parse_int(value(), "--prompt", 0, 4096);
    else if (a == "--gen") o.gen = cf::bench::parse_int(value(), "--gen", 0, 4096);
    else if (a == "--reps") o.reps = cf::bench::parse_int(value(), "--reps", 1, 1000);
    else if (a == "--isa") o.isa = value();
    else if (a == "--arithmetic") {
      const std::string name = value();
      const auto arithmetic = cf::cpu_arithmetic_from_name(name);
      if (!arithmetic) throw cf::InputError("--arithmetic: '" + name + "' (expected f32, int16 or int8)");
      o.arithmetic = *arithmetic;
    } else if (a == "--int8") o.arithmetic = cf::CpuArithmetic::Int8;
    else if (a == "--kv-f16") o.kv_f16 = true;
    else if (a == "--bandwidth") o.bandwidth = true;
    else if (a == "--help" || a == "-h") {
      std::puts("cf_bench_cpu_model --model PATH [--threads N] [--prompt 64] [--gen 64] [--reps 3]\n"
                "                   [--arithmetic f32|int16|int8] [--int8] [--kv-f16] [--isa auto|avx512|avx2|portable]\n"
                "                   [--bandwidth]");
      std::exit(0);
    } else {
      throw cf::InputError("unknown argument '" + a + "' (try --help)");
    }
  }
  if (o.model.empty()) throw cf::InputError("--model: a model file is required");
  return o;
}

// Best copy bandwidth (read + write bytes per second) of `threads` concurrent memcpy over 256 MB in all.
double copy_bandwidth(int threads) {
  const size_t total = size_t(256) << 20, part = total / size_t(threads);
  std::vector<char> src(total, 1), dst(total, 2);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t)
      pool.emplace_back([&, t] { std::memcpy(dst.data() + t * part, src.data() + t * part, part); });
    std::memcpy(dst.data(), src.data(), part);
    for (auto& th : pool) th.join();
    best = std::max(best, 2.0 * double(total) / std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

size_t weight_bytes_per_token(const cf::ModelWeights& w) {
  size_t total = w.lm_head().bytes.size();
  for (const auto& l : w.layers)
    for (const cf::WeightMatrix* m : {&l.attn_q, &l.attn_k, &l.attn_v, &l.attn_output, &l.ffn_gate, &l.ffn_up, &l.ffn_down})
      total += m->bytes.size();
  return total;
}

}  // namespace

int main(int argc, char** argv) try {
  const Options o = parse(argc, argv);
  const cf::LoadedModel model = cf::load_model(o.model, cf::weight_load_options("cpu"));
  const cf::ModelConfig& c = model.weights->config;
  cf::BackendOptions options;
  options.threads = o.threads;
  options.cpu_isa = o.isa;
  options.cpu_arithmetic = o.arithmetic;
  options.cpu_kv_type = o.kv_f16 ? cf::DType::F16 : cf::DType::F32;
  const int context = o.prompt + o.gen + 16;
  options.kv_pages = (context + options.page_size - 1) / options.page_size;
  options.max_batch_tokens = std::max(o.prompt, 1);
  cf::Runner runner(cf::create_backend("cpu", model.weights, options), 1, context);
  const int threads = o.threads > 0 ? o.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  const char* isa = cf::cpu::isa_name(cf::cpu::resolve_isa(o.isa));

  std::mt19937 rng(1234);
  auto random_token = [&] { return int32_t(rng() % uint32_t(c.vocab)); };
  auto run_prompt = [&] {
    std::vector<int32_t> tokens(size_t(o.prompt));
    for (auto& t : tokens) t = random_token();
    runner.reset(0);
    runner.prefill(0, tokens);
  };
  auto run_gen = [&](int n) {
    runner.reset(0);
    const int32_t seq = 0;
    for (int i = 0; i < n; ++i) {
      const int32_t token = random_token();
      runner.decode(std::span(&seq, 1), std::span(&token, 1));
    }
  };
  auto report = [&](const char* test, int n, auto&& run) {
    run();  // warm-up
    std::vector<double> rates;
    for (int r = 0; r < o.reps; ++r) {
      const auto t0 = Clock::now();
      run();
      rates.push_back(n / std::chrono::duration<double>(Clock::now() - t0).count());
    }
    double mean = 0, var = 0;
    for (double x : rates) mean += x / double(rates.size());
    for (double x : rates) var += (x - mean) * (x - mean) / double(std::max<size_t>(1, rates.size() - 1));
    std::printf("test=%s%d threads=%d arithmetic=%s kv=%s isa=%s reps=%d tok_s=%.2f sd=%.2f weight_bytes_per_token=%zu\n",
                test, n, threads, cf::cpu_arithmetic_name(o.arithmetic), o.kv_f16 ? "f16" : "f32", isa, o.reps, mean, std::sqrt(var),
                weight_bytes_per_token(*model.weights));
    std::fflush(stdout);
  };
  if (o.prompt > 0) report("pp", o.prompt, run_prompt);
  if (o.gen > 0) report("tg", o.gen, [&] { run_gen(o.gen); });
  if (o.bandwidth) std::printf("copy_bandwidth_gb_s=%.2f threads=%d\n", copy_bandwidth(threads) / 1e9, threads);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "cf_bench_cpu_model: %s\n", e.what());
  return 1;
}
