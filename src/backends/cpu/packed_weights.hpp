// Weight matrices in the cpu kernels' layout, built once at load ("repacked"). Rows are taken in groups of
// kRowGroup = 16; a group stores its storage blocks in column order, and inside a block every quantity is stored for
// the 16 rows side by side: scales as 16 fp16 (or bytes), values as 64-byte vectors holding 4 bytes of each row
// (the same 4 bytes a row's block holds at that place, e.g. 8 nibbles). A kernel then loads a sub-block of 16 rows
// with a few vector loads, with no transposition. Same size as the ggml blocks (k-quants: + 4 bytes per row and
// super-block, their 6-bit scales unpacked; plain types: rows padded to 32 columns).
//
// Per type, one packed block of a 16-row group (offsets in bytes; "vectors" are 64 bytes, [16 rows][4 bytes]):
//   Q4_0 (32 cols)   d[16] f16 @0, qs 4 vectors @32: vector k = bytes 4k..4k+3 of each row's 16 nibble bytes
//   Q4_1 (32 cols)   d[16] @0, m[16] @32, qs 4 vectors @64
//   Q8_0 (32 cols)   d[16] @0, qs 8 vectors @32 (vector v = columns 4v..4v+3, signed bytes)
//   Q4_K (256 cols)  d[16] @0, dmin[16] @32, scale[8][16] u8 @64, min[8][16] u8 @192, qs 4 x 8 vectors @320
//                    (vectors 8c .. 8c+7 = the 32 bytes holding sub-blocks 2c (low nibbles) and 2c+1 (high))
//   Q5_K (256 cols)  as Q4_K with qh 8 vectors @320 (the 32 fifth-bit bytes) and qs @832
//   Q6_K (256 cols)  d[16] @0, scale[16][16] i8 @32, ql 4 x 8 vectors @288 (vectors 8(2n + h) .. = ql bytes
//                    64n + 32h ..), qh 2 x 8 vectors @2336 (vectors 8n .. = qh bytes 32n ..)
//   F32 / F16 / BF16 (32 cols)  [32 columns][16 rows] elements
#pragma once
#include <cstdint>

#include "clusterfusion/runtime/weights.hpp"

namespace cf::cpu {

inline constexpr int kRowGroup = 16;

struct PackedMatrix {
  std::string name;
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  int64_t block_cols = 0;   // columns per packed block
  int64_t block_bytes = 0;  // bytes per packed block of a 16-row group
  int64_t blocks = 0;       // packed blocks per row (plain types: ceil(cols / 32))
  const uint8_t* data = nullptr;  // the groups, one after the other
  AlignedBytes storage;           // data's owner when packed here (else data is a CpuPacked WeightMatrix's bytes)

  int64_t groups() const { return (rows + kRowGroup - 1) / kRowGroup; }
  int64_t group_bytes() const { return blocks * block_bytes; }
  const uint8_t* block(int64_t group, int64_t b) const { return data + (group * blocks + b) * block_bytes; }
  // Dequantises rows [first, first + count) into out ([count, cols]), bit-identical to WeightMatrix::dequantize_rows.
  void dequantize_rows(int64_t first, int64_t count, float* out) const;
};

// The packed form of a matrix: a repacked copy of a Rows matrix (rows past the last one of the last group are zero),
// or a view of a CpuPacked one (which must outlive the view).
PackedMatrix pack_matrix(const WeightMatrix& w);

// Rows -> CpuPacked in place (the row bytes are freed).
void repack_in_place(WeightMatrix& w);

}  // namespace cf::cpu
