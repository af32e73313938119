#include "clusterfusion/runtime/weights.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <utility>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/half.hpp"
#include "clusterfusion/formats/model_file.hpp"
#include "clusterfusion/runtime/rng.hpp"

namespace cf {

namespace {
constexpr size_t kAlignment = 64;
constexpr int kQuantBlock = 32;  // elements per block of Q8_0 / Q4_0 / Q4_1

bool is_quantized(DType t) { return t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_1; }

void store_f16(uint8_t* dst, float v) {
  const uint16_t bits = float_to_f16_bits(v);
  std::memcpy(dst, &bits, 2);
}

WeightMatrix empty_matrix(std::string name, DType dtype, int64_t rows, int64_t cols) {
  if (is_quantized(dtype) && cols % kQuantBlock != 0)
    throw InputError(name + ": " + std::string(dtype_name(dtype)) + " rows need a multiple of 32 columns, got " +
                     std::to_string(cols));
  WeightMatrix m;
  m.name = std::move(name);
  m.dtype = dtype;
  m.rows = rows;
  m.cols = cols;
  m.row_bytes = dtype_row_bytes(dtype, cols);
  m.bytes = AlignedBytes(size_t(rows * m.row_bytes));
  return m;
}
}  // namespace

AlignedBytes::AlignedBytes(size_t n) : size_(n) {
  const size_t rounded = (std::max<size_t>(n, 1) + kAlignment - 1) / kAlignment * kAlignment;
  void* p = std::aligned_alloc(kAlignment, rounded);
  if (!p) throw Error("out of memory allocating " + std::to_string(n) + " bytes of weights");
  ptr_.reset(static_cast<uint8_t*>(p));
}

void AlignedBytes::Free::operator()(uint8_t* p) const { std::free(p); }

void WeightMatrix::dequantize_rows(int64_t first, int64_t count, float* out) const {
  CF_CHECK(layout == WeightLayout::Rows, name + ": repacked for the cpu backend, rows cannot be read here");
  CF_CHECK(first >= 0 && count >= 0 && first + count <= rows, name + ": row range out of bounds");
  for (int64_t r = 0; r < count; ++r) dequantize(dtype, row(first + r), out + r * cols, cols);
}

std::vector<float> WeightMatrix::dequantized() const {
  std::vector<float> out(size_t(rows * cols));
  dequantize_rows(0, rows, out.data());
  return out;
}

void quantize_row(DType t, const float* src, uint8_t* dst, int64_t n) {
  CF_CHECK(!dtype_is_k_quant(t), "quantize_row: no quantiser for " + std::string(dtype_name(t)) +
                                     " (k-quants are read from files, not produced)");
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, size_t(n) * 4);
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) store_f16(dst + 2 * i, src[i]);
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t bits = float_to_bf16_bits(src[i]);
        std::memcpy(dst + 2 * i, &bits, 2);
      }
      return;
    default:
      break;
  }
  CF_CHECK(n % kQuantBlock == 0, "quantize_row: length not a multiple of 32");
  const int64_t block_bytes = dtype_block_bytes(t);
  for (int64_t b = 0; b < n / kQuantBlock; ++b) {
    const float* x = src + b * kQuantBlock;
    uint8_t* block = dst + b * block_bytes;
    float max_abs = 0, lo = x[0], hi = x[0];
    for (int i = 0; i < kQuantBlock; ++i) {
      max_abs = std::max(max_abs, std::fabs(x[i]));
      lo = std::min(lo, x[i]);
      hi = std::max(hi, x[i]);
    }
    if (t == DType::Q8_0) {
      const float d = max_abs / 127.0f, inv = d > 0 ? 1.0f / d : 0.0f;
      store_f16(block, d);
      for (int i = 0; i < kQuantBlock; ++i) block[2 + i] = uint8_t(int8_t(std::lround(x[i] * inv)));
    } else if (t == DType::Q4_0) {
      // Signed 4-bit with offset 8: the value of largest magnitude maps to -8.
      float extreme = 0;
      for (int i = 0; i < kQuantBlock; ++i)
        if (std::fabs(x[i]) > std::fabs(extreme)) extreme = x[i];
      const float d = extreme / -8.0f, inv = d != 0 ? 1.0f / d : 0.0f;
      store_f16(block, d);
      for (int i = 0; i < kQuantBlock / 2; ++i) {
        const int q0 = std::clamp(int(std::lround(x[i] * inv)) + 8, 0, 15);
        const int q1 = std::clamp(int(std::lround(x[i + 16] * inv)) + 8, 0, 15);
        block[2 + i] = uint8_t(q0 | (q1 << 4));
      }
    } else {  // Q4_1: value = d * q + m, q in 0..15
      const float d = (hi - lo) / 15.0f, inv = d > 0 ? 1.0f / d : 0.0f;
      store_f16(block, d);
      store_f16(block + 2, lo);
      for (int i = 0; i < kQuantBlock / 2; ++i) {
        const int q0 = std::clamp(int(std::lround((x[i] - lo) * inv)), 0, 15);
        const int q1 = std::clamp(int(std::lround((x[i + 16] - lo) * inv)), 0, 15);
        block[4 + i] = uint8_t(q0 | (q1 << 4));
      }
    }
  }
}

WeightMatrix convert_matrix(const WeightMatrix& m, DType to) {
  WeightMatrix out = empty_matrix(m.name, to, m.rows, m.cols);
  std::vector<float> row(size_t(m.cols));
  for (int64_t r = 0; r < m.rows; ++r) {
    m.dequantize_rows(r, 1, row.data());
    quantize_row(to, row.data(), out.bytes.data() + r * out.row_bytes, m.cols);
  }
  return out;
}

size_t ModelWeights::matrix_bytes() const {
  size_t total = 0;
  for_each_matrix([&](const WeightEntry&, const WeightMatrix& m) { total += m.bytes.size(); });
  return total;
}

namespace {

WeightMatrix LayerWeights::*layer_matrix(WeightSlot slot) {
  switch (slot) {
    case WeightSlot::AttnQ:
      return &LayerWeights::attn_q;
    case WeightSlot::AttnK:
      return &LayerWeights::attn_k;
    case WeightSlot::AttnV:
      return &LayerWeights::attn_v;
    case WeightSlot::AttnOutput:
      return &LayerWeights::attn_output;
    case WeightSlot::FfnGate:
      return &LayerWeights::ffn_gate;
    case WeightSlot::FfnUp:
      return &LayerWeights::ffn_up;
    case WeightSlot::FfnDown:
      return &LayerWeights::ffn_down;
    case WeightSlot::AttnQA:
      return &LayerWeights::attn_q_a;
    case WeightSlot::AttnQB:
      return &LayerWeights::attn_q_b;
    case WeightSlot::AttnKvA:
      return &LayerWeights::attn_kv_a;
    case WeightSlot::AttnKvB:
      return &LayerWeights::attn_kv_b;
    case WeightSlot::AttnKB:
      return &LayerWeights::attn_k_b;
    case WeightSlot::AttnVB:
      return &LayerWeights::attn_v_b;
    case WeightSlot::FfnRouter:
      return &LayerWeights::ffn_router;
    case WeightSlot::FfnGateExps:
      return &LayerWeights::ffn_gate_exps;
    case WeightSlot::FfnUpExps:
      return &LayerWeights::ffn_up_exps;
    case WeightSlot::FfnDownExps:
      return &LayerWeights::ffn_down_exps;
    case WeightSlot::FfnGateShexp:
      return &LayerWeights::ffn_gate_shexp;
    case WeightSlot::FfnUpShexp:
      return &LayerWeights::ffn_up_shexp;
    case WeightSlot::FfnDownShexp:
      return &LayerWeights::ffn_down_shexp;
    default:
      CF_CHECK(false, "weight slot " + std::string(slot_info(slot).gguf_name) + " is not a layer matrix");
      return nullptr;
  }
}

std::vector<float> LayerWeights::*layer_vector(WeightSlot slot) {
  switch (slot) {
    case WeightSlot::AttnNorm:
      return &LayerWeights::attn_norm;
    case WeightSlot::AttnQBias:
      return &LayerWeights::q_bias;
    case WeightSlot::AttnKBias:
      return &LayerWeights::k_bias;
    case WeightSlot::AttnVBias:
      return &LayerWeights::v_bias;
    case WeightSlot::FfnNorm:
      return &LayerWeights::ffn_norm;
    case WeightSlot::AttnQANorm:
      return &LayerWeights::q_a_norm;
    case WeightSlot::AttnKvANorm:
      return &LayerWeights::kv_a_norm;
    default:
      CF_CHECK(false, "weight slot " + std::string(slot_info(slot).gguf_name) + " is not a layer vector");
      return nullptr;
  }
}

}  // namespace

const WeightMatrix& ModelWeights::matrix(const WeightEntry& e) const {
  if (e.slot == WeightSlot::TokenEmbd) return token_embd;
  if (e.slot == WeightSlot::Output) return output;
  CF_CHECK(e.layer >= 0 && size_t(e.layer) < layers.size(), e.name + ": no such layer in these weights");
  return layers[size_t(e.layer)].*layer_matrix(e.slot);
}

WeightMatrix& ModelWeights::matrix(const WeightEntry& e) {
  return const_cast<WeightMatrix&>(std::as_const(*this).matrix(e));
}

const std::vector<float>& ModelWeights::vector(const WeightEntry& e) const {
  if (e.slot == WeightSlot::OutputNorm) return output_norm;
  CF_CHECK(e.layer >= 0 && size_t(e.layer) < layers.size(), e.name + ": no such layer in these weights");
  return layers[size_t(e.layer)].*layer_vector(e.slot);
}

std::vector<float>& ModelWeights::vector(const WeightEntry& e) {
  return const_cast<std::vector<float>&>(std::as_const(*this).vector(e));
}

// ---- loading from a model file ------------------------------------------------------------------------------------

namespace {

class FileReader {
 public:
  FileReader(const ModelFile& file, const WeightLoadOptions& options, const LoadProgress& progress)
      : file_(file), options_(options), progress_(progress) {
    for (const auto& t : file.tensors()) total_ += t.nbytes;
  }

  // The entry's tensor (or its experts' tensors, stacked) as one matrix of the product of its outer dimensions' rows.
  WeightMatrix matrix(const WeightEntry& e) {
    const std::vector<const TensorRef*> parts = require_entry(file_, e);
    const int64_t cols = e.shape.back();
    int64_t rows = 1;
    for (size_t d = 0; d + 1 < e.shape.size(); ++d) rows *= e.shape[d];
    const int64_t part_rows = rows / int64_t(parts.size());
    const DType dtype = parts.front()->dtype;
    WeightMatrix m = empty_matrix(e.name, dtype, rows, cols);
    for (size_t i = 0; i < parts.size(); ++i) {
      const TensorRef& t = *parts[i];
      const size_t expected = size_t(part_rows * dtype_row_bytes(t.dtype, cols));
      CF_CHECK_INPUT(t.nbytes == expected, file_.path() + ": tensor '" + t.name + "' holds " +
                                               std::to_string(t.nbytes) + " bytes, expected " + std::to_string(expected));
      std::memcpy(m.bytes.data() + i * expected, t.data, t.nbytes);
      advance(t.nbytes);
    }
    const bool keep_type = e.slot == WeightSlot::FfnRouter;  // routing decisions are sensitive to rounding
    if (!keep_type && options_.convert_to && *options_.convert_to != m.dtype)
      m = convert_matrix(m, *options_.convert_to);
    else if (dtype_is_k_quant(m.dtype) && options_.k_quant_as)
      m = convert_matrix(m, *options_.k_quant_as);
    if (options_.repack) options_.repack(m);
    return m;
  }

  std::vector<float> vector(const std::string& name, int64_t n) {
    const TensorRef& t = file_.require(name, {n});
    std::vector<float> v(static_cast<size_t>(n));
    dequantize(t.dtype, t.data, v.data(), n);
    advance(t.nbytes);
    return v;
  }

  bool has(const std::string& name) const { return file_.find(name) != nullptr; }

 private:
  void advance(size_t n) {
    done_ += n;
    if (progress_) progress_(std::min(done_, total_), total_);
  }
  const ModelFile& file_;
  const WeightLoadOptions& options_;
  const LoadProgress& progress_;
  size_t done_ = 0, total_ = 0;
};

}  // namespace

ModelWeights ModelWeights::load(const ModelFile& file, const WeightLoadOptions& options, const LoadProgress& progress) {
  ModelWeights w;
  w.config = file.config();
  const ModelConfig& c = w.config;
  c.validate(file.path());
  CF_CHECK(!(options.k_quant_as && dtype_is_k_quant(*options.k_quant_as)) &&
               !(options.convert_to && dtype_is_k_quant(*options.convert_to)),
           "WeightLoadOptions: k-quants are file types, not a type to convert to");
  FileReader reader(file, options, progress);
  w.layers.resize(size_t(c.n_layers));
  for (const WeightEntry& e : weight_table(c)) {
    if (e.optional && !reader.has(e.name)) continue;
    if (e.form == WeightForm::Matrix)
      w.matrix(e) = reader.matrix(e);
    else
      w.vector(e) = reader.vector(e.name, e.shape[0]);
  }
  return w;
}

// ---- random weights -------------------------------------------------------------------------------------------------

namespace {

// Rows filled per task when random matrices are made in parallel; each chunk has its own generator seeded from the
// matrix seed and the chunk index, so the bits do not depend on the number of threads.
constexpr int64_t kRandomRowsPerChunk = 64;

// Fills rows [row_begin, row_end) with values of magnitude ~ scale directly in the storage format (no float round
// trip for the quantised types).
void fill_random_rows(WeightMatrix& m, int64_t row_begin, int64_t row_end, float scale, Rng& rng) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    uint8_t* p = m.bytes.data() + r * m.row_bytes;
    const int64_t n = m.cols;
    switch (m.dtype) {
      case DType::F32:
        for (int64_t i = 0; i < n; ++i) {
          const float v = rng.uniform(-scale, scale);
          std::memcpy(p + 4 * i, &v, 4);
        }
        break;
      case DType::F16:
        for (int64_t i = 0; i < n; ++i) store_f16(p + 2 * i, rng.uniform(-scale, scale));
        break;
      case DType::BF16:
        for (int64_t i = 0; i < n; ++i) {
          const uint16_t bits = float_to_bf16_bits(rng.uniform(-scale, scale));
          std::memcpy(p + 2 * i, &bits, 2);
        }
        break;
      case DType::Q8_0:
      case DType::Q4_0:
      case DType::Q4_1: {
        const int64_t block_bytes = dtype_block_bytes(m.dtype);
        for (int64_t b = 0; b < n / kQuantBlock; ++b) {
          uint8_t* block = p + b * block_bytes;
          const float block_scale = scale * rng.uniform(0.5f, 1.0f);
          if (m.dtype == DType::Q8_0) {
            store_f16(block, block_scale / 127.0f);
            for (int i = 0; i < kQuantBlock; ++i) block[2 + i] = uint8_t(int8_t(int(rng.below(255)) - 127));
          } else if (m.dtype == DType::Q4_0) {
            store_f16(block, block_scale / 8.0f);
            for (int i = 0; i < kQuantBlock / 2; ++i) block[2 + i] = uint8_t(rng.below(256));
          } else {
            store_f16(block, 2.0f * block_scale / 15.0f);
            store_f16(block + 2, -block_scale);
            for (int i = 0; i < kQuantBlock / 2; ++i) block[4 + i] = uint8_t(rng.below(256));
          }
        }
        break;
      }
      case DType::Q4_K:
      case DType::Q5_K:
      case DType::Q6_K:
        CF_CHECK(false, "random weights: " + std::string(dtype_name(m.dtype)) + " is a file type only");
    }
  }
}

// A random matrix whose contents depend only on (seed, shape, dtype); big ones (benchmark shapes of 7B models) are
// filled by all hardware threads.
WeightMatrix random_matrix(const std::string& name, DType dtype, int64_t rows, int64_t cols, float scale,
                           uint64_t seed) {
  WeightMatrix m = empty_matrix(name, dtype, rows, cols);
  const int64_t chunks = (rows + kRandomRowsPerChunk - 1) / kRandomRowsPerChunk;
  auto fill_chunks = [&](int64_t first, int64_t step) {
    for (int64_t c = first; c < chunks; c += step) {
      Rng rng(seed ^ (0x9e3779b97f4a7c15ull * uint64_t(c + 1)));
      fill_random_rows(m, c * kRandomRowsPerChunk, std::min(rows, (c + 1) * kRandomRowsPerChunk), scale, rng);
    }
  };
  constexpr int64_t kParallelBytes = int64_t(64) << 20;
  const int64_t threads = m.bytes.size() >= size_t(kParallelBytes) ? std::max(1u, std::thread::hardware_concurrency()) : 1;
  std::vector<std::thread> workers;
  for (int64_t t = 1; t < threads; ++t) workers.emplace_back(fill_chunks, t, threads);
  fill_chunks(0, threads);
  for (auto& w : workers) w.join();
  return m;
}

std::vector<float> random_vector(int64_t n, float center, float spread, Rng& rng) {
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = center + rng.uniform(-spread, spread);
  return v;
}

// Uniform(-a, a) has standard deviation a / sqrt(3): a = sqrt(3 / in) keeps each output's variance near its input's.
// The embeddings are O(1); residual branches (o_proj, down) are scaled down so the stream does not grow with depth.
int64_t matrix_rows(const WeightEntry& e) {
  int64_t rows = 1;
  for (size_t d = 0; d + 1 < e.shape.size(); ++d) rows *= e.shape[d];
  return rows;
}

float random_scale(const WeightEntry& e) {
  const float fan_in = std::sqrt(3.0f / float(e.shape.back()));
  switch (e.slot) {
    case WeightSlot::TokenEmbd:
      return 1.0f;
    case WeightSlot::FfnRouter:
      return 3.0f * fan_in;  // distinct expert scores, so choices are rarely near ties
    case WeightSlot::AttnOutput:
    case WeightSlot::FfnDown:
    case WeightSlot::FfnDownExps:
    case WeightSlot::FfnDownShexp:
      return 0.5f * fan_in;
    default:
      return fan_in;
  }
}

// Norm weights near 1, biases near 0.
float random_center(WeightSlot slot) {
  const bool bias = slot == WeightSlot::AttnQBias || slot == WeightSlot::AttnKBias || slot == WeightSlot::AttnVBias;
  return bias ? 0.0f : 1.0f;
}

}  // namespace

ModelWeights ModelWeights::random(const ModelConfig& config, uint64_t seed, DType dtype) {
  config.validate("random model config");
  ModelWeights w;
  w.config = config;
  const ModelConfig& c = w.config;
  Rng rng(seed);
  w.layers.resize(size_t(c.n_layers));
  for (const WeightEntry& e : weight_table(c)) {
    if (e.optional) continue;  // a tied output
    if (e.form == WeightForm::Matrix)
      w.matrix(e) = random_matrix(e.name, e.slot == WeightSlot::FfnRouter ? DType::F32 : dtype, matrix_rows(e),
                                  e.shape.back(), random_scale(e), rng.next_u64());
    else
      w.vector(e) = random_vector(e.shape[0], random_center(e.slot), 0.1f, rng);
  }
  return w;
}

}  // namespace cf
