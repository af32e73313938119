// cuda-unfused MLA block vs cf::ref::mla_decode after add + RMSNorm (tolerance policy, docs/tolerance.md): output
// within tolerance and not worse than 2x the naive low-precision reference (rounded where the GPU path rounds:
// deepseek.hpp); residual_out bit-exact; the appended latent row's k_pe bit-exact (RoPE of the GPU's own kv_a
// projection with the table) and its c_kv within tolerance; every other cache row unchanged; the same bits on a
// second run and under CUDA-graph replay; bad positions and page ids reported by check_status().
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>

#include "clusterfusion/cuda/graph.hpp"
#include "clusterfusion/cuda/stream.hpp"
#include "deepseek_util.hpp"

namespace cf::test {
namespace {

using dev::DeviceBuffer;
using dev::to_device;
namespace cu = cuda_unfused;

struct MlaCase {
  std::string name;
  ref::MlaShape shape;
  std::vector<int> kv_lens;  // per token (= sequence) after the append; batch = kv_lens.size()
  int page_size = 16;        // 0: one page per sequence
  bool residual = true;
  bool repeat_checks = true;
};

std::string describe(const MlaCase& c) {
  const auto& s = c.shape;
  char line[256];
  std::snprintf(line, sizeof line, "%s: hidden %d, heads %d, q_lora %d, r %d, rope %d, nope %d, v %d, batch %zu, page %d%s",
                c.name.c_str(), s.hidden, s.n_heads, s.q_lora_rank, s.kv_lora_rank, s.qk_rope(), s.qk_nope, s.v_head,
                c.kv_lens.size(), c.page_size, c.residual ? "" : ", no residual");
  return line;
}
void PrintTo(const MlaCase& c, std::ostream* os) { *os << describe(c); }

// Host data of one case: weights (T and float copies), activations, the latent pool and its page table.
template <typename T>
struct MlaHostData {
  std::vector<T> hidden, residual, norm, w_q, w_q_a, q_a_norm, w_q_b, w_kv_a, kv_a_norm, w_uk, w_uv, w_o, pages;
  std::vector<float> f_norm, f_w_q, f_w_q_a, f_q_a_norm, f_w_q_b, f_w_kv_a, f_kv_a_norm, f_kv_b, f_w_o;
  HostPageTable pt;
  std::vector<int32_t> positions;

