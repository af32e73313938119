// The vector vocabulary of kernels_impl.hpp in plain C++: 8 lanes held in arrays, every operation the exact
// scalar equivalent of the AVX2 / AVX-512 instruction (std::fma for fused multiply-add, round-to-nearest-even
// conversions), so the portable kernels compute the same bits as the vector ones. Included only by
// kernels_portable.cpp.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace cf::cpu {
namespace {

struct Portable {
  static constexpr int kLanes = 8;
  // Tokens per tile product (accumulators held in registers).
  static constexpr int kTileTokensInt8 = 4, kTileTokensInt16 = 2, kTileTokensF32 = 2;
  static constexpr int kBlockGroupsF32 = 1, kBlockTokensF32 = 1;  // one row group per register block
  // Integer arithmetics: kBlockGroupsInteger row groups x kBlockTokensInt16 / Int8 tokens per register block.
  static constexpr int kBlockGroupsInteger = 1, kBlockTokensInt16 = 2, kBlockTokensInt8 = 4;
  static constexpr bool kExactByteDot = true;
  static constexpr bool kFastLookup16 = false;  // nibbles are extracted and converted (no 16-entry permute)
  struct F {
    float v[kLanes];
  };
  struct I {
    int32_t v[kLanes];
  };

  template <typename Op>
  static F fmap(Op op) {
    F r;
    for (int l = 0; l < kLanes; ++l) r.v[l] = op(l);
    return r;
  }
  template <typename Op>
  static I imap(Op op) {
    I r;
    for (int l = 0; l < kLanes; ++l) r.v[l] = op(l);
    return r;
  }

  // Binary16 -> binary32, exact (also subnormals, inf and nan).
  static float half_to_float(uint32_t h) {
    const uint32_t magnitude = (h & 0x7fffu) << 13;
    uint32_t bits = std::bit_cast<uint32_t>(std::bit_cast<float>(magnitude) * 0x1p112f);
    if ((h & 0x7c00u) == 0x7c00u) bits = 0x7f800000u | magnitude | 0x400000u;  // inf / quiet nan
    if ((h & 0x7fffu) == 0x7c00u) bits = 0x7f800000u;
    return std::bit_cast<float>(bits | ((h & 0x8000u) << 16));
  }
  // Round to nearest even, overflow and nan to INT32_MIN (as cvtps2dq).
  static int32_t round_to_int(float x) {
    const float r = std::nearbyint(x);
    return (r >= -2147483648.0f && r < 2147483648.0f) ? int32_t(r) : INT32_MIN;
  }

  // ---- fp32 ----
  static F fzero() { return fset(0.0f); }
  static F fset(float x) { return fmap([&](int) { return x; }); }
  static F fload(const float* p) { return fmap([&](int l) { return p[l]; }); }
  static void fstore(float* p, F a) { std::memcpy(p, a.v, sizeof a.v); }
  static F fadd(F a, F b) { return fmap([&](int l) { return a.v[l] + b.v[l]; }); }
  static F fsub(F a, F b) { return fmap([&](int l) { return a.v[l] - b.v[l]; }); }
  static F fmul(F a, F b) { return fmap([&](int l) { return a.v[l] * b.v[l]; }); }
  static F fdiv(F a, F b) { return fmap([&](int l) { return a.v[l] / b.v[l]; }); }
  static F fma(F a, F b, F c) { return fmap([&](int l) { return std::fma(a.v[l], b.v[l], c.v[l]); }); }
  // maxps: the second operand when either is nan.
  static F fmax(F a, F b) { return fmap([&](int l) { return a.v[l] > b.v[l] ? a.v[l] : b.v[l]; }); }
  static F fround(F a) { return fmap([&](int l) { return std::nearbyint(a.v[l]); }); }
  static F from_int(I a) { return fmap([&](int l) { return float(a.v[l]); }); }
  static I to_int(F a) { return imap([&](int l) { return round_to_int(a.v[l]); }); }
  static F as_float(I a) { return fmap([&](int l) { return std::bit_cast<float>(a.v[l]); }); }
  static I as_int(F a) { return imap([&](int l) { return std::bit_cast<int32_t>(a.v[l]); }); }
  static F select_less(F a, F b, F yes, F no) {
    return fmap([&](int l) { return a.v[l] < b.v[l] ? yes.v[l] : no.v[l]; });
  }
  static F half_low(I a) { return fmap([&](int l) { return half_to_float(uint32_t(a.v[l]) & 0xffffu); }); }
  static F half_high(I a) { return fmap([&](int l) { return half_to_float(uint32_t(a.v[l]) >> 16); }); }
  static F load_halves(const uint16_t* p) { return fmap([&](int l) { return half_to_float(p[l]); }); }
  static F load_bf16(const uint16_t* p) { return fmap([&](int l) { return std::bit_cast<float>(uint32_t(p[l]) << 16); }); }
  static F fabs(F a) { return fmap([&](int l) { return std::fabs(a.v[l]); }); }
  static F zero_nan(F a) { return fmap([&](int l) { return a.v[l] == a.v[l] ? a.v[l] : 0.0f; }); }
  static void store_halves(uint16_t* p, F a);
  static float reduce_add(F a) {
    for (int n = kLanes / 2; n >= 1; n /= 2)
      for (int l = 0; l < n; ++l) a.v[l] = a.v[l] + a.v[l + n];
    return a.v[0];
  }
  static F sums_of(const F* v) { return fmap([&](int l) { return reduce_add(v[l]); }); }
  static float reduce_max(F a) {
    float m = a.v[0];
    for (int l = 1; l < kLanes; ++l) m = a.v[l] > m ? a.v[l] : m;
    return m;
  }

