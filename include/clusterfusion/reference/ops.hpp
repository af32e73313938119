// Plain CPU math for every elementwise / matrix op of a Llama decoder: the oracle the CPU backend, the emulated device
// kernels and the GPU kernels are checked against (docs/tolerance.md).
//
// Conventions:
//  - Inputs and weights are read in their storage type T (float, cf::half, cf::bfloat16) and converted to float;
//    all arithmetic accumulates in fp32, in the obvious sequential order.
//  - Outputs are written through cf::from_float<Out>: pass float* for the fp32 reference, or a T* to get the
//    "naive low-precision" variant that rounds at that point.
//  - A weight that maps in -> out is stored [out, in] row-major (row o holds the `in` weights of output o).
// Nothing here is tuned: each function reads top to bottom as the formula it implements.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "clusterfusion/common/half.hpp"
#include "clusterfusion/model/types.hpp"  // cf::RopeStyle

namespace cf::ref {

// ---- RMSNorm --------------------------------------------------------------------------------------------------

// y = x / sqrt(mean(x^2) + eps) * weight, over one vector of n elements.
template <typename T, typename W, typename Out>
void rmsnorm(const T* x, const W* weight, Out* y, int n, float eps) {
  float sum_squares = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float v = to_float(x[i]);
    sum_squares += v * v;
  }
  const float inv_rms = 1.0f / std::sqrt(sum_squares / float(n) + eps);
  for (int i = 0; i < n; ++i) y[i] = from_float<Out>(to_float(x[i]) * inv_rms * to_float(weight[i]));
}

// The fused form used between decoder blocks (SGLang / ClusterFusion semantics):
//   residual_out = hidden + residual;   y = rmsnorm(residual_out) * weight
// The norm is taken of the fp32 sum (before residual_out is rounded to its storage type).
template <typename T, typename W, typename Out, typename ResOut>
void add_rmsnorm(const T* hidden, const T* residual, const W* weight, ResOut* residual_out, Out* y, int n,
                 float eps) {
  float sum_squares = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float v = to_float(hidden[i]) + to_float(residual[i]);
    sum_squares += v * v;
  }
  const float inv_rms = 1.0f / std::sqrt(sum_squares / float(n) + eps);
  for (int i = 0; i < n; ++i) {
    const float v = to_float(hidden[i]) + to_float(residual[i]);
    residual_out[i] = from_float<ResOut>(v);
    y[i] = from_float<Out>(v * inv_rms * to_float(weight[i]));
  }
}

// ---- matrix-vector products -----------------------------------------------------------------------------------

// y[o] = sum_i weight[o, i] * x[i]  (+ bias[o] when bias is not null). weight is [out_dim, in_dim] row-major.
template <typename T, typename W, typename Out>
void matvec(const W* weight, const T* x, Out* y, int out_dim, int in_dim, const W* bias = nullptr) {
  for (int o = 0; o < out_dim; ++o) {
    const W* row = weight + int64_t(o) * in_dim;
    float acc = 0.0f;
    for (int i = 0; i < in_dim; ++i) acc += to_float(row[i]) * to_float(x[i]);
    if (bias) acc += to_float(bias[o]);
    y[o] = from_float<Out>(acc);
  }
}

// A small batch of matvecs sharing one weight: x is [batch, in_dim], y is [batch, out_dim].
template <typename T, typename W, typename Out>
void matmul(const W* weight, const T* x, Out* y, int batch, int out_dim, int in_dim, const W* bias = nullptr) {
  for (int b = 0; b < batch; ++b)
    matvec(weight, x + int64_t(b) * in_dim, y + int64_t(b) * out_dim, out_dim, in_dim, bias);
}

// ---- rotary position embedding ----------------------------------------------------------------------------------

// Angle of rotation pair i (0 <= i < rot_dim/2) at `position`: position * theta^(-2i / rot_dim).
// Computed in double so the reference does not depend on the float pow/cos of the platform.
inline double rope_angle(int position, int pair, int rot_dim, float theta) {
  return double(position) * std::pow(double(theta), -2.0 * double(pair) / double(rot_dim));
}

