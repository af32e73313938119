// The argument block of the LM head kernel, built by the plan (src/kernels/lm_head) and passed by value as a
// __grid_constant__. Contains dev::TensorMap (build-specific layout): include it only from code compiled for one
// build (kernel.hpp, the plan, the instantiations).
#pragma once
#include <cstdint>

#include "clusterfusion/device/tensor_map.hpp"
#include "clusterfusion/kernels/lm_head/params.hpp"
#include "clusterfusion/kernels/lm_head/traits.hpp"
#include "clusterfusion/pipeline/weight_stream.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::lm_head {

struct KernelParams {
  pl::BoxMaps w;  // [vocab, hidden]: boxes {chunk_cols, 16} and {hidden % chunk_cols, 16} (PanelStage)

  int32_t hidden, vocab, batch;
  float eps;
  int32_t chunk_cols;   // columns of a full chunk of hidden (32 U)
  int32_t tiles;        // tiles per stage M
  int32_t vocab_tiles;  // ceil(vocab / 16): split over the CTAs

  const void* hidden_in;
  const void* residual;
  const void* norm;
  float* logits;
  int32_t* tokens;

  // workspace
  float* cand_value;    // [ctas, batch]: each CTA's best logit per token
  int32_t* cand_index;  // [ctas, batch]: its vocabulary id (-1: none)
  uint32_t* counter;    // arrivals (reset by the last arriver)
  uint32_t* status;     // [kStatusWords]
  uint64_t wait_budget_ns;  // a wait that takes longer gives up (prim::bounded_wait; 0: never)
  uint64_t* trace;      // optional [grid][kTraceSlots] SM-clock timestamps (TracePoint)

  int32_t stages;
  Layout layout;        // the shared-memory carve (traits.hpp)
};

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::lm_head
