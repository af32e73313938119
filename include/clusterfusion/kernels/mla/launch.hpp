// Launching the fused MLA decode block (docs/mla.md §1.5): four launches (projections + absorption + latent append,
// split-KV latent attention, W_UV, O; q_lora adds the q_b projection) enqueued by one run(), CUDA-graph capturable.
//
//   mla::Plan plan(config);     // once per layer: validates, picks the splits, allocates the workspace
//   plan.run(step, stream);     // per call: host checks + the launches
//   plan.check_status(stream);  // synchronises; throws cf::InputError / cf::Error naming the problem
//
// One header for both builds: link cf_kernels (CUDA, sm_90a) or cf_kernels_emu (the CPU emulator).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "clusterfusion/kernels/mla/params.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla {

struct LaunchInfo {
  int cluster_size = 0;
  int projection_clusters = 0;
  int attention_ctas = 0;      // split-KV CTAs of the latent attention
  int output_clusters = 0;
  int uv_ctas = 0;             // the W_UV step between the attention and the output projection
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

  // One decode step. emu_seed: the emulator's schedule seed (0: $CF_EMU_SEED or 1); ignored on the GPU.
  void run(const StepArgs& step, void* stream = nullptr, uint64_t emu_seed = 0);
  void check_status(void* stream = nullptr);

  const LaunchInfo& info() const;
  const PlanConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cf::kernels::mla
