// Helpers of the cuda-unfused GPU tests: skipping without a GPU, deterministic random data, page tables, and the
// "naive low-precision" variants of the reference blocks (the reference with intermediates rounded where the GPU
// path rounds: see src/backends/cuda_unfused/ops.hpp), which rule 2 of the tolerance policy needs.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "clusterfusion/common/half.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/cuda/device.hpp"
#include "clusterfusion/reference/decoder.hpp"
#include "clusterfusion/reference/tolerance.hpp"
#include "clusterfusion/backends/cuda_unfused/ops.hpp"

#define CF_REQUIRE_GPU()                                                                   \
  do {                                                                                     \
    const std::string cf_no_gpu_reason_ = ::cf::cuda::gpu_unavailable_reason();            \
    if (!cf_no_gpu_reason_.empty()) GTEST_SKIP() << "no usable CUDA GPU: " << cf_no_gpu_reason_; \
  } while (0)

namespace cf::test {

using cuda_unfused::DType;

template <typename T>
constexpr DType dtype_of() {
  static_assert(std::is_same_v<T, half> || std::is_same_v<T, bfloat16>);
  return std::is_same_v<T, half> ? DType::F16 : DType::BF16;
}

// splitmix64: fast and the same on every platform (std distributions are not).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [lo, hi).
  float uniform(float lo, float hi) { return lo + (hi - lo) * float(next() >> 40) * (1.0f / 16777216.0f); }
  int below(int n) { return int(next() % uint64_t(n)); }

 private:
  uint64_t state_;
};

template <typename T>
std::vector<T> random_values(size_t n, uint64_t seed, float lo, float hi) {
  Rng rng(seed);
  std::vector<T> v(n);
  for (auto& x : v) x = from_float<T>(rng.uniform(lo, hi));
  return v;
}

template <typename T>
std::vector<float> to_floats(std::span<const T> v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = to_float(v[i]);
  return out;
}
template <typename T>
std::vector<float> to_floats(const std::vector<T>& v) {
  return to_floats(std::span<const T>(v));
}

// Index of the first element whose bits differ, -1 when equal.
template <typename T>
int64_t first_bit_difference(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return int64_t(i);
  return -1;
}

// Page table of `kv_lens.size()` sequences (lengths after this step's append). page_size 0 = contiguous: one page
// per sequence of page_size = capacity. Pages are handed out in a shuffled order and a few spare pages exist, so
// indexing mistakes read wrong data.
struct HostPageTable {
  int page_size = 0;
  int n_pages = 0;
  std::vector<int32_t> indptr, indices, last_page_len;
};

inline HostPageTable make_page_table(const std::vector<int>& kv_lens, int page_size, int capacity, uint64_t seed) {
  HostPageTable t;
  const bool contiguous = page_size == 0;
  t.page_size = contiguous ? capacity : page_size;
  std::vector<int> pages_per_seq;
  int total = 0;
  for (int len : kv_lens) {
    const int n = contiguous ? 1 : (len + t.page_size - 1) / t.page_size;
    pages_per_seq.push_back(n);
    total += n;
  }
  t.n_pages = total + 3;  // spare pages nobody owns
  std::vector<int32_t> order(size_t(t.n_pages));
  std::iota(order.begin(), order.end(), 0);
  Rng rng(seed);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[size_t(rng.below(int(i)))]);
  t.indptr.push_back(0);
  size_t next = 0;
  for (size_t s = 0; s < kv_lens.size(); ++s) {
    for (int p = 0; p < pages_per_seq[s]; ++p) t.indices.push_back(order[next++]);
    t.indptr.push_back(int32_t(t.indices.size()));
    t.last_page_len.push_back(int32_t(kv_lens[s] - (pages_per_seq[s] - 1) * t.page_size));
  }
  return t;
}

// Physical element offset of entry `pos` of sequence `seq` (row start).
inline int64_t slot_offset(const HostPageTable& t, int seq, int pos, int64_t row_elements) {
  const int32_t page = t.indices[size_t(t.indptr[size_t(seq)] + pos / t.page_size)];
  return (int64_t(page) * t.page_size + pos % t.page_size) * row_elements;
}

// Device copy of a page table.
struct DevicePageTable {
  dev::DeviceBuffer<int32_t> indptr, indices, last_page_len;
  explicit DevicePageTable(const HostPageTable& t)
      : indptr(dev::to_device(t.indptr, "kv_indptr")),
        indices(dev::to_device(t.indices, "kv_indices")),
        last_page_len(dev::to_device(t.last_page_len, "kv_last_page_len")) {}
};

// ---- the tolerance policy (rules 1 and 2 with the rounding-noise fallback, docs/tolerance.md) -------------------

using ref::check_policy;
using ref::PolicyCheck;

// ---- naive low-precision references ----------------------------------------------------------------------------

