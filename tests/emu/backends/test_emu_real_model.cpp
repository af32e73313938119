// The emu backend (the fused kernels on the CPU emulator) on the real default model's weights (SmolLM2-135M-Instruct
// Q4_1, skipped when absent), cut to its first two blocks in memory so the emulator runs it in seconds: real weight
// distributions (outliers, Q4_1 values dequantised to fp16), hidden 576 (18 column units), GQA 9/3 heads of 64 and
// the 49152-token LM head, against the cpu backend under agreement.hpp's rule. Label slow (model-dependent).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "agreement.hpp"
#include "clusterfusion/runtime/model.hpp"

namespace {

constexpr int kBlocks = 2;
constexpr int kGenerated = 8;

// A byte-exact copy (the weights stay in their file types).
cf::WeightMatrix copy_of(const cf::WeightMatrix& m) {
  cf::WeightMatrix c;
  c.name = m.name;
  c.dtype = m.dtype;
  c.rows = m.rows;
  c.cols = m.cols;
  c.row_bytes = m.row_bytes;
  c.bytes = cf::AlignedBytes(m.bytes.size());
  std::memcpy(c.bytes.data(), m.bytes.data(), m.bytes.size());
  return c;
}

TEST(EmuRealModel, FirstBlocksMatchCpu) {
  const std::string path = cf::default_model_path();
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "default model not found at " << path << " (scripts/setup.sh)";
  cf::LoadedModel m = cf::load_model(path);
  auto cut = std::make_shared<cf::ModelWeights>();
  cut->config = m.weights->config;
  cut->config.n_layers = kBlocks;
  cut->token_embd = copy_of(m.weights->token_embd);
  cut->output_norm = m.weights->output_norm;
  if (!m.weights->output.empty()) cut->output = copy_of(m.weights->output);
  for (int l = 0; l < kBlocks; ++l) {
    const cf::LayerWeights& src = m.weights->layers[size_t(l)];
    cf::LayerWeights dst;
    dst.attn_norm = src.attn_norm;
    dst.ffn_norm = src.ffn_norm;
    dst.q_bias = src.q_bias;
    dst.k_bias = src.k_bias;
    dst.v_bias = src.v_bias;
    for (auto [to, from] : {std::pair{&dst.attn_q, &src.attn_q}, {&dst.attn_k, &src.attn_k}, {&dst.attn_v, &src.attn_v},
                            {&dst.attn_output, &src.attn_output}, {&dst.ffn_gate, &src.ffn_gate},
                            {&dst.ffn_up, &src.ffn_up}, {&dst.ffn_down, &src.ffn_down}})
      *to = copy_of(*from);
    cut->layers.push_back(std::move(dst));
  }
  const auto storage = cf::device_layout::choose_storage(*cut);
  auto reference = std::make_shared<cf::ModelWeights>(cf::device_layout::rounded_copy(*cut, storage));

  cf::BackendOptions o;
  o.kv_pages = 8;  // 128 positions
  o.threads = 1;
  cf::Runner cpu(cf::create_backend("cpu", reference, o), 1, 128);
  cf::Runner emu(cf::create_backend("emu", cut, o), 1, 128);
  std::vector<int32_t> stream = m.tokenizer->encode("The capital of France is", m.tokenizer->spec().add_bos, false);
  const int prompt = int(stream.size());
  std::vector<float> logits = cpu.prefill(0, stream);
  for (int i = 0; i < kGenerated; ++i) {
    const int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin()), seq = 0;
    stream.push_back(next);
    logits = cpu.decode(std::span(&seq, 1), std::span(&next, 1));
  }
  const auto want = cf::test::lockstep_logits(cpu, {stream});
  const auto got = cf::test::lockstep_logits(emu, {stream});
  const auto r = cf::test::compare_logits(got, want, {stream}, cf::test::end_to_end_tolerance(storage), prompt - 1);
  std::printf("[ agree ] %s, first %d blocks: %s\n", path.c_str(), kBlocks, r.summary().c_str());
  EXPECT_TRUE(r.ok) << r.first_failure;
  EXPECT_EQ(r.steps, kGenerated + 1);
}

}  // namespace
