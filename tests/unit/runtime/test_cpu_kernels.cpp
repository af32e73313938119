// The cpu backend's kernels (src/backends/cpu/kernels.hpp) on every instruction-set level this CPU has:
// matrix products of every weight type against float64 references (fp32 arithmetic: the dequantised weights; int8
// arithmetic: the same with the prepared int8 activations), the activation quantisation, attention, RMSNorm and
// SwiGLU; and the guarantees: every level computes the same bits, and a token's result does not depend on the
// other tokens of the batch.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "clusterfusion/common/half.hpp"
#include "clusterfusion/runtime/rng.hpp"
#include "clusterfusion/runtime/weights.hpp"
#include "kernels.hpp"

namespace {

using cf::DType;
using cf::cpu::Arithmetic;
using cf::cpu::Isa;

std::vector<Isa> supported_levels() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::Portable, Isa::Avx2, Isa::Avx512})
    if (cf::cpu::isa_supported(isa)) out.push_back(isa);
  return out;
}

std::vector<float> uniform(size_t n, float lo, float hi, uint64_t seed) {
  cf::Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = rng.uniform(lo, hi);
  return v;
}

void put_half(uint8_t* p, float v) {
  const uint16_t h = cf::float_to_f16_bits(v);
  std::memcpy(p, &h, 2);
}

// A matrix of random k-quant super-blocks: random values, scales and mins, small positive fp16 d / dmin.
cf::WeightMatrix random_k_quant(DType t, int64_t rows, int64_t cols, uint64_t seed) {
  cf::WeightMatrix w;
  w.name = "random";
  w.dtype = t;
  w.rows = rows;
  w.cols = cols;
  w.row_bytes = cf::dtype_row_bytes(t, cols);
  w.bytes = cf::AlignedBytes(size_t(rows * w.row_bytes));
  cf::Rng rng(seed);
  for (size_t i = 0; i < w.bytes.size(); ++i) w.bytes.data()[i] = uint8_t(rng.below(256));
  const int64_t block_bytes = cf::dtype_block_bytes(t);
  for (int64_t b = 0; b < rows * cols / 256; ++b) {
    uint8_t* blk = w.bytes.data() + b * block_bytes;
    if (t == DType::Q6_K) {
      put_half(blk + 208, rng.uniform(0.0005f, 0.002f));
    } else {
      put_half(blk, rng.uniform(0.001f, 0.01f));
      put_half(blk + 2, rng.uniform(0.001f, 0.01f));
    }
  }
  return w;
}

cf::WeightMatrix random_matrix(DType t, int64_t rows, int64_t cols, uint64_t seed) {
  if (cf::dtype_is_k_quant(t)) return random_k_quant(t, rows, cols, seed);
  cf::WeightMatrix w;
  w.name = "random";
  w.dtype = DType::F32;
  w.rows = rows;
  w.cols = cols;
  w.row_bytes = cols * 4;
  w.bytes = cf::AlignedBytes(size_t(rows * cols * 4));
  const auto values = uniform(size_t(rows * cols), -1.0f, 1.0f, seed);
  std::memcpy(w.bytes.data(), values.data(), values.size() * 4);
  return t == DType::F32 ? std::move(w) : cf::convert_matrix(w, t);
}

// Columns exercising several 256-column chunks and, for the plain types, a partial last block.
int64_t test_cols(DType t) {
  if (cf::dtype_is_k_quant(t)) return 768;
  if (t == DType::F32 || t == DType::F16 || t == DType::BF16) return 326;
  return 352;
}

struct Product {
  std::vector<float> y;
  std::vector<float> x;  // the tokens
};

constexpr int64_t kRows = 40;  // two row groups and a partial one
constexpr int kTokens = 11;    // full token tiles and a remainder on every level

