#include "cuda/gpu_backend.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <utility>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/cuda/check.hpp"
#include "clusterfusion/cuda/device.hpp"
#include "clusterfusion/cuda/graph.hpp"
#include "clusterfusion/cuda/stream.hpp"
#include "common/step_plan.hpp"
#include "cuda/device_kernels.hpp"
#include "clusterfusion/backends/cuda_unfused/deepseek.hpp"
#include "clusterfusion/backends/cuda_unfused/ops.hpp"
#include "clusterfusion/model/deepseek.hpp"  // moe_block_shape
#include "fused/fused_decoder.hpp"

namespace cf {

namespace {

namespace layout = device_layout;

// Hopper (sm_90a) is what cf_kernels and cf_cuda_unfused are compiled for.
constexpr int kRequiredComputeMajor = 9;

// Weights below this many elements are filled with one seed; the seeds of consecutive tensors differ.
constexpr uint64_t kSeedStride = 1000003;

// Random weight ranges (ModelWeights::random): matrices +-sqrt(3 / in), norms 1 +- 0.1, embeddings +-1.
constexpr float kNormCenter = 1.0f, kNormSpread = 0.1f, kEmbeddingRange = 1.0f;

float matrix_range(int in) { return std::sqrt(3.0f / float(in)); }

// Early, clear rejection of shapes neither GPU path runs (before a long upload); the kernels' plans check the rest.
void check_supported(const ModelConfig& c, const char* backend) {
  const std::string where = std::string("--backend ") + backend + ": ";
  if (c.is_mla() || c.moe.n_experts > 0) return;  // the MLA / MoE plans and workspaces check their shapes
  if (c.head_dim != 64 && c.head_dim != 128)
    throw InputError(where + "head_dim " + std::to_string(c.head_dim) + " is not supported (64 or 128)");
  if (c.hidden % 32 != 0)
    throw InputError(where + "hidden " + std::to_string(c.hidden) + " is not a multiple of 32");
}

}  // namespace

std::string cuda_backend_unavailable_reason() {
  const std::string why = cuda::gpu_unavailable_reason();
  if (!why.empty()) return "no CUDA GPU found (" + why + ")";
  try {
    const cuda::DeviceInfo info = cuda::query_device();
    if (info.cc_major != kRequiredComputeMajor)
      return "needs a Hopper GPU (compute capability 9.x; this build targets sm_90a), found " + info.name +
             " (compute capability " + info.compute_capability() + ")";
  } catch (const std::exception& e) {
    return std::string("cannot query the GPU: ") + e.what();
  }
  return {};
}

std::unique_ptr<Backend> make_cuda_backend(CudaMode mode, std::shared_ptr<const ModelWeights> weights,
                                           const BackendOptions& options) {
  CF_CHECK(weights != nullptr, "make_cuda_backend: no weights");
  check_supported(weights->config, gpu::mode_name(mode));
  const gpu::GpuOptions g = gpu::GpuOptions::from(options);
  auto model = gpu::DeviceModel::upload(*weights);
  auto kv = std::make_shared<gpu::DeviceKvCache>(g.kv_shape(weights->config), weights->config.is_mla());
  return std::make_unique<gpu::GpuBackend>(mode, std::move(model), std::move(kv), g);
}

namespace gpu {

const char* mode_name(CudaMode mode) { return mode == CudaMode::Fused ? "cuda" : "cuda-unfused"; }

// ---- DeviceModel --------------------------------------------------------------------------------------------------

std::shared_ptr<DeviceModel> DeviceModel::allocate(const ModelConfig& c, Storage storage, bool with_bias,
                                                   bool separate_output) {
  c.validate("DeviceModel");
  CF_CHECK_INPUT(!c.is_mla() && c.moe.n_experts == 0,
                 "DeviceModel::random: " + c.arch + " models (MLA, MoE) have no random device weights yet");
  std::shared_ptr<DeviceModel> m(new DeviceModel());
  m->config_ = c;
  m->storage_ = storage;
  const size_t hidden = size_t(c.hidden), qkv = size_t(c.q_dim() + 2 * c.kv_dim()), ffn = size_t(c.ffn_hidden);
  using Buffer = dev::DeviceBuffer<uint16_t>;
  for (int l = 0; l < c.n_layers; ++l) {
    Layer layer;
    layer.attn_norm = Buffer(hidden, "attn_norm");
    layer.w_qkv = Buffer(qkv * hidden, "w_qkv");
    if (with_bias) layer.b_qkv = Buffer(qkv, "b_qkv");
    layer.w_o = Buffer(hidden * size_t(c.q_dim()), "w_o");
    layer.ffn_norm = Buffer(hidden, "ffn_norm");
    layer.w_gate_up = Buffer(2 * ffn * hidden, "w_gate_up");
    layer.w_down = Buffer(hidden * ffn, "w_down");
    m->layers_.push_back(std::move(layer));
  }
  m->token_embd_ = Buffer(size_t(c.vocab) * hidden, "token_embd");
  m->output_norm_ = Buffer(hidden, "output_norm");
  if (separate_output) m->output_ = Buffer(size_t(c.vocab) * hidden, "output (LM head)");
  return m;
}

std::shared_ptr<const DeviceModel> DeviceModel::upload(const ModelWeights& w) {
  const Storage s = layout::choose_storage(w);
  const ModelConfig& c = w.config;
  c.validate("DeviceModel");
  std::shared_ptr<DeviceModel> m(new DeviceModel());
  m->config_ = c;
  m->storage_ = s;
  for (int l = 0; l < c.n_layers; ++l) m->layers_.push_back(Layer::upload(w, l, s));
  m->token_embd_ = dev::to_device(layout::convert_stacked({&w.token_embd}, s), "token_embd");
  m->output_norm_ = dev::to_device(layout::convert_vector(w.output_norm, s), "output_norm");
  if (!w.output.empty()) m->output_ = dev::to_device(layout::convert_stacked({&w.output}, s), "output (LM head)");
  return m;
}

std::shared_ptr<const DeviceModel> DeviceModel::random(const ModelConfig& c, Storage s, uint64_t seed) {
  auto m = allocate(c, s, c.qkv_bias, /*separate_output=*/!c.tied_embeddings);
  uint64_t next = seed;
  auto fill = [&](dev::DeviceBuffer<uint16_t>& b, float lo, float hi) {
    next += kSeedStride;
    fill_uniform(b.data(), b.size(), s, next, lo, hi, nullptr);
  };
  for (Layer& l : m->layers_) {
    fill(l.attn_norm, kNormCenter - kNormSpread, kNormCenter + kNormSpread);
    fill(l.w_qkv, -matrix_range(c.hidden), matrix_range(c.hidden));
    if (!l.b_qkv.empty()) fill(l.b_qkv, -kNormSpread, kNormSpread);
    fill(l.w_o, -matrix_range(c.q_dim()), matrix_range(c.q_dim()));
    fill(l.ffn_norm, kNormCenter - kNormSpread, kNormCenter + kNormSpread);
    fill(l.w_gate_up, -matrix_range(c.hidden), matrix_range(c.hidden));
    fill(l.w_down, -matrix_range(c.ffn_hidden), matrix_range(c.ffn_hidden));
  }
  fill(m->token_embd_, -kEmbeddingRange, kEmbeddingRange);
  fill(m->output_norm_, kNormCenter - kNormSpread, kNormCenter + kNormSpread);
  if (!m->output_.empty()) fill(m->output_, -matrix_range(c.hidden), matrix_range(c.hidden));
  CF_CUDA_CHECK(cudaDeviceSynchronize());
  return m;
}

size_t DeviceModel::step_weight_bytes() const {
  size_t bytes = output_norm_.bytes() + size_t(config_.vocab) * size_t(config_.hidden) * sizeof(uint16_t);
  const double chosen = config_.moe.n_experts > 0 ? double(config_.moe.top_k) / config_.moe.n_experts : 1.0;
  for (const Layer& l : layers_) bytes += l.bytes(chosen);
  return bytes;
}

size_t DeviceModel::device_bytes() const {
  size_t bytes = token_embd_.bytes() + output_norm_.bytes() + output_.bytes();
  for (const Layer& l : layers_) bytes += l.bytes();
  return bytes;
}

// ---- DeviceKvCache ------------------------------------------------------------------------------------------------

DeviceKvCache::DeviceKvCache(const KvCacheShape& shape, bool latent)
    : shape_(shape),
      k_(size_t(shape.elements_per_layer()) * size_t(shape.n_layers), latent ? "latent cache" : "KV cache (K)"),
      v_(latent ? 0 : size_t(shape.elements_per_layer()) * size_t(shape.n_layers), "KV cache (V)") {
  CF_CHECK_INPUT(shape.n_layers >= 1 && shape.n_pages >= 1 && shape.page_size >= 1, "DeviceKvCache: empty shape");
}

void* DeviceKvCache::k_layer(int layer) const {
  return const_cast<uint16_t*>(k_.data()) + size_t(layer) * size_t(shape_.elements_per_layer());
}
void* DeviceKvCache::v_layer(int layer) const {
  return const_cast<uint16_t*>(v_.data()) + size_t(layer) * size_t(shape_.elements_per_layer());
}

void DeviceKvCache::fill_random(Storage storage, uint64_t seed, cudaStream_t stream) {
  fill_uniform(k_.data(), k_.size(), storage, seed, -1.0f, 1.0f, stream);
  fill_uniform(v_.data(), v_.size(), storage, seed + kSeedStride, -1.0f, 1.0f, stream);
}

// ---- options ------------------------------------------------------------------------------------------------------

GpuOptions GpuOptions::from(const BackendOptions& o) {
  GpuOptions g;
  g.page_size = o.page_size;
  g.kv_pages = o.kv_pages;
  g.max_seqs = o.max_seqs;
  g.max_batch_tokens = o.max_batch_tokens;
  return g;
}

KvCacheShape GpuOptions::kv_shape(const ModelConfig& c) const {
  CF_CHECK_INPUT(page_size >= 1, "GPU backend: page size must be >= 1");
  CF_CHECK_INPUT(max_seqs >= 1 && max_seqs <= kMaxDecodeBatch,
                 "GPU backend: max_seqs " + std::to_string(max_seqs) + " outside [1, 16]");
  KvCacheShape kv;
  kv.n_layers = c.n_layers;
  // MLA: one latent row [c_kv, k_pe] per token and layer (one "KV head"), as the cpu backend's
  kv.n_kv_heads = c.is_mla() ? 1 : c.n_kv_heads;
  kv.head_dim = c.is_mla() ? int(c.cache_values_per_token()) : c.head_dim;
  kv.page_size = page_size;
  kv.n_pages = kv_pages > 0 ? kv_pages : (c.max_context + page_size - 1) / page_size * max_seqs;
  return kv;
}

// ---- the backend --------------------------------------------------------------------------------------------------

namespace {

// Page-locked host memory (fast, truly asynchronous copies).
template <typename T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t count) : size_(count) {
    if (count > 0) CF_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&data_), count * sizeof(T)));
  }
  ~PinnedBuffer() {
    if (data_) (void)cudaFreeHost(data_);
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    return *this;
  }
  T* data() { return data_; }
  size_t size() const { return size_; }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};

