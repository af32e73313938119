// The LM head Plan of launch.hpp, compiled twice: by nvcc into cf_kernels (plan.cu) and by the host compiler into
// cf_kernels_emu (instantiations_emu.cpp).
#pragma once
#include <algorithm>
#include <string>

#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/device/launch.hpp"
#include "clusterfusion/device/tensor_map.hpp"
#include "clusterfusion/kernels/lm_head/launch.hpp"
#include "clusterfusion/kernels/lm_head/traits.hpp"
#include "clusterfusion/primitives/wait_status.hpp"
#include "kernel_select.hpp"

namespace cf::kernels::lm_head {

struct Plan::Impl {
  PlanConfig config;
  LaunchInfo info;
  KernelParams base{};
  KernelFn kernels[2] = {nullptr, nullptr};
  dev::DeviceBuffer<float> cand_value;
  dev::DeviceBuffer<int32_t> cand_index;
  dev::DeviceBuffer<uint32_t> counter;
  dev::DeviceBuffer<uint32_t> status;
  std::string failed;  // the timeout of an earlier launch (run() refuses)
};

Plan::Plan(const PlanConfig& config) : impl_(std::make_unique<Impl>()) {
  validate_config(config);
  Impl& im = *impl_;
  im.config = config;
  const Shape& s = config.shape;
  const dev::DType dt = config.dtype;
  for (int tiles = 1; tiles <= 2; ++tiles)
    im.kernels[tiles - 1] = dt == dev::DType::F16 ? select_kernel_f16(tiles) : select_kernel_bf16(tiles);

  const int vocab_tiles = ws::ceil_div(s.vocab, ws::kTileRows);
  int ctas = std::min(config.sm_count > 0 ? config.sm_count : dev::sm_count("lm_head"), vocab_tiles);
  if (config.max_ctas > 0) ctas = std::min(ctas, config.max_ctas);
  const int stage_units = config.stage_units > 0 ? config.stage_units : ws::kDefaultStageUnits;
  const int chunk_cols = std::min(stage_units * ws::kUnitCols, s.hidden);
  const int tiles = ws::panel_tiles(chunk_cols);

  const Layout layout = make_layout(config.max_batch, s.hidden);
  const size_t budget = dev::kMaxSmemPerBlock;
  const int fit = layout.fixed_bytes < budget ? int((budget - layout.fixed_bytes) / ws::kStageBytes) : 0;
  int stages = std::min(fit, ws::kMaxStages);
  if (config.max_stages > 0) stages = std::min(stages, config.max_stages);
  if (stages < ws::kMinStages)
    throw InputError("lm_head: shared memory: " + std::to_string(layout.fixed_bytes) +
                     " bytes of buffers (the normed input of max_batch " + std::to_string(config.max_batch) +
                     " x hidden " + std::to_string(s.hidden) + ") leave room for " + std::to_string(fit) +
                     " ring stages; at least " + std::to_string(ws::kMinStages) + " are needed (lower max_batch)");

  LaunchInfo& li = im.info;
  li.ctas = ctas;
  li.threads = ws::kThreads;
  li.stages = stages;
  li.stage_units = stage_units;
  li.stage_bytes = ws::kStageBytes;
  li.smem_bytes = size_t(layout.fixed_bytes) + size_t(stages) * ws::kStageBytes;
  li.max_cta_weight_bytes = int64_t(ws::ceil_div(vocab_tiles, ctas)) * ws::kTileRows * s.hidden * 2;

#if defined(CF_DEVICE_CUDA)
  for (KernelFn fn : im.kernels) {
    dev::LaunchConfig cfg;
    cfg.smem_bytes = li.smem_bytes;
    cfg.name = "lm_head";
    dev::detail::prepare_kernel(reinterpret_cast<const void*>(fn), cfg);
  }
#endif
  im.cand_value = dev::DeviceBuffer<float>(size_t(ctas) * config.max_batch);
  im.cand_index = dev::DeviceBuffer<int32_t>(size_t(ctas) * config.max_batch);
  im.counter = dev::DeviceBuffer<uint32_t>(1);
  im.status = dev::DeviceBuffer<uint32_t>(kStatusWords);

  KernelParams& p = im.base;
  const uint64_t H = uint64_t(s.hidden), V = uint64_t(s.vocab);
  p.w = ws::make_box_maps(config.weights.w_out, dt, H, V, ws::chunk_widths(chunk_cols, s.hidden, s.hidden));
  p.hidden = s.hidden;
  p.vocab = s.vocab;
  p.eps = s.eps;
  p.chunk_cols = chunk_cols;
  p.tiles = tiles;
  p.vocab_tiles = vocab_tiles;
  p.norm = config.weights.norm;
  p.cand_value = im.cand_value.data();
  p.cand_index = im.cand_index.data();
  p.counter = im.counter.data();
  p.status = im.status.data();
  p.wait_budget_ns = uint64_t(config.wait_budget_us) * 1000u;
  p.stages = stages;
  p.off_small = layout.off_small;
  p.off_x = layout.off_x;
  p.off_scratch = layout.off_scratch;
  p.off_ring = layout.off_ring;
  p.x_stride = layout.x_stride;
}

Plan::~Plan() = default;
Plan::Plan(Plan&&) noexcept = default;
Plan& Plan::operator=(Plan&&) noexcept = default;

const LaunchInfo& Plan::info() const { return impl_->info; }
const PlanConfig& Plan::config() const { return impl_->config; }

void Plan::run(const StepArgs& step, void* stream, uint64_t emu_seed) {
  const Impl& im = *impl_;
  if (!im.failed.empty()) throw Error("lm_head: the plan's earlier launch failed; " + im.failed);
  validate_step(step, im.config.max_batch);
  KernelParams p = im.base;
  p.batch = step.batch;
  p.hidden_in = step.hidden;
  p.residual = step.residual;
  p.logits = step.logits;
  p.tokens = step.tokens;

  dev::LaunchConfig cfg;
  cfg.grid = {uint32_t(im.info.ctas)};
  cfg.cluster = {1};
  cfg.block = {uint32_t(im.info.threads)};
  cfg.smem_bytes = im.info.smem_bytes;
  cfg.name = "lm_head";
  cfg.emu_seed = emu_seed;
#if defined(CF_DEVICE_CUDA)
  cfg.stream = static_cast<cudaStream_t>(stream);
#else
  (void)stream;
#endif
  dev::launch(cfg, im.kernels[step.batch <= 8 ? 0 : 1], p);
}

void Plan::check_status(void* stream) {
#if defined(CF_DEVICE_CUDA)
  dev::check_cuda(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), "lm_head: cudaStreamSynchronize");
#else
  (void)stream;
#endif
  uint32_t words[kStatusWords] = {};
  impl_->status.download(words, kStatusWords);
  bool any = false;
  for (uint32_t w : words) any = any || w != 0;
  if (!any) return;
  impl_->status.fill_bytes(0);
  impl_->failed = prim::timeout_error("lm_head", words, kStatusTimeout, kStatusDrainTimeout,
                                      impl_->config.wait_budget_us, describe_wait_site);
  throw Error(impl_->failed);
}

}  // namespace cf::kernels::lm_head
