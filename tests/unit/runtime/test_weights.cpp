// Model weights: random weights are reproducible and of the config's shapes; quantisation round trips stay within
// each format's step; conversion between types.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>

#include "clusterfusion/runtime/rng.hpp"
#include "clusterfusion/runtime/model.hpp"
#include "clusterfusion/runtime/weights.hpp"
#include "clusterfusion/common/half.hpp"
#include "clusterfusion/formats/model_file.hpp"
#include "clusterfusion/formats/safetensors.hpp"
#include "clusterfusion/model/weight_table.hpp"
#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/runner.hpp"
#include "test_models.hpp"
#include "test_util.hpp"
#include "tiny_model.hpp"

namespace {

TEST(Weights, RandomIsReproducibleAndShaped) {
  const auto c = cf::test::tiny_config(cf::RopeStyle::NeoX, false, true);
  const auto a = cf::ModelWeights::random(c, 1, cf::DType::Q4_1), b = cf::ModelWeights::random(c, 1, cf::DType::Q4_1);
  const auto other = cf::ModelWeights::random(c, 2, cf::DType::Q4_1);
  ASSERT_EQ(a.layers.size(), 2u);
  EXPECT_EQ(a.layers[1].attn_k.rows, c.kv_dim());
  EXPECT_EQ(a.layers[1].ffn_down.cols, c.ffn_hidden);
  EXPECT_EQ(a.layers[0].q_bias.size(), size_t(c.q_dim()));
  EXPECT_FALSE(a.output.empty());
  EXPECT_EQ(&a.lm_head(), &a.output);
  EXPECT_EQ(std::memcmp(a.layers[1].ffn_up.bytes.data(), b.layers[1].ffn_up.bytes.data(), a.layers[1].ffn_up.bytes.size()), 0);
  EXPECT_NE(std::memcmp(a.layers[1].ffn_up.bytes.data(), other.layers[1].ffn_up.bytes.data(), a.layers[1].ffn_up.bytes.size()), 0);
  const auto tied = cf::ModelWeights::random(cf::test::tiny_config(), 1, cf::DType::F32);
  EXPECT_TRUE(tied.output.empty());
  EXPECT_EQ(&tied.lm_head(), &tied.token_embd);
}

TEST(Weights, QuantisationRoundTripWithinOneStep) {
  cf::Rng rng(3);
  const int n = 256;
  std::vector<float> x(n);
  for (auto& v : x) v = rng.uniform(-3.0f, 3.0f);
  for (cf::DType t : {cf::DType::F16, cf::DType::BF16, cf::DType::Q8_0, cf::DType::Q4_0, cf::DType::Q4_1}) {
    std::vector<uint8_t> q(size_t(cf::dtype_row_bytes(t, n)));
    cf::quantize_row(t, x.data(), q.data(), n);
    std::vector<float> back(n);
    cf::dequantize(t, q.data(), back.data(), n);
    for (int b = 0; b < n / 32; ++b) {
      float lo = x[size_t(b * 32)], hi = lo, max_abs = 0;
      for (int i = 0; i < 32; ++i) {
        lo = std::min(lo, x[size_t(b * 32 + i)]);
        hi = std::max(hi, x[size_t(b * 32 + i)]);
        max_abs = std::max(max_abs, std::fabs(x[size_t(b * 32 + i)]));
      }
      // Half a quantisation step (plus fp16 rounding of the scales).
      float step = 0;
      if (t == cf::DType::Q8_0) step = max_abs / 127;
      if (t == cf::DType::Q4_0) step = 2 * max_abs / 8;  // asymmetric: the far side's extreme clamps to +7
      if (t == cf::DType::Q4_1) step = (hi - lo) / 15;
      if (t == cf::DType::F16) step = max_abs * 1e-3f;
      if (t == cf::DType::BF16) step = max_abs * 8e-3f;
      for (int i = 0; i < 32; ++i)
        EXPECT_LE(std::fabs(back[size_t(b * 32 + i)] - x[size_t(b * 32 + i)]), 0.51f * step + 2e-3f * max_abs)
            << cf::dtype_name(t) << " element " << b * 32 + i;
    }
  }
}

TEST(Weights, ConvertMatrixKeepsValues) {
  const auto w = cf::ModelWeights::random(cf::test::tiny_config(), 4, cf::DType::Q4_1);
  const cf::WeightMatrix& m = w.layers[0].ffn_gate;
  const cf::WeightMatrix f32 = cf::convert_matrix(m, cf::DType::F32);
  EXPECT_EQ(f32.dtype, cf::DType::F32);
  EXPECT_EQ(f32.dequantized(), m.dequantized());  // Q4_1 -> F32 is exact
  // Block types need whole blocks per row.
  cf::WeightMatrix odd;
  odd.name = "odd";
  odd.rows = 2;
  odd.cols = 40;
  odd.row_bytes = 160;
  odd.bytes = cf::AlignedBytes(320);
  std::memset(odd.bytes.data(), 0, 320);
  EXPECT_THROW(cf::convert_matrix(odd, cf::DType::Q4_1), cf::InputError);
  EXPECT_NO_THROW(cf::convert_matrix(odd, cf::DType::F16));
}

}  // namespace

