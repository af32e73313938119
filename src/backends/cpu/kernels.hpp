// Compute kernels of the cpu backend, one table per instruction-set level (isa.hpp): weight-matrix products over
// every weight type, decode attention over the KV cache, and the element-wise pieces of a layer.
//
// Weight-matrix products (matmul) read weights repacked at load (packed_weights.hpp) in groups of kRowGroup = 16
// output rows, each row in a vector lane; a few tokens at a time share every loaded sub-block. Three arithmetics:
//  - fp32 ("exact"): activations stay fp32. Per row and sub-block (32 columns; 16 for Q6_K) of integer weights q with
//    scale a (and min b): s_j = sum over the sub-block's columns c = j (mod 4) of q_c * x_c (fused multiply-adds in
//    column order), block = (s_0 + s_1) + (s_2 + s_3), acc = fma(a, block, acc), then acc = fma(b, sum(x), acc)
//    (sum(x): prepare_row's block sum).
//    Plain weights (F32 / F16 / BF16) are the same with a = 1 (acc += block) and no min.
//  - int16: each token's activations are rounded per block of 32 to 16-bit integers x16 with an fp32 scale
//    (amax / 32639, round to nearest even), held as two signed byte planes x16 = 256 hi + lo; a sub-block's integer
//    dot product dot = 256 dot(q, hi) + dot(q, lo) (q the unsigned stored values) is exact (two byte dot products),
//    and acc = fma(a, float(dot) * scale, acc), then acc = fma(b, scale * sum(x16), acc) for types with a min b, or
//    with b = -offset * a for types whose values are q - offset (Q4_0, Q8_0; Q6_K with its 16-column half's sum).
//    Twice the int8 work, 2^-16 of a block's largest value instead of 2^-8.
//  - int8: each token's activations are quantised per block of 32 to int8 with an fp32 scale (amax / 127, round to
//    nearest even), like ggml's Q8_0; then as int16 with the one plane.
// Sub-blocks are summed in column order. Every level and every batch size follows this order exactly, so results are
// bit-identical across instruction sets, thread counts (rows are split among threads by whole groups) and batch
// sizes (a token's result does not depend on the other tokens of the batch).
#pragma once
#include <cstddef>
#include <cstdint>

#include "clusterfusion/runtime/weights.hpp"
#include "isa.hpp"
#include "packed_weights.hpp"

namespace cf::cpu {

inline constexpr int kActBlock = 32;  // columns per activation quantisation block

// How activations enter the weight-matrix products.
enum class Arithmetic : uint8_t { F32, Int16, Int8 };

// Whether the integer arithmetics (int16, int8) apply to a weight type (the block-quantised ones); plain types always
// use fp32.
bool has_integer_kernel(DType t);

// Byte planes of an arithmetic's integer activations: int16's high and low planes, int8's one, none for fp32.
constexpr int byte_planes(Arithmetic a) { return a == Arithmetic::Int16 ? 2 : a == Arithmetic::Int8 ? 1 : 0; }

// Largest |x16| of the int16 arithmetic: 127 * 257, the largest value whose two byte planes are both signed bytes.
inline constexpr int kInt16Max = 32639;

// Activations of one matrix product, prepared once and read by every row group (prepare_input below):
// n_tokens rows of `cols` values (cols a multiple of kActBlock; the source is zero-padded).
struct PreparedInput {
  Arithmetic arithmetic = Arithmetic::F32;  // what it was prepared for: the products' arithmetic
  int n_tokens = 0;
  int cols = 0;
  // fp32: the values, and their sums per 32-column block (KernelTable::prepare_row).
  const float* x = nullptr;  // [n_tokens][cols]
  const float* block_sum = nullptr;  // [n_tokens][cols / 32]
  // int16 / int8 (present when prepared for them), block-major so that a tile of tokens finds each block's values
  // and sums side by side: per (32-column block, token) a record of planes() x 32 signed bytes (int16: the high
  // plane, then the low one; int8: the values), the scale and scale * sum(q); per (16-column half, token)
  // scale * the half's sum(q). Sums are of the integer values (x16 for int16).
  const int8_t* q = nullptr;            // [cols / 32][n_tokens][planes][32], block b at q + b * q_block_bytes()
  const float* scale = nullptr;         // [cols / 32][n_tokens]
  const float* scaled_sum = nullptr;    // [cols / 32][n_tokens]
  const float* scaled_sum16 = nullptr;  // [cols / 16][n_tokens]

