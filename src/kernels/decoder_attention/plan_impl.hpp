// The Plan of launch.hpp, compiled twice: by nvcc into cf_kernels (plan.cu) and by the host compiler into
// cf_kernels_emu (instantiations_emu.cpp). Only those files include it, so the device-API types (DeviceBuffer,
// TensorMap, streams) never leak into launch.hpp. The kernels themselves are instantiated per element type by
// CF_DA_INSTANTIATE (instantiations_f16.cu / _bf16.cu, or the emulator file).
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../common/plan_support.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/device/launch.hpp"
#include "clusterfusion/device/tensor_map.hpp"
#include "clusterfusion/kernels/decoder_attention/launch.hpp"
#include "clusterfusion/kernels/decoder_attention/traits.hpp"
#include "kernel_select.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::decoder_attention {


namespace {

Layout layout_for(int head_dim, int max_batch, int group, int cluster_size, int hidden) {
  return head_dim == 128 ? make_layout<128>(max_batch, group, cluster_size, hidden)
                         : make_layout<64>(max_batch, group, cluster_size, hidden);
}

// Ring stages that fit beside the fixed buffers (0 when fewer than kMinStages fit).
int stages_for(const Layout& layout, int max_stages) {
  const size_t budget = dev::kMaxSmemPerBlock;
  const int fit = layout.fixed_bytes < budget ? int((budget - layout.fixed_bytes) / layout.stage_bytes) : 0;
  int stages = std::min(fit, kMaxStages);
  if (max_stages > 0) stages = std::min(stages, max_stages);
  return stages >= kMinStages ? stages : 0;
}

// The layout, ring depth and shared memory of cluster size n (stages 0: the buffers leave too little room).
struct SizeFit {
  Layout layout;
  int stages = 0;
  size_t smem_bytes = 0;
};
SizeFit fit_for(const PlanConfig& config, int n) {
  const Shape& s = config.shape;
  SizeFit f;
  f.layout = layout_for(s.head_dim, config.max_batch, s.group(), n, s.hidden);
  f.stages = stages_for(f.layout, config.max_stages);
  f.smem_bytes = size_t(f.layout.fixed_bytes) + size_t(f.stages) * f.layout.stage_bytes;
  return f;
}

bool slices_fit(const Shape& s, int n) { return s.hidden / 32 >= n && s.hidden / 16 >= n; }

#if defined(CF_DEVICE_CUDA)
// How many clusters of `cluster` CTAs of this kernel the device can run at once (0 if the query fails).
int max_active_clusters(KernelFn fn, int cluster, size_t smem, int threads) {
  dev::LaunchConfig cfg;
  cfg.grid = {uint32_t(cluster)};
  cfg.cluster = {uint32_t(cluster)};
  cfg.block = {uint32_t(threads)};
  cfg.smem_bytes = smem;
  cfg.allow_nonportable_cluster = cluster > int(dev::kMaxPortableClusterSize);
  cfg.name = "decoder_attention";
  dev::detail::prepare_kernel(reinterpret_cast<const void*>(fn), cfg);
  cudaLaunchConfig_t lc{};
  lc.gridDim = dim3(uint32_t(cluster));
  lc.blockDim = dim3(uint32_t(threads));
  lc.dynamicSmemBytes = smem;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = uint32_t(cluster);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  lc.attrs = attr;
  lc.numAttrs = 1;
  int count = 0;
  if (cudaOccupancyMaxActiveClusters(&count, fn, &lc) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}
#endif

}  // namespace

ClusterChoice choose_cluster_size(const PlanConfig& config, const Occupancy& occupancy) {
  const Shape& s = config.shape;
  auto check_fits = [&](int n) {
    if (!slices_fit(s, n))
      throw InputError("decoder_attention: hidden " + std::to_string(s.hidden) + " has " +
                       std::to_string(s.hidden / 32) + " 32-column units, fewer than the cluster size " +
                       std::to_string(n));
    const SizeFit f = fit_for(config, n);
    if (f.stages == 0)
      throw InputError("decoder_attention: shared memory: " + std::to_string(f.layout.fixed_bytes) +
                       " bytes of buffers (max_batch " + std::to_string(config.max_batch) + ", group " +
                       std::to_string(s.group()) + ", cluster " + std::to_string(n) + ") leave room for fewer than " +
                       std::to_string(kMinStages) + " ring stages (lower max_batch or raise the cluster size)");
  };
  auto waves_of = [&](int active) { return active > 0 ? (s.n_kv_heads + active - 1) / active : 0; };
  if (config.cluster_size != 0) {  // the caller's size (waves 0: the device's occupancy says it cannot run it)
    check_fits(config.cluster_size);
    const int active = occupancy.of(config.cluster_size);
    return {config.cluster_size, active, waves_of(active)};
  }
  ClusterChoice best;
  for (int n : {16, 8, 4, 2}) {
    const int active = occupancy.of(n);
    if (!slices_fit(s, n) || active < 1 || fit_for(config, n).stages == 0) continue;
    const int waves = waves_of(active);
    if (best.cluster_size == 0 || waves < best.waves) best = {n, active, waves};  // ties keep the larger n
  }
  if (best.cluster_size == 0) {
    check_fits(2);
    throw InputError("decoder_attention: the device runs no cluster of 2, 4, 8 or 16 CTAs of this kernel");
  }
  return best;
}

struct Plan::Impl : PlanCore<PlanConfig, LaunchInfo, KernelParams> {
  dev::DeviceBuffer<float> o_partial;
  dev::DeviceBuffer<uint32_t> counters;
  Impl(const PlanConfig& c, int ctas)
      : PlanCore({"decoder_attention", kStatusWords, kStatusTimeout, kStatusDrainTimeout, kTraceSlots}, c, ctas) {}
};

Plan::Plan(const PlanConfig& config) {
  validate_config(config);
  const Shape& s = config.shape;
  const int sm_count = config.sm_count > 0 ? config.sm_count : dev::sm_count("decoder_attention");
  const int units_total = s.hidden / 32, row_units = s.hidden / 16;
  const int threads = s.head_dim == 128 ? Traits<128>::kThreads : Traits<64>::kThreads;
  KernelFn kernels[2];
  for (int tiles = 1; tiles <= 2; ++tiles)
    kernels[tiles - 1] = select_kernel(config.element_types(), s.head_dim, tiles);

  // One wave: the cluster size whose n_kv_heads clusters the device runs at once (choose_cluster_size).
  Occupancy occupancy = Occupancy::assumed(sm_count);
  bool queried = false;
#if defined(CF_DEVICE_CUDA)
  if (config.sm_count == 0) {
    KernelFn fn = kernels[config.max_batch <= 8 ? 0 : 1];
    int* counts[] = {&occupancy.clusters_of_2, &occupancy.clusters_of_4, &occupancy.clusters_of_8,
                     &occupancy.clusters_of_16};
    const int sizes[] = {2, 4, 8, 16};
    for (int k = 0; k < 4; ++k) {
      const SizeFit f = fit_for(config, sizes[k]);
      *counts[k] = slices_fit(s, sizes[k]) && f.stages > 0 ? max_active_clusters(fn, sizes[k], f.smem_bytes, threads)
                                                            : 0;
    }
    queried = true;
  }
#endif
  const ClusterChoice choice = choose_cluster_size(config, occupancy);
  const int n = choice.cluster_size;
  impl_ = std::make_unique<Impl>(config, s.n_kv_heads * n);
  Impl& im = *impl_;
  for (int i = 0; i < 2; ++i) im.kernels[i] = kernels[i];
  const SizeFit fit = fit_for(config, n);
  const Layout& layout = fit.layout;
  const int stages = fit.stages;

  const int head_dim = s.head_dim;
  const int o_blocks = o_blocks_max(s.hidden, n, head_dim);

  LaunchInfo& li = im.info;
  li.cluster_size = n;
  li.clusters = s.n_kv_heads;
  li.max_active_clusters = choice.max_active_clusters;
  li.waves = choice.waves;
  li.occupancy_queried = queried;
  li.threads = threads;
  li.stages = stages;
  li.stage_bytes = layout.stage_bytes;
  li.smem_bytes = fit.smem_bytes;
  li.wait_budget_us = config.wait_budget_us;

  im.prepare(li.clusters * n, n);
  im.o_partial = dev::DeviceBuffer<float>(size_t(s.n_kv_heads) * s.hidden * config.max_batch, "O partials");
  dev::declare_scratch(im.o_partial.data(), im.o_partial.bytes());  // each launch writes the partials it reads
  im.counters = dev::DeviceBuffer<uint32_t>(size_t(n) * o_blocks, "O counters");

  KernelParams& p = im.base;
  const ElementTypes types = config.element_types();
  p.w_qkv_map = dev::make_tensor_map_2d(config.weights.w_qkv, types.weight, uint64_t(s.hidden),
                                        uint64_t(s.qkv_rows()), uint64_t(s.hidden) * 2, 32, uint32_t(head_dim));
  p.w_o_map = dev::make_tensor_map_2d(config.weights.w_o, types.weight, uint64_t(s.q_dim()), uint64_t(s.hidden),
                                      uint64_t(s.q_dim()) * 2, 32, uint32_t(head_dim));
  // K/V: boxes of R rows of one head (R = the largest power of two dividing the page size, at most one KV tile), so
  // a page of 16 positions arrives as one box; per-layer pointer tables (resolved on the device) and pools whose
  // rows a TMA coordinate cannot address fall back to one bulk copy per row.
  const int kv_tile = head_dim == 128 ? Traits<128>::kKvTile : Traits<64>::kKvTile;
  const int64_t pool_rows = int64_t(config.cache.n_pages) * config.cache.page_size;
  const bool use_maps = config.cache.k_pages != nullptr && pool_rows <= int64_t(INT32_MAX);
  int box_rows = 1;
  while (box_rows < kv_tile && config.cache.page_size % (box_rows * 2) == 0) box_rows *= 2;
  if (!use_maps) box_rows = 1;
  if (use_maps) {
    p.k_map = dev::make_tensor_map_2d(config.cache.k_pages, types.kv, uint64_t(s.kv_dim()), uint64_t(pool_rows),
                                      uint64_t(s.kv_dim()) * 2, uint32_t(head_dim), uint32_t(box_rows));
    p.v_map = dev::make_tensor_map_2d(config.cache.v_pages, types.kv, uint64_t(s.kv_dim()), uint64_t(pool_rows),
                                      uint64_t(s.kv_dim()) * 2, uint32_t(head_dim), uint32_t(box_rows));
  }
  p.kv_box_rows = box_rows;
  p.kv_use_maps = use_maps ? 1 : 0;
  li.kv_box_rows = box_rows;
  p.hidden = s.hidden;
  p.n_kv_heads = s.n_kv_heads;
  p.group = s.group();
  p.q_dim = s.q_dim();
  p.kv_dim = s.kv_dim();
  p.rot_dim = s.rotary_dim();
  p.rope_neox = s.rope_style == RopeStyle::NeoX ? 1 : 0;
  p.eps = s.eps;
  p.rope_theta = s.rope_theta;
  p.scale_log2 = float(1.4426950408889634 / std::sqrt(double(head_dim)));
  p.units_total = units_total;
  p.out_row_units = row_units;
  p.o_blocks_max = o_blocks;
  p.norm = config.weights.norm;
  p.b_qkv = config.weights.b_qkv;
  p.k_pages = config.cache.k_pages;
  p.v_pages = config.cache.v_pages;
  p.k_layer_table = config.cache.k_layer_table;
  p.v_layer_table = config.cache.v_layer_table;
  p.layer_id = config.cache.layer_id;
  p.n_pages = config.cache.n_pages;
  p.page_size = config.cache.page_size;
  p.cos_sin = config.rope.cos_sin;
  p.cos_sin_rows = config.rope.max_positions;
  p.o_partial = im.o_partial.data();
  p.o_counters = im.counters.data();
  // Ring items issued before the norm is done (at most the ring).
  p.early_stages = std::min(config.early_stages >= 0 ? config.early_stages : kDefaultEarlyStages, stages);
  li.early_stages = p.early_stages;
  p.max_batch = config.max_batch;
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
  validate_step(step, im.config.max_batch, im.config.shape.hidden);
  KernelParams p = im.base;
  p.batch = step.batch;
  p.hidden_in = step.hidden;
  p.residual = step.residual;
  p.residual_out = step.residual_out;
  p.out = step.out;
  p.positions = step.positions;
  p.positions64 = step.positions64;
  p.kv_indptr = step.kv_indptr;
  p.kv_indices = step.kv_indices;
  p.kv_last_page_len = step.kv_last_page_len;
  p.n_indices = step.n_indices;
  im.launch(p, im.info.clusters * im.info.cluster_size, im.info.cluster_size, stream, emu_seed);
}

std::vector<uint64_t> Plan::read_trace(void* stream) { return impl_->trace.read(stream); }

void Plan::check_status(void* stream) {
  impl_->check_status(stream, describe_wait_site, describe_status);
}

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::decoder_attention
