// The kernels of kernels.hpp written once over a vector vocabulary V (simd_portable.hpp, simd_avx2.hpp,
// simd_avx512.hpp). Each kernels_<level>.cpp includes this file after its vocabulary and instantiates the table, so
// every level runs the same operations in the same order (the order kernels.hpp defines) and computes the same bits.
// Everything here lives in an anonymous namespace: each level's copy stays in its own translation unit.
#pragma once
#include <bit>
#include <cmath>
#include <cstring>

#include "kernels.hpp"

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

// ---- tiles --------------------------------------------------------------------------------------------------------

// The kLanes rows of one lane group of a row group (rows past the matrix repeat its last row; their results are
// dropped).
template <class V>
struct LaneRows {
  const uint8_t* ptr[V::kLanes];
  typename V::I offsets;  // ptr[l] - ptr[0], for gathers
  void init(const WeightMatrix& w, int64_t first) {
    int32_t off[V::kLanes];
    for (int l = 0; l < V::kLanes; ++l) {
      const int64_t r = first + l < w.rows ? first + l : w.rows - 1;
      ptr[l] = w.row(r);
      off[l] = int32_t((r - first) * w.row_bytes);
    }
    offsets = V::iload(off);
  }
};

// Layout of one sub-block in a tile: a[16] and b[16] (fp32, when the type has them), then the values of the 16 rows:
// bytes [sub / 4][16 rows][4 columns] (int8 tiles) or fp32 [sub][16 rows] (fp32 tiles).
template <class Fmt>
struct TileLayout {
  static constexpr int kScaleBytes = (Fmt::kHasScale ? 64 : 0) + (Fmt::kHasMin ? 64 : 0);
  static constexpr int kByteStride = kScaleBytes + Fmt::kSub * kRowGroup;
  static constexpr int kFloatStride = kScaleBytes + Fmt::kSub * kRowGroup * 4;
};

// Writes decoded sub-blocks of one lane group into an int8 tile: values as unsigned bytes (true value = byte -
// Fmt::kOffset).
template <class V, class Fmt>
struct ByteSink {
  uint8_t* tile;
  int lane_group;
  uint8_t* sub_block(int sub) const { return tile + int64_t(sub) * TileLayout<Fmt>::kByteStride; }
  void scales(int sub, typename V::F a, typename V::F b) const {
    float* s = reinterpret_cast<float*>(sub_block(sub)) + lane_group * V::kLanes;
    if constexpr (Fmt::kHasScale) V::fstore(s, a);
    if constexpr (Fmt::kHasMin) V::fstore(s + kRowGroup, b);
  }
  // Columns 4v .. 4v+3 of the sub-block.
  void values(int sub, int v, typename V::I q) const {
    V::istore(sub_block(sub) + TileLayout<Fmt>::kScaleBytes + (v * kRowGroup + lane_group * V::kLanes) * 4, q);
  }
};

// The same into an fp32 tile: each byte becomes the float (byte - offset).
template <class V, class Fmt>
struct FloatSink {
  uint8_t* tile;
  int lane_group;
  float* sub_block(int sub) const {
    return reinterpret_cast<float*>(tile + int64_t(sub) * TileLayout<Fmt>::kFloatStride);
  }
  void scales(int sub, typename V::F a, typename V::F b) const {
    float* s = sub_block(sub) + lane_group * V::kLanes;
    if constexpr (Fmt::kHasScale) V::fstore(s, a);
    if constexpr (Fmt::kHasMin) V::fstore(s + kRowGroup, b);
  }
  void values(int sub, int v, typename V::I q) const {
    const typename V::I byte = V::iset(0xff), offset = V::iset(Fmt::kOffset);
    for (int j = 0; j < 4; ++j)
      column(sub, 4 * v + j, V::from_int(V::isub(V::iand(V::srl(q, 8 * j), byte), offset)));
  }
  void column(int sub, int c, typename V::F w) const {
    V::fstore(sub_block(sub) + TileLayout<Fmt>::kScaleBytes / 4 + c * kRowGroup + lane_group * V::kLanes, w);
  }
};

// ---- weight types: decoding one storage block of a lane group's rows into sub-blocks ----------------------------
// kSub: columns per sub-block; kOffset: value offset of the unsigned bytes; kHasScale / kHasMin: per-sub-block a, b.

struct Q4_0Fmt {
  static constexpr bool kPlain = false;
  static constexpr int kSub = 32, kBlockCols = 32, kBlockBytes = 18, kOffset = 8;
  static constexpr bool kHasScale = true, kHasMin = false;
  template <class V, class Sink>
  static void decode(const LaneRows<V>& r, int64_t blk, int sub, const Sink& s) {
    const int64_t at = blk * kBlockBytes;
    s.scales(sub, V::half_low(V::gather(r.ptr[0], r.offsets, at)), V::fzero());
    typename V::I q[4];
    V::load_columns(r.ptr, at + 2, q);
    const typename V::I mask = V::iset(0x0f0f0f0f);
    for (int k = 0; k < 4; ++k) {
      s.values(sub, k, V::iand(q[k], mask));
      s.values(sub, k + 4, V::iand(V::template srl<4>(q[k]), mask));
    }
  }
};

struct Q4_1Fmt {
  static constexpr bool kPlain = false;
  static constexpr int kSub = 32, kBlockCols = 32, kBlockBytes = 20, kOffset = 0;
  static constexpr bool kHasScale = true, kHasMin = true;
  template <class V, class Sink>
  static void decode(const LaneRows<V>& r, int64_t blk, int sub, const Sink& s) {
    const int64_t at = blk * kBlockBytes;
    const typename V::I dm = V::gather(r.ptr[0], r.offsets, at);
    s.scales(sub, V::half_low(dm), V::half_high(dm));
    typename V::I q[4];
    V::load_columns(r.ptr, at + 4, q);
    const typename V::I mask = V::iset(0x0f0f0f0f);
    for (int k = 0; k < 4; ++k) {
      s.values(sub, k, V::iand(q[k], mask));
      s.values(sub, k + 4, V::iand(V::template srl<4>(q[k]), mask));
    }
  }
};

struct Q8_0Fmt {
  static constexpr bool kPlain = false;
  static constexpr int kSub = 32, kBlockCols = 32, kBlockBytes = 34, kOffset = 128;
  static constexpr bool kHasScale = true, kHasMin = false;
  template <class V, class Sink>
  static void decode(const LaneRows<V>& r, int64_t blk, int sub, const Sink& s) {
    const int64_t at = blk * kBlockBytes;
    s.scales(sub, V::half_low(V::gather(r.ptr[0], r.offsets, at)), V::fzero());
    typename V::I q[8];
    V::load_columns(r.ptr, at + 2, q);
    V::load_columns(r.ptr, at + 18, q + 4);
    for (int v = 0; v < 8; ++v) s.values(sub, v, V::ixor(q[v], V::iset(int32_t(0x80808080u))));
  }
};

// Byte i (0..11) of the Q4_K / Q5_K scale bytes, given as three gathered words.
template <class V>
typename V::I scale_byte(const typename V::I* words, int i) {
  return V::iand(V::srl(words[i / 4], 8 * (i % 4)), V::iset(0xff));
}

// a = d * scale_j and b = -dmin * min_j of the 8 sub-blocks of a Q4_K / Q5_K super-block (6-bit scales and mins
// packed in 12 bytes, as ggml's get_scale_min_k4).
template <class V, class Sink>
void k_quant_scales(const LaneRows<V>& r, int64_t at, int sub, const Sink& s) {
  using I = typename V::I;
  const I dm = V::gather(r.ptr[0], r.offsets, at);
  const typename V::F d = V::half_low(dm), dmin = V::half_high(dm);
  const I words[3] = {V::gather(r.ptr[0], r.offsets, at + 4), V::gather(r.ptr[0], r.offsets, at + 8),
                      V::gather(r.ptr[0], r.offsets, at + 12)};
  const I six = V::iset(63), four = V::iset(15);
  for (int j = 0; j < 8; ++j) {
    I scale, min;
    if (j < 4) {
      scale = V::iand(scale_byte<V>(words, j), six);
      min = V::iand(scale_byte<V>(words, j + 4), six);
    } else {
      scale = V::ior(V::iand(scale_byte<V>(words, j + 4), four),
                     V::template sll<4>(V::template srl<6>(scale_byte<V>(words, j - 4))));
      min = V::ior(V::template srl<4>(scale_byte<V>(words, j + 4)),
                   V::template sll<4>(V::template srl<6>(scale_byte<V>(words, j))));
    }
    s.scales(sub + j, V::fmul(d, V::from_int(scale)), fneg<V>(V::fmul(dmin, V::from_int(min))));
  }
}

