// Device code of the MoE FFN block (docs/mla.md §2, "on the device"): three kernels on the pipeline layer
// (docs/pipeline.md), each a phase list, written only against the device API (nvcc sm_90a and the CPU emulator).
//
//   router   grid: min(n_experts, SMs) CTAs, each a slice of the experts. The producer streams the slice's fp32 router
//            rows into the ring (1D bulk copies); the consumers
//              1. norm     residual add + RMSNorm over all of hidden (every CTA the same bits) -> x_s
//              2. logits   x . router row per token (fp32) -> the logits workspace
//              3. route    the last arriving CTA: residual_out and x to global, per token (a warp each) the softmax,
//                          the group filter and the top-k picks (ties: lower id), the weights; the union of the chosen
//                          experts as a list of slots (ascending id) with the tokens of each slot
//   gate/up  grid: as many CTAs as the worst case has items (at most the SMs); items are (expert, group of M 16-row
//            tiles of its width): the shared experts' first, then every active slot's. A CTA takes a contiguous
//            range of the items the step has (n_active read from the route table); CTAs with none exit. Per item
//            the producer streams the gate rows, then the up rows (x all of hidden); the consumers multiply with x_s
//            (tensor cores) and write silu(gate) * up (TA) of the tokens that chose the expert (0 for the others).
//   down     items are (expert, block of M output rows), split the same way; per item the consumers multiply the
//            expert's activations (copied to shared memory when the item's expert changes: contiguous ranges keep
//            that to one or two copies per CTA) -> y (fp32, global). The CTA whose arrival completes a block of rows
//            (a u32 counter per block: the active experts + the shared one) sums the block: out = y_shared + the
//            sum over the token's choices, in its order, of g_e y_e.
// Every chosen expert's weights are read once per step for the whole batch; unchosen experts are never read.
#pragma once
#include <cmath>
#include <cstdint>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/kernels/moe/kernel_params.hpp"
#include "clusterfusion/kernels/moe/traits.hpp"
#include "clusterfusion/pipeline/cross_cta_sum.hpp"
#include "clusterfusion/pipeline/cta.hpp"
#include "clusterfusion/pipeline/norm_prologue.hpp"
#include "clusterfusion/pipeline/ring.hpp"
#include "clusterfusion/pipeline/weight_stream.hpp"
#include "clusterfusion/primitives/warp_argmax.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::moe {
namespace dev = cf::dev;

namespace detail {
CF_DEVICE float warp_max(float v) {
  CF_UNROLL
  for (int m = 16; m >= 1; m >>= 1) v = std::fmax(v, dev::shfl_xor_sync(dev::kFullMask, v, m));
  return v;
}
// The warp's sum, lane 0's bits on every lane (a butterfly's lanes add in different orders).
CF_DEVICE float warp_sum(float v) {
  CF_UNROLL
  for (int m = 16; m >= 1; m >>= 1) v += dev::shfl_xor_sync(dev::kFullMask, v, m);
  return dev::shfl_sync(dev::kFullMask, v, 0);
}
CF_DEVICE int32_t bit_count(uint32_t v) {
  v = v - ((v >> 1) & 0x55555555u);
  v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
  return int32_t((((v + (v >> 4)) & 0x0F0F0F0Fu) * 0x01010101u) >> 24);
}
CF_DEVICE float fresh_load(const float* p) { return *static_cast<const volatile float*>(p); }

// A work item of the expert kernels: a group of the shared experts (slot -1) or of an active slot.
struct Item {
  int32_t slot, group;
};
CF_DEVICE Item item_at(int32_t i, int32_t shared_items, int32_t per_slot) {
  if (i < shared_items) return {-1, i};
  return {(i - shared_items) / per_slot, (i - shared_items) % per_slot};
}
}  // namespace detail

// ---- router ----------------------------------------------------------------------------------------------------

template <typename TA>
struct RouterCta : pl::StreamCta<KernelParams, Barriers, SmallBuffers> {
  const int32_t cta = int32_t(dev::block_idx().x), n_ctas = int32_t(dev::grid_dim().x);
  const int32_t batch = p.batch;
  const pl::Range experts = pl::split_range(p.n_experts, n_ctas, cta);
  const int32_t chunks = pl::ceil_div(p.hidden, kRouterChunkFloats);
  uint8_t* const x_s = p.layout.x.in(smem);

