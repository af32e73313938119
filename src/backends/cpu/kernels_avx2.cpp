// AVX2 + FMA + F16C kernels (this file alone is compiled with those instructions enabled; kernels.cpp calls it only
// when the CPU has them). Same summation order as the portable kernels (see kernels.hpp).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels.hpp"

namespace cf::cpu::avx2 {

namespace {

constexpr int kBlock = 32;      // elements per quantised block, and per step of a dot product
constexpr int kMaxTile = 3;     // tokens per pass over a row: 3 x 4 accumulators + operands fit 16 registers
constexpr int kFusedMaxTokens = 2;  // fused dequantise-and-dot: 2 x 4 accumulators + 4 weight vectors

float load_half(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return _cvtsh_ss(bits);
}

// Four vectors of 8 int32 holding the 32 4-bit values of a Q4 block: low nibbles are elements 0..15, high nibbles
// elements 16..31 (ggml's layout).
inline void unpack_nibbles(const uint8_t* qs, __m256i q[4]) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(raw, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
  q[0] = _mm256_cvtepu8_epi32(lo);
  q[1] = _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8));
  q[2] = _mm256_cvtepu8_epi32(hi);
  q[3] = _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8));
}

// Block loaders: the 32 values of block b of a row as four vectors of 8 floats, computed exactly as
// dequantize_row stores them (so the fused and the row-buffer paths give identical bits).
struct Q8_0Block {
  static constexpr int kBytes = 34;  // f16 d, 32 x int8; value = q * d
  static void load(const uint8_t* row, int b, __m256 w[4]) {
    const uint8_t* blk = row + b * kBytes;
    const __m256 d = _mm256_set1_ps(load_half(blk));
    for (int j = 0; j < 4; ++j) {
      const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 2 + 8 * j)));
      w[j] = _mm256_mul_ps(_mm256_cvtepi32_ps(q), d);
    }
  }
};

struct Q4_0Block {
  static constexpr int kBytes = 18;  // f16 d, 16 bytes of nibbles; value = (q - 8) * d
  static void load(const uint8_t* row, int b, __m256 w[4]) {
    const uint8_t* blk = row + b * kBytes;
    const __m256 d = _mm256_set1_ps(load_half(blk));
    __m256i q[4];
    unpack_nibbles(blk + 2, q);
    const __m256i eight = _mm256_set1_epi32(8);
    for (int j = 0; j < 4; ++j) w[j] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q[j], eight)), d);
  }
};

struct Q4_1Block {
  static constexpr int kBytes = 20;  // f16 d, f16 m, 16 bytes of nibbles; value = d * q + m
  static void load(const uint8_t* row, int b, __m256 w[4]) {
    const uint8_t* blk = row + b * kBytes;
    const __m256 d = _mm256_set1_ps(load_half(blk));
    const __m256 m = _mm256_set1_ps(load_half(blk + 2));
    __m256i q[4];
    unpack_nibbles(blk + 4, q);
    for (int j = 0; j < 4; ++j) w[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q[j]), d, m);
  }
};

template <typename Block>
void dequantize_blocks(const uint8_t* row, float* out, int n) {
  __m256 w[4];
  for (int b = 0; b < n / kBlock; ++b) {
    Block::load(row, b, w);
    for (int j = 0; j < 4; ++j) _mm256_storeu_ps(out + b * kBlock + 8 * j, w[j]);
  }
}

// Dequantises a whole row of n elements into out.
void dequantize_row(DType t, const uint8_t* row, float* out, int n) {
  switch (t) {
    case DType::F32:
      std::memcpy(out, row, size_t(n) * 4);
      return;
    case DType::F16: {
      int i = 0;
      for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i))));
      for (; i < n; ++i) out[i] = load_half(row + 2 * i);
      return;
    }
    case DType::BF16: {
      int i = 0;
      for (; i + 8 <= n; i += 8) {
        const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * i)));
        _mm256_storeu_ps(out + i, _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16)));
      }
      for (; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, row + 2 * i, 2);
        const uint32_t f = uint32_t(bits) << 16;
        std::memcpy(out + i, &f, 4);
      }
      return;
    }
    case DType::Q8_0:
      dequantize_blocks<Q8_0Block>(row, out, n);
      return;
    case DType::Q4_0:
      dequantize_blocks<Q4_0Block>(row, out, n);
      return;
    case DType::Q4_1:
      dequantize_blocks<Q4_1Block>(row, out, n);
      return;
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:  // normally converted at load (WeightLoadOptions::k_quant_as); the engine's scalar path
      ::cf::dequantize(t, row, out, n);
      return;
  }
}

// (a0 + a1) + (a2 + a3), then the halves: the lane combination of kernels.hpp.
inline float combine(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  const __m256 eight = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
  const __m128 four = _mm_add_ps(_mm256_castps256_ps128(eight), _mm256_extractf128_ps(eight, 1));
  const __m128 two = _mm_add_ps(four, _mm_movehl_ps(four, four));  // [f0 + f2, f1 + f3]
  const __m128 one = _mm_add_ss(two, _mm_shuffle_ps(two, two, 1));
  return _mm_cvtss_f32(one);
}