// reference::attention_block with the GPU path's rounding points: x, the attention output and out rounded to T.
template <typename T>
void naive_attention_block(const T* hidden, const T* residual, std::vector<float>& out,
                           const ref::AttentionWeights<float>& w, const ref::DecoderShape& s, const int32_t* positions,
                           int batch, const ref::PagedKv<T>& kv) {
  std::vector<T> x(size_t(s.hidden)), residual_sum(size_t(s.hidden)), attn(size_t(s.q_dim())), o(size_t(s.hidden));
  std::vector<float> q(size_t(s.q_dim())), k(size_t(s.kv_dim())), v(size_t(s.kv_dim()));
  out.assign(size_t(batch) * size_t(s.hidden), 0.0f);
  const int64_t kv_row = s.kv_dim();
  for (int b = 0; b < batch; ++b) {
    const T* hb = hidden + int64_t(b) * s.hidden;
    if (residual)
      ref::add_rmsnorm(hb, residual + int64_t(b) * s.hidden, w.norm, residual_sum.data(), x.data(), s.hidden, s.eps);
    else
      ref::rmsnorm(hb, w.norm, x.data(), s.hidden, s.eps);
    ref::matvec(w.wq, x.data(), q.data(), s.q_dim(), s.hidden, w.bq);
    ref::matvec(w.wk, x.data(), k.data(), s.kv_dim(), s.hidden, w.bk);
    ref::matvec(w.wv, x.data(), v.data(), s.kv_dim(), s.hidden, w.bv);
    ref::rope(q.data(), q.data(), s.n_heads, s.head_dim, s.rot_dim, positions[b], s.rope_theta, s.rope_style);
    ref::rope(k.data(), k.data(), s.n_kv_heads, s.head_dim, s.rot_dim, positions[b], s.rope_theta, s.rope_style);
    const int n_pages = kv.kv_indptr[b + 1] - kv.kv_indptr[b];
    const int kv_len = ref::paged_kv_len(n_pages, kv.kv_last_page_len[b], kv.page_size);
    const int32_t* page_ids = kv.kv_indices + kv.kv_indptr[b];
    const int slot_pos = kv_len - 1;
    const int64_t slot = (int64_t(page_ids[slot_pos / kv.page_size]) * kv.page_size + slot_pos % kv.page_size) * kv_row;
    for (int i = 0; i < s.kv_dim(); ++i) {
      kv.k_pages[slot + i] = from_float<T>(k[size_t(i)]);
      kv.v_pages[slot + i] = from_float<T>(v[size_t(i)]);
    }
    const int32_t last_len = kv.kv_last_page_len[b];
    const int32_t one_seq_indptr[2] = {0, n_pages};
    ref::decode_attention_paged(q.data(), kv.k_pages, kv.v_pages, attn.data(), 1, one_seq_indptr, page_ids, &last_len,
                                kv.page_size, ref::heads_of(s), ref::default_attention_scale(s.head_dim));
    ref::matvec(w.wo, attn.data(), o.data(), s.hidden, s.q_dim());
    for (int i = 0; i < s.hidden; ++i) out[size_t(b) * size_t(s.hidden) + size_t(i)] = to_float(o[size_t(i)]);
  }
}

// reference::ffn_block with x, the SiLU*up activation and out rounded to T.
template <typename T>
void naive_ffn_block(const T* hidden, const T* residual, std::vector<float>& out, const ref::FfnWeights<float>& w,
                     const ref::DecoderShape& s, int batch) {
  std::vector<T> x(size_t(s.hidden)), residual_sum(size_t(s.hidden)), act(size_t(s.ffn_hidden)), o(size_t(s.hidden));
  std::vector<float> gate(size_t(s.ffn_hidden)), up(size_t(s.ffn_hidden));
  out.assign(size_t(batch) * size_t(s.hidden), 0.0f);
  for (int b = 0; b < batch; ++b) {
    const T* hb = hidden + int64_t(b) * s.hidden;
    if (residual)
      ref::add_rmsnorm(hb, residual + int64_t(b) * s.hidden, w.norm, residual_sum.data(), x.data(), s.hidden, s.eps);
    else
      ref::rmsnorm(hb, w.norm, x.data(), s.hidden, s.eps);
    ref::matvec(w.w_gate, x.data(), gate.data(), s.ffn_hidden, s.hidden);
    ref::matvec(w.w_up, x.data(), up.data(), s.ffn_hidden, s.hidden);
    ref::swiglu(gate.data(), up.data(), act.data(), s.ffn_hidden);
    ref::matvec(w.w_down, act.data(), o.data(), s.hidden, s.ffn_hidden);
    for (int i = 0; i < s.hidden; ++i) out[size_t(b) * size_t(s.hidden) + size_t(i)] = to_float(o[size_t(i)]);
  }
}

// reference::lm_head with x rounded to T (logits stay fp32, as cuBLAS writes them).
template <typename T>
void naive_lm_head(const T* hidden, const T* residual, const float* norm, const float* w_out, std::vector<float>& logits,
                   const ref::DecoderShape& s, int vocab, int batch) {
  std::vector<T> x(size_t(s.hidden)), residual_sum(size_t(s.hidden));
  logits.assign(size_t(batch) * size_t(vocab), 0.0f);
  for (int b = 0; b < batch; ++b) {
    if (residual)
      ref::add_rmsnorm(hidden + int64_t(b) * s.hidden, residual + int64_t(b) * s.hidden, norm, residual_sum.data(),
                       x.data(), s.hidden, s.eps);
    else
      ref::rmsnorm(hidden + int64_t(b) * s.hidden, norm, x.data(), s.hidden, s.eps);
    ref::matvec(w_out, x.data(), logits.data() + size_t(b) * size_t(vocab), vocab, s.hidden);
  }
}

}  // namespace cf::test