  CF_DEVICE explicit RouterCta(const KernelParams& params) : StreamCta(params, kStatusTimeout) {}
  CF_DEVICE int32_t chunk_floats(int32_t s) const { return pl::chunk_width(p.hidden, kRouterChunkFloats, s); }

  CF_DEVICE void setup() {
    if (tid == 0) {
      ring.init();
      small->abort = 0;
    }
    dev::block_sync();
  }

  // Producer warp: the slice's router rows, chunk by chunk. Returns the items issued.
  CF_DEVICE int32_t produce() {
    pl::PipelineState st;
    int32_t issued_end = 0;
    for (int32_t e = experts.begin; e < experts.end; ++e)
      for (int32_t s = 0; s < chunks; ++s) {
        const uint32_t bytes = uint32_t(chunk_floats(s)) * 4u;
        const bool issue = ring.producer_acquire(st, bytes, kWaitRingStage);
        if (issue && lane == 0)
          dev::bulk_copy_g2s(ring.stage(st), p.router + int64_t(e) * p.hidden + s * kRouterChunkFloats, bytes,
                             ring.full_barrier(st));
        ring.producer_commit(st, issue, issued_end);
      }
    return issued_end;
  }

  // 1. Consumers: x_s over the whole of hidden.
  CF_DEVICE void norm() const {
    const pl::NormPrologue<TA> np{static_cast<const TA*>(p.hidden_in), static_cast<const TA*>(p.residual),
                                  static_cast<const TA*>(p.norm), p.hidden, batch, 0, p.hidden, small->norm_red};
    np.run(tid, p.eps, small->inv_rms, x_s, p.layout.x_stride);
  }

  // acc += x[b][c0 + c ..] . w[c ..] over a chunk of n columns (lanes 4 columns apart).
  CF_DEVICE void dot_chunk(const float* w, int32_t n, int32_t b, int32_t c0, float& acc) const {
    const uint8_t* xb = x_s + uint32_t(b) * p.layout.x_stride + uint32_t(c0) * 2;
    for (int32_t c = int32_t(lane) * 4; c < n; c += 128) {
      const dev::U32x4 wv = dev::load16(w + c);
      const uint32_t* xw = reinterpret_cast<const uint32_t*>(xb + uint32_t(c) * 2);  // 8-byte aligned
      const dev::Float2 x01 = prim::unpack2<TA>(xw[0]), x23 = prim::unpack2<TA>(xw[1]);
      acc += x01.x * prim::as_float(wv.x) + x01.y * prim::as_float(wv.y) + x23.x * prim::as_float(wv.z) +
             x23.y * prim::as_float(wv.w);
    }
  }

  // 2. Consumers: warp w the logits of tokens w and w + 8 for every expert of the slice.
  CF_DEVICE void logits() {
    pl::PipelineState st;
    for (int32_t e = experts.begin; e < experts.end; ++e) {
      float acc[2] = {0.0f, 0.0f};
      for (int32_t s = 0; s < chunks; ++s) {
        if (ring.consumer_wait(st, kWaitRouterTile)) {
          const float* w = reinterpret_cast<const float*>(ring.stage(st));
          for (int j = 0; j < 2; ++j) {
            const int32_t b = int32_t(warp) + 8 * j;
            if (b < batch) dot_chunk(w, chunk_floats(s), b, s * kRouterChunkFloats, acc[j]);
          }
        }
        ring.consumer_release(st);
      }
      for (int j = 0; j < 2; ++j) {
        const int32_t b = int32_t(warp) + 8 * j;
        if (b >= batch) continue;  // warp-uniform
        const float logit = detail::warp_sum(acc[j]);
        if (lane == 0) p.logits[b * p.n_experts + e] = logit;
      }
    }
  }

  // 3. Last arriver: residual_out = h + r and the normed x (x_s) to global, 8 columns per thread and step. Every CTA
  // has read hidden / residual before it arrived, so residual_out may alias them.
  CF_DEVICE void write_activations() const {
    const pl::NormPrologue<TA> np{static_cast<const TA*>(p.hidden_in), static_cast<const TA*>(p.residual),
                                  static_cast<const TA*>(p.norm), p.hidden, batch, 0, p.hidden, small->norm_red};
    for (int32_t i = int32_t(tid); i < batch * p.hidden / 8; i += pl::kConsumerThreads) {
      const int32_t b = i * 8 / p.hidden, c = i * 8 % p.hidden;
      float v[8];
      np.load_sum8(b, c, v);
      const int64_t at = int64_t(b) * p.hidden + c;
      dev::store16(static_cast<TA*>(p.residual_out) + at,
                   {prim::pack2<TA>(v[0], v[1]), prim::pack2<TA>(v[2], v[3]), prim::pack2<TA>(v[4], v[5]),
                    prim::pack2<TA>(v[6], v[7])});
      dev::store16(static_cast<TA*>(p.x) + at, dev::load16(x_s + uint32_t(b) * p.layout.x_stride + uint32_t(c) * 2));
    }
  }

  // 3. group_limited_greedy: scores of experts outside the topk_group groups with the best single scores -> 0.
  CF_DEVICE void keep_best_groups(float (&score)[kScoresPerLane]) const {
    const int32_t per_group = p.n_experts / p.n_group;
    float my_group_best = 0.0f;  // lane g: the best score of group g
    for (int32_t g = 0; g < p.n_group; ++g) {
      float best = -INFINITY;
      CF_UNROLL
      for (int j = 0; j < kScoresPerLane; ++j) {
        const int32_t e = int32_t(lane) + 32 * j;
        if (e < p.n_experts && e / per_group == g) best = std::fmax(best, score[j]);
      }
      best = detail::warp_max(best);
      if (int32_t(lane) == g) my_group_best = best;
    }
    uint32_t kept = 0;
    for (int32_t k = 0; k < p.topk_group; ++k) {
      float value = my_group_best;
      int32_t index = int32_t(lane) < p.n_group && !((kept >> lane) & 1u) ? int32_t(lane) : -1;
      prim::warp_best(value, index);
      kept |= 1u << index;
    }
    CF_UNROLL
    for (int j = 0; j < kScoresPerLane; ++j) {
      const int32_t e = int32_t(lane) + 32 * j;
      if (e < p.n_experts && !((kept >> (e / per_group)) & 1u)) score[j] = 0.0f;
    }
  }

  // 3. One warp, token b: softmax of its logits, the eligible experts, top_k picks (score descending, lower id on
  // ties), the weights (renormalised, scaled) -> small->token_expert / token_weight.
  CF_DEVICE void route_token(int32_t b) const {
    const float* row = p.logits + b * p.n_experts;  // other CTAs' stores of this launch: fresh loads
    float score[kScoresPerLane];
    float max_logit = -INFINITY;
    CF_UNROLL
    for (int j = 0; j < kScoresPerLane; ++j) {
      const int32_t e = int32_t(lane) + 32 * j;
      score[j] = e < p.n_experts ? detail::fresh_load(row + e) : -INFINITY;
      max_logit = std::fmax(max_logit, score[j]);
    }
    max_logit = detail::warp_max(max_logit);
    float sum = 0.0f;
    CF_UNROLL
    for (int j = 0; j < kScoresPerLane; ++j)
      if (int32_t(lane) + 32 * j < p.n_experts) score[j] = std::exp(score[j] - max_logit), sum += score[j];
    sum = detail::warp_sum(sum);
    CF_UNROLL
    for (int j = 0; j < kScoresPerLane; ++j) score[j] /= sum;
    if (p.group_limited) keep_best_groups(score);
    uint32_t picked = 0;  // bit j: this lane's expert lane + 32 j is taken
    for (int32_t k = 0; k < p.top_k; ++k) {
      float value = -INFINITY;
      int32_t index = -1;
      CF_UNROLL
      for (int j = 0; j < kScoresPerLane; ++j) {
        const int32_t e = int32_t(lane) + 32 * j;
        if (e < p.n_experts && !((picked >> j) & 1u) && prim::beats(score[j], e, value, index))
          value = score[j], index = e;
      }
      prim::warp_best(value, index);
      if (index % 32 == int32_t(lane)) picked |= 1u << (index / 32);
      if (lane == 0) small->token_expert[b][k] = index, small->token_weight[b][k] = value;
    }
    if (lane == 0) {
      float total = 0.0f;
      for (int32_t k = 0; k < p.top_k; ++k) total += small->token_weight[b][k];
      for (int32_t k = 0; k < p.top_k; ++k) {
        float g = small->token_weight[b][k];
        if (p.norm_topk_prob && p.top_k > 1) g /= total;
        small->token_weight[b][k] = g * p.routed_scaling;
      }
    }
  }

