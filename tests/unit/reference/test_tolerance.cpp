// The tolerance checker on constructed cases: each rule of docs/tolerance.md fails when (and only when) it should.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "clusterfusion/reference/tolerance.hpp"

namespace {

TEST(Tolerance, PolicyValuesPerType) {
  EXPECT_EQ(cf::ref::tolerance_for<cf::half>().rtol, 1e-2);
  EXPECT_EQ(cf::ref::tolerance_for<cf::half>().atol_rms, 1e-3);
  EXPECT_EQ(cf::ref::tolerance_for<cf::bfloat16>().rtol, 4e-2);
  EXPECT_EQ(cf::ref::tolerance_for<cf::bfloat16>().atol_rms, 4e-3);
}

TEST(Tolerance, ElementwiseBoundUsesAtolScaledByRmsPlusRtol) {
  const std::vector<float> ref = {2.0f, -2.0f, 2.0f, -2.0f};  // rms 2 -> fp16 atol = 2e-3
  std::vector<float> y = ref;
  y[0] = 2.0f + 0.021f;  // bound for |ref| = 2: 2e-3 + 2e-2 = 0.022
  auto r = cf::ref::check_tolerance<cf::half>(y, ref);
  EXPECT_TRUE(r.ok) << r.message;
  EXPECT_NEAR(r.atol, 2e-3, 1e-9);
  y[0] = 2.0f + 0.023f;
  r = cf::ref::check_tolerance<cf::half>(y, ref);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.n_out_of_bound, 1);
  EXPECT_EQ(r.worst_index, 0);
  EXPECT_NE(r.message.find("out of bound"), std::string::npos) << r.message;
  // The same error passes the looser bf16 bound.
  EXPECT_TRUE(cf::ref::check_tolerance<cf::bfloat16>(y, ref).ok);
}

TEST(Tolerance, NearZeroReferenceElementsGetOnlyAtol) {
  const std::vector<float> ref = {0.0f, 1.0f, -1.0f, 1.0f};  // rms ~0.866
  std::vector<float> y = ref;
  y[0] = 0.0008f;  // atol = 8.66e-4
  EXPECT_TRUE(cf::ref::check_tolerance<cf::half>(y, ref).ok);
  y[0] = 0.0009f;
  EXPECT_FALSE(cf::ref::check_tolerance<cf::half>(y, ref).ok);
}

TEST(Tolerance, NotWorseThanTwiceTheNaiveError) {
  std::vector<float> ref(100, 1.0f), naive(100, 1.0f), y(100, 1.0f);
  naive[3] = 1.004f;  // naive error 4e-3
  y[7] = 1.0079f;     // within 2x naive and within the fp16 elementwise bound (1e-3 + 1e-2)
  auto r = cf::ref::check_tolerance<cf::half>(y, ref, naive);
  EXPECT_TRUE(r.ok) << r.message;
  EXPECT_NEAR(r.max_naive_error, 4e-3, 1e-6);
  y[7] = 1.0085f;  // still within rule 1 but over 2x naive
  r = cf::ref::check_tolerance<cf::half>(y, ref, naive);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.n_out_of_bound, 0);
  EXPECT_NE(r.message.find("naive"), std::string::npos) << r.message;
}

TEST(Tolerance, ExactNaiveResultStillAllowsAtol) {
  std::vector<float> ref(10, 1.0f), naive = ref, y = ref;
  y[2] = 1.0005f;  // atol = 1e-3 * rms 1
  EXPECT_TRUE(cf::ref::check_tolerance<cf::half>(y, ref, naive).ok);
}

TEST(Tolerance, NanFailsAndSizeMismatchFails) {
  std::vector<float> ref(4, 1.0f), y = ref;
  y[1] = std::nanf("");
  auto r = cf::ref::check_tolerance<cf::half>(y, ref);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.worst_index, 1);
  const std::vector<float> shorter(3, 1.0f);
  r = cf::ref::check_tolerance<cf::half>(shorter, ref);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.message.find("size mismatch"), std::string::npos);
}

// The rounding-noise fallback (check_policy): only where the naive implementation uses more than half of the rule-1
// bound, and then with rule 2 and at most 2x (+2) the naive's out-of-bound count. fp16, ref = 1: bound 0.011.
TEST(TolerancePolicy, PassingKernelNeedsNoFallback) {
  const std::vector<float> ref(100, 1.0f), naive(100, 1.004f), y(100, 1.006f);
  const auto p = cf::ref::check_policy<cf::half>(y, ref, naive);
  EXPECT_TRUE(p.ok) << p.message;
  EXPECT_FALSE(p.fallback);
}

TEST(TolerancePolicy, NoisyNaiveExcusesAFewOutOfBoundElements) {
  const std::vector<float> ref(100, 1.0f), naive(100, 1.008f);  // naive uses 0.73 of the bound
  std::vector<float> y(100, 1.008f);
  y[3] = y[40] = 1.012f;  // 2 out of bound, within 2x the naive error
  auto p = cf::ref::check_policy<cf::half>(y, ref, naive);
  EXPECT_TRUE(p.ok) << p.message;
  EXPECT_TRUE(p.fallback);
  EXPECT_EQ(p.message.rfind("NOTE policy", 0), 0u) << p.message;
  y[77] = 1.012f;  // 3 > 2 x 0 + 2
  p = cf::ref::check_policy<cf::half>(y, ref, naive);
  EXPECT_FALSE(p.ok) << p.message;
  EXPECT_NE(p.message.find("REJECTED"), std::string::npos) << p.message;
}

TEST(TolerancePolicy, OutOfBoundNaiveAllowsTwiceItsCount) {
  const std::vector<float> ref(100, 1.0f);
  std::vector<float> naive(100, 1.0f), y(100, 1.0f);
  for (int i = 0; i < 5; ++i) naive[size_t(i)] = 1.012f;    // the naive breaks rule 1 on 5 elements
  for (int i = 0; i < 12; ++i) y[size_t(i) * 8] = 1.02f;    // 12 = 2 x 5 + 2, max error 0.02 <= 2 x 0.012
  EXPECT_TRUE(cf::ref::check_policy<cf::half>(y, ref, naive).ok);
  y[97] = 1.02f;  // 13
  EXPECT_FALSE(cf::ref::check_policy<cf::half>(y, ref, naive).ok);
  y[97] = 1.0f;
  y[1] = 1.03f;  // over 2x the naive error: rule 2 fails
  EXPECT_FALSE(cf::ref::check_policy<cf::half>(y, ref, naive).ok);
}

TEST(TolerancePolicy, QuietNaiveExcusesNothing) {
  const std::vector<float> ref(100, 1.0f), naive(100, 1.004f);  // naive uses 0.36 of the bound
  std::vector<float> y(100, 1.004f);
  y[5] = 1.0115f;  // out of bound (and over 2x naive)
  auto p = cf::ref::check_policy<cf::half>(y, ref, naive);
  EXPECT_FALSE(p.ok);
  EXPECT_FALSE(p.fallback);
  EXPECT_NE(p.message.find("naive alone"), std::string::npos) << p.message;
}

}  // namespace
