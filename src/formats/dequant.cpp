// Dequantisation of ggml block formats to fp32. The per-block loops have fixed trip counts so the compiler
// vectorises them; this file is compiled with -ffp-contract=off so `d * q + m` rounds twice, exactly like ggml's
// reference C code and the python gguf package (bit-exact goldens in tests/data/dequant/).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/half.hpp"
#include "clusterfusion/formats/tensor.hpp"

namespace cf {

namespace {
constexpr int kQBlock = 32;  // elements per Q8_0 / Q4_0 / Q4_1 block

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Branch-free binary16 -> binary32 (exact): shift exponent and mantissa into place, rescale by 2^112 (which also
// normalises subnormals), then patch inf/nan. Same results as cf::f16_bits_to_float, but vectorisable.
inline float f16_to_f32(uint16_t h) {
  const uint32_t magnitude = uint32_t(h & 0x7fffu) << 13;
  float f = std::bit_cast<float>(magnitude) * 0x1p112f;
  uint32_t bits = std::bit_cast<uint32_t>(f);
  if ((h & 0x7c00u) == 0x7c00u) bits = 0x7f800000u | magnitude;  // inf / nan, payload kept
  return std::bit_cast<float>(bits | (uint32_t(h & 0x8000u) << 16));
}

void dequant_f16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load_u16(src + 2 * i));
}

void dequant_bf16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = std::bit_cast<float>(uint32_t(load_u16(src + 2 * i)) << 16);
}

// Q8_0: f16 d, int8 q[32]; x = q * d.
void dequant_q8_0(const uint8_t* src, float* dst, int64_t blocks) {
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* block = src + b * 34;
    const float d = f16_to_f32(load_u16(block));
    const auto* q = reinterpret_cast<const int8_t*>(block + 2);
    float* y = dst + b * kQBlock;
    for (int j = 0; j < kQBlock; ++j) y[j] = float(q[j]) * d;
  }
}

// Q4_0: f16 d, 16 bytes; element j is the low nibble of byte j, element j + 16 the high nibble; x = (q - 8) * d.
void dequant_q4_0(const uint8_t* src, float* dst, int64_t blocks) {
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* block = src + b * 18;
    const float d = f16_to_f32(load_u16(block));
    const uint8_t* q = block + 2;
    float* y = dst + b * kQBlock;
    for (int j = 0; j < kQBlock / 2; ++j) {
      y[j] = float(int(q[j] & 0x0f) - 8) * d;
      y[j + kQBlock / 2] = float(int(q[j] >> 4) - 8) * d;
    }
  }
}

// Q4_1: f16 d, f16 m, 16 bytes (nibbles as Q4_0); x = q * d + m.
void dequant_q4_1(const uint8_t* src, float* dst, int64_t blocks) {
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* block = src + b * 20;
    const float d = f16_to_f32(load_u16(block));
    const float m = f16_to_f32(load_u16(block + 2));
    const uint8_t* q = block + 4;
    float* y = dst + b * kQBlock;
    for (int j = 0; j < kQBlock / 2; ++j) {
      y[j] = float(q[j] & 0x0f) * d + m;
      y[j + kQBlock / 2] = float(q[j] >> 4) * d + m;
    }
  }
}

// ---- k-quants (ggml's dequantize_row_q{4,5,6}_K; super-blocks of 256) ----
constexpr int kKBlock = 256;

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K super-block, packed in 12 bytes.
inline void k_scale_min(int j, const uint8_t* packed, int& scale, int& min) {
  if (j < 4) {
    scale = packed[j] & 63;
    min = packed[j + 4] & 63;
  } else {
    scale = (packed[j + 4] & 0x0f) | ((packed[j - 4] >> 6) << 4);
    min = (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4);
  }
}

// Q4_K: x = d * scale_j * q - dmin * min_j, q the low nibbles of 32 bytes then their high nibbles, per 64 values.
// Q5_K: the same with a fifth bit from qh (bit 2k for the low half of chunk k, bit 2k+1 for the high half).
template <bool kFifthBit>
void dequant_q45_k(const uint8_t* src, float* dst, int64_t blocks) {
  constexpr int kBlockBytes = kFifthBit ? 176 : 144;
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* block = src + b * kBlockBytes;
    const float d = f16_to_f32(load_u16(block));
    const float dmin = f16_to_f32(load_u16(block + 2));
    const uint8_t* packed = block + 4;
    const uint8_t* qh = block + 16;
    const uint8_t* q = block + (kFifthBit ? 48 : 16);
    float* y = dst + b * kKBlock;
    for (int chunk = 0; chunk < 4; ++chunk, q += 32, y += 64) {
      int sc = 0, m = 0;
      k_scale_min(2 * chunk, packed, sc, m);
      const float d1 = d * float(sc), m1 = dmin * float(m);
      k_scale_min(2 * chunk + 1, packed, sc, m);
      const float d2 = d * float(sc), m2 = dmin * float(m);
      for (int l = 0; l < 32; ++l) {
        int lo = q[l] & 0x0f, hi = q[l] >> 4;
        if constexpr (kFifthBit) {
          lo += (qh[l] >> (2 * chunk)) & 1 ? 16 : 0;
          hi += (qh[l] >> (2 * chunk + 1)) & 1 ? 16 : 0;
        }
        y[l] = d1 * float(lo) - m1;
        y[l + 32] = d2 * float(hi) - m2;
      }
    }
  }
}

