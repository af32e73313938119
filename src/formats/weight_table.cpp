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
    {WeightSlot::AttnQA, WeightForm::Matrix, true, "attn_q_a.weight", "self_attn.q_a_proj.weight"},
    {WeightSlot::AttnQANorm, WeightForm::Vector, true, "attn_q_a_norm.weight", "self_attn.q_a_layernorm.weight"},
    {WeightSlot::AttnQB, WeightForm::Matrix, true, "attn_q_b.weight", "self_attn.q_b_proj.weight"},
    {WeightSlot::AttnKvA, WeightForm::Matrix, true, "attn_kv_a_mqa.weight", "self_attn.kv_a_proj_with_mqa.weight"},
    {WeightSlot::AttnKvANorm, WeightForm::Vector, true, "attn_kv_a_norm.weight", "self_attn.kv_a_layernorm.weight"},
    {WeightSlot::AttnKvB, WeightForm::Matrix, true, "attn_kv_b.weight", "self_attn.kv_b_proj.weight"},
    {WeightSlot::AttnKB, WeightForm::Matrix, true, "attn_k_b.weight", ""},
    {WeightSlot::AttnVB, WeightForm::Matrix, true, "attn_v_b.weight", ""},
    {WeightSlot::FfnRouter, WeightForm::Matrix, true, "ffn_gate_inp.weight", "mlp.gate.weight"},
    {WeightSlot::FfnGateExps, WeightForm::Matrix, true, "ffn_gate_exps.weight", "mlp.experts.*.gate_proj.weight", "ffn_gate"},
    {WeightSlot::FfnUpExps, WeightForm::Matrix, true, "ffn_up_exps.weight", "mlp.experts.*.up_proj.weight", "ffn_up"},
    {WeightSlot::FfnDownExps, WeightForm::Matrix, true, "ffn_down_exps.weight", "mlp.experts.*.down_proj.weight", "ffn_down"},
    {WeightSlot::FfnGateShexp, WeightForm::Matrix, true, "ffn_gate_shexp.weight", "mlp.shared_experts.gate_proj.weight"},
    {WeightSlot::FfnUpShexp, WeightForm::Matrix, true, "ffn_up_shexp.weight", "mlp.shared_experts.up_proj.weight"},
    {WeightSlot::FfnDownShexp, WeightForm::Matrix, true, "ffn_down_shexp.weight", "mlp.shared_experts.down_proj.weight"},
};

// The shape of a slot's tensor in a model of config c.
std::vector<int64_t> slot_shape(WeightSlot slot, const ModelConfig& c) {
  const int64_t hidden = c.hidden, q = c.q_dim(), kv = c.kv_dim(), ffn = c.ffn_hidden, vocab = c.vocab;
  const int64_t heads = c.n_heads, q_lora = c.mla.q_lora_rank, kv_lora = c.mla.kv_lora_rank, nope = c.mla.qk_nope,
                v = c.mla.v_head, experts = c.moe.n_experts, expert_ffn = c.moe.expert_ffn, shared = c.moe.shared_ffn();
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
      return {hidden, c.is_mla() ? heads * v : q};
    case WeightSlot::FfnGate:
    case WeightSlot::FfnUp:
      return {ffn, hidden};
    case WeightSlot::FfnDown:
      return {hidden, ffn};
    case WeightSlot::AttnQA:
      return {q_lora, hidden};
    case WeightSlot::AttnQANorm:
      return {q_lora};
    case WeightSlot::AttnQB:
      return {q, q_lora};
    case WeightSlot::AttnKvA:
      return {kv_lora + c.rope_dim, hidden};
    case WeightSlot::AttnKvANorm:
      return {kv_lora};
    case WeightSlot::AttnKvB:
      return {heads * (nope + v), kv_lora};
    case WeightSlot::AttnKB:
      return {heads, kv_lora, nope};
    case WeightSlot::AttnVB:
      return {heads, v, kv_lora};
    case WeightSlot::FfnRouter:
      return {experts, hidden};
    case WeightSlot::FfnGateExps:
    case WeightSlot::FfnUpExps:
      return {experts, expert_ffn, hidden};
    case WeightSlot::FfnDownExps:
      return {experts, hidden, expert_ffn};
    case WeightSlot::FfnGateShexp:
    case WeightSlot::FfnUpShexp:
      return {shared, hidden};
    case WeightSlot::FfnDownShexp:
      return {hidden, shared};
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

std::vector<WeightSlot> layer_slots(const ModelConfig& c, int layer) {
  const LayerSpec spec = c.layer_spec(layer);
  std::vector<WeightSlot> slots{WeightSlot::AttnNorm};
  switch (spec.attention) {
    case AttentionKind::Gqa:
      slots.insert(slots.end(), {WeightSlot::AttnQ, WeightSlot::AttnK, WeightSlot::AttnV});
      if (c.qkv_bias) slots.insert(slots.end(), {WeightSlot::AttnQBias, WeightSlot::AttnKBias, WeightSlot::AttnVBias});
      break;
    case AttentionKind::Mla:
      if (c.mla.q_lora_rank > 0)
        slots.insert(slots.end(), {WeightSlot::AttnQA, WeightSlot::AttnQANorm, WeightSlot::AttnQB});
      else
        slots.push_back(WeightSlot::AttnQ);
      slots.insert(slots.end(), {WeightSlot::AttnKvA, WeightSlot::AttnKvANorm});
      if (c.mla.split_kv_b)
        slots.insert(slots.end(), {WeightSlot::AttnKB, WeightSlot::AttnVB});
      else
        slots.push_back(WeightSlot::AttnKvB);
      break;
  }
  slots.push_back(WeightSlot::AttnOutput);
  slots.push_back(WeightSlot::FfnNorm);
  switch (spec.ffn) {
    case FfnKind::SwiGlu:
      slots.insert(slots.end(), {WeightSlot::FfnGate, WeightSlot::FfnUp, WeightSlot::FfnDown});
      break;
    case FfnKind::Moe:
      slots.insert(slots.end(), {WeightSlot::FfnRouter, WeightSlot::FfnGateExps, WeightSlot::FfnUpExps,
                                 WeightSlot::FfnDownExps});
      if (c.moe.n_shared > 0)
        slots.insert(slots.end(), {WeightSlot::FfnGateShexp, WeightSlot::FfnUpShexp, WeightSlot::FfnDownShexp});
      break;
  }
  return slots;
}

std::string expert_tensor_name(WeightSlot slot, int layer, int expert) {
  const WeightSlotInfo& info = slot_info(slot);
  CF_CHECK(!info.expert_name.empty(), "expert_tensor_name: " + std::string(info.gguf_name) + " is not stacked");
  return "blk." + std::to_string(layer) + "." + std::string(info.expert_name) + "." + std::to_string(expert) + ".weight";
}

std::vector<WeightEntry> weight_table(const ModelConfig& c) {
  std::vector<WeightEntry> table;
  table.push_back(entry(WeightSlot::TokenEmbd, -1, c, false));
  table.push_back(entry(WeightSlot::OutputNorm, -1, c, false));
  table.push_back(entry(WeightSlot::Output, -1, c, c.tied_embeddings));
  for (int l = 0; l < c.n_layers; ++l)
    for (WeightSlot slot : layer_slots(c, l)) table.push_back(entry(slot, l, c, false));
  return table;
}

}  // namespace cf
