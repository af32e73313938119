#include "fused_decoder.hpp"

#include <optional>
#include <string>
#include <utility>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/kernels/decoder_attention/launch.hpp"
#include "clusterfusion/kernels/ffn/launch.hpp"
#include "clusterfusion/kernels/lm_head/launch.hpp"
#include "clusterfusion/model/deepseek.hpp"  // moe_block_shape
#include "clusterfusion/kernels/mla/launch.hpp"
#include "clusterfusion/kernels/moe/launch.hpp"

namespace cf::fused {
inline namespace CF_BUILD_NAMESPACE {

namespace da = kernels::decoder_attention;
namespace kffn = kernels::ffn;
namespace klm = kernels::lm_head;

namespace kmla = kernels::mla;
namespace kmoe = kernels::moe;

// One layer's plans: its attention kind's and its FFN kind's.
struct LayerPlans {
  std::optional<da::Plan> attention;
  std::optional<kffn::Plan> ffn;
  std::optional<kmla::Plan> mla;
  std::optional<kmoe::Plan> moe;
};

struct FusedDecoder::Plans {
  std::vector<LayerPlans> layers;
  std::unique_ptr<klm::Plan> lm_head;
};

namespace {

da::Plan attention_plan(const ModelConfig& c, dev::DType dtype, const ModelPointers& w, const LayerPointers& lw,
                        const KvCacheShape& kv, int max_batch, const Tuning& tuning) {
  da::PlanConfig a;
  a.dtype = dtype;
  a.shape.hidden = c.hidden;
  a.shape.n_heads = c.n_heads;
  a.shape.n_kv_heads = c.n_kv_heads;
  a.shape.head_dim = c.head_dim;
  a.shape.rot_dim = c.rope_dim > 0 ? c.rope_dim : c.head_dim;
  a.shape.rope_style = c.rope_style;
  a.shape.rope_theta = c.rope_theta;
  a.shape.eps = c.rms_eps;
  a.weights.norm = lw.attn_norm;
  a.weights.w_qkv = lw.w_qkv;
  a.weights.b_qkv = lw.b_qkv;
  a.weights.w_o = lw.w_o;
  a.cache.k_pages = lw.k_pages;
  a.cache.v_pages = lw.v_pages;
  a.cache.n_pages = kv.n_pages;
  a.cache.page_size = kv.page_size;
  a.rope.cos_sin = w.cos_sin;
  a.rope.max_positions = w.cos_sin ? w.max_positions : 0;
  a.max_batch = max_batch;
  a.cluster_size = tuning.attention_cluster_size;
  a.sm_count = tuning.sm_count;
  return da::Plan(a);
}

kffn::Plan ffn_plan(const ModelConfig& c, dev::DType dtype, const LayerPointers& lw, int max_batch,
                    const Tuning& tuning) {
  kffn::PlanConfig f;
  f.dtype = dtype;
  f.shape.hidden = c.hidden;
  f.shape.ffn_hidden = c.ffn_hidden;
  f.shape.eps = c.rms_eps;
  f.weights.norm = lw.ffn_norm;
  f.weights.set_fused_gate_up(lw.w_gate_up, f.shape, dtype);
  f.weights.w_down = lw.w_down;
  f.max_batch = max_batch;
  f.cluster_size = tuning.ffn_cluster_size;
  f.max_clusters = tuning.ffn_max_clusters;
  f.sm_count = tuning.sm_count;
  return kffn::Plan(f);
}

kmla::Plan mla_plan(const ModelConfig& c, dev::DType dtype, const ModelPointers& w, const MlaPointers& m,
                    const KvCacheShape& kv, int max_batch, const Tuning& tuning) {
  CF_CHECK_INPUT(w.cos_sin != nullptr && w.max_positions > 0, "fused decoder: MLA layers need the RoPE table");
  CF_CHECK_INPUT(w.mla_shape.hidden == c.hidden && w.mla_shape.n_heads == c.n_heads &&
                     w.mla_shape.latent_row() == c.cache_values_per_token(),
                 "fused decoder: the MLA weights' shape does not match the model");
  kmla::PlanConfig p;
  p.dtype = dtype;
  p.shape = w.mla_shape;
  p.weights = m;  // the Weights part
  p.cache.pages = m.latent_pages;
  p.cache.n_pages = kv.n_pages;
  p.cache.page_size = kv.page_size;
  p.rope.cos_sin = w.cos_sin;
  p.rope.max_positions = w.max_positions;
  p.max_batch = max_batch;
  p.cluster_size = tuning.mla_cluster_size;
  p.max_clusters = tuning.mla_max_clusters;
  p.sm_count = tuning.sm_count;
  return kmla::Plan(p);
}

kmoe::Plan moe_plan(const ModelConfig& c, dev::DType dtype, const MoePointers& m, int max_batch,
                    const Tuning& tuning) {
  kmoe::PlanConfig p;
  p.dtype = dtype;
  p.shape = moe_block_shape(c);
  p.weights = m;
  p.max_batch = max_batch;
  p.cluster_size = tuning.moe_cluster_size;
  p.max_clusters = tuning.moe_max_clusters;
  p.sm_count = tuning.sm_count;
  return kmoe::Plan(p);
}

// The step arguments of an attention block (decoder attention or MLA: the same fields) reading hidden[in].
template <typename Args>
Args attention_step(int batch, const StepBuffers& b, int in, const void* residual) {
  Args a;
  a.batch = batch;
  a.hidden = b.hidden[in];
  a.residual = residual;
  a.residual_out = b.residual;
  a.out = b.hidden[1 - in];
  a.positions = b.positions;
  a.kv_indptr = b.kv_indptr;
  a.kv_indices = b.kv_indices;
  a.kv_last_page_len = b.kv_last_page_len;
  a.n_indices = b.n_indices;
  return a;
}

// The step arguments of an FFN block (dense or MoE) reading hidden[in].
template <typename Args>
Args ffn_step(int batch, const StepBuffers& b, int in) {
  Args f;
  f.batch = batch;
  f.hidden = b.hidden[in];
  f.residual = b.residual;
  f.residual_out = b.residual;
  f.out = b.hidden[1 - in];
  return f;
}

}  // namespace

FusedDecoder::FusedDecoder(const ModelConfig& c, dev::DType dtype, const ModelPointers& w, const KvCacheShape& kv,
                           int max_batch, const Tuning& tuning)
    : plans_(std::make_unique<Plans>()), max_batch_(max_batch) {
  CF_CHECK_INPUT(int(w.layers.size()) == c.n_layers,
                 "fused decoder: " + std::to_string(w.layers.size()) + " layers of weights for a model of " +
                     std::to_string(c.n_layers));
  const int kv_heads = c.is_mla() ? 1 : c.n_kv_heads;
  const int64_t kv_width = c.is_mla() ? c.cache_values_per_token() : c.head_dim;
  CF_CHECK_INPUT(kv.n_kv_heads == kv_heads && kv.head_dim == kv_width,
                 "fused decoder: the KV cache shape does not match the model");
  plans_->layers.resize(size_t(c.n_layers));
  for (int layer = 0; layer < c.n_layers; ++layer) {
    const LayerPointers& lw = w.layers[size_t(layer)];
    LayerPlans& plans = plans_->layers[size_t(layer)];
    const LayerSpec spec = c.layer_spec(layer);
    if (spec.attention == AttentionKind::Mla)
      plans.mla.emplace(mla_plan(c, dtype, w, lw.mla, kv, max_batch, tuning));
    else
      plans.attention.emplace(attention_plan(c, dtype, w, lw, kv, max_batch, tuning));
    if (spec.ffn == FfnKind::Moe)
      plans.moe.emplace(moe_plan(c, dtype, lw.moe, max_batch, tuning));
    else
      plans.ffn.emplace(ffn_plan(c, dtype, lw, max_batch, tuning));
  }
  klm::PlanConfig h;
  h.dtype = dtype;
  h.shape.hidden = c.hidden;
  h.shape.vocab = c.vocab;
  h.shape.eps = c.rms_eps;
  h.weights.norm = w.output_norm;
  h.weights.w_out = w.lm_head;
  h.max_batch = max_batch;
  h.max_ctas = tuning.lm_head_max_ctas;
  h.sm_count = tuning.sm_count;
  plans_->lm_head = std::make_unique<klm::Plan>(h);
}

FusedDecoder::~FusedDecoder() = default;
FusedDecoder::FusedDecoder(FusedDecoder&&) noexcept = default;
FusedDecoder& FusedDecoder::operator=(FusedDecoder&&) noexcept = default;

void FusedDecoder::run(int batch, const StepBuffers& b, void* stream, uint64_t emu_seed) {
  CF_CHECK(batch >= 1 && batch <= max_batch_, "fused decoder: batch " + std::to_string(batch) + " outside [1, " +
                                                  std::to_string(max_batch_) + "]");
  // `in` holds the current block's input; the block writes its output to the other buffer.
  int in = 0;
  for (size_t layer = 0; layer < plans_->layers.size(); ++layer) {
    LayerPlans& plans = plans_->layers[layer];
    const void* residual = layer == 0 ? nullptr : b.residual;
    if (plans.attention) plans.attention->run(attention_step<da::StepArgs>(batch, b, in, residual), stream, emu_seed);
    if (plans.mla) plans.mla->run(attention_step<kmla::StepArgs>(batch, b, in, residual), stream, emu_seed);
    in = 1 - in;
    if (plans.ffn) plans.ffn->run(ffn_step<kffn::StepArgs>(batch, b, in), stream, emu_seed);
    if (plans.moe) plans.moe->run(ffn_step<kmoe::StepArgs>(batch, b, in), stream, emu_seed);
    in = 1 - in;
  }
  klm::StepArgs h;
  h.batch = batch;
  h.hidden = b.hidden[in];
  h.residual = plans_->layers.empty() ? nullptr : b.residual;
  h.logits = b.logits;
  h.tokens = b.tokens;
  plans_->lm_head->run(h, stream, emu_seed);
}

void FusedDecoder::check_status(void* stream) {
  for (LayerPlans& p : plans_->layers) {
    if (p.attention) p.attention->check_status(stream);
    if (p.ffn) p.ffn->check_status(stream);
    if (p.mla) p.mla->check_status(stream);
    if (p.moe) p.moe->check_status(stream);
  }
  plans_->lm_head->check_status(stream);
}

std::string FusedDecoder::describe() const {
  std::string s;
  // The first layer of each kind stands for all of its kind (same shapes, same plans).
  const LayerPlans *attention = nullptr, *ffn = nullptr, *mla = nullptr, *moe = nullptr;
  for (const LayerPlans& p : plans_->layers) {
    if (!attention && p.attention) attention = &p;
    if (!ffn && p.ffn) ffn = &p;
    if (!mla && p.mla) mla = &p;
    if (!moe && p.moe) moe = &p;
  }
  if (attention) {
    const da::LaunchInfo& a = attention->attention->info();
    s += "attention " + std::to_string(a.clusters) + "x" + std::to_string(a.cluster_size) + " CTAs (max active " +
         std::to_string(a.max_active_clusters) + (a.occupancy_queried ? "" : " assumed") + ", " +
         std::to_string(a.waves) + (a.waves == 1 ? " wave), " : " waves), ") + std::to_string(a.stages) +
         " stages; ";
  }
  if (mla) s += "mla " + mla->mla->info().describe() + "; ";
  if (moe) s += "moe " + moe->moe->info().describe() + "; ";
  if (ffn) {
    const kffn::LaunchInfo& f = ffn->ffn->info();
    s += "ffn " + std::to_string(f.clusters) + "x" + std::to_string(f.cluster_size) + " CTAs (max active " +
         std::to_string(f.max_active_clusters) + "), " + std::to_string(f.stages) + " stages; ";
  }
  const klm::LaunchInfo& h = plans_->lm_head->info();
  s += "lm_head " + std::to_string(h.ctas) + " CTAs, " + std::to_string(h.stages) + " stages";
  return s;
}

}  // namespace CF_BUILD_NAMESPACE
}  // namespace cf::fused
