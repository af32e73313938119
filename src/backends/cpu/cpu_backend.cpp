#include "cpu_backend.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/model/deepseek.hpp"  // YaRN frequencies, the MLA softmax scale, expert selection
#include "clusterfusion/runtime/thread_pool.hpp"
#include "kernels.hpp"

namespace cf {

namespace {

using cpu::kRowGroup;
using cpu::PackedMatrix;

// Every matrix of a layer in the kernels' layout.
struct PackedLayer {
  PackedMatrix q, k, v, o, gate, up, down;
  // MLA: q_a, q_b when q_lora_rank > 0, kv_a; W_UK^T [heads][kv_lora][nope] and W_UV [heads][v][kv_lora] in fp32
  // from either file form (split or one kv_b): per head a small matrix applied to one vector, plain loops.
  PackedMatrix q_a, q_b, kv_a;
  std::vector<float> uk_t, uv;
  // MoE: router, stacked experts, shared experts
  PackedMatrix router, gate_exps, up_exps, down_exps, gate_shexp, up_shexp, down_shexp;
};

// W_UK^T and W_UV of every head in fp32 from the layer's kv_b (one matrix or split).
void absorb_matrices(const LayerWeights& l, const ModelConfig& c, PackedLayer& p) {
  const int heads = c.n_heads, r = c.mla.kv_lora_rank, nope = c.mla.qk_nope, v = c.mla.v_head;
  p.uk_t.resize(size_t(heads) * r * nope);
  p.uv.resize(size_t(heads) * v * r);
  if (c.mla.split_kv_b) {
    cpu::pack_matrix(l.attn_k_b).dequantize_rows(0, int64_t(heads) * r, p.uk_t.data());
    cpu::pack_matrix(l.attn_v_b).dequantize_rows(0, int64_t(heads) * v, p.uv.data());
    return;
  }
  const std::vector<float> kv_b = [&] {
    std::vector<float> all(size_t(heads) * (nope + v) * r);
    cpu::pack_matrix(l.attn_kv_b).dequantize_rows(0, int64_t(heads) * (nope + v), all.data());
    return all;
  }();
  for (int h = 0; h < heads; ++h) {
    const float* head = kv_b.data() + size_t(h) * (nope + v) * r;  // nope rows of W_UK, then v rows of W_UV
    for (int n = 0; n < nope; ++n)
      for (int col = 0; col < r; ++col) p.uk_t[(size_t(h) * r + col) * nope + n] = head[size_t(n) * r + col];
    std::copy_n(head + size_t(nope) * r, size_t(v) * r, p.uv.data() + size_t(h) * v * r);
  }
}

struct Activations {
  // Per token rows, [max_tokens, width].
  std::vector<float> residual;  // hidden
  std::vector<float> normed;    // hidden
  std::vector<float> q, k, v;   // q_dim, kv_dim, kv_dim
  std::vector<float> attn;      // q_dim
  std::vector<float> gate, up;  // ffn_hidden
  std::vector<float> rope_cos, rope_sin;  // rot_dim / 2 per token
  // Query and attention rows with each head padded to a multiple of 16 (only when head_dim is not). MLA: the
  // absorbed queries [c_kv part, q_pe, zeros] and the latent attention outputs, head_stride each.
  std::vector<float> q_padded, attn_padded;
  // MLA: q_a (q_lora_rank), the latent rows [c_kv, k_pe] of kv_a (kv_lora + rope)
  std::vector<float> q_a, latent;
  // MoE: router scores [tokens][experts]; one expert's tokens gathered, their gate / up / down; each token's
  // outputs of its chosen experts [tokens][top_k][hidden]; matmul_rows' scratch
  std::vector<float> router, expert_in, expert_gate, expert_up, expert_scratch, chosen_out;
};

int64_t row_groups(int64_t rows) { return (rows + kRowGroup - 1) / kRowGroup; }

cpu::Arithmetic cpu_arithmetic(CpuArithmetic a) {
  switch (a) {
    case CpuArithmetic::F32: return cpu::Arithmetic::F32;
    case CpuArithmetic::Int16: return cpu::Arithmetic::Int16;
    case CpuArithmetic::Int8: return cpu::Arithmetic::Int8;
  }
  return cpu::Arithmetic::F32;
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(std::shared_ptr<const ModelWeights> weights, const BackendOptions& options)
      : weights_(std::move(weights)),
        kernels_(cpu::kernel_table(cpu::resolve_isa(options.cpu_isa))),
        arithmetic_(cpu_arithmetic(options.cpu_arithmetic)),
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
    // MLA caches one latent row per token, read by every head: one "KV head" of kv_lora + rope values
    kv_.n_kv_heads = c.is_mla() ? 1 : c.n_kv_heads;
    kv_.head_dim = c.is_mla() ? int(c.cache_values_per_token()) : c.head_dim;
    kv_.page_size = options.page_size;
    CF_CHECK_INPUT(kv_.page_size >= 1, "cpu backend: page size must be >= 1");
    const int pages_per_seq = (c.max_context + kv_.page_size - 1) / kv_.page_size;
    kv_.n_pages = options.kv_pages > 0 ? options.kv_pages : pages_per_seq * options.max_seqs;
    rot_dim_ = c.rope_dim > 0 ? c.rope_dim : c.head_dim;
    head_stride_ = (kv_.head_dim + 15) / 16 * 16;
    // The cache is allocated uninitialised: the operating system only commits the pages that get written, so a
    // pool sized for the full context costs memory only as far as it is used. Rows: [slot][kv head][head_stride]
    // (MLA: [slot][latent row], no separate values: they are the rows' first kv_lora elements).
    kv_row_ = int64_t(kv_.n_kv_heads) * head_stride_;
    const size_t layer_bytes = size_t(kv_.n_pages) * size_t(kv_.page_size) * size_t(kv_row_) * kv_element_bytes();
    k_cache_.reset(new uint8_t[layer_bytes * size_t(c.n_layers)]);
    if (!c.is_mla()) v_cache_.reset(new uint8_t[layer_bytes * size_t(c.n_layers)]);

    const size_t t = size_t(max_batch_tokens_);
    act_.residual.resize(t * size_t(c.hidden));
    act_.normed.resize(t * size_t(c.hidden));
    const int attn_width = c.is_mla() ? c.n_heads * c.mla.v_head : c.q_dim();
    act_.q.resize(t * size_t(c.q_dim()));
    act_.k.resize(t * size_t(c.kv_dim()));
    act_.v.resize(t * size_t(c.kv_dim()));
    act_.attn.resize(t * size_t(attn_width));
    act_.gate.resize(t * size_t(c.ffn_hidden));
    act_.up.resize(t * size_t(c.ffn_hidden));
    act_.rope_cos.resize(t * size_t(rot_dim_ / 2));
    act_.rope_sin.resize(t * size_t(rot_dim_ / 2));
    if (head_stride_ != c.head_dim || c.is_mla()) {
      act_.q_padded.assign(t * size_t(c.n_heads) * size_t(head_stride_), 0.0f);
      act_.attn_padded.resize(t * size_t(c.n_heads) * size_t(head_stride_));
    }
    int max_cols = std::max({c.hidden, c.q_dim(), c.ffn_hidden, attn_width});
    if (c.is_mla()) {
      mla_ = ref::mla_shape(c);
      act_.q_a.resize(t * size_t(c.mla.q_lora_rank));
      act_.latent.resize(t * size_t(c.cache_values_per_token()));
      max_cols = std::max(max_cols, c.mla.q_lora_rank);
    }
    if (c.moe.n_experts > 0) {
      moe_ = ref::moe_shape(c);
      const int expert_width = std::max(c.moe.expert_ffn, c.moe.shared_ffn()) + 2 * cpu::kRowGroup;
      act_.router.resize(t * size_t(c.moe.n_experts));
      act_.expert_in.resize(t * size_t(c.hidden));
      act_.expert_gate.resize(t * size_t(expert_width));
      act_.expert_up.resize(t * size_t(expert_width));
      act_.expert_scratch.resize(t * size_t(std::max(expert_width, c.hidden + 2 * cpu::kRowGroup)));
      act_.chosen_out.resize(t * size_t(c.moe.top_k) * size_t(c.hidden));
      max_cols = std::max({max_cols, c.moe.expert_ffn, c.moe.shared_ffn()});
    }
    input_.reserve(max_batch_tokens_, max_cols);
    for (int i = 0; i < c.n_layers; ++i) {
      const LayerWeights& l = weights_->layers[size_t(i)];
      PackedLayer p;
      for (auto [from, to] : {std::pair{&l.attn_q, &p.q}, std::pair{&l.attn_k, &p.k}, std::pair{&l.attn_v, &p.v},
                              std::pair{&l.attn_output, &p.o}, std::pair{&l.ffn_gate, &p.gate},
                              std::pair{&l.ffn_up, &p.up}, std::pair{&l.ffn_down, &p.down}})
        *to = cpu::pack_matrix(*from);
      if (c.is_mla()) {
        p.q_a = cpu::pack_matrix(l.attn_q_a);
        p.q_b = cpu::pack_matrix(l.attn_q_b);
        p.kv_a = cpu::pack_matrix(l.attn_kv_a);
        absorb_matrices(l, c, p);
      }
      if (c.layer_spec(i).ffn == FfnKind::Moe) {
        for (auto [from, to] : {std::pair{&l.ffn_router, &p.router}, std::pair{&l.ffn_gate_exps, &p.gate_exps},
                                std::pair{&l.ffn_up_exps, &p.up_exps}, std::pair{&l.ffn_down_exps, &p.down_exps},
                                std::pair{&l.ffn_gate_shexp, &p.gate_shexp}, std::pair{&l.ffn_up_shexp, &p.up_shexp},
                                std::pair{&l.ffn_down_shexp, &p.down_shexp}})
          *to = cpu::pack_matrix(*from);
      }
      layers_.push_back(std::move(p));
    }
    lm_head_ = cpu::pack_matrix(weights_->lm_head());
    if (weights_->token_embd.layout == WeightLayout::CpuPacked) packed_embd_ = cpu::pack_matrix(weights_->token_embd);
    rope_inv_freq_.resize(size_t(rot_dim_ / 2));
    for (int i = 0; i < rot_dim_ / 2; ++i)
      rope_inv_freq_[size_t(i)] = c.is_mla() ? ref::yarn_inv_freq(mla_.rope, i)
                                             : std::pow(double(c.rope_theta), -2.0 * i / double(rot_dim_));
    rope_magnitude_ = c.is_mla() ? ref::yarn_rope_magnitude(mla_.rope) : 1.0;
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
    return a;
  }
  // y[t] (+)= W x[t] for all tokens of `in`, row groups split among the workers (pairs of them for a batch: the
  // kernels' fp32 tiles take two groups at a time where a chunk has them).
  void matmul(const PackedMatrix& w, const cpu::PreparedInput& in, float* y, int64_t y_stride, bool accumulate) {
    pool_.parallel_for(row_groups(w.rows), in.n_tokens > 1 ? 2 : 1, [&](int64_t begin, int64_t end, int) {
      cpu::MatmulArgs a = matmul_args(w, in, y, y_stride, accumulate);
      a.row_begin = begin * kRowGroup;
      a.row_end = std::min(w.rows, end * kRowGroup);
      kernels_.matmul(a);
    });
  }
  // Rows [first, first + count) of w for every token of `in` into y ([tokens][y_stride], column 0 = row first):
  // any row range (an expert's rows need not start at a row group), through a scratch row per token when needed.
  void matmul_rows(const PackedMatrix& w, int64_t first, int64_t count, const cpu::PreparedInput& in, float* y,
                   int64_t y_stride, std::vector<float>& scratch);
  void rmsnorm_rows(const float* x, const std::vector<float>& weight, float* y, int n_tokens, int width,
                    int64_t stride) const;
  void rmsnorm_rows(const float* x, const std::vector<float>& weight, float* y, int n_tokens, int width) const {
    rmsnorm_rows(x, weight, y, n_tokens, width, width);
  }
  void rope_rows(float* x, int n_tokens, int n_heads) const;
  // Adjacent-pair RoPE of `rot_dim_` values at x + t * token_stride + h * head_stride for every token and head.
  void rope_pairs(float* x, int n_tokens, int n_heads, int64_t token_stride, int64_t head_stride) const;
  void attention(const Batch& batch, int layer);
  void layer_forward(const Batch& batch, int layer);
  void gqa_attention(const Batch& batch, int layer);
  void mla_attention(const Batch& batch, int layer);
  void mla_project(const Batch& batch, int layer);
  void mla_absorbed_attention(const Batch& batch, int layer);
  // out [m][hidden] = down(silu(gate x) * up x) for the m rows of act_.expert_in, with the rows of one expert
  // (row0 = its index in the stacked matrices; 0 for a plain FFN) of width ffn.
  void expert_ffn(const PackedMatrix& gate, const PackedMatrix& up, const PackedMatrix& down, int64_t row0, int ffn,
                  int m, float* out);
  void dense_ffn(int n, const PackedLayer& pw);
  void moe_ffn(int n, const PackedLayer& pw);

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
  double rope_magnitude_ = 1.0;  // YaRN's factor on cos / sin
  ref::MlaShape mla_;            // MLA models
  ref::MoeShape moe_;            // MoE models
};

void CpuBackend::rmsnorm_rows(const float* x, const std::vector<float>& weight, float* y, int n_tokens, int width,
                              int64_t stride) const {
  for (int t = 0; t < n_tokens; ++t)
    kernels_.rmsnorm(x + int64_t(t) * stride, weight.data(), weights_->config.rms_eps, y + int64_t(t) * stride, width);
}

void CpuBackend::matmul_rows(const PackedMatrix& w, int64_t first, int64_t count, const cpu::PreparedInput& in,
                             float* y, int64_t y_stride, std::vector<float>& scratch) {
  const int64_t lo = first / kRowGroup * kRowGroup, hi = std::min(w.rows, (first + count + kRowGroup - 1) / kRowGroup * kRowGroup);
  const int64_t span = hi - lo;
  CF_CHECK(scratch.size() >= size_t(in.n_tokens) * size_t(span), "cpu backend: expert scratch too small");
  // A view of the row groups lo .. hi (whole groups of the packed matrix)
  PackedMatrix rows;
  rows.dtype = w.dtype;
  rows.rows = span;
  rows.cols = w.cols;
  rows.block_cols = w.block_cols;
  rows.block_bytes = w.block_bytes;
  rows.blocks = w.blocks;
  rows.data = w.block(lo / kRowGroup, 0);
  pool_.parallel_for(row_groups(span), 1, [&](int64_t begin, int64_t end, int) {
    cpu::MatmulArgs a = matmul_args(rows, in, scratch.data(), span, false);
    a.row_begin = begin * kRowGroup;
    a.row_end = std::min(span, end * kRowGroup);
    kernels_.matmul(a);
  });
  for (int t = 0; t < in.n_tokens; ++t)
    std::copy_n(scratch.data() + int64_t(t) * span + (first - lo), count, y + int64_t(t) * y_stride);
}

void CpuBackend::rope_pairs(float* x, int n_tokens, int n_heads, int64_t token_stride, int64_t head_stride) const {
  const int pairs = rot_dim_ / 2;
  for (int t = 0; t < n_tokens; ++t) {
    const float* cos_row = act_.rope_cos.data() + int64_t(t) * pairs;
    const float* sin_row = act_.rope_sin.data() + int64_t(t) * pairs;
    for (int h = 0; h < n_heads; ++h) {
      float* xh = x + t * token_stride + h * head_stride;
      for (int i = 0; i < pairs; ++i) {
        const float xa = xh[2 * i], xb = xh[2 * i + 1];
        xh[2 * i] = xa * cos_row[i] - xb * sin_row[i];
        xh[2 * i + 1] = xa * sin_row[i] + xb * cos_row[i];
      }
    }
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
  if (c.is_mla())
    mla_attention(batch, layer);
  else
    gqa_attention(batch, layer);
  // FFN block: x = rmsnorm(residual); residual += ffn(x).
  rmsnorm_rows(act_.residual.data(), lw.ffn_norm, act_.normed.data(), n, c.hidden);
  if (c.layer_spec(layer).ffn == FfnKind::Moe)
    moe_ffn(n, pw);
  else
    dense_ffn(n, pw);
}

void CpuBackend::gqa_attention(const Batch& batch, int layer) {
  const ModelConfig& c = weights_->config;
  const LayerWeights& lw = weights_->layers[size_t(layer)];
  const PackedLayer& pw = layers_[size_t(layer)];
  const int n = batch.n_tokens();
  const int64_t hidden = c.hidden, q_dim = c.q_dim(), kv_dim = c.kv_dim();

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

}

// MLA block (docs/mla.md §1), absorbed for every token: q (or q_a -> norm -> q_b) and the latent row [c_kv, k_pe]
// from x; RoPE; the row appended to the cache; per head q_lat = [W_UK^T q_nope, q_pe]; every head attends over the
// same latent rows (the attention kernel as an MQA whose values are the rows themselves: the first kv_lora outputs
// are sum_t p_t c_kv_t); per head W_UV o_lat; residual += Wo (concat heads).
void CpuBackend::mla_attention(const Batch& batch, int layer) {
  const ModelConfig& c = weights_->config;
  const int n = batch.n_tokens(), attn_width = c.n_heads * c.mla.v_head;
  mla_project(batch, layer);
  mla_absorbed_attention(batch, layer);
  const cpu::PreparedInput& in = input_.prepare(act_.attn.data(), n, attn_width, attn_width, arithmetic_, kernels_);
  matmul(layers_[size_t(layer)].o, in, act_.residual.data(), c.hidden, /*accumulate=*/true);
}

// q (heads x [q_nope, q_pe]) and the latent rows [c_kv, k_pe] of the batch's tokens, RoPE applied; the rows appended to
// the cache.
void CpuBackend::mla_project(const Batch& batch, int layer) {
  const ModelConfig& c = weights_->config;
  const LayerWeights& lw = weights_->layers[size_t(layer)];
  const PackedLayer& pw = layers_[size_t(layer)];
  const int n = batch.n_tokens(), heads = c.n_heads, r = c.mla.kv_lora_rank, nope = c.mla.qk_nope;
  const int row = int(c.cache_values_per_token()), q_head = c.head_dim, q_lora = c.mla.q_lora_rank;
  const int64_t hidden = c.hidden, q_dim = c.q_dim();

  rmsnorm_rows(act_.residual.data(), lw.attn_norm, act_.normed.data(), n, c.hidden);
  const cpu::PreparedInput* in = &input_.prepare(act_.normed.data(), n, c.hidden, hidden, arithmetic_, kernels_);
  matmul(pw.kv_a, *in, act_.latent.data(), row, false);
  if (q_lora == 0) {
    matmul(pw.q, *in, act_.q.data(), q_dim, false);
  } else {
    matmul(pw.q_a, *in, act_.q_a.data(), q_lora, false);
    rmsnorm_rows(act_.q_a.data(), lw.q_a_norm, act_.q_a.data(), n, q_lora);
    in = &input_.prepare(act_.q_a.data(), n, q_lora, q_lora, arithmetic_, kernels_);
    matmul(pw.q_b, *in, act_.q.data(), q_dim, false);
  }
  rmsnorm_rows(act_.latent.data(), lw.kv_a_norm, act_.latent.data(), n, r, row);
  rope_pairs(act_.q.data() + nope, n, heads, q_dim, q_head);
  rope_pairs(act_.latent.data() + r, n, 1, row, 0);

  uint8_t* cache = kv_layer(k_cache_, layer);
  std::vector<float> padded_row(size_t(head_stride_), 0.0f);
  for (int t = 0; t < n; ++t) {
    std::copy_n(act_.latent.data() + int64_t(t) * row, row, padded_row.data());
    kernels_.store_kv(padded_row.data(), cache + size_t(batch.kv_slot[size_t(t)]) * size_t(kv_row_) * kv_element_bytes(),
                      kv_type_, head_stride_);
  }
}

// Per token and head: q_lat = [W_UK^T q_nope, q_pe], attention over the sequence's latent rows, W_UV o_lat into attn.
void CpuBackend::mla_absorbed_attention(const Batch& batch, int layer) {
  const ModelConfig& c = weights_->config;
  const PackedLayer& pw = layers_[size_t(layer)];
  const int n = batch.n_tokens(), heads = c.n_heads, r = c.mla.kv_lora_rank, nope = c.mla.qk_nope, v = c.mla.v_head;
  const int q_head = c.head_dim;
  const uint8_t* cache = kv_layer(k_cache_, layer);

  // Absorbed queries, one (token, head) per item: [W_UK^T q_nope (r), q_pe (rope), zeros]
  pool_.parallel_for(int64_t(n) * heads, 1, [&](int64_t begin, int64_t end, int) {
    for (int64_t item = begin; item < end; ++item) {
      const float* q = act_.q.data() + item * q_head;
      const float* uk_t = pw.uk_t.data() + (item % heads) * int64_t(r) * nope;
      float* q_lat = act_.q_padded.data() + item * head_stride_;
      for (int col = 0; col < r; ++col) {
        float acc = 0.0f;
        for (int i = 0; i < nope; ++i) acc += uk_t[int64_t(col) * nope + i] * q[i];
        q_lat[col] = acc;
      }
      std::copy_n(q + nope, rot_dim_, q_lat + r);
    }
  });
  // Latent attention: items of a few heads of one token, enough items for every thread (a decode step of one token
  // splits its heads); up to 8 heads share each row read. A head's result does not depend on the others of its item,
  // so the split does not change the bits.
  const int heads_per_item =
      std::clamp(int((int64_t(n) * heads + 2 * pool_.size() - 1) / (2 * pool_.size())), 1, 8);
  const int head_items = (heads + heads_per_item - 1) / heads_per_item;
  const float scale = mla_.softmax_scale();
  pool_.parallel_for(int64_t(n) * head_items, 1, [&](int64_t begin, int64_t end, int) {
    for (int64_t item = begin; item < end; ++item) {
      const int t = int(item / head_items), first = int(item % head_items) * heads_per_item;
      const int64_t at = (int64_t(t) * heads + first) * head_stride_;
      cpu::AttentionArgs a;
      a.q = act_.q_padded.data() + at;
      a.out = act_.attn_padded.data() + at;
      a.k = cache;
      a.v = cache;
      a.kv_dtype = kv_type_;
      a.slots = seq_slots_[size_t(batch.token_seq[size_t(t)])].data();
      a.row = kv_row_;
      a.len = batch.kv_len[size_t(t)];
      a.group = std::min(heads_per_item, heads - first);
      a.head_dim = head_stride_;
      a.scale = scale;
      kernels_.attend(a);
    }
  });
  // Per head W_UV o_lat
  pool_.parallel_for(int64_t(n) * heads, 1, [&](int64_t begin, int64_t end, int) {
    for (int64_t item = begin; item < end; ++item) {
      const float* o_lat = act_.attn_padded.data() + item * head_stride_;
      const float* uv = pw.uv.data() + (item % heads) * int64_t(v) * r;
      float* out = act_.attn.data() + item * v;
      for (int j = 0; j < v; ++j) {
        float acc = 0.0f;
        for (int col = 0; col < r; ++col) acc += uv[int64_t(j) * r + col] * o_lat[col];
        out[j] = acc;
      }
    }
  });
}

// Dense FFN block of the normed rows: residual += down(silu(gate x) * up x). Each worker owns a range of the
// intermediate features and computes gate, up and the activation for it.
void CpuBackend::dense_ffn(int n, const PackedLayer& pw) {
  const ModelConfig& c = weights_->config;
  const int64_t hidden = c.hidden, ffn = c.ffn_hidden;
  const cpu::PreparedInput* in = &input_.prepare(act_.normed.data(), n, c.hidden, hidden, arithmetic_, kernels_);
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

void CpuBackend::expert_ffn(const PackedMatrix& gate, const PackedMatrix& up, const PackedMatrix& down, int64_t row0,
                            int ffn, int m, float* out) {
  const int hidden = weights_->config.hidden;
  const cpu::PreparedInput& x = input_.prepare(act_.expert_in.data(), m, hidden, hidden, arithmetic_, kernels_);
  matmul_rows(gate, row0 * ffn, ffn, x, act_.expert_gate.data(), ffn, act_.expert_scratch);
  matmul_rows(up, row0 * ffn, ffn, x, act_.expert_up.data(), ffn, act_.expert_scratch);
  for (int t = 0; t < m; ++t)
    kernels_.swiglu(act_.expert_gate.data() + int64_t(t) * ffn, act_.expert_up.data() + int64_t(t) * ffn, ffn);
  const cpu::PreparedInput& act = input_.prepare(act_.expert_gate.data(), m, ffn, ffn, arithmetic_, kernels_);
  matmul_rows(down, row0 * hidden, hidden, act, out, hidden, act_.expert_scratch);
}

// MoE FFN block of the normed rows (docs/mla.md §2): router softmax and top-k per token; then expert by expert, the
// tokens that chose it (each chosen expert's weights read once per step, the others not at all); finally per token
// residual += shared(x) + sum_k g_k expert_k(x), added in the token's own order, so a token's result does not depend
// on the other tokens of the batch.
void CpuBackend::moe_ffn(int n, const PackedLayer& pw) {
  const ModelConfig& c = weights_->config;
  const int hidden = c.hidden, experts = c.moe.n_experts, top_k = c.moe.top_k, width = c.moe.expert_ffn;
  const cpu::PreparedInput* in = &input_.prepare(act_.normed.data(), n, hidden, hidden, arithmetic_, kernels_);
  matmul(pw.router, *in, act_.router.data(), experts, /*accumulate=*/false);
  std::vector<ref::Routing> routes(static_cast<size_t>(n));
  for (int t = 0; t < n; ++t) {
    float* p = act_.router.data() + int64_t(t) * experts;
    ref::softmax(p, p, experts);
    routes[size_t(t)] = ref::select_experts(p, moe_);
  }
  // The shared experts first (all tokens), kept per token until the sum below.
  std::vector<float> shared(size_t(n) * size_t(hidden), 0.0f);
  if (c.moe.n_shared > 0) {
    std::copy_n(act_.normed.data(), size_t(n) * size_t(hidden), act_.expert_in.data());
    expert_ffn(pw.gate_shexp, pw.up_shexp, pw.down_shexp, 0, c.moe.shared_ffn(), n, shared.data());
  }
  std::vector<int> users;  // (token * top_k + k) of the tokens that chose expert e
  for (int e = 0; e < experts; ++e) {
    users.clear();
    for (int t = 0; t < n; ++t)
      for (int k = 0; k < top_k; ++k)
        if (routes[size_t(t)].ids[size_t(k)] == e) users.push_back(t * top_k + k);
    if (users.empty()) continue;
    const int m = int(users.size());
    for (int i = 0; i < m; ++i)
      std::copy_n(act_.normed.data() + int64_t(users[size_t(i)] / top_k) * hidden, hidden,
                  act_.expert_in.data() + int64_t(i) * hidden);
    std::vector<float> out(size_t(m) * size_t(hidden));
    expert_ffn(pw.gate_exps, pw.up_exps, pw.down_exps, e, width, m, out.data());
    for (int i = 0; i < m; ++i)
      std::copy_n(out.data() + int64_t(i) * hidden, hidden, act_.chosen_out.data() + int64_t(users[size_t(i)]) * hidden);
  }
  for (int t = 0; t < n; ++t) {
    float* residual = act_.residual.data() + int64_t(t) * hidden;
    const float* own_shared = shared.data() + int64_t(t) * hidden;
    const ref::Routing& r = routes[size_t(t)];
    for (int i = 0; i < hidden; ++i) {
      float acc = own_shared[i];
      for (int k = 0; k < top_k; ++k)
        acc += r.weights[size_t(k)] * act_.chosen_out[(int64_t(t) * top_k + k) * hidden + i];
      residual[i] += acc;
    }
  }
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
      act_.rope_cos[size_t(t * pairs + i)] = float(std::cos(angle) * rope_magnitude_);
      act_.rope_sin[size_t(t * pairs + i)] = float(std::sin(angle) * rope_magnitude_);
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
