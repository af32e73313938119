// The MoE Plan of launch.hpp and the host validation of params.hpp, compiled twice: by nvcc into cf_kernels (plan.cu)
// and by the host compiler into cf_kernels_emu (instantiations_emu.cpp). Only those files include it, so the
// device-API types (DeviceBuffer, TensorMap, streams) never leak into launch.hpp. The kernels themselves are
// instantiated per element-type combination by CF_MOE_INSTANTIATE (instantiations_f16.cu / _bf16.cu, or the emulator
// file).
#pragma once
#include <algorithm>
#include <cmath>
#include <string>

#include "../common/plan_support.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/device/launch.hpp"
#include "clusterfusion/device/tensor_map.hpp"
#include "clusterfusion/kernels/moe/launch.hpp"
#include "clusterfusion/kernels/moe/traits.hpp"
#include "kernel_select.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::moe {

// ---- host validation ------------------------------------------------------------------------------------------

namespace {
bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
std::string str(int64_t v) { return std::to_string(v); }
}  // namespace

void validate_shape(const Shape& s) {
  auto fail = [](const std::string& m) { throw InputError("moe: shape: " + m); };
  if (s.hidden < 32 || s.hidden % 32 != 0) fail("hidden " + str(s.hidden) + " must be a positive multiple of 32");
  if (s.n_experts < 1 || s.n_experts > kMaxExperts)
    fail("n_experts " + str(s.n_experts) + " outside [1, " + str(kMaxExperts) + "]");
  if (s.top_k < 1 || s.top_k > std::min(s.n_experts, kMaxTopK))
    fail("top_k " + str(s.top_k) + " outside [1, " + str(std::min(s.n_experts, kMaxTopK)) + "]");
  if (s.expert_ffn < 16 || s.expert_ffn % 16 != 0)
    fail("expert_ffn " + str(s.expert_ffn) + " must be a positive multiple of 16");
  if (s.shared_ffn < 0 || s.shared_ffn % 16 != 0)
    fail("shared_ffn " + str(s.shared_ffn) + " must be 0 (no shared experts) or a multiple of 16");
  const int64_t rows_limit = int64_t(1) << 31;  // TMA row coordinates are int32
  if (int64_t(s.n_experts) * 2 * s.expert_ffn >= rows_limit || int64_t(s.n_experts) * s.hidden >= rows_limit)
    fail("n_experts x expert_ffn and n_experts x hidden must stay below 2^31 rows");
  if (!(s.routed_scaling > 0.0f) || !std::isfinite(s.routed_scaling))
    fail("routed_scaling must be a finite number > 0");
  if (!(s.eps > 0.0f)) fail("eps must be > 0");
  if (s.selection == ExpertSelection::GroupLimitedGreedy) {
    if (s.n_group < 1 || s.n_group > kMaxGroups || s.n_experts % s.n_group != 0)
      fail("group_limited_greedy needs n_group in [1, " + str(kMaxGroups) + "] dividing n_experts (" +
           str(s.n_experts) + "), got " + str(s.n_group));
    if (s.topk_group < 1 || s.topk_group > s.n_group)
      fail("topk_group " + str(s.topk_group) + " outside [1, n_group " + str(s.n_group) + "]");
    if (s.top_k > s.topk_group * (s.n_experts / s.n_group))
      fail("top_k " + str(s.top_k) + " exceeds the experts of the topk_group groups (" +
           str(s.topk_group * (s.n_experts / s.n_group)) + ")");
  }
}

void validate_config(const PlanConfig& c) {
  auto fail = [](const std::string& m) { throw InputError("moe: config: " + m); };
  validate_element_types("moe", c.element_types());
  validate_shape(c.shape);
  if (c.max_batch < 1 || c.max_batch > kMaxBatch)
    fail("max_batch " + str(c.max_batch) + " outside [1, " + str(kMaxBatch) + "]");
  if (c.cluster_size != 0 && c.cluster_size != 1)
    fail("cluster_size " + str(c.cluster_size) +
         " is not supported (0 = automatic or 1: the MoE kernels use no clusters)");
  if (c.max_clusters < 0) fail("max_clusters must be >= 0");
  if (c.sm_count < 0) fail("sm_count must be >= 0");
  if (c.max_stages != 0 && c.max_stages < pl::kMinStages)
    fail("max_stages " + str(c.max_stages) + " must be 0 (as many as fit) or >= " + str(pl::kMinStages));
  if (c.wait_budget_us < 0) fail("wait_budget_us must be >= 0 (0 = no limit)");
  const Weights& w = c.weights;
  if (!w.norm || !w.router || !w.w_gate_up || !w.w_down)
    fail("weights.norm, weights.router, weights.w_gate_up and weights.w_down must be set");
  if (c.shape.shared_ffn > 0 && (!w.shared_gate_up || !w.shared_down))
    fail("weights.shared_gate_up and weights.shared_down must be set when shared_ffn > 0");
  if (c.shape.shared_ffn == 0 && (w.shared_gate_up || w.shared_down))
    fail("weights.shared_gate_up / shared_down are set but shared_ffn is 0");
  for (const void* p : {w.norm, static_cast<const void*>(w.router), w.w_gate_up, w.w_down, w.shared_gate_up,
                        w.shared_down})
    if (!aligned16(p)) fail("weight pointers must be 16-byte aligned");
}

