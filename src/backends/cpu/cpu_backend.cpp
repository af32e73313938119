#include "cpu_backend.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/runtime/thread_pool.hpp"
#include "kernels.hpp"

namespace cf {

namespace {

// Rows per unit of work when a matrix product is split among threads: small enough to balance 2..16 threads over a
// 192-row projection, large enough that each unit amortises its dispatch.
constexpr int64_t kRowGrain = 16;

struct Activations {
  // Per token rows, [max_tokens, width].
  std::vector<float> residual;  // hidden
  std::vector<float> normed;    // hidden
  std::vector<float> q, k, v;   // q_dim, kv_dim, kv_dim
  std::vector<float> attn;      // q_dim
  std::vector<float> gate, up;  // ffn_hidden
  std::vector<float> rope_cos, rope_sin;  // rot_dim / 2 per token
};

class CpuBackend final : public Backend {
 public:
  CpuBackend(std::shared_ptr<const ModelWeights> weights, const BackendOptions& options)
      : weights_(std::move(weights)), pool_(options.threads), max_batch_tokens_(options.max_batch_tokens) {
    CF_CHECK(weights_ != nullptr, "cpu backend: no weights");
    const ModelConfig& c = weights_->config;
    CF_CHECK_INPUT(max_batch_tokens_ >= 1, "cpu backend: max batch tokens must be >= 1");
    CF_CHECK_INPUT(options.max_seqs >= 1 && options.max_seqs <= 64, "cpu backend: max_seqs must be in 1..64");
    kv_.n_layers = c.n_layers;
    kv_.n_kv_heads = c.n_kv_heads;
    kv_.head_dim = c.head_dim;
    kv_.page_size = options.page_size;
    CF_CHECK_INPUT(kv_.page_size >= 1, "cpu backend: page size must be >= 1");
    const int pages_per_seq = (c.max_context + kv_.page_size - 1) / kv_.page_size;
    kv_.n_pages = options.kv_pages > 0 ? options.kv_pages : pages_per_seq * options.max_seqs;
    rot_dim_ = c.rope_dim > 0 ? c.rope_dim : c.head_dim;
    // The cache is allocated uninitialised: the operating system only commits the pages that get written, so a
    // pool sized for the full context costs memory only as far as it is used.
    const size_t layer_elems = size_t(kv_.elements_per_layer());
    k_cache_.reset(new float[layer_elems * size_t(c.n_layers)]);
    v_cache_.reset(new float[layer_elems * size_t(c.n_layers)]);

    const size_t t = size_t(max_batch_tokens_);
    act_.residual.resize(t * size_t(c.hidden));
    act_.normed.resize(t * size_t(c.hidden));
    act_.q.resize(t * size_t(c.q_dim()));
    act_.k.resize(t * size_t(c.kv_dim()));
    act_.v.resize(t * size_t(c.kv_dim()));
    act_.attn.resize(t * size_t(c.q_dim()));
    act_.gate.resize(t * size_t(c.ffn_hidden));
    act_.up.resize(t * size_t(c.ffn_hidden));
    act_.rope_cos.resize(t * size_t(rot_dim_ / 2));
    act_.rope_sin.resize(t * size_t(rot_dim_ / 2));
    // Per-worker scratch: one dequantised row of the widest matrix, and attention scores over a full context.
    const int widest = std::max({c.hidden, c.q_dim(), c.ffn_hidden});
    row_scratch_.assign(size_t(pool_.size()), std::vector<float>(size_t(widest)));
    // Attention scores: sized in forward() for the longest sequence of the batch.
    score_scratch_.resize(size_t(pool_.size()));
    rope_inv_freq_.resize(size_t(rot_dim_ / 2));
    for (int i = 0; i < rot_dim_ / 2; ++i)
      rope_inv_freq_[size_t(i)] = std::pow(double(c.rope_theta), -2.0 * i / double(rot_dim_));
  }

  std::string name() const override { return "cpu"; }
  const ModelConfig& config() const override { return weights_->config; }
  const KvCacheShape& kv_shape() const override { return kv_; }
  int max_batch_tokens() const override { return max_batch_tokens_; }