// y = W x for kTokens random tokens on one level, accumulating onto 0.5 (so the accumulate path is exercised).
std::vector<float> run_matmul(const cf::WeightMatrix& w, const std::vector<float>& x, int n_tokens, Isa isa,
                              Arithmetic arithmetic, int64_t row_begin = 0, int64_t row_end = kRows) {
  cf::cpu::InputBuffer buffer;
  buffer.reserve(n_tokens, int(w.cols));
  const cf::cpu::PreparedInput& in =
      buffer.prepare(x.data(), n_tokens, int(w.cols), w.cols, arithmetic, cf::cpu::kernel_table(isa));
  const cf::cpu::PackedMatrix packed = cf::cpu::pack_matrix(w);
  std::vector<float> y(size_t(n_tokens * w.rows), 0.5f);
  cf::cpu::MatmulArgs a;
  a.w = &packed;
  a.row_begin = row_begin;
  a.row_end = row_end;
  a.in = &in;
  a.y = y.data();
  a.y_stride = w.rows;
  a.accumulate = true;
  cf::cpu::kernel_table(isa).matmul(a);
  return y;
}

const DType kAllTypes[] = {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0,
                           DType::Q4_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};

class CpuMatmul : public ::testing::TestWithParam<DType> {};

TEST_P(CpuMatmul, F32ArithmeticMatchesFloat64OnDequantisedWeights) {
  const DType t = GetParam();
  const int64_t cols = test_cols(t);
  const cf::WeightMatrix w = random_matrix(t, kRows, cols, 1);
  const std::vector<float> deq = w.dequantized();
  const std::vector<float> x = uniform(size_t(kTokens * cols), -2.0f, 2.0f, 2);
  for (Isa isa : supported_levels()) {
    const std::vector<float> y = run_matmul(w, x, kTokens, isa, Arithmetic::F32);
    for (int t_ = 0; t_ < kTokens; ++t_) {
      for (int64_t r = 0; r < kRows; ++r) {
        double want = 0.5, magnitude = 0;
        for (int64_t c = 0; c < cols; ++c) {
          want += double(deq[size_t(r * cols + c)]) * x[size_t(t_ * cols + c)];
          magnitude += std::fabs(double(deq[size_t(r * cols + c)]) * x[size_t(t_ * cols + c)]);
        }
        // fp32 rounding of chains of ~cols / 4 terms (and of the scale / min factorisation).
        EXPECT_NEAR(y[size_t(t_ * kRows + r)], want, 2e-6 * (magnitude + 1.0) * std::sqrt(double(cols)))
            << cf::cpu::isa_name(isa) << " token " << t_ << " row " << r;
      }
    }
  }
}

class CpuMatmulInteger : public ::testing::TestWithParam<DType> {};

// Both integer arithmetics: the products of the dequantised weights with the rounded activations (value x scale).
TEST_P(CpuMatmulInteger, MatchesFloat64OnRoundedActivations) {
  const DType t = GetParam();
  ASSERT_TRUE(cf::cpu::has_integer_kernel(t));
  const int64_t cols = test_cols(t);
  const cf::WeightMatrix w = random_matrix(t, kRows, cols, 3);
  const std::vector<float> deq = w.dequantized();
  const std::vector<float> x = uniform(size_t(kTokens * cols), -2.0f, 2.0f, 4);
  for (Arithmetic arithmetic : {Arithmetic::Int16, Arithmetic::Int8}) {
  cf::cpu::InputBuffer buffer;
  buffer.reserve(kTokens, int(cols));
  const cf::cpu::PreparedInput& in =
      buffer.prepare(x.data(), kTokens, int(cols), cols, arithmetic, cf::cpu::portable_kernels());
  for (Isa isa : supported_levels()) {
    SCOPED_TRACE(std::string(cf::cpu::isa_name(isa)) + (arithmetic == Arithmetic::Int8 ? " int8" : " int16"));
    const std::vector<float> y = run_matmul(w, x, kTokens, isa, arithmetic);
    for (int t_ = 0; t_ < kTokens; ++t_) {
      for (int64_t r = 0; r < kRows; ++r) {
        double want = 0.5, magnitude = 0;
        for (int64_t c = 0; c < cols; ++c) {
          const double xq = double(in.value(t_, int(c))) * in.block_scale(t_, int(c / 32));
          want += double(deq[size_t(r * cols + c)]) * xq;
          magnitude += std::fabs(double(deq[size_t(r * cols + c)]) * xq);
        }
        EXPECT_NEAR(y[size_t(t_ * kRows + r)], want, 1e-5 * (magnitude + 1.0)) << " token " << t_ << " row " << r;
      }
    }
  }
  }
}

