// Bias + RoPE + KV append, and split-KV decode attention (flash-decoding) with a deterministic merge.
#include <algorithm>
#include <cmath>

#include "clusterfusion/cuda/check.hpp"
#include "cuda_unfused/device_common.cuh"

namespace cf::cuda_unfused {
namespace {

using namespace detail;

inline constexpr int kRopeThreads = 256;
inline constexpr int kAttentionWarps = 4;
inline constexpr int kAttentionThreads = kAttentionWarps * kWarpSize;
inline constexpr float kLog2e = 1.4426950408889634f;

// ---- bias + RoPE + append ------------------------------------------------------------------------------------

// Rotated pair values with exactly the reference's float operations (no contraction into FMA): the appended k is
// bit-identical to cf::ref::rope_with_cache + rounding of the same inputs.
__device__ __forceinline__ void rotate_pair(float xa, float xb, float c, float s, float& ya, float& yb) {
  ya = __fsub_rn(__fmul_rn(xa, c), __fmul_rn(xb, s));
  yb = __fadd_rn(__fmul_rn(xa, s), __fmul_rn(xb, c));
}

__device__ __forceinline__ void pair_dims(RopeStyle style, int pair, int rot_dim, int& a, int& b) {
  if (style == RopeStyle::NeoX) {
    a = pair;
    b = pair + rot_dim / 2;
  } else {
    a = 2 * pair;
    b = 2 * pair + 1;
  }
}

// One block per token. Writes rotated q (fp32) always (NaN for a bad position); writes k, v to the cache only when
// the position and the token's page table entry are valid.
template <typename T>
__global__ void __launch_bounds__(kRopeThreads) rope_append_kernel(RopeAppendParams p) {
  const int token = blockIdx.x;
  const int hd = p.head_dim, half_rot = p.rot_dim / 2;
  const int q_dim = p.n_heads * hd, kv_dim = p.n_kv_heads * hd;
  const float* src = p.qkv + int64_t(token) * (q_dim + 2 * kv_dim);
  const T* bias = static_cast<const T*>(p.bias);
  auto biased = [&](int i) { return bias ? __fadd_rn(src[i], to_float(bias[i])) : src[i]; };

  const int position = p.positions[token];
  const bool position_ok = position >= 0 && position < p.rope.max_positions;
  if (!position_ok && threadIdx.x == 0) flag_status(p.status, kStatusBadPosition);
  const float* cos_row = p.rope.cos_sin + int64_t(position_ok ? position : 0) * p.rot_dim;
  const float* sin_row = cos_row + half_rot;

  float* q_out = p.q_out + int64_t(token) * q_dim;
  const float nan = __int_as_float(0x7fc00000);
  for (int idx = int(threadIdx.x); idx < p.n_heads * half_rot; idx += int(blockDim.x)) {
    const int head = idx / half_rot, pair = idx % half_rot;
    int a, b;
    pair_dims(p.style, pair, p.rot_dim, a, b);
    float ya = nan, yb = nan;
    if (position_ok) rotate_pair(biased(head * hd + a), biased(head * hd + b), cos_row[pair], sin_row[pair], ya, yb);
    q_out[head * hd + a] = ya;
    q_out[head * hd + b] = yb;
  }
  const int pass_dims = hd - p.rot_dim;
  for (int idx = int(threadIdx.x); idx < p.n_heads * pass_dims; idx += int(blockDim.x)) {
    const int d = idx / pass_dims * hd + p.rot_dim + idx % pass_dims;
    q_out[d] = position_ok ? biased(d) : nan;
  }

  const TokenKv tk = resolve_token_kv(p.kv, token, p.status);
  if (!position_ok || !tk.ok) return;
  const int64_t row = cache_row_offset(p.kv, tk, tk.kv_len - 1, kv_dim);
  if (row < 0) {
    if (threadIdx.x == 0) flag_status(p.status, kStatusBadPageId);
    return;
  }
  T* k_row = static_cast<T*>(p.kv.k_pages) + row;
  T* v_row = static_cast<T*>(p.kv.v_pages) + row;
  for (int idx = int(threadIdx.x); idx < p.n_kv_heads * half_rot; idx += int(blockDim.x)) {
    const int head = idx / half_rot, pair = idx % half_rot;
    int a, b;
    pair_dims(p.style, pair, p.rot_dim, a, b);
    float ya, yb;
    rotate_pair(biased(q_dim + head * hd + a), biased(q_dim + head * hd + b), cos_row[pair], sin_row[pair], ya, yb);
    k_row[head * hd + a] = from_float<T>(ya);
    k_row[head * hd + b] = from_float<T>(yb);
  }
  for (int idx = int(threadIdx.x); idx < p.n_kv_heads * pass_dims; idx += int(blockDim.x)) {
    const int d = idx / pass_dims * hd + p.rot_dim + idx % pass_dims;
    k_row[d] = from_float<T>(biased(q_dim + d));
  }
  for (int d = int(threadIdx.x); d < kv_dim; d += int(blockDim.x)) v_row[d] = from_float<T>(biased(q_dim + kv_dim + d));
}

// ---- split-KV attention --------------------------------------------------------------------------------------

// How many splits a token with kv_len entries uses (same on every kernel that asks).
__device__ __forceinline__ int splits_for(int kv_len, int max_splits) {
  const int wanted = (kv_len + kMinRowsPerSplit - 1) / kMinRowsPerSplit;
  return wanted < max_splits ? wanted : max_splits;
}

// Compile-time layout of one attention block: each cache row (head_dim elements) is read by kLanesPerRow lanes
// with one 16-byte load each; a warp covers kRowsPerWarp rows at a time, kUnroll times per iteration.
template <int kHeadDim, int kGroupCap>
struct AttentionLayout {
  static constexpr int kLanesPerRow = kHeadDim / kVectorElements;
  static constexpr int kRowsPerWarp = kWarpSize / kLanesPerRow;
  // Fewer rows in flight when each row carries more query heads, to stay clear of register spills.
  static constexpr int kUnroll = kGroupCap >= 8 ? 2 : 4;
  static constexpr int kRowsPerIteration = kAttentionWarps * kRowsPerWarp * kUnroll;
  static_assert(kHeadDim % kVectorElements == 0 && kWarpSize % kLanesPerRow == 0, "unsupported head_dim");
};

// Online-softmax state of one query head, in the log2 domain (scores pre-multiplied by log2(e)).
struct State {
  float m;  // running max, -inf when empty
  float l;  // sum of 2^(s - m)
};

// Partial result layout per (token, head, split): head_dim accumulator floats, then m, then l.
__device__ __forceinline__ float* partial_slot(const DecodeAttentionParams& p, int token, int head, int split) {
  return p.partial + ((int64_t(token) * p.n_heads + head) * p.max_splits + split) * (p.head_dim + 2);
}

// Grid (max_splits, n_kv_heads * head_chunks, tokens). Block handles query heads
// [kv_head * group + chunk * kGroupCap, + kGroupCap) (those < the group) over cache rows [begin, end) of its split.
template <typename T, int kHeadDim, int kGroupCap>
__global__ void __launch_bounds__(kAttentionThreads) split_attention_kernel(DecodeAttentionParams p, float scale_log2,
                                                                           int head_chunks) {
  using L = AttentionLayout<kHeadDim, kGroupCap>;
  const int token = blockIdx.z, split = blockIdx.x;
  const int kv_head = int(blockIdx.y) / head_chunks, chunk = int(blockIdx.y) % head_chunks;
  const int group = p.n_heads / p.n_kv_heads;
  const int first_in_group = chunk * kGroupCap;
  const int heads_here = min(kGroupCap, group - first_in_group);
  const int head0 = kv_head * group + first_in_group;

  const TokenKv tk = resolve_token_kv(p.kv, token, nullptr);  // the merge kernel reports bad tokens
  if (!tk.ok) return;
  const int n_splits = splits_for(tk.kv_len, p.max_splits);
  if (split >= n_splits) return;
  const int rows_per_split = (tk.kv_len + n_splits - 1) / n_splits;
  const int begin = split * rows_per_split;
  const int end = min(tk.kv_len, begin + rows_per_split);

  const int warp = int(threadIdx.x) / kWarpSize, lane = int(threadIdx.x) % kWarpSize;
  const int row_in_warp = lane / L::kLanesPerRow, sub = lane % L::kLanesPerRow;
  const int dim0 = sub * kVectorElements;  // this lane's 8 dimensions
  const int64_t row_elements = int64_t(p.n_kv_heads) * kHeadDim;
  const T* k_base = static_cast<const T*>(p.kv.k_pages) + int64_t(kv_head) * kHeadDim + dim0;
  const T* v_base = static_cast<const T*>(p.kv.v_pages) + int64_t(kv_head) * kHeadDim + dim0;

  float q[kGroupCap][kVectorElements];
#pragma unroll
  for (int g = 0; g < kGroupCap; ++g) {
    const float* qh = p.q + (int64_t(token) * p.n_heads + head0 + min(g, heads_here - 1)) * kHeadDim + dim0;
#pragma unroll
    for (int j = 0; j < kVectorElements; ++j) q[g][j] = qh[j] * scale_log2;
  }
  State st[kGroupCap];
  float acc[kGroupCap][kVectorElements];
#pragma unroll
  for (int g = 0; g < kGroupCap; ++g) {
    st[g] = {-INFINITY, 0.0f};
#pragma unroll
    for (int j = 0; j < kVectorElements; ++j) acc[g][j] = 0.0f;
  }

  bool bad_page = false;
  for (int base = begin; base < end; base += L::kRowsPerIteration) {
    float k[L::kUnroll][kVectorElements], v[L::kUnroll][kVectorElements];
    bool valid[L::kUnroll];
#pragma unroll
    for (int u = 0; u < L::kUnroll; ++u) {
      const int pos = base + (u * kAttentionWarps + warp) * L::kRowsPerWarp + row_in_warp;
      int64_t row = -1;
      if (pos < end) {
        row = cache_row_offset(p.kv, tk, pos, row_elements);
        bad_page |= row < 0;
      }
      valid[u] = row >= 0;
      if (valid[u]) {
        load8_readonly(k_base + row, k[u]);
        load8_readonly(v_base + row, v[u]);
      } else {
#pragma unroll
        for (int j = 0; j < kVectorElements; ++j) k[u][j] = v[u][j] = 0.0f;
      }
    }
#pragma unroll
    for (int g = 0; g < kGroupCap; ++g) {
      float s[L::kUnroll];
#pragma unroll
      for (int u = 0; u < L::kUnroll; ++u) {
        float dot = 0.0f;
#pragma unroll
        for (int j = 0; j < kVectorElements; ++j) dot = fmaf(q[g][j], k[u][j], dot);
#pragma unroll
        for (int offset = L::kLanesPerRow / 2; offset > 0; offset /= 2)
          dot += __shfl_xor_sync(0xffffffffu, dot, offset);
        s[u] = valid[u] ? dot : -INFINITY;
      }
      float m_new = st[g].m;
#pragma unroll
      for (int u = 0; u < L::kUnroll; ++u) m_new = fmaxf(m_new, s[u]);
      // Branch-free (no divergence between the shuffles): while nothing valid has been seen, m_new is -inf and
      // subtracting 0 instead makes alpha and every p_u exp2(-inf) = 0, leaving the empty state unchanged.
      const float m_ref = m_new == -INFINITY ? 0.0f : m_new;
      const float alpha = exp2f(st[g].m - m_ref);
      float p_u[L::kUnroll];
      float l_add = 0.0f;
#pragma unroll
      for (int u = 0; u < L::kUnroll; ++u) {
        p_u[u] = exp2f(s[u] - m_ref);
        l_add += p_u[u];
      }
      st[g].l = st[g].l * alpha + l_add;
      st[g].m = m_new;
#pragma unroll
      for (int j = 0; j < kVectorElements; ++j) {
        float a = acc[g][j] * alpha;
#pragma unroll
        for (int u = 0; u < L::kUnroll; ++u) a = fmaf(p_u[u], v[u][j], a);
        acc[g][j] = a;
      }
    }
  }

  // Merge the row groups of the warp (butterfly over lanes with the same `sub`): all end with the same state.
#pragma unroll
  for (int offset = L::kLanesPerRow; offset < kWarpSize; offset *= 2) {
#pragma unroll
    for (int g = 0; g < kGroupCap; ++g) {
      const float m_other = __shfl_xor_sync(0xffffffffu, st[g].m, offset);
      const float l_other = __shfl_xor_sync(0xffffffffu, st[g].l, offset);
      const float m_new = fmaxf(st[g].m, m_other);
      const float w_self = m_new == -INFINITY ? 0.0f : exp2f(st[g].m - m_new);
      const float w_other = m_new == -INFINITY ? 0.0f : exp2f(m_other - m_new);
      st[g].l = st[g].l * w_self + l_other * w_other;
      st[g].m = m_new;
#pragma unroll
      for (int j = 0; j < kVectorElements; ++j) {
        const float a_other = __shfl_xor_sync(0xffffffffu, acc[g][j], offset);
        acc[g][j] = acc[g][j] * w_self + a_other * w_other;
      }
    }
  }

  // Merge the warps through shared memory, in warp order.
  __shared__ float s_acc[kAttentionWarps][kGroupCap][kHeadDim];
  __shared__ State s_state[kAttentionWarps][kGroupCap];
  if (row_in_warp == 0) {
#pragma unroll
    for (int g = 0; g < kGroupCap; ++g) {
#pragma unroll
      for (int j = 0; j < kVectorElements; ++j) s_acc[warp][g][dim0 + j] = acc[g][j];
      if (sub == 0) s_state[warp][g] = st[g];
    }
  }
  const bool any_bad_page = __syncthreads_or(bad_page);
  for (int idx = int(threadIdx.x); idx < heads_here * kHeadDim; idx += kAttentionThreads) {
    const int g = idx / kHeadDim, d = idx % kHeadDim;
    float m = -INFINITY;
    bool nan_state = false;  // NaN scores (NaN in q or the cache) must reach the output, as in the reference
#pragma unroll
    for (int w = 0; w < kAttentionWarps; ++w) {
      m = fmaxf(m, s_state[w][g].m);
      nan_state |= isnan(s_state[w][g].l);
    }
    float l = 0.0f, a = 0.0f;
    if (m != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kAttentionWarps; ++w) {
        const float weight = exp2f(s_state[w][g].m - m);
        l += s_state[w][g].l * weight;
        a += s_acc[w][g][d] * weight;
      }
    }
    float* slot = partial_slot(p, token, head0 + g, split);
    slot[d] = a;
    if (d == 0) {
      slot[kHeadDim] = m;
      slot[kHeadDim + 1] = any_bad_page || nan_state ? __int_as_float(0x7fc00000) : l;  // NaN poisons the merge
    }
  }
  if (any_bad_page && threadIdx.x == 0) flag_status(p.status, kStatusBadPageId);
}

// Grid (n_heads, tokens), block head_dim threads: out = sum_s acc_s 2^(m_s - M) / sum_s l_s 2^(m_s - M).
template <typename T>
__global__ void merge_splits_kernel(DecodeAttentionParams p) {
  const int head = blockIdx.x, token = blockIdx.y, d = threadIdx.x;
  T* out = static_cast<T*>(p.out) + (int64_t(token) * p.n_heads + head) * p.head_dim;
  const TokenKv tk = resolve_token_kv(p.kv, token, p.status);
  if (!tk.ok) {
    out[d] = from_float<T>(__int_as_float(0x7fc00000));
    return;
  }
  const int n_splits = splits_for(tk.kv_len, p.max_splits);
  float m = -INFINITY;
  bool poisoned = false;  // a split saw a bad page or NaN scores
  for (int s = 0; s < n_splits; ++s) {
    const float* slot = partial_slot(p, token, head, s);
    m = fmaxf(m, slot[p.head_dim]);
    poisoned |= isnan(slot[p.head_dim + 1]);
  }
  if (poisoned) {
    out[d] = from_float<T>(__int_as_float(0x7fc00000));
    return;
  }
  float l = 0.0f, a = 0.0f;
  if (m != -INFINITY) {
    for (int s = 0; s < n_splits; ++s) {
      const float* slot = partial_slot(p, token, head, s);
      const float weight = exp2f(slot[p.head_dim] - m);
      l += slot[p.head_dim + 1] * weight;
      a += slot[d] * weight;
    }
  }
  out[d] = from_float<T>(l > 0.0f ? a / l : (l == 0.0f ? 0.0f : __int_as_float(0x7fc00000)));
}

template <typename T, int kHeadDim, int kGroupCap>
void launch_split_attention(const DecodeAttentionParams& p, float scale_log2, cudaStream_t stream) {
  const int group = p.n_heads / p.n_kv_heads;
  const int head_chunks = (group + kGroupCap - 1) / kGroupCap;
  const dim3 grid(unsigned(p.max_splits), unsigned(p.n_kv_heads * head_chunks), unsigned(p.tokens));
  split_attention_kernel<T, kHeadDim, kGroupCap><<<grid, kAttentionThreads, 0, stream>>>(p, scale_log2, head_chunks);
  CF_CUDA_CHECK_LAUNCH("split_attention_kernel");
}

template <typename T, int kHeadDim>
void dispatch_group(const DecodeAttentionParams& p, float scale_log2, cudaStream_t stream) {
  const int group = p.n_heads / p.n_kv_heads;
  if (group <= 1)
    launch_split_attention<T, kHeadDim, 1>(p, scale_log2, stream);
  else if (group <= 2)
    launch_split_attention<T, kHeadDim, 2>(p, scale_log2, stream);
  else if (group <= 4)
    launch_split_attention<T, kHeadDim, 4>(p, scale_log2, stream);
  else
    launch_split_attention<T, kHeadDim, 8>(p, scale_log2, stream);  // groups > 8 take several blocks per KV head
}

template <typename T>
void decode_attention_typed(const DecodeAttentionParams& p, cudaStream_t stream) {
  const float scale = p.scale != 0.0f ? p.scale : 1.0f / std::sqrt(float(p.head_dim));
  const float scale_log2 = scale * kLog2e;
  if (p.head_dim == 64)
    dispatch_group<T, 64>(p, scale_log2, stream);
  else
    dispatch_group<T, 128>(p, scale_log2, stream);
  merge_splits_kernel<T><<<dim3(unsigned(p.n_heads), unsigned(p.tokens)), unsigned(p.head_dim), 0, stream>>>(p);
  CF_CUDA_CHECK_LAUNCH("merge_splits_kernel");
}

}  // namespace

