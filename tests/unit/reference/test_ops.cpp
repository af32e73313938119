// Reference ops checked against float64 computations written a different way (complex rotation for RoPE, explicit
// formulas in double for the rest), for each storage type.
#include <gtest/gtest.h>

#include <complex>
#include <random>
#include <vector>

#include "clusterfusion/reference/ops.hpp"

namespace {

template <typename T>
std::vector<T> random_vector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<T> v(n);
  for (auto& x : v) x = cf::from_float<T>(dist(rng));
  return v;
}

template <typename T>
double as_double(T x) {
  return double(cf::to_float(x));
}

// fp32 accumulation of n terms of size ~1 against a float64 sum: relative error ~ n * 2^-24 at worst.
constexpr double kFp32Rel = 2e-5;

template <typename T>
class RefOps : public ::testing::Test {};
using StorageTypes = ::testing::Types<float, cf::half, cf::bfloat16>;
TYPED_TEST_SUITE(RefOps, StorageTypes);

TYPED_TEST(RefOps, RmsnormMatchesFloat64) {
  using T = TypeParam;
  const int n = 576;
  const auto x = random_vector<T>(n, 1, 3.0f), w = random_vector<T>(n, 2);
  std::vector<float> y(n);
  cf::ref::rmsnorm(x.data(), w.data(), y.data(), n, 1e-5f);
  double mean_square = 0;
  for (auto v : x) mean_square += as_double(v) * as_double(v) / n;
  for (int i = 0; i < n; ++i) {
    const double want = as_double(x[i]) * as_double(w[i]) / std::sqrt(mean_square + 1e-5);
    EXPECT_NEAR(y[i], want, kFp32Rel * (std::fabs(want) + 1e-3)) << i;
  }
}

TYPED_TEST(RefOps, AddRmsnormIsRmsnormOfTheSum) {
  using T = TypeParam;
  const int n = 300;
  const auto h = random_vector<T>(n, 3), r = random_vector<T>(n, 4), w = random_vector<T>(n, 5);
  std::vector<T> residual_out(n);
  std::vector<float> y(n);
  cf::ref::add_rmsnorm(h.data(), r.data(), w.data(), residual_out.data(), y.data(), n, 1e-6f);
  double mean_square = 0;
  for (int i = 0; i < n; ++i) {
    const double s = as_double(h[i]) + as_double(r[i]);
    mean_square += s * s / n;
    // residual_out is the sum rounded once to T.
    EXPECT_EQ(as_double(residual_out[i]), as_double(cf::from_float<T>(float(s)))) << i;
  }
  for (int i = 0; i < n; ++i) {
    const double s = as_double(h[i]) + as_double(r[i]);
    const double want = s / std::sqrt(mean_square + 1e-6) * as_double(w[i]);
    EXPECT_NEAR(y[i], want, kFp32Rel * (std::fabs(want) + 1e-3)) << i;
  }
}

TYPED_TEST(RefOps, MatvecAndMatmulMatchFloat64) {
  using T = TypeParam;
  const int out_dim = 37, in_dim = 200, batch = 3;
  const auto w = random_vector<T>(size_t(out_dim) * in_dim, 6), x = random_vector<T>(size_t(batch) * in_dim, 7);
  const auto bias = random_vector<T>(out_dim, 8);
  std::vector<float> y(size_t(batch) * out_dim);
  cf::ref::matmul(w.data(), x.data(), y.data(), batch, out_dim, in_dim, bias.data());
  for (int b = 0; b < batch; ++b) {
    for (int o = 0; o < out_dim; ++o) {
      double want = as_double(bias[o]), magnitude = std::fabs(want);
      for (int i = 0; i < in_dim; ++i) {
        const double term = as_double(w[size_t(o) * in_dim + i]) * as_double(x[size_t(b) * in_dim + i]);
        want += term;
        magnitude += std::fabs(term);
      }
      EXPECT_NEAR(y[size_t(b) * out_dim + o], want, kFp32Rel * magnitude) << b << "," << o;
    }
  }
  // Without bias, one row of the batch is a plain matvec.
  std::vector<float> row(out_dim), row_again(out_dim);
  cf::ref::matvec(w.data(), x.data() + in_dim, row.data(), out_dim, in_dim);
  cf::ref::matmul(w.data(), x.data() + in_dim, row_again.data(), 1, out_dim, in_dim);
  EXPECT_EQ(row, row_again);
}

