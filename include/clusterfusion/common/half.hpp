// Host-side fp16 (IEEE binary16) and bf16 storage types with round-to-nearest-even conversions.
// Used by the loaders, the CPU reference and the emulator; the CUDA build maps the device API's f16/bf16 to
// __half/__nv_bfloat16, which have the same bit layout.
#pragma once
#include <bit>
#include <cstdint>
#include <cstring>

namespace cf {

inline float f16_bits_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / nan (payload kept)
  } else if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int shift = 0;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        ++shift;
      }
      mant &= 0x3ffu;
      bits = sign | (uint32_t(127 - 15 + 1 - shift) << 23) | (mant << 13);
    }
  } else {
    bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

inline uint16_t float_to_f16_bits(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or nan
    return uint16_t(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u | ((abs >> 13) & 0x3ffu) : 0u));
  }
  if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: overflow to inf
  if (abs < 0x38800000u) {                                  // result is subnormal or zero
    if (abs < 0x33000000u) return sign;                     // below half the smallest subnormal
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t dropped_bits = 126 - exp;  // f16 subnormal unit is 2^-24
    uint32_t value = mant >> dropped_bits;
    const uint32_t rem = mant & ((1u << dropped_bits) - 1);
    const uint32_t half = 1u << (dropped_bits - 1);
    if (rem > half || (rem == half && (value & 1u))) ++value;
    return uint16_t(sign | value);
  }
  uint32_t value = ((abs >> 13) - ((127 - 15) << 10));
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (value & 1u))) ++value;
  return uint16_t(sign | value);
}

inline float bf16_bits_to_float(uint16_t h) { return std::bit_cast<float>(uint32_t(h) << 16); }

inline uint16_t float_to_bf16_bits(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40u);  // quiet nan
  x += 0x7fffu + ((x >> 16) & 1u);
  return uint16_t(x >> 16);
}

// Storage types: 2 bytes, trivially copyable, explicit conversions only (no silent float math in fp16).
struct half {
  uint16_t bits = 0;
  half() = default;
  explicit half(float f) : bits(float_to_f16_bits(f)) {}
  static half from_bits(uint16_t b) {
    half h;
    h.bits = b;
    return h;
  }
  explicit operator float() const { return f16_bits_to_float(bits); }
};

struct bfloat16 {
  uint16_t bits = 0;
  bfloat16() = default;
  explicit bfloat16(float f) : bits(float_to_bf16_bits(f)) {}
  static bfloat16 from_bits(uint16_t b) {
    bfloat16 h;
    h.bits = b;
    return h;
  }
  explicit operator float() const { return bf16_bits_to_float(bits); }
};

static_assert(sizeof(half) == 2 && sizeof(bfloat16) == 2);

inline float to_float(float x) { return x; }
inline float to_float(half x) { return float(x); }
inline float to_float(bfloat16 x) { return float(x); }

template <typename T>
inline T from_float(float x) {
  return T(x);
}

// Round a float through T and back: the "naive low-precision" reference rounds intermediates with this.
template <typename T>
inline float round_through(float x) {
  return to_float(from_float<T>(x));
}

}  // namespace cf
