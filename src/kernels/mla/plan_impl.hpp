// The MLA block's Plan of launch.hpp and the host validation of params.hpp, compiled twice: by nvcc into cf_kernels
// (plan.cu) and by the host compiler into cf_kernels_emu (instantiations_emu.cpp).
#pragma once
#include <algorithm>
#include <cmath>
#include <string>

#include "../common/plan_support.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/device/launch.hpp"
#include "clusterfusion/device/tensor_map.hpp"
#include "clusterfusion/kernels/mla/launch.hpp"
#include "clusterfusion/kernels/mla/traits.hpp"
#include "kernel_select.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla {

// ---- host validation ------------------------------------------------------------------------------------------------

namespace {
std::string str(int64_t v) { return std::to_string(v); }
bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
void fail_at(const char* part, const std::string& m) { throw InputError(std::string("mla: ") + part + m); }
}  // namespace

void validate_shape(const Shape& s) {
  auto fail = [](const std::string& m) { fail_at("shape: ", m); };
  if (s.hidden < 32 || s.hidden % 32 != 0) fail("hidden " + str(s.hidden) + " must be a positive multiple of 32");
  if (s.n_heads < 1 || s.n_heads > 256) fail("n_heads " + str(s.n_heads) + " outside [1, 256]");
  if (s.q_lora_rank < 0 || s.q_lora_rank % 32 != 0)
    fail("q_lora_rank " + str(s.q_lora_rank) + " must be 0 (no q_lora) or a positive multiple of 32");
  if (s.kv_lora_rank < 16 || s.kv_lora_rank % 16 != 0 || s.kv_lora_rank > kMaxLatent)
    fail("kv_lora_rank " + str(s.kv_lora_rank) + " must be a multiple of 16 in [16, " + str(kMaxLatent) +
         "] (the attention keeps [16 heads x r] in registers)");
  if (s.qk_rope < 2 || s.qk_rope % 8 != 0) fail("qk_rope " + str(s.qk_rope) + " must be a positive multiple of 8");
  if (s.qk_nope < 8 || s.qk_nope % 8 != 0 || s.qk_nope > 1024)
    fail("qk_nope " + str(s.qk_nope) + " must be a multiple of 8 in [8, 1024]");
  if (s.v_head < 1) fail("v_head " + str(s.v_head) + " must be positive");
  if (s.o_dim() % 32 != 0) fail("n_heads x v_head = " + str(s.o_dim()) + " must be a multiple of 32 (Wo's width)");
  if (int64_t(s.latent_row()) * 2 > pl::kStageBytes)
    fail("kv_lora_rank + qk_rope = " + str(s.latent_row()) + " exceeds " + str(pl::kStageBytes / 2) +
         " (one latent row per 16 KB ring stage)");
  if (!(s.eps > 0.0f)) fail("eps must be > 0");
  if (!(s.softmax_scale >= 0.0f) || std::isinf(s.softmax_scale))
    fail("softmax_scale must be finite and >= 0 (0: q_head^-0.5)");
}

void validate_config(const PlanConfig& c) {
  auto fail = [](const std::string& m) { fail_at("config: ", m); };
  validate_element_types("mla", c.element_types());
  validate_shape(c.shape);
  const Weights& w = c.weights;
  if (c.max_batch < 1 || c.max_batch > kMaxBatch)
    fail("max_batch " + str(c.max_batch) + " outside [1, " + str(kMaxBatch) + "]");
  if (c.cluster_size != 0 && c.cluster_size != 1)
    fail("cluster_size " + str(c.cluster_size) + " is not supported (0 or 1: the kernels run CTAs without clusters)");
  if (c.max_clusters < 0) fail("max_clusters must be >= 0");
  if (c.sm_count < 0) fail("sm_count must be >= 0");
  if (c.max_stages != 0 && (c.max_stages < pl::kMinStages || c.max_stages > pl::kMaxStages))
    fail("max_stages " + str(c.max_stages) + " outside [" + str(pl::kMinStages) + ", " + str(pl::kMaxStages) +
         "] (0: as many as fit)");
  if (c.wait_budget_us < 0) fail("wait_budget_us must be >= 0 (0 = no limit)");
  const bool lora = c.shape.q_lora_rank > 0;
  if (!w.norm || !w.w_kv_a || !w.kv_a_norm || !w.w_uk || !w.w_uv || !w.w_o)
    fail("weights norm, w_kv_a, kv_a_norm, w_uk, w_uv and w_o must be set");
  if (!lora && !w.w_q) fail("weights.w_q must be set (q_lora_rank 0)");
  if (lora && (!w.w_q_a || !w.q_a_norm || !w.w_q_b))
    fail("weights w_q_a, q_a_norm and w_q_b must be set (q_lora_rank " + str(c.shape.q_lora_rank) + ")");
  for (const void* p : {w.norm, w.w_q, w.w_q_a, w.q_a_norm, w.w_q_b, w.w_kv_a, w.kv_a_norm, w.w_uk, w.w_uv, w.w_o})
    if (!aligned16(p)) fail("weight pointers must be 16-byte aligned");
  if (!c.cache.pages || !aligned16(c.cache.pages)) fail("cache.pages must be set and 16-byte aligned");
  if (c.cache.n_pages < 1) fail("cache.n_pages " + str(c.cache.n_pages) + " must be >= 1");
  if (c.cache.page_size < 1) fail("cache.page_size " + str(c.cache.page_size) + " must be >= 1");
  if (!c.rope.cos_sin || c.rope.max_positions < 1) fail("rope.cos_sin must be set with max_positions >= 1");
}

