// The MLA block's own kernels: kv_a RMSNorm + RoPE + latent append (with q_nope / q_pe), split-KV latent attention
// with a fixed-order merge, and the RMSNorm of fp32 rows (q_a). Everything else of the block is cuBLAS.
#include <algorithm>
#include <cmath>

#include "clusterfusion/backends/cuda_unfused/deepseek.hpp"
#include "clusterfusion/cuda/check.hpp"
#include "cuda_unfused/device_common.cuh"

namespace cf::cuda_unfused {
namespace {

using namespace detail;

inline constexpr int kAppendThreads = 256;
inline constexpr int kMergeThreads = 256;
inline constexpr int kLatentTileRows = 16;  // cache rows staged in shared memory at a time
inline constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fc00000); }

// The latent pool seen through the Llama path's page-table helpers: one "KV head" of r + rope values.
__host__ __device__ inline KvCacheArgs as_kv_args(const LatentCacheArgs& c, int tokens) {
  KvCacheArgs kv;
  kv.k_pages = c.pages;
  kv.v_pages = c.pages;
  kv.n_pages = c.n_pages;
  kv.page_size = c.page_size;
  kv.kv_indptr = c.kv_indptr;
  kv.kv_indices = c.kv_indices;
  kv.kv_last_page_len = c.kv_last_page_len;
  kv.n_seqs = tokens;
  kv.n_indices = c.n_indices;
  return kv;
}

// Adjacent-pair rotation with the reference's float operations (no FMA contraction): k_pe is bit-identical to
// ref::yarn_rope with the same table values.
__device__ __forceinline__ void rotate_adjacent(float a, float b, float c, float s, float& ya, float& yb) {
  ya = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
  yb = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
}

// ---- kv_a norm + RoPE + append ----------------------------------------------------------------------------------

// q of one token: q_nope rounded to T for the absorption GEMM, q_pe rotated into the rope part of q_latent.
template <typename T>
__device__ void split_and_rotate_q(const MlaRopeAppendParams& p, int token, bool position_ok, const float* cos_row) {
  const int q_head = p.qk_nope + p.qk_rope, half = p.qk_rope / 2, row = p.kv_lora_rank + p.qk_rope;
  const float* q = p.q + int64_t(token) * p.n_heads * q_head;
  T* q_nope = static_cast<T*>(p.q_nope) + int64_t(token) * p.n_heads * p.qk_nope;
  float* q_lat = p.q_latent + int64_t(token) * p.n_heads * row;
  for (int idx = int(threadIdx.x); idx < p.n_heads * p.qk_nope; idx += int(blockDim.x)) {
    const int h = idx / p.qk_nope, n = idx % p.qk_nope;
    q_nope[idx] = from_float<T>(position_ok ? q[h * q_head + n] : quiet_nan());
  }
  for (int idx = int(threadIdx.x); idx < p.n_heads * half; idx += int(blockDim.x)) {
    const int h = idx / half, i = idx % half;
    const float* pe = q + h * q_head + p.qk_nope;
    float ya = quiet_nan(), yb = quiet_nan();
    if (position_ok) rotate_adjacent(pe[2 * i], pe[2 * i + 1], cos_row[i], cos_row[half + i], ya, yb);
    q_lat[h * row + p.kv_lora_rank + 2 * i] = ya;
    q_lat[h * row + p.kv_lora_rank + 2 * i + 1] = yb;
  }
}