// Where each decode input lives in the int32 step buffer (offsets in elements, multiples of 16 = 64 bytes).
constexpr size_t kTokensAt = 0;
constexpr size_t kPositionsAt = 16;
constexpr size_t kIndptrAt = 32;      // 17 entries
constexpr size_t kLastPageAt = 64;
constexpr size_t kIndicesAt = 80;     // then up to n_pages entries
static_assert(kMaxDecodeBatch <= 16, "the decode step buffer holds 16 sequences");

size_t round16(size_t n) { return (n + 15) / 16 * 16; }

}  // namespace

struct GpuBackend::Impl {
  CudaMode mode;
  std::shared_ptr<const DeviceModel> model;
  std::shared_ptr<DeviceKvCache> kv;
  GpuOptions options;
  const ModelConfig& config;
  ref::DecoderShape shape;
  cuda::Stream stream;
  int max_rows = 0;  // rows of the activation buffers
  dev::DeviceBuffer<uint16_t> hidden[2], residual, head_hidden, head_residual;
  dev::DeviceBuffer<float> logits;
  dev::DeviceBuffer<int32_t> greedy;  // the fused LM head's argmax (unused by forward())
  dev::DeviceBuffer<float> cos_sin;
  int max_positions = 0;

  dev::DeviceBuffer<int32_t> decode_ints;
  PinnedBuffer<int32_t> decode_ints_host;
  PinnedBuffer<float> logits_host;  // [max_seqs, vocab]

