// What the device backends (emu, cuda, cuda-unfused) upload: every weight converted once to one 16-bit storage
// type (fp16, or bf16 when the whole model is bf16), in the layouts the kernels read: q/k/v rows stacked into w_qkv
// [q_dim + 2 kv_dim, hidden], gate/up rows into w_gate_up [2 ffn_hidden, hidden], norms and biases as vectors of the
// same type. GGUF block types (Q4_0, Q4_1, Q8_0) are dequantised here, on the host, with the same routine the cpu
// backend uses, so both see identical weight values up to the final 16-bit rounding.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "clusterfusion/model/types.hpp"
#include "clusterfusion/runtime/weights.hpp"

namespace cf::device_layout {

enum class Storage : uint8_t { F16, BF16 };

// BF16 when every matrix of the model (the MoE router aside: it stays fp32 on the device) is stored as BF16 (bf16
// checkpoints overflow fp16 more easily); else F16.
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

// ---- DeepSeek-V2 layers (docs/mla.md): the layouts of the MLA and MoE blocks (kernels/mla/params.hpp,
// kernels/moe/params.hpp) ----

// The MLA block's shape on the device (kernels/mla/params.hpp): the model's (mla_block_shape), with the widths the
// kernel tiles by padded where the model's are not multiples (tiny test models; every DeepSeek-V2 shape is already):
//   v_head   up to the first width with n_heads x v_head a multiple of 32: W_UV gets zero rows and Wo zero columns,
//            so the padded values are exactly 0 and add nothing (exact);
//   q_lora   up to a multiple of 32: W_q_a gets zero rows, W_q_b zero columns and q_a_norm is scaled by
//            sqrt(q_lora / padded), which makes the padded RMSNorm the model's with eps x padded / q_lora (1e-6 ->
//            1.14e-6 for the tiny model's 56 -> 64: far below the 16-bit rounding of the values).
MlaBlockShape device_mla_shape(const ModelConfig& c);

// One MLA attention block in device_mla_shape's widths: norm, w_q (q_lora 0) or w_q_a / q_a_norm / w_q_b, w_kv_a,
// kv_a_norm, w_uk [H, nope, r], w_uv [H, v, r] (from either file form: one kv_b matrix or the split attn_k_b /
// attn_v_b), w_o [hidden, H v].
struct MlaLayer {
  std::vector<uint16_t> norm, w_q, w_q_a, q_a_norm, w_q_b, w_kv_a, kv_a_norm, w_uk, w_uv, w_o;
};
MlaLayer convert_mla_layer(const LayerWeights& layer, const ModelConfig& c, Storage s);

// One MoE FFN block: the norm, the router in fp32 [n_experts, hidden], the routed experts stacked
// w_gate_up [n_experts, 2 expert_ffn, hidden] (per expert its gate rows, then its up rows) and
// w_down [n_experts, hidden, expert_ffn], the shared experts as one SwiGLU (empty without shared experts).
struct MoeLayer {
  std::vector<uint16_t> norm, w_gate_up, w_down, shared_gate_up, shared_down;
  std::vector<float> router;
};
MoeLayer convert_moe_layer(const LayerWeights& layer, const ModelConfig& c, Storage s);

// The RoPE table of a model's rope part, [positions, rot] fp32: per position the cos of the rot/2 pairs, then their
// sin. MLA models: YaRN frequencies and magnitude on adjacent pairs (ref::yarn_cos_sin); others ref::rope_cos_sin.
std::vector<float> rope_table(const ModelConfig& c, int positions);

// The same model with every matrix rounded to `s` (kept as F16 / BF16 WeightMatrix; the MoE router becomes F32,
// the values the device reads) and norms / biases rounded through `s`: exactly the inputs a device backend computes
// from, for the cpu backend to serve as the fp32 reference of the tolerance policy.
ModelWeights rounded_copy(const ModelWeights& weights, Storage s);

}  // namespace cf::device_layout