// Q4_K: per 64 columns, 32 bytes whose low nibbles are sub-block 2c and high nibbles sub-block 2c + 1.
struct Q4_KFmt {
  static constexpr bool kPlain = false;
  static constexpr int kSub = 32, kBlockCols = 256, kBlockBytes = 144, kOffset = 0;
  static constexpr bool kHasScale = true, kHasMin = true;
  template <class V, class Sink>
  static void decode(const LaneRows<V>& r, int64_t blk, int sub, const Sink& s) {
    const int64_t at = blk * kBlockBytes;
    k_quant_scales(r, at, sub, s);
    const typename V::I mask = V::iset(0x0f0f0f0f);
    for (int c = 0; c < 4; ++c) {
      typename V::I q[8];
      V::load_columns(r.ptr, at + 16 + 32 * c, q);
      V::load_columns(r.ptr, at + 32 + 32 * c, q + 4);
      for (int v = 0; v < 8; ++v) {
        s.values(sub + 2 * c, v, V::iand(q[v], mask));
        s.values(sub + 2 * c + 1, v, V::iand(V::template srl<4>(q[v]), mask));
      }
    }
  }
};

// Q5_K: as Q4_K, plus 32 bytes of fifth bits: bit j of byte i belongs to column i of sub-block j.
struct Q5_KFmt {
  static constexpr bool kPlain = false;
  static constexpr int kSub = 32, kBlockCols = 256, kBlockBytes = 176, kOffset = 0;
  static constexpr bool kHasScale = true, kHasMin = true;
  template <class V, class Sink>
  static void decode(const LaneRows<V>& r, int64_t blk, int sub, const Sink& s) {
    using I = typename V::I;
    const int64_t at = blk * kBlockBytes;
    k_quant_scales(r, at, sub, s);
    I high[8];
    V::load_columns(r.ptr, at + 16, high);
    V::load_columns(r.ptr, at + 32, high + 4);
    const I mask = V::iset(0x0f0f0f0f), bit = V::iset(0x01010101);
    for (int c = 0; c < 4; ++c) {
      I q[8];
      V::load_columns(r.ptr, at + 48 + 32 * c, q);
      V::load_columns(r.ptr, at + 64 + 32 * c, q + 4);
      for (int v = 0; v < 8; ++v) {
        const I low_fifth = V::template sll<4>(V::iand(V::srl(high[v], 2 * c), bit));
        const I high_fifth = V::template sll<4>(V::iand(V::srl(high[v], 2 * c + 1), bit));
        s.values(sub + 2 * c, v, V::ior(V::iand(q[v], mask), low_fifth));
        s.values(sub + 2 * c + 1, v, V::ior(V::iand(V::template srl<4>(q[v]), mask), high_fifth));
      }
    }
  }
};

// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 signed 8-bit scales (sub-blocks of 16), f16 d.
// Columns 128n + 32p + l (p = 0..3): low nibble of ql[64n + 32 (p % 2) + l] (high nibble for p >= 2), high part
// bits 2p of qh[32n + l].
struct Q6_KFmt {
  static constexpr bool kPlain = false;
  static constexpr int kSub = 16, kBlockCols = 256, kBlockBytes = 210, kOffset = 32;
  static constexpr bool kHasScale = true, kHasMin = false;
  template <class V, class Sink>
  static void decode(const LaneRows<V>& r, int64_t blk, int sub, const Sink& s) {
    using I = typename V::I;
    const int64_t at = blk * kBlockBytes;
    const typename V::F d = V::half_high(V::gather(r.ptr[0], r.offsets, at + 206));
    for (int w = 0; w < 4; ++w) {
      const I word = V::gather(r.ptr[0], r.offsets, at + 192 + 4 * w);
      for (int b = 0; b < 4; ++b) {
        const I scale = V::template sra<24>(V::sll(word, 24 - 8 * b));
        s.scales(sub + 4 * w + b, V::fmul(d, V::from_int(scale)), V::fzero());
      }
    }
    const I mask = V::iset(0x0f0f0f0f), two_bits = V::iset(0x03030303);
    for (int n = 0; n < 2; ++n) {
      I high[8];
      V::load_columns(r.ptr, at + 128 + 32 * n, high);
      V::load_columns(r.ptr, at + 144 + 32 * n, high + 4);
      for (int half = 0; half < 2; ++half) {
        I low[8];
        V::load_columns(r.ptr, at + 64 * n + 32 * half, low);
        V::load_columns(r.ptr, at + 64 * n + 32 * half + 16, low + 4);
        for (int nibble = 0; nibble < 2; ++nibble) {
          const int p = half + 2 * nibble, group = 4 * n + p;
          for (int v = 0; v < 8; ++v) {
            const I value = V::ior(V::iand(V::srl(low[v], 4 * nibble), mask),
                                   V::template sll<4>(V::iand(V::srl(high[v], 2 * p), two_bits)));
            s.values(sub + 2 * group + v / 4, v % 4, value);
          }
        }
      }
    }
  }
};

// Plain types: a block is 32 columns of fp32 / fp16 / bf16 (the last one of a row may be partial).
template <DType kType>
struct PlainFmt {
  static constexpr bool kPlain = true;
  static constexpr int kSub = 32, kBlockCols = 32, kOffset = 0;
  static constexpr bool kHasScale = false, kHasMin = false;
  static constexpr int kElemBytes = kType == DType::F32 ? 4 : 2;

  static float element(const uint8_t* row, int64_t c) {
    uint32_t bits = 0;
    std::memcpy(&bits, row + c * kElemBytes, kElemBytes);
    if constexpr (kType == DType::F32) return std::bit_cast<float>(bits);
    if constexpr (kType == DType::BF16) return std::bit_cast<float>(bits << 16);
    return f16_to_float(bits);
  }
  static float f16_to_float(uint32_t h) {  // exact, as the hardware conversion
    const uint32_t magnitude = (h & 0x7fffu) << 13;
    uint32_t bits = std::bit_cast<uint32_t>(std::bit_cast<float>(magnitude) * 0x1p112f);
    if ((h & 0x7c00u) == 0x7c00u) bits = 0x7f800000u | magnitude | ((h & 0x3ffu) ? 0x400000u : 0u);
    return std::bit_cast<float>(bits | ((h & 0x8000u) << 16));
  }

  template <class V>
  static void decode(const LaneRows<V>& r, int64_t blk, int sub, const FloatSink<V, PlainFmt>& s, int64_t cols) {
    using I = typename V::I;
    const int64_t first = blk * kBlockCols;
    if (first + kBlockCols > cols) return decode_partial(r, first, sub, s, cols);
    const int64_t at = first * kElemBytes;
    const int loads = kBlockCols * kElemBytes / 16;  // 16 bytes per row and load
    for (int g = 0; g < loads; ++g) {
      I q[4];
      V::load_columns(r.ptr, at + 16 * g, q);
      for (int k = 0; k < 4; ++k) {
        if constexpr (kType == DType::F32) {
          s.column(sub, 4 * g + k, V::as_float(q[k]));
        } else if constexpr (kType == DType::BF16) {
          s.column(sub, 8 * g + 2 * k, V::as_float(V::template sll<16>(q[k])));
          s.column(sub, 8 * g + 2 * k + 1, V::as_float(V::iand(q[k], V::iset(int32_t(0xffff0000u)))));
        } else {
          s.column(sub, 8 * g + 2 * k, V::half_low(q[k]));
          s.column(sub, 8 * g + 2 * k + 1, V::half_high(q[k]));
        }
      }
    }
  }
  template <class V>
  static void decode_partial(const LaneRows<V>& r, int64_t first, int sub, const FloatSink<V, PlainFmt>& s,
                             int64_t cols) {
    for (int c = 0; c < kBlockCols; ++c) {
      float lanes[V::kLanes];
      for (int l = 0; l < V::kLanes; ++l) lanes[l] = first + c < cols ? element(r.ptr[l], first + c) : 0.0f;
      s.column(sub, c, V::fload(lanes));
    }
  }
};

