// The weight table: slot names and shapes for every kind of layer.
#include "clusterfusion/model/weight_table.hpp"

#include "clusterfusion/common/error.hpp"

namespace cf {

namespace {

constexpr WeightSlotInfo kSlots[] = {
    {WeightSlot::TokenEmbd, WeightForm::Matrix, false, "token_embd.weight", "model.embed_tokens.weight"},
    {WeightSlot::OutputNorm, WeightForm::Vector, false, "output_norm.weight", "model.norm.weight"},
    {WeightSlot::Output, WeightForm::Matrix, false, "output.weight", "lm_head.weight"},
    {WeightSlot::AttnNorm, WeightForm::Vector, true, "attn_norm.weight", "input_layernorm.weight"},
    {WeightSlot::AttnQ, WeightForm::Matrix, true, "attn_q.weight", "self_attn.q_proj.weight"},
    {WeightSlot::AttnK, WeightForm::Matrix, true, "attn_k.weight", "self_attn.k_proj.weight"},
    {WeightSlot::AttnV, WeightForm::Matrix, true, "attn_v.weight", "self_attn.v_proj.weight"},
    {WeightSlot::AttnQBias, WeightForm::Vector, true, "attn_q.bias", "self_attn.q_proj.bias"},
    {WeightSlot::AttnKBias, WeightForm::Vector, true, "attn_k.bias", "self_attn.k_proj.bias"},
    {WeightSlot::AttnVBias, WeightForm::Vector, true, "attn_v.bias", "self_attn.v_proj.bias"},
    {WeightSlot::AttnOutput, WeightForm::Matrix, true, "attn_output.weight", "self_attn.o_proj.weight"},
    {WeightSlot::FfnNorm, WeightForm::Vector, true, "ffn_norm.weight", "post_attention_layernorm.weight"},
    {WeightSlot::FfnGate, WeightForm::Matrix, true, "ffn_gate.weight", "mlp.gate_proj.weight"},
    {WeightSlot::FfnUp, WeightForm::Matrix, true, "ffn_up.weight", "mlp.up_proj.weight"},
    {WeightSlot::FfnDown, WeightForm::Matrix, true, "ffn_down.weight", "mlp.down_proj.weight"},
};

// The shape of a slot's tensor in a model of config c.
std::vector<int64_t> slot_shape(WeightSlot slot, const ModelConfig& c) {
  const int64_t hidden = c.hidden, q = c.q_dim(), kv = c.kv_dim(), ffn = c.ffn_hidden, vocab = c.vocab;
  switch (slot) {
    case WeightSlot::TokenEmbd:
    case WeightSlot::Output:
      return {vocab, hidden};
    case WeightSlot::OutputNorm:
    case WeightSlot::AttnNorm:
    case WeightSlot::FfnNorm:
      return {hidden};
    case WeightSlot::AttnQ:
      return {q, hidden};
    case WeightSlot::AttnK:
    case WeightSlot::AttnV:
      return {kv, hidden};
    case WeightSlot::AttnQBias:
      return {q};
    case WeightSlot::AttnKBias:
    case WeightSlot::AttnVBias:
      return {kv};
    case WeightSlot::AttnOutput:
      return {hidden, q};
    case WeightSlot::FfnGate:
    case WeightSlot::FfnUp:
      return {ffn, hidden};
    case WeightSlot::FfnDown:
      return {hidden, ffn};
  }
  CF_CHECK(false, "slot_shape: unknown weight slot");
  return {};
}

WeightEntry entry(WeightSlot slot, int layer, const ModelConfig& c, bool optional) {
  const WeightSlotInfo& info = slot_info(slot);
  std::string name = layer < 0 ? std::string(info.gguf_name)
                               : "blk." + std::to_string(layer) + "." + std::string(info.gguf_name);
  return {slot, info.form, layer, std::move(name), slot_shape(slot, c), optional};
}

}  // namespace

std::span<const WeightSlotInfo> weight_slots() { return kSlots; }

const WeightSlotInfo& slot_info(WeightSlot slot) {
  for (const WeightSlotInfo& info : kSlots)
    if (info.slot == slot) return info;
  CF_CHECK(false, "slot_info: unknown weight slot");
  return kSlots[0];
}

std::vector<WeightSlot> layer_slots(const LayerSpec& spec, bool qkv_bias) {
  std::vector<WeightSlot> slots{WeightSlot::AttnNorm};
  switch (spec.attention) {
    case AttentionKind::Gqa:
      slots.insert(slots.end(), {WeightSlot::AttnQ, WeightSlot::AttnK, WeightSlot::AttnV});
      if (qkv_bias) slots.insert(slots.end(), {WeightSlot::AttnQBias, WeightSlot::AttnKBias, WeightSlot::AttnVBias});
      slots.push_back(WeightSlot::AttnOutput);
      break;
  }
  slots.push_back(WeightSlot::FfnNorm);
  switch (spec.ffn) {
    case FfnKind::SwiGlu:
      slots.insert(slots.end(), {WeightSlot::FfnGate, WeightSlot::FfnUp, WeightSlot::FfnDown});
      break;
  }
  return slots;
}

std::vector<WeightEntry> weight_table(const ModelConfig& c) {
  std::vector<WeightEntry> table;
  table.push_back(entry(WeightSlot::TokenEmbd, -1, c, false));
  table.push_back(entry(WeightSlot::OutputNorm, -1, c, false));
  table.push_back(entry(WeightSlot::Output, -1, c, c.tied_embeddings));
  for (int l = 0; l < c.n_layers; ++l)
    for (WeightSlot slot : layer_slots(c.layer_spec(l), c.qkv_bias)) table.push_back(entry(slot, l, c, false));
  return table;
}

}  // namespace cf
