// Reference decode attention against a float64 full-softmax computation, the split-KV (online-softmax merge) form
// against the two-pass form, and the paged cache against the contiguous one.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "clusterfusion/reference/attention.hpp"

namespace {

template <typename T>
std::vector<T> random_vector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<T> v(n);
  for (auto& x : v) x = cf::from_float<T>(dist(rng));
  return v;
}

// out[h] = sum_t p[h][t] v[t], p = exp(s - max s) / sum exp(s - max s), s[t] = q.k[t] / sqrt(d), all in double.
// The KV head of query head h is found as floor(h * n_kv_heads / n_heads).
template <typename T, typename KV>
std::vector<double> attention_float64(const std::vector<T>& q, const std::vector<KV>& k, const std::vector<KV>& v,
                                      int kv_len, int n_heads, int n_kv_heads, int head_dim) {
  std::vector<double> out(size_t(n_heads) * head_dim, 0.0);
  for (int h = 0; h < n_heads; ++h) {
    const int g = h * n_kv_heads / n_heads;
    std::vector<double> s(static_cast<size_t>(kv_len));
    for (int t = 0; t < kv_len; ++t) {
      double dot = 0;
      for (int d = 0; d < head_dim; ++d)
        dot += double(cf::to_float(q[size_t(h * head_dim + d)])) *
               double(cf::to_float(k[(size_t(t) * n_kv_heads + g) * head_dim + d]));
      s[size_t(t)] = dot / std::sqrt(double(head_dim));
    }
    const double max_s = *std::max_element(s.begin(), s.end());
    double z = 0;
    for (double& e : s) z += (e = std::exp(e - max_s));
    for (int t = 0; t < kv_len; ++t)
      for (int d = 0; d < head_dim; ++d)
        out[size_t(h * head_dim + d)] += s[size_t(t)] / z * double(cf::to_float(v[(size_t(t) * n_kv_heads + g) * head_dim + d]));
  }
  return out;
}

struct Case {
  int n_heads, n_kv_heads, head_dim, kv_len;
};

template <typename T>
class RefAttention : public ::testing::Test {};
using StorageTypes = ::testing::Types<float, cf::half, cf::bfloat16>;
TYPED_TEST_SUITE(RefAttention, StorageTypes);

TYPED_TEST(RefAttention, ContiguousMatchesFullSoftmaxInFloat64) {
  using T = TypeParam;
  for (const Case c : {Case{4, 4, 64, 1}, Case{9, 3, 64, 37}, Case{8, 1, 128, 300}, Case{32, 8, 128, 129}}) {
    const auto q = random_vector<T>(size_t(c.n_heads) * c.head_dim, 1, 2.0f);
    const auto k = random_vector<T>(size_t(c.kv_len) * c.n_kv_heads * c.head_dim, 2, 2.0f);
    const auto v = random_vector<T>(k.size(), 3);
    std::vector<float> out(q.size());
    const cf::ref::AttentionShape shape{c.n_heads, c.n_kv_heads, c.head_dim};
    cf::ref::decode_attention(q.data(), k.data(), v.data(), out.data(), c.kv_len, shape,
                              cf::ref::default_attention_scale(c.head_dim));
    const auto want = attention_float64(q, k, v, c.kv_len, c.n_heads, c.n_kv_heads, c.head_dim);
    for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], want[i], 2e-5) << "heads " << c.n_heads << " len " << c.kv_len << " i " << i;
  }
}

TEST(RefAttentionEmpty, EmptyCacheGivesZeros) {
  const std::vector<float> q(64, 1.0f), kv;
  std::vector<float> out(64, 7.0f);
  cf::ref::decode_attention(q.data(), kv.data(), kv.data(), out.data(), 0, {1, 1, 64}, 0.125f);
  for (float o : out) EXPECT_EQ(o, 0.0f);
}

TEST(RefAttentionState, SplitKvEqualsTwoPassForAnySplitCount) {
  const cf::ref::AttentionShape shape{8, 2, 64};
  const int kv_len = 203;
  const auto q = random_vector<float>(8 * 64, 4, 3.0f);
  const auto k = random_vector<float>(size_t(kv_len) * 2 * 64, 5, 3.0f), v = random_vector<float>(k.size(), 6);
  std::vector<float> two_pass(q.size()), split(q.size());
  cf::ref::decode_attention(q.data(), k.data(), v.data(), two_pass.data(), kv_len, shape, 0.125f);
  for (int n_splits : {1, 2, 3, 7, 16, 203, 300}) {  // 300 > kv_len: some chunks are empty
    cf::ref::decode_attention_split(q.data(), k.data(), v.data(), split.data(), kv_len, shape, 0.125f, n_splits);
    for (size_t i = 0; i < split.size(); ++i) EXPECT_NEAR(split[i], two_pass[i], 1e-5) << n_splits << " " << i;
  }
}

