// The LM head op of the kernel-test harness (harness/driver.hpp; final norm + logits + greedy argmax): random inputs
// of a Case, the run through a Plan, the CPU reference and the checks.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "clusterfusion/kernels/lm_head/launch.hpp"
#include "clusterfusion/reference/ops.hpp"
#include "harness/common.hpp"

namespace cf::test::lm_head {

namespace klm = cf::kernels::lm_head;
struct Case : CaseBase {
  int hidden = 256, vocab = 500, batch = 1;
  int max_ctas = 4;     // 0: one per SM (132 assumed by the emulator)
  int stage_units = 0;  // 0: default
  int max_stages = 0;   // 0: as many as fit
  int max_batch = 0;    // 0: batch
  bool residual = true;
  bool logits = true, tokens = true;
  std::vector<int> tied_rows;  // rows made identical and the largest logit of every token (lowest must win)
  int nan_token = -1;          // this token's hidden row gets a NaN: every logit NaN, token 0
};

struct HostInputs {
  std::vector<uint16_t> hidden, residual, norm, w_out;
};

// x = rmsnorm(hidden + residual) * norm in fp32 for token b (the reference's first step).
template <typename T>
std::vector<float> normed(const Case& c, const HostInputs& in, int b) {
  return normed_row<T>(in.hidden, c.residual ? &in.residual : nullptr, in.norm, c.hidden, b, 1e-5f);
}

template <typename T>
HostInputs make_inputs(const Case& c) {
  HostInputs in;
  const size_t B = size_t(c.batch), H = size_t(c.hidden), V = size_t(c.vocab);
  in.hidden = random_bits<T>(B * H, 2.0f, c.seed * 8 + 1);
  in.residual = random_bits<T>(B * H, 2.0f, c.seed * 8 + 2);
  in.norm = random_bits<T>(H, 0.25f, c.seed * 8 + 3);
  for (auto& x : in.norm) x = to_bits16<T>(1.0f + from_bits16<T>(x));
  in.w_out = random_bits<T>(V * H, 1.7f / std::sqrt(float(H)), c.seed * 8 + 4);
  if (!c.tied_rows.empty()) {
    // the tied rows: 0.2 * sign(sum of the tokens' x) per column, so they score far above the random rows
    std::vector<float> xsum(H, 0.0f);
    for (int b = 0; b < c.batch; ++b) {
      const std::vector<float> x = normed<T>(c, in, b);
      for (size_t i = 0; i < H; ++i) xsum[i] += x[i];
    }
    for (int r : c.tied_rows)
      for (size_t i = 0; i < H; ++i) in.w_out[size_t(r) * H + i] = to_bits16<T>(xsum[i] >= 0.0f ? 0.2f : -0.2f);
  }
  if (c.nan_token >= 0) in.hidden[size_t(c.nan_token) * H + 7] = to_bits16<T>(NAN);
  return in;
}

struct Oracle {
  std::vector<float> logits_ref;    // fp32 reference [batch, vocab]
  std::vector<float> logits_naive;  // x rounded to T
  std::vector<int32_t> tokens_ref;  // cf::ref::argmax of logits_ref
};

template <typename T>
Oracle make_oracle(const Case& c, const HostInputs& in) {
  const int B = c.batch, H = c.hidden, V = c.vocab;
  const T* w = reinterpret_cast<const T*>(in.w_out.data());
  Oracle o;
  o.logits_ref.resize(size_t(B) * V);
  o.logits_naive.resize(size_t(B) * V);
  o.tokens_ref.resize(size_t(B));
  auto one_token = [&](int b) {
    std::vector<float> x = normed<T>(c, in, b);
    float* lr = o.logits_ref.data() + size_t(b) * V;
    ref::matvec(w, x.data(), lr, V, H);
    o.tokens_ref[size_t(b)] = ref::argmax(lr, V);
    for (auto& e : x) e = round_through<T>(e);
    ref::matvec(w, x.data(), o.logits_naive.data() + size_t(b) * V, V, H);
  };
  for_each_token(B, int64_t(H) * V, one_token);
  return o;
}

struct DeviceInputs {
  dev::DeviceBuffer<uint16_t> hidden, residual, norm, w_out;
  dev::DeviceBuffer<float> logits;
  dev::DeviceBuffer<int32_t> tokens;
};

inline void upload_inputs(const Case& c, const HostInputs& in, DeviceInputs& d) {
  upload(d.hidden, in.hidden);
  upload(d.residual, in.residual);
  upload(d.norm, in.norm);
  upload(d.w_out, in.w_out);
  d.logits = dev::DeviceBuffer<float>(size_t(c.batch) * c.vocab);
  d.tokens = dev::DeviceBuffer<int32_t>(size_t(c.batch));
}
inline DeviceInputs uploaded(const Case& c, const HostInputs& in) {
  DeviceInputs d;
  upload_inputs(c, in, d);
  return d;
}

inline klm::PlanConfig plan_config(const Case& c, DeviceInputs& d) {
  klm::PlanConfig cfg;
  cfg.dtype = c.dtype;
  cfg.shape = {c.hidden, c.vocab, 1e-5f};
  cfg.weights.norm = d.norm.data();
  cfg.weights.w_out = d.w_out.data();
  cfg.max_batch = c.max_batch > 0 ? c.max_batch : c.batch;
  cfg.max_ctas = c.max_ctas;
  cfg.stage_units = c.stage_units;
  cfg.max_stages = c.max_stages;
  if (c.wait_budget_us >= 0) cfg.wait_budget_us = c.wait_budget_us;
  cfg.trace = c.trace;
  return cfg;
}

inline klm::StepArgs step_args(const Case& c, DeviceInputs& d) {
  klm::StepArgs a;
  a.batch = c.batch;
  a.hidden = d.hidden.data();
  a.residual = c.residual ? d.residual.data() : nullptr;
  a.logits = c.logits ? d.logits.data() : nullptr;
  a.tokens = c.tokens ? d.tokens.data() : nullptr;
  return a;
}

struct RunResult {
  std::vector<float> logits;
  std::vector<int32_t> tokens;
};

inline RunResult download_result(DeviceInputs& d) { return {d.logits.download(), d.tokens.download()}; }

// logits within tolerance of the reference (per token, the NaN token excluded), tokens = the argmax of the kernel's
// own logits (exact: lowest id on ties), and = the reference's argmax wherever its top-2 margin exceeds the tolerance.
template <typename T>
CheckReport check_result(const Case& c, const HostInputs&, const Oracle& o, const RunResult& r) {
  CheckReport rep;
  const size_t V = size_t(c.vocab);
  for (int b = 0; b < c.batch; ++b) {
    const size_t at = size_t(b) * V;
    if (c.logits && b != c.nan_token) {
      const std::vector<float> got(r.logits.begin() + ptrdiff_t(at), r.logits.begin() + ptrdiff_t(at + V));
      const std::vector<float> want(o.logits_ref.begin() + ptrdiff_t(at), o.logits_ref.begin() + ptrdiff_t(at + V));
      const std::vector<float> naive(o.logits_naive.begin() + ptrdiff_t(at),
                                     o.logits_naive.begin() + ptrdiff_t(at + V));
      const CheckReport t = check_floats<T>(c.name + ": logits of token " + std::to_string(b), got, want, naive);
      if (!t.ok) rep.fail(t.message);
      else if (b == 0 && rep.ok) rep.message = t.message;
    }
    if (c.logits && b == c.nan_token) {
      const size_t nans = size_t(std::count_if(r.logits.begin() + ptrdiff_t(at), r.logits.begin() + ptrdiff_t(at + V),
                                               [](float v) { return std::isnan(v); }));
      if (nans != V) rep.fail(c.name + ": token with a NaN input has " + std::to_string(nans) + " NaN logits of " +
                              std::to_string(V));
    }
    if (!c.tokens) continue;
    const int32_t got = r.tokens[size_t(b)];
    if (c.logits) {
      const int32_t own = ref::argmax(r.logits.data() + at, c.vocab);
      if (got != own)
        rep.fail(c.name + ": token " + std::to_string(b) + ": argmax " + std::to_string(got) +
                 " is not the argmax of its own logits (" + std::to_string(own) + ")");
    }
    // the reference's choice wherever it is clear
    const float* lr = o.logits_ref.data() + at;
    const int32_t want = o.tokens_ref[size_t(b)];
    float second = -INFINITY;
    for (size_t v = 0; v < V; ++v)
      if (int32_t(v) != want && lr[v] > second) second = lr[v];
    const double margin = double(lr[want]) - double(second);
    const ref::Tolerance tol = ref::tolerance_for<T>();
    const double rms = ref::rms(std::span<const float>(lr, V));
    const double bound = 2.0 * (tol.atol_rms * rms + tol.rtol * std::fabs(lr[want]));
    if ((margin > bound || b == c.nan_token) && got != want)
      rep.fail(c.name + ": token " + std::to_string(b) + ": argmax " + std::to_string(got) + ", reference " +
               std::to_string(want) + " (margin " + std::to_string(margin) + ")");
  }
  return rep;
}

// The op of the harness's driver.
struct Op {
  using Case = lm_head::Case;
  using Result = RunResult;
  static bool same_bits(const Result& a, const Result& b) {
    return a.tokens == b.tokens && a.logits.size() == b.logits.size() &&
           std::memcmp(a.logits.data(), b.logits.data(), a.logits.size() * sizeof(float)) == 0;
  }
  struct Launch {
    DeviceInputs d;
    klm::Plan plan;
    klm::StepArgs step;
    Launch(const Case& c, const HostInputs& in) : d(uploaded(c, in)), plan(plan_config(c, d)), step(step_args(c, d)) {}
    void poison() {  // logits NaN, tokens -1
      d.logits.fill_bytes(0xFF);
      d.tokens.fill_bytes(0xFF);
    }
    void run(void* stream, uint64_t emu_seed) { plan.run(step, stream, emu_seed); }
    Result result() { return download_result(d); }
    int ctas() const { return plan.info().ctas; }
    int ring_stages() const { return plan.info().stages; }  // weight-ring stages
    std::string describe() const {
      const klm::LaunchInfo& li = plan.info();
      return std::to_string(li.ctas) + " CTAs, U " + std::to_string(li.stage_units) + ", " +
             std::to_string(li.stages) + " stages, " + std::to_string(li.smem_bytes) + " B smem";
    }
  };
};

}  // namespace cf::test::lm_head