  // 3. Warp 0: the chosen experts of the batch as slots in ascending id (ballots), into the route table.
  CF_DEVICE void list_slots() const {
    int32_t count = 0;
    for (int32_t base = 0; base < p.n_experts; base += 32) {
      const int32_t e = base + int32_t(lane);
      uint32_t tokens = 0;
      if (e < p.n_experts)
        for (int32_t b = 0; b < batch; ++b)
          for (int32_t k = 0; k < p.top_k; ++k)
            if (small->token_expert[b][k] == e) tokens |= 1u << b;
      const uint32_t chosen = dev::ballot_sync(dev::kFullMask, tokens != 0);
      const int32_t slot = count + detail::bit_count(chosen & ((1u << lane) - 1u));
      if (e < p.n_experts) small->expert_slot[e] = tokens ? slot : -1;
      if (tokens) {
        p.route.slot_expert[slot] = e;
        p.route.slot_tokens[slot] = tokens;
      }
      count += detail::bit_count(chosen);
    }
    if (lane == 0) *p.route.n_active = count;
  }

  // 3. Consumers: the CTA whose arrival completes the logits routes the batch.
  CF_DEVICE void route_if_last() {
    pl::consumers_sync();  // this CTA's logits are stored
    if (tid == 0) small->last_flag = pl::arrive_last(p.router_counter, uint32_t(n_ctas)) ? 1u : 0u;
    pl::consumers_sync();
    if (!small->last_flag) return;
    write_activations();
    for (int32_t b = int32_t(warp); b < batch; b += pl::kConsumerWarps) route_token(b);
    pl::consumers_sync();
    if (warp == 0) list_slots();
    pl::consumers_sync();
    for (int32_t i = int32_t(tid); i < batch * p.top_k; i += pl::kConsumerThreads) {
      const int32_t b = i / p.top_k, k = i % p.top_k, e = small->token_expert[b][k];
      const float g = small->token_weight[b][k];
      p.route.token_slot[i] = small->expert_slot[e];
      p.route.token_weight[i] = g;
      if (p.expert_ids) p.expert_ids[i] = e;
      if (p.expert_weights) p.expert_weights[i] = g;
    }
  }

  CF_DEVICE void finish(int32_t issued_end) const { end_ring(issued_end, kStatusDrainTimeout, kWaitDrain); }
};

template <typename TA>
CF_GLOBAL void CF_LAUNCH_BOUNDS(pl::kThreads, 1) moe_router_kernel(const CF_GRID_CONSTANT KernelParams p) {
  RouterCta<TA> cta(p);
  cta.setup();
  int32_t issued_end = 0;  // producer: ring items [0, issued_end) were issued (none after an abort)
  if (cta.is_producer()) {
    issued_end = cta.produce();
  } else {
    cta.norm();
    cta.logits();
    cta.route_if_last();
  }
  cta.finish(issued_end);
}

// ---- the expert kernels ----------------------------------------------------------------------------------------

// What gate/up and down share: the CTA's range of the step's items (the active slots from the
// route table the router wrote), the expert of a slot, the tokens that chose it.
struct ExpertCta : pl::StreamCta<KernelParams, Barriers, SmallBuffers> {
  const int32_t cta = int32_t(dev::block_idx().x), n_ctas = int32_t(dev::grid_dim().x);
  const int32_t batch = p.batch;
  const int32_t n_active = *p.route.n_active;  // written by the router launch
  const bool has_shared = p.shared_ffn > 0;
  float* const scratch = p.layout.scratch.in(smem);

  CF_DEVICE explicit ExpertCta(const KernelParams& params) : StreamCta(params, kStatusTimeout) {}
  // This CTA's items of the step's `items`.
  CF_DEVICE pl::Range my_items(int32_t items) const { return pl::split_range(items, n_ctas, cta); }

  CF_DEVICE void setup() {
    if (tid == 0) {
      ring.init();
      small->abort = 0;
    }
    dev::block_sync();
  }
  CF_DEVICE int32_t expert_of(int32_t slot) const { return p.route.slot_expert[slot]; }
  CF_DEVICE uint32_t tokens_of(int32_t slot) const { return slot < 0 ? ~0u : p.route.slot_tokens[slot]; }

