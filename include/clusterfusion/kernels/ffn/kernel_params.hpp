// The argument block of the fused FFN kernel, built by the plan (src/kernels/ffn) and passed by value as a
// __grid_constant__. Contains dev::TensorMap, whose layout differs between the CUDA and the emulator build: include
// it only from code compiled for one build (kernel.hpp, the plan, the instantiations).
#pragma once
#include <cstdint>

#include "clusterfusion/device/tensor_map.hpp"
#include "clusterfusion/kernels/ffn/params.hpp"
#include "clusterfusion/kernels/ffn/traits.hpp"
#include "clusterfusion/pipeline/weight_stream.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::ffn {

struct KernelParams {
  // weights: boxes {cols, 16} of the full chunk width and the tail widths (PanelStage)
  pl::BoxMaps gate, up;  // [ffn_hidden, hidden]
  pl::BoxMaps down;      // [hidden, ffn_hidden]

  // shapes and the work split
  int32_t hidden, ffn_hidden, batch;
  float eps;
  int32_t hidden_units;  // hidden / 32: K-slices of gate/up and output-row slices of down, split over the ranks
  int32_t ffn_tiles;     // ffn_hidden / 16: split over the clusters
  int32_t gu_cols, gu_tiles;      // gate/up panels: chunk width, tiles per stage
  int32_t down_cols, down_tiles;  // down panels: chunk width, tiles per stage
  int32_t block_groups;  // down groups per output block (one arrival per block)
  int32_t blocks_max;    // output blocks per rank slice, upper bound (counter stride)

  // activations and weights
  const void* hidden_in;
  const void* residual;
  void* residual_out;
  void* out;
  const void* norm;

  // workspace
  float* partial;      // [clusters, hidden, batch] fp32: each cluster's down-projection partial
  uint32_t* counters;  // [cluster_size, blocks_max]: arrivals per output block (reset by the last arriver)
  uint32_t* status;    // [kStatusWords]
  uint64_t wait_budget_ns;  // a wait that takes longer gives up (prim::bounded_wait; 0: never)
  uint64_t* trace;     // optional [grid][kTraceSlots] SM-clock timestamps (TracePoint)

  int32_t stages;
  Layout layout;       // the shared-memory carve (traits.hpp)
};

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::ffn