  int planes() const { return byte_planes(arithmetic); }
  // A block's records and 64 bytes more, so that the blocks of a tile do not all fall in the same cache sets (a
  // power-of-two stride would).
  int64_t q_block_bytes() const { return int64_t(n_tokens) * planes() * kActBlock + 64; }
  // The integer arithmetics' quantities of token t read back: its integer value at column c, and of block b (or
  // half h) the scale and scaled sums.
  int32_t value(int t, int c) const;
  float block_scale(int t, int b) const { return scale[int64_t(b) * n_tokens + t]; }
  float block_scaled_sum(int t, int b) const { return scaled_sum[int64_t(b) * n_tokens + t]; }
  float half_scaled_sum(int t, int h) const { return scaled_sum16[int64_t(h) * n_tokens + t]; }
};

// One token's row of a PreparedInput, filled by KernelTable::prepare_row from the (padded) values x: fp32 block sums
// at block_sum[b]; integer records at q + b * q_block_bytes, block quantities at [b * block_stride]
// (scaled_sum16: [(2 b + h) * block_stride]).
struct PreparedRow {
  const float* x = nullptr;
  int cols = 0;  // a multiple of 32
  float* block_sum = nullptr;  // fp32 arithmetic
  int64_t block_stride = 0;    // integer arithmetics: the tokens of the input
  int64_t q_block_bytes = 0;
  int8_t* q = nullptr;
  float* scale = nullptr;
  float* scaled_sum = nullptr;
  float* scaled_sum16 = nullptr;
};

struct KernelTable;

// Storage for a PreparedInput of up to max_tokens x max_cols.
class InputBuffer {
 public:
  void reserve(int max_tokens, int max_cols);
  // Copies (zero-padding to a multiple of 32 columns) and prepares n_tokens rows of `cols` values at x (row stride
  // x_stride) for `arithmetic`.
  const PreparedInput& prepare(const float* x, int n_tokens, int cols, int64_t x_stride, Arithmetic arithmetic,
                               const KernelTable& kernels);

 private:
  PreparedInput in_;
  int max_tokens_ = 0, max_cols_ = 0;
  std::vector<float> x_, block_sum_, scale_, scaled_sum_, scaled_sum16_;
  std::vector<int8_t> q_;
};

// y[t * y_stride + r] (+)= dot(row r of w, token t of in) for rows [row_begin, row_end) (row_begin a multiple of
// kRowGroup), every token of `in`, in the arithmetic `in` was prepared for (plain weight types: always fp32).
struct MatmulArgs {
  const PackedMatrix* w = nullptr;
  int64_t row_begin = 0, row_end = 0;
  const PreparedInput* in = nullptr;
  float* y = nullptr;
  int64_t y_stride = 0;
  bool accumulate = false;
};

// Decode attention of the `group` query heads sharing one KV head, for one token, over positions 0 .. len-1 of its
// sequence: cached position p has its key at k + slots[p] * row (elements) and its value likewise in v; keys and
// values are F32 or F16 (kv_dtype), head_dim a multiple of 16. q, out: [group][head_dim]. One online softmax over
// blocks of 16 positions (in position order, whatever the pages), the same on every level.
struct AttentionArgs {
  const float* q = nullptr;
  float* out = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  DType kv_dtype = DType::F32;
  const int64_t* slots = nullptr;
  int64_t row = 0;
  int len = 0;
  int group = 0;
  int head_dim = 0;
  float scale = 0.0f;
};

struct KernelTable {
  Isa isa;
  // fp32 arithmetic: the sums of each 32-column block (16 lanes x[c] + x[c + 16], then halving); int16 / int8: the
  // rounding of each block to integers (non-numbers count as 0).
  void (*prepare_row)(const PreparedRow& row, Arithmetic arithmetic);
  void (*matmul)(const MatmulArgs& args);
  void (*attend)(const AttentionArgs& args);
  // y[i] = x[i] * inv_rms * weight[i], inv_rms = 1 / sqrt(mean(x^2) + eps) (sum of squares in 16 lanes, halving).
  void (*rmsnorm)(const float* x, const float* weight, float eps, float* y, int n);
  // gate[i] = silu(gate[i]) * up[i]
  void (*swiglu)(float* gate, const float* up, int n);
  // KV append: dst (F32 or F16) = src, n a multiple of 16.
  void (*store_kv)(const float* src, void* dst, DType kv_dtype, int n);
};

const KernelTable& kernel_table(Isa isa);

// The per-level tables (defined in kernels_<level>.cpp; avx2/avx512 only on x86-64).
const KernelTable& portable_kernels();
const KernelTable& avx2_kernels();
const KernelTable& avx512_kernels();

}  // namespace cf::cpu