TEST(RefAttentionState, MergeIsOrderIndependentAndEmptyIsIdentity) {
  const cf::ref::AttentionShape shape{1, 1, 16};
  const auto q = random_vector<float>(16, 7, 4.0f);
  const auto k = random_vector<float>(30 * 16, 8, 4.0f), v = random_vector<float>(30 * 16, 9);
  const auto a = cf::ref::attention_state(q.data(), k.data(), v.data(), 0, 0, 10, shape, 0.25f);
  const auto b = cf::ref::attention_state(q.data(), k.data(), v.data(), 0, 10, 18, shape, 0.25f);
  const auto c = cf::ref::attention_state(q.data(), k.data(), v.data(), 0, 18, 30, shape, 0.25f);
  const auto all = cf::ref::attention_state(q.data(), k.data(), v.data(), 0, 0, 30, shape, 0.25f);
  const auto left = merge(merge(a, b), c), right = merge(a, merge(c, b));
  std::vector<float> out_all(16), out_left(16), out_right(16), out_a(16), out_a_empty(16);
  all.finish(out_all.data());
  left.finish(out_left.data());
  right.finish(out_right.data());
  for (int d = 0; d < 16; ++d) {
    EXPECT_NEAR(out_left[d], out_all[d], 1e-6);
    EXPECT_NEAR(out_right[d], out_all[d], 1e-6);
  }
  EXPECT_NEAR(left.m, all.m, 0.0);
  EXPECT_NEAR(left.l, all.l, 1e-5 * all.l);
  const cf::ref::SoftmaxState empty(16);
  merge(a, empty).finish(out_a_empty.data());
  a.finish(out_a.data());
  EXPECT_EQ(out_a, out_a_empty);
  merge(empty, a).finish(out_a_empty.data());
  EXPECT_EQ(out_a, out_a_empty);
}

TYPED_TEST(RefAttention, PagedEqualsContiguousWithScatteredPages) {
  using T = TypeParam;
  const cf::ref::AttentionShape shape{6, 2, 64};
  const int page_size = 16, n_pages = 20;
  const std::vector<int> lens = {1, 16, 17, 70};  // full page, page + 1, several pages
  std::vector<int32_t> page_order(n_pages);
  std::iota(page_order.begin(), page_order.end(), 0);
  std::shuffle(page_order.begin(), page_order.end(), std::mt19937(10));
  const int64_t row = 2 * 64;
  auto k_pages = random_vector<T>(size_t(n_pages) * page_size * row, 11);
  auto v_pages = random_vector<T>(k_pages.size(), 12);
  std::vector<int32_t> indptr = {0}, indices, last_len;
  size_t next_page = 0;
  for (int len : lens) {
    const int pages = (len + page_size - 1) / page_size;
    for (int p = 0; p < pages; ++p) indices.push_back(page_order[next_page++]);
    indptr.push_back(int32_t(indices.size()));
    last_len.push_back(len - (pages - 1) * page_size);
  }
  const int batch = int(lens.size());
  const auto q = random_vector<T>(size_t(batch) * 6 * 64, 13, 2.0f);
  std::vector<float> paged(q.size());
  cf::ref::decode_attention_paged(q.data(), k_pages.data(), v_pages.data(), paged.data(), batch, indptr.data(),
                                  indices.data(), last_len.data(), page_size, shape, 0.125f);
  for (int b = 0; b < batch; ++b) {
    // Copy sequence b's entries, in logical order, into a contiguous cache.
    std::vector<T> k, v;
    for (int t = 0; t < lens[size_t(b)]; ++t) {
      const size_t src = (size_t(indices[size_t(indptr[size_t(b)] + t / page_size)]) * page_size + t % page_size) * row;
      k.insert(k.end(), k_pages.begin() + long(src), k_pages.begin() + long(src + row));
      v.insert(v.end(), v_pages.begin() + long(src), v_pages.begin() + long(src + row));
    }
    std::vector<float> contiguous(6 * 64);
    cf::ref::decode_attention(q.data() + b * 6 * 64, k.data(), v.data(), contiguous.data(), lens[size_t(b)], shape,
                              0.125f);
    for (int i = 0; i < 6 * 64; ++i) EXPECT_EQ(paged[size_t(b * 6 * 64 + i)], contiguous[size_t(i)]) << b << " " << i;
  }
}

}  // namespace