void validate_step(const StepArgs& a, int max_batch) {
  auto fail = [](const std::string& m) { throw InputError("moe: step: " + m); };
  if (a.batch < 1 || a.batch > max_batch)
    fail("batch " + str(a.batch) + " outside [1, " + str(max_batch) + "] (the plan's max_batch)");
  if (!a.hidden || !a.residual_out || !a.out) fail("hidden, residual_out and out must be set");
  if (a.out == a.residual_out) fail("out and residual_out must be different buffers");
  if (!aligned16(a.hidden) || !aligned16(a.residual) || !aligned16(a.residual_out) || !aligned16(a.out))
    fail("activation pointers must be 16-byte aligned");
  if ((reinterpret_cast<uintptr_t>(a.expert_ids) & 3u) || (reinterpret_cast<uintptr_t>(a.expert_weights) & 3u))
    fail("expert_ids and expert_weights must be 4-byte aligned");
}

// ---- the plan ---------------------------------------------------------------------------------------------------

std::string LaunchInfo::describe() const {
  return "router " + str(router_ctas) + " CTAs / " + str(router_stages) + " stages, gate/up " + str(gate_up_ctas) +
         " CTAs / " + str(gate_up_stages) + " stages, down " + str(down_ctas) + " CTAs / " + str(down_stages) +
         " stages, " + str(max_slots) + " slots, " + str(int64_t(workspace_bytes)) + " B workspace";
}

namespace {
// The ring depth of one launch's carve; a carve that leaves fewer than kMinStages is refused.
int stages_of(const Layout& l, const char* kernel, int max_batch, int max_stages) {
  const int fit = ring_stages(l);
  const int stages = max_stages > 0 ? std::min(fit, max_stages) : fit;
  if (stages < pl::kMinStages)
    throw InputError(std::string("moe: shared memory: the ") + kernel + " kernel's buffers (" + str(l.fixed_bytes) +
                     " bytes at max_batch " + str(max_batch) + ") leave room for " + str(stages) +
                     " ring stages; at least " + str(pl::kMinStages) + " are needed (lower max_batch)");
  return stages;
}
}  // namespace

struct Plan::Impl {
  PlanConfig config;
  LaunchInfo info;
  Kernels kernels{};
  PlanStatus status{"moe", kStatusWords, kStatusTimeout, kStatusDrainTimeout};
  KernelParams base{};
  Layout router_layout{}, gate_up_layout{}, down_layout{};
  dev::DeviceBuffer<uint16_t> x, act, act_shared;
  dev::DeviceBuffer<float> logits, y, y_shared, token_weight;
  dev::DeviceBuffer<int32_t> n_active, slot_expert, token_slot;
  dev::DeviceBuffer<uint32_t> router_counter, slot_tokens, row_counters;

  explicit Impl(const PlanConfig& c) : config(c) {}
  void allocate_workspace(const Split& sp);
  void fill_params(const Split& sp);  // the argument block's plan fields: weights, shape, split, workspace

  void launch(const char* name, KernelFn fn, KernelParams p, const Layout& layout, int stages, int ctas, size_t smem,
              void* stream, uint64_t emu_seed) const {
    p.layout = layout;
    p.stages = stages;
    dev::launch(launch_config(name, ctas, 1, pl::kThreads, smem, stream, emu_seed), fn, p);
  }
};

namespace {
// A workspace buffer of n elements (at least one, so every pointer is valid).
template <typename T>
dev::DeviceBuffer<T> workspace(size_t n, const char* what) {
  return dev::DeviceBuffer<T>(std::max<size_t>(n, 1), what);
}

}  // namespace