// Fills cos[i], sin[i] for i < rot_dim/2 at `position` (one row of a cos/sin cache).
inline void rope_cos_sin(int position, int rot_dim, float theta, float* cos_out, float* sin_out) {
  for (int i = 0; i < rot_dim / 2; ++i) {
    const double angle = rope_angle(position, i, rot_dim, theta);
    cos_out[i] = float(std::cos(angle));
    sin_out[i] = float(std::sin(angle));
  }
}

// Index of the two dimensions rotated together by pair i of a head.
//   NeoX: (i, i + rot_dim/2)     GPT-J: (2i, 2i + 1)
inline void rope_pair_dims(RopeStyle style, int pair, int rot_dim, int& first, int& second) {
  if (style == RopeStyle::NeoX) {
    first = pair;
    second = pair + rot_dim / 2;
  } else {
    first = 2 * pair;
    second = 2 * pair + 1;
  }
}

// Rotates the first rot_dim dimensions of each of the n_heads heads of x ([n_heads, head_dim]) with one row of a
// cos/sin cache (rot_dim/2 entries each); dimensions past rot_dim are copied. y may alias x.
template <typename T, typename Out>
void rope_with_cache(const T* x, Out* y, int n_heads, int head_dim, int rot_dim, const float* cos_row,
                     const float* sin_row, RopeStyle style) {
  for (int h = 0; h < n_heads; ++h) {
    const T* xh = x + int64_t(h) * head_dim;
    Out* yh = y + int64_t(h) * head_dim;
    for (int d = rot_dim; d < head_dim; ++d) yh[d] = from_float<Out>(to_float(xh[d]));
    for (int i = 0; i < rot_dim / 2; ++i) {
      int a, b;
      rope_pair_dims(style, i, rot_dim, a, b);
      const float xa = to_float(xh[a]), xb = to_float(xh[b]);
      yh[a] = from_float<Out>(xa * cos_row[i] - xb * sin_row[i]);
      yh[b] = from_float<Out>(xa * sin_row[i] + xb * cos_row[i]);
    }
  }
}

// The same rotation with cos/sin computed from theta and the position.
template <typename T, typename Out>
void rope(const T* x, Out* y, int n_heads, int head_dim, int rot_dim, int position, float theta, RopeStyle style) {
  std::vector<float> cos_row(size_t(rot_dim / 2)), sin_row(size_t(rot_dim / 2));
  rope_cos_sin(position, rot_dim, theta, cos_row.data(), sin_row.data());
  rope_with_cache(x, y, n_heads, head_dim, rot_dim, cos_row.data(), sin_row.data(), style);
}

// ---- activations, softmax, argmax -----------------------------------------------------------------------------

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

// SwiGLU of the FFN: y[i] = silu(gate[i]) * up[i].
template <typename T, typename Out>
void swiglu(const T* gate, const T* up, Out* y, int n) {
  for (int i = 0; i < n; ++i) y[i] = from_float<Out>(silu(to_float(gate[i])) * to_float(up[i]));
}

// Numerically stable softmax over n elements (max subtracted first). y may alias x.
template <typename T, typename Out>
void softmax(const T* x, Out* y, int n) {
  float max_value = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < n; ++i) max_value = std::fmax(max_value, to_float(x[i]));
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) sum += std::exp(to_float(x[i]) - max_value);
  for (int i = 0; i < n; ++i) y[i] = from_float<Out>(std::exp(to_float(x[i]) - max_value) / sum);
}

// Index of the largest element; the first one on ties; NaNs are never chosen (returns 0 if all are NaN).
template <typename T>
int argmax(const T* x, int n) {
  int best = 0;
  float best_value = -std::numeric_limits<float>::infinity();
  bool found = false;
  for (int i = 0; i < n; ++i) {
    const float v = to_float(x[i]);
    if (std::isnan(v)) continue;
    if (!found || v > best_value) {
      best = i;
      best_value = v;
      found = true;
    }
  }
  return best;
}

}  // namespace cf::ref
