// The FFN Plan of launch.hpp, compiled twice: by nvcc into cf_kernels (plan.cu) and by the host compiler into
// cf_kernels_emu (instantiations_emu.cpp). Only those files include it, so the device-API types (DeviceBuffer,
// TensorMap, streams) never leak into launch.hpp. The kernels themselves are instantiated per element-type
// combination by CF_FFN_INSTANTIATE (instantiations_f16.cu / _bf16.cu, or the emulator file).
#pragma once
#include <algorithm>
#include <string>

#include "../common/plan_support.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/device/launch.hpp"
#include "clusterfusion/device/tensor_map.hpp"
#include "clusterfusion/kernels/ffn/launch.hpp"
#include "clusterfusion/kernels/ffn/traits.hpp"
#include "kernel_select.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::ffn {

namespace {

#if defined(CF_DEVICE_CUDA)
// Clusters of n CTAs (one per SM: the kernel takes nearly all shared memory) the device runs at once.
int active_clusters(KernelFn fn, int n) {
  dev::LaunchConfig prep;
  prep.smem_bytes = dev::kMaxSmemPerBlock;
  prep.cluster = {uint32_t(n)};
  prep.name = "ffn";
  dev::detail::prepare_kernel(reinterpret_cast<const void*>(fn), prep);
  cudaLaunchConfig_t lc{};
  lc.gridDim = dim3(uint32_t(n) * 64);
  lc.blockDim = dim3(kThreads);
  lc.dynamicSmemBytes = dev::kMaxSmemPerBlock;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = uint32_t(n);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  lc.attrs = attr;
  lc.numAttrs = 1;
  int clusters = 0;
  dev::check_cuda(cudaOccupancyMaxActiveClusters(&clusters, reinterpret_cast<const void*>(fn), &lc),
                  "ffn: cudaOccupancyMaxActiveClusters(cluster " + std::to_string(n) + ")");
  return clusters;
}
#endif

}  // namespace

int stage_units_of(const PlanConfig& config) {
  return config.stage_units > 0 ? config.stage_units : pl::kDefaultStageUnits;
}

SplitChoice choose_split(const PlanConfig& config, const Occupancy& occupancy) {
  const Shape& s = config.shape;
  const int hidden_units = s.hidden / pl::kUnitCols, ffn_tiles = s.ffn_hidden / pl::kTileRows;
  SplitChoice best;
  for (int n : {8, 4, 2}) {
    if (config.cluster_size != 0 && n != config.cluster_size) continue;
    if (hidden_units < n) continue;  // every rank needs a K-slice
    int clusters = std::min(occupancy.of(n), ffn_tiles);
    if (config.max_clusters > 0) clusters = std::min(clusters, config.max_clusters);
    if (clusters < 1) continue;
    const Split split = make_split(s, n, clusters, stage_units_of(config), config.max_batch);
    const SplitChoice option{n, clusters, max_cta_bytes(split, config.max_batch),
                             ring_stages(make_layout(config.max_batch, split), config.max_stages)};
    auto shallow = [](const SplitChoice& c) { return c.stages < kPreferredStages; };
    // candidates come in decreasing n: a tie keeps the larger one
    if (best.cluster_size == 0 || shallow(option) < shallow(best) ||
        (shallow(option) == shallow(best) && option.max_cta_bytes < best.max_cta_bytes))
      best = option;
  }
  if (best.cluster_size == 0)
    throw InputError("ffn: no cluster size fits: hidden " + std::to_string(s.hidden) + " has " +
                     std::to_string(hidden_units) + " 32-column units, fewer than the cluster size " +
                     (config.cluster_size ? std::to_string(config.cluster_size) : std::string("2")) +
                     ", or the device runs no cluster of that size");
  return best;
}

struct Plan::Impl : PlanCore<PlanConfig, LaunchInfo, KernelParams> {
  dev::DeviceBuffer<float> partial;
  dev::DeviceBuffer<uint32_t> counters;
  Impl(const PlanConfig& c, int ctas)
      : PlanCore({"ffn", kStatusWords, kStatusTimeout, kStatusDrainTimeout, kTraceSlots}, c, ctas) {}
};

