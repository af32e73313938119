// The vector vocabulary of kernels_impl.hpp on AVX2 + FMA + F16C: 8 lanes of fp32 / int32. Included only by
// kernels_avx2.cpp, which alone is compiled with these instructions enabled.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace cf::cpu {
namespace {

struct Avx2 {
  static constexpr int kLanes = 8;
  // Tokens per tile product (accumulators held in registers).
  static constexpr int kTileTokensInt8 = 4, kTileTokensInt16 = 2, kTileTokensF32 = 2;
  static constexpr int kBlockGroupsF32 = 1, kBlockTokensF32 = 1;  // one row group per register block
  // maddubs saturates 16-bit pair sums: idot is exact only for unsigned bytes <= 127.
  // Integer arithmetics: kBlockGroupsInteger row groups x kBlockTokensInt16 / Int8 tokens per register block.
  static constexpr int kBlockGroupsInteger = 1, kBlockTokensInt16 = 2, kBlockTokensInt8 = 4;
  static constexpr bool kExactByteDot = false;
  static constexpr bool kFastLookup16 = false;  // nibbles are extracted and converted (no 16-entry permute)
  using F = __m256;
  using I = __m256i;

  // ---- fp32 ----
  static F fzero() { return _mm256_setzero_ps(); }
  static F fset(float v) { return _mm256_set1_ps(v); }
  static F fload(const float* p) { return _mm256_loadu_ps(p); }
  static void fstore(float* p, F v) { _mm256_storeu_ps(p, v); }
  static F fadd(F a, F b) { return _mm256_add_ps(a, b); }
  static F fsub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F fmul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F fdiv(F a, F b) { return _mm256_div_ps(a, b); }
  static F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static F fmax(F a, F b) { return _mm256_max_ps(a, b); }
  static F fround(F a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static F from_int(I a) { return _mm256_cvtepi32_ps(a); }
  static I to_int(F a) { return _mm256_cvtps_epi32(a); }
  static F as_float(I a) { return _mm256_castsi256_ps(a); }
  static I as_int(F a) { return _mm256_castps_si256(a); }
  static F select_less(F a, F b, F yes, F no) { return _mm256_blendv_ps(no, yes, _mm256_cmp_ps(a, b, _CMP_LT_OQ)); }
  static F half_low(I a) {
    // Keep the low 16 bits of each lane, pack to 8 halves (packus is exact on values < 65536).
    const I low = _mm256_and_si256(a, _mm256_set1_epi32(0xffff));
    const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(low), _mm256_extracti128_si256(low, 1));
    return _mm256_cvtph_ps(packed);
  }
  static F half_high(I a) { return half_low(_mm256_srli_epi32(a, 16)); }
  static F load_halves(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static void store_halves(uint16_t* p, F v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static F load_bf16(const uint16_t* p) {
    return as_float(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
  }
  static F fabs(F a) { return _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }
  static F zero_nan(F a) { return _mm256_and_ps(a, _mm256_cmp_ps(a, a, _CMP_ORD_Q)); }
  static float reduce_add(F v) {
    const __m128 four = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 two = _mm_add_ps(four, _mm_movehl_ps(four, four));
    return _mm_cvtss_f32(_mm_add_ss(two, _mm_movehdup_ps(two)));
  }
  // Lane p = reduce_add(v[p]) for 8 vectors at once: the same halving additions, as a transposing network.
  static F sums_of(const F* v) {
    F t[4], u[2];
    for (int i = 0; i < 4; ++i)
      t[i] = _mm256_add_ps(_mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x20),
                           _mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x31));
    for (int i = 0; i < 2; ++i)
      u[i] = _mm256_add_ps(_mm256_shuffle_ps(t[2 * i], t[2 * i + 1], 0x44), _mm256_shuffle_ps(t[2 * i], t[2 * i + 1], 0xee));
    const F sums = _mm256_add_ps(_mm256_shuffle_ps(u[0], u[1], 0x88), _mm256_shuffle_ps(u[0], u[1], 0xdd));
    // Input p's sum sits in lane 4 (p % 2) + p / 2: put it back in order.
    return _mm256_permutevar8x32_ps(sums, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  }
  static float reduce_max(F v) {
    const __m128 four = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 two = _mm_max_ps(four, _mm_movehl_ps(four, four));
    return _mm_cvtss_f32(_mm_max_ss(two, _mm_movehdup_ps(two)));
  }

  // ---- int32 lanes (also 4 bytes each) ----
  static I izero() { return _mm256_setzero_si256(); }
  static I iset(int32_t v) { return _mm256_set1_epi32(v); }
  static I iload(const void* p) { return _mm256_loadu_si256(static_cast<const I*>(p)); }
  static void istore(void* p, I v) { _mm256_storeu_si256(static_cast<I*>(p), v); }
  static I iadd(I a, I b) { return _mm256_add_epi32(a, b); }
  static I isub(I a, I b) { return _mm256_sub_epi32(a, b); }
  static I iand(I a, I b) { return _mm256_and_si256(a, b); }
  static I ior(I a, I b) { return _mm256_or_si256(a, b); }
  static I ixor(I a, I b) { return _mm256_xor_si256(a, b); }
  template <int n> static I srl(I a) { return _mm256_srli_epi32(a, n); }
  template <int n> static I sll(I a) { return _mm256_slli_epi32(a, n); }
  template <int n> static I sra(I a) { return _mm256_srai_epi32(a, n); }
  static I srl(I a, int n) { return _mm256_srl_epi32(a, _mm_cvtsi32_si128(n)); }
  static I sll(I a, int n) { return _mm256_sll_epi32(a, _mm_cvtsi32_si128(n)); }
  template <int j> static I byte(I a) {
    if constexpr (j == 3) return _mm256_srli_epi32(a, 24);
    return _mm256_and_si256(_mm256_srli_epi32(a, 8 * j), _mm256_set1_epi32(0xff));
  }
  static I load_u8(const uint8_t* p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }
  static I load_i8(const uint8_t* p) { return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))); }
  // The low byte of each lane (values in [-128, 127]) to kLanes bytes at p.
  static void store_low_bytes(int8_t* p, I a) {
    const I words = _mm256_packs_epi32(a, a), bytes = _mm256_packs_epi16(words, words);
    const __m128i both = _mm_unpacklo_epi32(_mm256_castsi256_si128(bytes), _mm256_extracti128_si256(bytes, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), both);
  }
  static int32_t ireduce_add(I a) {
    __m128i four = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    four = _mm_add_epi32(four, _mm_shuffle_epi32(four, 0x4e));
    return _mm_cvtsi128_si32(_mm_add_epi32(four, _mm_shuffle_epi32(four, 0xb1)));
  }
  // acc + sum over each lane's 4 byte pairs of u (unsigned, <= 127 for exactness) times s (signed).
  static I idot(I acc, I u, I s) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
  }
  static I idot_broadcast(I acc, I u, const void* x4) {
    int32_t x;
    std::memcpy(&x, x4, 4);
    return idot(acc, u, _mm256_set1_epi32(x));
  }
};

}  // namespace
}  // namespace cf::cpu