// Q6_K: ql[128], qh[64], int8 scales[16], f16 d; per 128 values, value l + 32 i takes nibble (i / 2 ? high : low)
// of ql[l + 32 (i % 2)] and bits 2i..2i+1 of qh[l]; x = d * scale * (q - 32), one scale per 16 values.
void dequant_q6_k(const uint8_t* src, float* dst, int64_t blocks) {
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* block = src + b * 210;
    const float d = f16_to_f32(load_u16(block + 208));
    const uint8_t* ql = block;
    const uint8_t* qh = block + 128;
    const auto* scales = reinterpret_cast<const int8_t*>(block + 192);
    float* y = dst + b * kKBlock;
    for (int half = 0; half < 2; ++half, ql += 64, qh += 32, scales += 8, y += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = int((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = int((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * float(scales[is]) * float(q1);
        y[l + 32] = d * float(scales[is + 2]) * float(q2);
        y[l + 64] = d * float(scales[is + 4]) * float(q3);
        y[l + 96] = d * float(scales[is + 6]) * float(q4);
      }
    }
  }
}
}  // namespace

void dequantize(DType t, const void* src, float* dst, int64_t n) {
  CF_CHECK(n >= 0 && n % dtype_block_elems(t) == 0,
           "dequantize: " + std::to_string(n) + " elements is not a whole number of " + std::string(dtype_name(t)) +
               " blocks");
  if (n == 0) return;
  const auto* bytes = static_cast<const uint8_t*>(src);
  switch (t) {
    case DType::F32: std::memcpy(dst, bytes, size_t(n) * sizeof(float)); return;
    case DType::F16: dequant_f16(bytes, dst, n); return;
    case DType::BF16: dequant_bf16(bytes, dst, n); return;
    case DType::Q8_0: dequant_q8_0(bytes, dst, n / kQBlock); return;
    case DType::Q4_0: dequant_q4_0(bytes, dst, n / kQBlock); return;
    case DType::Q4_1: dequant_q4_1(bytes, dst, n / kQBlock); return;
    case DType::Q4_K: dequant_q45_k<false>(bytes, dst, n / kKBlock); return;
    case DType::Q5_K: dequant_q45_k<true>(bytes, dst, n / kKBlock); return;
    case DType::Q6_K: dequant_q6_k(bytes, dst, n / kKBlock); return;
  }
  CF_CHECK(false, "dequantize: unknown DType " + std::to_string(int(t)));
}

}  // namespace cf

namespace cf {

namespace {
// True when the fp16 bits are inf or nan.
inline bool f16_non_finite(uint16_t h) { return (h & 0x7c00u) == 0x7c00u; }

// Magnitude limits as bit patterns: a plain value is out of range when its bits without the sign are >= these
// (NaN and Inf lie above every finite limit).
struct BitLimits {
  uint32_t f32;
  uint16_t f16, bf16;
};

BitLimits bit_limits(float limit) {
  uint32_t l32;
  const float positive = std::fabs(limit);
  std::memcpy(&l32, &positive, 4);
  if (std::isnan(limit) || l32 > 0x7f800000u) l32 = 0x7f800000u;
  // bf16 bits b are the float b << 16: b << 16 >= l32 exactly when b >= ceil(l32 / 2^16).
  const auto bf16 = uint16_t((uint64_t(l32) + 0xffffu) >> 16);
  // fp16: the smallest half at or above the limit; Inf when the limit is past the largest finite half.
  uint16_t f16 = float_to_f16_bits(positive);
  if (f16 < 0x7c00u && f16_bits_to_float(f16) < positive) ++f16;
  return {l32, std::min<uint16_t>(f16, 0x7c00u), std::min<uint16_t>(bf16, 0x7f80u)};
}

bool row_in_range(DType t, const uint8_t* row, int64_t cols, const BitLimits& limit) {
  switch (t) {
    case DType::F32:
      for (int64_t i = 0; i < cols; ++i) {
        uint32_t bits;
        std::memcpy(&bits, row + 4 * i, 4);
        if ((bits & 0x7fffffffu) >= limit.f32) return false;
      }
      return true;
    case DType::F16:
      for (int64_t i = 0; i < cols; ++i)
        if ((load_u16(row + 2 * i) & 0x7fffu) >= limit.f16) return false;
      return true;
    case DType::BF16:
      for (int64_t i = 0; i < cols; ++i)
        if ((load_u16(row + 2 * i) & 0x7fffu) >= limit.bf16) return false;
      return true;
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1: {
      const int64_t block_bytes = dtype_block_bytes(t);
      const int scales = t == DType::Q4_1 ? 2 : 1;
      for (int64_t b = 0; b < cols / kQBlock; ++b)
        for (int s = 0; s < scales; ++s)
          if (f16_non_finite(load_u16(row + b * block_bytes + 2 * s))) return false;
      return true;
    }
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K: {
      // d and dmin lead a Q4_K / Q5_K super-block; Q6_K's d ends it.
      const int64_t block_bytes = dtype_block_bytes(t);
      for (int64_t b = 0; b < cols / 256; ++b) {
        const uint8_t* block = row + b * block_bytes;
        if (t == DType::Q6_K ? f16_non_finite(load_u16(block + 208))
                             : f16_non_finite(load_u16(block)) || f16_non_finite(load_u16(block + 2)))
          return false;
      }
      return true;
    }
  }
  return true;
}
}  // namespace

int64_t find_row_out_of_range(const TensorRef& t, float limit) {
  const BitLimits bits = bit_limits(limit);
  const int64_t rows = t.rows(), cols = t.cols(), stride = t.row_bytes();
  for (int64_t r = 0; r < rows; ++r)
    if (!row_in_range(t.dtype, t.data + r * stride, cols, bits)) return r;
  return -1;
}

int64_t find_non_finite_row(const TensorRef& t) {
  return find_row_out_of_range(t, std::numeric_limits<float>::infinity());
}

}  // namespace cf
