// The arguments of deepseek_moe_layer (the MoE FFN block of a DeepSeek-V2 layer, docs/mla.md §2) as Python passes
// them, checked once for every device (both extension modules parse through here).
//
// Arrays (B = batch, Hd = hidden, E experts, F = expert width, S = shared width):
//   output, residual_output, hidden_states, residual   [B, Hd]      (residual may be None)
//   router_weight float32 [E, Hd]   gate_up_weight [E, 2F, Hd] (per expert its gate rows, then its up rows)
//   down_weight [E, Hd, F]   rms_weight [Hd]   shared_gate_up_weight [2S, Hd] and shared_down_weight [Hd, S] or None
#pragma once
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "clusterfusion/device/types.hpp"
#include "clusterfusion/model/types.hpp"
#include "layer_args.hpp"

namespace cf::py {

struct MoeLayerArgs {
  Array output, residual_output, hidden, router_weight, gate_up_weight, down_weight, rms_weight;
  std::optional<Array> residual, shared_gate_up_weight, shared_down_weight;
  MoeBlockShape shape;
  bool cuda = false;
  int device_id = 0;
  Elem dtype = Elem::F16;
  int batch = 0, hidden_size = 0;
};

inline ExpertSelection parse_topk_method(const std::string& s) {
  if (s == "greedy") return ExpertSelection::Greedy;
  if (s == "group_limited_greedy") return ExpertSelection::GroupLimitedGreedy;
  throw nb::value_error(("topk_method: '" + s + "' is not known (expected 'greedy' or 'group_limited_greedy')").c_str());
}

inline MoeLayerArgs parse_moe_layer(nb::handle output, nb::handle residual_output, nb::handle hidden_states,
                                    nb::handle residual, nb::handle router_weight, nb::handle gate_up_weight,
                                    nb::handle down_weight, nb::handle rms_weight, nb::handle shared_gate_up_weight,
                                    nb::handle shared_down_weight, int top_k, bool norm_topk_prob,
                                    float routed_scaling, const std::string& topk_method, int n_group,
                                    int topk_group, float eps) {
  MoeLayerArgs a{to_array(output, "output", true),
                 to_array(residual_output, "residual_output", true),
                 to_array(hidden_states, "hidden_states", false),
                 to_array(router_weight, "router_weight", false),
                 to_array(gate_up_weight, "gate_up_weight", false),
                 to_array(down_weight, "down_weight", false),
                 to_array(rms_weight, "rms_weight", false),
                 to_optional_array(residual, "residual", false),
                 to_optional_array(shared_gate_up_weight, "shared_gate_up_weight", false),
                 to_optional_array(shared_down_weight, "shared_down_weight", false)};
  if (!(eps > 0.0f) || !(eps < 1.0f))
    throw nb::value_error(("eps: " + std::to_string(eps) + " must be in (0, 1)").c_str());
  auto opt = [](const std::optional<Array>& x) { return x ? &*x : nullptr; };
  a.cuda = a.hidden.cuda;
  a.device_id = a.hidden.device_id;
  expect_same_device({&a.hidden, &a.output, &a.residual_output, opt(a.residual), &a.router_weight, &a.gate_up_weight,
                      &a.down_weight, &a.rms_weight, opt(a.shared_gate_up_weight), opt(a.shared_down_weight)},
                     a.cuda);
  parse_activations(a);

  // Experts: gate_up_weight [E, 2F, Hd] gives E and F.
  a.gate_up_weight.expect_ndim(3);
  expect_same_elem(a.gate_up_weight, a.hidden);
  const int64_t experts = a.gate_up_weight.dim(0), rows = a.gate_up_weight.dim(1);
  if (experts < 1 || rows < 2 || rows % 2 != 0 || a.gate_up_weight.dim(2) != a.hidden_size)
    a.gate_up_weight.fail_value("has shape " + dims_text(a.gate_up_weight.dims()) + ", expected (n_experts, 2 * "
                                "expert_ffn, " + std::to_string(a.hidden_size) + ") (gate rows, then up rows)");
  MoeBlockShape& s = a.shape;
  s.hidden = a.hidden_size;
  s.n_experts = checked_int(experts, "n_experts");
  s.expert_ffn = checked_int(rows / 2, "expert_ffn");
  a.down_weight.expect_shape({s.n_experts, s.hidden, s.expert_ffn}, "(n_experts, hidden, expert_ffn)");
  expect_same_elem(a.down_weight, a.hidden);
  a.router_weight.expect_elem({Elem::F32});
  a.router_weight.expect_shape({s.n_experts, s.hidden}, "(n_experts, hidden): the router, float32");
  a.rms_weight.expect_shape({s.hidden}, "(hidden,)");
  expect_same_elem(a.rms_weight, a.hidden);
  if (bool(a.shared_gate_up_weight) != bool(a.shared_down_weight))
    throw nb::value_error("shared_gate_up_weight / shared_down_weight: pass both (shared experts) or neither");
  if (a.shared_gate_up_weight) {
    const Array& gu = *a.shared_gate_up_weight;
    gu.expect_ndim(2);
    if (gu.dim(0) < 2 || gu.dim(0) % 2 != 0 || gu.dim(1) != s.hidden)
      gu.fail_value("has shape " + dims_text(gu.dims()) + ", expected (2 * shared_ffn, " + std::to_string(s.hidden) +
                    ")");
    expect_same_elem(gu, a.hidden);
    s.shared_ffn = checked_int(gu.dim(0) / 2, "shared_ffn");
    a.shared_down_weight->expect_shape({s.hidden, s.shared_ffn}, "(hidden, shared_ffn)");
    expect_same_elem(*a.shared_down_weight, a.hidden);
  }

  // Routing.
  s.top_k = top_k;
  s.norm_topk_prob = norm_topk_prob;
  s.routed_scaling = routed_scaling;
  s.selection = parse_topk_method(topk_method);
  s.n_group = n_group;
  s.topk_group = topk_group;
  s.eps = eps;
  if (top_k < 1 || top_k > s.n_experts)
    throw nb::value_error(("top_k: " + std::to_string(top_k) + " outside [1, " + std::to_string(s.n_experts) +
                           "] (n_experts)").c_str());
  if (!(routed_scaling > 0.0f) || !std::isfinite(routed_scaling))
    throw nb::value_error("routed_scaling: must be positive and finite");
  if (s.selection == ExpertSelection::GroupLimitedGreedy &&
      (n_group < 1 || s.n_experts % n_group != 0 || topk_group < 1 || topk_group > n_group ||
       top_k > topk_group * (s.n_experts / n_group)))
    throw nb::value_error(("n_group / topk_group: " + std::to_string(n_group) + " / " + std::to_string(topk_group) +
                           " do not fit " + std::to_string(s.n_experts) + " experts and top_k " +
                           std::to_string(top_k) + " (n_group divides n_experts, topk_group <= n_group)").c_str());

  const Array* residual_in = opt(a.residual);
  expect_no_overlap({{&a.output, {&a.hidden, residual_in}}, {&a.residual_output, {&a.hidden, residual_in}}},
                    {&a.hidden, residual_in, &a.router_weight, &a.gate_up_weight, &a.down_weight, &a.rms_weight,
                     opt(a.shared_gate_up_weight), opt(a.shared_down_weight)});
  return a;
}

// The MoE plan's configuration of a call (kernels/moe/params.hpp's PlanConfig, as mla_plan_config).
template <typename PlanConfig, typename Device>
PlanConfig moe_plan_config(const MoeLayerArgs& a, dev::DType dtype, int max_batch, int cluster_size, Device&& device) {
  PlanConfig cfg;
  cfg.dtype = dtype;
  cfg.shape = a.shape;
  cfg.weights.norm = device(a.rms_weight);
  cfg.weights.router = static_cast<const float*>(device(a.router_weight));
  cfg.weights.w_gate_up = device(a.gate_up_weight);
  cfg.weights.w_down = device(a.down_weight);
  cfg.weights.shared_gate_up = a.shared_gate_up_weight ? device(*a.shared_gate_up_weight) : nullptr;
  cfg.weights.shared_down = a.shared_down_weight ? device(*a.shared_down_weight) : nullptr;
  cfg.max_batch = max_batch > 0 ? max_batch : a.batch;
  cfg.cluster_size = cluster_size;
  return cfg;
}

}  // namespace cf::py