void validate_step(const StepArgs& a, int max_batch) {
  auto fail = [](const std::string& m) { fail_at("step: ", m); };
  if (a.batch < 1 || a.batch > max_batch)
    fail("batch " + str(a.batch) + " outside [1, " + str(max_batch) + "] (the plan's max_batch)");
  if (!a.hidden || !a.residual_out || !a.out) fail("hidden, residual_out and out must be set");
  if (!aligned16(a.hidden) || !aligned16(a.residual) || !aligned16(a.residual_out) || !aligned16(a.out))
    fail("activation pointers must be 16-byte aligned");
  if (a.out == a.residual_out) fail("out must not alias residual_out");
  if (!a.positions || !a.kv_indptr || !a.kv_indices) fail("positions, kv_indptr and kv_indices must be set");
  if (a.n_indices < a.batch) fail("n_indices " + str(a.n_indices) + " < batch: every sequence needs a page");
}

// ---- the plan -------------------------------------------------------------------------------------------------------

// One launch of the row kernel: its argument block (the plan's fields), grid and shared memory.
struct RowsLaunch {
  RowsParams base{};
  int ctas = 0;
  size_t smem_bytes = 0;
};

// Everything a plan holds (Plan::Impl is this; the helpers below take it by name).
struct PlanState {
  PlanConfig config;
  LaunchInfo info;
  RowsFn rows_fn[2] = {nullptr, nullptr};  // batch tiles 1, 2
  AttentionFn attention_fn = nullptr;
  UvFn uv_fn[2] = {nullptr, nullptr};
  UvParams uv{};
  int uv_ctas = 0;
  size_t uv_smem = 0;
  RowsLaunch project, q_b, output;  // q_b: q_lora only
  AttentionParams attention{};
  size_t attention_smem = 0;
  int attention_budget = 0;  // CTAs of the attention launch at most
  PlanStatus status{"mla", kStatusWords, kStatusTimeout, kStatusDrainTimeout};
  dev::DeviceBuffer<float> proj, q, part_ml, part_acc, o_lat;
  dev::DeviceBuffer<uint16_t> q_lat, o;
  dev::DeviceBuffer<uint32_t> rows_counters, attention_counters, token_bad;

  explicit PlanState(const PlanConfig& c) : config(c) {}
};
struct Plan::Impl : PlanState {
  using PlanState::PlanState;
};