  ref::MlaWeights<float> reference_weights() const {
    ref::MlaWeights<float> w;
    w.wq = f_w_q.empty() ? nullptr : f_w_q.data();
    w.wq_a = f_w_q_a.empty() ? nullptr : f_w_q_a.data();
    w.q_a_norm = f_q_a_norm.empty() ? nullptr : f_q_a_norm.data();
    w.wq_b = f_w_q_b.empty() ? nullptr : f_w_q_b.data();
    w.wkv_a = f_w_kv_a.data();
    w.kv_a_norm = f_kv_a_norm.data();
    w.wkv_b = f_kv_b.data();
    w.wo = f_w_o.data();
    return w;
  }
};

template <typename T>
MlaHostData<T> make_mla_data(const MlaCase& c, uint64_t seed) {
  const ref::MlaShape& s = c.shape;
  const int batch = int(c.kv_lens.size()), row = s.latent_row();
  const size_t d = size_t(s.hidden), H = size_t(s.n_heads), r = size_t(s.kv_lora_rank);
  auto w = [&](size_t n, int in_dim, uint64_t k) {
    const float a = 2.0f / std::sqrt(float(in_dim));
    return random_values<T>(n, seed + k, -a, a);
  };
  MlaHostData<T> h;
  h.hidden = random_values<T>(size_t(batch) * d, seed + 1, -1.0f, 1.0f);
  h.residual = random_values<T>(size_t(batch) * d, seed + 2, -1.0f, 1.0f);
  h.norm = random_values<T>(d, seed + 3, 0.5f, 1.5f);
  if (s.q_lora_rank == 0) {
    h.w_q = w(size_t(s.n_heads) * s.q_head() * d, s.hidden, 4);
  } else {
    h.w_q_a = w(size_t(s.q_lora_rank) * d, s.hidden, 5);
    h.q_a_norm = random_values<T>(size_t(s.q_lora_rank), seed + 6, 0.5f, 1.5f);
    h.w_q_b = w(size_t(s.n_heads) * s.q_head() * s.q_lora_rank, s.q_lora_rank, 7);
  }
  h.w_kv_a = w(size_t(row) * d, s.hidden, 8);
  h.kv_a_norm = random_values<T>(r, seed + 9, 0.5f, 1.5f);
  h.w_uk = w(H * s.qk_nope * r, s.qk_nope, 10);  // q_lat = W_UK^T q_nope sums over nope
  h.w_uv = w(H * s.v_head * r, s.kv_lora_rank, 11);
  h.w_o = w(d * H * s.v_head, s.n_heads * s.v_head, 12);
  const int max_len = *std::max_element(c.kv_lens.begin(), c.kv_lens.end());
  h.pt = make_page_table(c.kv_lens, c.page_size, max_len + 5, seed + 13);
  h.pages = random_values<T>(size_t(h.pt.n_pages) * h.pt.page_size * row, seed + 14, -1.0f, 1.0f);
  for (int len : c.kv_lens) h.positions.push_back(len - 1);
  h.f_norm = to_floats(h.norm);
  h.f_w_q = to_floats(h.w_q);
  h.f_w_q_a = to_floats(h.w_q_a);
  h.f_q_a_norm = to_floats(h.q_a_norm);
  h.f_w_q_b = to_floats(h.w_q_b);
  h.f_w_kv_a = to_floats(h.w_kv_a);
  h.f_kv_a_norm = to_floats(h.kv_a_norm);
  h.f_kv_b = kv_b_rows(to_floats(h.w_uk), to_floats(h.w_uv), s);
  h.f_w_o = to_floats(h.w_o);
  return h;
}

// Rows 0 .. kv_len - 2 of sequence b, contiguous, with room for the appended row.
template <typename T>
std::vector<T> sequence_rows(const MlaHostData<T>& h, int b, int kv_len, int row) {
  std::vector<T> rows(size_t(kv_len) * row);
  for (int t = 0; t + 1 < kv_len; ++t) {
    const int64_t at = slot_offset(h.pt, b, t, row);
    std::copy_n(h.pages.begin() + at, row, rows.begin() + int64_t(t) * row);
  }
  return rows;
}

// ref::mla_decode with the GPU path's rounding points: x, q_a after its norm, q_nope, o_lat, o and out in T.
template <typename T>
void naive_mla_token(const T* x, const ref::MlaWeights<float>& w, const ref::MlaShape& s, int position, T* cache,
                     int kv_len, float* out) {
  const int H = s.n_heads, r = s.kv_lora_rank, row = s.latent_row(), qh = s.q_head();
  std::vector<float> q(size_t(H) * qh), kv(static_cast<size_t>(row)), q_lat(size_t(H) * row);
  if (s.q_lora_rank == 0) {
    ref::matvec(w.wq, x, q.data(), H * qh, s.hidden);
  } else {
    std::vector<float> qa(static_cast<size_t>(s.q_lora_rank));
    std::vector<T> qa_t(qa.size());
    ref::matvec(w.wq_a, x, qa.data(), s.q_lora_rank, s.hidden);
    ref::rmsnorm(qa.data(), w.q_a_norm, qa_t.data(), s.q_lora_rank, s.eps);
    ref::matvec(w.wq_b, qa_t.data(), q.data(), H * qh, s.q_lora_rank);
  }
  ref::yarn_rope(q.data() + s.qk_nope, q.data() + s.qk_nope, H, qh, position, s.rope);
  ref::matvec(w.wkv_a, x, kv.data(), row, s.hidden);
  ref::rmsnorm(kv.data(), w.kv_a_norm, kv.data(), r, s.eps);
  ref::yarn_rope(kv.data() + r, kv.data() + r, 1, 0, position, s.rope);
  for (int i = 0; i < row; ++i) cache[int64_t(kv_len - 1) * row + i] = from_float<T>(kv[size_t(i)]);
  for (int h = 0; h < H; ++h) {
    for (int c = 0; c < r; ++c) {
      float acc = 0.0f;
      for (int n = 0; n < s.qk_nope; ++n) acc += w.uk(s, h, n, c) * to_float(from_float<T>(q[size_t(h) * qh + n]));
      q_lat[size_t(h) * row + c] = acc;
    }
    for (int i = 0; i < s.qk_rope(); ++i) q_lat[size_t(h) * row + r + i] = q[size_t(h) * qh + s.qk_nope + i];
  }
  std::vector<T> o_lat(size_t(H) * r), o(size_t(H) * s.v_head), y(static_cast<size_t>(s.hidden));
  ref::mla_attention_latent(q_lat.data(), cache, kv_len, s, o_lat.data());
  for (int h = 0; h < H; ++h)
    for (int j = 0; j < s.v_head; ++j) {
      float acc = 0.0f;
      for (int c = 0; c < r; ++c) acc += w.uv(s, h, j, c) * to_float(o_lat[size_t(h) * r + c]);
      o[size_t(h) * s.v_head + j] = from_float<T>(acc);
    }
  ref::matvec(w.wo, o.data(), y.data(), s.hidden, H * s.v_head);
  for (int i = 0; i < s.hidden; ++i) out[i] = to_float(y[size_t(i)]);
}

// Device buffers of one case and the block's parameters over them.
template <typename T>
struct MlaDevice {
  DeviceBuffer<T> hidden, residual, residual_out, out, norm, w_q, w_q_a, q_a_norm, w_q_b, w_kv_a, kv_a_norm, w_uk,
      w_uv, w_o, pages;
  DevicePageTable pt;
  DeviceBuffer<int32_t> positions;
  DeviceBuffer<float> rope;

