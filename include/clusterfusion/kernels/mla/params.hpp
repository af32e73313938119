// Parameters of the fused MLA decode block (docs/mla.md §1.5; semantics of cf::ref::mla_decode after the residual
// add + RMSNorm of the block input).
//
//   PlanConfig  what stays fixed for a layer: shape, dtypes, weights, the latent page pool, the RoPE table, the
//               largest batch, optionally the launch geometry. validate_config() throws cf::InputError naming the field.
//   StepArgs    what changes every call: activations, positions, the page table, the batch size.
//
// Layouts (row-major, outermost first; H heads, r = kv_lora_rank, q_head = nope + rope):
//   activations [batch, hidden]; norm [hidden];
//   w_q [H * q_head, hidden] (q_lora_rank 0), else w_q_a [q_lora, hidden], q_a_norm [q_lora], w_q_b [H * q_head, q_lora];
//   w_kv_a [r + rope, hidden] (c_kv rows, then k_pe rows); kv_a_norm [r];
//   w_uk [H, nope, r] (W_UK[h]: the nope rows of head h in HF's kv_b_proj); w_uv [H, v, r]; w_o [hidden, H * v];
//   latent pages [n_pages, page_size, r + rope]: per token [c_kv (after its RMSNorm), k_pe (after RoPE)];
//   kv_indptr [batch + 1], kv_indices, kv_last_page_len [batch] describe each sequence AFTER this step's append
//   (FlashInfer's convention, token b = sequence b); cos_sin [max_positions, rope] fp32: the cos of the rope/2
//   adjacent pairs (2i, 2i + 1), then their sin, YaRN's magnitude included (ref::yarn_cos_sin).
// Shape::softmax_scale 0 means q_head^-0.5 (give YaRN's mscale^2 factor explicitly: MlaShape::softmax_scale()).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/device/types.hpp"
#include "clusterfusion/kernels/element_types.hpp"
#include "clusterfusion/kernels/page_table_status.hpp"
#include "clusterfusion/model/types.hpp"  // cf::MlaBlockShape

namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla {

inline constexpr int kMaxBatch = 16;

using Shape = MlaBlockShape;

struct Weights {
  const void* norm = nullptr;       // [hidden]
  const void* w_q = nullptr;        // [H * q_head, hidden]      (q_lora_rank == 0)
  const void* w_q_a = nullptr;      // [q_lora, hidden]          (q_lora_rank > 0)
  const void* q_a_norm = nullptr;   // [q_lora]
  const void* w_q_b = nullptr;      // [H * q_head, q_lora]
  const void* w_kv_a = nullptr;     // [r + rope, hidden]
  const void* kv_a_norm = nullptr;  // [r]
  const void* w_uk = nullptr;       // [H, nope, r]
  const void* w_uv = nullptr;       // [H, v, r]
  const void* w_o = nullptr;        // [hidden, H * v]
};

// One layer's latent page pool.
struct LatentCache {
  void* pages = nullptr;  // [n_pages, page_size, r + rope]
  int n_pages = 0;
  int page_size = 0;      // >= 1, any value
};

struct RopeTable {
  const float* cos_sin = nullptr;  // device [max_positions, rope] fp32
  int max_positions = 0;
};

struct PlanConfig {
  DType dtype = DType::F16;           // activations and outputs: F16 or BF16
  std::optional<DType> weight_dtype;  // unset: dtype
  std::optional<DType> kv_dtype;      // the latent cache; unset: dtype
  Shape shape;
  Weights weights;
  LatentCache cache;
  RopeTable rope;
  int max_batch = 1;     // 1..16
  int cluster_size = 0;  // 0: the launcher picks
  int max_clusters = 0;  // 0: as many as run at once; else at most this many (the emulator asks for few)
  int sm_count = 0;      // 0: the device's (the emulator assumes 132)
  int max_stages = 0;    // 0: as many ring stages as fit (up to 16); else at most this many (>= 4; tests lap the ring)
  int64_t wait_budget_us = 20000;  // a wait inside a kernel gives up after this long (0: no limit)

  ElementTypes element_types() const { return ElementTypes::of(dtype, weight_dtype, kv_dtype); }
};

struct StepArgs {
  int batch = 0;                     // 1..max_batch
  const void* hidden = nullptr;      // [batch, hidden]
  const void* residual = nullptr;    // optional [batch, hidden]; null: residual_out = hidden
  void* residual_out = nullptr;      // [batch, hidden]; may alias hidden or residual
  void* out = nullptr;               // [batch, hidden]; may alias hidden or residual, not residual_out
  const int32_t* positions = nullptr;         // [batch]
  const int32_t* kv_indptr = nullptr;         // [batch + 1]
  const int32_t* kv_indices = nullptr;        // [n_indices]
  const int32_t* kv_last_page_len = nullptr;  // [batch]; null: every last page is full
  int n_indices = 0;
};

// Problems the kernels find in device-side inputs (Plan::check_status() throws cf::InputError naming them); a token
// with a bad page table or position is not appended and its `out` row is NaN.
enum StatusBit : uint32_t {
  kStatusBadPosition = 0,   // position < 0 or >= rope.max_positions
  kStatusBadPageTable = 1,  // kv_indptr decreasing or outside [0, n_indices], kv_last_page_len outside [1, P]
  kStatusBadPageId = 2,     // a kv_indices entry outside [0, n_pages)
  kStatusBadKvLen = 3,      // a sequence with no page
  kStatusTimeout = 4,       // words 4-5: a wait gave up (prim::timeout_status of its site and block)
  kStatusDrainTimeout = 6,  // words 6-7: after that, a copy into shared memory did not land either (fatal)
  kStatusWords = 8,
};

// The bounded waits of the kernels (prim::bounded_wait), named by Plan::check_status() when one expires.
enum WaitSite : uint32_t {
  kWaitRingStage = 1,  // producer: a ring stage the consumers never released
  kWaitWeightTile,     // projections / output: a weight tile that never landed
  kWaitCacheRows,      // attention: latent cache rows that never landed
  kWaitDrain,          // producer, after an expiry: a copy it issued that never landed
};

inline std::string describe_wait_site(uint32_t code) {
  switch (code) {
    case kWaitRingStage: return "producer: waiting for the consumers to release a ring stage";
    case kWaitWeightTile: return "projection: waiting for a weight tile";
    case kWaitCacheRows: return "attention: waiting for latent cache rows";
    case kWaitDrain: return "producer: draining its copies after the timeout";
    default: return "wait " + std::to_string(code);
  }
}

// The input problems of the status words (the timeout words are reported by Plan::check_status()).
static_assert(kStatusTimeout == kPageTableStatusWords, "status words 0-3: the page-table checks");
inline std::string describe_status(const uint32_t* words) { return describe_page_table_status(words); }

// Host validation (one-line cf::InputError naming the field), implemented beside the kernels.
void validate_shape(const Shape& s);
void validate_config(const PlanConfig& c);
void validate_step(const StepArgs& a, int max_batch);

}  // namespace cf::kernels::mla
