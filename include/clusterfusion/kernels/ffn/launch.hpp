// Launching the fused FFN block (docs/ffn.md §3).
//
//   ffn::Plan plan(config);           // once per layer: validates, picks the cluster size / count and ring depth,
//                                     // builds the tensor maps, allocates the workspace (partials, counters, status)
//   plan.run(step, stream);           // per call: cheap host checks + one launch; CUDA-graph capturable
//   plan.check_status(stream);        // synchronises; throws cf::Error if a wait inside the kernel timed out
//
// The same header serves both builds: link cf_kernels (CUDA, sm_90a) or cf_kernels_emu (the CPU emulator). Streams
// are passed as void* (a cudaStream_t in the CUDA build, ignored by the emulator).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "clusterfusion/kernels/ffn/params.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::ffn {

// What a plan decided.
struct LaunchInfo {
  int cluster_size = 0;
  int clusters = 0;
  int max_active_clusters = 0;     // clusters of cluster_size the device runs at once (Occupancy; clusters <= it)
  bool occupancy_queried = false;  // asked of the device (else assumed: sm_count / cluster_size)
  int threads = 0;         // per CTA
  int stages = 0;          // ring depth
  int stage_units = 0;     // U: gate/up chunks of 32 U columns (tiles per stage 16 / U)
  int down_cols = 0;       // down chunks (the F-slice, at most 256 columns)
  int down_tiles = 0;      // down tiles per stage
  int block_rows = 0;      // output rows per arrival block of the cross-cluster sum
  int blocks = 0;          // blocks of the largest rank slice
  size_t smem_bytes = 0;   // dynamic shared memory per CTA
  size_t stage_bytes = 0;
  int64_t max_cta_bytes = 0;   // bytes the busiest CTA moves (weights + its partials; the launcher's cost)
  size_t workspace_bytes = 0;  // global workspace (partials, counters, status)
};

// Clusters that can run at once, one CTA per SM (the kernel uses nearly all shared memory), per cluster size.
struct Occupancy {
  int clusters_of_2 = 0, clusters_of_4 = 0, clusters_of_8 = 0;
  int of(int cluster_size) const {
    return cluster_size == 2 ? clusters_of_2 : cluster_size == 4 ? clusters_of_4 : clusters_of_8;
  }
  // What a GPU of sm_count SMs with no GPC constraint would allow (the emulator's assumption).
  static Occupancy assumed(int sm_count) { return {sm_count / 2, sm_count / 4, sm_count / 8}; }
};

struct SplitChoice {
  int cluster_size = 0;
  int clusters = 0;
  int64_t max_cta_bytes = 0;
  int stages = 0;  // ring stages that fit beside the other buffers at config.max_batch
};

// The split the launcher picks (docs/ffn.md §2): the cluster size n in {8, 4, 2} (or the configured one), with as
// many clusters as run at once (at most one per 16-row tile of ffn_hidden, at most config.max_clusters), whose ring
// keeps >= 6 stages (96 KB) in flight if any does, then whose busiest CTA moves the fewest bytes (weights + the fp32
// partial of its output rows), then the larger n (fewer partials to add). On the H100 measured (66 / 30 / <= 15
// clusters of 2 / 4 / 8) that is 66 clusters of 2 for the Llama shapes at every batch. Throws cf::InputError when
// no cluster size fits the shape (hidden / 32 < n).
SplitChoice choose_split(const PlanConfig& config, const Occupancy& occupancy);

class Plan {
 public:
  explicit Plan(const PlanConfig& config);
  ~Plan();
  Plan(Plan&&) noexcept;
  Plan& operator=(Plan&&) noexcept;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;

  // One FFN block. emu_seed: the emulator's schedule seed (0: $CF_EMU_SEED or 1); ignored on the GPU.
  void run(const StepArgs& step, void* stream = nullptr, uint64_t emu_seed = 0);

  // Synchronises `stream`, reads and clears the device status words; throws cf::Error naming the problem.
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

}  // namespace cf::kernels::ffn
