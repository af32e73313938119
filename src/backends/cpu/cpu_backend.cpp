#include "cpu_backend.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/runtime/thread_pool.hpp"
#include "kernels.hpp"

namespace cf {

namespace {

using cpu::kRowGroup;
using cpu::PackedMatrix;

// Every matrix of a layer in the kernels' layout.
struct PackedLayer {
  PackedMatrix q, k, v, o, gate, up, down;
};

struct Activations {
  // Per token rows, [max_tokens, width].
  std::vector<float> residual;  // hidden
  std::vector<float> normed;    // hidden
  std::vector<float> q, k, v;   // q_dim, kv_dim, kv_dim
  std::vector<float> attn;      // q_dim
  std::vector<float> gate, up;  // ffn_hidden
  std::vector<float> rope_cos, rope_sin;  // rot_dim / 2 per token
  // Query and attention rows with each head padded to a multiple of 16 (only when head_dim is not).
  std::vector<float> q_padded, attn_padded;
};

int64_t row_groups(int64_t rows) { return (rows + kRowGroup - 1) / kRowGroup; }

class CpuBackend final : public Backend {
 public:
  CpuBackend(std::shared_ptr<const ModelWeights> weights, const BackendOptions& options)
      : weights_(std::move(weights)),
        kernels_(cpu::kernel_table(cpu::resolve_isa(options.cpu_isa))),
        arithmetic_(options.cpu_arithmetic == CpuArithmetic::Int8 ? cpu::Arithmetic::Int8 : cpu::Arithmetic::F32),
        kv_type_(options.cpu_kv_type),
        pool_(options.threads),
        max_batch_tokens_(options.max_batch_tokens) {
    CF_CHECK(weights_ != nullptr, "cpu backend: no weights");
    const ModelConfig& c = weights_->config;
    CF_CHECK_INPUT(max_batch_tokens_ >= 1, "cpu backend: max batch tokens must be >= 1");
    CF_CHECK_INPUT(options.max_seqs >= 1 && options.max_seqs <= 64, "cpu backend: max_seqs must be in 1..64");
    CF_CHECK_INPUT(kv_type_ == DType::F32 || kv_type_ == DType::F16,
                   "cpu backend: KV cache type " + std::string(dtype_name(kv_type_)) + " (supported: F32, F16)");
    kv_.n_layers = c.n_layers;
    kv_.n_kv_heads = c.n_kv_heads;
    kv_.head_dim = c.head_dim;
    kv_.page_size = options.page_size;
    CF_CHECK_INPUT(kv_.page_size >= 1, "cpu backend: page size must be >= 1");
    const int pages_per_seq = (c.max_context + kv_.page_size - 1) / kv_.page_size;
    kv_.n_pages = options.kv_pages > 0 ? options.kv_pages : pages_per_seq * options.max_seqs;
    rot_dim_ = c.rope_dim > 0 ? c.rope_dim : c.head_dim;
    head_stride_ = (c.head_dim + 15) / 16 * 16;
    // The cache is allocated uninitialised: the operating system only commits the pages that get written, so a
    // pool sized for the full context costs memory only as far as it is used. Rows: [slot][kv head][head_stride].
    kv_row_ = int64_t(c.n_kv_heads) * head_stride_;
    const size_t layer_bytes = size_t(kv_.n_pages) * size_t(kv_.page_size) * size_t(kv_row_) * kv_element_bytes();
    k_cache_.reset(new uint8_t[layer_bytes * size_t(c.n_layers)]);
    v_cache_.reset(new uint8_t[layer_bytes * size_t(c.n_layers)]);

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
    if (head_stride_ != c.head_dim) {
      act_.q_padded.assign(t * size_t(c.n_heads) * size_t(head_stride_), 0.0f);
      act_.attn_padded.resize(t * size_t(c.n_heads) * size_t(head_stride_));
    }
    input_.reserve(max_batch_tokens_, std::max({c.hidden, c.q_dim(), c.ffn_hidden}));
    for (const LayerWeights& l : weights_->layers) {
      layers_.push_back({cpu::pack_matrix(l.attn_q), cpu::pack_matrix(l.attn_k), cpu::pack_matrix(l.attn_v),
                         cpu::pack_matrix(l.attn_output), cpu::pack_matrix(l.ffn_gate), cpu::pack_matrix(l.ffn_up),
                         cpu::pack_matrix(l.ffn_down)});
    }
    lm_head_ = cpu::pack_matrix(weights_->lm_head());
    if (weights_->token_embd.layout == WeightLayout::CpuPacked) packed_embd_ = cpu::pack_matrix(weights_->token_embd);
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
  size_t kv_element_bytes() const { return kv_type_ == DType::F16 ? 2 : 4; }
  uint8_t* kv_layer(const std::unique_ptr<uint8_t[]>& cache, int layer) const {
    return cache.get() + size_t(layer) * size_t(kv_.n_pages) * size_t(kv_.page_size) * size_t(kv_row_) * kv_element_bytes();
  }
  cpu::MatmulArgs matmul_args(const PackedMatrix& w, const cpu::PreparedInput& in, float* y, int64_t y_stride,
                              bool accumulate) const {
    cpu::MatmulArgs a;
    a.w = &w;
    a.in = &in;
    a.y = y;
    a.y_stride = y_stride;
    a.accumulate = accumulate;
    a.arithmetic = arithmetic_;
    return a;
  }
  // y[t] (+)= W x[t] for all tokens of `in`, row groups split among the workers.
  void matmul(const PackedMatrix& w, const cpu::PreparedInput& in, float* y, int64_t y_stride, bool accumulate) {
    pool_.parallel_for(row_groups(w.rows), 1, [&](int64_t begin, int64_t end, int) {
      cpu::MatmulArgs a = matmul_args(w, in, y, y_stride, accumulate);
      a.row_begin = begin * kRowGroup;
      a.row_end = std::min(w.rows, end * kRowGroup);
      kernels_.matmul(a);
    });
  }
  void rmsnorm_rows(const float* x, const std::vector<float>& weight, float* y, int n_tokens, int width) const;
  void rope_rows(float* x, int n_tokens, int n_heads) const;
  void attention(const Batch& batch, int layer);
  void layer_forward(const Batch& batch, int layer);

  std::shared_ptr<const ModelWeights> weights_;
  const cpu::KernelTable& kernels_;
  cpu::Arithmetic arithmetic_;
  DType kv_type_;
  ThreadPool pool_;
  int max_batch_tokens_;
  KvCacheShape kv_;
  int rot_dim_ = 0;
  int head_stride_ = 0;  // head_dim rounded up to 16: the attention kernel's unit
  int64_t kv_row_ = 0;   // cache elements per slot
  std::unique_ptr<uint8_t[]> k_cache_, v_cache_;
  Activations act_;
  cpu::InputBuffer input_;
  std::vector<PackedLayer> layers_;
  PackedMatrix lm_head_;
  PackedMatrix packed_embd_;  // a view, when the embeddings were repacked at load
  std::vector<std::vector<int64_t>> seq_slots_;  // per batch sequence: the physical slot of each cached position
  std::vector<double> rope_inv_freq_;
};

void CpuBackend::rmsnorm_rows(const float* x, const std::vector<float>& weight, float* y, int n_tokens,
                              int width) const {
  for (int t = 0; t < n_tokens; ++t)
    kernels_.rmsnorm(x + int64_t(t) * width, weight.data(), weights_->config.rms_eps, y + int64_t(t) * width, width);
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
  const bool padded = head_stride_ != hd;
  const int n = batch.n_tokens();
  if (padded) {
    for (int64_t r = 0; r < int64_t(n) * c.n_heads; ++r)
      std::copy_n(act_.q.data() + r * hd, hd, act_.q_padded.data() + r * head_stride_);
  }
  const float* q = padded ? act_.q_padded.data() : act_.q.data();
  float* out = padded ? act_.attn_padded.data() : act_.attn.data();
  const uint8_t* k_layer = kv_layer(k_cache_, layer);
  const uint8_t* v_layer = kv_layer(v_cache_, layer);
  const int64_t items = int64_t(n) * c.n_kv_heads;  // one (token, KV head) pair each
  pool_.parallel_for(items, 1, [&](int64_t begin, int64_t end, int) {
    for (int64_t item = begin; item < end; ++item) {
      const int t = int(item / c.n_kv_heads), kv_head = int(item % c.n_kv_heads);
      const int64_t first_head = int64_t(t) * c.n_heads + int64_t(kv_head) * group;
      cpu::AttentionArgs a;
      a.q = q + first_head * head_stride_;
      a.out = out + first_head * head_stride_;
      a.k = k_layer + size_t(kv_head) * size_t(head_stride_) * kv_element_bytes();
      a.v = v_layer + size_t(kv_head) * size_t(head_stride_) * kv_element_bytes();
      a.kv_dtype = kv_type_;
      a.slots = seq_slots_[size_t(batch.token_seq[size_t(t)])].data();
      a.row = kv_row_;
      a.len = batch.kv_len[size_t(t)];
      a.group = group;
      a.head_dim = head_stride_;
      a.scale = 1.0f / std::sqrt(float(hd));
      kernels_.attend(a);
    }
  });
  if (padded) {
    for (int64_t r = 0; r < int64_t(n) * c.n_heads; ++r)
      std::copy_n(act_.attn_padded.data() + r * head_stride_, hd, act_.attn.data() + r * hd);
  }
}

void CpuBackend::layer_forward(const Batch& batch, int layer) {
  const ModelConfig& c = weights_->config;
  const LayerWeights& lw = weights_->layers[size_t(layer)];
  const PackedLayer& pw = layers_[size_t(layer)];
  const int n = batch.n_tokens();
  const int64_t hidden = c.hidden, q_dim = c.q_dim(), kv_dim = c.kv_dim(), ffn = c.ffn_hidden;

  // Attention block: x = rmsnorm(residual); q, k, v; RoPE; append k, v; attention; residual += o(attn).
  rmsnorm_rows(act_.residual.data(), lw.attn_norm, act_.normed.data(), n, c.hidden);
  const cpu::PreparedInput* in = &input_.prepare(act_.normed.data(), n, c.hidden, hidden, arithmetic_, kernels_);
  // One range of row groups over q, then k, then v.
  struct Part {
    const PackedMatrix* w;
    int64_t first_group;
    float* y;
    int64_t width;
  };
  const Part parts[3] = {{&pw.q, 0, act_.q.data(), q_dim},
                         {&pw.k, row_groups(q_dim), act_.k.data(), kv_dim},
                         {&pw.v, row_groups(q_dim) + row_groups(kv_dim), act_.v.data(), kv_dim}};
  pool_.parallel_for(row_groups(q_dim) + 2 * row_groups(kv_dim), 1, [&](int64_t begin, int64_t end, int) {
    for (const Part& part : parts) {
      const int64_t lo = std::max(begin, part.first_group), hi = std::min(end, part.first_group + row_groups(part.width));
      if (lo >= hi) continue;
      cpu::MatmulArgs a = matmul_args(*part.w, *in, part.y, part.width, false);
      a.row_begin = (lo - part.first_group) * kRowGroup;
      a.row_end = std::min(part.width, (hi - part.first_group) * kRowGroup);
      kernels_.matmul(a);
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
  uint8_t* k_layer = kv_layer(k_cache_, layer);
  uint8_t* v_layer = kv_layer(v_cache_, layer);
  std::vector<float> padded_head(size_t(head_stride_), 0.0f);
  for (int t = 0; t < n; ++t) {
    const int64_t slot = batch.kv_slot[size_t(t)];
    for (int h = 0; h < c.n_kv_heads; ++h) {
      const size_t at = (size_t(slot) * size_t(kv_row_) + size_t(h) * size_t(head_stride_)) * kv_element_bytes();
      for (auto [src, dst] : {std::pair{act_.k.data(), k_layer}, std::pair{act_.v.data(), v_layer}}) {
        std::copy_n(src + t * kv_dim + h * c.head_dim, c.head_dim, padded_head.data());
        kernels_.store_kv(padded_head.data(), dst + at, kv_type_, head_stride_);
      }
    }
  }
  attention(batch, layer);
  in = &input_.prepare(act_.attn.data(), n, int(q_dim), q_dim, arithmetic_, kernels_);
  matmul(pw.o, *in, act_.residual.data(), hidden, /*accumulate=*/true);

  // FFN block: x = rmsnorm(residual); residual += down(silu(gate x) * up x). Each worker owns a range of the
  // intermediate features and computes gate, up and the activation for it.
  rmsnorm_rows(act_.residual.data(), lw.ffn_norm, act_.normed.data(), n, c.hidden);
  in = &input_.prepare(act_.normed.data(), n, c.hidden, hidden, arithmetic_, kernels_);
  pool_.parallel_for(row_groups(ffn), 1, [&](int64_t begin, int64_t end, int) {
    const int64_t lo = begin * kRowGroup, hi = std::min(ffn, end * kRowGroup);
    for (auto [w, y] : {std::pair{&pw.gate, act_.gate.data()}, std::pair{&pw.up, act_.up.data()}}) {
      cpu::MatmulArgs a = matmul_args(*w, *in, y, ffn, false);
      a.row_begin = lo;
      a.row_end = hi;
      kernels_.matmul(a);
    }
    for (int t = 0; t < n; ++t) kernels_.swiglu(act_.gate.data() + t * ffn + lo, act_.up.data() + t * ffn + lo, int(hi - lo));
  });
  in = &input_.prepare(act_.gate.data(), n, int(ffn), ffn, arithmetic_, kernels_);
  matmul(pw.down, *in, act_.residual.data(), hidden, /*accumulate=*/true);
}

void CpuBackend::forward(const Batch& batch, float* logits) {
  const ModelConfig& c = weights_->config;
  CF_CHECK(batch.n_tokens() >= 1 && batch.n_tokens() <= max_batch_tokens_,
           "cpu backend: batch of " + std::to_string(batch.n_tokens()) + " tokens (limit " +
               std::to_string(max_batch_tokens_) + ")");
  batch.validate(kv_, c.vocab);
  const int n = batch.n_tokens();

  // Embeddings, and the RoPE rotation of every token's position (shared by all layers).
  for (int t = 0; t < n; ++t) {
    float* row = act_.residual.data() + int64_t(t) * c.hidden;
    if (packed_embd_.data) {
      packed_embd_.dequantize_rows(batch.tokens[size_t(t)], 1, row);
    } else {
      weights_->token_embd.dequantize_rows(batch.tokens[size_t(t)], 1, row);
    }
  }
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

  for (int layer = 0; layer < c.n_layers; ++layer) layer_forward(batch, layer);

  // Final norm and LM head for the tokens that want logits.
  const int n_out = int(batch.logit_tokens.size());
  if (n_out == 0) return;
  for (int i = 0; i < n_out; ++i)
    rmsnorm_rows(act_.residual.data() + int64_t(batch.logit_tokens[size_t(i)]) * c.hidden, weights_->output_norm,
                 act_.normed.data() + int64_t(i) * c.hidden, 1, c.hidden);
  const cpu::PreparedInput& in = input_.prepare(act_.normed.data(), n_out, c.hidden, c.hidden, arithmetic_, kernels_);
  matmul(lm_head_, in, logits, c.vocab, /*accumulate=*/false);
}

}  // namespace

void repack_for_cpu(WeightMatrix& m) { cpu::repack_in_place(m); }

std::unique_ptr<Backend> make_cpu_backend(std::shared_ptr<const ModelWeights> weights, const BackendOptions& options) {
  return std::make_unique<CpuBackend>(std::move(weights), options);
}

}  // namespace cf
