// Host side of the cuda-unfused blocks: the workspace, the cuBLAS GEMM and the composition of each block from
// kernel launches. Nothing here synchronises or allocates per call (graph-capturable).
#include <algorithm>
#include <string>

#include "clusterfusion/cuda/check.hpp"
#include "clusterfusion/reference/ops.hpp"
#include "clusterfusion/backends/cuda_unfused/ops.hpp"
#include "cuda_unfused/host_common.hpp"

namespace cf::cuda_unfused {
namespace {

// The split-KV partial buffer holds at most this many (token, head, split) slots: 16 tokens x 32 heads x 64 splits
// (17 MB at head_dim 128). Bigger batches get fewer splits per head, which they do not need.
constexpr int64_t kPartialSlotBudget = int64_t(16) * 32 * kMaxAttentionSplits;

using detail::cuda_type;
using detail::current_sm_count;

}  // namespace

std::vector<float> make_rope_table(int rot_dim, float theta, int max_positions) {
  if (rot_dim < 2 || rot_dim % 2 != 0 || rot_dim > 1024)
    throw InputError("make_rope_table: rot_dim " + std::to_string(rot_dim) + " must be even and in [2, 1024]");
  if (max_positions < 1) throw InputError("make_rope_table: max_positions must be >= 1");
  if (!(theta > 0.0f)) throw InputError("make_rope_table: theta must be > 0");
  std::vector<float> table(size_t(max_positions) * size_t(rot_dim));
  for (int pos = 0; pos < max_positions; ++pos) {
    float* row = table.data() + size_t(pos) * size_t(rot_dim);
    ref::rope_cos_sin(pos, rot_dim, theta, row, row + rot_dim / 2);
  }
  return table;
}

void gemm_weight_rows(cublasHandle_t handle, DType dtype, const void* w, const void* x, void* y, bool y_fp32,
                      int out_dim, int batch, int in_dim) {
  // Column-major view: w is [in_dim, out_dim] (ld in_dim), x is [in_dim, batch] (ld in_dim), y is [out_dim, batch]
  // (ld out_dim) = y row-major [batch, out_dim]. y = op(w) x with op = transpose.
  const float alpha = 1.0f, beta = 0.0f;
  const cudaDataType type = cuda_type(dtype);
  CF_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, out_dim, batch, in_dim, &alpha, w, type, in_dim, x,
                               type, in_dim, &beta, y, y_fp32 ? CUDA_R_32F : type, out_dim, CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT));
}

// ---- workspace -----------------------------------------------------------------------------------------------

Workspace::Workspace(const ref::DecoderShape& shape, int max_batch) : shape_(shape), max_batch_(max_batch) {
  // A shape without attention heads (n_heads = n_kv_heads = 0) makes a workspace for ffn_block / lm_head only: no
  // attention buffers, and attention_block refuses it (require_fits).
  const bool attention = shape.n_heads != 0 || shape.n_kv_heads != 0;
  if (attention) {
    validate_shape(shape, "Workspace");
  } else if (shape.hidden <= 0 || shape.hidden % 8 != 0) {
    throw InputError("cuda-unfused Workspace: shape.hidden " + std::to_string(shape.hidden) +
                     " must be a positive multiple of 8");
  }
  if (max_batch < 1 || max_batch > 65535)
    throw InputError("cuda-unfused Workspace: max_batch " + std::to_string(max_batch) + " out of range (1..65535)");
  if (shape.ffn_hidden < 0) throw InputError("cuda-unfused Workspace: shape.ffn_hidden must be >= 0");
  sm_count_ = current_sm_count();
  if (attention)
    split_capacity_ =
        int(std::clamp<int64_t>(kPartialSlotBudget / (int64_t(max_batch) * shape.n_heads), 1, kMaxAttentionSplits));
  const size_t b = size_t(max_batch);
  x_ = dev::DeviceBuffer<uint16_t>(b * shape.hidden, "cuda-unfused normed activations");
  qkv_ = dev::DeviceBuffer<float>(b * (shape.q_dim() + 2 * shape.kv_dim()), "cuda-unfused qkv");
  q_rot_ = dev::DeviceBuffer<float>(b * shape.q_dim(), "cuda-unfused rotated q");
  partial_ = dev::DeviceBuffer<float>(b * shape.n_heads * split_capacity_ * (shape.head_dim + 2),
                                       "cuda-unfused attention partials");
  attn_ = dev::DeviceBuffer<uint16_t>(b * shape.q_dim(), "cuda-unfused attention output");
  if (shape.ffn_hidden > 0) {
    gate_up_ = dev::DeviceBuffer<float>(b * 2 * shape.ffn_hidden, "cuda-unfused gate/up");
    act_ = dev::DeviceBuffer<uint16_t>(b * shape.ffn_hidden, "cuda-unfused FFN activation");
  }
  status_ = dev::DeviceBuffer<uint32_t>(1, "cuda-unfused status word");
  status_.fill_bytes(0);
}

