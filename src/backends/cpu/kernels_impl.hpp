// The kernels of kernels.hpp written once over a vector vocabulary V (simd_portable.hpp, simd_avx2.hpp,
// simd_avx512.hpp). Each kernels_<level>.cpp includes this file after its vocabulary and instantiates the table, so
// every level runs the same operations in the same order (the order kernels.hpp defines) and computes the same bits.
// Everything here lives in an anonymous namespace: each level's copy stays in its own translation unit.
#pragma once
#include <array>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "kernels.hpp"

// Full unrolling of the short fixed loops of the tile products (their accumulators must stay in registers).
#if defined(__clang__)
#define CF_UNROLL(n) _Pragma("unroll")
#elif defined(__GNUC__)
#define CF_PRAGMA(x) _Pragma(#x)
#define CF_UNROLL(n) CF_PRAGMA(GCC unroll n)
#else
#define CF_UNROLL(n)
#endif
// Helpers whose results must stay in registers (a call would pass them through memory).
#if defined(__GNUC__)
#define CF_ALWAYS_INLINE [[gnu::always_inline]] inline
#else
#define CF_ALWAYS_INLINE inline
#endif


namespace cf::cpu {
namespace {

// ---- small helpers ------------------------------------------------------------------------------------------------

template <class V>
typename V::F fneg(typename V::F a) {
  return V::as_float(V::ixor(V::as_int(a), V::iset(INT32_MIN)));
}

template <class V>
typename V::F fmin(typename V::F a, typename V::F limit) {
  return V::select_less(limit, a, limit, a);
}

inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// e^x for each lane: x = n ln2 + r with |r| <= ln2 / 2, e^r by a degree-6 polynomial (relative error ~2e-7), 2^n
// through the exponent bits. Inputs are clamped to [-87, 88]; below -87 the result is 0.
template <class V>
typename V::F exp_approx(typename V::F x) {
  using F = typename V::F;
  const F low = V::fset(-87.0f);
  const F clamped = fmin<V>(V::fmax(x, low), V::fset(88.0f));
  const F n = V::fround(V::fmul(clamped, V::fset(1.44269504088896341f)));
  F r = V::fma(fneg<V>(n), V::fset(0.693359375f), clamped);
  r = V::fma(fneg<V>(n), V::fset(-2.12194440e-4f), r);
  F p = V::fset(1.0f / 720.0f);
  p = V::fma(p, r, V::fset(1.0f / 120.0f));
  p = V::fma(p, r, V::fset(1.0f / 24.0f));
  p = V::fma(p, r, V::fset(1.0f / 6.0f));
  p = V::fma(p, r, V::fset(0.5f));
  p = V::fma(p, r, V::fset(1.0f));
  p = V::fma(p, r, V::fset(1.0f));
  const F two_n = V::as_float(V::template sll<23>(V::iadd(V::to_int(n), V::iset(127))));
  return V::select_less(x, low, V::fzero(), V::fmul(p, two_n));
}

// Sum of 16 virtual lanes held in 16 / kLanes vectors, by halving (lane i += lane i + 8, + 4, + 2, + 1).
template <class V>
float sum16(const typename V::F* v) {
  if constexpr (V::kLanes == 16) {
    return V::reduce_add(v[0]);
  } else {
    static_assert(V::kLanes == 8);
    return V::reduce_add(V::fadd(v[0], v[1]));
  }
}

// ---- weight types: reading a packed block (packed_weights.hpp) for one lane group ---------------------------------
// kSub: columns per sub-block; kOffset: a value is (unsigned byte - kOffset); kHasMin: a per-sub-block min b.
// scales(): a (and b) of sub-block `sub` of the block for lanes h*kLanes ..; values(): the bytes of its columns
// 4v .. 4v+3 for those lanes.

template <class V>
const uint8_t* lanes(const uint8_t* vector, int h) {
  return vector + h * V::kLanes * 4;
}
template <class V>
typename V::F halves(const uint8_t* p, int h) {
  return V::load_halves(reinterpret_cast<const uint16_t*>(p) + h * V::kLanes);
}
template <class V>
typename V::I low_nibbles(typename V::I raw) {
  return V::iand(raw, V::iset(0x0f0f0f0f));
}
template <class V>
typename V::I high_nibbles(typename V::I raw) {
  return V::iand(V::template srl<4>(raw), V::iset(0x0f0f0f0f));
}

// Q4_0 (values q - 8) and Q4_1 (values d q + m): d[16] (and m[16]), then the nibble vectors; vector k holds columns
// 4k .. 4k+3 in its low nibbles and 16 + 4k .. in its high ones.
template <bool kWithMin>
struct Q4Fmt {
  static constexpr int kSub = 32, kBlockCols = 32, kOffset = kWithMin ? 0 : 8;
  static constexpr bool kHasMin = kWithMin, kPlain = false;
  static constexpr int kValues = kWithMin ? 64 : 32;  // byte offset of the nibbles
  template <class V>
  static void scales(const uint8_t* blk, int, int h, typename V::F& a, typename V::F& b) {
    a = halves<V>(blk, h);
    if constexpr (kWithMin) b = halves<V>(blk + 32, h);
  }
  template <class V>
  static typename V::I values(const uint8_t* blk, int, int h, int v) {
    const typename V::I raw = V::iload(lanes<V>(blk + kValues + (v % 4) * 64, h));
    return v < 4 ? low_nibbles<V>(raw) : high_nibbles<V>(raw);
  }
  // The same nibbles unmasked: column 4v + j at bit shift + 8j.
  static constexpr bool kNibbles = true;
  template <class V>
  static typename V::I raw_nibbles(const uint8_t* blk, int, int h, int v, int& shift) {
    shift = v < 4 ? 0 : 4;
    return V::iload(lanes<V>(blk + kValues + (v % 4) * 64, h));
  }
};
using Q4_0Fmt = Q4Fmt<false>;
using Q4_1Fmt = Q4Fmt<true>;

// Q8_0's signed bytes are offset to unsigned ones (x + 128).
struct Q8_0Fmt {
  static constexpr int kSub = 32, kBlockCols = 32, kOffset = 128;
  static constexpr bool kHasMin = false, kPlain = false;
  template <class V>
  static void scales(const uint8_t* blk, int, int h, typename V::F& a, typename V::F&) {
    a = halves<V>(blk, h);
  }
  template <class V>
  static typename V::I values(const uint8_t* blk, int, int h, int v) {
    return V::ixor(V::iload(lanes<V>(blk + 32 + v * 64, h)), V::iset(int32_t(0x80808080u)));
  }
};

// a = d * scale_j, b = -(dmin * min_j) of sub-block j of a Q4_K / Q5_K super-block.
template <class V>
void k_quant_scales(const uint8_t* blk, int j, int h, typename V::F& a, typename V::F& b) {
  a = V::fmul(halves<V>(blk, h), V::from_int(V::load_u8(blk + 64 + 16 * j + h * V::kLanes)));
  b = fneg<V>(V::fmul(halves<V>(blk + 32, h), V::from_int(V::load_u8(blk + 192 + 16 * j + h * V::kLanes))));
}

// Q4_K and Q5_K: sub-block j's nibbles are the low (j even) or high (j odd) halves of the 32 bytes for sub-blocks
// j / 2 * 2 ..; Q5_K adds bit j of each column's fifth-bit byte.
template <bool kFifthBit>
struct KQuantFmt {
  static constexpr int kSub = 32, kBlockCols = 256, kOffset = 0;
  static constexpr bool kHasMin = true, kPlain = false;
  static constexpr int kNibbleBytes = kFifthBit ? 832 : 320;  // byte offsets in the packed block
  static constexpr int kFifthBits = 320;
  template <class V>
  static void scales(const uint8_t* blk, int j, int h, typename V::F& a, typename V::F& b) {
    k_quant_scales<V>(blk, j, h, a, b);
  }
  template <class V>
  static typename V::I values(const uint8_t* blk, int j, int h, int v) {
    const typename V::I raw = V::iload(lanes<V>(blk + kNibbleBytes + (8 * (j / 2) + v) * 64, h));
    const typename V::I nibbles = j % 2 == 0 ? low_nibbles<V>(raw) : high_nibbles<V>(raw);
    if constexpr (!kFifthBit) return nibbles;
    const typename V::I bits = V::iload(lanes<V>(blk + kFifthBits + v * 64, h));
    return V::ior(nibbles, V::template sll<4>(V::iand(V::srl(bits, j), V::iset(0x01010101))));
  }
  static constexpr bool kNibbles = !kFifthBit;
  template <class V>
  static typename V::I raw_nibbles(const uint8_t* blk, int j, int h, int v, int& shift) {
    shift = j % 2 == 0 ? 0 : 4;
    return V::iload(lanes<V>(blk + kNibbleBytes + (8 * (j / 2) + v) * 64, h));
  }
};
using Q4_KFmt = KQuantFmt<false>;
using Q5_KFmt = KQuantFmt<true>;

// Q6_K: sub-blocks of 16 columns; 32-column group g = 4n + p takes low (p < 2) or high nibbles of ql bytes
// 64n + 32 (p % 2) .. and bits 2p, 2p+1 of qh bytes 32n ...
struct Q6_KFmt {
  static constexpr int kSub = 16, kBlockCols = 256, kOffset = 32;
  static constexpr bool kHasMin = false, kPlain = false;
  template <class V>
  static void scales(const uint8_t* blk, int k, int h, typename V::F& a, typename V::F&) {
    a = V::fmul(halves<V>(blk, h), V::from_int(V::load_i8(blk + 32 + 16 * k + h * V::kLanes)));
  }
  template <class V>
  static typename V::I values(const uint8_t* blk, int k, int h, int v) {
    const int g = k / 2, n = g / 4, p = g % 4, vec = 4 * (k % 2) + v;
    const typename V::I low = V::iload(lanes<V>(blk + 288 + (8 * (2 * n + p % 2) + vec) * 64, h));
    const typename V::I high = V::iload(lanes<V>(blk + 2336 + (8 * n + vec) * 64, h));
    const typename V::I nibble = p < 2 ? low_nibbles<V>(low) : high_nibbles<V>(low);
    return V::ior(nibble, V::template sll<4>(V::iand(V::srl(high, 2 * p), V::iset(0x03030303))));
  }
};

// Plain types: packed blocks of [32 columns][16 rows].
template <DType kType>
struct PlainFmt {
  static constexpr int kSub = 32, kBlockCols = 32, kOffset = 0;
  static constexpr bool kHasMin = false, kPlain = true;
  template <class V>
  static typename V::F column(const uint8_t* blk, int c, int h) {
    const int at = c * kRowGroup + h * V::kLanes;
    if constexpr (kType == DType::F32) return V::fload(reinterpret_cast<const float*>(blk) + at);
    if constexpr (kType == DType::F16) return V::load_halves(reinterpret_cast<const uint16_t*>(blk) + at);
    return V::load_bf16(reinterpret_cast<const uint16_t*>(blk) + at);
  }
};

// ---- products of a 16-row group with a few tokens -----------------------------------------------------------------

constexpr int kTokenBlock = 64;  // tokens whose accumulators a row group keeps at once
constexpr int kTokenBlockFloats = kTokenBlock * kRowGroup;


template <class Fmt>
constexpr int subs_per_block() {
  return Fmt::kBlockCols / Fmt::kSub;
}

// Asks for the weights kPrefetchBytes past a block (a row group's blocks, then the next group's, are one stream), in
// case a decode batch consumes them faster than the hardware prefetcher runs ahead (A/B on the 2-core VM: generation
// +5-10%, within its noise).
constexpr int64_t kPrefetchBytes = 1024;
inline void prefetch_ahead(const uint8_t* block, int64_t bytes) {
#if defined(__GNUC__)
  for (int64_t at = 0; at < bytes; at += 64) __builtin_prefetch(block + kPrefetchBytes + at);
#else
  (void)block, (void)bytes;
#endif
}

// One weight vector's byte dot product into dot: with the 4 activation bytes at x4 broadcast (the embedded form for
// one group; the register xb, broadcast once, for several). AVX2's byte products saturate above 127: Q8_0's bytes
// (up to 255) go in as two nibbles there.
template <class V, class Fmt, int G>
CF_ALWAYS_INLINE typename V::I byte_dot(typename V::I dot, typename V::I q, const int8_t* x4, typename V::I xb) {
  if constexpr (Fmt::kOffset == 128 && !V::kExactByteDot) {
    const typename V::I high = V::idot(V::izero(), high_nibbles<V>(q), xb);
    return V::iadd(V::idot(dot, low_nibbles<V>(q), xb), V::template sll<4>(high));
  } else if constexpr (G == 1) {
    return V::idot_broadcast(dot, q, x4);
  } else {
    return V::idot(dot, q, xb);
  }
}

// int16 / int8: rows of row groups group .. group + G - 1 times tokens t0 .. t0+T-1, accumulated into
// acc[g][t][16] (group stride kTokenBlockFloats). Each loaded weight vector feeds the byte dot products of every
// plane and token, each broadcast activation quad those of every group; a tile's activations of one block are one
// stretch of records (one base address, constant offsets). Every group's operations are those of G = 1.
template <class V, class Fmt, int T, Arithmetic kArith, int G>
void integer_group_product(const PackedMatrix& w, int64_t group, const PreparedInput& in, int t0, float* acc) {
  using F = typename V::F;
  using I = typename V::I;
  constexpr int P = byte_planes(kArith);
  constexpr int kRecord = P * kActBlock;
  constexpr bool kMinTerm = Fmt::kHasMin || Fmt::kOffset != 0;
  const int64_t n = in.n_tokens;
  for (int h = 0; h < kRowGroup / V::kLanes; ++h) {
    F sum[G][T];
    CF_UNROLL(2)
    for (int g = 0; g < G; ++g) {
      CF_UNROLL(16)
      for (int t = 0; t < T; ++t) sum[g][t] = V::fload(acc + g * kTokenBlockFloats + t * kRowGroup + h * V::kLanes);
    }
    for (int64_t b = 0; b < w.blocks; ++b) {
      const uint8_t* blk[G];
      CF_UNROLL(2)
      for (int g = 0; g < G; ++g) {
        blk[g] = w.block(group + g, b);
        prefetch_ahead(blk[g], w.block_bytes);
      }
      for (int s = 0; s < subs_per_block<Fmt>(); ++s) {
        const int64_t col = b * Fmt::kBlockCols + s * Fmt::kSub, block = col / kActBlock;
        // Token t0 + t, plane p at x + t kRecord + p 32.
        const int8_t* x = in.q + block * in.q_block_bytes() + t0 * kRecord + col % kActBlock;
        I dot[G][P][T];
        CF_UNROLL(2)
        for (int g = 0; g < G; ++g) {
          CF_UNROLL(2)
          for (int p = 0; p < P; ++p) {
            CF_UNROLL(16)
            for (int t = 0; t < T; ++t) dot[g][p][t] = V::izero();
          }
        }
        CF_UNROLL(8)
        for (int v = 0; v < Fmt::kSub / 4; ++v) {
          I q[G];
          CF_UNROLL(2)
          for (int g = 0; g < G; ++g) q[g] = Fmt::template values<V>(blk[g], s, h, v);
          CF_UNROLL(2)
          for (int p = 0; p < P; ++p) {
            CF_UNROLL(16)
            for (int t = 0; t < T; ++t) {
              const int8_t* x4 = x + t * kRecord + p * kActBlock + 4 * v;
              const I xb = G > 1 || !V::kExactByteDot ? V::iset(load_i32(x4)) : V::izero();
              CF_UNROLL(2)
              for (int g = 0; g < G; ++g) dot[g][p][t] = byte_dot<V, Fmt, G>(dot[g][p][t], q[g], x4, xb);
            }
          }
        }
        const float* scale = in.scale + block * n + t0;
        const float* scaled_sum = Fmt::kSub == 16 ? in.scaled_sum16 + (col / 16) * n + t0 : in.scaled_sum + block * n + t0;
        CF_UNROLL(2)
        for (int g = 0; g < G; ++g) {
          F a, m;
          Fmt::template scales<V>(blk[g], s, h, a, m);
          // Values q - offset: the offset as a min of -offset * a (exact: a power of two).
          if constexpr (Fmt::kOffset != 0) m = V::fmul(a, V::fset(-float(Fmt::kOffset)));
          CF_UNROLL(16)
          for (int t = 0; t < T; ++t) {
            const I d = P == 2 ? V::iadd(V::template sll<8>(dot[g][0][t]), dot[g][P - 1][t]) : dot[g][0][t];
            sum[g][t] = V::fma(a, V::fmul(V::from_int(d), V::fset(scale[t])), sum[g][t]);
            if constexpr (kMinTerm) sum[g][t] = V::fma(m, V::fset(scaled_sum[t]), sum[g][t]);
          }
        }
      }
    }
    CF_UNROLL(2)
    for (int g = 0; g < G; ++g) {
      CF_UNROLL(16)
      for (int t = 0; t < T; ++t) V::fstore(acc + g * kTokenBlockFloats + t * kRowGroup + h * V::kLanes, sum[g][t]);
    }
  }
}

// 4-bit values as fp32 (the nibble minus the format's offset), for levels with a 16-entry lookup.
template <int kOffset>
inline constexpr std::array<float, 16> kNibbleValues = [] {
  std::array<float, 16> t{};
  for (int i = 0; i < 16; ++i) t[size_t(i)] = float(i - kOffset);
  return t;
}();
template <class Fmt>
concept NibbleFormat = Fmt::kNibbles;
template <class V, class Fmt>
constexpr bool kLookupNibbles = V::kFastLookup16 && NibbleFormat<Fmt>;

// The fp32 weights of columns 4v .. 4v+3 of sub-block s (integer values minus the offset for block types).
template <class V, class Fmt>
void column_quad(const uint8_t* blk, int s, int h, int v, typename V::F w[4]) {
  if constexpr (Fmt::kPlain) {
    CF_UNROLL(4)
    for (int j = 0; j < 4; ++j) w[j] = Fmt::template column<V>(blk, 4 * v + j, h);
  } else if constexpr (kLookupNibbles<V, Fmt>) {
    int shift = 0;
    const typename V::I raw = Fmt::template raw_nibbles<V>(blk, s, h, v, shift);
    const float* table = kNibbleValues<Fmt::kOffset>.data();
    CF_UNROLL(4)
    for (int j = 0; j < 4; ++j) w[j] = V::lookup16(V::srl(raw, shift + 8 * j), table);
  } else {
    const typename V::I q = Fmt::template values<V>(blk, s, h, v), offset = V::iset(Fmt::kOffset);
    w[0] = V::from_int(V::isub(V::template byte<0>(q), offset));
    w[1] = V::from_int(V::isub(V::template byte<1>(q), offset));
    w[2] = V::from_int(V::isub(V::template byte<2>(q), offset));
    w[3] = V::from_int(V::isub(V::template byte<3>(q), offset));
  }
}

// Where the fp32 path reads a row group's weights: the packed blocks (converting as it goes: decode batches), or an
// fp32 tile converted once and shared by every tile of tokens (larger batches). Both give the same values.
template <class V, class Fmt>
struct PackedSource {
  const PackedMatrix* w;
  int64_t group;
  void quad(int64_t b, int s, int h, int v, typename V::F out[4]) const {
    column_quad<V, Fmt>(w->block(group, b), s, h, v, out);
  }
  void scales(int64_t b, int s, int h, typename V::F& a, typename V::F& m) const {
    Fmt::template scales<V>(w->block(group, b), s, h, a, m);
  }
};

// A tile of blocks [first, first + n) of a row group: per sub-block a[16], m[16], then [kSub columns][16 rows].
template <class Fmt>
constexpr int kTileSubFloats = 2 * kRowGroup + Fmt::kSub * kRowGroup;
constexpr int kTileCols = 256;  // columns per tile: 16 KB of weights

template <class V, class Fmt>
struct TileSource {
  float* tile;
  int64_t first;
  float* sub_block(int64_t b, int s) const {
    return tile + ((b - first) * subs_per_block<Fmt>() + s) * kTileSubFloats<Fmt>;
  }
  void quad(int64_t b, int s, int h, int v, typename V::F out[4]) const {
    const float* cols = sub_block(b, s) + 2 * kRowGroup + h * V::kLanes;
    CF_UNROLL(4)
    for (int j = 0; j < 4; ++j) out[j] = V::fload(cols + (4 * v + j) * kRowGroup);
  }
  void scales(int64_t b, int s, int h, typename V::F& a, typename V::F& m) const {
    a = V::fload(sub_block(b, s) + h * V::kLanes);
    m = V::fload(sub_block(b, s) + kRowGroup + h * V::kLanes);
  }
  // Converts blocks [first, first + n) of a row group into the tile.
  void fill(const PackedMatrix& w, int64_t group, int64_t n) const {
    for (int64_t b = first; b < first + n; ++b) {
      for (int s = 0; s < subs_per_block<Fmt>(); ++s) {
        float* sub = sub_block(b, s);
        for (int h = 0; h < kRowGroup / V::kLanes; ++h) {
          typename V::F a = V::fset(1.0f), m = V::fzero(), quad[4];
          if constexpr (!Fmt::kPlain) Fmt::template scales<V>(w.block(group, b), s, h, a, m);
          V::fstore(sub + h * V::kLanes, a);
          V::fstore(sub + kRowGroup + h * V::kLanes, m);
          for (int v = 0; v < Fmt::kSub / 4; ++v) {
            column_quad<V, Fmt>(w.block(group, b), s, h, v, quad);
            for (int j = 0; j < 4; ++j) V::fstore(sub + 2 * kRowGroup + (4 * v + j) * kRowGroup + h * V::kLanes, quad[j]);
          }
        }
      }
    }
  }
};

// x[t] = column `col` of token t0 + t's activations.
template <int T>
CF_ALWAYS_INLINE void token_columns(const PreparedInput& in, int t0, int64_t col, const float* (&x)[T]) {
  CF_UNROLL(16)
  for (int t = 0; t < T; ++t) x[t] = in.x + int64_t(t0 + t) * in.cols + col;
}

// fp32: blocks [b0, b1) of a row group times tokens t0 .. t0+T-1, accumulated into acc[t][16].
template <class V, class Fmt, int T, class Source>
void f32_group_product(const Source& src, int64_t b0, int64_t b1, const PreparedInput& in, int t0, float* acc) {
  using F = typename V::F;
  const int blocks_per_row = in.cols / kActBlock;
  for (int h = 0; h < kRowGroup / V::kLanes; ++h) {
    F sum[T];
    CF_UNROLL(16)
    for (int t = 0; t < T; ++t) sum[t] = V::fload(acc + t * kRowGroup + h * V::kLanes);
    for (int64_t b = b0; b < b1; ++b) {
      for (int s = 0; s < subs_per_block<Fmt>(); ++s) {
        const int64_t col = b * Fmt::kBlockCols + s * Fmt::kSub;
        const float* x[T];
        token_columns<T>(in, t0, col, x);
        F part[T][4], wq[4];
        src.quad(b, s, h, 0, wq);
        CF_UNROLL(4)
        for (int j = 0; j < 4; ++j) {
          CF_UNROLL(16)
          for (int t = 0; t < T; ++t) part[t][j] = V::fmul(wq[j], V::fset(x[t][j]));
        }
        CF_UNROLL(8)
        for (int v = 1; v < Fmt::kSub / 4; ++v) {
          src.quad(b, s, h, v, wq);
          CF_UNROLL(4)
          for (int j = 0; j < 4; ++j) {
            CF_UNROLL(16)
            for (int t = 0; t < T; ++t) part[t][j] = V::fma(wq[j], V::fset(x[t][4 * v + j]), part[t][j]);
          }
        }
        F a, m;
        if constexpr (!Fmt::kPlain) src.scales(b, s, h, a, m);
        CF_UNROLL(16)
        for (int t = 0; t < T; ++t) {
          const F block = V::fadd(V::fadd(part[t][0], part[t][1]), V::fadd(part[t][2], part[t][3]));
          if constexpr (Fmt::kPlain) {
            sum[t] = V::fadd(sum[t], block);
          } else {
            sum[t] = V::fma(a, block, sum[t]);
          }
          if constexpr (Fmt::kHasMin)
            sum[t] = V::fma(m, V::fset(in.block_sum[int64_t(t0 + t) * blocks_per_row + col / kActBlock]), sum[t]);
        }
      }
    }
    CF_UNROLL(16)
    for (int t = 0; t < T; ++t) V::fstore(acc + t * kRowGroup + h * V::kLanes, sum[t]);
  }
}

// Chains j0 and j0 + 1 (columns c = j0, j0 + 1 mod 4, in column order) of sub-block (b, s) of kGroups tiles, for
// tokens x[0 .. T): out[c][g][t]. Each broadcast activation feeds kGroups products.
template <class V, class Fmt, int T, int kGroups>
CF_ALWAYS_INLINE void f32_chain_pair(const TileSource<V, Fmt>* src, int64_t b, int s, const float* const* x, int j0,
                                     typename V::F (&out)[2][kGroups][T]) {
  using F = typename V::F;
  const float* cols[kGroups];
  CF_UNROLL(2)
  for (int g = 0; g < kGroups; ++g) cols[g] = src[g].sub_block(b, s) + 2 * kRowGroup;
  CF_UNROLL(2)
  for (int c = 0; c < 2; ++c) {
    F w[kGroups];
    CF_UNROLL(2)
    for (int g = 0; g < kGroups; ++g) w[g] = V::fload(cols[g] + (j0 + c) * kRowGroup);
    CF_UNROLL(16)
    for (int t = 0; t < T; ++t) {
      const F xt = V::fset(x[t][j0 + c]);
      CF_UNROLL(2)
      for (int g = 0; g < kGroups; ++g) out[c][g][t] = V::fmul(w[g], xt);
    }
  }
  CF_UNROLL(8)
  for (int v = 1; v < Fmt::kSub / 4; ++v) {
    CF_UNROLL(2)
    for (int c = 0; c < 2; ++c) {
      const int col = 4 * v + j0 + c;
      F w[kGroups];
      CF_UNROLL(2)
      for (int g = 0; g < kGroups; ++g) w[g] = V::fload(cols[g] + col * kRowGroup);
      CF_UNROLL(16)
      for (int t = 0; t < T; ++t) {
        const F xt = V::fset(x[t][col]);
        CF_UNROLL(2)
        for (int g = 0; g < kGroups; ++g) out[c][g][t] = V::fma(w[g], xt, out[c][g][t]);
      }
    }
  }
}

// fp32, one register block: kGroups row groups (one vector of rows each: kRowGroup == kLanes) times tokens
// t0 .. t0+T-1, blocks [b0, b1), accumulated into acc[g][t][16] (group stride kTokenBlockFloats). The four chains of
// a sub-block are computed two at a time (chains 0 and 1, their sum, then 2 and 3) so that the accumulators fit the
// registers: each chain's column order, and so every bit, is f32_group_product's.
template <class V, class Fmt, int T, int kGroups>
void f32_tile_block_product(const TileSource<V, Fmt>* src, int64_t b0, int64_t b1, const PreparedInput& in, int t0,
                            float* acc) {
  static_assert(kRowGroup == V::kLanes);
  using F = typename V::F;
  constexpr int64_t kGroupStride = int64_t(kTokenBlockFloats);
  const int blocks_per_row = in.cols / kActBlock;
  for (int64_t b = b0; b < b1; ++b) {
    for (int s = 0; s < subs_per_block<Fmt>(); ++s) {
      const int64_t col = b * Fmt::kBlockCols + s * Fmt::kSub;
      const float* x[T];
      token_columns<T>(in, t0, col, x);
      F chains[2][kGroups][T], low[kGroups][T];
      f32_chain_pair<V, Fmt, T, kGroups>(src, b, s, x, 0, chains);
      CF_UNROLL(2)
      for (int g = 0; g < kGroups; ++g) {
        CF_UNROLL(16)
        for (int t = 0; t < T; ++t) low[g][t] = V::fadd(chains[0][g][t], chains[1][g][t]);
      }
      f32_chain_pair<V, Fmt, T, kGroups>(src, b, s, x, 2, chains);
      CF_UNROLL(2)
      for (int g = 0; g < kGroups; ++g) {
        F a = V::fset(1.0f), m;
        if constexpr (!Fmt::kPlain) src[g].scales(b, s, 0, a, m);
        CF_UNROLL(16)
        for (int t = 0; t < T; ++t) {
          float* sum = acc + g * kGroupStride + t * kRowGroup;
          const F block = V::fadd(low[g][t], V::fadd(chains[0][g][t], chains[1][g][t]));
          F total = Fmt::kPlain ? V::fadd(V::fload(sum), block) : V::fma(a, block, V::fload(sum));
          if constexpr (Fmt::kHasMin)
            total = V::fma(m, V::fset(in.block_sum[int64_t(t0 + t) * blocks_per_row + col / kActBlock]), total);
          V::fstore(sum, total);
        }
      }
    }
  }
}

// ---- matmul -------------------------------------------------------------------------------------------------------

// fp32: tokens [t0, t0 + count) in tiles of T, then smaller ones; acc[t - t0][16] accumulates blocks [b0, b1).
template <class V, class Fmt, int T, class Source>
void tokens_in_tiles(const Source& src, const PreparedInput& in, int64_t b0, int64_t b1, int t0, int count,
                     float* acc) {
  for (; count >= T; count -= T, t0 += T, acc += T * kRowGroup) f32_group_product<V, Fmt, T>(src, b0, b1, in, t0, acc);
  if constexpr (T > 1) {
    if (count > 0) tokens_in_tiles<V, Fmt, T - 1>(src, in, b0, b1, t0, count, acc);
  }
}

// The same in an integer arithmetic for G row groups at once: acc[g][t - t0][16], group stride kTokenBlockFloats.
template <class V, class Fmt, Arithmetic kArith, int T, int G>
void integer_tokens_in_tiles(const MatmulArgs& m, int64_t group, int t0, int count, float* acc) {
  for (; count >= T; count -= T, t0 += T, acc += T * kRowGroup)
    integer_group_product<V, Fmt, T, kArith, G>(*m.w, group, *m.in, t0, acc);
  if constexpr (T > 1) {
    if (count > 0) integer_tokens_in_tiles<V, Fmt, kArith, T - 1, G>(m, group, t0, count, acc);
  }
}

// The same for kGroups row groups at once (f32_tile_block_product): acc[g][t - t0][16], group stride
// kTokenBlockFloats.
template <class V, class Fmt, int T, int kGroups>
void tokens_in_tile_blocks(const TileSource<V, Fmt>* src, const PreparedInput& in, int64_t b0, int64_t b1, int t0,
                           int count, float* acc) {
  for (; count >= T; count -= T, t0 += T, acc += T * kRowGroup)
    f32_tile_block_product<V, Fmt, T, kGroups>(src, b0, b1, in, t0, acc);
  if constexpr (T > 1) {
    if (count > 0) tokens_in_tile_blocks<V, Fmt, T - 1, kGroups>(src, in, b0, b1, t0, count, acc);
  }
}

template <class Fmt>
constexpr int64_t kTileBlocks = kTileCols / Fmt::kBlockCols > 0 ? kTileCols / Fmt::kBlockCols : 1;
template <class Fmt>
constexpr int64_t kTileFloats = kTileBlocks<Fmt> * subs_per_block<Fmt>() * kTileSubFloats<Fmt>;

// Asks for blocks [b, b + n) of a row group ahead of their conversion: a tile's fill would otherwise wait on memory,
// since the products of the previous tile (thousands of cycles) leave the loads idle.
inline void prefetch_blocks(const PackedMatrix& w, int64_t group, int64_t b, int64_t n) {
#if defined(__GNUC__)
  const uint8_t* p = w.block(group, b);
  for (int64_t at = 0; at < n * w.block_bytes; at += 64) __builtin_prefetch(p + at);
#else
  (void)w, (void)group, (void)b, (void)n;
#endif
}

// fp32, tokens [t0, t0 + count) of row groups group .. group + kGroups - 1: each tile of their weights is converted
// to fp32 once (into `tiles`, kTileFloats each), then read by every tile of tokens.
template <class V, class Fmt, int kGroups>
void f32_tiled_groups(const MatmulArgs& m, int64_t group, int t0, int count, float* tiles, float* acc) {
  const PackedMatrix& w = *m.w;
  for (int64_t b0 = 0; b0 < w.blocks; b0 += kTileBlocks<Fmt>) {
    const int64_t b1 = b0 + kTileBlocks<Fmt> < w.blocks ? b0 + kTileBlocks<Fmt> : w.blocks;
    TileSource<V, Fmt> sources[kGroups];
    for (int g = 0; g < kGroups; ++g) {
      sources[g] = TileSource<V, Fmt>{tiles + g * kTileFloats<Fmt>, b0};
      sources[g].fill(w, group + g, b1 - b0);
    }
    // The next tile: these groups' next blocks, or the first ones of the groups after them.
    const int64_t next_group = b1 < w.blocks ? group : group + kGroups, next_block = b1 < w.blocks ? b1 : 0;
    for (int64_t g = next_group; g < next_group + kGroups && g < w.groups(); ++g) {
      const int64_t n = w.blocks - next_block < kTileBlocks<Fmt> ? w.blocks - next_block : kTileBlocks<Fmt>;
      prefetch_blocks(w, g, next_block, n);
    }
    if constexpr (kGroups == 1) {
      tokens_in_tiles<V, Fmt, V::kTileTokensF32>(sources[0], *m.in, b0, b1, t0, count, acc);
    } else {
      tokens_in_tile_blocks<V, Fmt, V::kBlockTokensF32, kGroups>(sources, *m.in, b0, b1, t0, count, acc);
    }
  }
}

// y (+)= acc[t][16] for the rows of `group` and tokens [t0, t0 + count).
inline void store_group(const MatmulArgs& m, int64_t group, int t0, int count, const float* acc) {
  const int64_t first = group * kRowGroup;
  const int rows = int(m.row_end - first < kRowGroup ? m.row_end - first : kRowGroup);
  for (int t = 0; t < count; ++t) {
    float* y = m.y + int64_t(t0 + t) * m.y_stride + first;
    const float* a = acc + t * kRowGroup;
    for (int r = 0; r < rows; ++r) y[r] = m.accumulate ? y[r] + a[r] : a[r];
  }
}

// Tokens per register tile of each arithmetic.
template <class V, Arithmetic kArith>
inline constexpr int kTileTokens = kArith == Arithmetic::F32     ? V::kTileTokensF32
                                   : kArith == Arithmetic::Int16 ? V::kTileTokensInt16
                                                                 : V::kTileTokensInt8;

// Tokens per register block of kBlockGroups row groups in an integer arithmetic.
template <class V, Arithmetic kArith>
inline constexpr int kBlockTokens = kArith == Arithmetic::Int16 ? V::kBlockTokensInt16 : V::kBlockTokensInt8;

template <class V, class Fmt, Arithmetic kArith>
void matmul_rows(const MatmulArgs& m) {
  constexpr bool kInteger = kArith != Arithmetic::F32;
  constexpr int kTokens = kTileTokens<V, kArith>;
  constexpr int kBlockGroups = kInteger ? V::kBlockGroupsInteger : V::kBlockGroupsF32;
  const PackedMatrix& w = *m.w;
  alignas(64) float acc[kBlockGroups * kTokenBlockFloats];
  alignas(64) float tiles[kInteger ? 1 : kBlockGroups * kTileFloats<Fmt>];
  const int64_t end_group = (m.row_end + kRowGroup - 1) / kRowGroup;
  // Decode-sized batches read the packed weights one row group at a time; larger ones take kBlockGroups row groups
  // at a time where the range has them (fp32: through fp32 tiles). Two interleaved weight streams would leave the
  // memory idle longer in decode.
  const bool tiled = m.in->n_tokens >= 2 * (kInteger ? kBlockTokens<V, kArith> : kTokens);
  for (int64_t group = m.row_begin / kRowGroup; group < end_group;) {
    const int groups = tiled && group + kBlockGroups <= end_group ? kBlockGroups : 1;
    for (int t0 = 0; t0 < m.in->n_tokens; t0 += kTokenBlock) {
      const int count = m.in->n_tokens - t0 < kTokenBlock ? m.in->n_tokens - t0 : kTokenBlock;
      for (int g = 0; g < groups; ++g)
        std::memset(acc + g * kTokenBlockFloats, 0, sizeof(float) * size_t(count) * kRowGroup);
      if constexpr (kInteger) {
        if (groups == 1) {
          integer_tokens_in_tiles<V, Fmt, kArith, kTokens, 1>(m, group, t0, count, acc);
        } else if constexpr (kBlockGroups > 1) {
          integer_tokens_in_tiles<V, Fmt, kArith, kBlockTokens<V, kArith>, kBlockGroups>(m, group, t0, count, acc);
        }
      } else if (!tiled) {
        tokens_in_tiles<V, Fmt, kTokens>(PackedSource<V, Fmt>{&w, group}, *m.in, 0, w.blocks, t0, count, acc);
      } else if (groups == 1) {
        f32_tiled_groups<V, Fmt, 1>(m, group, t0, count, tiles, acc);
      } else if constexpr (kBlockGroups > 1) {
        f32_tiled_groups<V, Fmt, kBlockGroups>(m, group, t0, count, tiles, acc);
      }
      for (int g = 0; g < groups; ++g) store_group(m, group + g, t0, count, acc + g * kTokenBlockFloats);
    }
    group += groups;
  }
}

template <class V, class Fmt>
void matmul_quantised(const MatmulArgs& m) {
  switch (m.in->arithmetic) {
    case Arithmetic::F32: return matmul_rows<V, Fmt, Arithmetic::F32>(m);
    case Arithmetic::Int16: return matmul_rows<V, Fmt, Arithmetic::Int16>(m);
    case Arithmetic::Int8: return matmul_rows<V, Fmt, Arithmetic::Int8>(m);
  }
}

template <class V>
void matmul(const MatmulArgs& m) {
  switch (m.w->dtype) {
    case DType::F32: return matmul_rows<V, PlainFmt<DType::F32>, Arithmetic::F32>(m);
    case DType::F16: return matmul_rows<V, PlainFmt<DType::F16>, Arithmetic::F32>(m);
    case DType::BF16: return matmul_rows<V, PlainFmt<DType::BF16>, Arithmetic::F32>(m);
    case DType::Q8_0: return matmul_quantised<V, Q8_0Fmt>(m);
    case DType::Q4_0: return matmul_quantised<V, Q4_0Fmt>(m);
    case DType::Q4_1: return matmul_quantised<V, Q4_1Fmt>(m);
    case DType::Q4_K: return matmul_quantised<V, Q4_KFmt>(m);
    case DType::Q5_K: return matmul_quantised<V, Q5_KFmt>(m);
    case DType::Q6_K: return matmul_quantised<V, Q6_KFmt>(m);
  }
}

// ---- activation preparation --------------------------------------------------------------------------------------

// The integer values of one block: round_to_nearest_even(x * (kMax / amax)) with scale = amax / kMax (non-numbers
// count as 0), written by store(i, lanes) for the lanes i * kLanes ..; their sums over the block and its halves.
template <class V, int kMax, class Store>
void round_block(const float* x, Store store, float& scale, int32_t& sum32, int32_t& sum_low, int32_t& sum_high) {
  using F = typename V::F;
  constexpr int kVecs = kActBlock / V::kLanes;
  F v[kVecs];
  F amax = V::fzero();
  CF_UNROLL(4)
  for (int i = 0; i < kVecs; ++i) {
    v[i] = V::zero_nan(V::fload(x + i * V::kLanes));
    amax = V::fmax(V::fabs(v[i]), amax);
  }
  const float max_abs = V::reduce_max(amax);
  // A block whose rounding factor is not a finite positive number (all zero, so tiny that kMax / amax overflows, or
  // holding an infinity) rounds to zeros: nothing past the integer range, the same on every level.
  const float factor = float(kMax) / max_abs;
  const bool finite = factor > 0.0f && factor <= FLT_MAX;
  const F inv = V::fset(finite ? factor : 0.0f);
  scale = max_abs / float(kMax);
  int32_t half[2] = {0, 0};
  CF_UNROLL(4)
  for (int i = 0; i < kVecs; ++i) {
    const typename V::I r = finite ? V::to_int(V::fmul(v[i], inv)) : V::izero();
    store(i, r);
    half[i * V::kLanes / 16] += V::ireduce_add(r);
  }
  sum_low = half[0];
  sum_high = half[1];
  sum32 = half[0] + half[1];
}

template <class V>
void prepare_row(const PreparedRow& row, Arithmetic arithmetic) {
  constexpr int kHalf = 16 / V::kLanes;
  for (int b = 0; b < row.cols / kActBlock; ++b) {
    const float* x = row.x + b * kActBlock;
    if (arithmetic == Arithmetic::F32) {
      typename V::F pairs[kHalf];
      for (int h = 0; h < kHalf; ++h) pairs[h] = V::fadd(V::fload(x + h * V::kLanes), V::fload(x + 16 + h * V::kLanes));
      row.block_sum[b] = sum16<V>(pairs);
      continue;
    }
    const int64_t at = b * row.block_stride;
    int32_t sum32 = 0, sum_low = 0, sum_high = 0;
    if (arithmetic == Arithmetic::Int16) {
      // x16 = 256 hi + lo: lo its low byte (signed), hi = (x16 - lo) / 256.
      int8_t* high = row.q + b * row.q_block_bytes;
      int8_t* low = high + kActBlock;
      auto store = [&](int i, typename V::I r) {
        const typename V::I lo = V::template sra<24>(V::template sll<24>(r));
        V::store_low_bytes(low + i * V::kLanes, lo);
        V::store_low_bytes(high + i * V::kLanes, V::template sra<8>(V::isub(r, lo)));
      };
      round_block<V, kInt16Max>(x, store, row.scale[at], sum32, sum_low, sum_high);
    } else {
      // ggml's Q8_0 rounding with an fp32 scale.
      int8_t* q = row.q + b * row.q_block_bytes;
      auto store = [&](int i, typename V::I r) { V::store_low_bytes(q + i * V::kLanes, r); };
      round_block<V, 127>(x, store, row.scale[at], sum32, sum_low, sum_high);
    }
    row.scaled_sum[at] = row.scale[at] * float(sum32);
    row.scaled_sum16[2 * at] = row.scale[at] * float(sum_low);
    row.scaled_sum16[2 * at + row.block_stride] = row.scale[at] * float(sum_high);
  }
}

// ---- element-wise -------------------------------------------------------------------------------------------------

template <class V>
void rmsnorm(const float* x, const float* weight, float eps, float* y, int n) {
  using F = typename V::F;
  constexpr int kVecs = 16 / V::kLanes;
  F squares[kVecs];
  for (int h = 0; h < kVecs; ++h) squares[h] = V::fzero();
  float tail[16] = {};
  for (int i = 0; i < n; i += 16) {
    const float* chunk = x + i;
    if (n - i < 16) {
      std::memcpy(tail, x + i, sizeof(float) * size_t(n - i));
      chunk = tail;
    }
    for (int h = 0; h < kVecs; ++h) {
      const F v = V::fload(chunk + h * V::kLanes);
      squares[h] = i == 0 ? V::fmul(v, v) : V::fma(v, v, squares[h]);
    }
  }
  const float inv_rms = 1.0f / std::sqrt(sum16<V>(squares) / float(n) + eps);
  const F scale = V::fset(inv_rms);
  int i = 0;
  for (; i + V::kLanes <= n; i += V::kLanes) V::fstore(y + i, V::fmul(V::fmul(V::fload(x + i), scale), V::fload(weight + i)));
  for (; i < n; ++i) y[i] = x[i] * inv_rms * weight[i];
}

// silu(g) * u = g / (1 + e^-g) * u
template <class V>
typename V::F swiglu_lanes(typename V::F g, typename V::F u) {
  const typename V::F one = V::fset(1.0f);
  return V::fmul(V::fdiv(g, V::fadd(one, exp_approx<V>(fneg<V>(g)))), u);
}

template <class V>
void swiglu(float* gate, const float* up, int n) {
  int i = 0;
  for (; i + V::kLanes <= n; i += V::kLanes) V::fstore(gate + i, swiglu_lanes<V>(V::fload(gate + i), V::fload(up + i)));
  if (i < n) {
    float g[V::kLanes] = {}, u[V::kLanes] = {};
    std::memcpy(g, gate + i, sizeof(float) * size_t(n - i));
    std::memcpy(u, up + i, sizeof(float) * size_t(n - i));
    V::fstore(g, swiglu_lanes<V>(V::fload(g), V::fload(u)));
    std::memcpy(gate + i, g, sizeof(float) * size_t(n - i));
  }
}

template <class V>
void store_kv(const float* src, void* dst, DType kv_dtype, int n) {
  if (kv_dtype == DType::F32) {
    std::memcpy(dst, src, sizeof(float) * size_t(n));
    return;
  }
  auto* halves = static_cast<uint16_t*>(dst);
  for (int i = 0; i < n; i += V::kLanes) V::store_halves(halves + i, V::fload(src + i));
}

// ---- attention ----------------------------------------------------------------------------------------------------

// One key or value row of the cache (F32 or F16, head_dim a multiple of 16) as fp32 lanes.
template <class V, DType kKv>
typename V::F load_kv(const void* base, int64_t at) {
  if constexpr (kKv == DType::F32) return V::fload(static_cast<const float*>(base) + at);
  return V::load_halves(static_cast<const uint16_t*>(base) + at);
}

// One query head over blocks of 16 positions, an online softmax: m (running max), l (running sum of e^(s - m)), out
// (running weighted sum of values). Per block: m' = max(m, scores), rescale = e^(m - m'), p_i = e^(s_i - m'),
// l = l * rescale + sum(p) (halving), out = out * rescale, then out += p_i * v_i in position order; finally out /= l.
constexpr int kAttendBlock = 16;
constexpr int kOutVecs = 4;  // output vectors kept in registers while a block's values are added

struct HeadState {
  float m = -INFINITY, l = 0.0f;
};

// p[i] = scale * q . k_i for the block's n positions, kLanes at a time: per position, q . k over head_dim in 16
// virtual lanes of column-ordered fused multiply-adds (folded to kLanes: the first halving of rmsnorm's sum), the
// rest of the halving for all kLanes positions in one transposing network (sums_of). Positions past n compute
// anything (a repeated row); their scores are discarded.
template <class V, DType kKv>
void block_scores(const AttentionArgs& a, const float* q, int p0, int n, float* p) {
  using F = typename V::F;
  constexpr int kVecs = 16 / V::kLanes;
  for (int i0 = 0; i0 < n; i0 += V::kLanes) {
    int64_t at[V::kLanes];
    for (int i = 0; i < V::kLanes; ++i) at[i] = a.slots[p0 + (i0 + i < n ? i0 + i : n - 1)] * a.row;
    F acc[V::kLanes][kVecs];
    CF_UNROLL(2)
    for (int h = 0; h < kVecs; ++h) {
      const F qh = V::fload(q + h * V::kLanes);
      CF_UNROLL(16)
      for (int i = 0; i < V::kLanes; ++i) acc[i][h] = V::fmul(qh, load_kv<V, kKv>(a.k, at[i] + h * V::kLanes));
    }
    for (int d = 16; d < a.head_dim; d += 16) {
      CF_UNROLL(2)
      for (int h = 0; h < kVecs; ++h) {
        const F qh = V::fload(q + d + h * V::kLanes);
        CF_UNROLL(16)
        for (int i = 0; i < V::kLanes; ++i) acc[i][h] = V::fma(qh, load_kv<V, kKv>(a.k, at[i] + d + h * V::kLanes), acc[i][h]);
      }
    }
    F lanes[V::kLanes];
    CF_UNROLL(16)
    for (int i = 0; i < V::kLanes; ++i) lanes[i] = kVecs == 2 ? V::fadd(acc[i][0], acc[i][kVecs - 1]) : acc[i][0];
    V::fstore(p + i0, V::fmul(V::sums_of(lanes), V::fset(a.scale)));
  }
}

// Turns the block's scores into weights p_i and returns the factor the previous output is rescaled by.
template <class V>
float softmax_update(HeadState& state, float* p, int n) {
  constexpr int kVecs = kAttendBlock / V::kLanes;
  float block_max = p[0];
  for (int i = 1; i < n; ++i) block_max = p[i] > block_max ? p[i] : block_max;
  const float m_new = block_max > state.m ? block_max : state.m;
  for (int i = n; i < kAttendBlock; ++i) p[i] = -INFINITY;  // e^-inf = 0
  typename V::F e[kVecs];
  for (int h = 0; h < kVecs; ++h) e[h] = exp_approx<V>(V::fsub(V::fload(p + h * V::kLanes), V::fset(m_new)));
  float rescale[V::kLanes] = {1.0f};  // e^0 = 1 exactly: only a moved maximum needs the exponential
  if (m_new != state.m) V::fstore(rescale, exp_approx<V>(V::fset(state.m - m_new)));
  state.l = state.l * rescale[0] + sum16<V>(e);
  state.m = m_new;
  for (int h = 0; h < kVecs; ++h) V::fstore(p + h * V::kLanes, e[h]);
  return rescale[0];
}

// out[d0 .. d0 + kVecs lanes) = out * rescale + sum over the block's positions of p_i v_i (held in registers).
template <class V, DType kKv, int kVecs>
void add_values_part(const AttentionArgs& a, const float* p, int p0, int n, float rescale, float* out, int d0) {
  using F = typename V::F;
  F o[kVecs];
  CF_UNROLL(8)
  for (int j = 0; j < kVecs; ++j) o[j] = V::fmul(V::fload(out + d0 + j * V::kLanes), V::fset(rescale));
  for (int i = 0; i < n; ++i) {
    const F weight = V::fset(p[i]);
    const int64_t at = a.slots[p0 + i] * a.row + d0;
    CF_UNROLL(8)
    for (int j = 0; j < kVecs; ++j) o[j] = V::fma(weight, load_kv<V, kKv>(a.v, at + j * V::kLanes), o[j]);
  }
  CF_UNROLL(8)
  for (int j = 0; j < kVecs; ++j) V::fstore(out + d0 + j * V::kLanes, o[j]);
}

template <class V, DType kKv>
void add_values(const AttentionArgs& a, const float* p, int p0, int n, float rescale, float* out) {
  int d0 = 0;
  for (; d0 + kOutVecs * V::kLanes <= a.head_dim; d0 += kOutVecs * V::kLanes)
    add_values_part<V, kKv, kOutVecs>(a, p, p0, n, rescale, out, d0);
  for (; d0 < a.head_dim; d0 += V::kLanes) add_values_part<V, kKv, 1>(a, p, p0, n, rescale, out, d0);
}

// The query heads of one KV head share the cache rows they read (L1-resident for a block).
template <class V, DType kKv>
void attend_typed(const AttentionArgs& a) {
  const int hd = a.head_dim;
  for (int g = 0; g < a.group; ++g) std::memset(a.out + int64_t(g) * hd, 0, sizeof(float) * size_t(hd));
  HeadState states[8];
  for (int g0 = 0; g0 < a.group; g0 += 8) {
    const int heads = a.group - g0 < 8 ? a.group - g0 : 8;
    for (int g = 0; g < heads; ++g) states[g] = HeadState{};
    for (int p0 = 0; p0 < a.len; p0 += kAttendBlock) {
      const int n = a.len - p0 < kAttendBlock ? a.len - p0 : kAttendBlock;
      for (int g = 0; g < heads; ++g) {
        alignas(64) float p[kAttendBlock];
        block_scores<V, kKv>(a, a.q + int64_t(g0 + g) * hd, p0, n, p);
        const float rescale = softmax_update<V>(states[g], p, n);
        add_values<V, kKv>(a, p, p0, n, rescale, a.out + int64_t(g0 + g) * hd);
      }
    }
    for (int g = 0; g < heads; ++g) {
      float* out = a.out + int64_t(g0 + g) * hd;
      const typename V::F inv = V::fset(1.0f / states[g].l);
      for (int d = 0; d < hd; d += V::kLanes) V::fstore(out + d, V::fmul(V::fload(out + d), inv));
    }
  }
}

template <class V>
void attend(const AttentionArgs& a) {
  if (a.kv_dtype == DType::F16) return attend_typed<V, DType::F16>(a);
  attend_typed<V, DType::F32>(a);
}

// The table of one level.
template <class V>
KernelTable make_table(Isa isa) {
  return KernelTable{isa, &prepare_row<V>, &matmul<V>, &attend<V>, &rmsnorm<V>, &swiglu<V>, &store_kv<V>};
}

}  // namespace
}  // namespace cf::cpu