namespace {

TEST(Weights, PresetsHaveTheKnownShapes) {
  const auto smol = cf::model_preset("smollm2-135m");
  EXPECT_EQ(smol.n_layers, 30);
  EXPECT_EQ(smol.kv_dim(), 192);
  const auto llama3 = cf::model_preset("llama3-8b");
  EXPECT_EQ(llama3.n_kv_heads, 8);
  EXPECT_EQ(llama3.head_dim, 128);
  for (const auto& name : cf::model_preset_names()) EXPECT_NO_THROW(cf::model_preset(name).validate(name));
  EXPECT_THROW(cf::model_preset("gpt-5"), cf::InputError);
}

TEST(Weights, RandomBitsDoNotDependOnTheMachinesThreadCount) {
  // Big enough (>= 64 MB) to be filled by several threads: two runs agree, and a row recomputed from its chunk's own
  // generator alone has the same value.
  auto c = cf::model_preset("smollm2-135m");
  c.n_layers = 1;
  c.vocab = 32768;  // token_embd F32 [32768, 576] = 75 MB: the parallel path
  const auto a = cf::ModelWeights::random(c, 9, cf::DType::F32), b = cf::ModelWeights::random(c, 9, cf::DType::F32);
  ASSERT_GE(a.token_embd.bytes.size(), size_t(64) << 20);
  EXPECT_EQ(std::memcmp(a.token_embd.bytes.data(), b.token_embd.bytes.data(), a.token_embd.bytes.size()), 0);
  // token_embd's seed is the model generator's first draw; row 1000 lies in chunk 1000 / 64, after 40 rows of it.
  cf::Rng master(9);
  const uint64_t matrix_seed = master.next_u64();
  cf::Rng chunk(matrix_seed ^ (0x9e3779b97f4a7c15ull * uint64_t(1000 / 64 + 1)));
  float expected = 0;
  for (int i = 0; i < (1000 % 64) * 576 + 1; ++i) expected = chunk.uniform(-1.0f, 1.0f);
  float got;
  std::memcpy(&got, a.token_embd.row(1000), 4);
  EXPECT_EQ(got, expected);
}

}  // namespace

// Published GGUF files are mostly k-quants (Q4_K_M = Q4_K + Q6_K, Q5_K_M = Q5_K + Q6_K, ...). They load as they are
// (the cpu backend computes on them), or converted to F16 on request (the device backends' load options), exactly up
// to fp16 rounding of the file's own dequantisation; repacked for the cpu backend they give the same logits.
TEST(Weights, KQuantMatricesLoadAsTheyAreOrAsF16) {
  cf::test::TempDir dir;
  cf::test::TinyModelOptions o;
  o.hidden = 256;
  o.ffn = 256;
  o.k_quants = true;
  const std::string path = dir.file("kquant.gguf");
  cf::test::write_file(path, cf::test::tiny_model_gguf(o));
  const auto file = cf::open_model_file(path);
  const cf::ModelWeights kept = cf::ModelWeights::load(*file);
  const cf::ModelWeights as_f16 = cf::ModelWeights::load(*file, cf::weight_load_options("cuda"));

  const struct {
    const char* name;
    const cf::WeightMatrix& kept;
    const cf::WeightMatrix& f16;
  } cases[] = {{"blk.0.attn_q.weight", kept.layers[0].attn_q, as_f16.layers[0].attn_q},      // Q4_K
               {"blk.0.attn_k.weight", kept.layers[0].attn_k, as_f16.layers[0].attn_k},      // Q5_K
               {"blk.1.ffn_down.weight", kept.layers[1].ffn_down, as_f16.layers[1].ffn_down}};  // Q6_K
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const cf::TensorRef* t = file->find(c.name);
    ASSERT_NE(t, nullptr);
    EXPECT_TRUE(cf::dtype_is_k_quant(t->dtype)) << cf::dtype_name(t->dtype);
    const std::vector<float> want = cf::dequantize_all(*t);
    ASSERT_EQ(c.kept.dtype, t->dtype);
    ASSERT_EQ(c.f16.dtype, cf::DType::F16);
    EXPECT_EQ(c.kept.dequantized(), want);
    const std::vector<float> f16 = c.f16.dequantized();
    ASSERT_EQ(f16.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_EQ(f16[i], cf::f16_bits_to_float(cf::float_to_f16_bits(want[i]))) << "element " << i;
  }

  // The cpu backend runs the k-quant model, on weights repacked while loading or repacked by the backend alike.
  const auto logits_of = [](std::shared_ptr<const cf::ModelWeights> w) {
    cf::Runner runner(cf::create_backend("cpu", w, {}), 1);
    return runner.prefill(0, std::vector<int32_t>{5, 17, 42});
  };
  auto weights = std::make_shared<const cf::ModelWeights>(cf::ModelWeights::load(*file));
  auto repacked = std::make_shared<const cf::ModelWeights>(cf::ModelWeights::load(*file, cf::weight_load_options("cpu")));
  EXPECT_EQ(repacked->layers[0].attn_q.layout, cf::WeightLayout::CpuPacked);
  EXPECT_THROW(repacked->layers[0].attn_q.dequantized(), cf::Error);  // packed rows are the cpu backend's business
  const std::vector<float> logits = logits_of(weights);
  ASSERT_EQ(logits.size(), size_t(weights->config.vocab));
  for (const float v : logits) ASSERT_TRUE(std::isfinite(v));
  EXPECT_EQ(logits_of(repacked), logits);

  cf::WeightLoadOptions bad;
  bad.k_quant_as = cf::DType::Q4_K;
  EXPECT_THROW(cf::ModelWeights::load(*file, bad), cf::Error);
}

