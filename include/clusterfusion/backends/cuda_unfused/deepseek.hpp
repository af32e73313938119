// cuda-unfused: DeepSeek-V2's multi-head latent attention (MLA) block and mixture-of-experts (MoE) FFN block from
// cuBLAS GEMMs and a few simple kernels: the baseline the fused MLA / MoE plans (kernels/mla, kernels/moe) are
// measured against, and a second GPU oracle for them.
//
// Semantics: cf::ref::mla_decode (reference/mla.hpp) and cf::ref::moe_ffn (reference/moe.hpp), each after the
// residual add + RMSNorm of the block input (reference/ops.hpp add_rmsnorm). Data layouts are those of the fused
// plans (kernels/mla/params.hpp, kernels/moe/params.hpp), so one set of device buffers serves both:
//   MLA  w_q [H q_head, hidden] | w_q_a [q_lora, hidden], q_a_norm [q_lora], w_q_b [H q_head, q_lora];
//        w_kv_a [r + rope, hidden]; kv_a_norm [r]; w_uk [H, nope, r]; w_uv [H, v, r]; w_o [hidden, H v];
//        latent pages [n_pages, page_size, r + rope] (per token [c_kv, k_pe]); the page table describes each
//        sequence AFTER this step's append (token b = sequence b); cos/sin table [max_positions, rope] fp32 (cos of the
//        rope/2 adjacent pairs (2i, 2i+1), then their sin, YaRN's magnitude included: make_yarn_rope_table).
//   MoE  router [n_experts, hidden] fp32; w_gate_up [n_experts, 2 expert_ffn, hidden] (gate rows, then up rows);
//        w_down [n_experts, hidden, expert_ffn]; shared_gate_up [2 shared_ffn, hidden]; shared_down [hidden,
//        shared_ffn].
//
// The MLA block, as its launches (every one only enqueued; graph-capturable):
//   add_rmsnorm -> x (dtype);  q = x Wq^T (fp32)  or  q_a = x Wq_a^T (fp32), rmsnorm -> dtype, q = q_a Wq_b^T (fp32);
//   kv = x Wkv_a^T (fp32);  mla_rope_append: c_kv = rmsnorm(kv[:r]) * kv_a_norm, k_pe = RoPE(kv[r:]), the row
//   [c_kv, k_pe] appended (dtype; page table checked on the device), q_nope (dtype), RoPE(q_pe) (fp32);
//   absorption: q_lat[h][:r] = W_UK[h]^T q_nope[h], one strided-batched GEMM over heads (fp32 out);
//   latent_attention: split-KV over the cache rows, all heads of a block sharing each row, merged in split order
//   (deterministic) -> o_lat (dtype);  W_UV: strided-batched GEMM over heads -> o (dtype);  out = o Wo^T (dtype).
// Rounding points (what the "naive" reference of the tolerance policy rounds): x, q_a after its norm, q_nope, the
// cache row, o_lat, o and out are rounded to dtype; q, q_a, kv, q_lat (both parts) stay fp32.
//
// The MoE block:
//   add_rmsnorm -> x (dtype) and an fp32 copy of x;  router logits = x Wr^T (fp32 GEMM);  moe_route: softmax,
//   greedy or group-limited selection (ties to the lower expert id), renormalise, scale (exactly
//   ref::select_experts), and the device-side pointer arrays of the chosen experts;  gate/up of every (token, chosen
//   expert) through cublasGemmBatchedEx (fp32 out), SiLU*up (dtype), down through cublasGemmBatchedEx (fp32 out);
//   the shared experts as one FFN (fp32 gate/up, dtype activation, fp32 down);  moe_combine: out = shared +
//   sum_k g_k expert_k in selection order (dtype).
// Rounding points: x, both activations and out are rounded to dtype; logits, gate/up and FFN outputs stay fp32.
// A token pair that chose the same expert reads its weights twice (per-token GEMVs; L2 usually serves the second).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "clusterfusion/backends/cuda_unfused/ops.hpp"
#include "clusterfusion/model/types.hpp"
#include "clusterfusion/reference/mla.hpp"
#include "clusterfusion/reference/moe.hpp"

namespace cf::cuda_unfused {

// Host-side cos/sin table of `max_positions` rows for YaRN RoPE on adjacent pairs (ref::yarn_cos_sin per row).
std::vector<float> make_yarn_rope_table(const ref::YarnRope& rope, int max_positions);

// The block shapes of the reference's shapes (model/deepseek.hpp makes those from a model config): the softmax
// scale with YaRN's mscale^2 (ref::MlaShape::softmax_scale), `eps` for the MoE block's input RMSNorm.
MlaBlockShape mla_block_shape(const ref::MlaShape& s);
MoeBlockShape moe_block_shape(const ref::MoeShape& s, float eps);

// ---- MLA --------------------------------------------------------------------------------------------------------

inline constexpr int kMaxLatentRow = 768;  // r + rope values per cache row the attention kernel holds (576: V2)
inline constexpr int kMaxLatentSplits = 256;  // per (token, head)
inline constexpr int kMaxLatentHeadsPerBlock = 16;

// Throws cf::InputError unless the block supports `s`: hidden % 8 == 0, positive sizes, even qk_rope, r + rope a
// multiple of 8 and at most kMaxLatentRow, eps finite and > 0, softmax_scale finite and >= 0 (0: q_head^-0.5, as the
// fused plan; YaRN's mscale^2 must be given explicitly: mla_block_shape). `where` prefixes the message.
void validate_mla_shape(const MlaBlockShape& s, const char* where);

struct MlaWeightArgs {
  const void* norm = nullptr;       // [hidden]
  const void* w_q = nullptr;        // [H q_head, hidden]      (q_lora_rank 0)
  const void* w_q_a = nullptr;      // [q_lora, hidden]        (q_lora_rank > 0)
  const void* q_a_norm = nullptr;   // [q_lora]
  const void* w_q_b = nullptr;      // [H q_head, q_lora]
  const void* w_kv_a = nullptr;     // [r + rope, hidden]
  const void* kv_a_norm = nullptr;  // [r]
  const void* w_uk = nullptr;       // [H, nope, r]
  const void* w_uv = nullptr;       // [H, v, r]
  const void* w_o = nullptr;        // [hidden, H v]
};

// One layer's latent page pool and this call's page table (token b = sequence b).
struct LatentCacheArgs {
  void* pages = nullptr;                      // [n_pages, page_size, r + rope] in dtype
  int n_pages = 0;
  int page_size = 0;
  const int32_t* kv_indptr = nullptr;         // [batch + 1]
  const int32_t* kv_indices = nullptr;        // [n_indices]
  const int32_t* kv_last_page_len = nullptr;  // [batch]; null: every last page is full
  int n_indices = 0;
};

// kv_a RMSNorm + RoPE + latent append, q_nope rounded, q_pe rotated. One block per token; a bad position gives NaN
// q outputs and no append, a bad page table no append (status bits).
struct MlaRopeAppendParams {
  DType dtype = DType::F16;
  int tokens = 0;
  int n_heads = 0, qk_nope = 0, qk_rope = 0, kv_lora_rank = 0;
  float eps = 1e-6f;
  const float* q = nullptr;          // [tokens, H, nope + rope] fp32
  const float* kv = nullptr;         // [tokens, r + rope] fp32
  const void* kv_a_norm = nullptr;   // [r] dtype
  const int32_t* positions = nullptr;
  RopeTableArgs rope;                // rot_dim = qk_rope
  LatentCacheArgs cache;
  void* q_nope = nullptr;            // out [tokens, H, nope] dtype
  float* q_latent = nullptr;         // out [tokens, H, r + rope] fp32: the rope part (the absorption writes [:r])
  uint32_t* status = nullptr;
  void validate() const;
};

// Split-KV latent attention: o_lat[h] = sum_t softmax_t(q_lat[h] . row_t * scale) row_t[:r], the splits merged in a
// fixed order.
struct LatentAttentionParams {
  DType dtype = DType::F16;
  int tokens = 0;
  int n_heads = 0, kv_lora_rank = 0, qk_rope = 0;
  float scale = 0.0f;                // > 0
  const float* q_latent = nullptr;   // [tokens, H, r + rope] fp32
  LatentCacheArgs cache;
  void* o_latent = nullptr;          // out [tokens, H, r] dtype
  float* partial = nullptr;          // workspace [tokens, H, max_splits, r + 2]
  int max_splits = 1;
  uint32_t* status = nullptr;
  void validate() const;
};

// y = rmsnorm(x) * weight per row, x fp32, y and weight dtype (the q_a norm).
struct RmsNormRowsParams {
  DType dtype = DType::F16;
  int rows = 0;
  int n = 0;
  float eps = 1e-6f;
  const float* x = nullptr;
  const void* weight = nullptr;
  void* y = nullptr;
  void validate() const;
};

void mla_rope_append(const MlaRopeAppendParams& p, cudaStream_t stream);
void latent_attention(const LatentAttentionParams& p, cudaStream_t stream);
void rmsnorm_rows(const RmsNormRowsParams& p, cudaStream_t stream);

// Splits per (token, head) latent_attention uses at most for `tokens` tokens of `n_heads` heads.
int plan_latent_splits(int tokens, int n_heads, int sm_count, int capacity);

// Scratch for mla_block (made once for a shape and a largest batch), the cuBLAS handle and the status word. One per
// stream; not thread-safe.
class MlaWorkspace {
 public:
  MlaWorkspace(const MlaBlockShape& shape, int max_batch);

  const MlaBlockShape& shape() const { return shape_; }
  int max_batch() const { return max_batch_; }
  int split_capacity() const { return split_capacity_; }
  int sm_count() const { return sm_count_; }
  cuda::CublasHandle& cublas() { return cublas_; }
  uint32_t* status() { return status_.data(); }
  // Synchronises `stream`, reads and clears the status word, throws cf::InputError describing any bit set.
  void check_status(cudaStream_t stream);
  // Throws cf::InputError unless a call of `batch` tokens of `s` fits.
  void require_fits(const MlaBlockShape& s, int batch) const;

  // Intermediates of the last call (device), for tests.
  void* normed() { return x_.data(); }           // [batch, hidden] dtype
  float* q_a() { return q_a_.data(); }           // [batch, q_lora] fp32
  void* q_a_normed() { return q_a_normed_.data(); }  // [batch, q_lora] dtype
  float* q() { return q_.data(); }               // [batch, H q_head] fp32
  float* kv() { return kv_.data(); }             // [batch, r + rope] fp32
  void* q_nope() { return q_nope_.data(); }      // [batch, H, nope] dtype
  float* q_latent() { return q_lat_.data(); }    // [batch, H, r + rope] fp32
  float* partial() { return partial_.data(); }   // [batch, H, split capacity, r + 2]
  void* o_latent() { return o_lat_.data(); }     // [batch, H, r] dtype
  void* o_heads() { return o_.data(); }          // [batch, H v] dtype

 private:
  MlaBlockShape shape_;
  int max_batch_ = 0;
  int sm_count_ = 0;
  int split_capacity_ = 1;
  cuda::CublasHandle cublas_;
  dev::DeviceBuffer<uint16_t> x_, q_a_normed_, q_nope_, o_lat_, o_;
  dev::DeviceBuffer<float> q_a_, q_, kv_, q_lat_, partial_;
  dev::DeviceBuffer<uint32_t> status_;
};

struct MlaBlockParams {
  DType dtype = DType::F16;
  MlaBlockShape shape;               // softmax_scale 0: q_head^-0.5
  int batch = 0;
  const void* hidden = nullptr;      // [batch, hidden]
  const void* residual = nullptr;    // optional [batch, hidden]
  void* residual_out = nullptr;      // [batch, hidden]; may alias hidden or residual
  void* out = nullptr;               // [batch, hidden]; may alias hidden or residual, not residual_out
  MlaWeightArgs weights;
  const int32_t* positions = nullptr;  // [batch]
  RopeTableArgs rope;                // rot_dim = shape.qk_rope
  LatentCacheArgs cache;
  void validate() const;
};

void mla_block(const MlaBlockParams& p, MlaWorkspace& ws, cudaStream_t stream);

// ---- MoE --------------------------------------------------------------------------------------------------------

inline constexpr int kMaxExperts = 1024;

// Throws cf::InputError unless the block supports `s` (the rules of ref::MoeShape::check, hidden % 8 == 0,
// n_experts <= kMaxExperts, eps > 0). `where` prefixes the message.
void validate_moe_shape(const MoeBlockShape& s, const char* where);

struct MoeWeightArgs {
  const void* norm = nullptr;            // [hidden]
  const float* router = nullptr;         // [n_experts, hidden] fp32
  const void* w_gate_up = nullptr;       // [n_experts, 2 expert_ffn, hidden]
  const void* w_down = nullptr;          // [n_experts, hidden, expert_ffn]
  const void* shared_gate_up = nullptr;  // [2 shared_ffn, hidden]; null when shared_ffn == 0
  const void* shared_down = nullptr;     // [hidden, shared_ffn]
};

// Router softmax + selection per token (ref::select_experts), and the cublasGemmBatchedEx pointer arrays of the
// chosen experts: entry i = token * top_k + k.
struct MoeRouteParams {
  int rows = 0;
  MoeBlockShape shape;
  DType dtype = DType::F16;
  const float* logits = nullptr;     // [rows, n_experts] fp32
  int32_t* expert_ids = nullptr;     // out [rows, top_k]
  float* expert_weights = nullptr;   // out [rows, top_k]
  // pointer arrays (out, device, rows * top_k entries each) and what they point into
  const void** gate_up_a = nullptr;  // -> w_gate_up + e * 2 ffn * hidden
  const void** gate_up_b = nullptr;  // -> x + token * hidden
  void** gate_up_c = nullptr;        // -> gate_up + i * 2 ffn (fp32)
  const void** down_a = nullptr;     // -> w_down + e * hidden * ffn
  const void** down_b = nullptr;     // -> activation + i * ffn
  void** down_c = nullptr;           // -> expert_out + i * hidden (fp32)
  const void* w_gate_up = nullptr;
  const void* w_down = nullptr;
  const void* x = nullptr;           // [rows, hidden] dtype
  float* gate_up = nullptr;          // [rows * top_k, 2 ffn]
  const void* activation = nullptr;  // [rows * top_k, ffn] dtype
  float* expert_out = nullptr;       // [rows * top_k, hidden]
  uint32_t* status = nullptr;
  void validate() const;
};

// out[t] = shared[t] + sum_k weights[t, k] expert_out[t, k] (that order), rounded to dtype.
struct MoeCombineParams {
  DType dtype = DType::F16;
  int rows = 0;
  int hidden = 0;
  int top_k = 0;
  const float* expert_out = nullptr;      // [rows, top_k, hidden]
  const float* expert_weights = nullptr;  // [rows, top_k]
  const float* shared_out = nullptr;      // optional [rows, hidden]
  void* out = nullptr;                    // [rows, hidden] dtype
  void validate() const;
};

// y[r, i] = float(x[r, i]) for dtype rows (the router's fp32 input).
struct WidenParams {
  DType dtype = DType::F16;
  int64_t n = 0;
  const void* x = nullptr;
  float* y = nullptr;
  void validate() const;
};

void moe_route(const MoeRouteParams& p, cudaStream_t stream);
void moe_combine(const MoeCombineParams& p, cudaStream_t stream);
void widen_to_fp32(const WidenParams& p, cudaStream_t stream);

class MoeWorkspace {
 public:
  MoeWorkspace(const MoeBlockShape& shape, int max_batch);

