// Parameters of the fused FFN block (docs/ffn.md; semantics of cf::ref::ffn_block).
//
//   PlanConfig  what stays fixed for a layer: shapes, dtype, weights, the largest batch, optionally the cluster size,
//               the cluster count and the stage geometry. validate_config() throws cf::InputError naming the field.
//   StepArgs    what changes every call: activations and the batch size. validate_step() checks them on the host.
// The kernel's own argument block (tensor maps, derived sizes, the shared-memory carve) is KernelParams in
// kernel_params.hpp; it differs between the CUDA and emulator builds, so host code includes only this header and
// launch.hpp.
//
// Layouts (row-major, outermost first): activations [batch, hidden]; w_gate, w_up [ffn_hidden, hidden]; w_down
// [hidden, ffn_hidden]; norm [hidden]. A fused gate/up matrix [2 ffn_hidden, hidden] (gate rows, then up rows, the
// cuda-unfused layout) is w_gate = p, w_up = p + ffn_hidden * hidden elements (set_fused_gate_up).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/device/types.hpp"
#include "clusterfusion/kernels/element_types.hpp"
#include "clusterfusion/model/types.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::ffn {

inline constexpr int kMaxBatch = 16;

using Shape = FfnBlockShape;  // hidden: a multiple of 32; ffn_hidden: a multiple of 16 (model/types.hpp)

struct Weights {
  const void* norm = nullptr;    // [hidden]
  const void* w_gate = nullptr;  // [ffn_hidden, hidden]
  const void* w_up = nullptr;    // [ffn_hidden, hidden]
  const void* w_down = nullptr;  // [hidden, ffn_hidden]

  // The fused [2 ffn_hidden, hidden] form: gate rows, then up rows.
  void set_fused_gate_up(const void* w_gate_up, const Shape& s, DType weight_dtype) {
    w_gate = w_gate_up;
    w_up = static_cast<const uint8_t*>(w_gate_up) + int64_t(s.ffn_hidden) * s.hidden * dtype_bytes(weight_dtype);
  }
};

struct PlanConfig {
  DType dtype = DType::F16;           // activations and outputs: F16 or BF16
  std::optional<DType> weight_dtype;  // unset: dtype (kernels/element_types.hpp)
  Shape shape;
  Weights weights;
  int max_batch = 1;      // 1..16
  int cluster_size = 0;   // 0: the launcher picks (docs/ffn.md §2); else 2, 4 or 8
  int max_clusters = 0;   // 0: as many clusters as run at once on the device; else at most this many
  int sm_count = 0;       // 0: the device's (the emulator assumes 132)
  int max_stages = 0;     // 0: as many ring stages as fit (up to kMaxStages)
  int stage_units = 0;    // 0: default (4); else 2, 4 or 8: gate/up chunks of 32 x stage_units columns (docs/ffn.md §1)
  int64_t wait_budget_us = 20000;  // wall time any wait inside the kernel may take before the launch gives up with
                                   // a timeout status (a hang; check_status() names the wait); 0: no limit
  bool trace = false;              // record per-CTA phase timestamps (Plan::read_trace), for performance work

  ElementTypes element_types() const { return ElementTypes::of(dtype, weight_dtype); }
};

struct StepArgs {
  int batch = 0;                   // 1..max_batch
  const void* hidden = nullptr;    // [batch, hidden]
  const void* residual = nullptr;  // optional [batch, hidden]; null: residual_out = hidden
  void* residual_out = nullptr;    // [batch, hidden]; may alias hidden or residual
  void* out = nullptr;             // [batch, hidden]; may alias hidden or residual
};

// Problems the kernel reports through the device status words (Plan::check_status()).
enum StatusBit : uint32_t {
  kStatusTimeout = 0,       // words 0-1: a wait gave up after PlanConfig::wait_budget_us (a hang): the 64-bit
                            // prim::timeout_status of its WaitSite and block
  kStatusDrainTimeout = 2,  // words 2-3: after that, a copy into shared memory did not land either (fatal)
  kStatusWords = 4,
};
// The bounded waits of the kernel (prim::bounded_wait), named by Plan::check_status() when one expires.
enum WaitSite : uint32_t {
  kWaitRingStage = 1,  // producer: a ring stage the consumers never released
  kWaitGateUpTile,     // consumers: a gate/up tile that never landed
  kWaitDownTile,       // consumers: a down tile that never landed
  kWaitDrain,          // producer, after an expiry: a copy it issued that never landed
  kWaitNormSums,       // consumers: the cluster peers' sums of squares
  kWaitPartials,       // consumers: the cluster peers' gate/up partials
  kWaitActivations,    // consumers: the activations the cluster peers push
  kWaitStored,         // arrival warp: the consumers' partials of an output block
  kWaitDecided,        // consumers: the arrival warp's decision on an output block
};
// Phase timestamps (SM clock cycles) per CTA, recorded with PlanConfig::trace (Plan::read_trace).
enum TracePoint : uint32_t {
  kTraceStart = 0,       // after the start-up cluster barrier
  kTraceNormDone,        // x_s written
  kTraceGateUpDone,      // this CTA's gate/up partials stored
  kTraceActDone,         // the cluster's activations here (down starts)
  kTraceDownDone,        // every down partial stored
  kTraceEnd,             // this CTA's output blocks summed
  kTraceProducerGateUp,  // producer: last gate/up tile issued
  kTraceProducerDown,    // producer: last down tile issued
  kTraceSlots,
};

