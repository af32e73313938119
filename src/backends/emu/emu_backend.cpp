#include "emu_backend.hpp"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "common/device_layout.hpp"
#include "common/step_plan.hpp"
#include "fused/fused_decoder.hpp"
#include "fused/layer_buffers.hpp"

namespace cf {

namespace {

namespace layout = device_layout;
using Bits = dev::DeviceBuffer<uint16_t>;

// Small grids: the emulator's cost grows with the number of threads it runs, and two CTAs per cluster / two
// clusters already exercise every cross-CTA and cross-cluster path of the kernels (the MLA and MoE kernels run CTAs
// without clusters: at most two CTAs per launch where the kernel lets the caller choose).
constexpr fused::Tuning kEmuTuning{/*attention_cluster_size=*/2, /*ffn_cluster_size=*/2, /*ffn_max_clusters=*/2,
                                   /*lm_head_max_ctas=*/2,       /*mla_cluster_size=*/0, /*mla_max_clusters=*/2,
                                   /*moe_cluster_size=*/0,       /*moe_max_clusters=*/2, /*sm_count=*/0};

Bits to_emu(const std::vector<uint16_t>& host) {
  Bits b(host.size());
  b.upload(host);
  return b;
}

class EmuBackend final : public Backend {
 public:
  EmuBackend(std::shared_ptr<const ModelWeights> weights, const BackendOptions& options)
      : weights_(std::move(weights)), max_batch_tokens_(options.max_batch_tokens), max_seqs_(options.max_seqs) {
    CF_CHECK(weights_ != nullptr, "emu backend: no weights");
    const ModelConfig& c = weights_->config;
    CF_CHECK_INPUT(max_batch_tokens_ >= 1, "emu backend: max batch tokens must be >= 1");
    CF_CHECK_INPUT(max_seqs_ >= 1 && max_seqs_ <= kMaxDecodeBatch,
                   "emu backend: max_seqs " + std::to_string(max_seqs_) + " outside [1, 16]");
    CF_CHECK_INPUT(options.page_size >= 1, "emu backend: page size must be >= 1");
    kv_.n_layers = c.n_layers;
    // MLA: one latent row [c_kv, k_pe] per token and layer, read by every head (one "KV head"; no V pool)
    kv_.n_kv_heads = c.is_mla() ? 1 : c.n_kv_heads;
    kv_.head_dim = c.is_mla() ? int(c.cache_values_per_token()) : c.head_dim;
    kv_.page_size = options.page_size;
    const int pages_per_seq = (c.max_context + kv_.page_size - 1) / kv_.page_size;
    kv_.n_pages = options.kv_pages > 0 ? options.kv_pages : pages_per_seq * max_seqs_;
    storage_ = layout::choose_storage(*weights_);
    dtype_ = storage_ == layout::Storage::F16 ? dev::DType::F16 : dev::DType::BF16;

    // Weights in the kernels' layouts; the embedding table stays on the host (the step's rows are copied in).
    const ModelWeights& w = *weights_;
    fused::ModelPointers ptrs;
    for (int layer = 0; layer < c.n_layers; ++layer) {
      layers_.push_back(fused::LayerBuffers::upload(w, layer, storage_));
      fused::LayerPointers p = layers_.back().pointers(c, layer);
      // Llama: a K and a V pool; MLA: the latent pool alone
      k_pages_.emplace_back(size_t(kv_.elements_per_layer()));
      if (c.is_mla()) {
        p.mla.latent_pages = k_pages_.back().data();
      } else {
        v_pages_.emplace_back(size_t(kv_.elements_per_layer()));
        p.k_pages = k_pages_.back().data();
        p.v_pages = v_pages_.back().data();
      }
      ptrs.layers.push_back(p);
    }
    embeddings_ = layout::convert_stacked({&w.token_embd}, storage_);
    output_norm_ = to_emu(layout::convert_vector(w.output_norm, storage_));
    lm_head_ = to_emu(layout::convert_stacked({&w.lm_head()}, storage_));
    ptrs.output_norm = output_norm_.data();
    ptrs.lm_head = lm_head_.data();
    // The reference's RoPE table (YaRN for MLA models) for every position the pool can hold.
    const int positions = int(std::min<int64_t>(int64_t(kv_.n_pages) * kv_.page_size, 1 << 20));
    const std::vector<float> table = layout::rope_table(c, positions);
    cos_sin_ = dev::DeviceBuffer<float>(table.size());
    cos_sin_.upload(table);
    ptrs.cos_sin = cos_sin_.data();
    ptrs.max_positions = positions;
    if (c.is_mla()) ptrs.mla_shape = layout::device_mla_shape(c);

    decoder_ = std::make_unique<fused::FusedDecoder>(c, dtype_, ptrs, kv_, max_seqs_, kEmuTuning);

    const size_t rows = size_t(max_seqs_) * size_t(c.hidden);
    hidden_[0] = Bits(rows);
    hidden_[1] = Bits(rows);
    residual_ = Bits(rows);
    positions_ = dev::DeviceBuffer<int32_t>(size_t(max_seqs_));
    kv_indptr_ = dev::DeviceBuffer<int32_t>(size_t(max_seqs_) + 1);
    kv_last_page_len_ = dev::DeviceBuffer<int32_t>(size_t(max_seqs_));
    kv_indices_ = dev::DeviceBuffer<int32_t>(size_t(kv_.n_pages) * size_t(max_seqs_));
    logits_ = dev::DeviceBuffer<float>(size_t(max_seqs_) * size_t(c.vocab));
  }

