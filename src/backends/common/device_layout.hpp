// What the device backends (emu, cuda, cuda-unfused) upload: every weight converted once to one 16-bit storage
// type (fp16, or bf16 when the whole model is bf16), in the layouts the kernels read: q/k/v rows stacked into w_qkv
// [q_dim + 2 kv_dim, hidden], gate/up rows into w_gate_up [2 ffn_hidden, hidden], norms and biases as vectors of the
// same type. GGUF block types (Q4_0, Q4_1, Q8_0) are dequantised here, on the host, with the same routine the cpu
// backend uses, so both see identical weight values up to the final 16-bit rounding.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "clusterfusion/runtime/weights.hpp"

namespace cf::device_layout {

enum class Storage : uint8_t { F16, BF16 };

// BF16 when every matrix of the model is stored as BF16 (bf16 checkpoints overflow fp16 more easily); else F16.
Storage choose_storage(const ModelWeights& weights);
const char* storage_name(Storage s);
uint16_t to_bits(float x, Storage s);

// Rows [first, first + count) of m, dequantised and rounded to `s`, into out ([count, m.cols]); parallel over rows.
void convert_rows(const WeightMatrix& m, int64_t first, int64_t count, Storage s, uint16_t* out);
// Several matrices with the same column count stacked by rows (e.g. q, k, v -> w_qkv).
std::vector<uint16_t> convert_stacked(const std::vector<const WeightMatrix*>& parts, Storage s);
std::vector<uint16_t> convert_vector(const std::vector<float>& v, Storage s);
// The three q/k/v biases concatenated (empty when the model has none).
std::vector<uint16_t> convert_qkv_bias(const LayerWeights& layer, Storage s);

// The same model with every matrix rounded to `s` (kept as F16 / BF16 WeightMatrix) and norms / biases rounded
// through `s`: exactly the inputs a device backend computes from, for the cpu backend to serve as the fp32
// reference of the tolerance policy.
ModelWeights rounded_copy(const ModelWeights& weights, Storage s);

}  // namespace cf::device_layout
