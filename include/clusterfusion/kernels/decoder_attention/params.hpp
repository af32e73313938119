// Parameters of the fused decoder attention block (docs/attention.md; semantics of cf::ref::attention_block).
//
//   PlanConfig  what stays fixed for a layer: shapes, dtype, weights, the KV cache pool, the RoPE source, the largest
//               batch, optionally the cluster size. validate_config() throws cf::InputError naming the field.
//   StepArgs    what changes every call: activations, positions, the page table, the batch size.
//               validate_step() checks what the host can see without reading device memory; the page table and
//               positions are device data, checked by the kernel (StatusBit, Plan::check_status()).
// The kernel's own argument block (tensor maps, derived sizes, the shared-memory carve) is KernelParams in
// kernel_params.hpp; it differs between the CUDA and emulator builds, so host code includes only this header and
// launch.hpp.
//
// Layouts (row-major, outermost first): activations [batch, hidden]; Wqkv [q_dim + 2 kv_dim, hidden] (rows of q,
// then k, then v); bias [q_dim + 2 kv_dim]; Wo [hidden, q_dim]; KV pages [n_pages, page_size, n_kv_heads, head_dim]
// (a contiguous cache is one page per sequence); kv_indptr [batch + 1], kv_indices, kv_last_page_len [batch] describe
// each sequence AFTER this step's append (FlashInfer's convention, token b = sequence b); cos_sin [max_positions,
// rot_dim] fp32: the cos of the rot_dim/2 pairs, then their sin.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/device/types.hpp"
#include "clusterfusion/kernels/element_types.hpp"
#include "clusterfusion/kernels/page_table_status.hpp"
#include "clusterfusion/model/types.hpp"  // cf::RopeStyle, AttentionBlockShape

namespace cf::kernels::inline CF_BUILD_NAMESPACE::decoder_attention {

inline constexpr int kMaxBatch = 16;
inline constexpr int kMaxGroup = 16;  // query heads per KV head (one m16 tile of the attention MMAs)
inline constexpr int kMinStages = 4;         // the smallest ring a plan accepts (PlanConfig::max_stages)
inline constexpr int kMaxStagesConfig = 16;  // the deepest (traits.hpp kMaxStages)

using Shape = AttentionBlockShape;  // head_dim 64 or 128; rot_dim 0 = head_dim (model/types.hpp)

struct Weights {
  const void* norm = nullptr;   // [hidden]
  const void* w_qkv = nullptr;  // [q_dim + 2 kv_dim, hidden]
  const void* b_qkv = nullptr;  // optional [q_dim + 2 kv_dim]
  const void* w_o = nullptr;    // [hidden, q_dim]
};

// One layer's KV page pool. Either the pages directly, or (the seed's form) device arrays of per-layer page pointers
// indexed by layer_id on the device.
struct KvCache {
  void* k_pages = nullptr;  // [n_pages, page_size, n_kv_heads, head_dim]
  void* v_pages = nullptr;
  const uint64_t* k_layer_table = nullptr;  // device array: k_layer_table[layer_id] = this layer's k_pages
  const uint64_t* v_layer_table = nullptr;
  int layer_id = 0;
  int n_pages = 0;    // pool capacity in pages (page ids must be < n_pages)
  int page_size = 0;  // positions per page, >= 1
};

// RoPE angles: from a cos/sin table when cos_sin is set, else computed in double from rope_theta (as the reference).
struct RopeSource {
  const float* cos_sin = nullptr;  // device [max_positions, rot_dim]
  int max_positions = 0;
};

struct PlanConfig {
  DType dtype = DType::F16;           // activations and outputs: F16 or BF16
  std::optional<DType> weight_dtype;  // unset: dtype (kernels/element_types.hpp)
  std::optional<DType> kv_dtype;      // the KV cache; unset: dtype
  Shape shape;
  Weights weights;
  KvCache cache;
  RopeSource rope;
  int max_batch = 1;     // 1..16
  int cluster_size = 0;  // 0: the launcher picks (launch.hpp); else 2, 4, 8 or 16 (16: non-portable, needs 16 free
                         // SMs in one GPC per cluster)
  int sm_count = 0;      // 0: the device's
  int max_stages = 0;    // 0: as many ring stages as fit (up to kMaxStages)
  int early_stages = -1; // ring items issued before the norm is done (-1: kDefaultEarlyStages; at most the ring)
  int64_t wait_budget_us = 20000;  // wall time any wait inside the kernel may take before the launch gives up with
                                   // a timeout status (a hang; check_status() names the wait); 0: no limit
  bool trace = false;    // record per-CTA phase timestamps (Plan::read_trace), for performance work

