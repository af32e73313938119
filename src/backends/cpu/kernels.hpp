// Compute kernels of the cpu backend: weight-matrix products over rows stored in any weight type, and the small
// vector helpers of attention. Each has a portable version and, where the machine has AVX2 + FMA + F16C, an AVX2
// version chosen once at run time.
//
// Every dot product of a weight row with an activation vector follows one fixed order (the same for any number of
// tokens and any split of rows among threads), so results are bit-identical across thread counts and batch sizes:
// row elements are dequantised to fp32 (quantised: d * q + m with one fused multiply-add, or q * d), element i is
// accumulated into lane i % 32 of 32 partial sums, the lanes are combined pairwise ((0-7 + 8-15) + (16-23 + 24-31),
// then halves), and a tail of cols % 32 elements is added last.
#pragma once
#include <cstdint>

#include "clusterfusion/runtime/weights.hpp"

namespace cf::cpu {

enum class Isa { Portable, Avx2 };
Isa best_isa();          // what this machine supports
Isa active_isa();        // what the kernels use (best_isa() unless forced)
void force_isa(Isa isa);  // for tests and benchmarks; Avx2 on a machine without it throws
const char* isa_name(Isa isa);

// For rows [row_begin, row_end) of w and tokens t < n_tokens:
//   y[t * y_stride + r] (+)= dot(w row r, x + t * x_stride)        (+= when accumulate)
// `scratch` holds at least w.cols floats (one dequantised row).
void matmul_rows(const WeightMatrix& w, int64_t row_begin, int64_t row_end, const float* x, int n_tokens,
                 int64_t x_stride, float* y, int64_t y_stride, bool accumulate, float* scratch);

// Dot product in the order described above (used for RMSNorm).
float dot(const float* a, const float* b, int n);
// y += a * x
void axpy(float a, const float* x, float* y, int n);

// Decode attention of the `group` query heads that share one KV head, for one token:
//   q, out: [group, head_dim] (contiguous);  cached position p of the sequence has its key at k + slots[p] * row and
//   its value at v + slots[p] * row;  the token attends to positions 0 .. len-1;  scores: group * len floats scratch.
// Computed in a fixed order per (token, KV head), whatever the thread that runs it.
struct AttentionArgs {
  const float* q;
  float* out;
  const float* k;
  const float* v;
  const int64_t* slots;
  int64_t row;
  int len;
  int group;
  int head_dim;
  float scale;
  float* scores;
};
void attend(const AttentionArgs& a);

namespace avx2 {
bool can_attend(int group, int head_dim);  // shapes the AVX2 attention handles (head_dim % 8 == 0, group <= 8)
void attend(const AttentionArgs& a);
void matmul_rows(const WeightMatrix& w, int64_t row_begin, int64_t row_end, const float* x, int n_tokens,
                 int64_t x_stride, float* y, int64_t y_stride, bool accumulate, float* scratch);
float dot(const float* a, const float* b, int n);
void axpy(float a, const float* x, float* y, int n);
}  // namespace avx2

}  // namespace cf::cpu