  MlaDevice(const MlaHostData<T>& h, const std::vector<float>& rope_table)
      : hidden(to_device(h.hidden, "hidden")), residual(to_device(h.residual, "residual")),
        residual_out(h.hidden.size(), "residual_out"), out(h.hidden.size(), "out"), norm(to_device(h.norm, "norm")),
        w_q(to_device(h.w_q, "w_q")), w_q_a(to_device(h.w_q_a, "w_q_a")), q_a_norm(to_device(h.q_a_norm, "q_a_norm")),
        w_q_b(to_device(h.w_q_b, "w_q_b")), w_kv_a(to_device(h.w_kv_a, "w_kv_a")),
        kv_a_norm(to_device(h.kv_a_norm, "kv_a_norm")), w_uk(to_device(h.w_uk, "w_uk")),
        w_uv(to_device(h.w_uv, "w_uv")), w_o(to_device(h.w_o, "w_o")), pages(to_device(h.pages, "latent pages")),
        pt(h.pt), positions(to_device(h.positions, "positions")), rope(to_device(rope_table, "rope table")) {}

  cu::MlaBlockParams params(const MlaCase& c, const MlaHostData<T>& h, int max_positions) {
    cu::MlaBlockParams p;
    p.dtype = dtype_of<T>();
    p.shape = cu::mla_block_shape(c.shape);
    p.batch = int(c.kv_lens.size());
    p.hidden = hidden.data();
    p.residual = c.residual ? residual.data() : nullptr;
    p.residual_out = residual_out.data();
    p.out = out.data();
    p.weights.norm = norm.data();
    if (c.shape.q_lora_rank == 0) {
      p.weights.w_q = w_q.data();
    } else {
      p.weights.w_q_a = w_q_a.data();
      p.weights.q_a_norm = q_a_norm.data();
      p.weights.w_q_b = w_q_b.data();
    }
    p.weights.w_kv_a = w_kv_a.data();
    p.weights.kv_a_norm = kv_a_norm.data();
    p.weights.w_uk = w_uk.data();
    p.weights.w_uv = w_uv.data();
    p.weights.w_o = w_o.data();
    p.positions = positions.data();
    p.rope = {rope.data(), max_positions, c.shape.qk_rope()};
    p.cache.pages = pages.data();
    p.cache.n_pages = h.pt.n_pages;
    p.cache.page_size = h.pt.page_size;
    p.cache.kv_indptr = pt.indptr.data();
    p.cache.kv_indices = pt.indices.data();
    p.cache.kv_last_page_len = pt.last_page_len.data();
    p.cache.n_indices = int(h.pt.indices.size());
    return p;
  }
};

// The appended rows: k_pe bit-exact against RoPE of the GPU's own kv_a output; c_kv under the tolerance policy;
// every other row of the pool unchanged.
template <typename T>
void check_appended_rows(const MlaCase& c, const MlaHostData<T>& h, const std::vector<T>& pages_gpu,
                         const std::vector<float>& kv_gpu, const std::vector<float>& rope_table,
                         const std::vector<std::vector<T>>& ref_rows, const std::vector<std::vector<T>>& naive_rows) {
  const ref::MlaShape& s = c.shape;
  const int row = s.latent_row(), r = s.kv_lora_rank, half = s.qk_rope() / 2;
  std::vector<char> appended(pages_gpu.size() / size_t(row), 0);
  std::vector<float> c_gpu, c_ref, c_naive;
  int64_t k_pe_mismatches = 0;
  for (size_t b = 0; b < c.kv_lens.size(); ++b) {
    const int pos = c.kv_lens[b] - 1;
    const int64_t at = slot_offset(h.pt, int(b), pos, row);
    appended[size_t(at / row)] = 1;
    const float* kv = kv_gpu.data() + b * size_t(row);
    const float* cos_row = rope_table.data() + size_t(h.positions[b]) * s.qk_rope();
    for (int i = 0; i < half; ++i) {
      const float a = kv[r + 2 * i], bb = kv[r + 2 * i + 1], cs = cos_row[i], sn = cos_row[half + i];
      const T ya = from_float<T>(a * cs - bb * sn), yb = from_float<T>(a * sn + bb * cs);
      k_pe_mismatches += pages_gpu[size_t(at + r + 2 * i)].bits != ya.bits;
      k_pe_mismatches += pages_gpu[size_t(at + r + 2 * i + 1)].bits != yb.bits;
    }
    for (int i = 0; i < r; ++i) {
      c_gpu.push_back(to_float(pages_gpu[size_t(at + i)]));
      c_ref.push_back(to_float(ref_rows[b][size_t(i)]));
      c_naive.push_back(to_float(naive_rows[b][size_t(i)]));
    }
  }
  EXPECT_EQ(k_pe_mismatches, 0) << "appended k_pe differs from RoPE + rounding of the GPU's kv_a projection";
  int64_t changed = 0;
  for (size_t e = 0; e < pages_gpu.size(); ++e)
    changed += !appended[e / size_t(row)] && pages_gpu[e].bits != h.pages[e].bits;
  EXPECT_EQ(changed, 0) << "cache rows other than the appended ones changed";
  const auto report = check_policy<T>(c_gpu, c_ref, c_naive);
  std::printf("[ case ]   appended c_kv: %s\n", report.message.c_str());
  EXPECT_TRUE(report.ok) << "appended c_kv: " << report.message;
}

template <typename T>
void run_mla_case(const MlaCase& c) {
  SCOPED_TRACE(describe(c));
  const ref::MlaShape& s = c.shape;
  ASSERT_EQ(s.check(), "");
  const int batch = int(c.kv_lens.size()), row = s.latent_row(), d = s.hidden;
  const uint64_t seed = std::hash<std::string>{}(c.name) ^ (std::is_same_v<T, half> ? 1 : 2);
  const MlaHostData<T> h = make_mla_data<T>(c, seed);
  const int max_positions = *std::max_element(c.kv_lens.begin(), c.kv_lens.end()) + 3;
  const std::vector<float> rope_table = cu::make_yarn_rope_table(s.rope, max_positions);
  const ref::MlaWeights<float> wf = h.reference_weights();

  // ---- references: fp32 and naive (rounded where the GPU rounds), token by token over its own sequence ----
  std::vector<float> out_ref(size_t(batch) * d), out_naive(size_t(batch) * d);
  std::vector<T> residual_out_ref(size_t(batch) * d);
  std::vector<std::vector<T>> ref_rows, naive_rows;
  for (int b = 0; b < batch; ++b) {
    const int kv_len = c.kv_lens[size_t(b)];
    const T* hb = h.hidden.data() + size_t(b) * d;
    std::vector<float> x(static_cast<size_t>(d));
    std::vector<T> x_t(static_cast<size_t>(d));
    if (c.residual) {
      ref::add_rmsnorm(hb, h.residual.data() + size_t(b) * d, h.f_norm.data(), residual_out_ref.data() + size_t(b) * d,
                       x.data(), d, s.eps);
      std::vector<T> scratch(static_cast<size_t>(d));
      ref::add_rmsnorm(hb, h.residual.data() + size_t(b) * d, h.f_norm.data(), scratch.data(), x_t.data(), d, s.eps);
    } else {
      std::copy_n(hb, d, residual_out_ref.begin() + long(b) * d);
      ref::rmsnorm(hb, h.f_norm.data(), x.data(), d, s.eps);
      ref::rmsnorm(hb, h.f_norm.data(), x_t.data(), d, s.eps);
    }
    std::vector<T> cache = sequence_rows(h, b, kv_len, row), cache_naive = cache;
    ref::mla_decode(x.data(), wf, s, h.positions[size_t(b)], cache.data(), kv_len - 1, out_ref.data() + size_t(b) * d);
    naive_mla_token(x_t.data(), wf, s, h.positions[size_t(b)], cache_naive.data(), kv_len, out_naive.data() + size_t(b) * d);
    ref_rows.emplace_back(cache.begin() + long(kv_len - 1) * row, cache.end());
    naive_rows.emplace_back(cache_naive.begin() + long(kv_len - 1) * row, cache_naive.end());
  }

  // ---- GPU ----
  MlaDevice<T> dv(h, rope_table);
  dv.out.fill_bytes(0xFF);
  cu::MlaBlockParams p = dv.params(c, h, max_positions);
  cu::MlaWorkspace ws(p.shape, batch);
  cuda::Stream stream;
  cu::mla_block(p, ws, stream);
  ws.check_status(stream);
  const auto out = dv.out.download();
  const auto pages_gpu = dv.pages.download();
  std::vector<float> kv_gpu(size_t(batch) * row);
  CF_CUDA_CHECK(cudaMemcpy(kv_gpu.data(), ws.kv(), kv_gpu.size() * sizeof(float), cudaMemcpyDeviceToHost));

  const auto report = check_policy<T>(to_floats(out), out_ref, out_naive);
  std::printf("[ case ] %s %s: out %s\n", describe(c).c_str(), cu::dtype_name(dtype_of<T>()), report.message.c_str());
  EXPECT_TRUE(report.ok) << "out: " << report.message;
  EXPECT_EQ(first_bit_difference(dv.residual_out.download(), residual_out_ref), -1) << "residual_out differs";
  check_appended_rows(c, h, pages_gpu, kv_gpu, rope_table, ref_rows, naive_rows);
  if (!c.repeat_checks) return;

  // Determinism: a second run (the append rewrites the same row) and CUDA-graph replays give the same bits.
  dv.out.fill_bytes(0xFF);
  cu::mla_block(p, ws, stream);
  ws.check_status(stream);
  EXPECT_EQ(first_bit_difference(dv.out.download(), out), -1) << "second run gave different bits";
  cuda::Graph graph = cuda::Graph::capture(stream, [&](cudaStream_t st) { cu::mla_block(p, ws, st); });
  dv.out.fill_bytes(0xFF);
  for (int replay = 0; replay < 3; ++replay) graph.replay(stream);
  ws.check_status(stream);
  EXPECT_EQ(first_bit_difference(dv.out.download(), out), -1) << "CUDA-graph replay gave different bits";
  EXPECT_EQ(first_bit_difference(dv.pages.download(), pages_gpu), -1) << "CUDA-graph replay changed the cache";
}

ref::MlaShape v2_lite_heads(int hidden) { return mla_shape(hidden, 16, 0, 512, 128, 128, v2_lite_yarn(64)); }

std::vector<MlaCase> mla_cases() {
  std::vector<MlaCase> cases;
  cases.push_back({"SmallPage16", mla_shape(256, 4, 0, 64, 32, 32, plain_rope(16)), {1, 40, 300}, 16});
  {
    ref::YarnRope yarn = v2_lite_yarn(32);
    yarn.original_context = 64;  // the ramp lands inside the 16 pairs
    cases.push_back({"QloraYarnPage1", mla_shape(128, 2, 96, 128, 16, 24, yarn), {5, 70}, 1});
  }
  {
    MlaCase c{"FirstLayerPage7", mla_shape(192, 3, 0, 96, 16, 16, plain_rope(32)), {33}, 7};
    c.residual = false;
    cases.push_back(c);
  }
  cases.push_back({"ContiguousBatch3", mla_shape(256, 5, 0, 120, 24, 40, plain_rope(16)), {2, 100, 64}, 0});
  {
    std::vector<int> lens;
    Rng rng(16);
    for (int b = 0; b < 16; ++b) lens.push_back(1 + rng.below(500));
    cases.push_back({"Batch16Page16", mla_shape(256, 4, 0, 64, 32, 32, plain_rope(16)), lens, 16});
  }
  cases.push_back({"V2LiteHeadsBatch3", v2_lite_heads(512), {1, 517, 1000}, 16});
  return cases;
}

class UnfusedMla : public ::testing::TestWithParam<MlaCase> {};

TEST_P(UnfusedMla, Fp16MatchesReference) {
  CF_REQUIRE_GPU();
  run_mla_case<half>(GetParam());
}

TEST_P(UnfusedMla, Bf16MatchesReference) {
  CF_REQUIRE_GPU();
  run_mla_case<bfloat16>(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Shapes, UnfusedMla, ::testing::ValuesIn(mla_cases()),
                         [](const ::testing::TestParamInfo<MlaCase>& info) { return info.param.name; });

TEST(UnfusedMlaV2Lite, Fp16Batch1Kv4KPage16) {
  CF_REQUIRE_GPU();
  run_mla_case<half>({"V2Lite_b1_kv4k", v2_lite_heads(2048), {4096}, 16});
}

TEST(UnfusedMlaV2Lite, Bf16Batch16Kv1KPage64) {
  CF_REQUIRE_GPU();
  std::vector<int> lens;
  Rng rng(7);
  for (int b = 0; b < 16; ++b) lens.push_back(512 + rng.below(513));
  MlaCase c{"V2Lite_b16_kv1k", v2_lite_heads(2048), lens, 64};
  c.repeat_checks = false;  // covered by the small cases; keeps the test short
  run_mla_case<bfloat16>(c);
}

TEST(UnfusedMlaV2Lite, Fp16Batch3QloraContiguous) {
  CF_REQUIRE_GPU();
  run_mla_case<half>({"V2_qlora_b3", mla_shape(1024, 16, 384, 512, 128, 128, v2_lite_yarn(64)), {3, 300, 777}, 0});
}

// ---- device-side input checks ----------------------------------------------------------------------------------

template <typename T>
void expect_status_error(const MlaCase& c, const std::function<void(MlaHostData<T>&)>& corrupt,
                         const std::string& needle) {
  MlaHostData<T> h = make_mla_data<T>(c, 99);
  corrupt(h);
  const int max_positions = 64;
  const std::vector<float> rope_table = cu::make_yarn_rope_table(c.shape.rope, max_positions);
  MlaDevice<T> dv(h, rope_table);
  cu::MlaBlockParams p = dv.params(c, h, max_positions);
  cu::MlaWorkspace ws(p.shape, int(c.kv_lens.size()));
  cuda::Stream stream;
  cu::mla_block(p, ws, stream);
  try {
    ws.check_status(stream);
    ADD_FAILURE() << "expected cf::InputError mentioning '" << needle << "'";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
  const auto out = to_floats(dv.out.download());
  EXPECT_TRUE(std::isnan(out[0])) << "the bad token's output must be NaN";
  EXPECT_NO_THROW(ws.check_status(stream)) << "check_status clears the word";
}

TEST(UnfusedMlaDeviceChecks, BadPositionAndPageIdAreReported) {
  CF_REQUIRE_GPU();
  const MlaCase c{"Checks", mla_shape(128, 2, 0, 64, 16, 16, plain_rope(16)), {10, 20}, 4};
  expect_status_error<half>(c, [](MlaHostData<half>& h) { h.positions[0] = 1000; }, "RoPE table");
  expect_status_error<half>(c, [](MlaHostData<half>& h) { h.pt.indices[0] = h.pt.n_pages + 7; }, "kv_indices");
}

}  // namespace
}  // namespace cf::test
