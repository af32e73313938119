// Launching the final norm + LM head + greedy argmax (docs/ffn.md §5).
//
//   lm_head::Plan plan(config);   // once per model: validates, picks the CTA count and ring depth, builds the tensor
//                                 // maps, allocates the workspace (candidates, counter, status)
//   plan.run(step, stream);       // per call: cheap host checks + one launch; CUDA-graph capturable
//   plan.check_status(stream);    // synchronises; throws cf::Error if a wait inside the kernel timed out
//
// Link cf_kernels (CUDA, sm_90a) or cf_kernels_emu (the CPU emulator). Streams are void* (cudaStream_t on the GPU).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "clusterfusion/kernels/lm_head/params.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::lm_head {

struct LaunchInfo {
  int ctas = 0;
  int threads = 0;
  int stages = 0;
  int stage_units = 0;
  size_t smem_bytes = 0;
  size_t stage_bytes = 0;
  int64_t max_cta_weight_bytes = 0;  // weight bytes the busiest CTA streams
};

class Plan {
 public:
  explicit Plan(const PlanConfig& config);
  ~Plan();
  Plan(Plan&&) noexcept;
  Plan& operator=(Plan&&) noexcept;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;

  // One call. emu_seed: the emulator's schedule seed (0: $CF_EMU_SEED or 1); ignored on the GPU.
  void run(const StepArgs& step, void* stream = nullptr, uint64_t emu_seed = 0);
  void check_status(void* stream = nullptr);

  // With PlanConfig::trace: synchronises `stream` and returns the last run's phase timestamps, [CTA][kTraceSlots]
  // SM clock cycles (params.hpp TracePoint; 0 on the emulator).
  std::vector<uint64_t> read_trace(void* stream = nullptr);

  const LaunchInfo& info() const;
  const PlanConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cf::kernels::lm_head
