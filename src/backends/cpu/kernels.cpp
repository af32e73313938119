// Portable kernels and the run-time choice of instruction set.
#include "kernels.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "clusterfusion/common/error.hpp"

namespace cf::cpu {

namespace {

constexpr int kLanes = 32;  // partial sums per dot product (see kernels.hpp)

Isa detect_isa() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    return Isa::Avx2;
#endif
  return Isa::Portable;
}

std::atomic<Isa>& active() {
  static std::atomic<Isa> isa{detect_isa()};
  return isa;
}

float combine_lanes(const float* lanes) {
  float eight[8];
  for (int i = 0; i < 8; ++i) eight[i] = (lanes[i] + lanes[8 + i]) + (lanes[16 + i] + lanes[24 + i]);
  float four[4];
  for (int i = 0; i < 4; ++i) four[i] = eight[i] + eight[4 + i];
  return (four[0] + four[2]) + (four[1] + four[3]);
}

float portable_dot(const float* a, const float* b, int n) {
  float lanes[kLanes] = {};
  const int full = n / kLanes * kLanes;
  for (int i = 0; i < full; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] += a[i + l] * b[i + l];
  float tail = 0.0f;
  for (int i = full; i < n; ++i) tail += a[i] * b[i];
  return combine_lanes(lanes) + tail;
}

void portable_matmul_rows(const WeightMatrix& w, int64_t row_begin, int64_t row_end, const float* x, int n_tokens,
                          int64_t x_stride, float* y, int64_t y_stride, bool accumulate, float* scratch) {
  const int n = int(w.cols);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* row = reinterpret_cast<const float*>(w.row(r));
    if (w.dtype != DType::F32) {
      dequantize(w.dtype, w.row(r), scratch, n);
      row = scratch;
    }
    for (int t = 0; t < n_tokens; ++t) {
      const float v = portable_dot(row, x + t * x_stride, n);
      float& out = y[t * y_stride + r];
      out = accumulate ? out + v : v;
    }
  }
}

}  // namespace

Isa best_isa() {
  static const Isa isa = detect_isa();
  return isa;
}
Isa active_isa() { return active().load(std::memory_order_relaxed); }
void force_isa(Isa isa) {
  CF_CHECK(isa == Isa::Portable || best_isa() == Isa::Avx2, "this CPU has no AVX2 + FMA + F16C");
  active().store(isa);
}
const char* isa_name(Isa isa) { return isa == Isa::Avx2 ? "avx2" : "portable"; }

void matmul_rows(const WeightMatrix& w, int64_t row_begin, int64_t row_end, const float* x, int n_tokens,
                 int64_t x_stride, float* y, int64_t y_stride, bool accumulate, float* scratch) {
  if (active_isa() == Isa::Avx2) {
    avx2::matmul_rows(w, row_begin, row_end, x, n_tokens, x_stride, y, y_stride, accumulate, scratch);
  } else {
    portable_matmul_rows(w, row_begin, row_end, x, n_tokens, x_stride, y, y_stride, accumulate, scratch);
  }
}

float dot(const float* a, const float* b, int n) {
  return active_isa() == Isa::Avx2 ? avx2::dot(a, b, n) : portable_dot(a, b, n);
}

void attend(const AttentionArgs& a) {
  if (active_isa() == Isa::Avx2 && avx2::can_attend(a.group, a.head_dim)) return avx2::attend(a);
  const int hd = a.head_dim;
  for (int g = 0; g < a.group; ++g) {
    const float* q = a.q + g * hd;
    float* scores = a.scores + int64_t(g) * a.len;
    float max_score = -INFINITY;
    for (int p = 0; p < a.len; ++p) {
      const float* k = a.k + a.slots[p] * a.row;
      float s = 0.0f;
      for (int d = 0; d < hd; ++d) s += q[d] * k[d];
      scores[p] = s * a.scale;
      max_score = std::max(max_score, scores[p]);
    }
    float sum = 0.0f;
    for (int p = 0; p < a.len; ++p) sum += (scores[p] = std::exp(scores[p] - max_score));
    float* out = a.out + g * hd;
    std::fill(out, out + hd, 0.0f);
    for (int p = 0; p < a.len; ++p) {
      const float* v = a.v + a.slots[p] * a.row;
      for (int d = 0; d < hd; ++d) out[d] += scores[p] * v[d];
    }
    for (int d = 0; d < hd; ++d) out[d] /= sum;
  }
}

void axpy(float a, const float* x, float* y, int n) {
  if (active_isa() == Isa::Avx2) return avx2::axpy(a, x, y, n);
  for (int i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace cf::cpu
