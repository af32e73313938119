// The argument block of the fused decoder attention kernel, built by the plan (src/kernels/decoder_attention) and
// passed by value as a __grid_constant__. Contains dev::TensorMap, whose layout differs between the CUDA and the
// emulator build: include it only from code compiled for one build (kernel.hpp, the plan, the instantiations).
#pragma once
#include <cstdint>

#include "clusterfusion/device/tensor_map.hpp"
#include "clusterfusion/kernels/decoder_attention/params.hpp"

namespace cf::kernels::decoder_attention {

// The kernel's argument block. Offsets are bytes into dynamic shared memory (traits.hpp computes the carve).
struct KernelParams {
  dev::TensorMap w_qkv_map;  // [qkv_rows, hidden], box {32, head_dim}
  dev::TensorMap w_o_map;    // [hidden, q_dim], box {32, head_dim}

  // shapes
  int32_t hidden, n_kv_heads, group, q_dim, kv_dim, rot_dim, batch;
  int32_t rope_neox;           // 1: NeoX pairing, 0: GPT-J
  float eps, rope_theta;
  float scale_log2;            // log2(e) / sqrt(head_dim)
  int32_t units_total;         // hidden / 32 (K-slice units)
  int32_t out_row_units;       // hidden / 16 (O-projection row units)
  int32_t o_blocks_max;        // row blocks per rank slice, upper bound (counter stride)

  // activations and weights
  const void* hidden_in;
  const void* residual;
  void* residual_out;
  void* out;
  const void* norm;
  const void* b_qkv;

  // KV cache and page table
  void* k_pages;
  void* v_pages;
  const uint64_t* k_layer_table;
  const uint64_t* v_layer_table;
  int32_t layer_id, n_pages, page_size, n_indices;
  const int32_t* kv_indptr;
  const int32_t* kv_indices;
  const int32_t* kv_last_page_len;
  const int32_t* positions;
  const int64_t* positions64;
  const float* cos_sin;
  int32_t cos_sin_rows;

  // workspace
  float* o_partial;     // [n_kv_heads, hidden, max_batch] fp32
  uint32_t* o_counters; // [cluster_size * o_blocks_max]
  uint32_t* status;     // [kStatusWords]
  uint32_t max_polls;   // GPU: polls before an mbarrier wait gives up (0: never)

  // shared-memory carve
  int32_t stages;
  int32_t max_batch;
  uint32_t off_tokens, off_small, off_x, off_q, off_knew, off_vnew, off_attn, off_part, off_scratch, off_state,
      off_opart, off_ring;
  uint32_t x_stride, attn_stride;  // bytes per token row of x_s / attn_s
};

}  // namespace cf::kernels::decoder_attention