  ElementTypes element_types() const { return ElementTypes::of(dtype, weight_dtype, kv_dtype); }
};

struct StepArgs {
  int batch = 0;                     // 1..max_batch
  const void* hidden = nullptr;      // [batch, hidden]
  const void* residual = nullptr;    // optional [batch, hidden]; null: residual_out = hidden
  void* residual_out = nullptr;      // [batch, hidden]; may alias hidden or residual
  void* out = nullptr;               // [batch, hidden]; may alias hidden or residual
  const int32_t* positions = nullptr;    // [batch] (or positions64)
  const int64_t* positions64 = nullptr;  // [batch], the seed's int64 positions
  const int32_t* kv_indptr = nullptr;    // [batch + 1]
  const int32_t* kv_indices = nullptr;   // [n_indices]
  const int32_t* kv_last_page_len = nullptr;  // [batch]; null: every last page is full (page_size 1 caches)
  int n_indices = 0;                     // length of kv_indices (bounds kv_indptr)
};

// Problems the kernel finds in device-side inputs. A token with a bad page table or position attends over its own
// new k/v only, is not appended, and its `out` row is NaN; a bad page id reads page 0 instead.
enum StatusBit : uint32_t {
  kStatusBadPosition = 0,   // position < 0, or >= rope.max_positions with a cos/sin table
  kStatusBadPageTable = 1,  // kv_indptr decreasing or outside [0, n_indices], or kv_last_page_len outside [1, P]
  kStatusBadPageId = 2,     // a kv_indices entry outside [0, n_pages)
  kStatusBadKvLen = 3,      // a sequence with no page (kv_len < 1)
  kStatusTimeout = 4,       // words 4-5: a wait gave up after PlanConfig::wait_budget_us (a hang): the 64-bit
                            // prim::timeout_status of its WaitSite and block
  kStatusDrainTimeout = 6,  // words 6-7: after that, a copy into shared memory did not land either (fatal)
  kStatusWords = 8,         // u32 words (input checks: set to 1 by the device)
};
// The bounded waits of the kernel (prim::bounded_wait), named by Plan::check_status() when one expires.
enum WaitSite : uint32_t {
  kWaitRingStage = 1,  // producer: a ring stage the consumers never released
  kWaitQkvTile,        // consumers: a Wqkv tile that never landed
  kWaitKvTile,         // consumers: a K/V tile that never landed
  kWaitWoTile,         // consumers: a Wo tile that never landed
  kWaitDrain,          // producer, after an expiry: a copy it issued that never landed
  kWaitRs32 = 8,       // fp32 collective, + call: 0 norm all-gather, 1 QKV reduce-scatter, 2 softmax reduce-scatter
  kWaitRs16 = 24,      // T collective, + call: 0 q/k/v all-gather, 1 attention-output all-gather
};
std::string describe_status(const uint32_t* words);
std::string describe_wait_site(uint32_t code);

// Phase timestamps (SM clock cycles) per CTA, recorded with PlanConfig::trace (Plan::read_trace).
enum TracePoint : uint32_t {
  kTraceStart = 0,       // after the start-up cluster barrier
  kTraceNormDone,        // x_s written
  kTraceQkvDone,         // this CTA's QKV partials stored
  kTraceQkvGathered,     // q / k / v of every token here (attention starts)
  kTraceAttnDone,        // this CTA's softmax states merged over its warps
  kTraceAttnGathered,    // attention outputs of the group here (O starts)
  kTraceOLoopDone,       // O partials of every row block stored
  kTraceEnd,             // before the final cluster barrier
  kTraceProducerQkv,     // producer: last QKV tile issued
  kTraceProducerKv,      // producer: last K/V tile issued
  kTraceProducerWo,      // producer: last Wo tile issued
  kTraceSlots,
};

// ---- host validation --------------------------------------------------------------------------------------------

namespace detail {
inline std::string plan_where(const char* what) { return std::string("decoder_attention: ") + what; }
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }
}  // namespace detail