// ---- products of a tile with a tile of tokens ---------------------------------------------------------------------

// int8: T tokens t0 .. t0+T-1 times the tile's n_sub sub-blocks (the input's sub-blocks sub0 ..), accumulated into
// acc[token][16].
template <class V, class Fmt, int T>
void int8_tile_product(const uint8_t* tile, int n_sub, const PreparedInput& in, int sub0, int t0, float* acc) {
  using F = typename V::F;
  using I = typename V::I;
  using L = TileLayout<Fmt>;
  // AVX2's byte product saturates above 127: Q8_0 (bytes up to 255) goes through its signed form there.
  constexpr bool kSigned = Fmt::kOffset == 128 && !V::kExactByteDot;
  const int blocks_per_row = in.cols / kActBlock;
  for (int h = 0; h < kRowGroup / V::kLanes; ++h) {
    F sum[T];
    for (int t = 0; t < T; ++t) sum[t] = V::fload(acc + (t0 + t) * kRowGroup + h * V::kLanes);
    for (int s = 0; s < n_sub; ++s) {
      const uint8_t* sub_block = tile + s * L::kByteStride;
      const int col = (sub0 + s) * Fmt::kSub;
      I dot[T];
      for (int t = 0; t < T; ++t) dot[t] = V::izero();
      for (int v = 0; v < Fmt::kSub / 4; ++v) {
        I w = V::iload(sub_block + L::kScaleBytes + (v * kRowGroup + h * V::kLanes) * 4);
        if constexpr (kSigned) w = V::ixor(w, V::iset(int32_t(0x80808080u)));
        for (int t = 0; t < T; ++t) {
          const I x = V::iset(load_i32(in.q + int64_t(t0 + t) * in.cols + col + 4 * v));
          if constexpr (kSigned) {
            dot[t] = V::idot_signed(dot[t], w, x);
          } else {
            dot[t] = V::idot(dot[t], w, x);
          }
        }
      }
      const float* scales = reinterpret_cast<const float*>(sub_block) + h * V::kLanes;
      const F a = V::fload(scales);
      for (int t = 0; t < T; ++t) {
        const int64_t block = int64_t(t0 + t) * blocks_per_row + col / kActBlock;
        I d = dot[t];
        if constexpr (Fmt::kOffset != 0 && !kSigned) {
          const int32_t x_sum = Fmt::kSub == 16 ? in.sum16[int64_t(t0 + t) * (in.cols / 16) + col / 16] : in.sum32[block];
          d = V::isub(d, V::iset(Fmt::kOffset * x_sum));
        }
        sum[t] = V::fma(a, V::fmul(V::from_int(d), V::fset(in.scale[block])), sum[t]);
        if constexpr (Fmt::kHasMin) sum[t] = V::fma(V::fload(scales + kRowGroup), V::fset(in.scaled_sum[block]), sum[t]);
      }
    }
    for (int t = 0; t < T; ++t) V::fstore(acc + (t0 + t) * kRowGroup + h * V::kLanes, sum[t]);
  }
}