TEST_P(CpuMatmul, EveryLevelAndBatchSizeAndRowSplitGivesTheSameBits) {
  const DType t = GetParam();
  const int64_t cols = test_cols(t);
  const cf::WeightMatrix w = random_matrix(t, kRows, cols, 5);
  const std::vector<float> x = uniform(size_t(kTokens * cols), -2.0f, 2.0f, 6);
  for (Arithmetic arithmetic : {Arithmetic::F32, Arithmetic::Int16, Arithmetic::Int8}) {
    const std::vector<float> reference = run_matmul(w, x, kTokens, Isa::Portable, arithmetic);
    for (Isa isa : supported_levels()) {
      SCOPED_TRACE(std::string(cf::cpu::isa_name(isa)) + " arithmetic " + std::to_string(int(arithmetic)));
      EXPECT_EQ(run_matmul(w, x, kTokens, isa, arithmetic), reference);
      // Each token alone.
      for (int t_ = 0; t_ < kTokens; ++t_) {
        const std::vector<float> one(x.begin() + t_ * cols, x.begin() + (t_ + 1) * cols);
        const std::vector<float> alone = run_matmul(w, one, 1, isa, arithmetic);
        EXPECT_TRUE(std::equal(alone.begin(), alone.end(), reference.begin() + t_ * kRows)) << "token " << t_;
      }
      // Rows in two calls (as two threads would split them).
      std::vector<float> split = run_matmul(w, x, kTokens, isa, arithmetic, 0, 16);
      const std::vector<float> rest = run_matmul(w, x, kTokens, isa, arithmetic, 16, kRows);
      for (int t_ = 0; t_ < kTokens; ++t_)
        std::copy(rest.begin() + t_ * kRows + 16, rest.begin() + (t_ + 1) * kRows, split.begin() + t_ * kRows + 16);
      EXPECT_EQ(split, reference);
    }
  }
}

// A prompt longer than a token block (64): the fp32 tiles' second block of tokens, register blocks of two row groups
// and a single one (rows 0 .. 48: groups 0 and 1, then 2), equal to each token alone and to the portable level.
TEST_P(CpuMatmul, LongBatchGivesEachTokensOwnBitsOnEveryLevel) {
  const DType t = GetParam();
  const int64_t cols = test_cols(t);
  constexpr int kLong = 70;
  const cf::WeightMatrix w = random_matrix(t, kRows, cols, 15);
  const std::vector<float> x = uniform(size_t(kLong * cols), -2.0f, 2.0f, 16);
  const std::vector<float> reference = run_matmul(w, x, kLong, Isa::Portable, Arithmetic::F32);
  for (Isa isa : supported_levels()) {
    SCOPED_TRACE(cf::cpu::isa_name(isa));
    EXPECT_EQ(run_matmul(w, x, kLong, isa, Arithmetic::F32), reference);
    for (int t_ : {0, 3, 63, 64, 69}) {
      const std::vector<float> one(x.begin() + t_ * cols, x.begin() + (t_ + 1) * cols);
      const std::vector<float> alone = run_matmul(w, one, 1, isa, Arithmetic::F32);
      EXPECT_TRUE(std::equal(alone.begin(), alone.end(), reference.begin() + t_ * kRows)) << "token " << t_;
    }
  }
}

TEST_P(CpuMatmul, PackedMatrixDequantisesToTheSameBits) {
  const DType t = GetParam();
  const cf::WeightMatrix w = random_matrix(t, kRows, test_cols(t), 14);
  const cf::cpu::PackedMatrix packed = cf::cpu::pack_matrix(w);
  std::vector<float> from_packed(size_t(kRows * w.cols));
  packed.dequantize_rows(0, kRows, from_packed.data());
  EXPECT_EQ(from_packed, w.dequantized());
  EXPECT_EQ(packed.groups(), 3);
}

