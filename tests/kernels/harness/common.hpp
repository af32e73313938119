// What every op of the kernel-test harness shares (tests/kernels, docs/emulator.md "Kernel tests"): random inputs
// in storage bits, the comparisons of the tolerance policy, the check report. Compiled by the host compiler (emulator
// tests) and by nvcc (GPU tests) alike.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <ostream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "clusterfusion/common/half.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/reference/ops.hpp"
#include "clusterfusion/reference/tolerance.hpp"

namespace cf::test {

// What every op's case has: its name (the test's), the storage type, the seed of its random inputs, and the plan
// options every kernel takes.
struct CaseBase {
  std::string name;
  DType dtype = DType::F16;
  int64_t wait_budget_us = -1;  // -1: PlanConfig's default (the sanitizer cases raise it: tools run 10-100x slower)
  bool trace = false;           // PlanConfig::trace (the phase trace)
  uint64_t seed = 1;
};
inline std::ostream& operator<<(std::ostream& os, const CaseBase& c) { return os << c.name; }

template <typename T>
uint16_t to_bits16(float f) {
  return from_float<T>(f).bits;
}
template <typename T>
float from_bits16(uint16_t b) {
  return to_float(T::from_bits(b));
}
inline float bits_to_float(DType dt, uint16_t b) {
  return dt == DType::F16 ? from_bits16<half>(b) : from_bits16<bfloat16>(b);
}

// Uniform floats in [-1, 1) from a splitmix64 stream (fast enough for Llama-sized weights and caches).
struct FastRandom {
  uint64_t state;
  explicit FastRandom(uint64_t seed) : state(seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull) {}
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform() { return float(int32_t(uint32_t(next() >> 32))) * (1.0f / 2147483648.0f); }
};

// n values uniform in [-scale, scale) as T bits; big buffers in parallel slices (each its own stream).
template <typename T>
std::vector<uint16_t> random_bits(size_t n, float scale, uint64_t seed) {
  std::vector<uint16_t> v(n);
  const size_t slices = n > (size_t(1) << 22) ? 8 : 1;
  auto fill = [&](size_t s) {
    FastRandom r(seed * 1000003 + s);
    const size_t begin = n * s / slices, end = n * (s + 1) / slices;
    for (size_t i = begin; i < end; ++i) v[i] = to_bits16<T>(r.uniform() * scale);
  };
  std::vector<std::thread> threads;
  for (size_t s = 1; s < slices; ++s) threads.emplace_back(fill, s);
  fill(0);
  for (auto& t : threads) t.join();
  return v;
}

// Runs f(b) for every token b: one thread per token when the work is big (tokens are independent).
template <typename F>
void for_each_token(int batch, int64_t work_per_token, F&& f) {
  if (batch > 1 && work_per_token > (int64_t(1) << 22)) {
    std::vector<std::thread> threads;
    for (int b = 0; b < batch; ++b) threads.emplace_back(f, b);
    for (auto& t : threads) t.join();
  } else {
    for (int b = 0; b < batch; ++b) f(b);
  }
}

// A device buffer holding a copy of `host` (any trivially copyable element type).
template <typename T>
void upload(dev::DeviceBuffer<T>& buf, const std::vector<T>& host) {
  buf = dev::DeviceBuffer<T>(host.size());
  buf.upload(host);
}

// n elements at `at`, read from whichever of `buffers` holds that pointer (outputs that may have been written over
// the inputs: the in-place cases).
inline void download_from(std::initializer_list<dev::DeviceBuffer<uint16_t>*> buffers, const void* at, size_t n,
                          std::vector<uint16_t>& host) {
  host.resize(n);
  for (auto* b : buffers)
    if (b->data() == at) return b->download(host.data(), n);
  throw Error("download_from: the pointer is in none of the buffers");
}

// A block's outputs in a case's device inputs: separate buffers, or (Case::in_place) over the inputs: residual_out
// over residual (over hidden without one), out over hidden when there is a residual.
struct BlockOutputs {
  void* residual_out;
  void* out;
};
template <typename Case, typename DeviceInputs>
BlockOutputs block_outputs(const Case& c, DeviceInputs& d) {
  if (!c.in_place) return {d.residual_out.data(), d.out.data()};
  return {c.residual ? d.residual.data() : d.hidden.data(), c.residual ? d.hidden.data() : d.out.data()};
}
// Their n elements each, read from whichever buffer holds them.
template <typename Case, typename DeviceInputs>
void download_block_outputs(const Case& c, DeviceInputs& d, size_t n, std::vector<uint16_t>& out,
                            std::vector<uint16_t>& residual_out) {
  const BlockOutputs o = block_outputs(c, d);
  download_from({&d.hidden, &d.residual, &d.residual_out, &d.out}, o.out, n, out);
  download_from({&d.hidden, &d.residual, &d.residual_out, &d.out}, o.residual_out, n, residual_out);
}

// x = rmsnorm(hidden + residual) * norm of token b in fp32, unrounded (the blocks' first step); no residual: null.
template <typename T>
std::vector<float> normed_row(const std::vector<uint16_t>& hidden, const std::vector<uint16_t>* residual,
                              const std::vector<uint16_t>& norm, int n, int b, float eps) {
  auto as_t = [](const std::vector<uint16_t>& v) { return reinterpret_cast<const T*>(v.data()); };
  const size_t row0 = size_t(b) * size_t(n);
  std::vector<float> x(static_cast<size_t>(n)), sum(static_cast<size_t>(n));
  if (residual)
    ref::add_rmsnorm(as_t(hidden) + row0, as_t(*residual) + row0, as_t(norm), sum.data(), x.data(), n, eps);
  else
    ref::rmsnorm(as_t(hidden) + row0, as_t(norm), x.data(), n, eps);
  return x;
}

// One unit in the last place of T at |x| (subnormals included).
template <typename T>
double ulp_of(float x) {
  constexpr bool kHalf = std::is_same_v<T, half>;
  constexpr int kMantissa = kHalf ? 10 : 7, kMinExp = kHalf ? -14 : -126;
  int exp = 0;
  (void)std::frexp(std::fabs(double(x)), &exp);  // |x| = m 2^exp, m in [0.5, 1)
  return std::ldexp(1.0, std::max(exp - 1, kMinExp) - kMantissa);
}

struct CheckReport {
  bool ok = true;
  std::string message;
  void fail(const std::string& m) {
    if (ok) message.clear();  // keep only failures once there is one
    ok = false;
    if (!message.empty()) message += "\n";
    message += m;
  }
};

// y against the oracle under the tolerance policy (rules 1 and 2 with the rounding-noise fallback: ref::check_policy).
template <typename T>
CheckReport check_floats(const std::string& what, const std::vector<float>& y, const std::vector<float>& ref,
                         const std::vector<float>& naive) {
  CheckReport rep;
  const ref::PolicyCheck p = ref::check_policy<T>(y, ref, naive);
  if (p.ok)
    rep.message = what + " " + p.message;
  else
    rep.fail(what + ": " + p.message);
  return rep;
}
// The same for storage bits of T.
template <typename T>
CheckReport check_values(const std::string& what, const std::vector<uint16_t>& got, const std::vector<float>& ref,
                         const std::vector<float>& naive) {
  std::vector<float> y(got.size());
  for (size_t i = 0; i < y.size(); ++i) y[i] = from_bits16<T>(got[i]);
  return check_floats<T>(what, y, ref, naive);
}
// residual_out is hidden + residual rounded once: bit-exact.
inline void check_bit_exact(CheckReport& rep, const std::string& what, const std::vector<uint16_t>& got,
                            const std::vector<uint16_t>& want) {
  if (got == want) return;
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  rep.fail(what + " at element " + std::to_string(i));
}

}  // namespace cf::test