void Workspace::check_status(cudaStream_t stream) { detail::check_and_clear_status(status_, stream); }

void Workspace::require_fits(const ref::DecoderShape& s, int batch, bool needs_ffn, const char* where) const {
  auto fits = [&](int64_t need, int64_t have) { return need <= have; };
  const bool ok = batch >= 1 && batch <= max_batch_ && fits(s.hidden, shape_.hidden) &&
                  fits(s.q_dim() + 2 * s.kv_dim(), shape_.q_dim() + 2 * shape_.kv_dim()) &&
                  fits(s.q_dim(), shape_.q_dim()) &&
                  fits(int64_t(s.n_heads) * (s.head_dim + 2), int64_t(shape_.n_heads) * (shape_.head_dim + 2)) &&
                  (!needs_ffn || (shape_.ffn_hidden > 0 && fits(s.ffn_hidden, shape_.ffn_hidden)));
  if (!ok)
    throw InputError(std::string("cuda-unfused ") + where + ": batch " + std::to_string(batch) + " of hidden " +
                     std::to_string(s.hidden) + ", heads " + std::to_string(s.n_heads) + "/" +
                     std::to_string(s.n_kv_heads) + "x" + std::to_string(s.head_dim) + ", ffn " +
                     std::to_string(s.ffn_hidden) + " does not fit the workspace (made for batch " +
                     std::to_string(max_batch_) + ", hidden " + std::to_string(shape_.hidden) + ", heads " +
                     std::to_string(shape_.n_heads) + "/" + std::to_string(shape_.n_kv_heads) + "x" +
                     std::to_string(shape_.head_dim) + ", ffn " + std::to_string(shape_.ffn_hidden) + ")");
}

// ---- blocks --------------------------------------------------------------------------------------------------

AttentionBlockStages attention_block_stages(const AttentionBlockParams& p, Workspace& ws) {
  p.validate();
  ws.require_fits(p.shape, p.batch, false, "attention_block");
  const ref::DecoderShape& s = p.shape;
  AttentionBlockStages st;

  st.norm.dtype = p.dtype;
  st.norm.rows = p.batch;
  st.norm.n = s.hidden;
  st.norm.eps = s.eps;
  st.norm.hidden = p.hidden;
  st.norm.residual = p.residual;
  st.norm.weight = p.norm;
  st.norm.residual_out = p.residual_out;
  st.norm.y = ws.normed();

  st.rope.dtype = p.dtype;
  st.rope.tokens = p.batch;
  st.rope.n_heads = s.n_heads;
  st.rope.n_kv_heads = s.n_kv_heads;
  st.rope.head_dim = s.head_dim;
  st.rope.rot_dim = s.rot_dim;
  st.rope.style = s.rope_style;
  st.rope.qkv = ws.qkv();
  st.rope.bias = p.b_qkv;
  st.rope.positions = p.positions;
  st.rope.rope = p.rope;
  st.rope.kv = p.kv;
  st.rope.q_out = ws.q_rotated();
  st.rope.status = ws.status();

  st.attention.dtype = p.dtype;
  st.attention.tokens = p.batch;
  st.attention.n_heads = s.n_heads;
  st.attention.n_kv_heads = s.n_kv_heads;
  st.attention.head_dim = s.head_dim;
  st.attention.q = ws.q_rotated();
  st.attention.kv = p.kv;
  st.attention.out = ws.attention_out();
  st.attention.partial = ws.partial();
  st.attention.max_splits =
      plan_attention_splits(p.batch, s.n_heads, s.n_kv_heads, ws.sm_count(), ws.attention_split_capacity());
  st.attention.status = ws.status();
  return st;
}

