// The cuda-unfused kernels one by one (add+RMSNorm, split-KV attention, argmax), the device-side input checks,
// the prefill (token_seq / token_kv_len) form of the attention block, and host-side parameter validation.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "clusterfusion/cuda/stream.hpp"
#include "test_util.hpp"

namespace cf::test {
namespace {

using dev::DeviceBuffer;
using dev::to_device;
namespace cu = cuda_unfused;

// ---- add + RMSNorm --------------------------------------------------------------------------------------------

template <typename T>
void check_add_rmsnorm(int rows, int n, bool with_residual, bool in_place) {
  SCOPED_TRACE("rows " + std::to_string(rows) + ", n " + std::to_string(n) + (with_residual ? ", residual" : "") +
               (in_place ? ", in place" : ""));
  const auto hidden = random_values<T>(size_t(rows) * n, 11, -2.0f, 2.0f);
  const auto residual = random_values<T>(size_t(rows) * n, 12, -2.0f, 2.0f);
  const auto weight = random_values<T>(size_t(n), 13, 0.5f, 1.5f);
  std::vector<float> y_ref(size_t(rows) * n), y_naive(size_t(rows) * n);
  std::vector<T> res_ref(size_t(rows) * n), y_naive_t(size_t(rows) * n);
  for (int r = 0; r < rows; ++r) {
    const size_t o = size_t(r) * n;
    if (with_residual) {
      ref::add_rmsnorm(hidden.data() + o, residual.data() + o, weight.data(), res_ref.data() + o, y_ref.data() + o, n,
                       1e-5f);
      ref::add_rmsnorm(hidden.data() + o, residual.data() + o, weight.data(), res_ref.data() + o,
                       y_naive_t.data() + o, n, 1e-5f);
    } else {
      std::copy(hidden.begin() + long(o), hidden.begin() + long(o + n), res_ref.begin() + long(o));
      ref::rmsnorm(hidden.data() + o, weight.data(), y_ref.data() + o, n, 1e-5f);
      ref::rmsnorm(hidden.data() + o, weight.data(), y_naive_t.data() + o, n, 1e-5f);
    }
  }
  y_naive = to_floats(y_naive_t);

  DeviceBuffer<T> d_hidden = to_device(hidden), d_residual = to_device(residual), d_weight = to_device(weight);
  DeviceBuffer<T> d_res_out(size_t(rows) * n), d_y(size_t(rows) * n);
  d_res_out.fill_bytes(0xFF);
  d_y.fill_bytes(0xFF);
  cu::AddRmsNormParams p;
  p.dtype = dtype_of<T>();
  p.rows = rows;
  p.n = n;
  p.eps = 1e-5f;
  p.hidden = d_hidden.data();
  p.residual = with_residual ? d_residual.data() : nullptr;
  p.weight = d_weight.data();
  p.residual_out = in_place ? d_residual.data() : d_res_out.data();
  p.y = d_y.data();
  cu::add_rmsnorm(p, nullptr);
  CF_CUDA_CHECK(cudaDeviceSynchronize());
  const auto report = check_policy<T>(to_floats(d_y.download()), y_ref, y_naive);
  EXPECT_TRUE(report.ok) << report.message;
  const auto res_out = in_place ? d_residual.download() : d_res_out.download();
  EXPECT_EQ(first_bit_difference(res_out, res_ref), -1) << "residual_out is not bit-exact";
}

TEST(KernelAddRmsNorm, Fp16AndBf16MatchReference) {
  CF_REQUIRE_GPU();
  check_add_rmsnorm<half>(3, 4096, true, false);
  check_add_rmsnorm<half>(1, 520, false, false);
  check_add_rmsnorm<bfloat16>(5, 576, true, true);
  check_add_rmsnorm<bfloat16>(2, 8192, true, false);
}

// ---- split-KV decode attention --------------------------------------------------------------------------------

template <typename T>
void check_decode_attention(int n_heads, int n_kv_heads, int head_dim, const std::vector<int>& kv_lens,
                            int page_size) {
  SCOPED_TRACE("heads " + std::to_string(n_heads) + "/" + std::to_string(n_kv_heads) + " x " +
               std::to_string(head_dim) + ", page " + std::to_string(page_size));
  const int tokens = int(kv_lens.size());
  const int max_len = *std::max_element(kv_lens.begin(), kv_lens.end());
  const HostPageTable pt = make_page_table(kv_lens, page_size, max_len, 21);
  const int kvd = n_kv_heads * head_dim;
  const size_t cache_elements = size_t(pt.n_pages) * pt.page_size * kvd;
  auto k = random_values<T>(cache_elements, 22, -1.0f, 1.0f);
  auto v = random_values<T>(cache_elements, 23, -1.0f, 1.0f);
  Rng rng(24);
  std::vector<float> q(size_t(tokens) * n_heads * head_dim);
  for (auto& x : q) x = rng.uniform(-2.0f, 2.0f);
  const ref::AttentionShape shape{n_heads, n_kv_heads, head_dim};
  std::vector<float> out_ref(q.size());
  std::vector<T> out_naive_t(q.size());
  ref::decode_attention_paged(q.data(), k.data(), v.data(), out_ref.data(), tokens, pt.indptr.data(),
                              pt.indices.data(), pt.last_page_len.data(), pt.page_size, shape,
                              ref::default_attention_scale(head_dim));
  ref::decode_attention_paged(q.data(), k.data(), v.data(), out_naive_t.data(), tokens, pt.indptr.data(),
                              pt.indices.data(), pt.last_page_len.data(), pt.page_size, shape,
                              ref::default_attention_scale(head_dim));
  const auto out_naive = to_floats(out_naive_t);

  DeviceBuffer<T> d_k = to_device(k), d_v = to_device(v), d_out(q.size());
  DeviceBuffer<float> d_q = to_device(q), d_partial(size_t(tokens) * n_heads * cu::kMaxAttentionSplits * (head_dim + 2));
  DevicePageTable d_pt(pt);
  DeviceBuffer<uint32_t> d_status(1);
  d_status.fill_bytes(0);
  cu::DecodeAttentionParams p;
  p.dtype = dtype_of<T>();
  p.tokens = tokens;
  p.n_heads = n_heads;
  p.n_kv_heads = n_kv_heads;
  p.head_dim = head_dim;
  p.q = d_q.data();
  p.kv.k_pages = d_k.data();
  p.kv.v_pages = d_v.data();
  p.kv.n_pages = pt.n_pages;
  p.kv.page_size = pt.page_size;
  p.kv.kv_indptr = d_pt.indptr.data();
  p.kv.kv_indices = d_pt.indices.data();
  p.kv.kv_last_page_len = d_pt.last_page_len.data();
  p.kv.n_seqs = tokens;
  p.kv.n_indices = int(pt.indices.size());
  p.out = d_out.data();
  p.partial = d_partial.data();
  p.status = d_status.data();
  std::vector<T> first_run;
  for (int max_splits : {1, 5, cu::kMaxAttentionSplits}) {
    SCOPED_TRACE("max_splits " + std::to_string(max_splits));
    p.max_splits = max_splits;
    d_out.fill_bytes(0xFF);
    cu::decode_attention(p, nullptr);
    CF_CUDA_CHECK(cudaDeviceSynchronize());
    const auto out = d_out.download();
    const auto report = check_policy<T>(to_floats(out), out_ref, out_naive);
    EXPECT_TRUE(report.ok) << report.message;
    if (max_splits == cu::kMaxAttentionSplits) {
      d_out.fill_bytes(0xFF);
      cu::decode_attention(p, nullptr);
      EXPECT_EQ(first_bit_difference(d_out.download(), out), -1) << "not deterministic";
    }
  }
  EXPECT_EQ(d_status.download()[0], 0u);
}

TEST(KernelDecodeAttention, SplitCountsAndShapes) {
  CF_REQUIRE_GPU();
  check_decode_attention<half>(4, 4, 128, {1, 31, 32, 33, 1000, 4097}, 16);
  check_decode_attention<bfloat16>(8, 2, 64, {2, 95, 3000}, 1);
  check_decode_attention<half>(12, 1, 64, {700, 64}, 5);   // group 12: two head chunks of up to 8
  check_decode_attention<bfloat16>(6, 2, 128, {129}, 3);  // group 3 in a kernel built for up to 4
}

// ---- argmax ---------------------------------------------------------------------------------------------------

TEST(KernelArgmax, TiesNanAndInfinityFollowTheReference) {
  CF_REQUIRE_GPU();
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const int n = 3000;
  std::vector<std::vector<float>> rows;
  Rng rng(31);
  auto random_row = [&] {
    std::vector<float> r(static_cast<size_t>(n));
    for (auto& x : r) x = rng.uniform(-5.0f, 5.0f);
    return r;
  };
  {
    auto r = random_row();  // tie between 17 and 2900: first wins
    r[17] = r[2900] = 9.0f;
    rows.push_back(r);
  }
  {
    auto r = random_row();  // NaNs around the maximum are skipped
    r[0] = nan;
    r[1000] = nan;
    r[n - 1] = 7.5f;
    rows.push_back(r);
  }
  rows.push_back(std::vector<float>(size_t(n), nan));   // all NaN: 0
  rows.push_back(std::vector<float>(size_t(n), -inf));  // all -inf: first
  {
    std::vector<float> r(size_t(n), -inf);  // NaN first, then -inf, then one finite value
    r[0] = nan;
    r[2047] = -1e30f;
    rows.push_back(r);
  }
  {
    auto r = random_row();
    r[1234] = inf;
    rows.push_back(r);
  }
  std::vector<float> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  DeviceBuffer<float> d_logits = to_device(flat);
  DeviceBuffer<int32_t> d_tokens(rows.size());
  d_tokens.fill_bytes(0xFF);
  cu::ArgmaxParams p;
  p.rows = int(rows.size());
  p.n = n;
  p.logits = d_logits.data();
  p.tokens = d_tokens.data();
  cu::argmax(p, nullptr);
  const auto tokens = d_tokens.download();
  for (size_t r = 0; r < rows.size(); ++r)
    EXPECT_EQ(tokens[r], ref::argmax(rows[r].data(), n)) << "row " << r;
  EXPECT_EQ(tokens[0], 17);
  EXPECT_EQ(tokens[2], 0);
  EXPECT_EQ(tokens[4], 2047);
}

// ---- a small attention block set up for the status and prefill tests -----------------------------------------

struct SmallBlock {
  ref::DecoderShape shape;
  HostPageTable pt;
  std::vector<half> hidden, residual, norm, w_qkv, w_o, k_cache, v_cache;
  std::vector<float> rope_table;
  DeviceBuffer<half> d_hidden, d_residual, d_residual_out, d_out, d_norm, d_w_qkv, d_w_o, d_k, d_v;
  DeviceBuffer<int32_t> d_indptr, d_indices, d_last, d_positions, d_token_seq, d_token_kv_len;
  DeviceBuffer<float> d_rope;
  cu::AttentionBlockParams params;

  SmallBlock(int tokens, const std::vector<int>& seq_lens, int page_size, int max_positions) {
    shape.hidden = 256;
    shape.n_heads = 4;
    shape.n_kv_heads = 2;
    shape.head_dim = 64;
    shape.rot_dim = 64;
    pt = make_page_table(seq_lens, page_size, 0, 41);
    const int qd = shape.q_dim(), kvd = shape.kv_dim();
    const size_t cache = size_t(pt.n_pages) * pt.page_size * kvd;
    hidden = random_values<half>(size_t(tokens) * shape.hidden, 42, -1.0f, 1.0f);
    residual = random_values<half>(size_t(tokens) * shape.hidden, 43, -1.0f, 1.0f);
    norm = random_values<half>(size_t(shape.hidden), 44, 0.5f, 1.5f);
    w_qkv = random_values<half>(size_t(qd + 2 * kvd) * shape.hidden, 45, -0.1f, 0.1f);
    w_o = random_values<half>(size_t(shape.hidden) * qd, 46, -0.1f, 0.1f);
    k_cache = random_values<half>(cache, 47, -1.0f, 1.0f);
    v_cache = random_values<half>(cache, 48, -1.0f, 1.0f);
    rope_table = cu::make_rope_table(shape.rot_dim, shape.rope_theta, max_positions);
    d_hidden = to_device(hidden);
    d_residual = to_device(residual);
    d_residual_out = DeviceBuffer<half>(hidden.size());
    d_out = DeviceBuffer<half>(hidden.size());
    d_norm = to_device(norm);
    d_w_qkv = to_device(w_qkv);
    d_w_o = to_device(w_o);
    d_k = to_device(k_cache);
    d_v = to_device(v_cache);
    d_indptr = to_device(pt.indptr);
    d_indices = to_device(pt.indices);
    d_last = to_device(pt.last_page_len);
    d_rope = to_device(rope_table);
    params.dtype = cu::DType::F16;
    params.shape = shape;
    params.batch = tokens;
    params.hidden = d_hidden.data();
    params.residual = d_residual.data();
    params.residual_out = d_residual_out.data();
    params.out = d_out.data();
    params.norm = d_norm.data();
    params.w_qkv = d_w_qkv.data();
    params.w_o = d_w_o.data();
    params.rope = {d_rope.data(), max_positions, shape.rot_dim};
    params.kv.k_pages = d_k.data();
    params.kv.v_pages = d_v.data();
    params.kv.n_pages = pt.n_pages;
    params.kv.page_size = pt.page_size;
    params.kv.kv_indptr = d_indptr.data();
    params.kv.kv_indices = d_indices.data();
    params.kv.kv_last_page_len = d_last.data();
    params.kv.n_seqs = int(seq_lens.size());
    params.kv.n_indices = int(pt.indices.size());
  }

