// The argument blocks of the MLA block's two kernels, built by the plan (src/kernels/mla) and passed by value as
// __grid_constant__. Contain dev::TensorMap (build-specific layout): include them only from code compiled for one
// build (kernel.hpp, the plan, the instantiations).
#pragma once
#include <cstdint>

#include "clusterfusion/device/tensor_map.hpp"
#include "clusterfusion/kernels/mla/params.hpp"
#include "clusterfusion/kernels/mla/traits.hpp"
#include "clusterfusion/pipeline/weight_stream.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla {

// Where the row kernel's input rows come from (the prologue) and where its output rows go.
enum class RowsInput : int32_t {
  HiddenNorm,  // residual add + RMSNorm of the block input (hidden_in, residual, norm)
  LatentNorm,  // RMSNorm of fp32 rows src_f32 (q_a) times `norm`
  Copy,        // the TA rows src_ta as they are (the heads' outputs)
};
enum class RowsOutput : int32_t {
  Workspace,  // fp32 rows into proj [batch][proj_stride]: matrix 0's rows, then matrix 1's
  Out,        // TA rows into out [batch][rows[0]]
};

// The row kernel: out rows = [W0; W1] x, each CTA a contiguous run of 16-row tiles over the whole of K (cols), then
// the tails of the row groups it finished last (the q rows of a head: RoPE + absorption; the kv_a rows: RMSNorm,
// RoPE, cache append).
struct RowsParams {
  pl::BoxMaps w[2];     // the two matrices [rows[m], cols]
  int32_t rows[2];      // rows of each matrix (rows[1] 0: one matrix)
  int32_t tiles[2];     // their 16-row tiles
  int32_t total_tiles;  // tiles[0] + tiles[1], split over the CTAs
  int32_t cols, chunk_cols, tiles_per_stage;
  int32_t batch;
  RowsInput input;
  RowsOutput output;

  // input
  const void* hidden_in;
  const void* residual;
  const void* norm;  // HiddenNorm: the block's norm; LatentNorm: q_a_norm
  const float* src_f32;
  int32_t src_stride;  // floats per token of src_f32
  const void* src_ta;  // Copy: [batch][cols]
  float eps;

  // output
  float* proj;
  int32_t proj_stride;
  void* out;

  // tails: 1 when matrix 0's rows are the heads' q rows / matrix 1 is Wkv_a
  int32_t head_tails, kv_tail;
  uint32_t* counters;  // [n_heads + 1]: arrivals per head, then the kv rows (reset by the last arriver)
  int32_t n_heads, q_head, nope, rope, r, row_elems;
  const void* w_uk;       // [H, nope, r]
  const void* kv_a_norm;  // [r]
  const float* cos_sin;   // [max_positions, rope]
  int32_t max_positions;
  const int32_t* positions;
  const int32_t* kv_indptr;
  const int32_t* kv_indices;
  const int32_t* kv_last_page_len;  // null: every last page is full
  int32_t n_indices;
  void* pages;  // [n_pages, page_size, row_elems]
  int32_t n_pages, page_size;
  void* q_lat;          // [batch][H][row_elems] TA: the absorbed queries
  uint32_t* token_bad;  // [batch]: 1 when the token's position or page table is bad

  uint32_t* status;
  uint64_t wait_budget_ns;
  int32_t stages;
  RowsLayout layout;
};

// The split-KV latent attention: CTA (token, head tile, split) streams its share of the token's cache rows, the last
// arriver of (token, head tile) merges the splits in order into o_lat; every CTA writes a slice of residual_out.
struct AttentionParams {
  int32_t batch, n_heads, head_tiles, splits;
  int32_t r, row_elems;
  uint32_t row_bytes;
  int32_t item_rows;  // latent rows per ring item (at most kMaxItemRows)
  float scale;

  const void* q_lat;
  const void* pages;
  int32_t page_size;
  const int32_t* kv_indptr;
  const int32_t* kv_indices;
  const int32_t* kv_last_page_len;
  const uint32_t* token_bad;

  float* part_ml;   // [batch][H][splits][2]: each split's (max, sum)
  float* part_acc;  // [batch][H][splits][r]
  uint32_t* counters;  // [batch][head_tiles]
  float* o_lat;        // [batch][H][r]: the merged latent outputs

  const void* hidden_in;
  const void* residual;
  void* residual_out;
  int32_t hidden;

  uint32_t* status;
  uint64_t wait_budget_ns;
  int32_t stages;
  AttentionLayout layout;
};

// W_UV: o[b][h] = W_UV[h] o_lat[b][h], CTAs over the (head, 16-row tile) items.
struct UvParams {
  int32_t batch, n_heads, v_head, r;
  const float* o_lat;  // [batch][H][r]
  const void* w_uv;    // [H, v, r]
  void* o;             // [batch][H * v] TA
};

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla
