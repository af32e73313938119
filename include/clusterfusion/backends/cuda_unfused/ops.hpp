// cuda-unfused: the Llama decoder blocks from cuBLAS GEMMs and a few simple kernels. It is the GPU baseline the
// fused cluster kernels are measured against (issue 6 item 3) and a second GPU oracle; the cuda-unfused backend
// (issue 7) is built from these calls.
//
// Semantics are exactly those of include/clusterfusion/reference/decoder.hpp (cf::ref::attention_block,
// ffn_block, lm_head); see there for the formulas. What this file adds is the device data layout:
//   - activations hidden / residual / residual_out / out: [batch, hidden] in `dtype` (fp16 or bf16);
//   - weights [out, in] row-major in `dtype`, the q/k/v projections fused into one matrix w_qkv
//     [q_dim + 2 kv_dim, hidden] (rows of q, then k, then v), gate/up fused into w_gate_up [2 ffn_hidden, hidden];
//   - the KV cache paged as in reference/attention.hpp (contiguous = one page per sequence, page_size = capacity);
//   - RoPE from a cos/sin table [max_positions, rot_dim] (fp32; cos of the rot_dim/2 pairs, then their sin),
//     built once by make_rope_table() from the same formula the reference uses.
// Rounding points (what the "naive" reference of the tolerance policy must round): the normed x, the attention
// output, the SiLU*up activation and every block output are rounded to `dtype`; q/k/v, gate/up and logits stay fp32
// (cuBLAS writes them in fp32); the KV cache is written in `dtype`.
//
// DeepSeek-V2's MLA and MoE blocks: clusterfusion/backends/cuda_unfused/deepseek.hpp.
//
// Every call only enqueues work on `stream`: no host synchronisation, no allocation, so a whole step can be
// captured in a CUDA graph. Device-side data that the host cannot see without a sync (positions, page tables) is
// checked on the device: a bad entry sets a bit in the workspace's status word and poisons (NaN) the affected
// outputs; Workspace::check_status() (which synchronises) turns it into a cf::InputError.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <vector>

#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/cuda/cublas.hpp"
#include "clusterfusion/reference/decoder.hpp"

namespace cf::cuda_unfused {

enum class DType : uint8_t { F16, BF16 };
const char* dtype_name(DType dtype);

// Throws cf::InputError unless the attention-block fields of `s` are supported (hidden % 8 == 0, head_dim 64 or
// 128, n_heads % n_kv_heads == 0, even rot_dim <= head_dim, eps > 0). `where` prefixes the message.
void validate_shape(const ref::DecoderShape& s, const char* where);

// ---- device-side status --------------------------------------------------------------------------------------

enum StatusBit : uint32_t {
  kStatusBadPosition = 1u << 0,   // positions[t] outside [0, rope.max_positions)
  kStatusBadSequence = 1u << 1,   // token's sequence index outside [0, n_seqs)
  kStatusBadPageTable = 1u << 2,  // kv_indptr not increasing / past n_indices, or kv_last_page_len outside [1, P]
  kStatusBadPageId = 1u << 3,     // a kv_indices entry outside [0, n_pages)
  kStatusBadKvLen = 1u << 4,      // kv length < 1 or more than the sequence's pages hold
  kStatusBadRouterScores = 1u << 5,  // MoE: a token's router logits are not all finite (its output is NaN)
};
// "position out of the RoPE table; page id out of range" for the bits set.
std::string describe_status(uint32_t bits);

// ---- shared argument groups ----------------------------------------------------------------------------------

// One layer's paged KV cache on the device (layout in reference/attention.hpp) and the page table of this call.
// Decode (the reference's semantics): token t belongs to sequence t, attends over the sequence's kv_len entries
// (from kv_indptr / kv_last_page_len, AFTER this step's append) and its k, v go to entry kv_len - 1.
// Prefill / mixed batches (optional, both or neither): token t belongs to sequence token_seq[t] and attends over
// its first token_kv_len[t] entries, its own k, v going to entry token_kv_len[t] - 1.
struct KvCacheArgs {
  void* k_pages = nullptr;  // [n_pages, page_size, n_kv_heads, head_dim] in dtype
  void* v_pages = nullptr;
  int n_pages = 0;
  int page_size = 0;
  const int32_t* kv_indptr = nullptr;         // [n_seqs + 1]
  const int32_t* kv_indices = nullptr;        // [n_indices]
  const int32_t* kv_last_page_len = nullptr;  // [n_seqs]
  int n_seqs = 0;
  int n_indices = 0;
  const int32_t* token_seq = nullptr;     // optional [tokens]
  const int32_t* token_kv_len = nullptr;  // optional [tokens]
};

// cos/sin table [max_positions, rot_dim] fp32 on the device (see make_rope_table).
struct RopeTableArgs {
  const float* cos_sin = nullptr;
  int max_positions = 0;
  int rot_dim = 0;
};

// Host-side table for positions [0, max_positions): row p holds cos of the rot_dim/2 pairs, then their sin,
// computed by cf::ref::rope_cos_sin (so GPU and reference rotate with identical values).
std::vector<float> make_rope_table(int rot_dim, float theta, int max_positions);

// ---- per-kernel parameters (each validated on the host; throws cf::InputError naming the field) --------------

// y = rmsnorm(hidden + residual) * weight and residual_out = hidden + residual, per row (rows x n).
// residual may be null (then residual_out = hidden); residual_out may be null (not written) and may alias
// hidden or residual.
struct AddRmsNormParams {
  DType dtype = DType::F16;
  int rows = 0;
  int n = 0;
  float eps = 1e-5f;
  const void* hidden = nullptr;
  const void* residual = nullptr;
  const void* weight = nullptr;
  void* residual_out = nullptr;
  void* y = nullptr;
  void validate() const;
};

// Adds the q/k/v biases, rotates q and k at positions[t], writes rotated q (fp32) and appends k, v to the cache.
struct RopeAppendParams {
  DType dtype = DType::F16;
  int tokens = 0;
  int n_heads = 0, n_kv_heads = 0, head_dim = 0, rot_dim = 0;
  RopeStyle style = RopeStyle::NeoX;
  const float* qkv = nullptr;   // [tokens, q_dim + 2 kv_dim] fp32 (bias not yet added)
  const void* bias = nullptr;   // optional [q_dim + 2 kv_dim] in dtype
  const int32_t* positions = nullptr;
  RopeTableArgs rope;
  KvCacheArgs kv;
  float* q_out = nullptr;       // [tokens, q_dim] fp32
  uint32_t* status = nullptr;
  void validate() const;
};

// Split-KV decode attention (flash-decoding): every (token, KV head, split) block computes an online-softmax state
// over its slice of the cache for all query heads of the group; a second kernel merges the splits in a fixed order
// (deterministic) and writes out = softmax(q k^T * scale) v in dtype.
struct DecodeAttentionParams {
  DType dtype = DType::F16;
  int tokens = 0;
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;
  float scale = 0.0f;           // 0 = 1/sqrt(head_dim)
  const float* q = nullptr;     // [tokens, n_heads, head_dim] fp32
  KvCacheArgs kv;
  void* out = nullptr;          // [tokens, n_heads * head_dim] in dtype
  float* partial = nullptr;     // workspace: [tokens, n_heads, max_splits, head_dim + 2]
  int max_splits = 1;           // splits per (token, head) the partial buffer holds
  uint32_t* status = nullptr;
  void validate() const;
};

// out[r, i] = silu(gate_up[r, i]) * gate_up[r, n + i], rounded to dtype.
struct SiluMulParams {
  DType dtype = DType::F16;
  int rows = 0;
  int n = 0;
  const float* gate_up = nullptr;  // [rows, 2 n] fp32
  void* out = nullptr;             // [rows, n] dtype
  void validate() const;
};

// tokens[r] = index of the largest logits[r, :] (first on ties, NaN never chosen, 0 when all are NaN): the same
// rule as cf::ref::argmax.
struct ArgmaxParams {
  int rows = 0;
  int n = 0;
  const float* logits = nullptr;  // [rows, n]
  int32_t* tokens = nullptr;      // [rows]
  void validate() const;
};

void add_rmsnorm(const AddRmsNormParams& p, cudaStream_t stream);
void rope_append(const RopeAppendParams& p, cudaStream_t stream);
void decode_attention(const DecodeAttentionParams& p, cudaStream_t stream);
void silu_mul(const SiluMulParams& p, cudaStream_t stream);
void argmax(const ArgmaxParams& p, cudaStream_t stream);

// y[b, o] = sum_i w[o, i] x[b, i] via cublasGemmEx (fp32 accumulation); w [out_dim, in_dim] and x [batch, in_dim]
// in dtype, y [batch, out_dim] in fp32 (y_fp32) or dtype.
void gemm_weight_rows(cublasHandle_t handle, DType dtype, const void* w, const void* x, void* y, bool y_fp32,
                      int out_dim, int batch, int in_dim);

// Splits per (token, head) decode_attention will use at most: enough blocks for a few waves on `sm_count` SMs,
// never more than `capacity` (what the partial buffer holds).
int plan_attention_splits(int tokens, int n_heads, int n_kv_heads, int sm_count, int capacity);

// ---- blocks ------------------------------------------------------------------------------------------------

inline constexpr int kMaxAttentionSplits = 64;  // per (token, head)
inline constexpr int kMinRowsPerSplit = 32;     // a split reads at least this many cache rows

// Scratch memory for the blocks (allocated once; sized for `max_batch` tokens of `shape`), the cuBLAS handle and
// the device status word. One Workspace per stream; not thread-safe. A shape with n_heads = n_kv_heads = 0 gives a
// workspace for ffn_block and lm_head only (no attention buffers).
class Workspace {
 public:
  Workspace(const ref::DecoderShape& shape, int max_batch);