  const MoeBlockShape& shape() const { return shape_; }
  int max_batch() const { return max_batch_; }
  cuda::CublasHandle& cublas() { return cublas_; }
  uint32_t* status() { return status_.data(); }
  void check_status(cudaStream_t stream);
  void require_fits(const MoeBlockShape& s, int batch) const;

  void* normed() { return x_.data(); }                  // [batch, hidden] dtype
  float* normed_fp32() { return x_f32_.data(); }        // [batch, hidden]
  float* router_logits() { return logits_.data(); }     // [batch, n_experts]
  int32_t* expert_ids() { return ids_.data(); }         // [batch, top_k]
  float* expert_weights() { return weights_.data(); }   // [batch, top_k]
  float* gate_up() { return gate_up_.data(); }          // [batch top_k, 2 expert_ffn]
  void* activation() { return act_.data(); }            // [batch top_k, expert_ffn] dtype
  float* expert_out() { return expert_out_.data(); }    // [batch top_k, hidden]
  float* shared_gate_up() { return shared_gate_up_.data(); }  // [batch, 2 shared_ffn]
  void* shared_activation() { return shared_act_.data(); }    // [batch, shared_ffn] dtype
  float* shared_out() { return shared_out_.data(); }          // [batch, hidden]
  // The six pointer arrays of moe_route, max_batch * top_k entries each.
  void** pointer_array(int which) { return pointers_.data() + size_t(which) * size_t(max_batch_) * shape_.top_k; }

 private:
  MoeBlockShape shape_;
  int max_batch_ = 0;
  cuda::CublasHandle cublas_;
  dev::DeviceBuffer<uint16_t> x_, act_, shared_act_;
  dev::DeviceBuffer<float> x_f32_, logits_, weights_, gate_up_, expert_out_, shared_gate_up_, shared_out_;
  dev::DeviceBuffer<int32_t> ids_;
  dev::DeviceBuffer<void*> pointers_;
  dev::DeviceBuffer<uint32_t> status_;
};

struct MoeBlockParams {
  DType dtype = DType::F16;
  MoeBlockShape shape;
  int batch = 0;
  const void* hidden = nullptr;      // [batch, hidden]
  const void* residual = nullptr;    // optional [batch, hidden]
  void* residual_out = nullptr;      // [batch, hidden]; may alias hidden or residual
  void* out = nullptr;               // [batch, hidden]; may alias hidden or residual, not residual_out
  MoeWeightArgs weights;
  int32_t* expert_ids = nullptr;     // optional out [batch, top_k]: the chosen experts, by weight descending
  float* expert_weights = nullptr;   // optional out [batch, top_k]: their weights g_e
  void validate() const;
};

void moe_block(const MoeBlockParams& p, MoeWorkspace& ws, cudaStream_t stream);

}  // namespace cf::cuda_unfused
