// The argument block of the three MoE kernels (router, gate/up, down), built by the plan (src/kernels/moe) and passed
// by value as a __grid_constant__: one struct for the block, of which each launch gets a copy with its own carve and
// ring depth. Contains dev::TensorMap, whose layout differs between the CUDA and the emulator build: include it only
// from code compiled for one build (kernel.hpp, the plan, the instantiations).
#pragma once
#include <cstdint>

#include "clusterfusion/device/tensor_map.hpp"
#include "clusterfusion/kernels/moe/params.hpp"
#include "clusterfusion/kernels/moe/traits.hpp"
#include "clusterfusion/pipeline/weight_stream.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::moe {

// The routing of a step, written by the router's last arriver and read by the expert kernels (global workspace).
struct RouteTable {
  int32_t* n_active;       // [1] chosen experts of the batch (the union)
  int32_t* slot_expert;    // [max_slots] their ids, ascending
  uint32_t* slot_tokens;   // [max_slots] bit b: token b chose the slot's expert
  int32_t* token_slot;     // [max_batch][top_k] the slot of each token's k-th choice
  float* token_weight;     // [max_batch][top_k] its weight g_e
};

struct KernelParams {
  // weights: boxes {cols, 16} of the full chunk width and the tail (PanelStage)
  pl::BoxMaps gate_up;         // routed experts stacked: [n_experts 2 expert_ffn, hidden]
  pl::BoxMaps down;            // [n_experts hidden, expert_ffn]
  pl::BoxMaps shared_gate_up;  // [2 shared_ffn, hidden]
  pl::BoxMaps shared_down;     // [hidden, shared_ffn]
  const float* router;         // [n_experts, hidden] fp32
  const void* norm;            // [hidden]

  // shape and routing rule
  int32_t hidden, n_experts, top_k, expert_ffn, shared_ffn;
  int32_t group_limited, n_group, topk_group;  // group_limited: ExpertSelection::GroupLimitedGreedy
  int32_t norm_topk_prob;
  float routed_scaling, eps;
  Split split;

  // step
  int32_t batch;
  const void* hidden_in;
  const void* residual;
  void* residual_out;
  void* out;
  int32_t* expert_ids;      // optional [batch, top_k]
  float* expert_weights;    // optional [batch, top_k]

  // workspace
  void* x;                  // [max_batch, hidden] TA: the normed input (router's last arriver)
  float* logits;            // [max_batch, n_experts] router logits
  uint32_t* router_counter; // arrivals of the router CTAs (reset by the last arriver)
  RouteTable route;
  void* act;                // [max_slots, max_batch, expert_ffn] TA: silu(gate) * up of the active slots
  void* act_shared;         // [max_batch, shared_ffn] TA
  float* y;                 // [max_slots, max_batch, hidden] fp32: each active expert's output
  float* y_shared;          // [max_batch, hidden] fp32
  uint32_t* row_counters;   // [row_groups] arrivals per block of output rows (reset by the last arriver)
  uint32_t* status;         // [kStatusWords]
  uint64_t wait_budget_ns;  // a wait that takes longer gives up (prim::bounded_wait; 0: never)

  int32_t stages;
  Layout layout;            // this launch's shared-memory carve (traits.hpp)
};

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::moe
