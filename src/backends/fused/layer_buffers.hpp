// One layer's weights in device memory (emulator memory for the emu backend), in the fused kernels' layouts, for
// every layer kind: a Llama layer (w_qkv, dense FFN), a DeepSeek-V2 layer (MLA block; dense FFN or MoE block).
// Shared by the emu and cuda backends; header-only, compiled into each build's inline namespace (its DeviceBuffer is
// that build's).
#pragma once
#include <cstddef>
#include <cstdint>

#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/model/config.hpp"
#include "clusterfusion/runtime/weights.hpp"
#include "common/device_layout.hpp"
#include "fused/fused_decoder.hpp"

namespace cf::fused {
inline namespace CF_BUILD_NAMESPACE {

struct LayerBuffers {
  using Bits = dev::DeviceBuffer<uint16_t>;
  // attention: Llama's w_qkv (+ bias); MLA's projections and absorbed matrices. Both: attn_norm, w_o.
  Bits attn_norm, w_qkv, b_qkv, w_o;
  Bits w_q, w_q_a, q_a_norm, w_q_b, w_kv_a, kv_a_norm, w_uk, w_uv;
  // FFN: dense w_gate_up / w_down, or the MoE's routed experts stacked in them plus the shared experts and router.
  Bits ffn_norm, w_gate_up, w_down;
  Bits shared_gate_up, shared_down;
  dev::DeviceBuffer<float> router;

  // Converts (device_layout) and uploads layer `layer` of w, by its kinds (ModelConfig::layer_spec).
  static LayerBuffers upload(const ModelWeights& w, int layer, device_layout::Storage s) {
    namespace layout = device_layout;
    const ModelConfig& c = w.config;
    const LayerWeights& l = w.layers[size_t(layer)];
    const LayerSpec spec = c.layer_spec(layer);
    LayerBuffers b;
    if (spec.attention == AttentionKind::Mla) {
      const layout::MlaLayer m = layout::convert_mla_layer(l, c, s);
      b.attn_norm = dev::to_device(m.norm, "attn_norm");
      b.w_q = dev::to_device(m.w_q, "w_q");
      b.w_q_a = dev::to_device(m.w_q_a, "w_q_a");
      b.q_a_norm = dev::to_device(m.q_a_norm, "q_a_norm");
      b.w_q_b = dev::to_device(m.w_q_b, "w_q_b");
      b.w_kv_a = dev::to_device(m.w_kv_a, "w_kv_a");
      b.kv_a_norm = dev::to_device(m.kv_a_norm, "kv_a_norm");
      b.w_uk = dev::to_device(m.w_uk, "w_uk");
      b.w_uv = dev::to_device(m.w_uv, "w_uv");
      b.w_o = dev::to_device(m.w_o, "w_o");
    } else {
      b.attn_norm = dev::to_device(layout::convert_vector(l.attn_norm, s), "attn_norm");
      b.w_qkv = dev::to_device(layout::convert_stacked({&l.attn_q, &l.attn_k, &l.attn_v}, s), "w_qkv");
      b.b_qkv = dev::to_device(layout::convert_qkv_bias(l, s), "b_qkv");
      b.w_o = dev::to_device(layout::convert_stacked({&l.attn_output}, s), "w_o");
    }
    if (spec.ffn == FfnKind::Moe) {
      const layout::MoeLayer m = layout::convert_moe_layer(l, c, s);
      b.ffn_norm = dev::to_device(m.norm, "ffn_norm");
      b.router = dev::to_device(m.router, "router");
      b.w_gate_up = dev::to_device(m.w_gate_up, "experts gate_up");
      b.w_down = dev::to_device(m.w_down, "experts down");
      b.shared_gate_up = dev::to_device(m.shared_gate_up, "shared experts gate_up");
      b.shared_down = dev::to_device(m.shared_down, "shared experts down");
    } else {
      b.ffn_norm = dev::to_device(layout::convert_vector(l.ffn_norm, s), "ffn_norm");
      b.w_gate_up = dev::to_device(layout::convert_stacked({&l.ffn_gate, &l.ffn_up}, s), "w_gate_up");
      b.w_down = dev::to_device(layout::convert_stacked({&l.ffn_down}, s), "w_down");
    }
    return b;
  }

  // The fused decoder's view of the layer (kinds from the config); the caller adds the cache pointers.
  LayerPointers pointers(const ModelConfig& c, int layer) const {
    const LayerSpec spec = c.layer_spec(layer);
    LayerPointers p;
    if (spec.attention == AttentionKind::Mla) {
      p.mla.norm = attn_norm.data();
      p.mla.w_q = or_null(w_q);
      p.mla.w_q_a = or_null(w_q_a);
      p.mla.q_a_norm = or_null(q_a_norm);
      p.mla.w_q_b = or_null(w_q_b);
      p.mla.w_kv_a = w_kv_a.data();
      p.mla.kv_a_norm = kv_a_norm.data();
      p.mla.w_uk = w_uk.data();
      p.mla.w_uv = w_uv.data();
      p.mla.w_o = w_o.data();
    } else {
      p.attn_norm = attn_norm.data();
      p.w_qkv = w_qkv.data();
      p.b_qkv = or_null(b_qkv);
      p.w_o = w_o.data();
    }
    if (spec.ffn == FfnKind::Moe) {
      p.moe.norm = ffn_norm.data();
      p.moe.router = router.data();
      p.moe.w_gate_up = w_gate_up.data();
      p.moe.w_down = w_down.data();
      p.moe.shared_gate_up = or_null(shared_gate_up);
      p.moe.shared_down = or_null(shared_down);
    } else {
      p.ffn_norm = ffn_norm.data();
      p.w_gate_up = w_gate_up.data();
      p.w_down = w_down.data();
    }
    return p;
  }

  // Bytes held; with `moe_fraction` < 1 the routed experts count only that share (a step reads the chosen ones).
  size_t bytes(double moe_fraction = 1.0) const {
    const bool moe = router.size() > 0;
    const size_t experts = w_gate_up.bytes() + w_down.bytes();
    return attn_norm.bytes() + w_qkv.bytes() + b_qkv.bytes() + w_o.bytes() + w_q.bytes() + w_q_a.bytes() +
           q_a_norm.bytes() + w_q_b.bytes() + w_kv_a.bytes() + kv_a_norm.bytes() + w_uk.bytes() + w_uv.bytes() +
           ffn_norm.bytes() + (moe ? size_t(double(experts) * moe_fraction) : experts) + shared_gate_up.bytes() +
           shared_down.bytes() + router.bytes();
  }

 private:
  static const void* or_null(const Bits& b) { return b.size() > 0 ? b.data() : nullptr; }
};

}  // namespace CF_BUILD_NAMESPACE
}  // namespace cf::fused