  // Prefill: tokens, positions, token_seq, kv_len, head rows (max_batch_tokens each), then indptr, last page, indices.
  size_t prefill_indptr_at = 0, prefill_last_page_at = 0, prefill_indices_at = 0;
  dev::DeviceBuffer<int32_t> prefill_ints;
  PinnedBuffer<int32_t> prefill_ints_host;

  fused::ModelPointers pointers;
  struct DecodeGraph {
    std::unique_ptr<fused::FusedDecoder> fused;
    cuda::Graph graph;
    bool status_checked = false;
  };
  std::map<int, DecodeGraph> graphs;
  std::unique_ptr<cuda_unfused::Workspace> decode_workspace, prefill_workspace;
  // DeepSeek-V2 layers on the cuda-unfused path (decode only: the MLA block takes one token per sequence).
  MlaBlockShape mla_shape;
  MoeBlockShape moe_shape;
  std::unique_ptr<cuda_unfused::MlaWorkspace> mla_workspace;
  std::unique_ptr<cuda_unfused::MoeWorkspace> moe_workspace;

  Impl(CudaMode m, std::shared_ptr<const DeviceModel> dm, std::shared_ptr<DeviceKvCache> cache, const GpuOptions& o)
      : mode(m), model(std::move(dm)), kv(std::move(cache)), options(o), config(model->config()),
        shape(unfused_shape(model->config())) {}

  // The shape of the cuda-unfused Workspace and of its blocks: the model's; for MLA models no attention heads (the
  // workspace then serves the dense FFN layers and the LM head; MlaWorkspace holds the attention's scratch).
  static ref::DecoderShape unfused_shape(const ModelConfig& c) {
    ref::DecoderShape s = c.decoder_shape();
    if (c.is_mla()) s.n_heads = s.n_kv_heads = 0;
    return s;
  }

  dev::DType dev_dtype() const { return model->storage() == Storage::F16 ? dev::DType::F16 : dev::DType::BF16; }
  cuda_unfused::DType unfused_dtype() const {
    return model->storage() == Storage::F16 ? cuda_unfused::DType::F16 : cuda_unfused::DType::BF16;
  }
  int n_pages() const { return kv->shape().n_pages; }
  int page_size() const { return kv->shape().page_size; }

  // ---- decode ----

  void stage_decode(const Batch& batch, const DecodeStep& step) {
    int32_t* h = decode_ints_host.data();
    const int n = step.batch();
    for (int i = 0; i < n; ++i) {
      h[kTokensAt + size_t(i)] = batch.tokens[size_t(step.token_of_row[size_t(i)])];
      h[kPositionsAt + size_t(i)] = step.positions[size_t(i)];
      h[kLastPageAt + size_t(i)] = step.kv_last_page_len[size_t(i)];
    }
    std::copy(step.kv_indptr.begin(), step.kv_indptr.end(), h + kIndptrAt);
    std::copy(step.kv_indices.begin(), step.kv_indices.end(), h + kIndicesAt);
    CF_CUDA_CHECK(cudaMemcpyAsync(decode_ints.data(), h, (kIndicesAt + step.kv_indices.size()) * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, stream));
  }

  fused::StepBuffers fused_buffers() {
    fused::StepBuffers b;
    b.hidden[0] = hidden[0].data();
    b.hidden[1] = hidden[1].data();
    b.residual = residual.data();
    b.positions = decode_ints.data() + kPositionsAt;
    b.kv_indptr = decode_ints.data() + kIndptrAt;
    b.kv_indices = decode_ints.data() + kIndicesAt;
    b.kv_last_page_len = decode_ints.data() + kLastPageAt;
    b.n_indices = n_pages();
    b.logits = logits.data();
    b.tokens = greedy.data();
    return b;
  }

  // Every layer through the cuda-unfused blocks over `rows` tokens from hidden[0]; the last FFN output ends in
  // hidden[0] again (two swaps per layer). MLA layers take one token per sequence (decode steps only).
  void unfused_layers(int rows, const int32_t* positions, const cuda_unfused::KvCacheArgs& kv_args,
                      cuda_unfused::Workspace& ws, cudaStream_t s) {
    int in = 0;
    for (int l = 0; l < config.n_layers; ++l) {
      const LayerSpec spec = config.layer_spec(l);
      const void* block_residual = l == 0 ? nullptr : residual.data();
      if (spec.attention == AttentionKind::Mla)
        unfused_mla(l, rows, positions, kv_args, block_residual, in, s);
      else
        unfused_attention(l, rows, positions, kv_args, block_residual, in, ws, s);
      in = 1 - in;
      if (spec.ffn == FfnKind::Moe)
        unfused_moe(l, rows, in, s);
      else
        unfused_ffn(l, rows, in, ws, s);
      in = 1 - in;
    }
  }

  // The activation arguments every cuda-unfused block shares: reads hidden[in] (+ `block_residual`), writes
  // hidden[1 - in] and the residual.
  template <typename Params>
  Params unfused_block_io(int rows, int in, const void* block_residual) {
    Params p;
    p.dtype = unfused_dtype();
    p.batch = rows;
    p.hidden = hidden[in].data();
    p.residual = block_residual;
    p.residual_out = residual.data();
    p.out = hidden[1 - in].data();
    return p;
  }

  void unfused_attention(int l, int rows, const int32_t* positions, const cuda_unfused::KvCacheArgs& kv_args,
                         const void* block_residual, int in, cuda_unfused::Workspace& ws, cudaStream_t s) {
    const DeviceModel::Layer& w = model->layers()[size_t(l)];
    auto a = unfused_block_io<cuda_unfused::AttentionBlockParams>(rows, in, block_residual);
    a.shape = shape;
    a.norm = w.attn_norm.data();
    a.w_qkv = w.w_qkv.data();
    a.b_qkv = w.b_qkv.empty() ? nullptr : w.b_qkv.data();
    a.w_o = w.w_o.data();
    a.positions = positions;
    a.rope = {cos_sin.data(), max_positions, shape.rot_dim};
    a.kv = kv_args;
    a.kv.k_pages = kv->k_layer(l);
    a.kv.v_pages = kv->v_layer(l);
    cuda_unfused::attention_block(a, ws, s);
  }

  // The MLA block over the latent pool of layer l; the page table is the decode step's (token b = sequence b).
  void unfused_mla(int l, int rows, const int32_t* positions, const cuda_unfused::KvCacheArgs& kv_args,
                   const void* block_residual, int in, cudaStream_t s) {
    const DeviceModel::Layer& w = model->layers()[size_t(l)];
    auto or_null = [](const dev::DeviceBuffer<uint16_t>& b) -> const void* { return b.empty() ? nullptr : b.data(); };
    auto p = unfused_block_io<cuda_unfused::MlaBlockParams>(rows, in, block_residual);
    p.shape = mla_shape;
    p.weights.norm = w.attn_norm.data();
    p.weights.w_q = or_null(w.w_q);
    p.weights.w_q_a = or_null(w.w_q_a);
    p.weights.q_a_norm = or_null(w.q_a_norm);
    p.weights.w_q_b = or_null(w.w_q_b);
    p.weights.w_kv_a = w.w_kv_a.data();
    p.weights.kv_a_norm = w.kv_a_norm.data();
    p.weights.w_uk = w.w_uk.data();
    p.weights.w_uv = w.w_uv.data();
    p.weights.w_o = w.w_o.data();
    p.positions = positions;
    p.rope = {cos_sin.data(), max_positions, mla_shape.qk_rope};
    p.cache.pages = kv->k_layer(l);
    p.cache.n_pages = kv_args.n_pages;
    p.cache.page_size = kv_args.page_size;
    p.cache.kv_indptr = kv_args.kv_indptr;
    p.cache.kv_indices = kv_args.kv_indices;
    p.cache.kv_last_page_len = kv_args.kv_last_page_len;
    p.cache.n_indices = kv_args.n_indices;
    cuda_unfused::mla_block(p, *mla_workspace, s);
  }

  void unfused_ffn(int l, int rows, int in, cuda_unfused::Workspace& ws, cudaStream_t s) {
    const DeviceModel::Layer& w = model->layers()[size_t(l)];
    auto f = unfused_block_io<cuda_unfused::FfnBlockParams>(rows, in, residual.data());
    f.shape = shape;
    f.norm = w.ffn_norm.data();
    f.w_gate_up = w.w_gate_up.data();
    f.w_down = w.w_down.data();
    cuda_unfused::ffn_block(f, ws, s);
  }

  void unfused_moe(int l, int rows, int in, cudaStream_t s) {
    const DeviceModel::Layer& w = model->layers()[size_t(l)];
    auto p = unfused_block_io<cuda_unfused::MoeBlockParams>(rows, in, residual.data());
    p.shape = moe_shape;
    p.weights.norm = w.ffn_norm.data();
    p.weights.router = w.router.data();
    p.weights.w_gate_up = w.w_gate_up.data();
    p.weights.w_down = w.w_down.data();
    p.weights.shared_gate_up = w.shared_gate_up.empty() ? nullptr : w.shared_gate_up.data();
    p.weights.shared_down = w.shared_down.empty() ? nullptr : w.shared_down.data();
    cuda_unfused::moe_block(p, *moe_workspace, s);
  }

  void unfused_lm_head(int rows, const void* head_in, const void* head_res, cuda_unfused::Workspace& ws,
                       cudaStream_t s) {
    cuda_unfused::LmHeadParams p;
    p.dtype = unfused_dtype();
    p.shape = shape;
    p.batch = rows;
    p.vocab = config.vocab;
    p.hidden = head_in;
    p.residual = head_res;
    p.norm = model->output_norm();
    p.w_out = model->lm_head();
    p.logits = logits.data();
    cuda_unfused::lm_head(p, ws, s);
  }

  cuda_unfused::KvCacheArgs decode_kv_args(int rows) {
    cuda_unfused::KvCacheArgs k;
    k.n_pages = n_pages();
    k.page_size = page_size();
    k.kv_indptr = decode_ints.data() + kIndptrAt;
    k.kv_indices = decode_ints.data() + kIndicesAt;
    k.kv_last_page_len = decode_ints.data() + kLastPageAt;
    k.n_seqs = rows;
    k.n_indices = n_pages();
    return k;
  }

  // The whole decode step of `rows` sequences, enqueued on s (what the graph holds).
  void enqueue_decode(int rows, DecodeGraph& g, cudaStream_t s) {
    gather_rows(model->token_embd(), decode_ints.data() + kTokensAt, rows, config.hidden, hidden[0].data(), s);
    if (mode == CudaMode::Fused) {
      g.fused->run(rows, fused_buffers(), s);
    } else {
      unfused_layers(rows, decode_ints.data() + kPositionsAt, decode_kv_args(rows), *decode_workspace, s);
      unfused_lm_head(rows, hidden[0].data(), residual.data(), *decode_workspace, s);
    }
  }

  DecodeGraph& graph_for(int rows) {
    auto it = graphs.find(rows);
    if (it != graphs.end()) return it->second;
    DecodeGraph g;
    if (mode == CudaMode::Fused) {
      g.fused = std::make_unique<fused::FusedDecoder>(config, dev_dtype(), pointers, kv->shape(), rows);
    } else {
      // bound before the capture: no cuBLAS setup inside it
      decode_workspace->cublas().set_stream(stream);
      if (mla_workspace) mla_workspace->cublas().set_stream(stream);
      if (moe_workspace) moe_workspace->cublas().set_stream(stream);
    }
    if (options.use_graphs) {
      // One eager run of the staged step first: every kernel and cuBLAS algorithm is loaded and chosen outside the
      // capture. It computes exactly what the first replay recomputes (the same k, v to the same slots).
      enqueue_decode(rows, g, stream);
      g.graph = cuda::Graph::capture(stream, [&](cudaStream_t s) { enqueue_decode(rows, g, s); });
    }
    return graphs.emplace(rows, std::move(g)).first->second;
  }

  void replay(int rows) {
    DecodeGraph& g = graph_for(rows);
    if (options.use_graphs)
      g.graph.replay(stream);
    else
      enqueue_decode(rows, g, stream);
    if (!g.status_checked) {  // the first replay of every graph: device-side checks and timeouts surface at once
      g.status_checked = true;
      check_status();
    }
  }

  void check_status() {
    CF_CUDA_CHECK(cudaStreamSynchronize(stream));
    for (auto& [rows, g] : graphs)
      if (g.fused) g.fused->check_status(stream.get());
    if (decode_workspace) decode_workspace->check_status(stream);
    if (prefill_workspace) prefill_workspace->check_status(stream);
    if (mla_workspace) mla_workspace->check_status(stream);
    if (moe_workspace) moe_workspace->check_status(stream);
  }

  // Runs one decode step and copies the logits rows it owes into `out`.
  void decode_step(const Batch& batch, const DecodeStep& step, float* out) {
    const int rows = step.batch();
    stage_decode(batch, step);
    replay(rows);
    bool any = false;
    for (const auto& r : step.logit_rows) any = any || !r.empty();
    if (!any) {
      CF_CUDA_CHECK(cudaStreamSynchronize(stream));
      return;
    }
    const size_t vocab = size_t(config.vocab);
    CF_CUDA_CHECK(cudaMemcpyAsync(logits_host.data(), logits.data(), size_t(rows) * vocab * sizeof(float),
                                  cudaMemcpyDeviceToHost, stream));
    CF_CUDA_CHECK(cudaStreamSynchronize(stream));
    for (int i = 0; i < rows; ++i)
      for (size_t out_row : step.logit_rows[size_t(i)])
        std::memcpy(out + out_row * vocab, logits_host.data() + size_t(i) * vocab, vocab * sizeof(float));
  }

  // ---- prefill ----

  void prefill(const Batch& batch, float* out) {
    const int n = batch.n_tokens(), n_out = int(batch.logit_tokens.size());
    const size_t T = size_t(options.max_batch_tokens);
    if (!prefill_workspace) prefill_workspace = std::make_unique<cuda_unfused::Workspace>(shape, options.max_batch_tokens);
    int32_t* h = prefill_ints_host.data();
    std::copy(batch.tokens.begin(), batch.tokens.end(), h);
    std::copy(batch.positions.begin(), batch.positions.end(), h + T);
    std::copy(batch.token_seq.begin(), batch.token_seq.end(), h + 2 * T);
    std::copy(batch.kv_len.begin(), batch.kv_len.end(), h + 3 * T);
    std::copy(batch.logit_tokens.begin(), batch.logit_tokens.end(), h + 4 * T);
    std::copy(batch.kv_indptr.begin(), batch.kv_indptr.end(), h + prefill_indptr_at);
    std::copy(batch.kv_last_page_len.begin(), batch.kv_last_page_len.end(), h + prefill_last_page_at);
    std::copy(batch.kv_indices.begin(), batch.kv_indices.end(), h + prefill_indices_at);
    const int32_t* d = prefill_ints.data();
    CF_CUDA_CHECK(cudaMemcpyAsync(prefill_ints.data(), h, (prefill_indices_at + batch.kv_indices.size()) * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, stream));
    gather_rows(model->token_embd(), d, n, config.hidden, hidden[0].data(), stream);
    cuda_unfused::KvCacheArgs k;
    k.n_pages = n_pages();
    k.page_size = page_size();
    k.kv_indptr = d + prefill_indptr_at;
    k.kv_indices = d + prefill_indices_at;
    k.kv_last_page_len = d + prefill_last_page_at;
    k.n_seqs = batch.n_seqs();
    k.n_indices = std::max<int>(1, int(batch.kv_indices.size()));
    k.token_seq = d + 2 * T;
    k.token_kv_len = d + 3 * T;
    unfused_layers(n, d + T, k, *prefill_workspace, stream);
    if (n_out > 0) {
      gather_rows(hidden[0].data(), d + 4 * T, n_out, config.hidden, head_hidden.data(), stream);
      gather_rows(residual.data(), d + 4 * T, n_out, config.hidden, head_residual.data(), stream);
      unfused_lm_head(n_out, head_hidden.data(), head_residual.data(), *prefill_workspace, stream);
      CF_CUDA_CHECK(cudaMemcpyAsync(out, logits.data(), size_t(n_out) * size_t(config.vocab) * sizeof(float),
                                    cudaMemcpyDeviceToHost, stream));
    }
    CF_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
};

GpuBackend::GpuBackend(CudaMode mode, std::shared_ptr<const DeviceModel> model, std::shared_ptr<DeviceKvCache> kv,
                       const GpuOptions& options) {
  CF_CHECK(model != nullptr && kv != nullptr, "GpuBackend: no model or KV cache");
  const ModelConfig& c = model->config();
  check_supported(c, mode_name(mode));
  const KvCacheShape want_kv = options.kv_shape(c);
  CF_CHECK_INPUT(kv->shape().n_layers == c.n_layers && kv->shape().n_kv_heads == want_kv.n_kv_heads &&
                     kv->shape().head_dim == want_kv.head_dim,
                 "GpuBackend: the KV cache's shape does not match the model");
  CF_CHECK_INPUT(options.max_seqs >= 1 && options.max_seqs <= kMaxDecodeBatch,
                 "GpuBackend: max_seqs " + std::to_string(options.max_seqs) + " outside [1, 16]");
  CF_CHECK_INPUT(options.max_batch_tokens >= 1 && options.max_batch_tokens <= 65535,
                 "GpuBackend: max_batch_tokens " + std::to_string(options.max_batch_tokens) + " outside [1, 65535]");
  GpuOptions o = options;
  // The MLA blocks (fused and cuda-unfused) take one token per sequence (no causal prefill over a prompt): DeepSeek
  // prompts run token by token through the decode graphs, whose MoE workspaces are sized for max_seqs rows.
  o.prefill_through_decode = o.prefill_through_decode || c.is_mla() || c.moe.n_experts > 0;
  impl_ = std::make_unique<Impl>(mode, std::move(model), std::move(kv), o);
  Impl& im = *impl_;
  const size_t hidden = size_t(c.hidden);
  im.max_rows = std::max(options.max_seqs, options.max_batch_tokens);
  const size_t rows = size_t(im.max_rows);
  for (auto& h : im.hidden) h = dev::DeviceBuffer<uint16_t>(rows * hidden, "hidden activations");
  im.residual = dev::DeviceBuffer<uint16_t>(rows * hidden, "residual activations");
  im.head_hidden = dev::DeviceBuffer<uint16_t>(rows * hidden, "LM head rows");
  im.head_residual = dev::DeviceBuffer<uint16_t>(rows * hidden, "LM head residual rows");
  im.logits = dev::DeviceBuffer<float>(rows * size_t(c.vocab), "logits");
  im.greedy = dev::DeviceBuffer<int32_t>(size_t(kMaxDecodeBatch), "greedy tokens");

  // RoPE table (cf::ref::rope_cos_sin values), shared by both decode paths and the prefill.
  const int rot = c.rope_dim > 0 ? c.rope_dim : c.head_dim;
  const int64_t capacity = int64_t(im.n_pages()) * im.page_size();
  im.max_positions = int(options.max_positions > 0 ? options.max_positions : std::min<int64_t>(capacity, 1 << 22));
  im.cos_sin = dev::to_device(c.is_mla() ? layout::rope_table(c, im.max_positions)
                                         : cuda_unfused::make_rope_table(rot, c.rope_theta, im.max_positions),
                              "RoPE table");

  im.decode_ints = dev::DeviceBuffer<int32_t>(kIndicesAt + size_t(im.n_pages()), "decode step inputs");
  im.decode_ints_host = PinnedBuffer<int32_t>(im.decode_ints.size());
  std::fill_n(im.decode_ints_host.data(), im.decode_ints_host.size(), 0);
  im.logits_host = PinnedBuffer<float>(size_t(options.max_seqs) * size_t(c.vocab));
  const size_t T = size_t(options.max_batch_tokens);
  im.prefill_indptr_at = round16(5 * T);
  im.prefill_last_page_at = round16(im.prefill_indptr_at + T + 1);
  im.prefill_indices_at = round16(im.prefill_last_page_at + T);
  im.prefill_ints = dev::DeviceBuffer<int32_t>(im.prefill_indices_at + size_t(im.n_pages()), "prefill inputs");
  im.prefill_ints_host = PinnedBuffer<int32_t>(im.prefill_ints.size());

  if (mode == CudaMode::Fused) {
    for (int l = 0; l < c.n_layers; ++l) {
      fused::LayerPointers p = im.model->layers()[size_t(l)].pointers(c, l);
      if (c.is_mla()) {
        p.mla.latent_pages = im.kv->k_layer(l);
      } else {
        p.k_pages = im.kv->k_layer(l);
        p.v_pages = im.kv->v_layer(l);
      }
      im.pointers.layers.push_back(p);
    }
    im.pointers.output_norm = im.model->output_norm();
    im.pointers.lm_head = im.model->lm_head();
    im.pointers.cos_sin = im.cos_sin.data();
    im.pointers.max_positions = im.max_positions;
    if (c.is_mla()) im.pointers.mla_shape = layout::device_mla_shape(c);
  } else {
    im.decode_workspace = std::make_unique<cuda_unfused::Workspace>(im.shape, options.max_seqs);
    if (c.is_mla()) {
      im.mla_shape = layout::device_mla_shape(c);  // the uploaded weights' (padded) widths
      im.mla_workspace = std::make_unique<cuda_unfused::MlaWorkspace>(im.mla_shape, options.max_seqs);
    }
    if (c.moe.n_experts > 0) {
      im.moe_shape = moe_block_shape(c);
      im.moe_workspace = std::make_unique<cuda_unfused::MoeWorkspace>(im.moe_shape, options.max_seqs);
    }
  }
}

GpuBackend::~GpuBackend() = default;

std::string GpuBackend::name() const { return mode_name(impl_->mode); }
const ModelConfig& GpuBackend::config() const { return impl_->config; }
const KvCacheShape& GpuBackend::kv_shape() const { return impl_->kv->shape(); }
int GpuBackend::max_batch_tokens() const { return impl_->options.max_batch_tokens; }
cudaStream_t GpuBackend::stream() const { return impl_->stream.get(); }

void GpuBackend::forward(const Batch& batch, float* logits) {
  Impl& im = *impl_;
  CF_CHECK(batch.n_tokens() >= 1 && batch.n_tokens() <= im.options.max_batch_tokens,
           name() + " backend: batch of " + std::to_string(batch.n_tokens()) + " tokens (limit " +
               std::to_string(im.options.max_batch_tokens) + ")");
  batch.validate(im.kv->shape(), im.config.vocab);
  for (int32_t p : batch.positions)
    if (p >= im.max_positions)
      throw Error(name() + " backend: position " + std::to_string(p) + " is past the RoPE table of " +
                  std::to_string(im.max_positions) + " positions");
  const bool decode = is_decode_step(batch) && batch.n_tokens() <= im.options.max_seqs;
  if (decode || im.options.prefill_through_decode) {
    for (const DecodeStep& step : split_into_steps(batch, im.page_size(), im.options.max_seqs))
      im.decode_step(batch, step, logits);
    return;
  }
  check_kv_slots(batch, im.page_size());
  im.prefill(batch, logits);
}

void GpuBackend::stage_decode(const Batch& batch) {
  Impl& im = *impl_;
  batch.validate(im.kv->shape(), im.config.vocab);
  CF_CHECK(is_decode_step(batch) && batch.n_tokens() <= im.options.max_seqs,
           "stage_decode: not a decode batch of at most max_seqs sequences");
  const auto steps = split_into_steps(batch, im.page_size(), im.options.max_seqs);
  im.stage_decode(batch, steps.front());
  im.graph_for(batch.n_tokens());
}

void GpuBackend::replay_decode(int batch_size) { impl_->replay(batch_size); }
void GpuBackend::check_status() { impl_->check_status(); }

size_t GpuBackend::graph_nodes(int batch_size) const {
  auto it = impl_->graphs.find(batch_size);
  return it == impl_->graphs.end() || !it->second.graph.valid() ? 0 : it->second.graph.node_count();
}

std::string GpuBackend::describe(int batch_size) const {
  auto it = impl_->graphs.find(batch_size);
  if (impl_->mode == CudaMode::Unfused) return "cuBLAS GEMMs + split-KV attention kernels";
  return it == impl_->graphs.end() ? std::string("(no graph for this batch size yet)") : it->second.fused->describe();
}

}  // namespace gpu
}  // namespace cf
