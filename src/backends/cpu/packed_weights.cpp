// Repacking (once, at load: plain scalar code) and its inverse for dequantisation. Layouts: packed_weights.hpp.
#include "packed_weights.hpp"

#include <cstring>
#include <string>
#include <vector>

#include "clusterfusion/common/error.hpp"

namespace cf::cpu {

namespace {

constexpr int kVector = 64;  // bytes of one [16 rows][4 bytes] vector

struct Geometry {
  int64_t block_cols, block_bytes;
};

Geometry geometry(DType t) {
  switch (t) {
    case DType::Q4_0: return {32, 288};
    case DType::Q4_1: return {32, 320};
    case DType::Q8_0: return {32, 544};
    case DType::Q4_K: return {256, 2368};
    case DType::Q5_K: return {256, 2880};
    case DType::Q6_K: return {256, 3360};
    case DType::F32: return {32, 32 * kRowGroup * 4};
    case DType::F16:
    case DType::BF16: return {32, 32 * kRowGroup * 2};
  }
  throw Error("pack_matrix: unknown weight type");
}

// The 6-bit scale and min of sub-block j of a Q4_K / Q5_K super-block's 12 scale bytes (ggml's get_scale_min_k4),
// and the inverse.
void scale_min(const uint8_t* q, int j, uint8_t& scale, uint8_t& min) {
  if (j < 4) {
    scale = q[j] & 63;
    min = q[j + 4] & 63;
  } else {
    scale = uint8_t((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
    min = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}
void encode_scale_mins(const uint8_t* scale, const uint8_t* min, uint8_t* q) {
  std::memset(q, 0, 12);
  for (int j = 0; j < 4; ++j) {
    q[j] = uint8_t(scale[j] | ((scale[j + 4] >> 4) << 6));
    q[j + 4] = uint8_t(min[j] | ((min[j + 4] >> 4) << 6));
    q[j + 8] = uint8_t((scale[j + 4] & 0xf) | ((min[j + 4] & 0xf) << 4));
  }
}

// One row's part of a packed block <-> the row's ggml block (`to_packed` picks the direction). `row` is the row's
// index in its group.
void move_row_block(DType t, uint8_t* packed, uint8_t* src, int row, bool to_packed) {
  auto move = [&](int64_t packed_at, int64_t src_at, int64_t n) {
    if (to_packed) {
      std::memcpy(packed + packed_at, src + src_at, size_t(n));
    } else {
      std::memcpy(src + src_at, packed + packed_at, size_t(n));
    }
  };
  auto vectors = [&](int64_t packed_at, int64_t src_at, int count) {
    for (int v = 0; v < count; ++v) move(packed_at + v * kVector + 4 * row, src_at + 4 * v, 4);
  };
  switch (t) {
    case DType::Q4_0:
      move(2 * row, 0, 2);
      vectors(32, 2, 4);
      return;
    case DType::Q4_1:
      move(2 * row, 0, 2);
      move(32 + 2 * row, 2, 2);
      vectors(64, 4, 4);
      return;
    case DType::Q8_0:
      move(2 * row, 0, 2);
      vectors(32, 2, 8);
      return;
    case DType::Q4_K:
    case DType::Q5_K: {
      move(2 * row, 0, 2);
      move(32 + 2 * row, 2, 2);
      uint8_t scale[8], min[8];
      if (to_packed) {
        for (int j = 0; j < 8; ++j) scale_min(src + 4, j, scale[j], min[j]);
      }
      if (to_packed) {
        for (int j = 0; j < 8; ++j) {
          packed[64 + 16 * j + row] = scale[j];
          packed[192 + 16 * j + row] = min[j];
        }
      } else {
        for (int j = 0; j < 8; ++j) {
          scale[j] = packed[64 + 16 * j + row];
          min[j] = packed[192 + 16 * j + row];
        }
        encode_scale_mins(scale, min, src + 4);
      }
      if (t == DType::Q4_K) {
        vectors(320, 16, 32);
      } else {
        vectors(320, 16, 8);   // fifth bits
        vectors(832, 48, 32);  // nibbles
      }
      return;
    }
    case DType::Q6_K:
      move(2 * row, 208, 2);
      for (int k = 0; k < 16; ++k) move(32 + 16 * k + row, 192 + k, 1);
      vectors(288, 0, 32);    // ql
      vectors(2336, 128, 16);  // qh
      return;
    case DType::F32:
    case DType::F16:
    case DType::BF16:
      break;
  }
  throw Error("pack_matrix: not a block type");
}

}  // namespace

PackedMatrix pack_matrix(const WeightMatrix& w) {
  PackedMatrix p;
  p.name = w.name;
  p.dtype = w.dtype;
  p.rows = w.rows;
  p.cols = w.cols;
  const Geometry g = geometry(w.dtype);
  p.block_cols = g.block_cols;
  p.block_bytes = g.block_bytes;
  p.blocks = (w.cols + g.block_cols - 1) / g.block_cols;
  if (w.layout == WeightLayout::CpuPacked) {
    CF_CHECK(w.bytes.size() == size_t(p.groups() * p.group_bytes()), w.name + ": packed size does not match its shape");
    p.data = w.bytes.data();
    return p;
  }
  p.storage = AlignedBytes(size_t(p.groups() * p.group_bytes()));
  uint8_t* out = p.storage.data();
  p.data = out;
  std::memset(out, 0, p.storage.size());
  const bool plain = w.dtype == DType::F32 || w.dtype == DType::F16 || w.dtype == DType::BF16;
  const int64_t src_block_bytes = plain ? 0 : dtype_block_bytes(w.dtype);
  const int elem = w.dtype == DType::F32 ? 4 : 2;
  for (int64_t r = 0; r < w.rows; ++r) {
    const int64_t group = r / kRowGroup;
    const int row = int(r % kRowGroup);
    for (int64_t b = 0; b < p.blocks; ++b) {
      uint8_t* dst = out + (group * p.blocks + b) * p.block_bytes;
      if (plain) {
        for (int64_t c = 0; c < 32 && b * 32 + c < w.cols; ++c)
          std::memcpy(dst + (c * kRowGroup + row) * elem, w.row(r) + (b * 32 + c) * elem, size_t(elem));
      } else {
        move_row_block(w.dtype, dst, const_cast<uint8_t*>(w.row(r)) + b * src_block_bytes, row, true);
      }
    }
  }
  return p;
}

void repack_in_place(WeightMatrix& w) {
  if (w.layout == WeightLayout::CpuPacked || w.empty()) return;
  PackedMatrix p = pack_matrix(w);
  w.bytes = std::move(p.storage);
  w.layout = WeightLayout::CpuPacked;
  w.row_bytes = 0;
}

void PackedMatrix::dequantize_rows(int64_t first, int64_t count, float* out) const {
  CF_CHECK(first >= 0 && count >= 0 && first + count <= rows,
           "dequantize_rows: rows [" + std::to_string(first) + ", +" + std::to_string(count) + ") outside " + name);
  const bool plain = dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16;
  const int elem = dtype == DType::F32 ? 4 : 2;
  std::vector<uint8_t> row_bytes(size_t(dtype_row_bytes(dtype, plain ? cols : blocks * block_cols)));
  for (int64_t r = first; r < first + count; ++r) {
    const int64_t group = r / kRowGroup;
    const int row = int(r % kRowGroup);
    for (int64_t b = 0; b < blocks; ++b) {
      uint8_t* blk = const_cast<uint8_t*>(block(group, b));
      if (plain) {
        for (int64_t c = 0; c < 32 && b * 32 + c < cols; ++c)
          std::memcpy(row_bytes.data() + (b * 32 + c) * elem, blk + (c * kRowGroup + row) * elem, size_t(elem));
      } else {
        move_row_block(dtype, blk, row_bytes.data() + b * dtype_block_bytes(dtype), row, false);
      }
    }
    dequantize(dtype, row_bytes.data(), out + (r - first) * cols, cols);
  }
}

}  // namespace cf::cpu
