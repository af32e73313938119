// Test harness of the fused FFN block, shared by the emulator tests (host compiler, cf_kernels_emu) and the GPU tests
// (nvcc, cf_kernels): random inputs of a Case, the run through a Plan, the CPU reference (cf::ref::ffn_block) and
// the "naive low-precision" oracle of the tolerance policy, and the checks.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "clusterfusion/common/half.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/kernels/ffn/launch.hpp"
#include "clusterfusion/reference/decoder.hpp"
#include "clusterfusion/reference/tolerance.hpp"

namespace cf::test::ffn {

namespace kffn = cf::kernels::ffn;

struct Case {
  std::string name;
  dev::DType dtype = dev::DType::F16;
  int hidden = 256, ffn_hidden = 512, batch = 1;
  int cluster_size = 2;  // 0: automatic
  int max_clusters = 3;  // 0: as many as the (assumed) device runs
  int stage_units = 0;   // 0: default
  int64_t wait_budget_us = -1;  // -1: PlanConfig's default (the sanitizer cases raise it: tools run 10-100x slower)
  int max_stages = 0;
  int max_batch = 0;     // 0: batch
  bool residual = true;
  bool in_place = false;  // residual_out aliases residual and out aliases hidden (no residual: residual_out = hidden)
  float eps = 1e-5f;
  uint64_t seed = 1;

  kffn::Shape shape() const { return {hidden, ffn_hidden, eps}; }
  ref::DecoderShape ref_shape() const {
    ref::DecoderShape s;
    s.hidden = hidden, s.ffn_hidden = ffn_hidden, s.eps = eps;
    return s;
  }
};

inline std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }

template <typename T>
uint16_t to_bits16(float f) {
  return from_float<T>(f).bits;
}
template <typename T>
float from_bits16(uint16_t b) {
  return to_float(T::from_bits(b));
}

// Uniform floats in [-1, 1) from a splitmix64 stream (fast enough for Llama-sized weights).
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

// Fills n values uniform in [-scale, scale) as T bits; big buffers in parallel slices (each its own stream).
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

// Host inputs in storage bits (uint16), generated from the case's seed.
struct HostInputs {
  std::vector<uint16_t> hidden, residual, norm, w_gate_up, w_down;
};

template <typename T>
HostInputs make_inputs(const Case& c) {
  HostInputs in;
  const size_t B = size_t(c.batch), H = size_t(c.hidden), F = size_t(c.ffn_hidden);
  in.hidden = random_bits<T>(B * H, 2.0f, c.seed * 8 + 1);
  in.residual = random_bits<T>(B * H, 2.0f, c.seed * 8 + 2);
  in.norm = random_bits<T>(H, 0.25f, c.seed * 8 + 3);
  for (auto& x : in.norm) x = to_bits16<T>(1.0f + from_bits16<T>(x));
  in.w_gate_up = random_bits<T>(2 * F * H, 1.7f / std::sqrt(float(H)), c.seed * 8 + 4);
  in.w_down = random_bits<T>(H * F, 1.7f / std::sqrt(float(F)), c.seed * 8 + 5);
  return in;
}

// ---- oracles -------------------------------------------------------------------------------------------------------

struct Oracle {
  std::vector<float> out_ref;    // fp32 reference
  std::vector<float> out_naive;  // rounded where the kernel rounds: x, act, out
  std::vector<uint16_t> residual_out;
};

template <typename T>
Oracle make_oracle(const Case& c, const HostInputs& in) {
  const ref::DecoderShape s = c.ref_shape();
  const int B = c.batch, H = c.hidden, F = c.ffn_hidden;
  auto as_t = [](const std::vector<uint16_t>& v) { return reinterpret_cast<const T*>(v.data()); };
  Oracle o;
  o.residual_out.resize(size_t(B) * H);
  o.out_ref.resize(size_t(B) * H);
  o.out_naive.resize(size_t(B) * H);
  ref::FfnWeights<T> w;
  w.norm = as_t(in.norm);
  w.w_gate = as_t(in.w_gate_up);
  w.w_up = w.w_gate + size_t(F) * H;
  w.w_down = as_t(in.w_down);
  auto one_token = [&](int b) {
    const size_t row0 = size_t(b) * H;
    const T* hb = as_t(in.hidden) + row0;
    const T* rb = c.residual ? as_t(in.residual) + row0 : nullptr;
    ref::ffn_block<T, T, float>(hb, rb, reinterpret_cast<T*>(o.residual_out.data()) + row0, o.out_ref.data() + row0,
                                w, s, 1);
    // naive low-precision: x, act and out rounded to T; gate/up and the sums in fp32
    std::vector<float> x(static_cast<size_t>(H)), gate(static_cast<size_t>(F)), up(static_cast<size_t>(F)),
        act(static_cast<size_t>(F));
    std::vector<T> r_unused(static_cast<size_t>(H));
    if (rb)
      ref::add_rmsnorm(hb, rb, w.norm, r_unused.data(), x.data(), H, s.eps);
    else
      ref::rmsnorm(hb, w.norm, x.data(), H, s.eps);
    for (auto& e : x) e = round_through<T>(e);
    ref::matvec(w.w_gate, x.data(), gate.data(), F, H);
    ref::matvec(w.w_up, x.data(), up.data(), F, H);
    ref::swiglu(gate.data(), up.data(), act.data(), F);
    for (auto& e : act) e = round_through<T>(e);
    float* ob = o.out_naive.data() + row0;
    ref::matvec(w.w_down, act.data(), ob, H, F);
    for (int i = 0; i < H; ++i) ob[i] = round_through<T>(ob[i]);
  };
  // Tokens are independent: one thread per token on big shapes.
  if (B > 1 && int64_t(H) * F > (int64_t(1) << 22)) {
    std::vector<std::thread> threads;
    for (int b = 0; b < B; ++b) threads.emplace_back(one_token, b);
    for (auto& t : threads) t.join();
  } else {
    for (int b = 0; b < B; ++b) one_token(b);
  }
  return o;
}