  void forward(const Batch& batch, float* logits) override;

 private:
  // y[t] (+)= W x[t] for all tokens, rows split among the workers.
  void matmul(const WeightMatrix& w, const float* x, int n_tokens, int64_t x_stride, float* y, int64_t y_stride,
              bool accumulate) {
    pool_.parallel_for(w.rows, kRowGrain, [&](int64_t begin, int64_t end, int worker) {
      cpu::matmul_rows(w, begin, end, x, n_tokens, x_stride, y, y_stride, accumulate, row_scratch_[size_t(worker)].data());
    });
  }
  void rmsnorm_rows(const float* x, const std::vector<float>& weight, float* y, int n_tokens, int width) const;
  void rope_rows(float* x, int n_tokens, int n_heads) const;
  void attention(const Batch& batch, int layer);
  void layer_forward(const Batch& batch, int layer);

  std::shared_ptr<const ModelWeights> weights_;
  ThreadPool pool_;
  int max_batch_tokens_;
  KvCacheShape kv_;
  int rot_dim_ = 0;
  std::unique_ptr<float[]> k_cache_, v_cache_;
  Activations act_;
  std::vector<std::vector<float>> row_scratch_, score_scratch_;
  std::vector<std::vector<int64_t>> seq_slots_;  // per batch sequence: the physical slot of each cached position
  std::vector<double> rope_inv_freq_;
};

void CpuBackend::rmsnorm_rows(const float* x, const std::vector<float>& weight, float* y, int n_tokens,
                              int width) const {
  const float eps = weights_->config.rms_eps;
  for (int t = 0; t < n_tokens; ++t) {
    const float* xt = x + int64_t(t) * width;
    float* yt = y + int64_t(t) * width;
    const float inv_rms = 1.0f / std::sqrt(cpu::dot(xt, xt, width) / float(width) + eps);
    for (int i = 0; i < width; ++i) yt[i] = xt[i] * inv_rms * weight[size_t(i)];
  }
}

void CpuBackend::rope_rows(float* x, int n_tokens, int n_heads) const {
  const ModelConfig& c = weights_->config;
  const int pairs = rot_dim_ / 2;
  const bool neox = c.rope_style == RopeStyle::NeoX;
  for (int t = 0; t < n_tokens; ++t) {
    const float* cos_row = act_.rope_cos.data() + int64_t(t) * pairs;
    const float* sin_row = act_.rope_sin.data() + int64_t(t) * pairs;
    for (int h = 0; h < n_heads; ++h) {
      float* xh = x + (int64_t(t) * n_heads + h) * c.head_dim;
      for (int i = 0; i < pairs; ++i) {
        const int a = neox ? i : 2 * i, b = neox ? i + pairs : 2 * i + 1;
        const float xa = xh[a], xb = xh[b];
        xh[a] = xa * cos_row[i] - xb * sin_row[i];
        xh[b] = xa * sin_row[i] + xb * cos_row[i];
      }
    }
  }
}

void CpuBackend::attention(const Batch& batch, int layer) {
  const ModelConfig& c = weights_->config;
  const int hd = c.head_dim, group = c.n_heads / c.n_kv_heads;
  const int64_t kv_row = c.kv_dim();
  const float* k_layer = k_cache_.get() + size_t(layer) * size_t(kv_.elements_per_layer());
  const float* v_layer = v_cache_.get() + size_t(layer) * size_t(kv_.elements_per_layer());
  const float scale = 1.0f / std::sqrt(float(hd));
  const int64_t items = int64_t(batch.n_tokens()) * c.n_kv_heads;  // one (token, KV head) pair each
  pool_.run([&](int worker) {
    const int64_t begin = items * worker / pool_.size(), end = items * (worker + 1) / pool_.size();
    for (int64_t item = begin; item < end; ++item) {
      const int t = int(item / c.n_kv_heads), kv_head = int(item % c.n_kv_heads);
      cpu::AttentionArgs a;
      a.q = act_.q.data() + (int64_t(t) * c.n_heads + int64_t(kv_head) * group) * hd;
      a.out = act_.attn.data() + (int64_t(t) * c.n_heads + int64_t(kv_head) * group) * hd;
      a.k = k_layer + int64_t(kv_head) * hd;
      a.v = v_layer + int64_t(kv_head) * hd;
      a.slots = seq_slots_[size_t(batch.token_seq[size_t(t)])].data();
      a.row = kv_row;
      a.len = batch.kv_len[size_t(t)];
      a.group = group;
      a.head_dim = hd;
      a.scale = scale;
      a.scores = score_scratch_[size_t(worker)].data();
      cpu::attend(a);
    }
  });
}

void CpuBackend::layer_forward(const Batch& batch, int layer) {
  const ModelConfig& c = weights_->config;
  const LayerWeights& lw = weights_->layers[size_t(layer)];
  const int n = batch.n_tokens();
  const int64_t hidden = c.hidden, q_dim = c.q_dim(), kv_dim = c.kv_dim(), ffn = c.ffn_hidden;

  // Attention block: x = rmsnorm(residual); q, k, v; RoPE; append k, v; attention; residual += o(attn).
  rmsnorm_rows(act_.residual.data(), lw.attn_norm, act_.normed.data(), n, c.hidden);
  const int64_t qkv_rows = q_dim + 2 * kv_dim;
  pool_.parallel_for(qkv_rows, kRowGrain, [&](int64_t begin, int64_t end, int worker) {
    float* scratch = row_scratch_[size_t(worker)].data();
    // The combined row range covers q, then k, then v.
    struct Part {
      const WeightMatrix* w;
      int64_t first;
      float* y;
      int64_t width;
    };
    const Part parts[3] = {{&lw.attn_q, 0, act_.q.data(), q_dim},
                           {&lw.attn_k, q_dim, act_.k.data(), kv_dim},
                           {&lw.attn_v, q_dim + kv_dim, act_.v.data(), kv_dim}};
    for (const Part& part : parts) {
      const int64_t lo = std::max(begin, part.first), hi = std::min(end, part.first + part.width);
      if (lo < hi)
        cpu::matmul_rows(*part.w, lo - part.first, hi - part.first, act_.normed.data(), n, hidden, part.y, part.width,
                         false, scratch);
    }
  });
  if (c.qkv_bias) {
    for (int t = 0; t < n; ++t) {
      for (int64_t i = 0; i < q_dim; ++i) act_.q[size_t(t * q_dim + i)] += lw.q_bias[size_t(i)];
      for (int64_t i = 0; i < kv_dim; ++i) {
        act_.k[size_t(t * kv_dim + i)] += lw.k_bias[size_t(i)];
        act_.v[size_t(t * kv_dim + i)] += lw.v_bias[size_t(i)];
      }
    }
  }
  rope_rows(act_.q.data(), n, c.n_heads);
  rope_rows(act_.k.data(), n, c.n_kv_heads);
  float* k_layer = k_cache_.get() + size_t(layer) * size_t(kv_.elements_per_layer());
  float* v_layer = v_cache_.get() + size_t(layer) * size_t(kv_.elements_per_layer());
  for (int t = 0; t < n; ++t) {
    const int64_t slot = batch.kv_slot[size_t(t)];
    std::copy_n(act_.k.data() + t * kv_dim, kv_dim, k_layer + slot * kv_dim);
    std::copy_n(act_.v.data() + t * kv_dim, kv_dim, v_layer + slot * kv_dim);
  }
  attention(batch, layer);
  matmul(lw.attn_output, act_.attn.data(), n, q_dim, act_.residual.data(), hidden, /*accumulate=*/true);

  // FFN block: x = rmsnorm(residual); residual += down(silu(gate x) * up x). Each worker owns a range of the
  // intermediate features and computes gate, up and the activation for it.
  rmsnorm_rows(act_.residual.data(), lw.ffn_norm, act_.normed.data(), n, c.hidden);
  pool_.parallel_for(ffn, kRowGrain, [&](int64_t begin, int64_t end, int worker) {
    float* scratch = row_scratch_[size_t(worker)].data();
    cpu::matmul_rows(lw.ffn_gate, begin, end, act_.normed.data(), n, hidden, act_.gate.data(), ffn, false, scratch);
    cpu::matmul_rows(lw.ffn_up, begin, end, act_.normed.data(), n, hidden, act_.up.data(), ffn, false, scratch);
    for (int t = 0; t < n; ++t) {
      float* g = act_.gate.data() + t * ffn;
      const float* u = act_.up.data() + t * ffn;
      for (int64_t i = begin; i < end; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }
  });
  matmul(lw.ffn_down, act_.gate.data(), n, ffn, act_.residual.data(), hidden, /*accumulate=*/true);
}

void CpuBackend::forward(const Batch& batch, float* logits) {
  const ModelConfig& c = weights_->config;
  CF_CHECK(batch.n_tokens() >= 1 && batch.n_tokens() <= max_batch_tokens_,
           "cpu backend: batch of " + std::to_string(batch.n_tokens()) + " tokens (limit " +
               std::to_string(max_batch_tokens_) + ")");
  batch.validate(kv_, c.vocab);
  const int n = batch.n_tokens();

  // Embeddings, and the RoPE rotation of every token's position (shared by all layers).
  for (int t = 0; t < n; ++t)
    weights_->token_embd.dequantize_rows(batch.tokens[size_t(t)], 1, act_.residual.data() + int64_t(t) * c.hidden);
  const int pairs = rot_dim_ / 2;
  for (int t = 0; t < n; ++t) {
    for (int i = 0; i < pairs; ++i) {
      const double angle = double(batch.positions[size_t(t)]) * rope_inv_freq_[size_t(i)];
      act_.rope_cos[size_t(t * pairs + i)] = float(std::cos(angle));
      act_.rope_sin[size_t(t * pairs + i)] = float(std::sin(angle));
    }
  }

  // Physical slot of every cached position of every sequence of the batch (the same for all layers).
  seq_slots_.resize(size_t(batch.n_seqs()));
  for (int s = 0; s < batch.n_seqs(); ++s) {
    const int n_pages = batch.kv_indptr[size_t(s) + 1] - batch.kv_indptr[size_t(s)];
    const int len = n_pages == 0 ? 0 : (n_pages - 1) * kv_.page_size + batch.kv_last_page_len[size_t(s)];
    auto& slots = seq_slots_[size_t(s)];
    slots.resize(size_t(len));
    for (int p = 0; p < len; ++p)
      slots[size_t(p)] = int64_t(batch.kv_indices[size_t(batch.kv_indptr[size_t(s)] + p / kv_.page_size)]) * kv_.page_size +
                         p % kv_.page_size;
  }

  // Memory follows the context in use, not the context the model claims (a file claiming 16M positions made every
  // worker hold scores for all of them): each worker's scores grow to the longest sequence seen so far.
  size_t longest = 0;
  for (const auto& slots : seq_slots_) longest = std::max(longest, slots.size());
  for (auto& scores : score_scratch_) scores.resize(std::max(scores.size(), size_t(c.n_heads / c.n_kv_heads) * longest));

  for (int layer = 0; layer < c.n_layers; ++layer) layer_forward(batch, layer);

  // Final norm and LM head for the tokens that want logits.
  const int n_out = int(batch.logit_tokens.size());
  if (n_out == 0) return;
  for (int i = 0; i < n_out; ++i)
    rmsnorm_rows(act_.residual.data() + int64_t(batch.logit_tokens[size_t(i)]) * c.hidden, weights_->output_norm,
                 act_.normed.data() + int64_t(i) * c.hidden, 1, c.hidden);
  matmul(weights_->lm_head(), act_.normed.data(), n_out, c.hidden, logits, c.vocab, /*accumulate=*/false);
}

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(std::shared_ptr<const ModelWeights> weights, const BackendOptions& options) {
  return std::make_unique<CpuBackend>(std::move(weights), options);
}

}  // namespace cf
