// The FFN op of the kernel-test harness (harness/driver.hpp): random inputs of a Case, the run through a Plan, the CPU
// reference (cf::ref::ffn_block) and the "naive low-precision" oracle of the tolerance policy, and the checks.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "clusterfusion/kernels/ffn/launch.hpp"
#include "clusterfusion/reference/decoder.hpp"
#include "harness/common.hpp"

namespace cf::test::ffn {

namespace kffn = cf::kernels::ffn;

struct Case : CaseBase {
  int hidden = 256, ffn_hidden = 512, batch = 1;
  int cluster_size = 2;  // 0: automatic
  int max_clusters = 3;  // 0: as many as the (assumed) device runs
  int stage_units = 0;   // 0: default
  int max_stages = 0;
  int max_batch = 0;     // 0: batch
  bool residual = true;
  bool in_place = false;  // residual_out aliases residual and out aliases hidden (no residual: residual_out = hidden)
  float eps = 1e-5f;

  kffn::Shape shape() const { return {hidden, ffn_hidden, eps}; }
  ref::DecoderShape ref_shape() const {
    ref::DecoderShape s;
    s.hidden = hidden, s.ffn_hidden = ffn_hidden, s.eps = eps;
    return s;
  }
};

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
  for_each_token(B, int64_t(H) * F, one_token);
  return o;
}

// ---- the kernel run ------------------------------------------------------------------------------------------------

struct DeviceInputs {
  dev::DeviceBuffer<uint16_t> hidden, residual, norm, w_gate_up, w_down, residual_out, out;
};

inline void upload_inputs(const Case& c, const HostInputs& in, DeviceInputs& d) {
  upload(d.hidden, in.hidden);
  upload(d.residual, in.residual);
  upload(d.norm, in.norm);
  upload(d.w_gate_up, in.w_gate_up);
  upload(d.w_down, in.w_down);
  d.residual_out = dev::DeviceBuffer<uint16_t>(size_t(c.batch) * c.hidden);
  d.out = dev::DeviceBuffer<uint16_t>(size_t(c.batch) * c.hidden);
}

inline DeviceInputs uploaded(const Case& c, const HostInputs& in) {
  DeviceInputs d;
  upload_inputs(c, in, d);
  return d;
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
  cfg.trace = c.trace;
  return cfg;
}

inline kffn::StepArgs step_args(const Case& c, DeviceInputs& d) {
  kffn::StepArgs a;
  a.batch = c.batch;
  a.hidden = d.hidden.data();
  a.residual = c.residual ? d.residual.data() : nullptr;
  const BlockOutputs o = block_outputs(c, d);
  a.residual_out = o.residual_out;
  a.out = o.out;
  return a;
}

struct RunResult {
  std::vector<uint16_t> out, residual_out;
};

inline RunResult download_result(const Case& c, DeviceInputs& d) {
  RunResult r;
  const size_t n = size_t(c.batch) * c.hidden;
  download_block_outputs(c, d, n, r.out, r.residual_out);
  return r;
}

// ---- checks -------------------------------------------------------------------------------------------------------

// out within tolerance, residual_out bit-exact (hidden + residual rounded once).
template <typename T>
CheckReport check_result(const Case& c, const HostInputs&, const Oracle& o, const RunResult& r) {
  CheckReport rep = check_values<T>(c.name + ": out", r.out, o.out_ref, o.out_naive);
  check_bit_exact(rep, c.name + ": residual_out differs from hidden + residual", r.residual_out, o.residual_out);
  return rep;
}

// The op of the harness's driver.
struct Op {
  using Case = ffn::Case;
  using Result = RunResult;
  static bool same_bits(const Result& a, const Result& b) { return a.out == b.out && a.residual_out == b.residual_out; }
  struct Launch {
    const Case& c;
    DeviceInputs d;
    kffn::Plan plan;
    kffn::StepArgs step;
    Launch(const Case& c_, const HostInputs& in)
        : c(c_), d(uploaded(c_, in)), plan(plan_config(c_, d)), step(step_args(c_, d)) {}
    void poison() {
      d.out.fill_bytes(0xFF);
      d.residual_out.fill_bytes(0xFF);
    }
    void run(void* stream, uint64_t emu_seed) { plan.run(step, stream, emu_seed); }
    Result result() { return download_result(c, d); }
    int ctas() const { return plan.info().clusters * plan.info().cluster_size; }
    int ring_stages() const { return plan.info().stages; }  // weight-ring stages
    std::string describe() const {
      const kffn::LaunchInfo& li = plan.info();
      return "cluster " + std::to_string(li.cluster_size) + " x " + std::to_string(li.clusters) + ", U " +
             std::to_string(li.stage_units) + ", down " + std::to_string(li.down_cols) + " cols x " +
             std::to_string(li.down_tiles) + " tiles, " + std::to_string(li.blocks) + " blocks of " +
             std::to_string(li.block_rows) + " rows, " + std::to_string(li.stages) + " stages, " +
             std::to_string(li.smem_bytes) + " B smem";
    }
  };
};

}  // namespace cf::test::ffn