// ---- the kernel run ------------------------------------------------------------------------------------------------

struct DeviceInputs {
  dev::DeviceBuffer<uint16_t> hidden, residual, norm, w_gate_up, w_down, residual_out, out;
};

inline void upload_inputs(const Case& c, const HostInputs& in, DeviceInputs& d) {
  auto up = [](auto& buf, const auto& host) {
    buf = std::decay_t<decltype(buf)>(host.size());
    buf.upload(host);
  };
  up(d.hidden, in.hidden);
  up(d.residual, in.residual);
  up(d.norm, in.norm);
  up(d.w_gate_up, in.w_gate_up);
  up(d.w_down, in.w_down);
  d.residual_out = dev::DeviceBuffer<uint16_t>(size_t(c.batch) * c.hidden);
  d.out = dev::DeviceBuffer<uint16_t>(size_t(c.batch) * c.hidden);
}

inline kffn::PlanConfig plan_config(const Case& c, DeviceInputs& d) {
  kffn::PlanConfig cfg;
  cfg.dtype = c.dtype;
  cfg.shape = c.shape();
  cfg.weights.norm = d.norm.data();
  cfg.weights.set_fused_gate_up(d.w_gate_up.data(), cfg.shape, c.dtype);
  cfg.weights.w_down = d.w_down.data();
  cfg.max_batch = c.max_batch > 0 ? c.max_batch : c.batch;
  cfg.cluster_size = c.cluster_size;
  cfg.max_clusters = c.max_clusters;
  cfg.stage_units = c.stage_units;
  if (c.wait_budget_us >= 0) cfg.wait_budget_us = c.wait_budget_us;
  cfg.max_stages = c.max_stages;
  return cfg;
}

// Where the outputs go: separate buffers, or (in_place) over the inputs.
inline void* residual_out_ptr(const Case& c, DeviceInputs& d) {
  if (!c.in_place) return d.residual_out.data();
  return c.residual ? d.residual.data() : d.hidden.data();
}
inline void* out_ptr(const Case& c, DeviceInputs& d) {
  return c.in_place && c.residual ? d.hidden.data() : d.out.data();
}

inline kffn::StepArgs step_args(const Case& c, DeviceInputs& d) {
  kffn::StepArgs a;
  a.batch = c.batch;
  a.hidden = d.hidden.data();
  a.residual = c.residual ? d.residual.data() : nullptr;
  a.residual_out = residual_out_ptr(c, d);
  a.out = out_ptr(c, d);
  return a;
}

struct RunResult {
  std::vector<uint16_t> out, residual_out;
};

inline RunResult download_result(const Case& c, DeviceInputs& d) {
  RunResult r;
  const size_t n = size_t(c.batch) * c.hidden;
  r.out.resize(n);
  r.residual_out.resize(n);
  auto from = [&](void* p) -> dev::DeviceBuffer<uint16_t>& {
    for (auto* b : {&d.hidden, &d.residual, &d.residual_out, &d.out})
      if (b->data() == p) return *b;
    return d.out;
  };
  from(out_ptr(c, d)).download(r.out.data(), n);
  from(residual_out_ptr(c, d)).download(r.residual_out.data(), n);
  return r;
}

// Uploads fresh inputs, poisons the outputs (0xFF: NaN), runs one step, downloads.
inline RunResult run_case(const Case& c, const HostInputs& in, uint64_t emu_seed = 0, void* stream = nullptr,
                          kffn::LaunchInfo* info = nullptr) {
  DeviceInputs d;
  upload_inputs(c, in, d);
  d.out.fill_bytes(0xFF);
  d.residual_out.fill_bytes(0xFF);
  kffn::Plan plan(plan_config(c, d));
  if (info) *info = plan.info();
  plan.run(step_args(c, d), stream, emu_seed);
  plan.check_status(stream);
  return download_result(c, d);
}

// ---- checks -------------------------------------------------------------------------------------------------------

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

// out within tolerance, residual_out bit-exact (hidden + residual rounded once).
template <typename T>
CheckReport check_result(const Case& c, const Oracle& o, const RunResult& r) {
  CheckReport rep = check_values<T>(c.name + ": out", r.out, o.out_ref, o.out_naive);
  if (r.residual_out != o.residual_out) {
    size_t i = 0;
    while (i < r.residual_out.size() && r.residual_out[i] == o.residual_out[i]) ++i;
    rep.fail(c.name + ": residual_out differs from hidden + residual at element " + std::to_string(i));
  }
  return rep;
}

}  // namespace cf::test::ffn
