// The MoE FFN op of the kernel-test harness (harness/driver.hpp): random inputs of a Case whose routing has a clear
// margin, the run through a moe::Plan, the CPU reference (cf::ref::moe_route / add_expert, the steps of
// cf::ref::moe_ffn) and the naive low-precision oracle of the tolerance policy, and the checks: out within tolerance,
// residual_out bit-exact, the reported experts equal to the reference's and their weights within 1e-5.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "clusterfusion/kernels/moe/launch.hpp"
#include "clusterfusion/reference/moe.hpp"
#include "harness/common.hpp"

namespace cf::test::moe {

namespace kmoe = cf::kernels::moe;

struct Case : CaseBase {
  int hidden = 64, n_experts = 8, top_k = 2, expert_ffn = 32, shared_ffn = 0, batch = 1;
  bool grouped = false;  // group_limited_greedy with n_group / topk_group
  int n_group = 1, topk_group = 1;
  bool norm_topk_prob = false;
  float routed_scaling = 1.0f;
  bool residual = true;
  bool in_place = false;         // residual_out over residual (or hidden), out over hidden
  bool report_routing = true;    // StepArgs expert_ids / expert_weights set
  bool poison_unchosen = false;  // the experts no token chose: weights NaN (only chosen experts may be read)
  bool tied_router = false;      // router all zeros: every score ties, the lowest ids win (no margin)
  int max_batch = 0;             // 0: batch
  int sm_count = 6;              // CTAs per launch at most (the emulator's time)
  int max_stages = 0;            // 0: as many as fit
  float eps = 1e-6f;