// Dot products of one fp32 row with T activation vectors.
template <int T>
inline void dot_tile(const float* w, const float* x, int64_t x_stride, int n, float* out) {
  __m256 acc[T][4];
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < 4; ++j) acc[t][j] = _mm256_setzero_ps();
  const int full = n / kBlock * kBlock;
  for (int i = 0; i < full; i += kBlock) {
    for (int j = 0; j < 4; ++j) {
      const __m256 wv = _mm256_loadu_ps(w + i + 8 * j);
      for (int t = 0; t < T; ++t)
        acc[t][j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + t * x_stride + i + 8 * j), acc[t][j]);
    }
  }
  for (int t = 0; t < T; ++t) {
    float tail = 0.0f;
    for (int i = full; i < n; ++i) tail += w[i] * x[t * x_stride + i];
    out[t] = combine(acc[t][0], acc[t][1], acc[t][2], acc[t][3]) + tail;
  }
}

// Dot products of one quantised row with T activation vectors, dequantising each block into registers (no row
// buffer): the small-batch (decode) path. Same values and summation order as dequantize_row + dot_tile.
template <typename Block, int T>
inline void fused_dot_tile(const uint8_t* row, const float* x, int64_t x_stride, int n, float* out) {
  __m256 acc[T][4];
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < 4; ++j) acc[t][j] = _mm256_setzero_ps();
  __m256 w[4];
  for (int b = 0; b < n / kBlock; ++b) {
    Block::load(row, b, w);
    for (int j = 0; j < 4; ++j)
      for (int t = 0; t < T; ++t)
        acc[t][j] = _mm256_fmadd_ps(w[j], _mm256_loadu_ps(x + t * x_stride + b * kBlock + 8 * j), acc[t][j]);
  }
  for (int t = 0; t < T; ++t) out[t] = combine(acc[t][0], acc[t][1], acc[t][2], acc[t][3]);
}

// Rows [row_begin, row_end) of a quantised matrix times n_tokens <= kFusedMaxTokens vectors.
template <typename Block>
void fused_matmul_rows(const WeightMatrix& w, int64_t row_begin, int64_t row_end, const float* x, int n_tokens,
                       int64_t x_stride, float* y, int64_t y_stride, bool accumulate) {
  const int n = int(w.cols);
  float results[2];
  for (int64_t r = row_begin; r < row_end; ++r) {
    if (n_tokens == 2) {
      fused_dot_tile<Block, 2>(w.row(r), x, x_stride, n, results);
    } else {
      fused_dot_tile<Block, 1>(w.row(r), x, x_stride, n, results);
    }
    for (int t = 0; t < n_tokens; ++t) {
      float& out = y[t * y_stride + r];
      out = accumulate ? out + results[t] : results[t];
    }
  }
}

}  // namespace

void matmul_rows(const WeightMatrix& w, int64_t row_begin, int64_t row_end, const float* x, int n_tokens,
                 int64_t x_stride, float* y, int64_t y_stride, bool accumulate, float* scratch) {
  // Decode batches of one or two tokens read the quantised rows directly; larger batches dequantise each row once
  // into `scratch` and reuse it for all their tokens.
  if (n_tokens <= kFusedMaxTokens) {
    switch (w.dtype) {
      case DType::Q8_0: return fused_matmul_rows<Q8_0Block>(w, row_begin, row_end, x, n_tokens, x_stride, y, y_stride, accumulate);
      case DType::Q4_0: return fused_matmul_rows<Q4_0Block>(w, row_begin, row_end, x, n_tokens, x_stride, y, y_stride, accumulate);
      case DType::Q4_1: return fused_matmul_rows<Q4_1Block>(w, row_begin, row_end, x, n_tokens, x_stride, y, y_stride, accumulate);
      default: break;
    }
  }
  const int n = int(w.cols);
  float results[kMaxTile];
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* row = reinterpret_cast<const float*>(w.row(r));
    if (w.dtype != DType::F32) {
      dequantize_row(w.dtype, w.row(r), scratch, n);
      row = scratch;
    }
    for (int t0 = 0; t0 < n_tokens; t0 += kMaxTile) {
      const int tile = n_tokens - t0 < kMaxTile ? n_tokens - t0 : kMaxTile;
      const float* xt = x + t0 * x_stride;
      if (tile == 3) {
        dot_tile<3>(row, xt, x_stride, n, results);
      } else if (tile == 2) {
        dot_tile<2>(row, xt, x_stride, n, results);
      } else {
        dot_tile<1>(row, xt, x_stride, n, results);
      }
      for (int t = 0; t < tile; ++t) {
        float& out = y[(t0 + t) * y_stride + r];
        out = accumulate ? out + results[t] : results[t];
      }
    }
  }
}