  // Consumers, end of a group: the k-group partials summed in order; value(e, v) for e = row * batch + token.
  template <int kBatchTiles, typename F>
  CF_DEVICE void for_group_values(const float (&acc)[kBatchTiles][4], int32_t tiles, int32_t nt, F&& value) const {
    pl::store_group_partials<kBatchTiles>(scratch, tiles, nt, batch, warp, lane, acc);
    pl::consumers_sync();
    for (int32_t e = int32_t(tid); e < nt * pl::kTileRows * batch; e += pl::kConsumerThreads)
      value(e, pl::group_value(scratch, tiles, batch, e));
    pl::consumers_sync();  // the scratch is rewritten by the next group
  }

  CF_DEVICE void finish(int32_t issued_end) const { end_ring(issued_end, kStatusDrainTimeout, kWaitDrain); }
};

// gate/up: an item is M tiles (16 M rows) of an expert's width; its gate rows, then its up rows, x all of hidden.
template <typename TW, typename TA, int kBatchTiles>
struct GateUpCta : ExpertCta {
  const int32_t items = p.split.gu_groups_shared + n_active * p.split.gu_groups;
  const pl::Range mine = my_items(items);
  uint8_t* const x_s = p.layout.x.in(smem);
  float* const gate_s = p.layout.gate.in(smem);
  const int32_t chunks = pl::ceil_div(p.hidden, p.split.gu_cols);

  struct Panel {
    const pl::BoxMaps* maps;
    int32_t slot, f0, n_tiles;  // rows f0 .. f0 + 16 n_tiles of the expert's width
    int32_t gate_row0, up_row0;  // in the map's matrix
  };

  CF_DEVICE explicit GateUpCta(const KernelParams& params) : ExpertCta(params) {}

  CF_DEVICE Panel panel(int32_t i) const {
    const detail::Item it = detail::item_at(i, p.split.gu_groups_shared, p.split.gu_groups);
    const int32_t width = it.slot < 0 ? p.shared_ffn : p.expert_ffn;
    const int32_t base = it.slot < 0 ? 0 : expert_of(it.slot) * 2 * p.expert_ffn;
    const int32_t f0 = it.group * p.split.gu_tiles * pl::kTileRows;
    const int32_t left = (width - f0) / pl::kTileRows;
    return {it.slot < 0 ? &p.shared_gate_up : &p.gate_up, it.slot, f0,
            left < p.split.gu_tiles ? left : p.split.gu_tiles, base + f0, base + width + f0};
  }

  // Producer warp: per item the gate panels, then the up panels. Returns the items issued.
  CF_DEVICE int32_t produce() {
    pl::PipelineState st;
    int32_t issued_end = 0;
    for (int32_t i = mine.begin; i < mine.end; ++i) {
      const Panel pn = panel(i);
      for (int half = 0; half < 2; ++half)
        for (int32_t s = 0; s < chunks; ++s)
          pl::load_panel(ring, st, issued_end, kWaitRingStage, *pn.maps, pl::chunk_width(p.hidden, p.split.gu_cols, s),
                         half == 0 ? pn.gate_row0 : pn.up_row0, pn.n_tiles, s * p.split.gu_cols);
    }
    return issued_end;
  }

  // 1. Consumers: the normed input (the router's) -> x_s.
  CF_DEVICE void load_x() const {
    const int32_t per_row = p.hidden / 8;
    for (int32_t i = int32_t(tid); i < batch * per_row; i += pl::kConsumerThreads) {
      const int32_t b = i / per_row, c = i % per_row * 8;
      dev::store16(x_s + uint32_t(b) * p.layout.x_stride + uint32_t(c) * 2,
                   dev::load16(static_cast<const TA*>(p.x) + int64_t(b) * p.hidden + c));
    }
    pl::consumers_sync();
  }

  // 2. Consumers: one panel group (gate or up rows) x x_s.
  CF_DEVICE void multiply(pl::PipelineState& st, const Panel& pn, float (&acc)[kBatchTiles][4]) const {
    for (int32_t s = 0; s < chunks; ++s) {
      if (ring.consumer_wait(st, kWaitGateUpTile))
        pl::panel_mma<TW, TA, kBatchTiles>(ring.stage(st), p.split.gu_tiles, pn.n_tiles,
                                           pl::chunk_width(p.hidden, p.split.gu_cols, s), x_s, p.layout.x_stride,
                                           s * p.split.gu_cols, p.hidden, batch, warp, lane, acc);
      ring.consumer_release(st);
    }
  }