Plan::Plan(const PlanConfig& config) {
  validate_config(config);
  KernelFn kernels[2];
  for (int tiles = 1; tiles <= 2; ++tiles) kernels[tiles - 1] = select_kernel(config.element_types(), tiles);
  const Shape& s = config.shape;
  const int sm_count = config.sm_count > 0 ? config.sm_count : dev::sm_count("ffn");
  Occupancy occupancy = Occupancy::assumed(sm_count);
  bool queried = false;
#if defined(CF_DEVICE_CUDA)
  if (config.sm_count == 0) {
    occupancy = {active_clusters(kernels[0], 2), active_clusters(kernels[0], 4), active_clusters(kernels[0], 8)};
    queried = true;
  }
#endif
  const SplitChoice choice = choose_split(config, occupancy);
  const int n = choice.cluster_size;
  const int stage_units = stage_units_of(config);
  const Split split = make_split(s, n, choice.clusters, stage_units, config.max_batch);

  impl_ = std::make_unique<Impl>(config, n * choice.clusters);
  Impl& im = *impl_;
  for (int i = 0; i < 2; ++i) im.kernels[i] = kernels[i];
  const Layout layout = make_layout(config.max_batch, split);
  const int stages = choice.stages;
  static_assert(dev::kMaxSmemPerBlock == 227 * 1024, "ring_stages() assumes Hopper's 227 KB");
  if (stages < pl::kMinStages)
    throw InputError("ffn: shared memory: " + std::to_string(layout.fixed_bytes) + " bytes of buffers (max_batch " +
                     std::to_string(config.max_batch) + ", cluster " + std::to_string(n) + " x " +
                     std::to_string(choice.clusters) + ") leave room for " + std::to_string(stages) +
                     " ring stages; at least " + std::to_string(pl::kMinStages) +
                     " are needed (lower max_batch or use more clusters)");

  LaunchInfo& li = im.info;
  li.cluster_size = n;
  li.clusters = choice.clusters;
  li.max_active_clusters = occupancy.of(n);
  li.occupancy_queried = queried;
  li.threads = kThreads;
  li.stages = stages;
  li.stage_units = stage_units;
  li.stage_bytes = pl::kStageBytes;
  li.smem_bytes = size_t(layout.fixed_bytes) + size_t(stages) * pl::kStageBytes;
  li.max_cta_bytes = choice.max_cta_bytes;
  li.down_cols = split.down_cols;
  li.down_tiles = split.down_tiles;
  li.block_rows = split.block_rows;
  li.blocks = split.blocks_max;

  im.prepare(n * choice.clusters, n);
  im.partial = dev::DeviceBuffer<float>(size_t(choice.clusters) * s.hidden * config.max_batch, "ffn partials");
  dev::declare_scratch(im.partial.data(), im.partial.bytes());  // each launch writes the partials it reads
  im.counters = dev::DeviceBuffer<uint32_t>(size_t(n) * split.blocks_max, "ffn counters");
  li.workspace_bytes = im.partial.bytes() + im.counters.bytes() + kStatusWords * sizeof(uint32_t);

  KernelParams& p = im.base;
  const uint64_t H = uint64_t(s.hidden), F = uint64_t(s.ffn_hidden);
  const pl::ChunkWidths gu_widths = gate_up_widths(s, split), dn_widths = down_widths(s, split);
  const DType wt = config.element_types().weight;
  p.gate = pl::make_box_maps(config.weights.w_gate, wt, H, F, gu_widths);
  p.up = pl::make_box_maps(config.weights.w_up, wt, H, F, gu_widths);
  p.down = pl::make_box_maps(config.weights.w_down, wt, F, H, dn_widths);
  p.hidden = s.hidden;
  p.ffn_hidden = s.ffn_hidden;
  p.eps = s.eps;
  p.hidden_units = s.hidden / pl::kUnitCols;
  p.ffn_tiles = s.ffn_hidden / pl::kTileRows;
  p.gu_cols = split.gu_cols;
  p.gu_tiles = split.gu_tiles;
  p.down_cols = split.down_cols;
  p.down_tiles = split.down_tiles;
  p.block_groups = split.block_groups;
  p.blocks_max = split.blocks_max;
  p.norm = config.weights.norm;
  p.partial = im.partial.data();
  p.counters = im.counters.data();
  im.set_pipeline_params(stages, layout);
}

Plan::~Plan() = default;
Plan::Plan(Plan&&) noexcept = default;
Plan& Plan::operator=(Plan&&) noexcept = default;

const LaunchInfo& Plan::info() const { return impl_->info; }
const PlanConfig& Plan::config() const { return impl_->config; }

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
  im.launch(p, im.info.clusters * im.info.cluster_size, im.info.cluster_size, stream, emu_seed);
}

void Plan::check_status(void* stream) {
  impl_->check_status(stream, describe_wait_site);
}

std::vector<uint64_t> Plan::read_trace(void* stream) { return impl_->trace.read(stream); }

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::ffn
