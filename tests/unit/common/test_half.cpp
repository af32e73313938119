// fp16/bf16 conversions checked against the compiler's own _Float16 (an independent implementation) and, for
// bf16, against the definition of round-to-nearest-even (no closer bf16 exists; ties go to the even mantissa).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "clusterfusion/common/half.hpp"

namespace {

TEST(Half, EveryF16BitPatternDecodesLikeFloat16) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const auto bits = uint16_t(b);
    _Float16 h;
    std::memcpy(&h, &bits, 2);
    const float want = float(h);
    const float got = cf::f16_bits_to_float(bits);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << b;
    } else {
      EXPECT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want)) << b;
    }
  }
}

TEST(Half, FloatToF16RoundsLikeFloat16) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<uint32_t> any_bits;
  for (int i = 0; i < 2000000; ++i) {
    // Mix arbitrary bit patterns with values concentrated in the f16 range (incl. subnormals and ties).
    uint32_t x = any_bits(rng);
    if (i % 2) x = (x & 0x807fffffu) | ((uint32_t(100 + (x % 44)) & 0xffu) << 23);
    const float f = std::bit_cast<float>(x);
    const _Float16 h = _Float16(f);
    uint16_t want;
    std::memcpy(&want, &h, 2);
    const uint16_t got = cf::float_to_f16_bits(f);
    if (std::isnan(f)) {
      EXPECT_EQ(got & 0x7c00u, 0x7c00u);
      EXPECT_NE(got & 0x3ffu, 0u);
    } else {
      ASSERT_EQ(got, want) << std::hexfloat << f;
    }
  }
}

TEST(Half, Bf16RoundsToNearestEven) {
  std::mt19937 rng(99);
  std::uniform_int_distribution<uint32_t> any_bits;
  for (int i = 0; i < 1000000; ++i) {
    const float f = std::bit_cast<float>(any_bits(rng));
    const uint16_t b = cf::float_to_bf16_bits(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(cf::bf16_bits_to_float(b)));
      continue;
    }
    const double exact = f;
    const double got = cf::bf16_bits_to_float(b);
    if (std::isinf(got) && !std::isinf(f)) {
      // Overflow to inf only when f is at or beyond the rounding boundary of the largest bf16.
      EXPECT_GE(std::fabs(exact), 0x1.ffp+127);
      continue;
    }
    const double down = cf::bf16_bits_to_float(uint16_t(b - 1));
    const double up = cf::bf16_bits_to_float(uint16_t(b + 1));
    const double err = std::fabs(got - exact);
    if (std::isfinite(down) && std::signbit(down) == std::signbit(got)) {
      ASSERT_LE(err, std::fabs(down - exact));
    }
    if (std::isfinite(up) && std::signbit(up) == std::signbit(got)) {
      ASSERT_LE(err, std::fabs(up - exact));
    }
  }
}

TEST(Half, StorageTypesRoundTrip) {
  EXPECT_EQ(float(cf::half(1.5f)), 1.5f);
  EXPECT_EQ(float(cf::bfloat16(-2.0f)), -2.0f);
  EXPECT_EQ(cf::round_through<cf::half>(1.0f + 1.0f / 4096), 1.0f);  // below half an f16 ulp
}

}  // namespace
