// Host side of the cuda-unfused MLA and MoE blocks: workspaces, the batched cuBLAS GEMMs and each block as its list
// of launches. Nothing here synchronises or allocates per call (graph-capturable).
#include <algorithm>
#include <cmath>
#include <string>

#include "clusterfusion/backends/cuda_unfused/deepseek.hpp"
#include "clusterfusion/cuda/check.hpp"
#include "cuda_unfused/host_common.hpp"

namespace cf::cuda_unfused {
namespace {

using detail::cuda_type;

// (token, head, split) slots of the latent partial buffer: 16 tokens x 16 heads x 64 splits (34 MB at r 512).
constexpr int64_t kLatentSlotBudget = int64_t(16) * 16 * 64;

std::string mla_dims(const MlaBlockShape& s) {
  return "hidden " + std::to_string(s.hidden) + ", heads " + std::to_string(s.n_heads) + ", q_lora " +
         std::to_string(s.q_lora_rank) + ", r " + std::to_string(s.kv_lora_rank) + ", nope " +
         std::to_string(s.qk_nope) + ", rope " + std::to_string(s.qk_rope) + ", v " + std::to_string(s.v_head);
}

std::string moe_dims(const MoeBlockShape& s) {
  return "hidden " + std::to_string(s.hidden) + ", experts " + std::to_string(s.n_experts) + ", top_k " +
         std::to_string(s.top_k) + ", ffn " + std::to_string(s.expert_ffn) + ", shared " +
         std::to_string(s.shared_ffn);
}

void require_batch_fits(int batch, int max_batch, const char* where) {
  if (batch < 1 || batch > max_batch)
    throw InputError(std::string("cuda-unfused ") + where + ": batch " + std::to_string(batch) +
                     " does not fit the workspace (made for 1.." + std::to_string(max_batch) + ")");
}

// Per head h of `heads`: C_h (m x n) = op(A_h) B_h, column-major views with per-head strides (fp32 accumulation).
struct StridedGemm {
  cublasOperation_t op_a;
  int m, n, k;
  const void* a; int lda; int64_t stride_a;
  const void* b; int ldb; int64_t stride_b;
  void* c; bool c_fp32; int ldc; int64_t stride_c;
  int heads;
};

void strided_gemm(cublasHandle_t handle, DType dtype, const StridedGemm& g) {
  const float alpha = 1.0f, beta = 0.0f;
  const cudaDataType type = cuda_type(dtype);
  CF_CUBLAS_CHECK(cublasGemmStridedBatchedEx(handle, g.op_a, CUBLAS_OP_N, g.m, g.n, g.k, &alpha, g.a, type, g.lda,
                                             g.stride_a, g.b, type, g.ldb, g.stride_b, &beta, g.c,
                                             g.c_fp32 ? CUDA_R_32F : type, g.ldc, g.stride_c, g.heads,
                                             CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// y_i = W_i x_i for `count` (weight, vector) pairs from device pointer arrays; W_i [out_dim, in_dim] in dtype,
// x_i [in_dim] in dtype, y_i [out_dim] fp32.
void batched_gemv(cublasHandle_t handle, DType dtype, void* const* w, void* const* x, void* const* y, int out_dim,
                  int in_dim, int count) {
  const float alpha = 1.0f, beta = 0.0f;
  const cudaDataType type = cuda_type(dtype);
  CF_CUBLAS_CHECK(cublasGemmBatchedEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, out_dim, 1, in_dim, &alpha, w, type, in_dim,
                                      x, type, in_dim, &beta, y, CUDA_R_32F, out_dim, count, CUBLAS_COMPUTE_32F,
                                      CUBLAS_GEMM_DEFAULT));
}

AddRmsNormParams input_norm(DType dtype, int batch, int hidden, float eps, const void* x, const void* residual,
                            const void* weight, void* residual_out, void* y) {
  AddRmsNormParams n;
  n.dtype = dtype;
  n.rows = batch;
  n.n = hidden;
  n.eps = eps;
  n.hidden = x;
  n.residual = residual;
  n.weight = weight;
  n.residual_out = residual_out;
  n.y = y;
  return n;
}

}  // namespace

std::vector<float> make_yarn_rope_table(const ref::YarnRope& rope, int max_positions) {
  if (rope.dim < 2 || rope.dim % 2 != 0 || rope.dim > 1024)
    throw InputError("make_yarn_rope_table: rope.dim " + std::to_string(rope.dim) + " must be even and in [2, 1024]");
  if (max_positions < 1) throw InputError("make_yarn_rope_table: max_positions must be >= 1");
  if (!(rope.theta > 1.0f)) throw InputError("make_yarn_rope_table: rope.theta must be > 1");
  std::vector<float> table(size_t(max_positions) * size_t(rope.dim));
  for (int pos = 0; pos < max_positions; ++pos) {
    float* row = table.data() + size_t(pos) * size_t(rope.dim);
    ref::yarn_cos_sin(rope, pos, row, row + rope.dim / 2);
  }
  return table;
}

MlaBlockShape mla_block_shape(const ref::MlaShape& s) {
  MlaBlockShape d;
  d.hidden = s.hidden;
  d.n_heads = s.n_heads;
  d.q_lora_rank = s.q_lora_rank;
  d.kv_lora_rank = s.kv_lora_rank;
  d.qk_nope = s.qk_nope;
  d.qk_rope = s.qk_rope();
  d.v_head = s.v_head;
  d.eps = s.eps;
  d.softmax_scale = s.softmax_scale();
  return d;
}

MoeBlockShape moe_block_shape(const ref::MoeShape& s, float eps) {
  MoeBlockShape d;
  d.hidden = s.hidden;
  d.n_experts = s.n_experts;
  d.top_k = s.top_k;
  d.expert_ffn = s.expert_ffn;
  d.shared_ffn = s.shared_ffn;
  d.norm_topk_prob = s.norm_topk_prob;
  d.routed_scaling = s.routed_scaling_factor;
  d.selection = s.method == ref::TopkMethod::GroupLimitedGreedy ? ExpertSelection::GroupLimitedGreedy
                                                                : ExpertSelection::Greedy;
  d.n_group = s.n_group;
  d.topk_group = s.topk_group;
  d.eps = eps;
  return d;
}

// ---- MLA ----------------------------------------------------------------------------------------------------------

MlaWorkspace::MlaWorkspace(const MlaBlockShape& shape, int max_batch) : shape_(shape), max_batch_(max_batch) {
  validate_mla_shape(shape, "MlaWorkspace");
  if (max_batch < 1 || max_batch > 65535)
    throw InputError("cuda-unfused MlaWorkspace: max_batch " + std::to_string(max_batch) + " out of range (1..65535)");
  sm_count_ = detail::current_sm_count();
  split_capacity_ =
      int(std::clamp<int64_t>(kLatentSlotBudget / (int64_t(max_batch) * shape.n_heads), 1, kMaxLatentSplits));
  const size_t b = size_t(max_batch), H = size_t(shape.n_heads), r = size_t(shape.kv_lora_rank);
  x_ = dev::DeviceBuffer<uint16_t>(b * shape.hidden, "cuda-unfused MLA normed activations");
  if (shape.q_lora_rank > 0) {
    q_a_ = dev::DeviceBuffer<float>(b * shape.q_lora_rank, "cuda-unfused MLA q_a");
    q_a_normed_ = dev::DeviceBuffer<uint16_t>(b * shape.q_lora_rank, "cuda-unfused MLA normed q_a");
  }
  q_ = dev::DeviceBuffer<float>(b * shape.q_rows(), "cuda-unfused MLA q");
  kv_ = dev::DeviceBuffer<float>(b * shape.latent_row(), "cuda-unfused MLA kv_a");
  q_nope_ = dev::DeviceBuffer<uint16_t>(b * H * shape.qk_nope, "cuda-unfused MLA q_nope");
  q_lat_ = dev::DeviceBuffer<float>(b * H * shape.latent_row(), "cuda-unfused MLA absorbed q");
  partial_ = dev::DeviceBuffer<float>(b * H * size_t(split_capacity_) * (r + 2), "cuda-unfused MLA partials");
  o_lat_ = dev::DeviceBuffer<uint16_t>(b * H * r, "cuda-unfused MLA latent output");
  o_ = dev::DeviceBuffer<uint16_t>(b * shape.o_dim(), "cuda-unfused MLA head outputs");
  status_ = dev::DeviceBuffer<uint32_t>(1, "cuda-unfused MLA status word");
  status_.fill_bytes(0);
}

void MlaWorkspace::check_status(cudaStream_t stream) { detail::check_and_clear_status(status_, stream); }

void MlaWorkspace::require_fits(const MlaBlockShape& s, int batch) const {
  const bool same = s.hidden == shape_.hidden && s.n_heads == shape_.n_heads && s.q_lora_rank == shape_.q_lora_rank &&
                    s.kv_lora_rank == shape_.kv_lora_rank && s.qk_nope == shape_.qk_nope &&
                    s.qk_rope == shape_.qk_rope && s.v_head == shape_.v_head;
  if (!same)
    throw InputError("cuda-unfused mla_block: shape (" + mla_dims(s) + ") differs from the workspace's (" +
                     mla_dims(shape_) + ")");
  require_batch_fits(batch, max_batch_, "mla_block");
}

void mla_block(const MlaBlockParams& p, MlaWorkspace& ws, cudaStream_t stream) {
  p.validate();
  ws.require_fits(p.shape, p.batch);
  const MlaBlockShape& s = p.shape;
  const int B = p.batch, H = s.n_heads, r = s.kv_lora_rank, row = s.latent_row();
  ws.cublas().set_stream(stream);
  cublasHandle_t handle = ws.cublas().get();

  add_rmsnorm(input_norm(p.dtype, B, s.hidden, s.eps, p.hidden, p.residual, p.weights.norm, p.residual_out,
                         ws.normed()),
              stream);
  if (s.q_lora_rank == 0) {
    gemm_weight_rows(handle, p.dtype, p.weights.w_q, ws.normed(), ws.q(), true, s.q_rows(), B, s.hidden);
  } else {
    gemm_weight_rows(handle, p.dtype, p.weights.w_q_a, ws.normed(), ws.q_a(), true, s.q_lora_rank, B, s.hidden);
    RmsNormRowsParams qa;
    qa.dtype = p.dtype;
    qa.rows = B;
    qa.n = s.q_lora_rank;
    qa.eps = s.eps;
    qa.x = ws.q_a();
    qa.weight = p.weights.q_a_norm;
    qa.y = ws.q_a_normed();
    rmsnorm_rows(qa, stream);
    gemm_weight_rows(handle, p.dtype, p.weights.w_q_b, ws.q_a_normed(), ws.q(), true, s.q_rows(), B, s.q_lora_rank);
  }
  gemm_weight_rows(handle, p.dtype, p.weights.w_kv_a, ws.normed(), ws.kv(), true, row, B, s.hidden);

  MlaRopeAppendParams ap;
  ap.dtype = p.dtype;
  ap.tokens = B;
  ap.n_heads = H;
  ap.qk_nope = s.qk_nope;
  ap.qk_rope = s.qk_rope;
  ap.kv_lora_rank = r;
  ap.eps = s.eps;
  ap.q = ws.q();
  ap.kv = ws.kv();
  ap.kv_a_norm = p.weights.kv_a_norm;
  ap.positions = p.positions;
  ap.rope = p.rope;
  ap.cache = p.cache;
  ap.q_nope = ws.q_nope();
  ap.q_latent = ws.q_latent();
  ap.status = ws.status();
  mla_rope_append(ap, stream);

  // q_lat[b, h, :r] = W_UK[h]^T q_nope[b, h]: W_UK[h] [nope, r] row-major is an r x nope column-major matrix.
  strided_gemm(handle, p.dtype,
               {CUBLAS_OP_N, r, B, s.qk_nope, p.weights.w_uk, r, int64_t(s.qk_nope) * r, ws.q_nope(), H * s.qk_nope,
                s.qk_nope, ws.q_latent(), true, H * row, row, H});

  LatentAttentionParams at;
  at.dtype = p.dtype;
  at.tokens = B;
  at.n_heads = H;
  at.kv_lora_rank = r;
  at.qk_rope = s.qk_rope;
  at.scale = s.softmax_scale > 0.0f ? s.softmax_scale : 1.0f / std::sqrt(float(s.q_head()));  // 0: the plain scale
  at.q_latent = ws.q_latent();
  at.cache = p.cache;
  at.o_latent = ws.o_latent();
  at.partial = ws.partial();
  at.max_splits = plan_latent_splits(B, H, ws.sm_count(), ws.split_capacity());
  at.status = ws.status();
  latent_attention(at, stream);

  // o[b, h] = W_UV[h] o_lat[b, h]: W_UV[h] [v, r] row-major is an r x v column-major matrix, transposed.
  strided_gemm(handle, p.dtype,
               {CUBLAS_OP_T, s.v_head, B, r, p.weights.w_uv, r, int64_t(s.v_head) * r, ws.o_latent(), H * r, r,
                ws.o_heads(), false, H * s.v_head, s.v_head, H});
  gemm_weight_rows(handle, p.dtype, p.weights.w_o, ws.o_heads(), p.out, false, s.hidden, B, s.o_dim());
}

// ---- MoE ----------------------------------------------------------------------------------------------------------

namespace {
enum PointerArray { kGateUpA, kGateUpB, kGateUpC, kDownA, kDownB, kDownC, kPointerArrays };
}  // namespace

MoeWorkspace::MoeWorkspace(const MoeBlockShape& shape, int max_batch) : shape_(shape), max_batch_(max_batch) {
  validate_moe_shape(shape, "MoeWorkspace");
  if (max_batch < 1 || max_batch > 65535)
    throw InputError("cuda-unfused MoeWorkspace: max_batch " + std::to_string(max_batch) + " out of range (1..65535)");
  const size_t b = size_t(max_batch), bk = b * size_t(shape.top_k), d = size_t(shape.hidden);
  x_ = dev::DeviceBuffer<uint16_t>(b * d, "cuda-unfused MoE normed activations");
  x_f32_ = dev::DeviceBuffer<float>(b * d, "cuda-unfused MoE router input");
  logits_ = dev::DeviceBuffer<float>(b * shape.n_experts, "cuda-unfused MoE router logits");
  ids_ = dev::DeviceBuffer<int32_t>(bk, "cuda-unfused MoE expert ids");
  weights_ = dev::DeviceBuffer<float>(bk, "cuda-unfused MoE expert weights");
  gate_up_ = dev::DeviceBuffer<float>(bk * 2 * shape.expert_ffn, "cuda-unfused MoE gate/up");
  act_ = dev::DeviceBuffer<uint16_t>(bk * shape.expert_ffn, "cuda-unfused MoE activations");
  expert_out_ = dev::DeviceBuffer<float>(bk * d, "cuda-unfused MoE expert outputs");
  if (shape.shared_ffn > 0) {
    shared_gate_up_ = dev::DeviceBuffer<float>(b * 2 * shape.shared_ffn, "cuda-unfused MoE shared gate/up");
    shared_act_ = dev::DeviceBuffer<uint16_t>(b * shape.shared_ffn, "cuda-unfused MoE shared activation");
    shared_out_ = dev::DeviceBuffer<float>(b * d, "cuda-unfused MoE shared output");
  }
  pointers_ = dev::DeviceBuffer<void*>(kPointerArrays * bk, "cuda-unfused MoE pointer arrays");
  status_ = dev::DeviceBuffer<uint32_t>(1, "cuda-unfused MoE status word");
  status_.fill_bytes(0);
}

void MoeWorkspace::check_status(cudaStream_t stream) { detail::check_and_clear_status(status_, stream); }

void MoeWorkspace::require_fits(const MoeBlockShape& s, int batch) const {
  const bool same = s.hidden == shape_.hidden && s.n_experts == shape_.n_experts && s.top_k == shape_.top_k &&
                    s.expert_ffn == shape_.expert_ffn && s.shared_ffn == shape_.shared_ffn;
  if (!same)
    throw InputError("cuda-unfused moe_block: shape (" + moe_dims(s) + ") differs from the workspace's (" +
                     moe_dims(shape_) + ")");
  require_batch_fits(batch, max_batch_, "moe_block");
}

namespace {

// gate/up GEMM, SiLU * up, down GEMM of the shared experts (one FFN of width shared_ffn for the whole batch).
void shared_experts(const MoeBlockParams& p, MoeWorkspace& ws, cudaStream_t stream) {
  const MoeBlockShape& s = p.shape;
  cublasHandle_t handle = ws.cublas().get();
  gemm_weight_rows(handle, p.dtype, p.weights.shared_gate_up, ws.normed(), ws.shared_gate_up(), true,
                   2 * s.shared_ffn, p.batch, s.hidden);
  SiluMulParams act;
  act.dtype = p.dtype;
  act.rows = p.batch;
  act.n = s.shared_ffn;
  act.gate_up = ws.shared_gate_up();
  act.out = ws.shared_activation();
  silu_mul(act, stream);
  gemm_weight_rows(handle, p.dtype, p.weights.shared_down, ws.shared_activation(), ws.shared_out(), true, s.hidden,
                   p.batch, s.shared_ffn);
}

// Router GEMM (fp32) and the selection kernel, which also writes the chosen experts' pointer arrays.
void route(const MoeBlockParams& p, MoeWorkspace& ws, cudaStream_t stream) {
  const MoeBlockShape& s = p.shape;
  WidenParams widen;
  widen.dtype = p.dtype;
  widen.n = int64_t(p.batch) * s.hidden;
  widen.x = ws.normed();
  widen.y = ws.normed_fp32();
  widen_to_fp32(widen, stream);
  const float alpha = 1.0f, beta = 0.0f;
  CF_CUBLAS_CHECK(cublasGemmEx(ws.cublas().get(), CUBLAS_OP_T, CUBLAS_OP_N, s.n_experts, p.batch, s.hidden, &alpha,
                               p.weights.router, CUDA_R_32F, s.hidden, ws.normed_fp32(), CUDA_R_32F, s.hidden, &beta,
                               ws.router_logits(), CUDA_R_32F, s.n_experts, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  MoeRouteParams rp;
  rp.rows = p.batch;
  rp.shape = s;
  rp.dtype = p.dtype;
  rp.logits = ws.router_logits();
  rp.expert_ids = ws.expert_ids();
  rp.expert_weights = ws.expert_weights();
  rp.gate_up_a = const_cast<const void**>(ws.pointer_array(kGateUpA));
  rp.gate_up_b = const_cast<const void**>(ws.pointer_array(kGateUpB));
  rp.gate_up_c = ws.pointer_array(kGateUpC);
  rp.down_a = const_cast<const void**>(ws.pointer_array(kDownA));
  rp.down_b = const_cast<const void**>(ws.pointer_array(kDownB));
  rp.down_c = ws.pointer_array(kDownC);
  rp.w_gate_up = p.weights.w_gate_up;
  rp.w_down = p.weights.w_down;
  rp.x = ws.normed();
  rp.gate_up = ws.gate_up();
  rp.activation = ws.activation();
  rp.expert_out = ws.expert_out();
  rp.status = ws.status();
  moe_route(rp, stream);
}

}  // namespace

void moe_block(const MoeBlockParams& p, MoeWorkspace& ws, cudaStream_t stream) {
  p.validate();
  ws.require_fits(p.shape, p.batch);
  const MoeBlockShape& s = p.shape;
  const int rows = p.batch * s.top_k;
  ws.cublas().set_stream(stream);
  cublasHandle_t handle = ws.cublas().get();

  add_rmsnorm(input_norm(p.dtype, p.batch, s.hidden, s.eps, p.hidden, p.residual, p.weights.norm, p.residual_out,
                         ws.normed()),
              stream);
  route(p, ws, stream);
  batched_gemv(handle, p.dtype, ws.pointer_array(kGateUpA), ws.pointer_array(kGateUpB), ws.pointer_array(kGateUpC),
               2 * s.expert_ffn, s.hidden, rows);
  SiluMulParams act;
  act.dtype = p.dtype;
  act.rows = rows;
  act.n = s.expert_ffn;
  act.gate_up = ws.gate_up();
  act.out = ws.activation();
  silu_mul(act, stream);
  batched_gemv(handle, p.dtype, ws.pointer_array(kDownA), ws.pointer_array(kDownB), ws.pointer_array(kDownC), s.hidden,
               s.expert_ffn, rows);
  if (s.shared_ffn > 0) shared_experts(p, ws, stream);

  MoeCombineParams cp;
  cp.dtype = p.dtype;
  cp.rows = p.batch;
  cp.hidden = s.hidden;
  cp.top_k = s.top_k;
  cp.expert_out = ws.expert_out();
  cp.expert_weights = ws.expert_weights();
  cp.shared_out = s.shared_ffn > 0 ? ws.shared_out() : nullptr;
  cp.out = p.out;
  moe_combine(cp, stream);

  const size_t k_bytes = size_t(rows) * sizeof(int32_t);
  if (p.expert_ids)
    CF_CUDA_CHECK(cudaMemcpyAsync(p.expert_ids, ws.expert_ids(), k_bytes, cudaMemcpyDeviceToDevice, stream));
  if (p.expert_weights)
    CF_CUDA_CHECK(cudaMemcpyAsync(p.expert_weights, ws.expert_weights(), size_t(rows) * sizeof(float),
                                  cudaMemcpyDeviceToDevice, stream));
}

}  // namespace cf::cuda_unfused
