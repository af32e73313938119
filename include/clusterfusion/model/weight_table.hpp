// The model description's weight table: every tensor a model of a given ModelConfig holds, with its canonical
// (GGUF) name, Hugging Face name, shape and role, in one place. The loaders (check_model_tensors,
// canonical_tensor_name, ModelWeights::load / random) and the backends' weight conversions iterate it instead of
// naming the Llama layer's fields themselves; a new attention or FFN kind (MLA, MoE) adds its slots here.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "clusterfusion/model/config.hpp"

namespace cf {

// One kind of tensor, model-level or per layer.
enum class WeightSlot : uint8_t {
  TokenEmbd,
  OutputNorm,
  Output,
  AttnNorm,
  AttnQ,
  AttnK,
  AttnV,
  AttnQBias,
  AttnKBias,
  AttnVBias,
  AttnOutput,
  FfnNorm,
  FfnGate,
  FfnUp,
  FfnDown,
  // multi-head latent attention (AttentionKind::Mla; AttnQ when q_lora_rank is 0, AttnOutput [hidden, n_heads * v])
  AttnQA,
  AttnQANorm,
  AttnQB,
  AttnKvA,
  AttnKvANorm,
  AttnKvB,  // one kv_b matrix (HF, older GGUFs) ...
  AttnKB,   // ... or split (current GGUFs): W_UK transposed per head [n_heads, kv_lora, nope]
  AttnVB,   //    and W_UV [n_heads, v, kv_lora]
  // mixture of experts (FfnKind::Moe)
  FfnRouter,
  FfnGateExps,  // the routed experts stacked: [n_experts, expert_ffn, hidden]
  FfnUpExps,
  FfnDownExps,  // [n_experts, hidden, expert_ffn]
  FfnGateShexp,
  FfnUpShexp,
  FfnDownShexp,
};

// Matrix: [rows, cols] in any storage type (plain or block-quantised), read by the matmul kernels.
// Vector: a norm weight or bias, held as fp32.
enum class WeightForm : uint8_t { Matrix, Vector };

struct WeightSlotInfo {
  WeightSlot slot;
  WeightForm form;
  bool per_layer;
  std::string_view gguf_name;  // canonical name, without "blk.N." for per-layer slots
  std::string_view hf_name;    // Hugging Face name, without "model.layers.N." for per-layer slots; stacked expert
                               // slots: the per-expert name with "*" for the expert number
  // Stacked expert slots: canonical name of one expert's tensor, "blk.N.<expert_name>.E.weight" (llama.cpp's
  // per-expert naming, in which HF folders' mlp.experts.E.* tensors are listed); empty for other slots.
  std::string_view expert_name = {};
};

// Every slot of every kind, in load order (model-level first, then a layer's).
std::span<const WeightSlotInfo> weight_slots();
const WeightSlotInfo& slot_info(WeightSlot slot);

// One tensor of a concrete model.
struct WeightEntry {
  WeightSlot slot;
  WeightForm form;
  int layer;                   // -1 for model-level tensors
  std::string name;            // canonical: "token_embd.weight", "blk.3.attn_q.weight"
  std::vector<int64_t> shape;  // {rows, cols} for matrices ({experts or heads, rows, cols} for the stacked ones:
                               // held as one matrix of their product of rows), {n} for vectors
  bool optional;               // may be absent from a file (output.weight when the embeddings are tied)
};

// The tensors a model of config `c` holds, in load order: token_embd, output_norm, output (unless tied), then per
// layer the slots of its attention and FFN kinds (c.layer_spec(i)).
std::vector<WeightEntry> weight_table(const ModelConfig& c);

// The slots layer `layer` of a model of config c holds, in order (per-layer slots only): by its kinds
// (c.layer_spec(layer)), and within them by the config (qkv_bias: the q/k/v biases; MLA: q or q_a/q_b, kv_b one
// matrix or split).
std::vector<WeightSlot> layer_slots(const ModelConfig& c, int layer);

// Canonical name of expert e's tensor of a stacked slot in layer `layer` ("blk.3.ffn_gate.5.weight").
std::string expert_tensor_name(WeightSlot slot, int layer, int expert);

}  // namespace cf