INSTANTIATE_TEST_SUITE_P(AllTypes, CpuMatmul, ::testing::ValuesIn(kAllTypes),
                         [](const auto& info) { return std::string(cf::dtype_name(info.param)); });
// The block types (plain types always use the fp32 arithmetic).
INSTANTIATE_TEST_SUITE_P(BlockTypes, CpuMatmulInteger,
                         ::testing::Values(DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q5_K, DType::Q6_K),
                         [](const auto& info) { return std::string(cf::dtype_name(info.param)); });

TEST(CpuKernels, InputPreparationFollowsTheDefinitionOnEveryLevel) {
  std::vector<float> x = uniform(96, -3.0f, 3.0f, 7);
  std::fill(x.begin() + 32, x.begin() + 64, 0.0f);  // an all-zero block
  x[70] = NAN;                                       // a nan counts as 0
  for (Isa isa : supported_levels()) {
    for (const auto& [arithmetic, max_value] : {std::pair{Arithmetic::Int8, 127}, std::pair{Arithmetic::Int16, 32639}}) {
    SCOPED_TRACE(std::string(cf::cpu::isa_name(isa)) + " max " + std::to_string(max_value));
    cf::cpu::InputBuffer buffer;
    buffer.reserve(1, 96);
    // 90 columns: zero padded to 96.
    const cf::cpu::PreparedInput& in = buffer.prepare(x.data(), 1, 90, 96, arithmetic, cf::cpu::kernel_table(isa));
    ASSERT_EQ(in.cols, 96);
    for (int b = 0; b < 3; ++b) {
      float amax = 0;
      int sum = 0, sum16[2] = {0, 0};
      for (int c = 0; c < 32; ++c) {
        const int i = 32 * b + c;
        const float v = i < 90 && !std::isnan(x[size_t(i)]) ? x[size_t(i)] : 0.0f;
        amax = std::max(amax, std::fabs(v));
        EXPECT_LE(std::abs(in.value(0, i)), max_value);
        sum += in.value(0, i);
        sum16[c / 16] += in.value(0, i);
      }
      const float inv = amax > 0 ? float(max_value) / amax : 0.0f;
      for (int c = 0; c < 32; ++c) {
        const int i = 32 * b + c;
        const float v = i < 90 && !std::isnan(x[size_t(i)]) ? x[size_t(i)] : 0.0f;
        EXPECT_EQ(in.value(0, i), int(std::nearbyint(v * inv))) << i;  // round to nearest even of x * max / amax
      }
      EXPECT_EQ(in.block_scale(0, b), amax / float(max_value)) << b;
      EXPECT_EQ(in.block_scaled_sum(0, b), in.block_scale(0, b) * float(sum));
      EXPECT_EQ(in.half_scaled_sum(0, 2 * b), in.block_scale(0, b) * float(sum16[0]));
      EXPECT_EQ(in.half_scaled_sum(0, 2 * b + 1), in.block_scale(0, b) * float(sum16[1]));
    }
    EXPECT_EQ(in.block_scale(0, 1), 0.0f);
    EXPECT_EQ(in.value(0, 70), 0);
    }
    // fp32: block sums by the 16-lane halving of kernels.hpp.
    cf::cpu::InputBuffer buffer;
    buffer.reserve(1, 96);
    const cf::cpu::PreparedInput& f = buffer.prepare(x.data(), 1, 90, 96, Arithmetic::F32, cf::cpu::kernel_table(isa));
    for (int b = 0; b < 3; ++b) {
      float lanes[16];
      for (int j = 0; j < 16; ++j) lanes[j] = f.x[32 * b + j] + f.x[32 * b + 16 + j];
      for (int n = 8; n >= 1; n /= 2)
        for (int j = 0; j < n; ++j) lanes[j] += lanes[j + n];
      if (b != 2) {
        EXPECT_EQ(f.block_sum[b], lanes[0]) << b;  // (block 2 holds the nan)
      }
    }
  }
}