  const ref::DecoderShape& shape() const { return shape_; }
  int max_batch() const { return max_batch_; }
  int sm_count() const { return sm_count_; }
  int attention_split_capacity() const { return split_capacity_; }
  cuda::CublasHandle& cublas() { return cublas_; }
  uint32_t* status() { return status_.data(); }

  // Synchronises `stream`, reads the status word, clears it and throws cf::InputError describing any bit set.
  void check_status(cudaStream_t stream);

  // Throws cf::InputError when a call of `batch` tokens of `s` does not fit this workspace.
  void require_fits(const ref::DecoderShape& s, int batch, bool needs_ffn, const char* where) const;

  // Scratch buffers (device). The blocks use them; tests read the intermediates of the last call.
  void* normed() { return x_.data(); }             // [batch, hidden] dtype
  float* qkv() { return qkv_.data(); }             // [batch, q_dim + 2 kv_dim] fp32, before bias
  float* q_rotated() { return q_rot_.data(); }     // [batch, q_dim] fp32
  float* partial() { return partial_.data(); }     // [batch, n_heads, split capacity, head_dim + 2]
  void* attention_out() { return attn_.data(); }   // [batch, q_dim] dtype
  float* gate_up() { return gate_up_.data(); }     // [batch, 2 ffn_hidden] fp32
  void* activation() { return act_.data(); }       // [batch, ffn_hidden] dtype