namespace {

// The weight table against a file written by llama.cpp's converter (the default model, skipped when absent): the
// table names exactly the tensors the file holds, with their shapes.
TEST(WeightTable, NamesTheDefaultModelsTensors) {
  if (!std::filesystem::exists(cf::default_model_path())) GTEST_SKIP() << "default model absent: run scripts/setup.sh";
  const auto file = cf::open_model_file(cf::default_model_path());
  std::set<std::string> in_file, in_table;
  for (const auto& t : file->tensors()) in_file.insert(t.name);
  for (const auto& e : cf::weight_table(file->config())) {
    if (e.optional && !file->find(e.name)) continue;
    in_table.insert(e.name);
    EXPECT_EQ(file->find(e.name)->shape, e.shape) << e.name;
  }
  EXPECT_EQ(in_file, in_table);
}

// Every slot a layer holds appears once per layer, the bias slots exactly when the config asks for them, and every
// Hugging Face name maps onto its canonical name.
TEST(WeightTable, SlotsPerLayerAndHuggingFaceNames) {
  for (bool bias : {false, true}) {
    const auto c = cf::test::tiny_config(cf::RopeStyle::NeoX, true, bias);
    const auto table = cf::weight_table(c);
    std::set<std::string> names;
    for (const auto& e : table) EXPECT_TRUE(names.insert(e.name).second) << "twice: " << e.name;
    const size_t per_layer = cf::layer_slots(c, 0).size();
    EXPECT_EQ(per_layer, bias ? 12u : 9u);
    EXPECT_EQ(table.size(), 3 + per_layer * size_t(c.n_layers));
    EXPECT_EQ(names.count("blk.1.attn_k.bias"), bias ? 1u : 0u);
  }
  for (const auto& slot : cf::weight_slots()) {
    if (slot.hf_name.empty()) continue;  // GGUF-only (attn_k_b, attn_v_b: HF holds kv_b_proj)
    std::string hf = slot.per_layer ? "model.layers.7." + std::string(slot.hf_name) : std::string(slot.hf_name);
    std::string gguf = slot.per_layer ? "blk.7." + std::string(slot.gguf_name) : std::string(slot.gguf_name);
    if (const size_t star = hf.find('*'); star != std::string::npos) {  // one expert of a stacked slot
      hf.replace(star, 1, "12");
      gguf = cf::expert_tensor_name(slot.slot, 7, 12);
    }
    EXPECT_EQ(cf::canonical_tensor_name(hf), gguf);
  }
}

// Loading goes through the table: a model written with every tensor loads into the same values, and the matrices
// the table names are the ones matrix_bytes() counts.
TEST(WeightTable, MatrixAccessMatchesTheNamedFields) {
  const auto c = cf::test::tiny_config(cf::RopeStyle::NeoX, false, true);
  const auto w = cf::ModelWeights::random(c, 5, cf::DType::Q8_0);
  size_t bytes = 0, matrices = 0;
  w.for_each_matrix([&](const cf::WeightEntry& e, const cf::WeightMatrix& m) {
    EXPECT_EQ(m.name, e.name);
    EXPECT_EQ(m.rows, e.shape[0]);
    EXPECT_EQ(m.cols, e.shape[1]);
    bytes += m.bytes.size();
    ++matrices;
  });
  EXPECT_EQ(matrices, 2 + 7 * size_t(c.n_layers));
  EXPECT_EQ(bytes, w.matrix_bytes());
  for (const auto& e : cf::weight_table(c)) {
    if (e.slot == cf::WeightSlot::AttnKBias && e.layer == 1) {
      EXPECT_EQ(&w.vector(e), &w.layers[1].k_bias);
    }
  }
}

}  // namespace
