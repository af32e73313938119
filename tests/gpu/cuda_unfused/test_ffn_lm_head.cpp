// cuda-unfused FFN block and LM head (+ argmax) vs cf::ref::ffn_block / lm_head under the tolerance policy.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "clusterfusion/cuda/graph.hpp"
#include "clusterfusion/cuda/stream.hpp"
#include "test_util.hpp"

namespace cf::test {
namespace {

using dev::DeviceBuffer;
using dev::to_device;
namespace cu = cuda_unfused;

template <typename T>
void run_ffn_case(int hidden_dim, int ffn_hidden, int batch, bool with_residual) {
  SCOPED_TRACE("ffn hidden " + std::to_string(hidden_dim) + ", ffn " + std::to_string(ffn_hidden) + ", batch " +
               std::to_string(batch));
  ref::DecoderShape s;
  s.hidden = hidden_dim;
  s.ffn_hidden = ffn_hidden;
  s.n_heads = 1;  // the workspace wants a valid attention shape too
  s.n_kv_heads = 1;
  s.head_dim = 64;
  s.rot_dim = 64;
  const uint64_t seed = uint64_t(hidden_dim) * 31 + ffn_hidden + (std::is_same_v<T, half> ? 0 : 7);
  const auto hidden = random_values<T>(size_t(batch) * hidden_dim, seed + 1, -1.0f, 1.0f);
  const auto residual = random_values<T>(size_t(batch) * hidden_dim, seed + 2, -1.0f, 1.0f);
  const auto norm = random_values<T>(size_t(hidden_dim), seed + 3, 0.5f, 1.5f);
  const float in_scale = 2.0f / std::sqrt(float(hidden_dim)), down_scale = 2.0f / std::sqrt(float(ffn_hidden));
  const auto w_gate_up = random_values<T>(size_t(2) * ffn_hidden * hidden_dim, seed + 4, -in_scale, in_scale);
  const auto w_down = random_values<T>(size_t(hidden_dim) * ffn_hidden, seed + 5, -down_scale, down_scale);

  const auto norm_f = to_floats(norm), w_gate_up_f = to_floats(w_gate_up), w_down_f = to_floats(w_down);
  ref::FfnWeights<float> wf{norm_f.data(), w_gate_up_f.data(), w_gate_up_f.data() + size_t(ffn_hidden) * hidden_dim,
                            w_down_f.data()};
  std::vector<T> residual_out_ref(hidden.size());
  std::vector<float> out_ref(hidden.size()), out_naive;
  const T* res = with_residual ? residual.data() : nullptr;
  ref::ffn_block<T, float, float>(hidden.data(), res, residual_out_ref.data(), out_ref.data(), wf, s, batch);
  naive_ffn_block<T>(hidden.data(), res, out_naive, wf, s, batch);

  DeviceBuffer<T> d_hidden = to_device(hidden), d_residual = to_device(residual), d_norm = to_device(norm);
  DeviceBuffer<T> d_w_gate_up = to_device(w_gate_up), d_w_down = to_device(w_down);
  DeviceBuffer<T> d_residual_out(hidden.size()), d_out(hidden.size());
  d_residual_out.fill_bytes(0xFF);
  d_out.fill_bytes(0xFF);
  cu::Workspace ws(s, batch);
  cuda::Stream stream;
  cu::FfnBlockParams p;
  p.dtype = dtype_of<T>();
  p.shape = s;
  p.batch = batch;
  p.hidden = d_hidden.data();
  p.residual = with_residual ? d_residual.data() : nullptr;
  p.residual_out = d_residual_out.data();
  p.out = d_out.data();
  p.norm = d_norm.data();
  p.w_gate_up = d_w_gate_up.data();
  p.w_down = d_w_down.data();
  cu::ffn_block(p, ws, stream);
  ws.check_status(stream);
  const auto out = d_out.download();
  const auto report = check_policy<T>(to_floats(out), out_ref, out_naive);
  EXPECT_TRUE(report.ok) << report.message;
  std::printf("[ ffn  ] hidden %d ffn %d batch %d %s: %s\n", hidden_dim, ffn_hidden, batch,
              cu::dtype_name(dtype_of<T>()), report.message.c_str());
  EXPECT_EQ(first_bit_difference(d_residual_out.download(), residual_out_ref), -1) << "residual_out not bit-exact";

  cuda::Graph graph = cuda::Graph::capture(stream, [&](cudaStream_t st) { cu::ffn_block(p, ws, st); });
  d_out.fill_bytes(0xFF);
  graph.replay(stream);
  graph.replay(stream);
  ws.check_status(stream);
  EXPECT_EQ(first_bit_difference(d_out.download(), out), -1) << "graph replay gave different bits";
}

TEST(SmallFfn, Fp16AndBf16MatchReference) {
  CF_REQUIRE_GPU();
  run_ffn_case<half>(256, 704, 3, true);
  run_ffn_case<bfloat16>(576, 1536, 2, false);
}

TEST(LlamaFfn, Llama2_7B_Fp16_Batch1) {
  CF_REQUIRE_GPU();
  run_ffn_case<half>(4096, 11008, 1, true);
}

TEST(LlamaFfn, Llama3_8B_Bf16_Batch4) {
  CF_REQUIRE_GPU();
  run_ffn_case<bfloat16>(4096, 14336, 4, true);
}

template <typename T>
void run_lm_head_case(int hidden_dim, int vocab, int batch) {
  SCOPED_TRACE("lm_head hidden " + std::to_string(hidden_dim) + ", vocab " + std::to_string(vocab) + ", batch " +
               std::to_string(batch));
  ref::DecoderShape s;
  s.hidden = hidden_dim;
  s.n_heads = 1;
  s.n_kv_heads = 1;
  s.head_dim = 64;
  s.rot_dim = 64;
  const uint64_t seed = uint64_t(vocab) * 17 + hidden_dim;
  const auto hidden = random_values<T>(size_t(batch) * hidden_dim, seed + 1, -1.0f, 1.0f);
  const auto residual = random_values<T>(size_t(batch) * hidden_dim, seed + 2, -1.0f, 1.0f);
  const auto norm = random_values<T>(size_t(hidden_dim), seed + 3, 0.5f, 1.5f);
  const float scale = 4.0f / std::sqrt(float(hidden_dim));
  const auto w_out = random_values<T>(size_t(vocab) * hidden_dim, seed + 4, -scale, scale);
  const auto norm_f = to_floats(norm), w_out_f = to_floats(w_out);
  std::vector<float> logits_ref(size_t(batch) * vocab), logits_naive;
  ref::lm_head<T, float, float>(hidden.data(), residual.data(), norm_f.data(), w_out_f.data(), logits_ref.data(), s,
                                vocab, batch);
  naive_lm_head<T>(hidden.data(), residual.data(), norm_f.data(), w_out_f.data(), logits_naive, s, vocab, batch);

  DeviceBuffer<T> d_hidden = to_device(hidden), d_residual = to_device(residual), d_norm = to_device(norm);
  DeviceBuffer<T> d_w_out = to_device(w_out);
  DeviceBuffer<float> d_logits(logits_ref.size());
  DeviceBuffer<int32_t> d_tokens(static_cast<size_t>(batch));
  d_logits.fill_bytes(0xFF);
  d_tokens.fill_bytes(0xFF);
  cu::Workspace ws(s, batch);
  cuda::Stream stream;
  cu::LmHeadParams p;
  p.dtype = dtype_of<T>();
  p.shape = s;
  p.batch = batch;
  p.vocab = vocab;
  p.hidden = d_hidden.data();
  p.residual = d_residual.data();
  p.norm = d_norm.data();
  p.w_out = d_w_out.data();
  p.logits = d_logits.data();
  p.tokens = d_tokens.data();
  cu::lm_head(p, ws, stream);
  ws.check_status(stream);
  const auto logits = d_logits.download();
  const auto tokens = d_tokens.download();
  const auto report = check_policy<T>(logits, logits_ref, logits_naive);
  EXPECT_TRUE(report.ok) << report.message;
  const auto bounds = ref::check_tolerance<T>(logits, logits_ref);  // for the policy's atol / rtol
  std::printf("[ head ] hidden %d vocab %d batch %d %s: %s\n", hidden_dim, vocab, batch, cu::dtype_name(dtype_of<T>()),
              report.message.c_str());
  const double atol = bounds.atol;
  for (int b = 0; b < batch; ++b) {
    const float* row = logits.data() + size_t(b) * vocab;
    const float* row_ref = logits_ref.data() + size_t(b) * vocab;
    EXPECT_EQ(tokens[size_t(b)], ref::argmax(row, vocab)) << "GPU argmax of row " << b << " != CPU argmax of the same logits";
    // Equal to the reference's token where its top-2 margin exceeds what the tolerance allows.
    const int best = ref::argmax(row_ref, vocab);
    float second = -INFINITY;
    for (int i = 0; i < vocab; ++i)
      if (i != best) second = std::max(second, row_ref[i]);
    const double margin = double(row_ref[best]) - double(second);
    const double allowed = 2.0 * (atol + bounds.rtol * std::fabs(row_ref[best]));
    if (margin > allowed) {
      EXPECT_EQ(tokens[size_t(b)], best) << "row " << b << " (margin " << margin << ")";
    }
  }
}

TEST(SmallLmHead, Fp16AndBf16MatchReference) {
  CF_REQUIRE_GPU();
  run_lm_head_case<half>(256, 1000, 3);
  run_lm_head_case<bfloat16>(576, 49152, 2);
}

TEST(LlamaLmHead, Llama2_Fp16_Vocab32000_Batch3) {
  CF_REQUIRE_GPU();
  run_lm_head_case<half>(4096, 32000, 3);
}

TEST(LlamaLmHead, Llama3_Bf16_Vocab128256_Batch1) {
  CF_REQUIRE_GPU();
  run_lm_head_case<bfloat16>(4096, 128256, 1);
}

}  // namespace
}  // namespace cf::test
