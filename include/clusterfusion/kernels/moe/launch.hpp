// Launching the fused MoE FFN block (docs/mla.md §2): the router + selection, then the chosen experts' and the shared
// experts' SwiGLU FFNs (grouped GEMV, each chosen expert's weights read once per step), enqueued by one run(),
// CUDA-graph capturable (the selection stays on the device).
//
//   moe::Plan plan(config);     // once per layer
//   plan.run(step, stream);
//   plan.check_status(stream);  // synchronises; throws cf::Error naming the problem
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "clusterfusion/kernels/moe/params.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::moe {

struct LaunchInfo {
  int cluster_size = 0;  // 1: the MoE kernels run without clusters
  int clusters = 0;      // CTAs of the largest of the three launches
  size_t workspace_bytes = 0;
  std::string describe() const;  // one line for logs

  // The three launches of a step (docs/mla.md §2, "on the device"): CTAs, ring stages, dynamic shared memory.
  int router_ctas = 0, gate_up_ctas = 0, down_ctas = 0;
  int router_stages = 0, gate_up_stages = 0, down_stages = 0;
  size_t router_smem = 0, gate_up_smem = 0, down_smem = 0;
  int threads = 0;    // per CTA
  int max_slots = 0;  // active experts at most per step: min(n_experts, max_batch top_k)
};

class Plan {
 public:
  explicit Plan(const PlanConfig& config);
  ~Plan();
  Plan(Plan&&) noexcept;
  Plan& operator=(Plan&&) noexcept;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;

  void run(const StepArgs& step, void* stream = nullptr, uint64_t emu_seed = 0);
  void check_status(void* stream = nullptr);

  const LaunchInfo& info() const;
  const PlanConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cf::kernels::moe