inline void validate_shape(const Shape& s) {
  auto fail = [](const std::string& m) { throw InputError(detail::plan_where("shape: ") + m); };
  if (s.head_dim != 64 && s.head_dim != 128)
    fail("head_dim " + std::to_string(s.head_dim) + " is not supported (64 or 128)");
  if (s.n_heads < 1 || s.n_kv_heads < 1 || s.n_heads % s.n_kv_heads != 0)
    fail("n_heads " + std::to_string(s.n_heads) + " must be a positive multiple of n_kv_heads " +
         std::to_string(s.n_kv_heads));
  if (s.group() > kMaxGroup)
    fail("n_heads / n_kv_heads = " + std::to_string(s.group()) + " query heads per KV head; at most " +
         std::to_string(kMaxGroup) + " are supported");
  if (s.hidden < 32 || s.hidden % 32 != 0)
    fail("hidden " + std::to_string(s.hidden) + " must be a positive multiple of 32");
  const int rot = s.rotary_dim();
  if (rot < 2 || rot % 2 != 0 || rot > s.head_dim)
    fail("rot_dim " + std::to_string(rot) + " must be even and in [2, head_dim]");
  if (!(s.eps > 0.0f)) fail("eps must be > 0");
  if (!(s.rope_theta > 0.0f)) fail("rope_theta must be > 0");
}

inline void validate_config(const PlanConfig& c) {
  auto fail = [](const std::string& m) { throw InputError(detail::plan_where("config: ") + m); };
  validate_element_types("decoder_attention", c.element_types());
  validate_shape(c.shape);
  if (c.max_batch < 1 || c.max_batch > kMaxBatch)
    fail("max_batch " + std::to_string(c.max_batch) + " outside [1, " + std::to_string(kMaxBatch) + "]");
  if (c.cluster_size != 0 && c.cluster_size != 2 && c.cluster_size != 4 && c.cluster_size != 8 &&
      c.cluster_size != 16)
    fail("cluster_size " + std::to_string(c.cluster_size) + " is not supported (0 = automatic, 2, 4, 8 or 16)");
  const Weights& w = c.weights;
  if (!w.norm || !w.w_qkv || !w.w_o) fail("weights.norm, weights.w_qkv and weights.w_o must be set");
  if (!detail::aligned16(w.norm) || !detail::aligned16(w.w_qkv) || !detail::aligned16(w.w_o) ||
      !detail::aligned16(w.b_qkv))
    fail("weight pointers must be 16-byte aligned");
  const KvCache& kv = c.cache;
  const bool direct = kv.k_pages && kv.v_pages, table = kv.k_layer_table && kv.v_layer_table;
  const int set = (kv.k_pages != nullptr) + (kv.v_pages != nullptr) + (kv.k_layer_table != nullptr) +
                  (kv.v_layer_table != nullptr);
  if (set != 2 || direct == table) fail("cache: set either k_pages and v_pages, or k_layer_table and v_layer_table");
  if (direct && (!detail::aligned16(kv.k_pages) || !detail::aligned16(kv.v_pages)))
    fail("cache: k_pages and v_pages must be 16-byte aligned");
  if (table && kv.layer_id < 0) fail("cache: layer_id must be >= 0");
  if (kv.page_size < 1) fail("cache: page_size " + std::to_string(kv.page_size) + " must be >= 1");
  if (kv.n_pages < 1) fail("cache: n_pages " + std::to_string(kv.n_pages) + " must be >= 1");
  if (int64_t(kv.n_pages) * kv.page_size * c.shape.kv_dim() >= (int64_t(1) << 40))
    fail("cache: the page pool is larger than 2^40 elements");
  if (c.rope.cos_sin && c.rope.max_positions < 1) fail("rope: max_positions must be >= 1 with a cos/sin table");
  if (c.sm_count < 0) fail("sm_count must be >= 0");
  if (c.max_stages != 0 && (c.max_stages < kMinStages || c.max_stages > kMaxStagesConfig))
    fail("max_stages " + std::to_string(c.max_stages) + " outside [" + std::to_string(kMinStages) + ", " +
         std::to_string(kMaxStagesConfig) + "] (0 = as many as fit)");
  if (c.early_stages < -1) fail("early_stages " + std::to_string(c.early_stages) + " must be >= 0 (-1 = default)");
  if (c.wait_budget_us < 0) fail("wait_budget_us must be >= 0 (0 = no limit)");
}

inline void validate_step(const StepArgs& a, int max_batch, int hidden) {
  auto fail = [](const std::string& m) { throw InputError(detail::plan_where("step: ") + m); };
  if (a.batch < 1 || a.batch > max_batch)
    fail("batch " + std::to_string(a.batch) + " outside [1, " + std::to_string(max_batch) + "] (the plan's max_batch)");
  if (!a.hidden || !a.residual_out || !a.out) fail("hidden, residual_out and out must be set");
  if (!detail::aligned16(a.hidden) || !detail::aligned16(a.residual) || !detail::aligned16(a.residual_out) ||
      !detail::aligned16(a.out))
    fail("activation pointers must be 16-byte aligned");
  if ((a.positions == nullptr) == (a.positions64 == nullptr)) fail("set exactly one of positions, positions64");
  if (!a.kv_indptr || !a.kv_indices) fail("kv_indptr and kv_indices must be set");
  if (a.n_indices < a.batch) fail("n_indices " + std::to_string(a.n_indices) + " < batch: every sequence needs a page");
  if (hidden % 8 != 0) fail("hidden must be a multiple of 8");
}