// RoPE as multiplication of complex numbers z = (x_a + i x_b) by e^{i angle}, angle = pos * theta^(-2k/rot_dim).
TYPED_TEST(RefOps, RopeIsComplexRotation) {
  using T = TypeParam;
  const int n_heads = 3, head_dim = 64, rot_dim = 48;  // partial rotation: dims 48..63 pass through
  const float theta = 100000.0f;
  for (auto style : {cf::RopeStyle::NeoX, cf::RopeStyle::GPTJ}) {
    for (int pos : {0, 1, 17, 4095}) {
      const auto x = random_vector<T>(size_t(n_heads) * head_dim, uint32_t(pos + 11));
      std::vector<float> y(x.size());
      cf::ref::rope(x.data(), y.data(), n_heads, head_dim, rot_dim, pos, theta, style);
      for (int h = 0; h < n_heads; ++h) {
        const T* xh = x.data() + h * head_dim;
        const float* yh = y.data() + h * head_dim;
        for (int k = 0; k < rot_dim / 2; ++k) {
          const int a = style == cf::RopeStyle::NeoX ? k : 2 * k;
          const int b = style == cf::RopeStyle::NeoX ? k + rot_dim / 2 : 2 * k + 1;
          const long double angle = (long double)pos * std::exp(-(2.0L * k / rot_dim) * std::log((long double)theta));
          const std::complex<long double> z(as_double(xh[a]), as_double(xh[b]));
          const auto rotated = z * std::polar(1.0L, angle);
          EXPECT_NEAR(yh[a], double(rotated.real()), 1e-6) << "head " << h << " pair " << k << " pos " << pos;
          EXPECT_NEAR(yh[b], double(rotated.imag()), 1e-6) << "head " << h << " pair " << k << " pos " << pos;
        }
        for (int d = rot_dim; d < head_dim; ++d) EXPECT_EQ(yh[d], cf::to_float(xh[d]));
      }
    }
  }
}

TYPED_TEST(RefOps, RopeFromCacheEqualsRopeFromTheta) {
  using T = TypeParam;
  const int n_heads = 2, head_dim = 128, pos = 333;
  const auto x = random_vector<T>(size_t(n_heads) * head_dim, 12);
  std::vector<float> cos_row(head_dim / 2), sin_row(head_dim / 2), from_theta(x.size()), from_cache(x.size());
  cf::ref::rope_cos_sin(pos, head_dim, 10000.0f, cos_row.data(), sin_row.data());
  cf::ref::rope(x.data(), from_theta.data(), n_heads, head_dim, head_dim, pos, 10000.0f, cf::RopeStyle::GPTJ);
  cf::ref::rope_with_cache(x.data(), from_cache.data(), n_heads, head_dim, head_dim, cos_row.data(), sin_row.data(),
                           cf::RopeStyle::GPTJ);
  EXPECT_EQ(from_theta, from_cache);
}

// The point of RoPE: the score between a rotated query and key depends on the relative position only.
TEST(RefOpsRope, ScoreDependsOnRelativePositionOnly) {
  const int head_dim = 64;
  const auto q = random_vector<float>(head_dim, 13), k = random_vector<float>(head_dim, 14);
  auto score = [&](int q_pos, int k_pos, cf::RopeStyle style) {
    std::vector<float> qr(head_dim), kr(head_dim);
    cf::ref::rope(q.data(), qr.data(), 1, head_dim, head_dim, q_pos, 10000.0f, style);
    cf::ref::rope(k.data(), kr.data(), 1, head_dim, head_dim, k_pos, 10000.0f, style);
    double s = 0;
    for (int d = 0; d < head_dim; ++d) s += double(qr[d]) * kr[d];
    return s;
  };
  for (auto style : {cf::RopeStyle::NeoX, cf::RopeStyle::GPTJ}) {
    EXPECT_NEAR(score(10, 3, style), score(107, 100, style), 1e-4);
    EXPECT_GT(std::fabs(score(10, 3, style) - score(10, 9, style)), 1e-3);  // and it does change with distance
  }
}

TYPED_TEST(RefOps, SwigluMatchesFloat64) {
  using T = TypeParam;
  const int n = 1000;
  const auto gate = random_vector<T>(n, 15, 8.0f), up = random_vector<T>(n, 16, 2.0f);
  std::vector<float> y(n);
  cf::ref::swiglu(gate.data(), up.data(), y.data(), n);
  for (int i = 0; i < n; ++i) {
    const double g = as_double(gate[i]);
    const double want = g / (1.0 + std::exp(-g)) * as_double(up[i]);
    EXPECT_NEAR(y[i], want, 1e-6 * (1 + std::fabs(want))) << i;
  }
}

TYPED_TEST(RefOps, SoftmaxMatchesFloat64AndSurvivesLargeInputs) {
  using T = TypeParam;
  const int n = 257;
  auto x = random_vector<T>(n, 17, 20.0f);
  x[5] = cf::from_float<T>(3000.0f);  // exp(3000) overflows unless the max is subtracted
  std::vector<float> y(n);
  cf::ref::softmax(x.data(), y.data(), n);
  double denominator = 0;
  for (auto v : x) denominator += std::exp(as_double(v) - 3000.0);
  double total = 0;
  for (int i = 0; i < n; ++i) {
    EXPECT_NEAR(y[i], std::exp(as_double(x[i]) - 3000.0) / denominator, 1e-6) << i;
    total += y[i];
  }
  EXPECT_NEAR(total, 1.0, 1e-5);
}

TEST(RefOpsArgmax, FirstOnTiesAndIgnoresNaN) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> x = {1.0f, nan, 5.0f, -2.0f, 5.0f, nan};
  EXPECT_EQ(cf::ref::argmax(x.data(), int(x.size())), 2);
  const std::vector<float> only_nan = {nan, nan};
  EXPECT_EQ(cf::ref::argmax(only_nan.data(), 2), 0);
  const std::vector<float> negative = {-9.0f, -3.0f, -4.0f};
  EXPECT_EQ(cf::ref::argmax(negative.data(), 3), 1);
  const std::vector<cf::half> halves = {cf::half(0.5f), cf::half(0.75f), cf::half(0.25f)};
  EXPECT_EQ(cf::ref::argmax(halves.data(), 3), 1);
}

}  // namespace
