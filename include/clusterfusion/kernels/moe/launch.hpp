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
  int cluster_size = 0;
  int clusters = 0;
  size_t workspace_bytes = 0;
  std::string describe() const;  // one line for logs
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
