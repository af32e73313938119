// Launching the fused decoder attention block (docs/attention.md §3).
//
//   da::Plan plan(config);            // once per layer: validates, picks the cluster size and ring depth, builds the
//                                     // tensor maps, allocates the workspace (O partials, counters, status)
//   plan.run(step, stream);           // per call: cheap host checks + one launch; CUDA-graph capturable
//   plan.check_status(stream);        // synchronises; throws cf::InputError if the device found a bad page table,
//                                     // cf::Error if a wait inside the kernel timed out (then run() refuses)
//
// The same header serves both builds: link cf_kernels (CUDA, sm_90a) or cf_kernels_emu (the CPU emulator). Streams
// are passed as void* (a cudaStream_t in the CUDA build, ignored by the emulator).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "clusterfusion/kernels/decoder_attention/params.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::decoder_attention {

// What a plan decided.
struct LaunchInfo {
  int cluster_size = 0;
  int clusters = 0;                // = n_kv_heads
  int max_active_clusters = 0;     // clusters of cluster_size the device runs at once (Occupancy)
  int waves = 0;                   // ceil(clusters / max_active_clusters): 1 = every cluster resident at once
  bool occupancy_queried = false;  // max_active_clusters asked of the device (else assumed: sm_count / cluster_size)
  int threads = 0;                 // per CTA
  int stages = 0;                  // ring depth
  size_t smem_bytes = 0;           // dynamic shared memory per CTA
  size_t stage_bytes = 0;
  int kv_box_rows = 0;             // K/V rows per TMA box (1: one copy per row)
  int early_stages = 0;            // ring items issued before the norm is done
  int64_t wait_budget_us = 0;      // PlanConfig::wait_budget_us
};

// Clusters of each size the device runs at once with this kernel (one CTA per SM: it takes nearly all shared
// memory). On the GPU the plan asks cudaOccupancyMaxActiveClusters (a GPC holds only whole clusters: the H100 of
// the first runs granted 30 clusters of 4 on 132 SMs); with PlanConfig::sm_count, and on the emulator, it assumes
// sm_count / n, and no non-portable clusters of 16.
struct Occupancy {
  int clusters_of_2 = 0, clusters_of_4 = 0, clusters_of_8 = 0, clusters_of_16 = 0;
  int of(int cluster_size) const {
    return cluster_size == 2   ? clusters_of_2
           : cluster_size == 4 ? clusters_of_4
           : cluster_size == 8 ? clusters_of_8
                               : clusters_of_16;
  }
  static Occupancy assumed(int sm_count) { return {sm_count / 2, sm_count / 4, sm_count / 8, 0}; }
};

struct ClusterChoice {
  int cluster_size = 0;
  int max_active_clusters = 0;  // occupancy.of(cluster_size)
  int waves = 0;                // ceil(n_kv_heads / max_active_clusters)
};

// The cluster size (docs/attention.md §1, "One wave"): among N in {16, 8, 4, 2} (only config.cluster_size if set)
// whose K- and row-slices are non-empty (hidden / 32 >= N) and whose buffers leave room for kMinStages ring stages
// at config.max_batch, the one whose n_kv_heads clusters run in the fewest waves (occupancy.of(N) at once; a second
// wave of a few clusters costs nearly a whole kernel's time), then the largest (more SMs streaming). Llama-2-7B with
// the H100's 66 / 30 / 15 clusters of 2 / 4 / 8: 32 clusters of 2 in one wave, not 32 of 4 in two. Throws
// cf::InputError when no size fits.
ClusterChoice choose_cluster_size(const PlanConfig& config, const Occupancy& occupancy);

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

  // With PlanConfig::trace: synchronises `stream` and returns the last run's phase timestamps, [CTA][kTraceSlots]
  // SM clock cycles (traits.hpp TracePoint; 0 on the emulator).
  std::vector<uint64_t> read_trace(void* stream = nullptr);

  const LaunchInfo& info() const;
  const PlanConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cf::kernels::decoder_attention