// fp32: the same with fp32 activations and an fp32 tile.
template <class V, class Fmt, int T>
void f32_tile_product(const uint8_t* tile, int n_sub, const PreparedInput& in, int sub0, int t0, float* acc) {
  using F = typename V::F;
  using L = TileLayout<Fmt>;
  const int blocks_per_row = in.cols / kActBlock;
  for (int h = 0; h < kRowGroup / V::kLanes; ++h) {
    F sum[T];
    for (int t = 0; t < T; ++t) sum[t] = V::fload(acc + (t0 + t) * kRowGroup + h * V::kLanes);
    for (int s = 0; s < n_sub; ++s) {
      const float* sub_block = reinterpret_cast<const float*>(tile + s * L::kFloatStride);
      const float* w = sub_block + L::kScaleBytes / 4 + h * V::kLanes;
      const int col = (sub0 + s) * Fmt::kSub;
      F part[T][4];
      for (int j = 0; j < 4; ++j) {
        const F wj = V::fload(w + j * kRowGroup);
        for (int t = 0; t < T; ++t) part[t][j] = V::fmul(wj, V::fset(in.x[int64_t(t0 + t) * in.cols + col + j]));
      }
      for (int c = 4; c < Fmt::kSub; ++c) {
        const F wc = V::fload(w + c * kRowGroup);
        for (int t = 0; t < T; ++t)
          part[t][c % 4] = V::fma(wc, V::fset(in.x[int64_t(t0 + t) * in.cols + col + c]), part[t][c % 4]);
      }
      for (int t = 0; t < T; ++t) {
        const F block = V::fadd(V::fadd(part[t][0], part[t][1]), V::fadd(part[t][2], part[t][3]));
        if constexpr (Fmt::kHasScale) {
          sum[t] = V::fma(V::fload(sub_block + h * V::kLanes), block, sum[t]);
        } else {
          sum[t] = V::fadd(sum[t], block);
        }
        if constexpr (Fmt::kHasMin) {
          const float x_sum = in.block_sum[int64_t(t0 + t) * blocks_per_row + col / kActBlock];
          sum[t] = V::fma(V::fload(sub_block + kRowGroup + h * V::kLanes), V::fset(x_sum), sum[t]);
        }
      }
    }
    for (int t = 0; t < T; ++t) V::fstore(acc + (t0 + t) * kRowGroup + h * V::kLanes, sum[t]);
  }
}

// All tokens [t0, t0 + count) in tiles of T (then smaller tiles for the rest).
template <class V, class Fmt, bool kInt8, int T>
void tile_times_tokens(const uint8_t* tile, int n_sub, const PreparedInput& in, int sub0, int t0, int count,
                       float* acc) {
  for (; count >= T; count -= T, t0 += T) {
    if constexpr (kInt8) {
      int8_tile_product<V, Fmt, T>(tile, n_sub, in, sub0, t0, acc);
    } else {
      f32_tile_product<V, Fmt, T>(tile, n_sub, in, sub0, t0, acc);
    }
  }
  if constexpr (T > 1) {
    if (count > 0) tile_times_tokens<V, Fmt, kInt8, T - 1>(tile, n_sub, in, sub0, t0, count, acc);
  }
}

// ---- matmul -------------------------------------------------------------------------------------------------------