// Blocks whose rounding factor overflows (denormal-small values) or that hold an infinity round to zeros on every
// level, in both integer arithmetics: no value past the integer range, sums 0 (the tiny block); the scale keeps the
// infinity.
TEST(CpuKernels, IntegerRoundingOfTinyAndInfiniteBlocksIsZero) {
  std::vector<float> x(64, 1e-40f);
  x[40] = INFINITY;
  for (Isa isa : supported_levels()) {
    for (Arithmetic arithmetic : {Arithmetic::Int16, Arithmetic::Int8}) {
      cf::cpu::InputBuffer buffer;
      buffer.reserve(1, 64);
      const cf::cpu::PreparedInput& in = buffer.prepare(x.data(), 1, 64, 64, arithmetic, cf::cpu::kernel_table(isa));
      for (int c = 0; c < 64; ++c) EXPECT_EQ(in.value(0, c), 0) << cf::cpu::isa_name(isa) << " column " << c;
      EXPECT_EQ(in.block_scaled_sum(0, 0), 0.0f);  // no integer past the range in the sums either
      EXPECT_EQ(in.half_scaled_sum(0, 0), 0.0f);
      EXPECT_EQ(in.half_scaled_sum(0, 1), 0.0f);
      EXPECT_TRUE(std::isinf(in.block_scale(0, 1)));
    }
  }
}

// Decode attention against a float64 softmax, keys and values at scattered slots, F32 and F16 caches.
TEST(CpuKernels, AttentionMatchesFloat64SoftmaxOnEveryLevel) {
  for (const DType kv_type : {DType::F32, DType::F16}) {
    for (const auto& [head_dim, group] : {std::pair{16, 3}, std::pair{64, 3}, std::pair{32, 9}}) {  // 9: two passes of 8
      for (const int len : {1, 16, 37}) {
        const int slots_total = 50;
        const int64_t row = 2 * head_dim;  // two KV heads per slot; this test reads the second
        const std::vector<float> q = uniform(size_t(group * head_dim), -1.0f, 1.0f, 8);
        std::vector<float> kv_values = uniform(size_t(2 * slots_total * row), -1.5f, 1.5f, 9);
        std::vector<uint16_t> kv_halves(kv_values.size());
        for (size_t i = 0; i < kv_values.size(); ++i) {
          kv_halves[i] = cf::float_to_f16_bits(kv_values[i]);
          if (kv_type == DType::F16) kv_values[i] = cf::f16_bits_to_float(kv_halves[i]);
        }
        std::vector<int64_t> slots;
        for (int p = 0; p < len; ++p) slots.push_back((p * 7 + 3) % slots_total);
        const size_t v_base = size_t(slots_total * row);  // values after the keys
        std::vector<float> want(size_t(group * head_dim));
        for (int g = 0; g < group; ++g) {
          std::vector<double> s(static_cast<size_t>(len));
          double max_s = -1e300, sum = 0;
          for (int p = 0; p < len; ++p) {
            double d = 0;
            for (int i = 0; i < head_dim; ++i)
              d += double(q[size_t(g * head_dim + i)]) * kv_values[size_t(slots[size_t(p)] * row + head_dim + i)];
            s[size_t(p)] = d / std::sqrt(double(head_dim));
            max_s = std::max(max_s, s[size_t(p)]);
          }
          for (auto& v : s) sum += (v = std::exp(v - max_s));
          for (int i = 0; i < head_dim; ++i) {
            double o = 0;
            for (int p = 0; p < len; ++p)
              o += s[size_t(p)] * kv_values[v_base + size_t(slots[size_t(p)] * row + head_dim + i)];
            want[size_t(g * head_dim + i)] = float(o / sum);
          }
        }
        std::vector<float> first;
        for (Isa isa : supported_levels()) {
          SCOPED_TRACE(std::string(cf::cpu::isa_name(isa)) + " " + std::string(cf::dtype_name(kv_type)) + " head_dim " +
                       std::to_string(head_dim) + " group " + std::to_string(group) + " len " + std::to_string(len));
          std::vector<float> out(size_t(group * head_dim), NAN);
          cf::cpu::AttentionArgs a;
          a.q = q.data();
          a.out = out.data();
          const size_t elem = kv_type == DType::F16 ? 2 : 4;
          const uint8_t* base = kv_type == DType::F16 ? reinterpret_cast<const uint8_t*>(kv_halves.data())
                                                       : reinterpret_cast<const uint8_t*>(kv_values.data());
          a.k = base + size_t(head_dim) * elem;
          a.v = base + (v_base + size_t(head_dim)) * elem;
          a.kv_dtype = kv_type;
          a.slots = slots.data();
          a.row = row;
          a.len = len;
          a.group = group;
          a.head_dim = head_dim;
          a.scale = 1.0f / std::sqrt(float(head_dim));
          cf::cpu::kernel_table(isa).attend(a);
          for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], want[i], 2e-6) << i;
          if (first.empty()) first = out;
          EXPECT_EQ(out, first);
        }
      }
    }
  }
}