 private:
  ref::DecoderShape shape_;
  int max_batch_ = 0;
  int sm_count_ = 0;
  int split_capacity_ = 1;
  cuda::CublasHandle cublas_;
  dev::DeviceBuffer<uint16_t> x_;
  dev::DeviceBuffer<float> qkv_;
  dev::DeviceBuffer<float> q_rot_;
  dev::DeviceBuffer<float> partial_;
  dev::DeviceBuffer<uint16_t> attn_;
  dev::DeviceBuffer<float> gate_up_;
  dev::DeviceBuffer<uint16_t> act_;
  dev::DeviceBuffer<uint32_t> status_;
};

// The attention block of reference::attention_block: add+RMSNorm, QKV GEMM, bias+RoPE+KV append, split-KV
// attention, O GEMM. Shapes: batch 1..workspace.max_batch(); head_dim 64 or 128; n_heads % n_kv_heads == 0;
// hidden % 8 == 0; rot_dim even and <= head_dim.
struct AttentionBlockParams {
  DType dtype = DType::F16;
  ref::DecoderShape shape;
  int batch = 0;
  const void* hidden = nullptr;     // [batch, hidden]
  const void* residual = nullptr;   // optional [batch, hidden]
  void* residual_out = nullptr;     // [batch, hidden]; may alias hidden or residual
  void* out = nullptr;              // [batch, hidden]
  const void* norm = nullptr;       // [hidden]
  const void* w_qkv = nullptr;      // [q_dim + 2 kv_dim, hidden]
  const void* b_qkv = nullptr;      // optional [q_dim + 2 kv_dim]
  const void* w_o = nullptr;        // [hidden, q_dim]
  const int32_t* positions = nullptr;  // [batch]
  RopeTableArgs rope;
  KvCacheArgs kv;
  void validate() const;
};

// The FFN block of reference::ffn_block: add+RMSNorm, gate/up GEMM, SiLU*up, down GEMM.
struct FfnBlockParams {
  DType dtype = DType::F16;
  ref::DecoderShape shape;  // hidden, ffn_hidden, eps are used
  int batch = 0;
  const void* hidden = nullptr;
  const void* residual = nullptr;  // optional
  void* residual_out = nullptr;    // may alias hidden or residual
  void* out = nullptr;
  const void* norm = nullptr;       // [hidden]
  const void* w_gate_up = nullptr;  // [2 ffn_hidden, hidden]: gate rows, then up rows
  const void* w_down = nullptr;     // [hidden, ffn_hidden]
  void validate() const;
};

// Final norm + LM head (+ greedy argmax) of reference::lm_head: logits = rmsnorm(hidden + residual) w_out^T.
struct LmHeadParams {
  DType dtype = DType::F16;
  ref::DecoderShape shape;  // hidden, eps are used
  int batch = 0;
  int vocab = 0;
  const void* hidden = nullptr;
  const void* residual = nullptr;  // optional
  const void* norm = nullptr;      // [hidden]
  const void* w_out = nullptr;     // [vocab, hidden]
  float* logits = nullptr;         // [batch, vocab] fp32
  int32_t* tokens = nullptr;       // optional [batch]: argmax of each row
  void validate() const;
};

void attention_block(const AttentionBlockParams& p, Workspace& ws, cudaStream_t stream);

// The attention block as its kernel launches, for benchmarks that time each stage. attention_block(p) is
//   add_rmsnorm(norm); gemm_weight_rows(w_qkv -> qkv fp32); rope_append(rope); decode_attention(attention);
//   gemm_weight_rows(w_o -> out)
// with the parameters below (validated, workspace buffers filled in).
struct AttentionBlockStages {
  AddRmsNormParams norm;
  RopeAppendParams rope;
  DecodeAttentionParams attention;
};
AttentionBlockStages attention_block_stages(const AttentionBlockParams& p, Workspace& ws);
void attention_qkv_gemm(const AttentionBlockParams& p, Workspace& ws, cudaStream_t stream);
void attention_o_gemm(const AttentionBlockParams& p, Workspace& ws, cudaStream_t stream);

void ffn_block(const FfnBlockParams& p, Workspace& ws, cudaStream_t stream);
void lm_head(const LmHeadParams& p, Workspace& ws, cudaStream_t stream);

}  // namespace cf::cuda_unfused