template <class V, class Fmt, bool kInt8>
void matmul_rows(const MatmulArgs& m) {
  const WeightMatrix& w = *m.w;
  const PreparedInput& in = *m.in;
  const int64_t cols = w.cols;
  const int n_tokens = in.n_tokens;
  float* acc = m.scratch->acc.data();
  uint8_t* tile = m.scratch->tile;
  constexpr int kLaneGroups = kRowGroup / V::kLanes;
  constexpr int kTokens = kInt8 ? V::kTileTokensInt8 : V::kTileTokensF32;
  for (int64_t group = m.row_begin; group < m.row_end; group += kRowGroup) {
    LaneRows<V> lanes[kLaneGroups];
    for (int h = 0; h < kLaneGroups; ++h) lanes[h].init(w, group + h * V::kLanes);
    std::memset(acc, 0, sizeof(float) * size_t(n_tokens) * kRowGroup);
    for (int64_t c0 = 0; c0 < cols; c0 += kChunkCols) {
      const int64_t c1 = c0 + kChunkCols < cols ? c0 + kChunkCols : cols;
      const int n_sub = int((c1 - c0 + Fmt::kSub - 1) / Fmt::kSub);
      for (int h = 0; h < kLaneGroups; ++h) {
        for (int64_t blk = c0 / Fmt::kBlockCols; blk * Fmt::kBlockCols < c1; ++blk) {
          const int sub = int((blk * Fmt::kBlockCols - c0) / Fmt::kSub);
          if constexpr (kInt8) {
            Fmt::decode(lanes[h], blk, sub, ByteSink<V, Fmt>{tile, h});
          } else if constexpr (Fmt::kPlain) {
            Fmt::decode(lanes[h], blk, sub, FloatSink<V, Fmt>{tile, h}, cols);
          } else {
            Fmt::decode(lanes[h], blk, sub, FloatSink<V, Fmt>{tile, h});
          }
        }
      }
      tile_times_tokens<V, Fmt, kInt8, kTokens>(tile, n_sub, in, int(c0 / Fmt::kSub), 0, n_tokens, acc);
    }
    const int rows = int(m.row_end - group < kRowGroup ? m.row_end - group : kRowGroup);
    for (int t = 0; t < n_tokens; ++t) {
      float* y = m.y + int64_t(t) * m.y_stride + group;
      const float* a = acc + t * kRowGroup;
      for (int r = 0; r < rows; ++r) y[r] = m.accumulate ? y[r] + a[r] : a[r];
    }
  }
}

