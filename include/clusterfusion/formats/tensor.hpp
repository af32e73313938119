// Tensor element types and read-only tensor views over loaded model files.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "clusterfusion/common/dtype.hpp"

namespace cf {

// DType (the storage types of weights) is the project-wide enum of common/dtype.hpp.
inline constexpr int kDTypeCount = 9;

// True for Q4_K, Q5_K and Q6_K.
inline constexpr bool dtype_is_k_quant(DType t) { return t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K; }

std::string_view dtype_name(DType t);
// Inverse of dtype_name ("F32", "Q4_1", ...); nullopt for anything else.
std::optional<DType> dtype_from_name(std::string_view name);
// Elements per block (1 for plain types) and bytes per block.
int64_t dtype_block_elems(DType t);
int64_t dtype_block_bytes(DType t);
// Bytes taken by a row of n elements; n must be a multiple of the block size (checked by the loaders; a violation
// here throws cf::Error).
int64_t dtype_row_bytes(DType t, int64_t n);

// Dequantises n consecutive elements (n a multiple of the block size) starting at a block boundary.
// Results are bit-identical to ggml's / the python gguf package's formulas (fp32, no fused multiply-add).
void dequantize(DType t, const void* src, float* dst, int64_t n);

// A tensor inside a loaded (usually memory-mapped) file. `data` may be unaligned (safetensors offsets are
// arbitrary): read it with memcpy or dequantize(), not through a cast float pointer. Shape is row-major, outermost first: a weight that maps
// in -> out is {out, in} and each of its `out` rows holds `in` contiguous elements (GGUF's ne[] reversed).
struct TensorRef {
  std::string name;  // canonical (GGUF-style) name, e.g. "blk.3.attn_q.weight"
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const;
  int64_t rows() const;  // product of all but the last dim (1 for 1-D)
  int64_t cols() const;  // last dim
  std::string shape_string() const;  // "[576, 1536]"
  int64_t row_bytes() const { return dtype_row_bytes(dtype, cols()); }
  const uint8_t* row_data(int64_t r) const { return data + r * row_bytes(); }
};

// Dequantises rows [row_begin, row_begin + row_count) of t into dst (row_count * t.cols() floats).
// Throws cf::Error when the range is outside the tensor.
void dequantize_rows(const TensorRef& t, int64_t row_begin, int64_t row_count, float* dst);
// The whole tensor as fp32 (numel floats, row-major).
std::vector<float> dequantize_all(const TensorRef& t);
// First row holding a NaN or Inf (for quantised types: a NaN/Inf block scale), or -1 when every value is finite.
// Reads only the exponent bits (and only the scales of quantised blocks), so it runs at memory speed.
int64_t find_non_finite_row(const TensorRef& t);
// Same, and also a plain (F32, F16, BF16) value of magnitude >= limit. Quantised values are bounded by their fp16
// scales (at most 65504 x 128), so for them this is find_non_finite_row.
int64_t find_row_out_of_range(const TensorRef& t, float limit);

}  // namespace cf
