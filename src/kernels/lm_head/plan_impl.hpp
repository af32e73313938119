// The LM head Plan of launch.hpp, compiled twice: by nvcc into cf_kernels (plan.cu) and by the host compiler into
// cf_kernels_emu (instantiations_emu.cpp).
#pragma once
#include <algorithm>
#include <string>

#include "../common/plan_support.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/device/launch.hpp"
#include "clusterfusion/device/tensor_map.hpp"
#include "clusterfusion/kernels/lm_head/launch.hpp"
#include "clusterfusion/kernels/lm_head/traits.hpp"
#include "kernel_select.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::lm_head {

struct Plan::Impl : PlanCore<PlanConfig, LaunchInfo, KernelParams> {
  dev::DeviceBuffer<float> cand_value;
  dev::DeviceBuffer<int32_t> cand_index;
  dev::DeviceBuffer<uint32_t> counter;
  Impl(const PlanConfig& c, int ctas)
      : PlanCore({"lm_head", kStatusWords, kStatusTimeout, kStatusDrainTimeout, kTraceSlots}, c, ctas) {}
};

namespace {
int cta_count(const PlanConfig& config) {
  const int vocab_tiles = pl::ceil_div(config.shape.vocab, pl::kTileRows);
  int ctas = std::min(config.sm_count > 0 ? config.sm_count : dev::sm_count("lm_head"), vocab_tiles);
  if (config.max_ctas > 0) ctas = std::min(ctas, config.max_ctas);
  return ctas;
}
int ring_stages(const PlanConfig& config, const Layout& layout) {
  const size_t budget = dev::kMaxSmemPerBlock;
  const int fit = layout.fixed_bytes < budget ? int((budget - layout.fixed_bytes) / pl::kStageBytes) : 0;
  int stages = std::min(fit, pl::kMaxStages);
  if (config.max_stages > 0) stages = std::min(stages, config.max_stages);
  if (stages < pl::kMinStages)
    throw InputError("lm_head: shared memory: " + std::to_string(layout.fixed_bytes) +
                     " bytes of buffers (the normed input of max_batch " + std::to_string(config.max_batch) +
                     " x hidden " + std::to_string(config.shape.hidden) + ") leave room for " + std::to_string(fit) +
                     " ring stages; at least " + std::to_string(pl::kMinStages) + " are needed (lower max_batch)");
  return stages;
}
}  // namespace

Plan::Plan(const PlanConfig& config) {
  validate_config(config);
  impl_ = std::make_unique<Impl>(config, cta_count(config));
  Impl& im = *impl_;
  const Shape& s = config.shape;
  for (int tiles = 1; tiles <= 2; ++tiles) im.kernels[tiles - 1] = select_kernel(config.element_types(), tiles);

  const int stage_units = config.stage_units > 0 ? config.stage_units : pl::kDefaultStageUnits;
  const int chunk_cols = std::min(stage_units * pl::kUnitCols, s.hidden);
  const Layout layout = make_layout(config.max_batch, s.hidden);
  const int stages = ring_stages(config, layout);

  LaunchInfo& li = im.info;
  li.ctas = cta_count(config);
  li.threads = pl::kThreads;
  li.stages = stages;
  li.stage_units = stage_units;
  li.stage_bytes = pl::kStageBytes;
  li.smem_bytes = size_t(layout.fixed_bytes) + size_t(stages) * pl::kStageBytes;
  const int vocab_tiles = pl::ceil_div(s.vocab, pl::kTileRows);
  li.max_cta_weight_bytes = int64_t(pl::ceil_div(vocab_tiles, li.ctas)) * pl::kTileRows * s.hidden * 2;
  im.prepare(li.ctas, 1);

  im.cand_value = dev::DeviceBuffer<float>(size_t(li.ctas) * config.max_batch, "lm_head candidates");
  im.cand_index = dev::DeviceBuffer<int32_t>(size_t(li.ctas) * config.max_batch, "lm_head candidates");
  dev::declare_scratch(im.cand_value.data(), im.cand_value.bytes());  // each launch writes the candidates it reads
  dev::declare_scratch(im.cand_index.data(), im.cand_index.bytes());
  im.counter = dev::DeviceBuffer<uint32_t>(1, "lm_head counter");

  KernelParams& p = im.base;
  const uint64_t H = uint64_t(s.hidden), V = uint64_t(s.vocab);
  p.w = pl::make_box_maps(config.weights.w_out, config.element_types().weight, H, V,
                          pl::chunk_widths(chunk_cols, s.hidden, s.hidden));
  p.hidden = s.hidden;
  p.vocab = s.vocab;
  p.eps = s.eps;
  p.chunk_cols = chunk_cols;
  p.tiles = pl::panel_tiles(chunk_cols);
  p.vocab_tiles = vocab_tiles;
  p.norm = config.weights.norm;
  p.cand_value = im.cand_value.data();
  p.cand_index = im.cand_index.data();
  p.counter = im.counter.data();
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
  p.logits = step.logits;
  p.tokens = step.tokens;
  im.launch(p, im.info.ctas, 1, stream, emu_seed);
}

void Plan::check_status(void* stream) {
  impl_->check_status(stream, describe_wait_site);
}

std::vector<uint64_t> Plan::read_trace(void* stream) { return impl_->trace.read(stream); }

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::lm_head