// One block per token.
template <typename T>
__global__ void __launch_bounds__(kAppendThreads) mla_rope_append_kernel(MlaRopeAppendParams p) {
  const int token = blockIdx.x;
  const int r = p.kv_lora_rank, half = p.qk_rope / 2, row = r + p.qk_rope;
  const int position = p.positions[token];
  const bool position_ok = position >= 0 && position < p.rope.max_positions;
  if (!position_ok && threadIdx.x == 0) flag_status(p.status, kStatusBadPosition);
  const float* cos_row = p.rope.cos_sin + int64_t(position_ok ? position : 0) * p.qk_rope;
  split_and_rotate_q<T>(p, token, position_ok, cos_row);

  const float* kv = p.kv + int64_t(token) * row;
  float sum_squares = 0.0f;
  for (int i = int(threadIdx.x); i < r; i += int(blockDim.x)) sum_squares = __fmaf_rn(kv[i], kv[i], sum_squares);
  const float inv_rms = 1.0f / sqrtf(block_sum(sum_squares) / float(r) + p.eps);

  const KvCacheArgs kv_args = as_kv_args(p.cache, p.tokens);
  const TokenKv tk = resolve_token_kv(kv_args, token, p.status);
  if (!position_ok || !tk.ok) return;
  const int64_t offset = cache_row_offset(kv_args, tk, tk.kv_len - 1, row);
  if (offset < 0) {
    if (threadIdx.x == 0) flag_status(p.status, kStatusBadPageId);
    return;
  }
  T* dst = static_cast<T*>(p.cache.pages) + offset;
  const T* norm = static_cast<const T*>(p.kv_a_norm);
  for (int i = int(threadIdx.x); i < r; i += int(blockDim.x))
    dst[i] = from_float<T>(__fmul_rn(__fmul_rn(kv[i], inv_rms), to_float(norm[i])));  // (x * inv_rms) * w
  for (int i = int(threadIdx.x); i < half; i += int(blockDim.x)) {
    float ya, yb;
    rotate_adjacent(kv[r + 2 * i], kv[r + 2 * i + 1], cos_row[i], cos_row[half + i], ya, yb);
    dst[r + 2 * i] = from_float<T>(ya);
    dst[r + 2 * i + 1] = from_float<T>(yb);
  }
}

// ---- RMSNorm of fp32 rows -----------------------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(kAppendThreads) rmsnorm_rows_kernel(RmsNormRowsParams p) {
  const float* x = p.x + int64_t(blockIdx.x) * p.n;
  T* y = static_cast<T*>(p.y) + int64_t(blockIdx.x) * p.n;
  const T* w = static_cast<const T*>(p.weight);
  float sum_squares = 0.0f;
  for (int i = int(threadIdx.x); i < p.n; i += int(blockDim.x)) sum_squares = __fmaf_rn(x[i], x[i], sum_squares);
  const float inv_rms = 1.0f / sqrtf(block_sum(sum_squares) / float(p.n) + p.eps);
  for (int i = int(threadIdx.x); i < p.n; i += int(blockDim.x))
    y[i] = from_float<T>(__fmul_rn(__fmul_rn(x[i], inv_rms), to_float(w[i])));
}

// ---- split-KV latent attention ------------------------------------------------------------------------------------

__device__ __forceinline__ int latent_splits_for(int kv_len, int max_splits) {
  const int wanted = (kv_len + kMinRowsPerSplit - 1) / kMinRowsPerSplit;
  return wanted < max_splits ? wanted : max_splits;
}

// Per (token, head, split): r accumulator floats, then m (log2 domain), then l.
__device__ __forceinline__ float* latent_slot(const LatentAttentionParams& p, int token, int head, int split) {
  return p.partial + ((int64_t(token) * p.n_heads + head) * p.max_splits + split) * (p.kv_lora_rank + 2);
}

// Copies cache rows [base, base + n_rows) of a sequence into the shared tile (16-byte pieces; a bad page id gives
// zeros and sets `bad`).
template <typename T>
__device__ void stage_rows(const LatentAttentionParams& p, const KvCacheArgs& kv, const TokenKv& tk, int base,
                           int n_rows, int row, T* tile, bool& bad) {
  const int pieces = row / kVectorElements;
  for (int idx = int(threadIdx.x); idx < n_rows * pieces; idx += int(blockDim.x)) {
    const int rr = idx / pieces, piece = idx % pieces;
    const int64_t offset = cache_row_offset(kv, tk, base + rr, row);
    uint4 raw = make_uint4(0, 0, 0, 0);
    if (offset < 0)
      bad = true;
    else
      raw = __ldg(reinterpret_cast<const uint4*>(static_cast<const T*>(p.cache.pages) + offset) + piece);
    reinterpret_cast<uint4*>(tile + rr * row)[piece] = raw;
  }
}

// Online softmax of one head (one warp) over the staged rows: lane owns dimensions lane + 32 k.
template <typename T, int kSlots>
struct HeadState {
  float q[kSlots];    // q_lat * scale * log2(e)
  float acc[kSlots];  // sum_t 2^(s_t - m) row_t[d], d < r
  float m = -INFINITY;
  float l = 0.0f;

