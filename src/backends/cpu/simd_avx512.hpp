// The vector vocabulary of kernels_impl.hpp on AVX-512 (F/BW/VL/DQ + VNNI): 16 lanes of fp32 / int32. Included
// only by kernels_avx512.cpp, which alone is compiled with these instructions enabled.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace cf::cpu {
namespace {

struct Avx512 {
  static constexpr int kLanes = 16;
  // Tokens per tile product (accumulators held in registers).
  static constexpr int kTileTokensInt8 = 12, kTileTokensInt16 = 6, kTileTokensF32 = 5;
  // fp32 tiles of larger batches: kBlockGroupsF32 row groups x kBlockTokensF32 tokens per register block.
  static constexpr int kBlockGroupsF32 = 2, kBlockTokensF32 = 4;
  // Integer arithmetics: kBlockGroupsInteger row groups x kBlockTokensInt16 / Int8 tokens per register block.
  static constexpr int kBlockGroupsInteger = 2, kBlockTokensInt16 = 4, kBlockTokensInt8 = 6;
  static constexpr bool kExactByteDot = true;  // idot is exact for every unsigned byte (VNNI)
  using F = __m512;
  using I = __m512i;

  // ---- fp32 ----
  static F fzero() { return _mm512_setzero_ps(); }
  static F fset(float v) { return _mm512_set1_ps(v); }
  static F fload(const float* p) { return _mm512_loadu_ps(p); }
  static void fstore(float* p, F v) { _mm512_storeu_ps(p, v); }
  static F fadd(F a, F b) { return _mm512_add_ps(a, b); }
  static F fsub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F fmul(F a, F b) { return _mm512_mul_ps(a, b); }
  static F fdiv(F a, F b) { return _mm512_div_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }  // a * b + c, one rounding
  static F fmax(F a, F b) { return _mm512_max_ps(a, b); }
  static F fround(F a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static F from_int(I a) { return _mm512_cvtepi32_ps(a); }
  static I to_int(F a) { return _mm512_cvtps_epi32(a); }  // round to nearest even
  static F as_float(I a) { return _mm512_castsi512_ps(a); }
  static I as_int(F a) { return _mm512_castps_si512(a); }
  // Lanes where a < b take `yes`, the others `no`.
  static F select_less(F a, F b, F yes, F no) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), no, yes);
  }
  // fp16 in the low / high 16 bits of each int32 lane, converted exactly.
  static F half_low(I a) { return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(a)); }
  static F half_high(I a) { return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(a, 16))); }
  static F load_halves(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static void store_halves(uint16_t* p, F v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static F load_bf16(const uint16_t* p) {
    return as_float(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
  }
  static F fabs(F a) { return _mm512_abs_ps(a); }
  static F zero_nan(F a) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a, a, _CMP_ORD_Q), a); }
  // Sum / max of the lanes by halving: lane i += lane i + n/2 for n = 16, 8, 4, 2.
  static float reduce_add(F v) {
    const __m256 eight = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    const __m128 four = _mm_add_ps(_mm256_castps256_ps128(eight), _mm256_extractf128_ps(eight, 1));
    const __m128 two = _mm_add_ps(four, _mm_movehl_ps(four, four));
    return _mm_cvtss_f32(_mm_add_ss(two, _mm_movehdup_ps(two)));
  }
  // Lane p = reduce_add(v[p]) for 16 vectors at once: the same halving additions, as a transposing network.
  static F sums_of(const F* v) {
    F t[8], u[4], w[2];
    for (int i = 0; i < 8; ++i)
      t[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44), _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xee));
    for (int i = 0; i < 4; ++i)
      u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0x88), _mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0xdd));
    for (int i = 0; i < 2; ++i)
      w[i] = _mm512_add_ps(_mm512_shuffle_ps(u[2 * i], u[2 * i + 1], 0x44), _mm512_shuffle_ps(u[2 * i], u[2 * i + 1], 0xee));
    const F sums = _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], 0x88), _mm512_shuffle_ps(w[0], w[1], 0xdd));
    // Input p's sum sits in lane 4 (p % 4) + p / 4: put it back in order.
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), sums);
  }
  static float reduce_max(F v) { return _mm512_reduce_max_ps(v); }

  // ---- int32 lanes (also 4 bytes each) ----
  static I izero() { return _mm512_setzero_si512(); }
  static I iset(int32_t v) { return _mm512_set1_epi32(v); }
  static I iload(const void* p) { return _mm512_loadu_si512(p); }
  static void istore(void* p, I v) { _mm512_storeu_si512(p, v); }
  static I iadd(I a, I b) { return _mm512_add_epi32(a, b); }
  static I isub(I a, I b) { return _mm512_sub_epi32(a, b); }
  static I iand(I a, I b) { return _mm512_and_si512(a, b); }
  static I ior(I a, I b) { return _mm512_or_si512(a, b); }
  static I ixor(I a, I b) { return _mm512_xor_si512(a, b); }
  template <int n> static I srl(I a) { return _mm512_srli_epi32(a, n); }
  template <int n> static I sll(I a) { return _mm512_slli_epi32(a, n); }
  template <int n> static I sra(I a) { return _mm512_srai_epi32(a, n); }
  static I srl(I a, int n) { return _mm512_srl_epi32(a, _mm_cvtsi32_si128(n)); }
  static I sll(I a, int n) { return _mm512_sll_epi32(a, _mm_cvtsi32_si128(n)); }
  // The low byte of each lane to kLanes bytes at p.
  static void store_low_bytes(int8_t* p, I a) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(a)); }
  static int32_t ireduce_add(I a) { return _mm512_reduce_add_epi32(a); }
  // Byte j of each lane, zero-extended: one dot product with the unit vector e_j (one instruction, where shift and
  // mask take two).
  template <int j> static I byte(I a) { return _mm512_dpbusd_epi32(_mm512_setzero_si512(), a, _mm512_set1_epi32(1 << (8 * j))); }
  // table[low 4 bits of each lane] (one permute: faster than extracting and converting a nibble).
  static constexpr bool kFastLookup16 = true;
  static F lookup16(I index, const float* table) { return _mm512_permutexvar_ps(index, _mm512_loadu_ps(table)); }
  // kLanes bytes, zero- / sign-extended to the lanes.
  static I load_u8(const uint8_t* p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static I load_i8(const uint8_t* p) { return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  // acc + sum over the 4 byte pairs of each lane of (unsigned byte of u) * (signed byte of s).
  static I idot(I acc, I u, I s) { return _mm512_dpbusd_epi32(acc, u, s); }
  // The same with s = the 4 bytes at x4 in every lane, as one instruction (an embedded broadcast, which compilers do
  // not form for vpdpbusd on their own).
  static I idot_broadcast(I acc, I u, const void* x4) {
    asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(u), "m"(*static_cast<const int32_t*>(x4)));
    return acc;
  }
};

}  // namespace
}  // namespace cf::cpu
