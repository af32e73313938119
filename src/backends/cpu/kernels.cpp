// What the kernel levels share: the choice of table and the activation preparation (plain scalar code, so every
// level reads the same prepared values).
#include "kernels.hpp"

#include <cmath>
#include <cstring>

#include "clusterfusion/common/error.hpp"

namespace cf::cpu {

bool has_int8_kernel(DType t) {
  switch (t) {
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
      return true;
    case DType::F32:
    case DType::F16:
    case DType::BF16:
      return false;
  }
  return false;
}

const KernelTable& kernel_table(Isa isa) {
  CF_CHECK(isa_supported(isa), std::string("cpu kernels: this CPU has no ") + isa_name(isa));
#if defined(CF_CPU_X86_KERNELS)
  if (isa == Isa::Avx512) return avx512_kernels();
  if (isa == Isa::Avx2) return avx2_kernels();
#endif
  return portable_kernels();
}

void InputBuffer::reserve(int max_tokens, int max_cols) {
  max_tokens_ = max_tokens;
  max_cols_ = (max_cols + kActBlock - 1) / kActBlock * kActBlock;
  const size_t values = size_t(max_tokens_) * size_t(max_cols_), blocks = values / kActBlock;
  x_.assign(values, 0.0f);
  q_.assign(values, 0);
  block_sum_.assign(blocks, 0.0f);
  scale_.assign(blocks, 0.0f);
  scaled_sum_.assign(blocks, 0.0f);
  sum32_.assign(blocks, 0);
  sum16_.assign(2 * blocks, 0);
}

namespace {

// Sum of 32 values: four column-ordered partial sums (columns j mod 4), combined as (s0 + s1) + (s2 + s3).
float block_sum(const float* x) {
  float part[4] = {x[0], x[1], x[2], x[3]};
  for (int c = 4; c < kActBlock; ++c) part[c % 4] += x[c];
  return (part[0] + part[1]) + (part[2] + part[3]);
}

// ggml's Q8_0 rounding with an fp32 scale: d = amax / 127, q = round_to_nearest_even(x * (127 / amax)).
void quantise_block(const float* x, int8_t* q, float& scale, int32_t& sum32, int32_t* sum16) {
  float amax = 0.0f;
  for (int c = 0; c < kActBlock; ++c) amax = std::fabs(x[c]) > amax ? std::fabs(x[c]) : amax;
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  scale = amax / 127.0f;
  sum16[0] = sum16[1] = 0;
  for (int c = 0; c < kActBlock; ++c) {
    const float r = std::nearbyint(x[c] * inv);
    const int v = r >= -127.0f && r <= 127.0f ? int(r) : 0;  // nan (and only nan) falls outside
    q[c] = int8_t(v);
    sum16[c / 16] += v;
  }
  sum32 = sum16[0] + sum16[1];
}

}  // namespace

const PreparedInput& InputBuffer::prepare(const float* x, int n_tokens, int cols, int64_t x_stride,
                                          Arithmetic arithmetic) {
  const int padded = (cols + kActBlock - 1) / kActBlock * kActBlock;
  CF_CHECK(n_tokens <= max_tokens_ && padded <= max_cols_, "cpu kernels: input larger than its buffer");
  const int blocks = padded / kActBlock;
  in_ = PreparedInput{};
  in_.n_tokens = n_tokens;
  in_.cols = padded;
  for (int t = 0; t < n_tokens; ++t) {
    float* row = x_.data() + int64_t(t) * padded;
    std::memcpy(row, x + t * x_stride, sizeof(float) * size_t(cols));
    std::memset(row + cols, 0, sizeof(float) * size_t(padded - cols));
    for (int b = 0; b < blocks; ++b) {
      const int64_t i = int64_t(t) * blocks + b;
      block_sum_[size_t(i)] = block_sum(row + b * kActBlock);
      if (arithmetic == Arithmetic::Int8) {
        quantise_block(row + b * kActBlock, q_.data() + i * kActBlock, scale_[size_t(i)], sum32_[size_t(i)],
                       sum16_.data() + 2 * i);
        scaled_sum_[size_t(i)] = scale_[size_t(i)] * float(sum32_[size_t(i)]);
      }
    }
  }
  in_.x = x_.data();
  in_.block_sum = block_sum_.data();
  if (arithmetic == Arithmetic::Int8) {
    in_.q = q_.data();
    in_.scale = scale_.data();
    in_.scaled_sum = scaled_sum_.data();
    in_.sum32 = sum32_.data();
    in_.sum16 = sum16_.data();
  }
  return in_;
}

}  // namespace cf::cpu