  // 2. Consumers: an item's gate rows (kept in gate_s), its up rows, silu(gate) * up (TA) to the workspace for the
  // tokens that chose the expert, 0 for the others.
  CF_DEVICE void item(pl::PipelineState& st, int32_t i) const {
    const Panel pn = panel(i);
    const int32_t width = pn.slot < 0 ? p.shared_ffn : p.expert_ffn;
    TA* const act = pn.slot < 0 ? static_cast<TA*>(p.act_shared)
                                : static_cast<TA*>(p.act) + int64_t(pn.slot) * batch * p.expert_ffn;
    const uint32_t tokens = tokens_of(pn.slot);
    float acc[kBatchTiles][4] = {};
    multiply(st, pn, acc);
    for_group_values<kBatchTiles>(acc, p.split.gu_tiles, pn.n_tiles, [&](int32_t e, float g) { gate_s[e] = g; });
    float acc_up[kBatchTiles][4] = {};
    multiply(st, pn, acc_up);
    for_group_values<kBatchTiles>(acc_up, p.split.gu_tiles, pn.n_tiles, [&](int32_t e, float u) {
      const int32_t row = e / batch, b = e % batch;
      const float g = gate_s[e];
      const float a = (tokens >> b) & 1u ? g / (1.0f + std::exp(-g)) * u : 0.0f;
      act[int64_t(b) * width + pn.f0 + row] = dev::from_float<TA>(a);
    });
  }

  CF_DEVICE void run() {
    if (mine.size() == 0) return;
    load_x();
    pl::PipelineState st;
    for (int32_t i = mine.begin; i < mine.end; ++i) item(st, i);
  }
};

// down: an item is M tiles (16 M output rows) of an expert; x its activations over the expert's whole width.
template <typename TW, typename TA, int kBatchTiles>
struct DownCta : ExpertCta {
  const int32_t shared_items = has_shared ? p.split.row_groups : 0;
  const int32_t items = shared_items + n_active * p.split.row_groups;
  const pl::Range mine = my_items(items);
  uint8_t* const act_s = p.layout.act.in(smem);

  struct Panel {
    const pl::BoxMaps* maps;
    int32_t slot, group, width;  // width: the expert's (K)
    int32_t h0, n_tiles;         // output rows h0 .. h0 + 16 n_tiles
    int32_t row0;                // in the map's matrix
  };

  CF_DEVICE explicit DownCta(const KernelParams& params) : ExpertCta(params) {}

  CF_DEVICE Panel panel(int32_t i) const {
    const detail::Item it = detail::item_at(i, shared_items, p.split.row_groups);
    const int32_t h0 = it.group * p.split.down_tiles * pl::kTileRows;
    const int32_t left = (p.hidden - h0) / pl::kTileRows;
    const int32_t row0 = (it.slot < 0 ? 0 : expert_of(it.slot) * p.hidden) + h0;
    return {it.slot < 0 ? &p.shared_down : &p.down, it.slot, it.group, it.slot < 0 ? p.shared_ffn : p.expert_ffn, h0,
            left < p.split.down_tiles ? left : p.split.down_tiles, row0};
  }
  CF_DEVICE int32_t chunks(const Panel& pn) const { return pl::ceil_div(pn.width, p.split.down_cols); }

  // Producer warp: per item its rows x the expert's width, chunk by chunk. Returns the items issued.
  CF_DEVICE int32_t produce() {
    pl::PipelineState st;
    int32_t issued_end = 0;
    for (int32_t i = mine.begin; i < mine.end; ++i) {
      const Panel pn = panel(i);
      for (int32_t s = 0; s < chunks(pn); ++s)
        pl::load_panel(ring, st, issued_end, kWaitRingStage, *pn.maps, pl::chunk_width(pn.width, p.split.down_cols, s),
                       pn.row0, pn.n_tiles, s * p.split.down_cols);
    }
    return issued_end;
  }

  // Consumers: the activations of a slot (written by the gate/up launch) -> act_s.
  CF_DEVICE void load_act(const Panel& pn) const {
    const TA* act = pn.slot < 0 ? static_cast<const TA*>(p.act_shared)
                                : static_cast<const TA*>(p.act) + int64_t(pn.slot) * batch * p.expert_ffn;
    const int32_t per_row = pn.width / 8;
    pl::consumers_sync();  // the previous slot's reads are done
    for (int32_t i = int32_t(tid); i < batch * per_row; i += pl::kConsumerThreads) {
      const int32_t b = i / per_row, c = i % per_row * 8;
      dev::store16(act_s + uint32_t(b) * p.layout.act_stride + uint32_t(c) * 2,
                   dev::load16(act + int64_t(b) * pn.width + c));
    }
    pl::consumers_sync();
  }

  // Last arriver of a block of rows: out = y_shared + sum over each token's choices, in its order, of g_e y_e.
  CF_DEVICE void sum_block(const Panel& pn) const {
    const int32_t rows = pn.n_tiles * pl::kTileRows;
    for (int32_t i = int32_t(tid); i < batch * rows; i += pl::kConsumerThreads) {
      const int32_t b = i / rows, h = pn.h0 + i % rows;
      float total = has_shared ? detail::fresh_load(p.y_shared + int64_t(b) * p.hidden + h) : 0.0f;
      for (int32_t k = 0; k < p.top_k; ++k) {
        const int32_t slot = p.route.token_slot[b * p.top_k + k];
        total += p.route.token_weight[b * p.top_k + k] *
                 detail::fresh_load(p.y + (int64_t(slot) * batch + b) * p.hidden + h);
      }
      static_cast<TA*>(p.out)[int64_t(b) * p.hidden + h] = dev::from_float<TA>(total);
    }
  }

  // Consumers: an item's rows -> y; the arrival on its block, the block's sum if this CTA completed it.
  CF_DEVICE void item(pl::PipelineState& st, int32_t i, int32_t& loaded_slot) const {
    const Panel pn = panel(i);
    if (pn.slot != loaded_slot) load_act(pn);
    loaded_slot = pn.slot;
    float acc[kBatchTiles][4] = {};
    for (int32_t s = 0; s < chunks(pn); ++s) {
      if (ring.consumer_wait(st, kWaitDownTile))
        pl::panel_mma<TW, TA, kBatchTiles>(ring.stage(st), p.split.down_tiles, pn.n_tiles,
                                           pl::chunk_width(pn.width, p.split.down_cols, s), act_s, p.layout.act_stride,
                                           s * p.split.down_cols, pn.width, batch, warp, lane, acc);
      ring.consumer_release(st);
    }
    float* const y = pn.slot < 0 ? p.y_shared : p.y + int64_t(pn.slot) * batch * p.hidden;
    for_group_values<kBatchTiles>(acc, p.split.down_tiles, pn.n_tiles, [&](int32_t e, float v) {
      y[int64_t(e % batch) * p.hidden + pn.h0 + e / batch] = v;
    });
    const uint32_t arrivals = uint32_t(n_active + (has_shared ? 1 : 0));
    if (tid == 0) small->last_flag = pl::arrive_last(p.row_counters + pn.group, arrivals) ? 1u : 0u;
    pl::consumers_sync();
    if (small->last_flag) sum_block(pn);
  }

  CF_DEVICE void run() {
    pl::PipelineState st;
    int32_t loaded_slot = -2;  // none
    for (int32_t i = mine.begin; i < mine.end; ++i) item(st, i, loaded_slot);
  }
};

// An expert kernel's CTA: the producer streams its items, the consumers run them.
template <typename Cta>
CF_DEVICE void run_expert_cta(const KernelParams& p) {
  Cta cta(p);
  cta.setup();
  int32_t issued_end = 0;  // producer: ring items [0, issued_end) were issued (none after an abort)
  if (cta.is_producer()) issued_end = cta.produce();
  else cta.run();
  cta.finish(issued_end);
}

template <typename TW, typename TA, int kBatchTiles>
CF_GLOBAL void CF_LAUNCH_BOUNDS(pl::kThreads, 1) moe_gate_up_kernel(const CF_GRID_CONSTANT KernelParams p) {
  run_expert_cta<GateUpCta<TW, TA, kBatchTiles>>(p);
}

template <typename TW, typename TA, int kBatchTiles>
CF_GLOBAL void CF_LAUNCH_BOUNDS(pl::kThreads, 1) moe_down_kernel(const CF_GRID_CONSTANT KernelParams p) {
  run_expert_cta<DownCta<TW, TA, kBatchTiles>>(p);
}

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::moe