  std::string name() const override { return "emu"; }
  const ModelConfig& config() const override { return weights_->config; }
  const KvCacheShape& kv_shape() const override { return kv_; }
  int max_batch_tokens() const override { return max_batch_tokens_; }

  void forward(const Batch& batch, float* logits) override {
    const ModelConfig& c = weights_->config;
    CF_CHECK(batch.n_tokens() >= 1 && batch.n_tokens() <= max_batch_tokens_,
             "emu backend: batch of " + std::to_string(batch.n_tokens()) + " tokens (limit " +
                 std::to_string(max_batch_tokens_) + ")");
    batch.validate(kv_, c.vocab);
    for (const DecodeStep& step : split_into_steps(batch, kv_.page_size, max_seqs_)) {
      run_step(batch, step);
      for (size_t row = 0; row < step.logit_rows.size(); ++row)
        for (size_t out_row : step.logit_rows[row])
          logits_.download(logits + out_row * size_t(c.vocab), size_t(c.vocab), row * size_t(c.vocab));
    }
  }

 private:
  void run_step(const Batch& batch, const DecodeStep& step) {
    const ModelConfig& c = weights_->config;
    const int n = step.batch();
    for (int i = 0; i < n; ++i) {
      const int32_t token = batch.tokens[size_t(step.token_of_row[size_t(i)])];
      hidden_[0].upload(embeddings_.data() + size_t(token) * size_t(c.hidden), size_t(c.hidden), size_t(i) * c.hidden);
    }
    positions_.upload(step.positions);
    kv_indptr_.upload(step.kv_indptr);
    kv_indices_.upload(step.kv_indices);
    kv_last_page_len_.upload(step.kv_last_page_len);
    fused::StepBuffers b;
    b.hidden[0] = hidden_[0].data();
    b.hidden[1] = hidden_[1].data();
    b.residual = residual_.data();
    b.positions = positions_.data();
    b.kv_indptr = kv_indptr_.data();
    b.kv_indices = kv_indices_.data();
    b.kv_last_page_len = kv_last_page_len_.data();
    b.n_indices = int(kv_indices_.size());
    b.logits = logits_.data();
    decoder_->run(n, b);
    decoder_->check_status();
  }

  std::shared_ptr<const ModelWeights> weights_;
  int max_batch_tokens_;
  int max_seqs_;
  KvCacheShape kv_;
  layout::Storage storage_ = layout::Storage::F16;
  dev::DType dtype_ = dev::DType::F16;
  std::vector<fused::LayerBuffers> layers_;
  std::vector<Bits> k_pages_, v_pages_;
  std::vector<uint16_t> embeddings_;
  Bits output_norm_, lm_head_;
  dev::DeviceBuffer<float> cos_sin_;
  std::unique_ptr<fused::FusedDecoder> decoder_;
  Bits hidden_[2], residual_;
  dev::DeviceBuffer<int32_t> positions_, kv_indptr_, kv_indices_, kv_last_page_len_;
  dev::DeviceBuffer<float> logits_;
};

}  // namespace

std::unique_ptr<Backend> make_emu_backend(std::shared_ptr<const ModelWeights> weights, const BackendOptions& options) {
  return std::make_unique<EmuBackend>(std::move(weights), options);
}

}  // namespace cf