void rope_append(const RopeAppendParams& p, cudaStream_t stream) {
  p.validate();
  if (p.dtype == DType::F16)
    rope_append_kernel<__half><<<p.tokens, kRopeThreads, 0, stream>>>(p);
  else
    rope_append_kernel<__nv_bfloat16><<<p.tokens, kRopeThreads, 0, stream>>>(p);
  CF_CUDA_CHECK_LAUNCH("rope_append_kernel");
}

void decode_attention(const DecodeAttentionParams& p, cudaStream_t stream) {
  p.validate();
  if (p.dtype == DType::F16)
    decode_attention_typed<__half>(p, stream);
  else
    decode_attention_typed<__nv_bfloat16>(p, stream);
}

int plan_attention_splits(int tokens, int n_heads, int n_kv_heads, int sm_count, int capacity) {
  // ~8 blocks of 128 threads per SM in flight, two waves: enough bytes in flight to stream the cache at full rate.
  constexpr int kTargetBlocksPerSm = 16;
  const int group = n_heads / std::max(n_kv_heads, 1);
  const int head_blocks = std::max(n_kv_heads, 1) * ((group + 7) / 8);
  const int64_t blocks_per_split = int64_t(std::max(tokens, 1)) * head_blocks;
  const int64_t target = int64_t(std::max(sm_count, 1)) * kTargetBlocksPerSm;
  const int64_t wanted = (target + blocks_per_split - 1) / blocks_per_split;
  return int(std::clamp<int64_t>(wanted, 1, std::max(capacity, 1)));
}

}  // namespace cf::cuda_unfused
