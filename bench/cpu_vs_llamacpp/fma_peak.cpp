// The fp32 fused multiply-add peak of one core, the ceiling of any fp32 weight product: 12 independent chains of
// 16-lane FMAs (AVX-512) or 8-lane ones (AVX2), enough to cover the instruction's latency on current x86 cores.
// Where AVX-512 VNNI is present, the byte dot-product peak the same way (12 chains of vpdpbusd: 64 multiply-adds
// each): the ceiling of the int8 products, and twice that of the int16 ones (two byte planes).
// Prints what llama-bench's prompt rate would need in fp32 (and int16) to compare with it:
//   cf_bench_fma_peak [--macs-per-token N] [--seconds S]
//   fma_peak_gflop_s=224.1 isa=avx512 fp32_ceiling_tok_s=1055.0 vnni_peak_gmac_s=470.2 int16_ceiling_tok_s=2218.0
#include <immintrin.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

using Clock = std::chrono::steady_clock;

typedef float Vec16 __attribute__((vector_size(64)));
typedef float Vec8 __attribute__((vector_size(32)));

// FMA instructions per second over `seconds`.
// Inlined into its callers, whose target attribute enables the instruction set (the caller checks the CPU has it).
template <class V>
[[gnu::always_inline]] inline double fma_rate(double seconds) {
  const V mul = V{} + 0.9999999f, add = V{} + 1e-8f;
  // Twelve named chains (an array would live in memory).
  V a0 = mul, a1 = a0 + add, a2 = a1 + add, a3 = a2 + add, a4 = a3 + add, a5 = a4 + add, a6 = a5 + add,
    a7 = a6 + add, a8 = a7 + add, a9 = a8 + add, a10 = a9 + add, a11 = a10 + add;
  long iterations = 0;
  const auto t0 = Clock::now();
  double elapsed = 0;
  while (elapsed < seconds) {
    for (int k = 0; k < 100000; ++k) {
      // Each line contracts to one FMA (-ffp-contract=fast); the empty asm keeps the chains in registers.
      a0 = a0 * mul + add, a1 = a1 * mul + add, a2 = a2 * mul + add, a3 = a3 * mul + add;
      a4 = a4 * mul + add, a5 = a5 * mul + add, a6 = a6 * mul + add, a7 = a7 * mul + add;
      a8 = a8 * mul + add, a9 = a9 * mul + add, a10 = a10 * mul + add, a11 = a11 * mul + add;
      asm volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7), "+v"(a8),
                   "+v"(a9), "+v"(a10), "+v"(a11));
    }
    iterations += 100000;
    elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  }
  return double(iterations) * 12 / elapsed;
}

[[gnu::target("avx512f,fma")]] double fma_rate_avx512(double s) { return fma_rate<Vec16>(s); }

// vpdpbusd instructions per second over `seconds` (12 chains, as fma_rate).
[[gnu::target("avx512f,avx512vnni")]] double vnni_rate(double seconds) {
  const __m512i u = _mm512_set1_epi32(0x01010101), s = _mm512_set1_epi32(0x01020304);
  __m512i a0 = _mm512_set1_epi32(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0,
          a10 = a0, a11 = a0;
  long iterations = 0;
  const auto t0 = Clock::now();
  double elapsed = 0;
  while (elapsed < seconds) {
    for (int k = 0; k < 100000; ++k) {
      a0 = _mm512_dpbusd_epi32(a0, u, s), a1 = _mm512_dpbusd_epi32(a1, u, s), a2 = _mm512_dpbusd_epi32(a2, u, s);
      a3 = _mm512_dpbusd_epi32(a3, u, s), a4 = _mm512_dpbusd_epi32(a4, u, s), a5 = _mm512_dpbusd_epi32(a5, u, s);
      a6 = _mm512_dpbusd_epi32(a6, u, s), a7 = _mm512_dpbusd_epi32(a7, u, s), a8 = _mm512_dpbusd_epi32(a8, u, s);
      a9 = _mm512_dpbusd_epi32(a9, u, s), a10 = _mm512_dpbusd_epi32(a10, u, s), a11 = _mm512_dpbusd_epi32(a11, u, s);
      asm volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7), "+v"(a8),
                   "+v"(a9), "+v"(a10), "+v"(a11));
    }
    iterations += 100000;
    elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  }
  return double(iterations) * 12 / elapsed;
}
[[gnu::target("avx2,fma")]] double fma_rate_avx2(double s) { return fma_rate<Vec8>(s); }

}  // namespace

int main(int argc, char** argv) {
  double macs_per_token = 0, seconds = 1.0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--macs-per-token" || a == "--seconds") && i + 1 < argc) {
      char* end = nullptr;
      const double v = std::strtod(argv[++i], &end);
      if (*end != '\0' || !(v > 0)) {
        std::fprintf(stderr, "cf_bench_fma_peak: %s: expected a positive number, got '%s'\n", a.c_str(), argv[i]);
        return 1;
      }
      (a == "--seconds" ? seconds : macs_per_token) = v;
    } else {
      std::fprintf(stderr, "cf_bench_fma_peak: unknown argument '%s' (usage: [--macs-per-token N] [--seconds S])\n",
                   a.c_str());
      return 1;
    }
  }
  __builtin_cpu_init();
  double lanes = 0, rate = 0;
  const char* isa = nullptr;
  if (__builtin_cpu_supports("avx512f")) {
    rate = fma_rate_avx512(seconds), lanes = 16, isa = "avx512";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    rate = fma_rate_avx2(seconds), lanes = 8, isa = "avx2";
  } else {
    std::fprintf(stderr, "cf_bench_fma_peak: this CPU has neither AVX-512 nor AVX2 + FMA\n");
    return 1;
  }
  const double flops = rate * lanes * 2;
  std::printf("fma_peak_gflop_s=%.1f isa=%s", flops / 1e9, isa);
  if (macs_per_token > 0) std::printf(" fp32_ceiling_tok_s=%.1f", rate * lanes / macs_per_token);
  if (__builtin_cpu_supports("avx512vnni")) {
    const double macs = vnni_rate(seconds) * 64;
    std::printf(" vnni_peak_gmac_s=%.1f", macs / 1e9);
    if (macs_per_token > 0) std::printf(" int16_ceiling_tok_s=%.1f", macs / 2 / macs_per_token);
  }
  std::printf("\n");
  return 0;
}
