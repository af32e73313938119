// Device helpers shared by the cuda-unfused kernels: fp16/bf16 <-> float, 16-byte vector loads/stores of 8
// elements, a deterministic block sum, and the resolution of a token's KV sequence with device-side checks.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "clusterfusion/backends/cuda_unfused/ops.hpp"

namespace cf::cuda_unfused::detail {

inline constexpr int kWarpSize = 32;
inline constexpr int kVectorElements = 8;  // 8 x 2-byte elements = one 16-byte access

template <typename T>
struct Types;
template <>
struct Types<__half> {
  using Pair = __half2;
  static __device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
  static __device__ __forceinline__ __half from_float(float x) { return __float2half_rn(x); }
  static __device__ __forceinline__ float2 pair_to_float2(__half2 x) { return __half22float2(x); }
  static __device__ __forceinline__ __half2 pair_from_floats(float a, float b) { return __floats2half2_rn(a, b); }
};
template <>
struct Types<__nv_bfloat16> {
  using Pair = __nv_bfloat162;
  static __device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
  static __device__ __forceinline__ float2 pair_to_float2(__nv_bfloat162 x) { return __bfloat1622float2(x); }
  static __device__ __forceinline__ __nv_bfloat162 pair_from_floats(float a, float b) {
    return __floats2bfloat162_rn(a, b);
  }
};

template <typename T>
__device__ __forceinline__ float to_float(T x) {
  return Types<T>::to_float(x);
}
template <typename T>
__device__ __forceinline__ T from_float(float x) {
  return Types<T>::from_float(x);
}

// Unpacks 16 bytes holding 8 elements of T.
template <typename T>
__device__ __forceinline__ void unpack8(const uint4& raw, float (&out)[kVectorElements]) {
  const auto* pairs = reinterpret_cast<const typename Types<T>::Pair*>(&raw);
#pragma unroll
  for (int i = 0; i < kVectorElements / 2; ++i) {
    const float2 f = Types<T>::pair_to_float2(pairs[i]);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

// 8 elements from a 16-byte aligned address.
template <typename T>
__device__ __forceinline__ void load8(const T* p, float (&out)[kVectorElements]) {
  unpack8<T>(*reinterpret_cast<const uint4*>(p), out);
}

// Same through the read-only (non-coherent) path: only for data no thread of this kernel writes.
template <typename T>
__device__ __forceinline__ void load8_readonly(const T* p, float (&out)[kVectorElements]) {
  unpack8<T>(__ldg(reinterpret_cast<const uint4*>(p)), out);
}

template <typename T>
__device__ __forceinline__ void store8(T* p, const float (&in)[kVectorElements]) {
  uint4 raw;
  auto* pairs = reinterpret_cast<typename Types<T>::Pair*>(&raw);
#pragma unroll
  for (int i = 0; i < kVectorElements / 2; ++i) pairs[i] = Types<T>::pair_from_floats(in[2 * i], in[2 * i + 1]);
  *reinterpret_cast<uint4*>(p) = raw;
}

// Sum over the block in a fixed order (so the same inputs give the same bits every run). blockDim.x must be a
// multiple of 32 and at most 1024. All threads get the result.
__device__ __forceinline__ float block_sum(float value) {
  __shared__ float warp_sums[32];
  __shared__ float total;
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  const int warp = int(threadIdx.x) / kWarpSize, lane = int(threadIdx.x) % kWarpSize;
  const int n_warps = int(blockDim.x) / kWarpSize;
  if (lane == 0) warp_sums[warp] = value;
  __syncthreads();
  if (warp == 0) {
    float v = lane < n_warps ? warp_sums[lane] : 0.0f;
#pragma unroll
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    if (lane == 0) total = v;
  }
  __syncthreads();
  return total;
}

__device__ __forceinline__ void flag_status(uint32_t* status, uint32_t bit) {
  if (status) atomicOr(status, bit);
}

// Where a token's KV lives: kv_len cache entries of its sequence, in pages pages[0 .. n_seq_pages).
struct TokenKv {
  int kv_len = 0;
  int n_seq_pages = 0;
  const int32_t* pages = nullptr;
  bool ok = false;
};

// Resolves token `token` against the page table, checking every index it reads (status bits on failure).
__device__ __forceinline__ TokenKv resolve_token_kv(const KvCacheArgs& kv, int token, uint32_t* status) {
  TokenKv r;
  const int seq = kv.token_seq ? kv.token_seq[token] : token;
  if (seq < 0 || seq >= kv.n_seqs) {
    flag_status(status, kStatusBadSequence);
    return r;
  }
  const int begin = kv.kv_indptr[seq], end = kv.kv_indptr[seq + 1];
  if (begin < 0 || end < begin || end > kv.n_indices) {
    flag_status(status, kStatusBadPageTable);
    return r;
  }
  const int n_seq_pages = end - begin;
  int kv_len = 0;
  if (kv.token_kv_len) {
    kv_len = kv.token_kv_len[token];
  } else if (n_seq_pages > 0) {
    const int last = kv.kv_last_page_len ? kv.kv_last_page_len[seq] : kv.page_size;  // null: full last pages
    if (last < 1 || last > kv.page_size) {
      flag_status(status, kStatusBadPageTable);
      return r;
    }
    kv_len = (n_seq_pages - 1) * kv.page_size + last;
  }
  if (kv_len < 1 || int64_t(kv_len) > int64_t(n_seq_pages) * kv.page_size) {
    flag_status(status, kStatusBadKvLen);
    return r;
  }
  r.kv_len = kv_len;
  r.n_seq_pages = n_seq_pages;
  r.pages = kv.kv_indices + begin;
  r.ok = true;
  return r;
}

// Element offset of cache entry `pos` of a sequence (row start: [page, offset, 0, 0]), or -1 for a bad page id.
__device__ __forceinline__ int64_t cache_row_offset(const KvCacheArgs& kv, const TokenKv& tk, int pos,
                                                    int64_t row_elements) {
  const int page = tk.pages[pos / kv.page_size];
  if (page < 0 || page >= kv.n_pages) return -1;
  return (int64_t(page) * kv.page_size + pos % kv.page_size) * row_elements;
}

}  // namespace cf::cuda_unfused::detail