  kmoe::Shape shape() const {
    kmoe::Shape s;
    s.hidden = hidden, s.n_experts = n_experts, s.top_k = top_k, s.expert_ffn = expert_ffn;
    s.shared_ffn = shared_ffn, s.norm_topk_prob = norm_topk_prob, s.routed_scaling = routed_scaling;
    s.selection = grouped ? ExpertSelection::GroupLimitedGreedy : ExpertSelection::Greedy;
    s.n_group = n_group, s.topk_group = topk_group, s.eps = eps;
    return s;
  }
  ref::MoeShape ref_shape() const {
    ref::MoeShape s;
    s.hidden = hidden, s.n_experts = n_experts, s.top_k = top_k, s.expert_ffn = expert_ffn;
    s.shared_ffn = shared_ffn, s.norm_topk_prob = norm_topk_prob, s.routed_scaling_factor = routed_scaling;
    s.method = grouped ? ref::TopkMethod::GroupLimitedGreedy : ref::TopkMethod::Greedy;
    s.n_group = n_group, s.topk_group = topk_group;
    return s;
  }
};

// Host inputs: activations and expert weights in storage bits, the router in fp32.
struct HostInputs {
  std::vector<uint16_t> hidden, residual, norm, w_gate_up, w_down, shared_gate_up, shared_down;
  std::vector<float> router;
};

// x = rmsnorm(hidden + residual) * norm of token b in fp32 (unrounded).
template <typename T>
std::vector<float> normed(const Case& c, const HostInputs& in, int b) {
  return normed_row<T>(in.hidden, c.residual ? &in.residual : nullptr, in.norm, c.hidden, b, c.eps);
}
template <typename T>
std::vector<float> rounded(std::vector<float> v) {
  for (auto& e : v) e = round_through<T>(e);
  return v;
}

// The scores of token x's router in the order the reference ranks them: every consecutive gap among the first
// top_k + 1 eligible experts (and, grouped, the first topk_group + 1 groups) at least 1e-3 of the score, so the
// kernel's fp32 logits (summed in another order) cannot flip a choice.
inline bool clear_margin(const std::vector<float>& x, const std::vector<float>& router, const ref::MoeShape& s) {
  std::vector<float> p(size_t(s.n_experts));
  ref::matvec(router.data(), x.data(), p.data(), s.n_experts, s.hidden);
  ref::softmax(p.data(), p.data(), s.n_experts);
  auto clear = [](std::vector<float> v, int n) {
    std::sort(v.begin(), v.end(), std::greater<float>());
    for (int i = 0; i < n && i + 1 < int(v.size()); ++i)
      if (v[size_t(i)] - v[size_t(i) + 1] < 1e-3f * v[size_t(i)]) return false;
    return true;
  };
  std::vector<float> eligible = p;
  if (s.method == ref::TopkMethod::GroupLimitedGreedy) {
    const int per_group = s.n_experts / s.n_group;
    std::vector<float> best(size_t(s.n_group));
    for (int g = 0; g < s.n_group; ++g)
      best[size_t(g)] = *std::max_element(p.begin() + g * per_group, p.begin() + (g + 1) * per_group);
    if (!clear(best, s.topk_group)) return false;
    std::vector<float> sorted = best;
    std::sort(sorted.begin(), sorted.end(), std::greater<float>());
    for (int e = 0; e < s.n_experts; ++e)
      if (best[size_t(e / per_group)] < sorted[size_t(s.topk_group) - 1]) eligible[size_t(e)] = 0.0f;
  }
  std::vector<float> positive;
  for (float v : eligible)
    if (v > 0.0f) positive.push_back(v);
  return clear(positive, s.top_k);
}

template <typename T>
HostInputs make_inputs(const Case& c) {
  HostInputs in;
  const size_t B = size_t(c.batch), H = size_t(c.hidden), E = size_t(c.n_experts), F = size_t(c.expert_ffn),
               S = size_t(c.shared_ffn);
  in.hidden = random_bits<T>(B * H, 2.0f, c.seed * 16 + 1);
  in.residual = random_bits<T>(B * H, 2.0f, c.seed * 16 + 2);
  in.norm = random_bits<T>(H, 0.25f, c.seed * 16 + 3);
  for (auto& x : in.norm) x = to_bits16<T>(1.0f + from_bits16<T>(x));
  in.w_gate_up = random_bits<T>(E * 2 * F * H, 1.7f / std::sqrt(float(H)), c.seed * 16 + 4);
  in.w_down = random_bits<T>(E * H * F, 1.7f / std::sqrt(float(F)), c.seed * 16 + 5);
  in.shared_gate_up = random_bits<T>(2 * S * H, 1.7f / std::sqrt(float(H)), c.seed * 16 + 6);
  in.shared_down = random_bits<T>(H * S, 1.7f / std::sqrt(float(std::max<size_t>(S, 1))), c.seed * 16 + 7);
  // the router: the first draw whose routing of every token has a clear margin
  const ref::MoeShape s = c.ref_shape();
  std::vector<std::vector<float>> xs;
  for (int b = 0; b < c.batch; ++b) xs.push_back(rounded<T>(normed<T>(c, in, b)));
  for (uint64_t attempt = 0; !c.tied_router; ++attempt) {
    FastRandom r(c.seed * 1000 + attempt + 77);
    in.router.resize(E * H);
    for (auto& w : in.router) w = r.uniform() * 3.0f / std::sqrt(float(H));
    bool ok = true;
    for (int b = 0; b < c.batch && ok; ++b) ok = clear_margin(xs[size_t(b)], in.router, s);
    if (ok) break;
    if (attempt == 1000) throw Error(c.name + ": no router draw with a clear top-k margin");
  }
  if (c.tied_router) in.router.assign(E * H, 0.0f);
  if (c.poison_unchosen) {
    std::vector<bool> chosen(E, false);
    for (int b = 0; b < c.batch; ++b)
      for (int e : ref::moe_route(xs[size_t(b)].data(), in.router.data(), s).ids) chosen[size_t(e)] = true;
    const uint16_t nan = to_bits16<T>(NAN);
    for (size_t e = 0; e < E; ++e) {
      if (chosen[e]) continue;
      std::fill_n(in.w_gate_up.begin() + ptrdiff_t(e * 2 * F * H), 2 * F * H, nan);
      std::fill_n(in.w_down.begin() + ptrdiff_t(e * H * F), H * F, nan);
    }
  }
  return in;
}

// ---- oracles -------------------------------------------------------------------------------------------------------

struct Oracle {
  std::vector<float> out_ref;    // fp32 reference (x unrounded)
  std::vector<float> out_naive;  // rounded where the kernel rounds: x, act, out
  std::vector<uint16_t> residual_out;
  std::vector<int32_t> ids;      // [batch, top_k] the reference's choice (from the kernel's x, rounded to T)
  std::vector<float> weights;
};

// acc += scale * expert(x) with the activations rounded to T (the kernel's rounding point).
template <typename T>
void add_expert_rounded(const float* x, const ref::ExpertWeights<T>& e, int hidden, int ffn, float scale, float* acc) {
  std::vector<float> gate(static_cast<size_t>(ffn)), up(gate.size()), act(gate.size()), y(static_cast<size_t>(hidden));
  ref::matvec(e.gate, x, gate.data(), ffn, hidden);
  ref::matvec(e.up, x, up.data(), ffn, hidden);
  ref::swiglu(gate.data(), up.data(), act.data(), ffn);
  for (auto& a : act) a = round_through<T>(a);
  ref::matvec(e.down, act.data(), y.data(), hidden, ffn);
  for (int i = 0; i < hidden; ++i) acc[i] += scale * y[size_t(i)];
}

template <typename T>
Oracle make_oracle(const Case& c, const HostInputs& in) {
  const ref::MoeShape s = c.ref_shape();
  const int B = c.batch, H = c.hidden, F = c.expert_ffn, S = c.shared_ffn;
  auto as_t = [](const std::vector<uint16_t>& v) { return reinterpret_cast<const T*>(v.data()); };
  Oracle o;
  o.residual_out.resize(size_t(B) * H);
  for (size_t i = 0; i < o.residual_out.size(); ++i)
    o.residual_out[i] = c.residual ? to_bits16<T>(from_bits16<T>(in.hidden[i]) + from_bits16<T>(in.residual[i]))
                                   : in.hidden[i];
  const ref::ExpertWeights<T> shared{as_t(in.shared_gate_up), as_t(in.shared_gate_up) + size_t(S) * H,
                                     as_t(in.shared_down)};
  auto expert = [&](int e) {
    const T* gate = as_t(in.w_gate_up) + size_t(e) * 2 * F * H;
    return ref::ExpertWeights<T>{gate, gate + size_t(F) * H, as_t(in.w_down) + size_t(e) * H * F};
  };
  for (int b = 0; b < B; ++b) {
    const std::vector<float> x = normed<T>(c, in, b), xr = rounded<T>(x);
    const ref::Routing r = ref::moe_route(xr.data(), in.router.data(), s);
    std::vector<float> acc(size_t(H), 0.0f), naive(size_t(H), 0.0f);
    if (S > 0) {
      ref::add_expert(x.data(), shared, H, S, 1.0f, acc.data());
      add_expert_rounded<T>(xr.data(), shared, H, S, 1.0f, naive.data());
    }
    for (size_t i = 0; i < r.ids.size(); ++i) {
      ref::add_expert(x.data(), expert(r.ids[i]), H, F, r.weights[i], acc.data());
      add_expert_rounded<T>(xr.data(), expert(r.ids[i]), H, F, r.weights[i], naive.data());
      o.ids.push_back(r.ids[i]);
      o.weights.push_back(r.weights[i]);
    }
    for (int i = 0; i < H; ++i) {
      o.out_ref.push_back(acc[size_t(i)]);
      o.out_naive.push_back(round_through<T>(naive[size_t(i)]));
    }
  }
  return o;
}

// ---- the kernel run ------------------------------------------------------------------------------------------------

struct DeviceInputs {
  dev::DeviceBuffer<uint16_t> hidden, residual, norm, w_gate_up, w_down, shared_gate_up, shared_down, residual_out,
      out;
  dev::DeviceBuffer<float> router, expert_weights;
  dev::DeviceBuffer<int32_t> expert_ids;
};

inline DeviceInputs uploaded(const Case& c, const HostInputs& in) {
  DeviceInputs d;
  upload(d.hidden, in.hidden);
  upload(d.residual, in.residual);
  upload(d.norm, in.norm);
  upload(d.w_gate_up, in.w_gate_up);
  upload(d.w_down, in.w_down);
  if (c.shared_ffn > 0) {
    upload(d.shared_gate_up, in.shared_gate_up);
    upload(d.shared_down, in.shared_down);
  }
  upload(d.router, in.router);
  d.residual_out = dev::DeviceBuffer<uint16_t>(size_t(c.batch) * c.hidden);
  d.out = dev::DeviceBuffer<uint16_t>(size_t(c.batch) * c.hidden);
  d.expert_ids = dev::DeviceBuffer<int32_t>(size_t(c.batch) * c.top_k);
  d.expert_weights = dev::DeviceBuffer<float>(size_t(c.batch) * c.top_k);
  return d;
}

inline kmoe::PlanConfig plan_config(const Case& c, DeviceInputs& d) {
  kmoe::PlanConfig cfg;
  cfg.dtype = c.dtype;
  cfg.shape = c.shape();
  cfg.weights.norm = d.norm.data();
  cfg.weights.router = d.router.data();
  cfg.weights.w_gate_up = d.w_gate_up.data();
  cfg.weights.w_down = d.w_down.data();
  if (c.shared_ffn > 0) {
    cfg.weights.shared_gate_up = d.shared_gate_up.data();
    cfg.weights.shared_down = d.shared_down.data();
  }
  cfg.max_batch = c.max_batch > 0 ? c.max_batch : c.batch;
  cfg.sm_count = c.sm_count;
  cfg.max_stages = c.max_stages;
  if (c.wait_budget_us >= 0) cfg.wait_budget_us = c.wait_budget_us;
  return cfg;
}

inline kmoe::StepArgs step_args(const Case& c, DeviceInputs& d) {
  kmoe::StepArgs a;
  a.batch = c.batch;
  a.hidden = d.hidden.data();
  a.residual = c.residual ? d.residual.data() : nullptr;
  const BlockOutputs o = block_outputs(c, d);
  a.residual_out = o.residual_out;
  a.out = o.out;
  if (c.report_routing) {
    a.expert_ids = d.expert_ids.data();
    a.expert_weights = d.expert_weights.data();
  }
  return a;
}

struct RunResult {
  std::vector<uint16_t> out, residual_out;
  std::vector<int32_t> ids;
  std::vector<float> weights;
};

inline RunResult download_result(const Case& c, DeviceInputs& d) {
  RunResult r;
  const size_t n = size_t(c.batch) * c.hidden;
  download_block_outputs(c, d, n, r.out, r.residual_out);
  if (c.report_routing) {
    r.ids = d.expert_ids.download();
    r.weights = d.expert_weights.download();
  }
  return r;
}

// ---- checks -------------------------------------------------------------------------------------------------------

template <typename T>
CheckReport check_result(const Case& c, const HostInputs&, const Oracle& o, const RunResult& r) {
  CheckReport rep = check_values<T>(c.name + ": out", r.out, o.out_ref, o.out_naive);
  check_bit_exact(rep, c.name + ": residual_out differs from hidden + residual", r.residual_out, o.residual_out);
  for (uint16_t v : r.out)
    if (!std::isfinite(from_bits16<T>(v))) {
      rep.fail(c.name + ": out has a non-finite value");
      break;
    }
  if (!c.report_routing) return rep;
  if (r.ids != o.ids) {
    std::string got, want;
    for (size_t i = 0; i < r.ids.size(); ++i) got += " " + std::to_string(r.ids[i]);
    for (size_t i = 0; i < o.ids.size(); ++i) want += " " + std::to_string(o.ids[i]);
    rep.fail(c.name + ": expert_ids" + got + ", reference" + want);
  }
  for (size_t i = 0; i < o.weights.size(); ++i)
    if (!(std::fabs(r.weights[i] - o.weights[i]) <= 1e-5f + 1e-4f * std::fabs(o.weights[i]))) {
      rep.fail(c.name + ": expert_weights[" + std::to_string(i) + "] " + std::to_string(r.weights[i]) +
               ", reference " + std::to_string(o.weights[i]));
      break;
    }
  return rep;
}

// The op of the harness's driver.
struct Op {
  using Case = moe::Case;
  using Result = RunResult;
  static bool same_bits(const Result& a, const Result& b) {
    return a.out == b.out && a.residual_out == b.residual_out && a.ids == b.ids &&
           a.weights.size() == b.weights.size() &&
           std::memcmp(a.weights.data(), b.weights.data(), a.weights.size() * sizeof(float)) == 0;
  }
  struct Launch {
    const Case& c;
    DeviceInputs d;
    kmoe::Plan plan;
    kmoe::StepArgs step;
    Launch(const Case& c_, const HostInputs& in)
        : c(c_), d(uploaded(c_, in)), plan(plan_config(c_, d)), step(step_args(c_, d)) {}
    void poison() {
      d.out.fill_bytes(0xFF);
      d.residual_out.fill_bytes(0xFF);
      d.expert_ids.fill_bytes(0xFF);
      d.expert_weights.fill_bytes(0xFF);
    }
    void run(void* stream, uint64_t emu_seed) { plan.run(step, stream, emu_seed); }
    Result result() { return download_result(c, d); }
    int ctas() const { return plan.info().clusters; }
    std::string describe() const { return plan.info().describe(); }
  };
};

}  // namespace cf::test::moe