  // ---- int32 lanes (also 4 bytes each) ----
  static I izero() { return iset(0); }
  static I iset(int32_t x) { return imap([&](int) { return x; }); }
  static I iload(const void* p) {
    I r;
    std::memcpy(r.v, p, sizeof r.v);
    return r;
  }
  static void istore(void* p, I a) { std::memcpy(p, a.v, sizeof a.v); }
  // Wrapping arithmetic, as the instructions.
  static I iadd(I a, I b) { return imap([&](int l) { return int32_t(uint32_t(a.v[l]) + uint32_t(b.v[l])); }); }
  static I isub(I a, I b) { return imap([&](int l) { return int32_t(uint32_t(a.v[l]) - uint32_t(b.v[l])); }); }
  static I iand(I a, I b) { return imap([&](int l) { return a.v[l] & b.v[l]; }); }
  static I ior(I a, I b) { return imap([&](int l) { return a.v[l] | b.v[l]; }); }
  static I ixor(I a, I b) { return imap([&](int l) { return a.v[l] ^ b.v[l]; }); }
  template <int n> static I srl(I a) { return srl(a, n); }
  template <int n> static I sll(I a) { return sll(a, n); }
  template <int n> static I sra(I a) { return imap([&](int l) { return a.v[l] >> n; }); }
  static I srl(I a, int n) { return imap([&](int l) { return int32_t(uint32_t(a.v[l]) >> n); }); }
  static I sll(I a, int n) { return imap([&](int l) { return int32_t(uint32_t(a.v[l]) << n); }); }
  template <int j> static I byte(I a) { return imap([&](int l) { return int32_t((uint32_t(a.v[l]) >> (8 * j)) & 0xffu); }); }
  static I load_u8(const uint8_t* p) { return imap([&](int l) { return int32_t(p[l]); }); }
  static I load_i8(const uint8_t* p) { return imap([&](int l) { return int32_t(int8_t(p[l])); }); }
  static void store_low_bytes(int8_t* p, I a) {
    for (int l = 0; l < kLanes; ++l) p[l] = int8_t(a.v[l]);
  }
  static int32_t ireduce_add(I a) {
    uint32_t sum = 0;
    for (int l = 0; l < kLanes; ++l) sum += uint32_t(a.v[l]);
    return int32_t(sum);
  }
  static I idot_broadcast(I acc, I u, const void* x4) {
    int32_t x;
    std::memcpy(&x, x4, 4);
    return idot(acc, u, iset(x));
  }
  static I idot(I acc, I u, I s) {
    return imap([&](int l) {
      int32_t sum = acc.v[l];
      for (int b = 0; b < 4; ++b) sum += int32_t((uint32_t(u.v[l]) >> (8 * b)) & 0xffu) * int32_t(int8_t(uint32_t(s.v[l]) >> (8 * b)));
      return sum;
    });
  }
};

// Binary32 -> binary16, round to nearest even (as vcvtps2ph with that rounding).
inline void Portable::store_halves(uint16_t* p, F a) {
  for (int l = 0; l < kLanes; ++l) {
    const uint32_t x = std::bit_cast<uint32_t>(a.v[l]);
    const uint32_t sign = (x >> 16) & 0x8000u, abs = x & 0x7fffffffu;
    uint32_t h;
    if (abs > 0x7f800000u) {
      h = 0x7e00u | ((abs >> 13) & 0x3ffu);  // quiet nan, payload kept
    } else if (abs >= 0x477ff000u) {
      h = 0x7c00u;  // inf, or rounds to >= 65520
    } else if (abs < 0x38800000u) {  // subnormal or zero
      const uint32_t shift = 126 - (abs >> 23);
      if (shift > 24) {
        h = 0;
      } else {
        const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
        h = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u))) ++h;
      }
    } else {
      h = (abs >> 13) - ((127 - 15) << 10);
      const uint32_t rem = abs & 0x1fffu;
      if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
    }
    p[l] = uint16_t(sign | h);
  }
}

}  // namespace
}  // namespace cf::cpu
