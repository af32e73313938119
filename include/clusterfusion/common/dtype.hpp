// The element types of the project, one enum for file formats, host code and the device side. Build-agnostic and
// dependency-free: the device API (tensor maps), the kernels' params, the reference and the loaders all name element
// types with it.
//
// Quantised types are ggml's block formats (same bit layout, so GGUF data maps as is). Block facts, names and the
// dequantisers live with the file formats (engine/tensor.hpp); this header holds what every layer needs: the enum,
// the size of the plain types, and which types a device kernel computes in.
#pragma once
#include <cstdint>

namespace cf {

enum class DType : uint8_t {
  F32,
  F16,
  BF16,
  Q8_0,  // blocks of 32: f16 scale + 32 x int8
  Q4_0,  // blocks of 32: f16 scale + 16 bytes of 4-bit values (offset 8)
  Q4_1,  // blocks of 32: f16 scale + f16 min + 16 bytes of 4-bit values
  // ggml's k-quants, super-blocks of 256. The cpu backend computes on them; the device backends have them converted
  // to F16 at load (WeightLoadOptions::k_quant_as).
  Q4_K,  // f16 d, f16 dmin, 12 bytes of 6-bit scales and mins (8 sub-blocks of 32), 128 bytes of 4-bit values
  Q5_K,  // as Q4_K, plus 32 bytes holding the fifth bit of every value
  Q6_K,  // 128 bytes of low 4 bits, 64 bytes of high 2 bits, 16 int8 scales (sub-blocks of 16), f16 d
};

// Bytes of one element of a plain (unblocked) type; 0 for the block formats.
constexpr uint32_t dtype_bytes(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: case DType::BF16: return 2;
    default: return 0;
  }
}

// The 16-bit floating-point types the fused kernels stream and compute in (tensor-core operands).
constexpr bool dtype_is_half(DType t) { return t == DType::F16 || t == DType::BF16; }

}  // namespace cf
