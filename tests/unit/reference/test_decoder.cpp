// Reference decoder blocks (run token by token over a paged cache) against one float64 computation of the whole
// layer over the sequence at once: causal attention as a masked score matrix, RoPE as complex rotation.
#include <gtest/gtest.h>

#include <complex>
#include <random>
#include <vector>

#include "clusterfusion/reference/decoder.hpp"

namespace {

std::vector<float> random_vector(size_t n, uint32_t seed, float scale = 1.0f, float offset = 0.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = offset + dist(rng);
  return v;
}

using Matrix = std::vector<std::vector<double>>;  // [rows][cols]

Matrix multiply_by_transposed(const Matrix& x, const std::vector<float>& w, int out_dim) {  // x [n, in] * w[out, in]^T
  Matrix y(x.size(), std::vector<double>(size_t(out_dim), 0.0));
  const size_t in = x[0].size();
  for (size_t t = 0; t < x.size(); ++t)
    for (int o = 0; o < out_dim; ++o)
      for (size_t i = 0; i < in; ++i) y[t][size_t(o)] += x[t][i] * w[size_t(o) * in + i];
  return y;
}

Matrix rmsnorm_rows(const Matrix& x, const std::vector<float>& w, double eps) {
  Matrix y = x;
  for (auto& row : y) {
    double ms = 0;
    for (double v : row) ms += v * v;
    ms /= double(row.size());
    for (size_t i = 0; i < row.size(); ++i) row[i] = row[i] / std::sqrt(ms + eps) * w[i];
  }
  return y;
}

void rotate_rows(Matrix& x, int n_heads, int head_dim, double theta, cf::RopeStyle style) {
  for (size_t t = 0; t < x.size(); ++t)
    for (int h = 0; h < n_heads; ++h)
      for (int k = 0; k < head_dim / 2; ++k) {
        const size_t a = size_t(h * head_dim + (style == cf::RopeStyle::NeoX ? k : 2 * k));
        const size_t b = size_t(h * head_dim + (style == cf::RopeStyle::NeoX ? k + head_dim / 2 : 2 * k + 1));
        const auto z = std::complex<double>(x[t][a], x[t][b]) *
                       std::polar(1.0, double(t) / std::pow(theta, 2.0 * k / head_dim));
        x[t][a] = z.real();
        x[t][b] = z.imag();
      }
}

TEST(RefDecoder, AttentionAndFfnBlocksMatchFloat64LayerOverASequence) {
  cf::ref::DecoderShape s;
  s.hidden = 48;
  s.n_heads = 4;
  s.n_kv_heads = 2;
  s.head_dim = 16;
  s.ffn_hidden = 80;
  s.rot_dim = 16;
  s.rope_theta = 10000.0f;
  s.eps = 1e-5f;
  const int seq_len = 11, page_size = 4;
  for (auto style : {cf::RopeStyle::NeoX, cf::RopeStyle::GPTJ}) {
    s.rope_style = style;
    const auto attn_norm = random_vector(size_t(s.hidden), 1, 0.2f, 1.0f);
    const auto wq = random_vector(size_t(s.q_dim()) * s.hidden, 2, 0.3f);
    const auto wk = random_vector(size_t(s.kv_dim()) * s.hidden, 3, 0.3f);
    const auto wv = random_vector(size_t(s.kv_dim()) * s.hidden, 4, 0.3f);
    const auto bq = random_vector(size_t(s.q_dim()), 5, 0.1f);
    const auto bk = random_vector(size_t(s.kv_dim()), 6, 0.1f);
    const auto bv = random_vector(size_t(s.kv_dim()), 7, 0.1f);
    const auto wo = random_vector(size_t(s.hidden) * s.q_dim(), 8, 0.3f);
    const auto ffn_norm = random_vector(size_t(s.hidden), 9, 0.2f, 1.0f);
    const auto wg = random_vector(size_t(s.ffn_hidden) * s.hidden, 10, 0.3f);
    const auto wu = random_vector(size_t(s.ffn_hidden) * s.hidden, 11, 0.3f);
    const auto wd = random_vector(size_t(s.hidden) * s.ffn_hidden, 12, 0.3f);
    const auto hidden = random_vector(size_t(seq_len) * s.hidden, 13);
    const auto residual = random_vector(size_t(seq_len) * s.hidden, 14);

    // Reference blocks, one token at a time; pages handed out in a scrambled order.
    const std::vector<int32_t> pages = {2, 0, 3};
    std::vector<float> k_pages(size_t(4) * page_size * s.kv_dim()), v_pages(k_pages.size());
    cf::ref::AttentionWeights<float> aw{attn_norm.data(), wq.data(), wk.data(), wv.data(),
                                        bq.data(),        bk.data(), bv.data(), wo.data()};
    cf::ref::FfnWeights<float> fw{ffn_norm.data(), wg.data(), wu.data(), wd.data()};
    std::vector<float> attn_out(size_t(seq_len) * s.hidden), res1(attn_out.size()), ffn_out(attn_out.size()),
        res2(attn_out.size());
    for (int t = 0; t < seq_len; ++t) {
      const int32_t n_pages = t / page_size + 1, last_len = t % page_size + 1, position = t;
      const int32_t indptr[2] = {0, n_pages};
      cf::ref::PagedKv<float> kv{k_pages.data(), v_pages.data(), page_size, indptr, pages.data(), &last_len};
      const size_t off = size_t(t) * s.hidden;
      cf::ref::attention_block(hidden.data() + off, residual.data() + off, res1.data() + off, attn_out.data() + off,
                               aw, s, &position, 1, kv);
      cf::ref::ffn_block(attn_out.data() + off, res1.data() + off, res2.data() + off, ffn_out.data() + off, fw, s, 1);
    }

    // Float64 over the whole sequence.
    Matrix sum(size_t(seq_len), std::vector<double>(size_t(s.hidden)));
    for (int t = 0; t < seq_len; ++t)
      for (int i = 0; i < s.hidden; ++i) sum[size_t(t)][size_t(i)] = double(hidden[size_t(t * s.hidden + i)]) + residual[size_t(t * s.hidden + i)];
    const Matrix x = rmsnorm_rows(sum, attn_norm, s.eps);
    Matrix q = multiply_by_transposed(x, wq, s.q_dim()), k = multiply_by_transposed(x, wk, s.kv_dim()),
           v = multiply_by_transposed(x, wv, s.kv_dim());
    for (int t = 0; t < seq_len; ++t) {
      for (int i = 0; i < s.q_dim(); ++i) q[size_t(t)][size_t(i)] += bq[size_t(i)];
      for (int i = 0; i < s.kv_dim(); ++i) {
        k[size_t(t)][size_t(i)] += bk[size_t(i)];
        v[size_t(t)][size_t(i)] += bv[size_t(i)];
      }
    }
    rotate_rows(q, s.n_heads, s.head_dim, s.rope_theta, style);
    rotate_rows(k, s.n_kv_heads, s.head_dim, s.rope_theta, style);
    Matrix attn(size_t(seq_len), std::vector<double>(size_t(s.q_dim()), 0.0));
    for (int h = 0; h < s.n_heads; ++h) {
      const int g = h / (s.n_heads / s.n_kv_heads);
      for (int i = 0; i < seq_len; ++i) {
        std::vector<double> p(size_t(seq_len), 0.0);  // masked row of the score matrix: j > i gets weight 0
        double z = 0;
        for (int j = 0; j <= i; ++j) {
          double dot = 0;
          for (int d = 0; d < s.head_dim; ++d) dot += q[size_t(i)][size_t(h * s.head_dim + d)] * k[size_t(j)][size_t(g * s.head_dim + d)];
          z += (p[size_t(j)] = std::exp(dot / std::sqrt(double(s.head_dim))));
        }
        for (int j = 0; j <= i; ++j)
          for (int d = 0; d < s.head_dim; ++d) attn[size_t(i)][size_t(h * s.head_dim + d)] += p[size_t(j)] / z * v[size_t(j)][size_t(g * s.head_dim + d)];
      }
    }
    const Matrix want_attn_out = multiply_by_transposed(attn, wo, s.hidden);
    Matrix sum2 = sum;
    for (int t = 0; t < seq_len; ++t)
      for (int i = 0; i < s.hidden; ++i) sum2[size_t(t)][size_t(i)] += want_attn_out[size_t(t)][size_t(i)];
    const Matrix x2 = rmsnorm_rows(sum2, ffn_norm, s.eps);
    const Matrix g = multiply_by_transposed(x2, wg, s.ffn_hidden), u = multiply_by_transposed(x2, wu, s.ffn_hidden);
    Matrix act = g;
    for (int t = 0; t < seq_len; ++t)
      for (int i = 0; i < s.ffn_hidden; ++i) {
        const double gi = g[size_t(t)][size_t(i)];
        act[size_t(t)][size_t(i)] = gi / (1 + std::exp(-gi)) * u[size_t(t)][size_t(i)];
      }
    const Matrix want_ffn_out = multiply_by_transposed(act, wd, s.hidden);

    for (int t = 0; t < seq_len; ++t)
      for (int i = 0; i < s.hidden; ++i) {
        const size_t at = size_t(t * s.hidden + i);
        EXPECT_NEAR(res1[at], sum[size_t(t)][size_t(i)], 1e-6);
        EXPECT_NEAR(attn_out[at], want_attn_out[size_t(t)][size_t(i)], 2e-5) << "token " << t << " dim " << i;
        EXPECT_NEAR(res2[at], sum2[size_t(t)][size_t(i)], 2e-5);
        EXPECT_NEAR(ffn_out[at], want_ffn_out[size_t(t)][size_t(i)], 2e-5) << "token " << t << " dim " << i;
      }
  }
}

}  // namespace