  __device__ void add_rows(const T* tile, int n_rows, int row, int r, int lane) {
    for (int rr = 0; rr < n_rows; ++rr) {
      const T* values = tile + rr * row;
      float dot = 0.0f;
#pragma unroll
      for (int k = 0; k < kSlots; ++k)
        if (lane + kWarpSize * k < row) dot = fmaf(q[k], to_float(values[lane + kWarpSize * k]), dot);
#pragma unroll
      for (int offset = kWarpSize / 2; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
      const float m_new = fmaxf(m, dot);  // a NaN score leaves m and turns l NaN below: it reaches the output
      const float alpha = exp2f(m - m_new);
      const float weight = exp2f(dot - m_new);
      l = l * alpha + weight;
      m = m_new;
#pragma unroll
      for (int k = 0; k < kSlots; ++k)
        if (lane + kWarpSize * k < r) acc[k] = fmaf(weight, to_float(values[lane + kWarpSize * k]), acc[k] * alpha);
    }
  }
};

// Grid (max_splits, head chunks, tokens); one warp per head of the chunk, every warp reading the same staged rows.
template <typename T, int kSlots>
__global__ void __launch_bounds__(kMaxLatentHeadsPerBlock * kWarpSize)
    latent_attention_kernel(LatentAttentionParams p, float scale_log2, int heads_per_block) {
  const int split = blockIdx.x, token = blockIdx.z;
  const int warp = int(threadIdx.x) / kWarpSize, lane = int(threadIdx.x) % kWarpSize;
  const int head = int(blockIdx.y) * heads_per_block + warp;
  const int r = p.kv_lora_rank, row = r + p.qk_rope;
  const KvCacheArgs kv = as_kv_args(p.cache, p.tokens);
  const TokenKv tk = resolve_token_kv(kv, token, nullptr);  // the merge kernel reports bad tokens
  if (!tk.ok) return;
  const int n_splits = latent_splits_for(tk.kv_len, p.max_splits);
  if (split >= n_splits) return;
  const int rows_per_split = (tk.kv_len + n_splits - 1) / n_splits;
  const int begin = split * rows_per_split, end = min(tk.kv_len, begin + rows_per_split);

  const bool active = head < p.n_heads;  // idle warps still stage rows and meet the barriers
  HeadState<T, kSlots> st;
  const float* q = p.q_latent + (int64_t(token) * p.n_heads + (active ? head : 0)) * row;
#pragma unroll
  for (int k = 0; k < kSlots; ++k) {
    st.q[k] = lane + kWarpSize * k < row ? q[lane + kWarpSize * k] * scale_log2 : 0.0f;
    st.acc[k] = 0.0f;
  }
  __shared__ __align__(16) T tile[kLatentTileRows * kMaxLatentRow];
  bool bad = false;
  for (int base = begin; base < end; base += kLatentTileRows) {
    const int n_rows = min(kLatentTileRows, end - base);
    stage_rows<T>(p, kv, tk, base, n_rows, row, tile, bad);
    __syncthreads();
    st.add_rows(tile, n_rows, row, r, lane);
    __syncthreads();
  }
  const bool any_bad = __syncthreads_or(bad);
  if (any_bad && threadIdx.x == 0) flag_status(p.status, kStatusBadPageId);
  if (!active) return;
  float* slot = latent_slot(p, token, head, split);
#pragma unroll
  for (int k = 0; k < kSlots; ++k)
    if (lane + kWarpSize * k < r) slot[lane + kWarpSize * k] = st.acc[k];
  if (lane == 0) {
    slot[r] = st.m;
    slot[r + 1] = any_bad ? quiet_nan() : st.l;  // NaN poisons the merge
  }
}

// Grid (n_heads, tokens): o_lat = sum_s acc_s 2^(m_s - M) / sum_s l_s 2^(m_s - M), splits in index order.
template <typename T>
__global__ void __launch_bounds__(kMergeThreads) merge_latent_splits_kernel(LatentAttentionParams p) {
  const int head = blockIdx.x, token = blockIdx.y, r = p.kv_lora_rank;
  T* out = static_cast<T*>(p.o_latent) + (int64_t(token) * p.n_heads + head) * r;
  const TokenKv tk = resolve_token_kv(as_kv_args(p.cache, p.tokens), token, p.status);
  const int n_splits = tk.ok ? latent_splits_for(tk.kv_len, p.max_splits) : 0;
  float m = -INFINITY;
  bool poisoned = !tk.ok;
  for (int s = 0; s < n_splits; ++s) {
    const float* slot = latent_slot(p, token, head, s);
    m = fmaxf(m, slot[r]);
    poisoned |= isnan(slot[r + 1]);
  }
  for (int d = int(threadIdx.x); d < r; d += int(blockDim.x)) {
    float l = 0.0f, a = 0.0f;
    if (!poisoned && m != -INFINITY) {
      for (int s = 0; s < n_splits; ++s) {
        const float* slot = latent_slot(p, token, head, s);
        const float weight = exp2f(slot[r] - m);
        l += slot[r + 1] * weight;
        a += slot[d] * weight;
      }
    }
    out[d] = from_float<T>(poisoned || !(l > 0.0f) ? quiet_nan() : a / l);
  }
}

template <typename T, int kSlots>
void launch_latent_attention(const LatentAttentionParams& p, cudaStream_t stream) {
  const int heads_per_block = std::min(p.n_heads, kMaxLatentHeadsPerBlock);
  const int chunks = (p.n_heads + heads_per_block - 1) / heads_per_block;
  const dim3 grid(unsigned(p.max_splits), unsigned(chunks), unsigned(p.tokens));
  const float scale_log2 = p.scale * kLog2e;
  latent_attention_kernel<T, kSlots><<<grid, unsigned(heads_per_block * kWarpSize), 0, stream>>>(p, scale_log2,
                                                                                                 heads_per_block);
  CF_CUDA_CHECK_LAUNCH("latent_attention_kernel");
  merge_latent_splits_kernel<T><<<dim3(unsigned(p.n_heads), unsigned(p.tokens)), kMergeThreads, 0, stream>>>(p);
  CF_CUDA_CHECK_LAUNCH("merge_latent_splits_kernel");
}

// Registers per lane grow with the row: the smallest instantiation that holds r + rope values.
template <typename T>
void dispatch_latent_attention(const LatentAttentionParams& p, cudaStream_t stream) {
  const int row = p.kv_lora_rank + p.qk_rope;
  if (row <= 4 * kWarpSize)
    launch_latent_attention<T, 4>(p, stream);
  else if (row <= 8 * kWarpSize)
    launch_latent_attention<T, 8>(p, stream);
  else if (row <= 18 * kWarpSize)
    launch_latent_attention<T, 18>(p, stream);  // 576: every DeepSeek-V2 model
  else
    launch_latent_attention<T, kMaxLatentRow / kWarpSize>(p, stream);
}

}  // namespace