template <class V>
void matmul(const MatmulArgs& m) {
  const bool int8 = m.arithmetic == Arithmetic::Int8 && has_int8_kernel(m.w->dtype);
  switch (m.w->dtype) {
    case DType::F32: return matmul_rows<V, PlainFmt<DType::F32>, false>(m);
    case DType::F16: return matmul_rows<V, PlainFmt<DType::F16>, false>(m);
    case DType::BF16: return matmul_rows<V, PlainFmt<DType::BF16>, false>(m);
    case DType::Q8_0: return int8 ? matmul_rows<V, Q8_0Fmt, true>(m) : matmul_rows<V, Q8_0Fmt, false>(m);
    case DType::Q4_0: return int8 ? matmul_rows<V, Q4_0Fmt, true>(m) : matmul_rows<V, Q4_0Fmt, false>(m);
    case DType::Q4_1: return int8 ? matmul_rows<V, Q4_1Fmt, true>(m) : matmul_rows<V, Q4_1Fmt, false>(m);
    case DType::Q4_K: return int8 ? matmul_rows<V, Q4_KFmt, true>(m) : matmul_rows<V, Q4_KFmt, false>(m);
    case DType::Q5_K: return int8 ? matmul_rows<V, Q5_KFmt, true>(m) : matmul_rows<V, Q5_KFmt, false>(m);
    case DType::Q6_K: return int8 ? matmul_rows<V, Q6_KFmt, true>(m) : matmul_rows<V, Q6_KFmt, false>(m);
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

// One key or value row (head_dim a multiple of 16) as fp32 lanes.
template <class V>
typename V::F load_kv(const void* base, DType kv_dtype, int64_t at) {
  if (kv_dtype == DType::F32) return V::fload(static_cast<const float*>(base) + at);
  return V::load_halves(static_cast<const uint16_t*>(base) + at);
}

// q . k over head_dim: 16 lanes of column-ordered fused multiply-adds, then halving (as rmsnorm).
template <class V>
float dot_head(const float* q, const void* k, DType kv_dtype, int64_t at, int head_dim) {
  constexpr int kVecs = 16 / V::kLanes;
  typename V::F acc[kVecs];
  for (int h = 0; h < kVecs; ++h)
    acc[h] = V::fmul(V::fload(q + h * V::kLanes), load_kv<V>(k, kv_dtype, at + h * V::kLanes));
  for (int d = 16; d < head_dim; d += 16)
    for (int h = 0; h < kVecs; ++h)
      acc[h] = V::fma(V::fload(q + d + h * V::kLanes), load_kv<V>(k, kv_dtype, at + d + h * V::kLanes), acc[h]);
  return sum16<V>(acc);
}

// Up to kAttendHeads query heads of a group: an online softmax over blocks of 16 positions. Per head: m (running
// max), l (running sum of e^(s - m)), out (running weighted sum of values). Per block: m' = max(m, scores),
// rescale = e^(m - m'), p_i = e^(s_i - m'), l = l * rescale + sum(p) (halving), out = out * rescale, then
// out += p_i * v_i in position order; finally out /= l.
constexpr int kAttendHeads = 8;
constexpr int kAttendBlock = 16;

template <class V>
void attend_heads(const AttentionArgs& a, int g0, int heads) {
  using F = typename V::F;
  constexpr int kVecs = kAttendBlock / V::kLanes;
  const int hd = a.head_dim;
  float m[kAttendHeads], l[kAttendHeads];
  for (int g = 0; g < heads; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
    std::memset(a.out + int64_t(g0 + g) * hd, 0, sizeof(float) * size_t(hd));
  }
  for (int p0 = 0; p0 < a.len; p0 += kAttendBlock) {
    const int n = a.len - p0 < kAttendBlock ? a.len - p0 : kAttendBlock;
    alignas(64) float p[kAttendHeads][kAttendBlock];
    for (int i = 0; i < n; ++i) {
      const int64_t at = a.slots[p0 + i] * a.row;
      for (int g = 0; g < heads; ++g) p[g][i] = dot_head<V>(a.q + int64_t(g0 + g) * hd, a.k, a.kv_dtype, at, hd) * a.scale;
    }
    for (int g = 0; g < heads; ++g) {
      float block_max = p[g][0];
      for (int i = 1; i < n; ++i) block_max = p[g][i] > block_max ? p[g][i] : block_max;
      const float m_new = block_max > m[g] ? block_max : m[g];
      for (int i = n; i < kAttendBlock; ++i) p[g][i] = -INFINITY;  // e^-inf = 0
      F e[kVecs];
      for (int h = 0; h < kVecs; ++h)
        e[h] = exp_approx<V>(V::fsub(V::fload(p[g] + h * V::kLanes), V::fset(m_new)));
      float rescale_lanes[V::kLanes];
      V::fstore(rescale_lanes, exp_approx<V>(V::fset(m[g] - m_new)));
      const float rescale = rescale_lanes[0];
      l[g] = l[g] * rescale + sum16<V>(e);
      m[g] = m_new;
      for (int h = 0; h < kVecs; ++h) V::fstore(p[g] + h * V::kLanes, e[h]);
      float* out = a.out + int64_t(g0 + g) * hd;
      for (int d = 0; d < hd; d += V::kLanes) V::fstore(out + d, V::fmul(V::fload(out + d), V::fset(rescale)));
    }
    for (int i = 0; i < n; ++i) {
      const int64_t at = a.slots[p0 + i] * a.row;
      for (int g = 0; g < heads; ++g) {
        float* out = a.out + int64_t(g0 + g) * hd;
        const F weight = V::fset(p[g][i]);
        for (int d = 0; d < hd; d += V::kLanes)
          V::fstore(out + d, V::fma(weight, load_kv<V>(a.v, a.kv_dtype, at + d), V::fload(out + d)));
      }
    }
  }
  for (int g = 0; g < heads; ++g) {
    float* out = a.out + int64_t(g0 + g) * hd;
    const F inv = V::fset(1.0f / l[g]);
    for (int d = 0; d < hd; d += V::kLanes) V::fstore(out + d, V::fmul(V::fload(out + d), inv));
  }
}

template <class V>
void attend(const AttentionArgs& a) {
  for (int g0 = 0; g0 < a.group; g0 += kAttendHeads)
    attend_heads<V>(a, g0, a.group - g0 < kAttendHeads ? a.group - g0 : kAttendHeads);
}

// The table of one level.
template <class V>
KernelTable make_table(Isa isa) {
  return KernelTable{isa, &matmul<V>, &attend<V>, &rmsnorm<V>, &swiglu<V>, &store_kv<V>};
}

}  // namespace
}  // namespace cf::cpu
