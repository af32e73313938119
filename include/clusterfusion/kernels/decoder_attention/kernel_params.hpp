// The argument block of the fused decoder attention kernel, built by the plan (src/kernels/decoder_attention) and
// passed by value as a __grid_constant__. Contains dev::TensorMap, whose layout differs between the CUDA and the
// emulator build: include it only from code compiled for one build (kernel.hpp, the plan, the instantiations).
#pragma once
#include <cstdint>

#include "clusterfusion/device/tensor_map.hpp"
#include "clusterfusion/kernels/decoder_attention/params.hpp"
#include "clusterfusion/kernels/decoder_attention/traits.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::decoder_attention {

// The kernel's argument block.
struct KernelParams {
  dev::TensorMap w_qkv_map;  // [qkv_rows, hidden], box {32, head_dim}
  dev::TensorMap w_o_map;    // [hidden, q_dim], box {32, head_dim}
  dev::TensorMap k_map;      // the K page pool as [n_pages * page_size, kv_dim], box {head_dim, kv_box_rows}
  dev::TensorMap v_map;      // (unset with per-layer tables: rows are then bulk-copied one by one)

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
  int32_t kv_box_rows;  // rows per K/V box: a power of two dividing page_size and the KV tile (1: row copies)
  int32_t kv_use_maps;  // 1: boxes through k_map / v_map; 0 (per-layer tables): one bulk copy per row
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
  uint64_t wait_budget_ns;  // a wait that takes longer gives up (prim::bounded_wait; 0: never)
  uint64_t* trace;      // optional [grid][kTraceSlots] SM-clock timestamps (traits.hpp TracePoint)

  int32_t stages;
  int32_t early_stages;  // ring items issued before the consumers' "go" (the norm is done)
  int32_t max_batch;
  Layout layout;         // the shared-memory carve (traits.hpp)
};

}  // namespace cf::kernels::decoder_attention