namespace {

int stages_for(size_t fixed_bytes, const char* what, const PlanConfig& c) {
  const size_t budget = dev::kMaxSmemPerBlock;
  const int fit = fixed_bytes < budget ? int((budget - fixed_bytes) / pl::kStageBytes) : 0;
  if (fit < pl::kMinStages)
    throw InputError("mla: shared memory: " + str(int64_t(fixed_bytes)) + " bytes of buffers of the " + what +
                     " (max_batch " + str(c.max_batch) + ") leave room for " + str(fit) + " ring stages; at least " +
                     str(pl::kMinStages) + " are needed (lower max_batch)");
  return std::min(fit, c.max_stages > 0 ? c.max_stages : pl::kMaxStages);
}

int cta_cap(const PlanConfig& c) {
  const int sms = c.sm_count > 0 ? c.sm_count : dev::sm_count("mla");
  return c.max_clusters > 0 ? std::min(sms, c.max_clusters) : sms;
}

// A row launch over [W0 (rows0); W1 (rows1)] x input rows of `cols`.
RowsLaunch make_rows(const PlanConfig& c, const void* w0, int rows0, const void* w1, int rows1, int cols,
                     RowsInput input, RowsOutput output, const char* what) {
  const DType wt = c.element_types().weight;
  RowsLaunch l;
  RowsParams& p = l.base;
  const int chunk_cols = std::min(pl::kDefaultStageUnits * pl::kUnitCols, cols);
  const pl::ChunkWidths widths = pl::chunk_widths(chunk_cols, cols, cols);
  p.w[0] = pl::make_box_maps(w0, wt, uint64_t(cols), uint64_t(rows0), widths);
  if (rows1 > 0) p.w[1] = pl::make_box_maps(w1, wt, uint64_t(cols), uint64_t(rows1), widths);
  p.rows[0] = rows0;
  p.rows[1] = rows1;
  p.tiles[0] = pl::ceil_div(rows0, pl::kTileRows);
  p.tiles[1] = pl::ceil_div(rows1, pl::kTileRows);
  p.total_tiles = p.tiles[0] + p.tiles[1];
  p.cols = cols;
  p.chunk_cols = chunk_cols;
  p.tiles_per_stage = pl::panel_tiles(chunk_cols);
  p.input = input;
  p.output = output;
  p.eps = c.shape.eps;
  p.wait_budget_ns = uint64_t(c.wait_budget_us) * 1000u;
  const RowsLayout layout = make_rows_layout(c.max_batch, cols, c.shape.qk_nope);
  p.stages = stages_for(layout.fixed_bytes, what, c);
  p.layout = layout;
  l.ctas = std::min(cta_cap(c), p.total_tiles);
  l.smem_bytes = size_t(layout.fixed_bytes) + size_t(p.stages) * pl::kStageBytes;
  return l;
}

// The fields every launch of the row kernel shares: shape, RoPE, cache, workspaces.
void set_rows_common(PlanState& im, RowsParams& p) {
  const Shape& s = im.config.shape;
  p.counters = im.rows_counters.data();
  p.n_heads = s.n_heads;
  p.q_head = s.q_head();
  p.nope = s.qk_nope;
  p.rope = s.qk_rope;
  p.r = s.kv_lora_rank;
  p.row_elems = s.latent_row();
  p.w_uk = im.config.weights.w_uk;
  p.kv_a_norm = im.config.weights.kv_a_norm;
  p.cos_sin = im.config.rope.cos_sin;
  p.max_positions = im.config.rope.max_positions;
  p.pages = im.config.cache.pages;
  p.n_pages = im.config.cache.n_pages;
  p.page_size = im.config.cache.page_size;
  p.q_lat = im.q_lat.data();
  p.token_bad = im.token_bad.data();
  p.status = im.status.data();
}

void allocate_workspace(PlanState& im) {
  const Shape& s = im.config.shape;
  const size_t B = size_t(im.config.max_batch), H = size_t(s.n_heads);
  const int head_tiles = pl::ceil_div(s.n_heads, kHeadTile);
  im.attention_budget = std::max(cta_cap(im.config), head_tiles);
  // splits x head tiles x batch <= the budget (at least one split per (token, tile))
  const size_t records = std::max(size_t(im.attention_budget), B * size_t(head_tiles)) * kHeadTile;
  const size_t proj_cols = size_t(s.q_lora_rank > 0 ? s.q_lora_rank : s.q_rows()) + size_t(s.latent_row());
  im.proj = dev::DeviceBuffer<float>(B * proj_cols, "mla projections");
  if (s.q_lora_rank > 0) im.q = dev::DeviceBuffer<float>(B * size_t(s.q_rows()), "mla q");
  im.q_lat = dev::DeviceBuffer<uint16_t>(B * H * size_t(s.latent_row()), "mla absorbed queries");
  im.o = dev::DeviceBuffer<uint16_t>(B * size_t(s.o_dim()), "mla head outputs");
  im.o_lat = dev::DeviceBuffer<float>(B * H * size_t(s.kv_lora_rank), "mla latent outputs");
  im.part_ml = dev::DeviceBuffer<float>(records * 2, "mla softmax states");
  im.part_acc = dev::DeviceBuffer<float>(records * size_t(s.kv_lora_rank), "mla softmax states");
  dev::declare_scratch(im.part_ml.data(), im.part_ml.bytes());  // each launch writes the states it merges
  dev::declare_scratch(im.part_acc.data(), im.part_acc.bytes());
  im.rows_counters = dev::DeviceBuffer<uint32_t>(H + 1, "mla counters");
  im.attention_counters = dev::DeviceBuffer<uint32_t>(B * size_t(head_tiles), "mla counters");
  im.token_bad = dev::DeviceBuffer<uint32_t>(B, "mla token flags");
  im.info.workspace_bytes = im.proj.bytes() + im.q.bytes() + im.q_lat.bytes() + im.o.bytes() + im.o_lat.bytes() +
                            im.part_ml.bytes() +
                            im.part_acc.bytes() + im.rows_counters.bytes() + im.attention_counters.bytes() +
                            im.token_bad.bytes();
}

void make_attention(PlanState& im) {
  const Shape& s = im.config.shape;
  AttentionParams& p = im.attention;
  const AttentionLayout layout = make_attention_layout(s.latent_row());
  p.stages = stages_for(layout.fixed_bytes, "attention", im.config);
  p.layout = layout;
  im.attention_smem = size_t(layout.fixed_bytes) + size_t(p.stages) * pl::kStageBytes;
  p.n_heads = s.n_heads;
  p.head_tiles = pl::ceil_div(s.n_heads, kHeadTile);
  p.r = s.kv_lora_rank;
  p.row_elems = s.latent_row();
  p.row_bytes = uint32_t(s.latent_row()) * 2u;
  p.item_rows = std::min(kMaxItemRows, int(pl::kStageBytes / p.row_bytes));
  p.scale = s.softmax_scale > 0.0f ? s.softmax_scale : float(1.0 / std::sqrt(double(s.q_head())));
  p.q_lat = im.q_lat.data();
  p.pages = im.config.cache.pages;
  p.page_size = im.config.cache.page_size;
  p.token_bad = im.token_bad.data();
  p.part_ml = im.part_ml.data();
  p.part_acc = im.part_acc.data();
  p.counters = im.attention_counters.data();
  p.o_lat = im.o_lat.data();
  p.hidden = s.hidden;
  p.status = im.status.data();
  p.wait_budget_ns = uint64_t(im.config.wait_budget_us) * 1000u;
}

void make_uv(PlanState& im) {
  const Shape& s = im.config.shape;
  UvParams& p = im.uv;
  p.n_heads = s.n_heads;
  p.v_head = s.v_head;
  p.r = s.kv_lora_rank;
  p.o_lat = im.o_lat.data();
  p.w_uv = im.config.weights.w_uv;
  p.o = im.o.data();
  im.uv_ctas = std::min(cta_cap(im.config), s.n_heads * pl::ceil_div(s.v_head, pl::kTileRows));
  im.uv_smem = size_t(im.config.max_batch) * size_t(s.kv_lora_rank) * 4;
}

// Splits of the attention for a batch: as many CTAs as the budget allows, at least one per (token, head tile).
int attention_splits(const PlanState& im, int batch) {
  return std::max(1, im.attention_budget / (batch * im.attention.head_tiles));
}

template <typename Fn, typename P>
void launch_one(const char* name, Fn fn, const P& p, int grid, size_t smem, void* stream, uint64_t seed,
                int threads = pl::kThreads) {
  dev::launch(launch_config(name, grid, 1, threads, smem, stream, seed), fn, p);
}
template <typename Fn>
void prepare_one(const char* name, Fn fn, int grid, size_t smem, int threads = pl::kThreads) {
  const Fn fns[1] = {fn};
  prepare_kernels(fns, launch_config(name, grid, 1, threads, smem, nullptr, 0));
}

}  // namespace

