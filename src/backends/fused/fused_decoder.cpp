#include "fused_decoder.hpp"

#include <string>
#include <utility>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/kernels/decoder_attention/launch.hpp"
#include "clusterfusion/kernels/ffn/launch.hpp"
#include "clusterfusion/kernels/lm_head/launch.hpp"

namespace cf::fused {
inline namespace CF_BUILD_NAMESPACE {

namespace da = kernels::decoder_attention;
namespace kffn = kernels::ffn;
namespace klm = kernels::lm_head;

struct FusedDecoder::Plans {
  std::vector<da::Plan> attention;
  std::vector<kffn::Plan> ffn;
  std::unique_ptr<klm::Plan> lm_head;
};

FusedDecoder::FusedDecoder(const ModelConfig& c, dev::DType dtype, const ModelPointers& w, const KvCacheShape& kv,
                           int max_batch, const Tuning& tuning)
    : plans_(std::make_unique<Plans>()), max_batch_(max_batch) {
  CF_CHECK_INPUT(int(w.layers.size()) == c.n_layers,
                 "fused decoder: " + std::to_string(w.layers.size()) + " layers of weights for a model of " +
                     std::to_string(c.n_layers));
  CF_CHECK_INPUT(kv.n_kv_heads == c.n_kv_heads && kv.head_dim == c.head_dim,
                 "fused decoder: the KV cache shape does not match the model");
  plans_->attention.reserve(size_t(c.n_layers));
  plans_->ffn.reserve(size_t(c.n_layers));
  for (int layer = 0; layer < c.n_layers; ++layer) {
    const LayerPointers& lw = w.layers[size_t(layer)];
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
    plans_->attention.emplace_back(a);

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
    plans_->ffn.emplace_back(f);
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
  for (size_t layer = 0; layer < plans_->attention.size(); ++layer) {
    da::StepArgs a;
    a.batch = batch;
    a.hidden = b.hidden[in];
    a.residual = layer == 0 ? nullptr : b.residual;
    a.residual_out = b.residual;
    a.out = b.hidden[1 - in];
    a.positions = b.positions;
    a.kv_indptr = b.kv_indptr;
    a.kv_indices = b.kv_indices;
    a.kv_last_page_len = b.kv_last_page_len;
    a.n_indices = b.n_indices;
    plans_->attention[layer].run(a, stream, emu_seed);
    in = 1 - in;

    kffn::StepArgs f;
    f.batch = batch;
    f.hidden = b.hidden[in];
    f.residual = b.residual;
    f.residual_out = b.residual;
    f.out = b.hidden[1 - in];
    plans_->ffn[layer].run(f, stream, emu_seed);
    in = 1 - in;
  }
  klm::StepArgs h;
  h.batch = batch;
  h.hidden = b.hidden[in];
  h.residual = plans_->attention.empty() ? nullptr : b.residual;
  h.logits = b.logits;
  h.tokens = b.tokens;
  plans_->lm_head->run(h, stream, emu_seed);
}

void FusedDecoder::check_status(void* stream) {
  for (auto& p : plans_->attention) p.check_status(stream);
  for (auto& p : plans_->ffn) p.check_status(stream);
  plans_->lm_head->check_status(stream);
}

std::string FusedDecoder::describe() const {
  std::string s;
  if (!plans_->attention.empty()) {
    const da::LaunchInfo& a = plans_->attention[0].info();
    const kffn::LaunchInfo& f = plans_->ffn[0].info();
    s += "attention " + std::to_string(a.clusters) + "x" + std::to_string(a.cluster_size) + " CTAs (max active " +
         std::to_string(a.max_active_clusters) + (a.occupancy_queried ? "" : " assumed") + ", " +
         std::to_string(a.waves) + (a.waves == 1 ? " wave), " : " waves), ") + std::to_string(a.stages) +
         " stages; ffn " + std::to_string(f.clusters) + "x" + std::to_string(f.cluster_size) + " CTAs (max active " +
         std::to_string(f.max_active_clusters) + "), " + std::to_string(f.stages) + " stages; ";
  }
  const klm::LaunchInfo& h = plans_->lm_head->info();
  s += "lm_head " + std::to_string(h.ctas) + " CTAs, " + std::to_string(h.stages) + " stages";
  return s;
}

}  // namespace CF_BUILD_NAMESPACE
}  // namespace cf::fused