void mla_rope_append(const MlaRopeAppendParams& p, cudaStream_t stream) {
  p.validate();
  if (p.dtype == DType::F16)
    mla_rope_append_kernel<__half><<<p.tokens, kAppendThreads, 0, stream>>>(p);
  else
    mla_rope_append_kernel<__nv_bfloat16><<<p.tokens, kAppendThreads, 0, stream>>>(p);
  CF_CUDA_CHECK_LAUNCH("mla_rope_append_kernel");
}

void rmsnorm_rows(const RmsNormRowsParams& p, cudaStream_t stream) {
  p.validate();
  if (p.dtype == DType::F16)
    rmsnorm_rows_kernel<__half><<<p.rows, kAppendThreads, 0, stream>>>(p);
  else
    rmsnorm_rows_kernel<__nv_bfloat16><<<p.rows, kAppendThreads, 0, stream>>>(p);
  CF_CUDA_CHECK_LAUNCH("rmsnorm_rows_kernel");
}

void latent_attention(const LatentAttentionParams& p, cudaStream_t stream) {
  p.validate();
  if (p.dtype == DType::F16)
    dispatch_latent_attention<__half>(p, stream);
  else
    dispatch_latent_attention<__nv_bfloat16>(p, stream);
}

int plan_latent_splits(int tokens, int n_heads, int sm_count, int capacity) {
  // Blocks of up to 16 warps: ~4 per SM in flight, two waves.
  constexpr int kTargetBlocksPerSm = 8;
  const int chunks = (std::max(n_heads, 1) + kMaxLatentHeadsPerBlock - 1) / kMaxLatentHeadsPerBlock;
  const int64_t blocks_per_split = int64_t(std::max(tokens, 1)) * chunks;
  const int64_t target = int64_t(std::max(sm_count, 1)) * kTargetBlocksPerSm;
  const int64_t wanted = (target + blocks_per_split - 1) / blocks_per_split;
  return int(std::clamp<int64_t>(wanted, 1, std::max(capacity, 1)));
}

}  // namespace cf::cuda_unfused