float dot(const float* a, const float* b, int n) {
  float result;
  dot_tile<1>(a, b, 0, n, &result);
  return result;
}

namespace {

constexpr int kMaxGroup = 8;  // query heads per KV head handled with register accumulators

// e^x for 8 lanes: x = n ln2 + r with |r| <= ln2 / 2, e^r by a degree-6 polynomial (relative error ~2e-7),
// 2^n through the exponent bits. Inputs below -87 give 0 (the scores are <= 0 after subtracting the max).
inline __m256 exp256(__m256 x) {
  const __m256 min_x = _mm256_set1_ps(-87.0f);
  const __m256 underflow = _mm256_cmp_ps(x, min_x, _CMP_LT_OQ);
  x = _mm256_max_ps(x, min_x);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // r = x - n ln2, with ln2 split in two parts for accuracy.
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 result = _mm256_mul_ps(p, _mm256_castsi256_ps(exponent));
  return _mm256_andnot_ps(underflow, result);
}

inline float hsum(__m256 v) {
  const __m128 four = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 two = _mm_add_ps(four, _mm_movehl_ps(four, four));
  return _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)));
}

template <int G>
void attend_group(const AttentionArgs& a) {
  const int hd = a.head_dim, len = a.len;
  // Scores: each key row is loaded once for the G query heads.
  for (int p = 0; p < len; ++p) {
    const float* k = a.k + a.slots[p] * a.row;
    __m256 acc[G];
    for (int g = 0; g < G; ++g) acc[g] = _mm256_setzero_ps();
    for (int d = 0; d < hd; d += 8) {
      const __m256 kv = _mm256_loadu_ps(k + d);
      for (int g = 0; g < G; ++g) acc[g] = _mm256_fmadd_ps(_mm256_loadu_ps(a.q + g * hd + d), kv, acc[g]);
    }
    for (int g = 0; g < G; ++g) a.scores[int64_t(g) * len + p] = hsum(acc[g]) * a.scale;
  }
  // Softmax numerators in place; the sums normalise the outputs at the end.
  float inv_sum[G];
  for (int g = 0; g < G; ++g) {
    float* scores = a.scores + int64_t(g) * len;
    __m256 max8 = _mm256_set1_ps(-INFINITY);
    int p = 0;
    for (; p + 8 <= len; p += 8) max8 = _mm256_max_ps(max8, _mm256_loadu_ps(scores + p));
    float max_score = -INFINITY;
    for (int i = 0; i < 8; ++i) max_score = std::max(max_score, reinterpret_cast<const float*>(&max8)[i]);
    for (int i = p; i < len; ++i) max_score = std::max(max_score, scores[i]);
    const __m256 max_v = _mm256_set1_ps(max_score);
    __m256 sum8 = _mm256_setzero_ps();
    p = 0;
    for (; p + 8 <= len; p += 8) {
      const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(scores + p), max_v));
      _mm256_storeu_ps(scores + p, e);
      sum8 = _mm256_add_ps(sum8, e);
    }
    float sum = hsum(sum8);
    for (; p < len; ++p) {
      // The tail through the same vector exp, one lane used.
      const float e = _mm256_cvtss_f32(exp256(_mm256_set1_ps(scores[p] - max_score)));
      scores[p] = e;
      sum += e;
    }
    inv_sum[g] = 1.0f / sum;
  }
  // Weighted sum of values, 8 output dimensions per pass over the positions.
  for (int d = 0; d < hd; d += 8) {
    __m256 acc[G];
    for (int g = 0; g < G; ++g) acc[g] = _mm256_setzero_ps();
    for (int p = 0; p < len; ++p) {
      const __m256 vv = _mm256_loadu_ps(a.v + a.slots[p] * a.row + d);
      for (int g = 0; g < G; ++g) acc[g] = _mm256_fmadd_ps(_mm256_set1_ps(a.scores[int64_t(g) * len + p]), vv, acc[g]);
    }
    for (int g = 0; g < G; ++g) _mm256_storeu_ps(a.out + g * hd + d, _mm256_mul_ps(acc[g], _mm256_set1_ps(inv_sum[g])));
  }
}

}  // namespace

bool can_attend(int group, int head_dim) { return group >= 1 && group <= kMaxGroup && head_dim % 8 == 0; }

void attend(const AttentionArgs& a) {
  switch (a.group) {
    case 1: return attend_group<1>(a);
    case 2: return attend_group<2>(a);
    case 3: return attend_group<3>(a);
    case 4: return attend_group<4>(a);
    case 5: return attend_group<5>(a);
    case 6: return attend_group<6>(a);
    case 7: return attend_group<7>(a);
    case 8: return attend_group<8>(a);
    default: break;
  }
}

void axpy(float a, const float* x, float* y, int n) {
  const __m256 av = _mm256_set1_ps(a);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

}  // namespace cf::cpu::avx2
