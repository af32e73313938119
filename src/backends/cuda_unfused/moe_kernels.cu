// The MoE block's own kernels: router softmax + expert selection (ref::select_experts) with the batched GEMMs'
// pointer arrays, the weighted sum of the expert outputs, and the fp32 copy of the router input.
#include <algorithm>
#include <cmath>

#include "clusterfusion/backends/cuda_unfused/deepseek.hpp"
#include "clusterfusion/cuda/check.hpp"
#include "cuda_unfused/device_common.cuh"

namespace cf::cuda_unfused {
namespace {

using namespace detail;

inline constexpr int kCombineThreads = 256;
inline constexpr int kWidenThreads = 256;

// Index of the largest value[i] among `candidates` not yet taken, the lower index on ties (the first `count` of a
// stable descending sort, one at a time); NaN is never chosen; -1 when nothing is left.
__device__ int take_largest(const float* value, bool* taken, int count) {
  int best = -1;
  for (int i = 0; i < count; ++i) {
    if (taken[i] || isnan(value[i])) continue;
    if (best < 0 || value[i] > value[best]) best = i;
  }
  if (best >= 0) taken[best] = true;
  return best;
}

// Softmax of one token's logits into p (the reference's order of operations); false when a logit is not finite.
__device__ bool router_softmax(const float* logits, float* p, int n) {
  float max_value = -INFINITY;
  bool finite = true;
  for (int e = 0; e < n; ++e) {
    finite &= isfinite(logits[e]);
    max_value = fmaxf(max_value, logits[e]);
  }
  float sum = 0.0f;
  for (int e = 0; e < n; ++e) sum += expf(logits[e] - max_value);
  for (int e = 0; e < n; ++e) p[e] = expf(logits[e] - max_value) / sum;
  return finite;
}

// group_limited_greedy: experts outside the topk_group groups with the highest best score become 0 (eligible).
__device__ void keep_best_groups(const MoeBlockShape& s, const float* p, float* eligible, float* group_best,
                                 bool* taken) {
  const int per_group = s.n_experts / s.n_group;
  for (int g = 0; g < s.n_group; ++g) {
    float best = p[g * per_group];
    for (int e = 1; e < per_group; ++e) best = fmaxf(best, p[g * per_group + e]);
    group_best[g] = best;
    taken[g] = false;
  }
  for (int i = 0; i < s.topk_group; ++i) take_largest(group_best, taken, s.n_group);
  for (int e = 0; e < s.n_experts; ++e) eligible[e] = taken[e / per_group] ? p[e] : 0.0f;
}

// One single-thread block per token (a few hundred comparisons): the selection is sequential by nature and tiny.
__global__ void moe_route_kernel(MoeRouteParams p) {
  __shared__ float probs[kMaxExperts], eligible[kMaxExperts], group_best[kMaxExperts];
  __shared__ bool taken[kMaxExperts];
  const MoeBlockShape& s = p.shape;
  const int token = blockIdx.x, k_total = s.top_k;
  const bool finite = router_softmax(p.logits + int64_t(token) * s.n_experts, probs, s.n_experts);
  if (!finite) flag_status(p.status, kStatusBadRouterScores);
  if (s.selection == ExpertSelection::GroupLimitedGreedy)
    keep_best_groups(s, probs, eligible, group_best, taken);
  else
    for (int e = 0; e < s.n_experts; ++e) eligible[e] = probs[e];
  for (int e = 0; e < s.n_experts; ++e) taken[e] = false;

  int32_t* ids = p.expert_ids + int64_t(token) * k_total;
  float* weights = p.expert_weights + int64_t(token) * k_total;
  for (int k = 0; k < k_total; ++k) {
    int e = take_largest(eligible, taken, s.n_experts);
    if (e < 0) {  // NaN scores: the lowest expert not taken, with a NaN weight (the output becomes NaN)
      e = 0;
      while (taken[e]) ++e;
      taken[e] = true;
    }
    ids[k] = e;
    weights[k] = finite ? eligible[e] : __int_as_float(0x7fc00000);
  }
  if (s.norm_topk_prob && k_total > 1) {
    float sum = 0.0f;
    for (int k = 0; k < k_total; ++k) sum += weights[k];
    for (int k = 0; k < k_total; ++k) weights[k] /= sum;
  }
  for (int k = 0; k < k_total; ++k) weights[k] *= s.routed_scaling;

  // Pointer arrays of the batched GEMMs: entry i = token * top_k + k.
  const size_t elem = 2;  // fp16 / bf16
  const int64_t ffn = s.expert_ffn, hidden = s.hidden;
  for (int k = 0; k < k_total; ++k) {
    const int64_t i = int64_t(token) * k_total + k, e = ids[k];
    p.gate_up_a[i] = static_cast<const char*>(p.w_gate_up) + e * 2 * ffn * hidden * elem;
    p.gate_up_b[i] = static_cast<const char*>(p.x) + int64_t(token) * hidden * elem;
    p.gate_up_c[i] = p.gate_up + i * 2 * ffn;
    p.down_a[i] = static_cast<const char*>(p.w_down) + e * hidden * ffn * elem;
    p.down_b[i] = static_cast<const char*>(p.activation) + i * ffn * elem;
    p.down_c[i] = p.expert_out + i * hidden;
  }
}

template <typename T>
__global__ void __launch_bounds__(kCombineThreads) moe_combine_kernel(MoeCombineParams p) {
  const int token = blockIdx.x;
  const float* weights = p.expert_weights + int64_t(token) * p.top_k;
  T* out = static_cast<T*>(p.out) + int64_t(token) * p.hidden;
  for (int i = int(threadIdx.x); i < p.hidden; i += int(blockDim.x)) {
    float acc = p.shared_out ? p.shared_out[int64_t(token) * p.hidden + i] : 0.0f;
    for (int k = 0; k < p.top_k; ++k)
      acc = __fadd_rn(acc, __fmul_rn(weights[k], p.expert_out[(int64_t(token) * p.top_k + k) * p.hidden + i]));
    out[i] = from_float<T>(acc);
  }
}

template <typename T>
__global__ void __launch_bounds__(kWidenThreads) widen_kernel(WidenParams p) {
  const T* x = static_cast<const T*>(p.x);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < p.n; i += int64_t(gridDim.x) * blockDim.x)
    p.y[i] = to_float(x[i]);
}

}  // namespace

void moe_route(const MoeRouteParams& p, cudaStream_t stream) {
  p.validate();
  moe_route_kernel<<<p.rows, 1, 0, stream>>>(p);
  CF_CUDA_CHECK_LAUNCH("moe_route_kernel");
}

void moe_combine(const MoeCombineParams& p, cudaStream_t stream) {
  p.validate();
  if (p.dtype == DType::F16)
    moe_combine_kernel<__half><<<p.rows, kCombineThreads, 0, stream>>>(p);
  else
    moe_combine_kernel<__nv_bfloat16><<<p.rows, kCombineThreads, 0, stream>>>(p);
  CF_CUDA_CHECK_LAUNCH("moe_combine_kernel");
}

void widen_to_fp32(const WidenParams& p, cudaStream_t stream) {
  p.validate();
  const int blocks = int(std::min<int64_t>((p.n + kWidenThreads - 1) / kWidenThreads, 1024));
  if (p.dtype == DType::F16)
    widen_kernel<__half><<<blocks, kWidenThreads, 0, stream>>>(p);
  else
    widen_kernel<__nv_bfloat16><<<blocks, kWidenThreads, 0, stream>>>(p);
  CF_CUDA_CHECK_LAUNCH("widen_kernel");
}

}  // namespace cf::cuda_unfused