TEST(CpuKernels, RmsNormSwigluAndKvStoreAreAccurateAndTheSameOnEveryLevel) {
  const int n = 70;  // a partial last vector
  const std::vector<float> x = uniform(size_t(n), -3.0f, 3.0f, 10), weight = uniform(size_t(n), 0.5f, 1.5f, 11);
  const std::vector<float> up = uniform(size_t(n), -2.0f, 2.0f, 12);
  std::vector<float> gate = uniform(size_t(n), -30.0f, 30.0f, 13);
  gate[0] = -200.0f;  // e^200 clamps; silu -> -0
  gate[1] = 200.0f;
  double squares = 0;
  for (float v : x) squares += double(v) * v;
  const double inv_rms = 1.0 / std::sqrt(squares / n + 1e-5);
  std::vector<float> first_norm, first_swiglu;
  std::vector<uint16_t> first_halves;
  for (Isa isa : supported_levels()) {
    SCOPED_TRACE(cf::cpu::isa_name(isa));
    const auto& k = cf::cpu::kernel_table(isa);
    std::vector<float> y(static_cast<size_t>(n));
    k.rmsnorm(x.data(), weight.data(), 1e-5f, y.data(), n);
    for (int i = 0; i < n; ++i) EXPECT_NEAR(y[size_t(i)], x[size_t(i)] * inv_rms * weight[size_t(i)], 1e-5) << i;
    std::vector<float> g = gate;
    k.swiglu(g.data(), up.data(), n);
    for (int i = 0; i < n; ++i) {
      const double want = double(gate[size_t(i)]) / (1.0 + std::exp(-double(gate[size_t(i)]))) * up[size_t(i)];
      EXPECT_NEAR(g[size_t(i)], want, 1e-6 * (std::fabs(want) + 1e-3)) << i;
    }
    std::vector<uint16_t> halves(64);
    k.store_kv(x.data(), halves.data(), DType::F16, 64);
    for (int i = 0; i < 64; ++i) EXPECT_EQ(halves[size_t(i)], cf::float_to_f16_bits(x[size_t(i)])) << i;
    if (first_norm.empty()) {
      first_norm = y;
      first_swiglu = g;
    }
    EXPECT_EQ(y, first_norm);
    EXPECT_EQ(g, first_swiglu);
  }
}

TEST(CpuKernels, LevelsAreNamedAndUnsupportedOnesRefused) {
  EXPECT_EQ(cf::cpu::resolve_isa(""), cf::cpu::best_isa());
  EXPECT_EQ(cf::cpu::resolve_isa("auto"), cf::cpu::best_isa());
  EXPECT_EQ(cf::cpu::resolve_isa("portable"), Isa::Portable);
  EXPECT_THROW(cf::cpu::resolve_isa("sse9"), cf::InputError);
  if (cf::cpu::best_isa() != Isa::Avx512) {
    EXPECT_THROW(cf::cpu::resolve_isa("avx512"), cf::InputError);
  }
  for (Isa isa : {Isa::Portable, Isa::Avx2, Isa::Avx512}) EXPECT_EQ(cf::cpu::isa_from_name(cf::cpu::isa_name(isa)), isa);
}

}  // namespace
