// Parameters of the final norm + LM head + greedy argmax (docs/ffn.md §5; semantics of cf::ref::lm_head and
// cf::ref::argmax):
//
//   x = rmsnorm(hidden + residual) * norm        (residual may be null: x = rmsnorm(hidden) * norm)
//   logits[b, v] = x[b] . w_out[v]              fp32, [batch, vocab] (optional)
//   tokens[b] = argmax_v logits[b, v]           lowest id on ties, NaN never chosen, 0 when every logit is NaN
//                                               (optional; at least one of logits / tokens)
//
//   PlanConfig  fixed per model: shapes, dtype, weights, the largest batch. validate_config() throws cf::InputError.
//   StepArgs    per call: activations, outputs, the batch size. validate_step() checks them on the host.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/device/types.hpp"
#include "clusterfusion/kernels/element_types.hpp"
#include "clusterfusion/model/types.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::lm_head {

inline constexpr int kMaxBatch = 16;

using Shape = LmHeadShape;  // hidden: a multiple of 32; vocab >= 1 (model/types.hpp)

struct Weights {
  const void* norm = nullptr;   // [hidden]
  const void* w_out = nullptr;  // [vocab, hidden]
};

struct PlanConfig {
  DType dtype = DType::F16;           // activations: F16 or BF16 (logits are fp32)
  std::optional<DType> weight_dtype;  // unset: dtype (kernels/element_types.hpp)
  Shape shape;
  Weights weights;
  int max_batch = 1;    // 1..16
  int max_ctas = 0;     // 0: one CTA per SM (at most one per 16 vocabulary rows); else at most this many
  int sm_count = 0;     // 0: the device's (the emulator assumes 132)
  int max_stages = 0;   // 0: as many ring stages as fit (up to 16)
  int stage_units = 0;  // 0: default (4); else 2, 4 or 8: chunks of 32 x stage_units columns per ring stage
  int64_t wait_budget_us = 20000;  // wall time any wait inside the kernel may take before the launch gives up with
                                   // a timeout status (a hang; check_status() names the wait); 0: no limit
  bool trace = false;              // record per-CTA phase timestamps (Plan::read_trace), for performance work

  ElementTypes element_types() const { return ElementTypes::of(dtype, weight_dtype); }
};

struct StepArgs {
  int batch = 0;                   // 1..max_batch
  const void* hidden = nullptr;    // [batch, hidden]
  const void* residual = nullptr;  // optional [batch, hidden]
  float* logits = nullptr;         // optional [batch, vocab] fp32
  int32_t* tokens = nullptr;       // optional [batch]: the greedy token of each row
};

enum StatusBit : uint32_t {
  kStatusTimeout = 0,       // words 0-1: a wait gave up after PlanConfig::wait_budget_us (a hang): the 64-bit
                            // prim::timeout_status of its WaitSite and block
  kStatusDrainTimeout = 2,  // words 2-3: after that, a copy into shared memory did not land either (fatal)
  kStatusWords = 4,
};
// The bounded waits of the kernel (prim::bounded_wait), named by Plan::check_status() when one expires.
enum WaitSite : uint32_t {
  kWaitRingStage = 1,  // producer: a ring stage the consumers never released
  kWaitTile,           // consumers: a weight tile that never landed
  kWaitDrain,          // producer, after an expiry: a copy it issued that never landed
};
// Phase timestamps (SM clock cycles) per CTA, recorded with PlanConfig::trace (Plan::read_trace).
enum TracePoint : uint32_t {
  kTraceStart = 0,     // after the start-up barrier
  kTraceNormDone,      // x_s written
  kTraceLogitsDone,    // every group's logits and the CTA's candidates
  kTraceEnd,           // the tokens picked (by the last arriver) or the arrival done
  kTraceProducerDone,  // producer: last weight tile issued
  kTraceSlots,
};

inline std::string describe_wait_site(uint32_t code) {
  switch (code) {
    case kWaitRingStage: return "producer: waiting for the consumers to release a ring stage";
    case kWaitTile: return "logits: waiting for a weight tile";
    case kWaitDrain: return "producer: draining its copies after the timeout";
    default: return "wait " + std::to_string(code);
  }
}

namespace detail {
inline std::string where(const char* what) { return std::string("lm_head: ") + what; }
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
}  // namespace detail

inline void validate_shape(const Shape& s) {
  auto fail = [](const std::string& m) { throw InputError(detail::where("shape: ") + m); };
  if (s.hidden < 32 || s.hidden % 32 != 0)
    fail("hidden " + std::to_string(s.hidden) + " must be a positive multiple of 32");
  if (s.vocab < 1 || s.vocab > (1 << 30)) fail("vocab " + std::to_string(s.vocab) + " outside [1, 2^30]");
  if (!(s.eps > 0.0f)) fail("eps must be > 0");
}

inline void validate_config(const PlanConfig& c) {
  auto fail = [](const std::string& m) { throw InputError(detail::where("config: ") + m); };
  validate_element_types("lm_head", c.element_types());
  validate_shape(c.shape);
  if (c.max_batch < 1 || c.max_batch > kMaxBatch)
    fail("max_batch " + std::to_string(c.max_batch) + " outside [1, " + std::to_string(kMaxBatch) + "]");
  if (c.max_ctas < 0) fail("max_ctas must be >= 0");
  if (c.sm_count < 0) fail("sm_count must be >= 0");
  if (c.max_stages < 0) fail("max_stages must be >= 0");
  if (c.stage_units != 0 && c.stage_units != 2 && c.stage_units != 4 && c.stage_units != 8)
    fail("stage_units " + std::to_string(c.stage_units) + " is not supported (0 = default, 2, 4 or 8)");
  if (c.wait_budget_us < 0) fail("wait_budget_us must be >= 0 (0 = no limit)");
  if (!c.weights.norm || !c.weights.w_out) fail("weights.norm and weights.w_out must be set");
  if (!detail::aligned16(c.weights.norm) || !detail::aligned16(c.weights.w_out))
    fail("weight pointers must be 16-byte aligned");
}

inline void validate_step(const StepArgs& a, int max_batch) {
  auto fail = [](const std::string& m) { throw InputError(detail::where("step: ") + m); };
  if (a.batch < 1 || a.batch > max_batch)
    fail("batch " + std::to_string(a.batch) + " outside [1, " + std::to_string(max_batch) + "] (the plan's max_batch)");
  if (!a.hidden) fail("hidden must be set");
  if (!a.logits && !a.tokens) fail("set logits, tokens or both");
  if (!detail::aligned16(a.hidden) || !detail::aligned16(a.residual))
    fail("activation pointers must be 16-byte aligned");
  if ((reinterpret_cast<uintptr_t>(a.logits) & 3u) != 0 || (reinterpret_cast<uintptr_t>(a.tokens) & 3u) != 0)
    fail("logits and tokens must be 4-byte aligned");
}


}  // namespace cf::kernels::lm_head
