// What the kernel levels share: the choice of table and the activation preparation (plain scalar code, so every
// level reads the same prepared values).
#include "kernels.hpp"

#include <cmath>
#include <cstring>

#include "clusterfusion/common/error.hpp"

namespace cf::cpu {

bool has_integer_kernel(DType t) {
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
  q_.assign(2 * values + blocks * 64, 0);  // int16's two planes, 64 bytes after each block
  block_sum_.assign(blocks, 0.0f);
  scale_.assign(blocks, 0.0f);
  scaled_sum_.assign(blocks, 0.0f);
  scaled_sum16_.assign(2 * blocks, 0.0f);
}

int32_t PreparedInput::value(int t, int c) const {
  const int8_t* record = q + (c / kActBlock) * q_block_bytes() + int64_t(t) * planes() * kActBlock + c % kActBlock;
  return planes() == 2 ? 256 * int32_t(record[0]) + int32_t(record[kActBlock]) : int32_t(record[0]);
}

const PreparedInput& InputBuffer::prepare(const float* x, int n_tokens, int cols, int64_t x_stride,
                                          Arithmetic arithmetic, const KernelTable& kernels) {
  const int padded = (cols + kActBlock - 1) / kActBlock * kActBlock;
  CF_CHECK(n_tokens <= max_tokens_ && padded <= max_cols_, "cpu kernels: input larger than its buffer");
  const int blocks = padded / kActBlock;
  in_ = PreparedInput{};
  in_.arithmetic = arithmetic;
  in_.n_tokens = n_tokens;
  in_.cols = padded;
  const bool integer = arithmetic != Arithmetic::F32;
  for (int t = 0; t < n_tokens; ++t) {
    float* values = x_.data() + int64_t(t) * padded;
    std::memcpy(values, x + t * x_stride, sizeof(float) * size_t(cols));
    std::memset(values + cols, 0, sizeof(float) * size_t(padded - cols));
    PreparedRow row;
    row.x = values;
    row.cols = padded;
    row.block_sum = block_sum_.data() + int64_t(t) * blocks;
    if (integer) {
      row.block_stride = n_tokens;
      row.q_block_bytes = in_.q_block_bytes();
      row.q = q_.data() + int64_t(t) * in_.planes() * kActBlock;
      row.scale = scale_.data() + t;
      row.scaled_sum = scaled_sum_.data() + t;
      row.scaled_sum16 = scaled_sum16_.data() + t;
    }
    kernels.prepare_row(row, arithmetic);
  }
  in_.x = x_.data();
  in_.block_sum = block_sum_.data();
  if (integer) {
    in_.q = q_.data();
    in_.scale = scale_.data();
    in_.scaled_sum = scaled_sum_.data();
    in_.scaled_sum16 = scaled_sum16_.data();
  }
  return in_;
}

}  // namespace cf::cpu