// Host check of a page table the caller holds on the host (the kernel checks the device copy itself, see StatusBit):
// kv_indptr non-decreasing from 0 within [0, n_indices], every sequence with >= 1 page and at most n_pages pages
// (its KV length within the pool's capacity), kv_last_page_len in [1, page_size], page ids in [0, n_pages), positions
// >= 0 (and < max_positions when > 0). Throws cf::InputError naming the sequence and entry.
inline void validate_page_table(int batch, const int32_t* kv_indptr, const int32_t* kv_indices, int n_indices,
                                const int32_t* kv_last_page_len, int n_pages, int page_size,
                                const int32_t* positions = nullptr, int max_positions = 0) {
  auto fail = [](const std::string& m) { throw InputError(detail::plan_where("page table: ") + m); };
  if (batch < 1 || batch > kMaxBatch) fail("batch " + std::to_string(batch) + " outside [1, 16]");
  if (kv_indptr[0] != 0) fail("kv_indptr[0] = " + std::to_string(kv_indptr[0]) + ", expected 0");
  for (int b = 0; b < batch; ++b) {
    const std::string seq = "sequence " + std::to_string(b) + ": ";
    const int32_t start = kv_indptr[b], end = kv_indptr[b + 1];
    if (end < start || end > n_indices)
      fail(seq + "kv_indptr[" + std::to_string(b + 1) + "] = " + std::to_string(end) + " outside [" +
           std::to_string(start) + ", " + std::to_string(n_indices) + "] (n_indices)");
    if (end == start) fail(seq + "no KV page (every sequence holds at least the new token)");
    if (end - start > n_pages)
      fail(seq + std::to_string(end - start) + " pages exceed the pool's capacity of " + std::to_string(n_pages) +
           " pages (KV length over capacity)");
    const int32_t last = kv_last_page_len ? kv_last_page_len[b] : page_size;
    if (last < 1 || last > page_size)
      fail(seq + "kv_last_page_len " + std::to_string(last) + " outside [1, " + std::to_string(page_size) + "]");
    for (int32_t i = start; i < end; ++i)
      if (kv_indices[i] < 0 || kv_indices[i] >= n_pages)
        fail(seq + "kv_indices[" + std::to_string(i) + "] = " + std::to_string(kv_indices[i]) + " outside [0, " +
             std::to_string(n_pages) + ") (n_pages)");
    if (positions && (positions[b] < 0 || (max_positions > 0 && positions[b] >= max_positions)))
      fail(seq + "position " + std::to_string(positions[b]) + " outside [0, " +
           (max_positions > 0 ? std::to_string(max_positions) : std::string("inf")) + ")");
  }
}

inline std::string describe_wait_site(uint32_t code) {
  switch (code) {
    case kWaitRingStage: return "producer: waiting for the consumers to release a ring stage";
    case kWaitQkvTile: return "QKV projection: waiting for a Wqkv tile";
    case kWaitKvTile: return "attention: waiting for a K/V tile";
    case kWaitWoTile: return "O projection: waiting for a Wo tile";
    case kWaitDrain: return "producer: draining its copies after the timeout";
    case kWaitRs32 + 0: return "norm: all-gather of the sums of squares (cluster peers)";
    case kWaitRs32 + 1: return "QKV: reduce-scatter of the partial q/k/v (cluster peers)";
    case kWaitRs32 + 2: return "attention: reduce-scatter of the softmax states (cluster peers)";
    case kWaitRs16 + 0: return "QKV: all-gather of the q/k/v rows (cluster peers)";
    case kWaitRs16 + 1: return "attention: all-gather of the outputs (cluster peers)";
    default: return "wait " + std::to_string(code);
  }
}

// The input problems of the status words (the timeout words are reported by Plan::check_status()).
static_assert(kStatusTimeout == kPageTableStatusWords, "status words 0-3: the page-table checks");
inline std::string describe_status(const uint32_t* words) { return describe_page_table_status(words); }

}  // namespace cf::kernels::decoder_attention