void Plan::Impl::allocate_workspace(const Split& sp) {
  Impl& im = *this;
  const Shape& s = im.config.shape;
  const size_t B = size_t(im.config.max_batch), H = size_t(s.hidden), slots = size_t(sp.max_slots);
  im.x = workspace<uint16_t>(B * H, "moe normed input");
  im.logits = workspace<float>(B * size_t(s.n_experts), "moe router logits");
  im.router_counter = workspace<uint32_t>(1, "moe router counter");
  im.n_active = workspace<int32_t>(1, "moe route table");
  im.slot_expert = workspace<int32_t>(slots, "moe route table");
  im.slot_tokens = workspace<uint32_t>(slots, "moe route table");
  im.token_slot = workspace<int32_t>(B * size_t(s.top_k), "moe route table");
  im.token_weight = workspace<float>(B * size_t(s.top_k), "moe route table");
  im.act = workspace<uint16_t>(slots * B * size_t(s.expert_ffn), "moe activations");
  im.act_shared = workspace<uint16_t>(B * size_t(s.shared_ffn), "moe shared activations");
  im.y = workspace<float>(slots * B * H, "moe expert outputs");
  im.y_shared = workspace<float>(B * H, "moe shared expert outputs");
  im.row_counters = workspace<uint32_t>(size_t(sp.row_groups), "moe row counters");
  // written and read within one launch (the others hand data from one launch to the next)
  dev::declare_scratch(im.logits.data(), im.logits.bytes());
  dev::declare_scratch(im.y.data(), im.y.bytes());
  dev::declare_scratch(im.y_shared.data(), im.y_shared.bytes());
  LaunchInfo& li = im.info;
  li.workspace_bytes = im.x.bytes() + im.logits.bytes() + im.router_counter.bytes() + im.n_active.bytes() +
                       im.slot_expert.bytes() + im.slot_tokens.bytes() + im.token_slot.bytes() +
                       im.token_weight.bytes() + im.act.bytes() + im.act_shared.bytes() + im.y.bytes() +
                       im.y_shared.bytes() + im.row_counters.bytes() + kStatusWords * sizeof(uint32_t);
}

void Plan::Impl::fill_params(const Split& sp) {
  Impl& im = *this;
  const PlanConfig& c = im.config;
  const Shape& s = c.shape;
  const DType wt = c.element_types().weight;
  const uint64_t H = uint64_t(s.hidden), F = uint64_t(s.expert_ffn), S = uint64_t(s.shared_ffn);
  const uint64_t E = uint64_t(s.n_experts);
  KernelParams& p = im.base;
  const pl::ChunkWidths gu = pl::chunk_widths(sp.gu_cols, s.hidden, s.hidden);
  p.gate_up = pl::make_box_maps(c.weights.w_gate_up, wt, H, E * 2 * F, gu);
  p.down = pl::make_box_maps(c.weights.w_down, wt, F, E * H,
                             pl::chunk_widths(sp.down_cols, s.expert_ffn, s.expert_ffn));
  if (s.shared_ffn > 0) {
    p.shared_gate_up = pl::make_box_maps(c.weights.shared_gate_up, wt, H, 2 * S, gu);
    p.shared_down = pl::make_box_maps(c.weights.shared_down, wt, S, H,
                                      pl::chunk_widths(sp.down_cols, s.shared_ffn, s.shared_ffn));
  }
  p.router = c.weights.router;
  p.norm = c.weights.norm;
  p.hidden = s.hidden;
  p.n_experts = s.n_experts;
  p.top_k = s.top_k;
  p.expert_ffn = s.expert_ffn;
  p.shared_ffn = s.shared_ffn;
  p.group_limited = s.selection == ExpertSelection::GroupLimitedGreedy ? 1 : 0;
  p.n_group = s.n_group;
  p.topk_group = s.topk_group;
  p.norm_topk_prob = s.norm_topk_prob ? 1 : 0;
  p.routed_scaling = s.routed_scaling;
  p.eps = s.eps;
  p.split = sp;
  p.x = im.x.data();
  p.logits = im.logits.data();
  p.router_counter = im.router_counter.data();
  p.route = {im.n_active.data(), im.slot_expert.data(), im.slot_tokens.data(), im.token_slot.data(),
             im.token_weight.data()};
  p.act = im.act.data();
  p.act_shared = im.act_shared.data();
  p.y = im.y.data();
  p.y_shared = im.y_shared.data();
  p.row_counters = im.row_counters.data();
  p.status = im.status.data();
  p.wait_budget_ns = uint64_t(c.wait_budget_us) * 1000u;
}

namespace {
// CTAs of a launch: as many as its worst case has work items, at most the SMs (and max_clusters when set).
int ctas_for(const PlanConfig& c, int sm_count, int items) {
  int ctas = std::min(sm_count, items);
  if (c.max_clusters > 0) ctas = std::min(ctas, c.max_clusters);
  return std::max(ctas, 1);
}
}  // namespace

Plan::Plan(const PlanConfig& config) {
  validate_config(config);
  impl_ = std::make_unique<Impl>(config);
  Impl& im = *impl_;
  const Shape& s = config.shape;
  im.kernels = select_kernels(config.element_types());
  const Split sp = make_split(s, config.max_batch);
  const int sm_count = config.sm_count > 0 ? config.sm_count : dev::sm_count("moe");

  im.router_layout = make_router_layout(config.max_batch, s);
  im.gate_up_layout = make_gate_up_layout(config.max_batch, s, sp);
  im.down_layout = make_down_layout(config.max_batch, s);
  LaunchInfo& li = im.info;
  li.router_stages = stages_of(im.router_layout, "router", config.max_batch, config.max_stages);
  li.gate_up_stages = stages_of(im.gate_up_layout, "gate/up", config.max_batch, config.max_stages);
  li.down_stages = stages_of(im.down_layout, "down", config.max_batch, config.max_stages);
  li.router_smem = size_t(im.router_layout.fixed_bytes) + size_t(li.router_stages) * pl::kStageBytes;
  li.gate_up_smem = size_t(im.gate_up_layout.fixed_bytes) + size_t(li.gate_up_stages) * pl::kStageBytes;
  li.down_smem = size_t(im.down_layout.fixed_bytes) + size_t(li.down_stages) * pl::kStageBytes;
  li.router_ctas = ctas_for(config, sm_count, s.n_experts);
  li.gate_up_ctas = ctas_for(config, sm_count, max_gate_up_items(sp));
  li.down_ctas = ctas_for(config, sm_count, max_down_items(sp, s.shared_ffn > 0));
  li.cluster_size = 1;
  li.clusters = std::max({li.router_ctas, li.gate_up_ctas, li.down_ctas});
  li.threads = pl::kThreads;
  li.max_slots = sp.max_slots;

  const KernelFn router[1] = {im.kernels.router};
  prepare_kernels(router, launch_config("moe router", li.router_ctas, 1, li.threads, li.router_smem, nullptr, 0));
  prepare_kernels(im.kernels.gate_up,
                  launch_config("moe gate/up", li.gate_up_ctas, 1, li.threads, li.gate_up_smem, nullptr, 0));
  prepare_kernels(im.kernels.down, launch_config("moe down", li.down_ctas, 1, li.threads, li.down_smem, nullptr, 0));
  im.allocate_workspace(sp);
  im.fill_params(sp);
}

Plan::~Plan() = default;
Plan::Plan(Plan&&) noexcept = default;
Plan& Plan::operator=(Plan&&) noexcept = default;

const LaunchInfo& Plan::info() const { return impl_->info; }
const PlanConfig& Plan::config() const { return impl_->config; }

// Three launches in stream order, no host work between them: the route table stays on the device.
void Plan::run(const StepArgs& step, void* stream, uint64_t emu_seed) {
  const Impl& im = *impl_;
  im.status.refuse_if_failed();
  validate_step(step, im.config.max_batch);
  KernelParams p = im.base;
  p.batch = step.batch;
  p.hidden_in = step.hidden;
  p.residual = step.residual;
  p.residual_out = step.residual_out;
  p.out = step.out;
  p.expert_ids = step.expert_ids;
  p.expert_weights = step.expert_weights;
  const LaunchInfo& li = im.info;
  const int tiles = step.batch <= pipeline::kMmaN ? 0 : 1;
  im.launch("moe router", im.kernels.router, p, im.router_layout, li.router_stages, li.router_ctas, li.router_smem,
            stream, emu_seed);
  im.launch("moe gate/up", im.kernels.gate_up[tiles], p, im.gate_up_layout, li.gate_up_stages, li.gate_up_ctas,
            li.gate_up_smem, stream, emu_seed);
  im.launch("moe down", im.kernels.down[tiles], p, im.down_layout, li.down_stages, li.down_ctas, li.down_smem, stream,
            emu_seed);
}

void Plan::check_status(void* stream) {
  Impl& im = *impl_;
  im.status.check(stream, im.config.wait_budget_us, describe_wait_site);
}

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::moe
