// Prompt and generation throughput of the cpu backend on a random-weight model of SmolLM2-135M's shapes (or another
// preset of cf::model_preset), per weight type and thread count:
//   cf_bench_cpu_forward [--dtype q4_1|q8_0|f16|f32] [--threads N] [--prompt N] [--gen N] [--arithmetic f32|int16|int8]
//                       [--preset smollm2-135m|llama2-7b|llama3-8b|deepseek-v2-lite] [--layers N] [--isa portable|avx2]
// --layers keeps only the first N layers of the preset (a big model's layers in less memory).
#include <time.h>

#include <chrono>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/model.hpp"
#include "clusterfusion/runtime/runner.hpp"
#include "clusterfusion/runtime/weights.hpp"
#include "kernels.hpp"

int main(int argc, char** argv) {
  std::string dtype_arg = "q4_1", preset = "smollm2-135m";
  int threads = 0, prompt = 64, gen = 64, layers = 0;
  std::string isa;
  cf::CpuArithmetic arithmetic = cf::kCliCpuArithmetic;
  bool kv_f16 = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--dtype") dtype_arg = next();
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--prompt") prompt = std::stoi(next());
    else if (a == "--gen") gen = std::stoi(next());
    else if (a == "--isa") isa = next();
    else if (a == "--preset") preset = next();
    else if (a == "--layers") layers = std::stoi(next());
    else if (a == "--int8") arithmetic = cf::CpuArithmetic::Int8;
    else if (a == "--arithmetic") {
      const std::string name = next();
      const auto parsed = cf::cpu_arithmetic_from_name(name);
      if (!parsed) { std::fprintf(stderr, "--arithmetic: '%s' (expected f32, int16 or int8)\n", name.c_str()); return 2; }
      arithmetic = *parsed;
    }
    else if (a == "--kv-f16") kv_f16 = true;
    else { std::fprintf(stderr, "unknown argument %s\n", a.c_str()); return 2; }
  }
  cf::DType dtype = cf::DType::Q4_1;
  if (dtype_arg == "q8_0") dtype = cf::DType::Q8_0;
  else if (dtype_arg == "f16") dtype = cf::DType::F16;
  else if (dtype_arg == "f32") dtype = cf::DType::F32;
  else if (dtype_arg == "q4_0") dtype = cf::DType::Q4_0;

  cf::ModelConfig c = cf::model_preset(preset);
  c.max_context = std::min(c.max_context, prompt + gen + 16);
  if (layers > 0) c.n_layers = std::min(c.n_layers, layers);
  auto weights = std::make_shared<cf::ModelWeights>(cf::ModelWeights::random(c, 1, dtype));
  cf::BackendOptions options;
  options.threads = threads;
  options.cpu_isa = isa;
  options.cpu_arithmetic = arithmetic;
  if (kv_f16) options.cpu_kv_type = cf::DType::F16;
  cf::Runner runner(cf::create_backend("cpu", weights, options));

  std::vector<int32_t> tokens(static_cast<size_t>(prompt));
  for (int i = 0; i < prompt; ++i) tokens[size_t(i)] = (i * 7919) % c.vocab;
  using clock = std::chrono::steady_clock;
  // Process CPU time as well as wall time: on a shared machine CPU time per token is the steadier figure.
  auto cpu_seconds = [] {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  };
  const double cpu0 = cpu_seconds();
  auto t0 = clock::now();
  const std::vector<float>* logits = &runner.prefill(0, tokens);
  const double prompt_s = std::chrono::duration<double>(clock::now() - t0).count();
  const double cpu1 = cpu_seconds();
  t0 = clock::now();
  for (int i = 0; i < gen; ++i) {
    int32_t best = 0;
    for (int v = 1; v < c.vocab; ++v) if ((*logits)[size_t(v)] > (*logits)[size_t(best)]) best = v;
    const int32_t seq = 0;
    logits = &runner.decode(std::span<const int32_t>(&seq, 1), std::span<const int32_t>(&best, 1));
  }
  const double gen_s = std::chrono::duration<double>(clock::now() - t0).count();
  const double cpu2 = cpu_seconds();
  std::printf("%s, %d layers, dtype %s arithmetic %s isa %s threads %d weights %.1f MB: prompt %d tok in %.3f s = %.1f tok/s (%.2f cpu-ms/tok); generation %d tok in %.3f s = %.1f tok/s (%.2f cpu-ms/tok)\n",
              c.name.c_str(), c.n_layers, dtype_arg.c_str(), cf::cpu_arithmetic_name(arithmetic), cf::cpu::isa_name(cf::cpu::resolve_isa(isa)), threads,
              double(weights->matrix_bytes()) / 1e6, prompt, prompt_s, prompt / prompt_s, 1e3 * (cpu1 - cpu0) / prompt, gen, gen_s,
              gen / gen_s, 1e3 * (cpu2 - cpu1) / gen);
}
