// The argument block of the fused FFN kernel, built by the plan (src/kernels/ffn) and passed by value as a
// __grid_constant__. Contains dev::TensorMap, whose layout differs between the CUDA and the emulator build: include
// it only from code compiled for one build (kernel.hpp, the plan, the instantiations).
#pragma once
#include <cstdint>

#include "clusterfusion/device/tensor_map.hpp"
#include "clusterfusion/kernels/ffn/params.hpp"

namespace cf::kernels::ffn {

// The kernel's argument block. Offsets are bytes into dynamic shared memory (traits.hpp computes the carve).
struct KernelParams {
  // weights: big boxes {32, 16 M}, small boxes {32, 16} (kernels/ffn/weight_stream.hpp)
  dev::TensorMap gate_big, gate_small;  // [ffn_hidden, hidden]
  dev::TensorMap up_big, up_small;      // [ffn_hidden, hidden]
  dev::TensorMap down_big, down_small;  // [hidden, ffn_hidden]

  // shapes and the work split
  int32_t hidden, ffn_hidden, batch;
  float eps;
  int32_t hidden_units;  // hidden / 32: K-slices of gate/up and output-row slices of down, split over the ranks
  int32_t ffn_tiles;     // ffn_hidden / 16: split over the clusters
  int32_t stage_units;   // U (tiles per group M = 16 / U)
  int32_t groups_max;    // down groups per rank slice, upper bound (counter stride)

  // activations and weights
  const void* hidden_in;
  const void* residual;
  void* residual_out;
  void* out;
  const void* norm;

  // workspace
  float* partial;      // [clusters, hidden, batch] fp32: each cluster's down-projection partial
  uint32_t* counters;  // [cluster_size, groups_max]: arrivals per output group (reset by the last arriver)
  uint32_t* status;    // [kStatusWords]

  // shared-memory carve
  int32_t stages;
  uint32_t off_small, off_x, off_part, off_scratch, off_ring;
  uint32_t x_stride, act_stride;  // bytes per token row of x_s / act_s
};

}  // namespace cf::kernels::ffn
