// Launching the fused decoder attention block (docs/attention.md §3).
//
//   da::Plan plan(config);            // once per layer: validates, picks the cluster size and ring depth, builds the
//                                     // tensor maps, allocates the workspace (O partials, counters, status)
//   plan.run(step, stream);           // per call: cheap host checks + one launch; CUDA-graph capturable
//   plan.check_status(stream);        // synchronises; throws cf::InputError if the device found a bad page table
//
// The same header serves both builds: link cf_kernels (CUDA, sm_90a) or cf_kernels_emu (the CPU emulator). Streams
// are passed as void* (a cudaStream_t in the CUDA build, ignored by the emulator).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "clusterfusion/kernels/decoder_attention/params.hpp"

namespace cf::kernels::decoder_attention {

// What a plan decided.
struct LaunchInfo {
  int cluster_size = 0;
  int clusters = 0;       // = n_kv_heads
  int threads = 0;        // per CTA
  int stages = 0;         // ring depth
  size_t smem_bytes = 0;  // dynamic shared memory per CTA
  size_t stage_bytes = 0;
};

// The largest N of {8, 4, 2} with n_kv_heads * N <= sm_count whose K- and row-slices are non-empty (else 2). The
// plan may raise 8 to 16 on the GPU (PlanConfig::cluster_size 0): when n_kv_heads * 16 <= SMs and the device can
// co-schedule all n_kv_heads clusters of 16 (cudaOccupancyMaxActiveClusters). $CF_DA_CLUSTER_SIZE overrides the
// automatic choice (experiments).
int choose_cluster_size(const Shape& shape, int sm_count);

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

  // Synchronises `stream`, reads and clears the device status words; throws cf::InputError naming the problems.
  void check_status(void* stream = nullptr);

  const LaunchInfo& info() const;
  const PlanConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cf::kernels::decoder_attention
