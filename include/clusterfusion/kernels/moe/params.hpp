// Parameters of the fused MoE FFN block (docs/mla.md §2; semantics of cf::ref::moe_ffn after the residual add +
// RMSNorm of the block input): router softmax (fp32), top-k selection (ties: lower expert id), only the chosen
// experts' weights read (each chosen expert once for the whole batch), the shared experts beside them.
//
// Layouts (row-major): activations [batch, hidden]; norm [hidden]; router [n_experts, hidden] fp32;
//   w_gate_up [n_experts, 2 expert_ffn, hidden] (per expert its gate rows, then its up rows);
//   w_down [n_experts, hidden, expert_ffn]; shared_gate_up [2 shared_ffn, hidden]; shared_down [hidden, shared_ffn].
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/device/types.hpp"
#include "clusterfusion/kernels/element_types.hpp"
#include "clusterfusion/model/types.hpp"  // cf::MoeBlockShape

namespace cf::kernels::inline CF_BUILD_NAMESPACE::moe {

inline constexpr int kMaxBatch = 16;

using Shape = MoeBlockShape;

struct Weights {
  const void* norm = nullptr;            // [hidden]
  const float* router = nullptr;         // [n_experts, hidden] fp32
  const void* w_gate_up = nullptr;       // [n_experts, 2 expert_ffn, hidden]
  const void* w_down = nullptr;          // [n_experts, hidden, expert_ffn]
  const void* shared_gate_up = nullptr;  // [2 shared_ffn, hidden]; null when shared_ffn == 0
  const void* shared_down = nullptr;     // [hidden, shared_ffn]
};

struct PlanConfig {
  DType dtype = DType::F16;           // activations and outputs: F16 or BF16
  std::optional<DType> weight_dtype;  // unset: dtype (the router stays fp32)
  Shape shape;
  Weights weights;
  int max_batch = 1;     // 1..16
  int cluster_size = 0;  // 0: the launcher picks
  int max_clusters = 0;  // 0: as many as run at once; else at most this many
  int sm_count = 0;      // 0: the device's (the emulator assumes 132)
  int max_stages = 0;    // 0: as many ring stages as fit (up to pipeline::kMaxStages); else at most this many (>= 4)
  int64_t wait_budget_us = 20000;

  ElementTypes element_types() const { return ElementTypes::of(dtype, weight_dtype); }
};

struct StepArgs {
  int batch = 0;                   // 1..max_batch
  const void* hidden = nullptr;    // [batch, hidden]
  const void* residual = nullptr;  // optional [batch, hidden]; null: residual_out = hidden
  void* residual_out = nullptr;    // [batch, hidden]; may alias hidden or residual
  void* out = nullptr;             // [batch, hidden]; may alias hidden or residual, not residual_out
  int32_t* expert_ids = nullptr;   // optional out [batch, top_k]: the chosen experts, by weight descending
  float* expert_weights = nullptr; // optional out [batch, top_k]: their weights g_e (after renormalise / scale)
};

enum StatusBit : uint32_t {
  kStatusTimeout = 0,  // words 0-1: a wait gave up (prim::timeout_status of its site and block)
  kStatusDrainTimeout = 2,  // words 2-3: after that, a copy into shared memory did not land either (fatal)
  kStatusWords = 4,
};

// Device limits of the kernels (validate_shape): a token's router scores live in one warp's registers (8 a lane),
// the groups of group_limited_greedy in one warp's lanes.
inline constexpr int kMaxExperts = 256;
inline constexpr int kMaxTopK = 16;
inline constexpr int kMaxGroups = 32;

// The bounded waits of the kernels (prim::bounded_wait), named by Plan::check_status() when one expires.
enum WaitSite : uint32_t {
  kWaitRingStage = 1,  // producer: a ring stage the consumers never released
  kWaitRouterTile,     // router: a router row chunk that never landed
  kWaitGateUpTile,     // gate/up: a weight panel that never landed
  kWaitDownTile,       // down: a weight panel that never landed
  kWaitDrain,          // producer, after an expiry: a copy it issued that never landed
};

inline std::string describe_wait_site(uint32_t code) {
  switch (code) {
    case kWaitRingStage: return "producer: waiting for the consumers to release a ring stage";
    case kWaitRouterTile: return "router: waiting for a router row chunk";
    case kWaitGateUpTile: return "gate/up: waiting for a weight panel";
    case kWaitDownTile: return "down: waiting for a weight panel";
    case kWaitDrain: return "producer: draining its copies after the timeout";
    default: return "wait " + std::to_string(code);
  }
}

// Host validation (one-line cf::InputError naming the field), implemented beside the kernels.
void validate_shape(const Shape& s);
void validate_config(const PlanConfig& c);
void validate_step(const StepArgs& a, int max_batch);

}  // namespace cf::kernels::moe