inline std::string describe_wait_site(uint32_t code) {
  switch (code) {
    case kWaitRingStage: return "producer: waiting for the consumers to release a ring stage";
    case kWaitGateUpTile: return "gate/up: waiting for a weight tile";
    case kWaitDownTile: return "down: waiting for a weight tile";
    case kWaitDrain: return "producer: draining its copies after the timeout";
    case kWaitNormSums: return "norm: waiting for the cluster peers' sums of squares";
    case kWaitPartials: return "act: waiting for the cluster peers' gate/up partials";
    case kWaitActivations: return "down: waiting for the activations of the cluster peers";
    case kWaitStored: return "arrival warp: waiting for the consumers' partials of an output block";
    case kWaitDecided: return "down: waiting for the arrival warp's decision on an output block";
    default: return "wait " + std::to_string(code);
  }
}

// ---- host validation --------------------------------------------------------------------------------------------

namespace detail {
inline std::string where(const char* what) { return std::string("ffn: ") + what; }
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
}  // namespace detail

inline void validate_shape(const Shape& s) {
  auto fail = [](const std::string& m) { throw InputError(detail::where("shape: ") + m); };
  if (s.hidden < 32 || s.hidden % 32 != 0)
    fail("hidden " + std::to_string(s.hidden) + " must be a positive multiple of 32");
  if (s.ffn_hidden < 16 || s.ffn_hidden % 16 != 0)
    fail("ffn_hidden " + std::to_string(s.ffn_hidden) + " must be a positive multiple of 16");
  if (int64_t(s.hidden) * s.ffn_hidden >= (int64_t(1) << 40)) fail("hidden * ffn_hidden must be < 2^40");
  if (!(s.eps > 0.0f)) fail("eps must be > 0");
}

inline void validate_config(const PlanConfig& c) {
  auto fail = [](const std::string& m) { throw InputError(detail::where("config: ") + m); };
  validate_element_types("ffn", c.element_types());
  validate_shape(c.shape);
  if (c.max_batch < 1 || c.max_batch > kMaxBatch)
    fail("max_batch " + std::to_string(c.max_batch) + " outside [1, " + std::to_string(kMaxBatch) + "]");
  if (c.cluster_size != 0 && c.cluster_size != 2 && c.cluster_size != 4 && c.cluster_size != 8)
    fail("cluster_size " + std::to_string(c.cluster_size) + " is not supported (0 = automatic, 2, 4 or 8)");
  if (c.max_clusters < 0) fail("max_clusters must be >= 0");
  if (c.sm_count < 0) fail("sm_count must be >= 0");
  if (c.max_stages < 0) fail("max_stages must be >= 0");
  if (c.stage_units != 0 && c.stage_units != 2 && c.stage_units != 4 && c.stage_units != 8)
    fail("stage_units " + std::to_string(c.stage_units) + " is not supported (0 = default, 2, 4 or 8)");
  if (c.wait_budget_us < 0) fail("wait_budget_us must be >= 0 (0 = no limit)");
  const Weights& w = c.weights;
  if (!w.norm || !w.w_gate || !w.w_up || !w.w_down)
    fail("weights.norm, weights.w_gate, weights.w_up and weights.w_down must be set");
  if (!detail::aligned16(w.norm) || !detail::aligned16(w.w_gate) || !detail::aligned16(w.w_up) ||
      !detail::aligned16(w.w_down))
    fail("weight pointers must be 16-byte aligned");
}

inline void validate_step(const StepArgs& a, int max_batch) {
  auto fail = [](const std::string& m) { throw InputError(detail::where("step: ") + m); };
  if (a.batch < 1 || a.batch > max_batch)
    fail("batch " + std::to_string(a.batch) + " outside [1, " + std::to_string(max_batch) + "] (the plan's max_batch)");
  if (!a.hidden || !a.residual_out || !a.out) fail("hidden, residual_out and out must be set");
  if (a.out == a.residual_out) fail("out and residual_out must be different buffers");
  if (!detail::aligned16(a.hidden) || !detail::aligned16(a.residual) || !detail::aligned16(a.residual_out) ||
      !detail::aligned16(a.out))
    fail("activation pointers must be 16-byte aligned");
}


}  // namespace cf::kernels::ffn
