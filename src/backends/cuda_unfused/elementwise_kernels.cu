// add + RMSNorm, SiLU * up, and argmax: one block per row, fixed-order reductions (deterministic).
#include <algorithm>
#include <cfloat>
#include <climits>

#include "clusterfusion/cuda/check.hpp"
#include "cuda_unfused/device_common.cuh"

namespace cf::cuda_unfused {
namespace {

using namespace detail;

inline constexpr int kNormThreads = 256;
inline constexpr int kSiluThreads = 256;
inline constexpr int kArgmaxThreads = 1024;

// One block per row; each thread owns the same 8-element groups in both passes, so residual_out may alias hidden or
// residual (an element is read and written by one thread only).
template <typename T>
__global__ void __launch_bounds__(kNormThreads) add_rmsnorm_kernel(AddRmsNormParams p) {
  const int64_t row_offset = int64_t(blockIdx.x) * p.n;
  const T* hidden = static_cast<const T*>(p.hidden) + row_offset;
  const T* residual = p.residual ? static_cast<const T*>(p.residual) + row_offset : nullptr;
  const T* weight = static_cast<const T*>(p.weight);
  T* residual_out = p.residual_out ? static_cast<T*>(p.residual_out) + row_offset : nullptr;
  T* y = static_cast<T*>(p.y) + row_offset;
  const int stride = int(blockDim.x) * kVectorElements;

  float sum_squares = 0.0f;
  for (int i = int(threadIdx.x) * kVectorElements; i < p.n; i += stride) {
    float h[kVectorElements], r[kVectorElements] = {};
    load8(hidden + i, h);
    if (residual) load8(residual + i, r);
#pragma unroll
    for (int j = 0; j < kVectorElements; ++j) {
      const float v = residual ? __fadd_rn(h[j], r[j]) : h[j];
      sum_squares = __fmaf_rn(v, v, sum_squares);
    }
  }
  const float total = block_sum(sum_squares);
  const float inv_rms = 1.0f / sqrtf(total / float(p.n) + p.eps);

  for (int i = int(threadIdx.x) * kVectorElements; i < p.n; i += stride) {
    float h[kVectorElements], r[kVectorElements] = {}, w[kVectorElements], v[kVectorElements], out[kVectorElements];
    load8(hidden + i, h);
    if (residual) load8(residual + i, r);
    load8(weight + i, w);
#pragma unroll
    for (int j = 0; j < kVectorElements; ++j) {
      v[j] = residual ? __fadd_rn(h[j], r[j]) : h[j];  // no "+ 0": -0.0 must stay -0.0 in residual_out
      out[j] = __fmul_rn(__fmul_rn(v[j], inv_rms), w[j]);  // (v * inv_rms) * w, as the reference
    }
    if (residual_out) store8(residual_out + i, v);
    store8(y + i, out);
  }
}

template <typename T>
__global__ void __launch_bounds__(kSiluThreads) silu_mul_kernel(SiluMulParams p) {
  const int64_t total = int64_t(p.rows) * p.n;
  T* out = static_cast<T*>(p.out);
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = idx / p.n, col = idx % p.n;
    const float gate = p.gate_up[row * 2 * p.n + col];
    const float up = p.gate_up[row * 2 * p.n + p.n + col];
    const float silu = gate / (1.0f + expf(-gate));
    out[idx] = from_float<T>(silu * up);
  }
}

// (value, index) candidate of an argmax; index INT_MAX = none yet.
struct ArgmaxCandidate {
  float value;
  int index;
};

// a beats b: a exists and (b does not, or a is larger, or equal with a smaller index).
__device__ __forceinline__ bool beats(const ArgmaxCandidate& a, const ArgmaxCandidate& b) {
  if (a.index == INT_MAX) return false;
  if (b.index == INT_MAX) return true;
  return a.value > b.value || (a.value == b.value && a.index < b.index);
}

__global__ void __launch_bounds__(kArgmaxThreads) argmax_kernel(ArgmaxParams p) {
  const float* row = p.logits + int64_t(blockIdx.x) * p.n;
  ArgmaxCandidate best{-FLT_MAX, INT_MAX};
  for (int i = int(threadIdx.x); i < p.n; i += int(blockDim.x)) {
    const float v = row[i];
    if (isnan(v)) continue;
    const ArgmaxCandidate c{v, i};
    if (beats(c, best)) best = c;
  }
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const ArgmaxCandidate other{__shfl_xor_sync(0xffffffffu, best.value, offset),
                                __shfl_xor_sync(0xffffffffu, best.index, offset)};
    if (beats(other, best)) best = other;
  }
  __shared__ ArgmaxCandidate warp_best[kArgmaxThreads / kWarpSize];
  const int warp = int(threadIdx.x) / kWarpSize, lane = int(threadIdx.x) % kWarpSize;
  if (lane == 0) warp_best[warp] = best;
  __syncthreads();
  if (warp == 0) {
    const int n_warps = int(blockDim.x) / kWarpSize;
    best = lane < n_warps ? warp_best[lane] : ArgmaxCandidate{-FLT_MAX, INT_MAX};
#pragma unroll
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
      const ArgmaxCandidate other{__shfl_xor_sync(0xffffffffu, best.value, offset),
                                  __shfl_xor_sync(0xffffffffu, best.index, offset)};
      if (beats(other, best)) best = other;
    }
    if (lane == 0) p.tokens[blockIdx.x] = best.index == INT_MAX ? 0 : best.index;
  }
}

}  // namespace

void add_rmsnorm(const AddRmsNormParams& p, cudaStream_t stream) {
  p.validate();
  if (p.dtype == DType::F16)
    add_rmsnorm_kernel<__half><<<p.rows, kNormThreads, 0, stream>>>(p);
  else
    add_rmsnorm_kernel<__nv_bfloat16><<<p.rows, kNormThreads, 0, stream>>>(p);
  CF_CUDA_CHECK_LAUNCH("add_rmsnorm_kernel");
}

void silu_mul(const SiluMulParams& p, cudaStream_t stream) {
  p.validate();
  const int64_t total = int64_t(p.rows) * p.n;
  const int blocks = int(std::min<int64_t>((total + kSiluThreads - 1) / kSiluThreads, 4096));
  if (p.dtype == DType::F16)
    silu_mul_kernel<__half><<<blocks, kSiluThreads, 0, stream>>>(p);
  else
    silu_mul_kernel<__nv_bfloat16><<<blocks, kSiluThreads, 0, stream>>>(p);
  CF_CUDA_CHECK_LAUNCH("silu_mul_kernel");
}

void argmax(const ArgmaxParams& p, cudaStream_t stream) {
  p.validate();
  argmax_kernel<<<p.rows, kArgmaxThreads, 0, stream>>>(p);
  CF_CUDA_CHECK_LAUNCH("argmax_kernel");
}

}  // namespace cf::cuda_unfused