void attention_qkv_gemm(const AttentionBlockParams& p, Workspace& ws, cudaStream_t stream) {
  const ref::DecoderShape& s = p.shape;
  ws.cublas().set_stream(stream);
  gemm_weight_rows(ws.cublas().get(), p.dtype, p.w_qkv, ws.normed(), ws.qkv(), /*y_fp32=*/true,
                   s.q_dim() + 2 * s.kv_dim(), p.batch, s.hidden);
}

void attention_o_gemm(const AttentionBlockParams& p, Workspace& ws, cudaStream_t stream) {
  const ref::DecoderShape& s = p.shape;
  ws.cublas().set_stream(stream);
  gemm_weight_rows(ws.cublas().get(), p.dtype, p.w_o, ws.attention_out(), p.out, /*y_fp32=*/false, s.hidden, p.batch,
                   s.q_dim());
}

void attention_block(const AttentionBlockParams& p, Workspace& ws, cudaStream_t stream) {
  const AttentionBlockStages st = attention_block_stages(p, ws);  // validates everything first
  add_rmsnorm(st.norm, stream);
  attention_qkv_gemm(p, ws, stream);
  rope_append(st.rope, stream);
  decode_attention(st.attention, stream);
  attention_o_gemm(p, ws, stream);
}

void ffn_block(const FfnBlockParams& p, Workspace& ws, cudaStream_t stream) {
  p.validate();
  ref::DecoderShape fit = ws.shape();  // only hidden and ffn_hidden matter here
  fit.hidden = p.shape.hidden;
  fit.ffn_hidden = p.shape.ffn_hidden;
  ws.require_fits(fit, p.batch, true, "ffn_block");
  const ref::DecoderShape& s = p.shape;

  AddRmsNormParams norm;
  norm.dtype = p.dtype;
  norm.rows = p.batch;
  norm.n = s.hidden;
  norm.eps = s.eps;
  norm.hidden = p.hidden;
  norm.residual = p.residual;
  norm.weight = p.norm;
  norm.residual_out = p.residual_out;
  norm.y = ws.normed();
  add_rmsnorm(norm, stream);

  ws.cublas().set_stream(stream);
  gemm_weight_rows(ws.cublas().get(), p.dtype, p.w_gate_up, ws.normed(), ws.gate_up(), /*y_fp32=*/true,
                   2 * s.ffn_hidden, p.batch, s.hidden);

  SiluMulParams act;
  act.dtype = p.dtype;
  act.rows = p.batch;
  act.n = s.ffn_hidden;
  act.gate_up = ws.gate_up();
  act.out = ws.activation();
  silu_mul(act, stream);

  gemm_weight_rows(ws.cublas().get(), p.dtype, p.w_down, ws.activation(), p.out, /*y_fp32=*/false, s.hidden,
                   p.batch, s.ffn_hidden);
}

void lm_head(const LmHeadParams& p, Workspace& ws, cudaStream_t stream) {
  p.validate();
  ref::DecoderShape fit = ws.shape();
  fit.hidden = p.shape.hidden;
  ws.require_fits(fit, p.batch, false, "lm_head");

  AddRmsNormParams norm;
  norm.dtype = p.dtype;
  norm.rows = p.batch;
  norm.n = p.shape.hidden;
  norm.eps = p.shape.eps;
  norm.hidden = p.hidden;
  norm.residual = p.residual;
  norm.weight = p.norm;
  norm.residual_out = nullptr;
  norm.y = ws.normed();
  add_rmsnorm(norm, stream);

  ws.cublas().set_stream(stream);
  gemm_weight_rows(ws.cublas().get(), p.dtype, p.w_out, ws.normed(), p.logits, /*y_fp32=*/true, p.vocab, p.batch,
                   p.shape.hidden);

  if (p.tokens) {
    ArgmaxParams am;
    am.rows = p.batch;
    am.n = p.vocab;
    am.logits = p.logits;
    am.tokens = p.tokens;
    argmax(am, stream);
  }
}

}  // namespace cf::cuda_unfused