std::string LaunchInfo::describe() const {
  return "mla: clusters of " + str(cluster_size) + ", projection " + str(projection_clusters) + " CTAs, attention " +
         str(attention_ctas) + " CTAs (split-KV, batch at max), W_UV " + str(uv_ctas) + " CTAs, output " +
         str(output_clusters) + " CTAs, workspace " + str(int64_t(workspace_bytes)) + " bytes";
}

Plan::Plan(const PlanConfig& config) {
  validate_config(config);
  impl_ = std::make_unique<Impl>(config);
  Impl& im = *impl_;
  const Shape& s = config.shape;
  const Weights& w = config.weights;
  const ElementTypes types = config.element_types();
  im.rows_fn[0] = select_rows_kernel(types, 1);
  im.rows_fn[1] = select_rows_kernel(types, 2);
  im.attention_fn = select_attention_kernel(types);
  im.uv_fn[0] = select_uv_kernel(types, 1);
  im.uv_fn[1] = select_uv_kernel(types, 2);
  allocate_workspace(im);

  const bool lora = s.q_lora_rank > 0;
  im.project = lora ? make_rows(config, w.w_q_a, s.q_lora_rank, w.w_kv_a, s.latent_row(), s.hidden,
                                RowsInput::HiddenNorm, RowsOutput::Workspace, "projection")
                    : make_rows(config, w.w_q, s.q_rows(), w.w_kv_a, s.latent_row(), s.hidden, RowsInput::HiddenNorm,
                                RowsOutput::Workspace, "projection");
  set_rows_common(im, im.project.base);
  im.project.base.norm = w.norm;
  im.project.base.proj = im.proj.data();
  im.project.base.proj_stride = im.project.base.rows[0] + im.project.base.rows[1];
  im.project.base.head_tails = lora ? 0 : 1;
  im.project.base.kv_tail = 1;
  if (lora) {
    im.q_b = make_rows(config, w.w_q_b, s.q_rows(), nullptr, 0, s.q_lora_rank, RowsInput::LatentNorm,
                       RowsOutput::Workspace, "q_b projection");
    set_rows_common(im, im.q_b.base);
    im.q_b.base.norm = w.q_a_norm;
    im.q_b.base.src_f32 = im.proj.data();
    im.q_b.base.src_stride = im.project.base.proj_stride;
    im.q_b.base.proj = im.q.data();
    im.q_b.base.proj_stride = s.q_rows();
    im.q_b.base.head_tails = 1;
  }
  im.output = make_rows(config, w.w_o, s.hidden, nullptr, 0, s.o_dim(), RowsInput::Copy, RowsOutput::Out, "output");
  set_rows_common(im, im.output.base);
  im.output.base.src_ta = im.o.data();
  make_attention(im);
  make_uv(im);

  for (const RowsLaunch* l : {&im.project, &im.q_b, &im.output})
    if (l->ctas > 0)
      for (RowsFn fn : im.rows_fn) prepare_one("mla rows", fn, l->ctas, l->smem_bytes);
  prepare_one("mla attention", im.attention_fn, im.attention_budget, im.attention_smem);
  for (UvFn fn : im.uv_fn) prepare_one("mla W_UV", fn, im.uv_ctas, im.uv_smem, kUvThreads);

  LaunchInfo& li = im.info;
  li.cluster_size = 1;
  li.projection_clusters = im.project.ctas;
  li.attention_ctas = attention_splits(im, config.max_batch) * config.max_batch * im.attention.head_tiles;
  li.output_clusters = im.output.ctas;
  li.uv_ctas = im.uv_ctas;
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
  const RowsFn rows_fn = im.rows_fn[step.batch <= pl::kMmaN ? 0 : 1];
  auto rows_launch = [&](const RowsLaunch& l, const char* name) {
    RowsParams p = l.base;
    p.batch = step.batch;
    p.hidden_in = step.hidden;
    p.residual = step.residual;
    p.positions = step.positions;
    p.kv_indptr = step.kv_indptr;
    p.kv_indices = step.kv_indices;
    p.kv_last_page_len = step.kv_last_page_len;
    p.n_indices = step.n_indices;
    p.out = step.out;
    launch_one(name, rows_fn, p, l.ctas, l.smem_bytes, stream, emu_seed);
  };
  rows_launch(im.project, "mla projection");
  if (im.config.shape.q_lora_rank > 0) rows_launch(im.q_b, "mla q_b projection");

  AttentionParams a = im.attention;
  a.batch = step.batch;
  a.splits = attention_splits(im, step.batch);
  a.kv_indptr = step.kv_indptr;
  a.kv_indices = step.kv_indices;
  a.kv_last_page_len = step.kv_last_page_len;
  a.hidden_in = step.hidden;
  a.residual = step.residual;
  a.residual_out = step.residual_out;
  launch_one("mla attention", im.attention_fn, a, a.splits * a.head_tiles * step.batch, im.attention_smem, stream,
             emu_seed);

  UvParams uv = im.uv;
  uv.batch = step.batch;
  launch_one("mla W_UV", im.uv_fn[step.batch <= pl::kMmaN ? 0 : 1], uv, im.uv_ctas, im.uv_smem, stream, emu_seed,
             kUvThreads);

  rows_launch(im.output, "mla output");
}

void Plan::check_status(void* stream) {
  impl_->status.check(stream, impl_->config.wait_budget_us, describe_wait_site, describe_status);
}

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla
