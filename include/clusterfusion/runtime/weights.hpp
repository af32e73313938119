// Model weights in host memory, in the layout every backend reads: one WeightMatrix per projection, [out, in]
// row-major, each row stored in one of the tensor storage types (plain or ggml block-quantised), norms and biases as
// fp32. Built from a loaded ModelFile (copied out of the mapping, optionally converted) or filled with seeded random
// values for tests and benchmarks.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/model/config.hpp"
#include "clusterfusion/formats/tensor.hpp"
#include "clusterfusion/model/weight_table.hpp"

namespace cf {

class ModelFile;

// Heap storage aligned to a cache line (kernels use unaligned loads, but rows then never straddle needlessly).
class AlignedBytes {
 public:
  AlignedBytes() = default;
  explicit AlignedBytes(size_t n);
  uint8_t* data() { return ptr_.get(); }
  const uint8_t* data() const { return ptr_.get(); }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t[], Free> ptr_;
  size_t size_ = 0;
};

// How a matrix's bytes are arranged.
enum class WeightLayout : uint8_t {
  Rows,       // row after row, each row_bytes long: what every reader understands
  CpuPacked,  // repacked at load for the cpu backend (groups of 16 rows; src/backends/cpu/packed_weights.hpp):
              // only that backend reads it (weight_load_options("cpu") asks for it to keep one copy in memory)
};

struct WeightMatrix {
  std::string name;  // canonical tensor name, for messages
  DType dtype = DType::F32;
  WeightLayout layout = WeightLayout::Rows;
  int64_t rows = 0;  // output features
  int64_t cols = 0;  // input features (a multiple of the block size for quantised types)
  int64_t row_bytes = 0;  // (Rows layout)
  AlignedBytes bytes;

  bool empty() const { return rows == 0; }
  const uint8_t* row(int64_t r) const { return bytes.data() + r * row_bytes; }
  // Dequantises rows [first, first + count) into out ([count, cols]); Rows layout only (cf::Error otherwise).
  void dequantize_rows(int64_t first, int64_t count, float* out) const;
  std::vector<float> dequantized() const;
};

// A layer's tensors under the names the backends compute with; which of them a layer holds, and their shapes, come
// from the weight table (layer_slots of its LayerSpec). Unheld ones stay empty.
struct LayerWeights {
  std::vector<float> attn_norm;  // [hidden]
  WeightMatrix attn_q, attn_k, attn_v, attn_output;
  std::vector<float> q_bias, k_bias, v_bias;  // empty unless config.qkv_bias
  // MLA (weight_table.hpp's slots; matrices of 3-D slots hold their product of rows: attn_k_b [heads * kv_lora, nope])
  WeightMatrix attn_q_a, attn_q_b, attn_kv_a, attn_kv_b, attn_k_b, attn_v_b;
  std::vector<float> q_a_norm, kv_a_norm;
  std::vector<float> ffn_norm;                // [hidden]
  WeightMatrix ffn_gate, ffn_up, ffn_down;
  // MoE: the router (kept in its file type: F32 in GGUFs, as an 8-bit router flips expert choices), the routed
  // experts stacked (expert e's rows are e * expert_ffn .. for gate / up, e * hidden .. for down), the shared ones
  WeightMatrix ffn_router, ffn_gate_exps, ffn_up_exps, ffn_down_exps, ffn_gate_shexp, ffn_up_shexp, ffn_down_shexp;
};

// Called while loading: bytes done so far and the total.
using LoadProgress = std::function<void(size_t done_bytes, size_t total_bytes)>;

struct WeightLoadOptions {
  // Convert every matrix to this type at load (e.g. DType::F32 to dequantise once); unset keeps the file's types.
  std::optional<DType> convert_to;
  // Matrices stored as k-quants (Q4_K, Q5_K, Q6_K: most published GGUF files) are converted to this type at load
  // when set: the device backends, which hold 16-bit weights anyway, ask for F16 (exact up to fp16 rounding). Unset,
  // they stay k-quants (the cpu backend computes on them directly).
  std::optional<DType> k_quant_as;
  // load_model() refuses weights holding NaN or Inf (check_weights_finite: one read of the values, or only the
  // block scales of quantised types). Default model: ~12 ms on top of a ~100 ms load (docs/reliability.md).
  bool check_finite = true;
  // Called on every matrix right after it is loaded (and converted), e.g. to repack it into a backend's layout in
  // place: one matrix at a time, so a repacked model never needs a second copy in memory.
  std::function<void(WeightMatrix&)> repack;
};

struct ModelWeights {
  ModelConfig config;
  WeightMatrix token_embd;  // [vocab, hidden]
  std::vector<float> output_norm;
  WeightMatrix output;  // [vocab, hidden]; empty when the embeddings are tied
  std::vector<LayerWeights> layers;

  const WeightMatrix& lm_head() const { return output.empty() ? token_embd : output; }
  size_t matrix_bytes() const;  // sum over all matrices

  // The storage of a weight-table entry (model/weight_table.hpp): matrix() for WeightForm::Matrix entries, vector()
  // for WeightForm::Vector ones (a form mismatch is a programming error: cf::Error).
  WeightMatrix& matrix(const WeightEntry& e);
  const WeightMatrix& matrix(const WeightEntry& e) const;
  std::vector<float>& vector(const WeightEntry& e);
  const std::vector<float>& vector(const WeightEntry& e) const;
  // Calls f(entry, matrix) for every matrix the model holds (weight_table order; a tied output is skipped).
  template <typename F>
  void for_each_matrix(F&& f) const {
    for (const WeightEntry& e : weight_table(config))
      if (e.form == WeightForm::Matrix && !matrix(e).empty()) f(e, matrix(e));
  }

  // Copies (and converts if asked) the weights of a loaded model; every shape is checked against the config and a
  // mismatch throws cf::InputError naming the file and tensor.
  static ModelWeights load(const ModelFile& file, const WeightLoadOptions& options = {},
                           const LoadProgress& progress = {});
  // Random weights of the config's exact shapes, all matrices of type `dtype` (F32, F16, BF16, Q8_0, Q4_0, Q4_1):
  // uniform in about +-1/sqrt(in) (activations stay O(1) through the layers), norms near 1. Same seed, same bits.
  static ModelWeights random(const ModelConfig& config, uint64_t seed, DType dtype = DType::F32);
};

// Converts a matrix to another storage type (through fp32; quantising to a block type uses the usual
// max-abs (Q8_0, Q4_0) or min/max (Q4_1) scales).
WeightMatrix convert_matrix(const WeightMatrix& m, DType to);

// Quantises one row of n floats (n a multiple of the block size) into `dst` in type t.
void quantize_row(DType t, const float* src, uint8_t* dst, int64_t n);

}  // namespace cf