  void set_positions(const std::vector<int32_t>& positions) {
    d_positions = to_device(positions);
    params.positions = d_positions.data();
  }
};

TEST(DeviceChecks, BadPositionIsReportedAndPoisonsOnlyItsToken) {
  CF_REQUIRE_GPU();
  SmallBlock blk(2, {10, 20}, 16, 64);
  blk.set_positions({9, 64});  // 64 is past the table
  cu::Workspace ws(blk.shape, 2);
  cuda::Stream stream;
  cu::attention_block(blk.params, ws, stream);
  try {
    ws.check_status(stream);
    ADD_FAILURE() << "expected a device-side check failure";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("RoPE table"), std::string::npos) << e.what();
  }
  const auto out = to_floats(blk.d_out.download());
  bool token0_finite = true, token1_nan = true;
  for (int i = 0; i < 256; ++i) {
    token0_finite &= std::isfinite(out[size_t(i)]);
    token1_nan &= std::isnan(out[size_t(256 + i)]);
  }
  EXPECT_TRUE(token0_finite);
  EXPECT_TRUE(token1_nan) << "a token with a bad position must come out NaN";
  EXPECT_NO_THROW(ws.check_status(stream)) << "the status word must be cleared after a report";
}

TEST(DeviceChecks, BadPageIdAndPageTableAreReported) {
  CF_REQUIRE_GPU();
  {
    SmallBlock blk(1, {40}, 16, 64);
    blk.set_positions({39});
    std::vector<int32_t> indices = blk.pt.indices;
    indices[1] = blk.pt.n_pages + 5;  // middle page of the sequence: read by attention only
    blk.d_indices.upload(indices);
    cu::Workspace ws(blk.shape, 1);
    cuda::Stream stream;
    cu::attention_block(blk.params, ws, stream);
    try {
      ws.check_status(stream);
      ADD_FAILURE() << "expected a bad page id report";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("kv_indices entry"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(std::isnan(to_floats(blk.d_out.download())[0]));
  }
  {
    SmallBlock blk(1, {40}, 16, 64);
    blk.set_positions({39});
    blk.d_last.upload(std::vector<int32_t>{17});  // more than a page holds
    cu::Workspace ws(blk.shape, 1);
    cuda::Stream stream;
    cu::attention_block(blk.params, ws, stream);
    try {
      ws.check_status(stream);
      ADD_FAILURE() << "expected a bad page table report";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("kv_last_page_len"), std::string::npos) << e.what();
    }
    EXPECT_EQ(first_bit_difference(blk.d_k.download(), blk.k_cache), -1) << "nothing may be appended";
  }
}

// Prefill form: T tokens of one sequence in one call (token_seq, token_kv_len) equals T decode steps of the
// reference, each attending causally.
TEST(PrefillForm, TokensOfOneSequenceAttendCausally) {
  CF_REQUIRE_GPU();
  const int prior = 37, tokens = 6, page = 8;
  SmallBlock blk(tokens, {prior + tokens}, page, prior + tokens);
  std::vector<int32_t> positions, token_seq(size_t(tokens), 0), token_kv_len;
  for (int t = 0; t < tokens; ++t) {
    positions.push_back(prior + t);
    token_kv_len.push_back(prior + t + 1);
  }
  blk.set_positions(positions);
  blk.d_token_seq = to_device(token_seq);
  blk.d_token_kv_len = to_device(token_kv_len);
  blk.params.kv.token_seq = blk.d_token_seq.data();
  blk.params.kv.token_kv_len = blk.d_token_kv_len.data();
  blk.d_out.fill_bytes(0xFF);
  cu::Workspace ws(blk.shape, tokens);
  cuda::Stream stream;
  cu::attention_block(blk.params, ws, stream);
  ws.check_status(stream);
  const auto out = to_floats(blk.d_out.download());

  const auto& s = blk.shape;
  const auto norm_f = to_floats(blk.norm), w_qkv_f = to_floats(blk.w_qkv), w_o_f = to_floats(blk.w_o);
  ref::AttentionWeights<float> wf;
  wf.norm = norm_f.data();
  wf.wq = w_qkv_f.data();
  wf.wk = w_qkv_f.data() + size_t(s.q_dim()) * s.hidden;
  wf.wv = w_qkv_f.data() + size_t(s.q_dim() + s.kv_dim()) * s.hidden;
  wf.wo = w_o_f.data();
  std::vector<half> k_ref = blk.k_cache, v_ref = blk.v_cache, k_naive = blk.k_cache, v_naive = blk.v_cache;
  std::vector<half> res_out(size_t(s.hidden));
  std::vector<float> out_ref(size_t(tokens) * s.hidden), out_naive;
  for (int t = 0; t < tokens; ++t) {
    const int len = prior + t + 1;
    const int n_pages = (len + page - 1) / page;
    const int32_t indptr[2] = {0, n_pages};
    const int32_t last = len - (n_pages - 1) * page;
    const ref::PagedKv<half> kv{k_ref.data(), v_ref.data(), page, indptr, blk.pt.indices.data(), &last};
    ref::attention_block<half, float, half, float>(blk.hidden.data() + size_t(t) * s.hidden,
                                                   blk.residual.data() + size_t(t) * s.hidden, res_out.data(),
                                                   out_ref.data() + size_t(t) * s.hidden, wf, s, &positions[size_t(t)],
                                                   1, kv);
    const ref::PagedKv<half> kv_n{k_naive.data(), v_naive.data(), page, indptr, blk.pt.indices.data(), &last};
    std::vector<float> one;
    naive_attention_block<half>(blk.hidden.data() + size_t(t) * s.hidden, blk.residual.data() + size_t(t) * s.hidden,
                                one, wf, s, &positions[size_t(t)], 1, kv_n);
    out_naive.insert(out_naive.end(), one.begin(), one.end());
  }
  const auto report = check_policy<half>(out, out_ref, out_naive);
  EXPECT_TRUE(report.ok) << report.message;
}

}  // namespace
}  // namespace cf::test
