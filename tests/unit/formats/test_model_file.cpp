#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "clusterfusion/formats/gguf.hpp"
#include "clusterfusion/formats/model_file.hpp"
#include "test_util.hpp"
#include "tiny_model.hpp"

namespace {
using cf::test::expect_input_error;

TEST(ModelFile, OpensTinyGgufModel) {
  cf::test::TempDir dir;
  const std::string path = dir.file("tiny.gguf");
  cf::test::write_file(path, cf::test::tiny_model_gguf());
  const auto m = cf::open_model_file(path);
  EXPECT_EQ(m->format(), "gguf");
  EXPECT_EQ(m->path(), path);
  const auto& c = m->config();
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.hidden, 64);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.rope_dim, 16);
  EXPECT_EQ(c.ffn_hidden, 128);
  EXPECT_EQ(c.vocab, 3 + 256 + 9);
  EXPECT_EQ(c.rope_style, cf::RopeStyle::GPTJ);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  const auto& q = m->require("blk.1.attn_q.weight", {64, 64});
  EXPECT_EQ(q.dtype, cf::DType::Q8_0);
  EXPECT_EQ(cf::dequantize_all(q).size(), 64u * 64u);
  EXPECT_EQ(m->tokenizer_spec().pre, "smollm");
  ASSERT_TRUE(m->chat_template());
  EXPECT_NE(m->chat_template()->find("<|im_start|>"), std::string::npos);
  ASSERT_NE(m->gguf(), nullptr);
  EXPECT_EQ(m->gguf()->get_string("general.name"), "tiny test model");
  EXPECT_NO_THROW(cf::check_weights_finite(*m));
  EXPECT_NE(c.summary().find("GPT-J"), std::string::npos);
  expect_input_error([&] { m->require("blk.1.attn_q.weight", {64, 32}); }, {path, "'blk.1.attn_q.weight' has shape [64, 64], expected [64, 32]"});
  expect_input_error([&] { m->require("nope", {1}); }, {path + ": missing tensor 'nope'"});
}

TEST(ModelFile, Qwen2GgufUsesNeoXAndBiases) {
  cf::test::TempDir dir;
  cf::test::TinyModelOptions o;
  o.arch = "qwen2";
  o.qkv_bias = true;
  o.tied = false;
  cf::test::write_file(dir.file("q.gguf"), cf::test::tiny_model_gguf(o));
  const auto m = cf::open_model_file(dir.file("q.gguf"));
  EXPECT_EQ(m->config().arch, "qwen2");
  EXPECT_EQ(m->config().rope_style, cf::RopeStyle::NeoX);
  EXPECT_TRUE(m->config().qkv_bias);
  EXPECT_FALSE(m->config().tied_embeddings);
}

TEST(ModelFile, RejectsIncompleteGgufModels) {
  cf::test::TempDir dir;
  const std::string path = dir.file("bad.gguf");
  auto try_open = [&](const cf::test::TinyModelOptions& o, std::initializer_list<std::string> fragments) {
    cf::test::write_file(path, cf::test::tiny_model_gguf(o));
    expect_input_error([&] { cf::open_model_file(path); }, fragments);
  };
  cf::test::TinyModelOptions o;
  o.skip_tensor = "blk.1.ffn_up.weight";
  try_open(o, {path, "missing tensor 'blk.1.ffn_up.weight'"});
  o = {};
  o.with_tokenizer = false;
  try_open(o, {path, "missing tokenizer data", "tokenizer.ggml.model"});
  o = {};
  o.skip_key = "tokenizer.ggml.merges";
  try_open(o, {"missing tokenizer data", "merges"});
  o = {};
  o.skip_key = "tokenizer.ggml.tokens";
  try_open(o, {"missing tokenizer data", "tokens"});
  o = {};
  o.skip_key = "llama.block_count";
  try_open(o, {"missing metadata 'llama.block_count'"});
  o = {};
  o.skip_key = "llama.attention.layer_norm_rms_epsilon";
  try_open(o, {"layer_norm_rms_epsilon"});
  o = {};
  o.arch = "mamba";
  try_open(o, {"unsupported architecture 'mamba'"});
  o = {};
  o.skip_key = "general.architecture";
  try_open(o, {"missing metadata 'general.architecture'"});
}

TEST(ModelFile, RejectsAbsurdConfigValues) {
  cf::test::TempDir dir;
  const std::string path = dir.file("absurd.gguf");
  auto with = [&](const std::string& key, uint32_t value, std::initializer_list<std::string> fragments) {
    cf::test::GgufWriter w;
    cf::test::TinyModelOptions o;
    o.skip_key = key;
    auto bytes = cf::test::tiny_model_gguf(o, &w);
    // Rebuild with the key appended with the absurd value.
    cf::test::GgufWriter w2 = w;
    w2.add_u32(key, value);
    cf::test::write_file(path, w2.build());
    expect_input_error([&] { cf::open_model_file(path); }, fragments);
  };
  with("llama.block_count", 100000, {"n_layers = 100000", "expected 1..1024"});
  with("llama.block_count", 0, {"n_layers = 0"});
  with("llama.embedding_length", 1u << 30, {"hidden = 1073741824"});
  with("llama.attention.head_count", 3, {"n_kv_heads = 2: must divide n_heads = 3"});
  with("llama.attention.key_length", 15, {"head_dim = 15: must be even"});
  with("llama.rope.dimension_count", 32, {"rope_dim = 32: expected 2..16"});
  with("llama.attention.head_count_kv", 3, {"n_kv_heads = 3: must divide n_heads = 4"});
  with("llama.attention.head_count_kv", 8, {"n_kv_heads = 8"});
  with("llama.feed_forward_length", 4000000000u, {"out of range"});
  with("llama.context_length", 0, {"max_context = 0"});
  with("llama.feed_forward_length", 256, {"'blk.0.ffn_gate.weight' has shape [128, 64], expected [256, 64]"});
}

TEST(ModelFile, DispatchErrors) {
  cf::test::TempDir dir;
  expect_input_error([&] { cf::open_model_file(dir.file("missing.gguf")); }, {"missing.gguf: no such file or directory"});
  cf::test::write_file(dir.file("notes.txt"), {'h', 'i'});
  expect_input_error([&] { cf::open_model_file(dir.file("notes.txt")); }, {"notes.txt: not a model"});
  cf::test::write_file(dir.file("fake.gguf"), {'G', 'G', 'U', 'X', 0, 0, 0, 0});
  expect_input_error([&] { cf::open_model_file(dir.file("fake.gguf")); }, {"fake.gguf", "not a GGUF file"});
  expect_input_error([&] { cf::open_model_file(dir.path().string()); }, {"missing config.json"});
}

TEST(ModelFile, DetectsNonFiniteWeights) {
  cf::test::TempDir dir;
  cf::test::GgufWriter w;
  auto bytes = cf::test::tiny_model_gguf({}, &w);
  // Find blk.0.attn_norm.weight's data and poison one value.
  cf::GgufFile g = cf::GgufFile::from_memory("x", bytes.data(), bytes.size());
  const auto* t = g.find_tensor("blk.0.attn_norm.weight");
  ASSERT_NE(t, nullptr);
  const size_t at = size_t(t->data - bytes.data()) + 4 * 5;
  cf::test::patch<uint32_t>(bytes, at, 0x7fc00000u);
  cf::test::write_file(dir.file("nan.gguf"), bytes);
  const auto m = cf::open_model_file(dir.file("nan.gguf"));
  expect_input_error([&] { cf::check_weights_finite(*m); }, {"nan.gguf", "'blk.0.attn_norm.weight' holds NaN or Inf (row 0)"});
}

// The default model: config, tensor table, dequantised values (compared in test_dequant), load time.
TEST(ModelFile, DefaultModelConfig) {
  CF_REQUIRE_DEFAULT_MODEL(path);
  const auto t0 = std::chrono::steady_clock::now();
  const auto m = cf::open_model_file(path);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ info ] opened %s in %.1f ms\n", path.c_str(), ms);
  const auto& c = m->config();
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.n_layers, 30);
  EXPECT_EQ(c.hidden, 576);
  EXPECT_EQ(c.n_heads, 9);
  EXPECT_EQ(c.n_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.rope_dim, 64);
  EXPECT_EQ(c.ffn_hidden, 1536);
  EXPECT_EQ(c.vocab, 49152);
  EXPECT_EQ(c.max_context, 8192);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.rope_style, cf::RopeStyle::GPTJ);
  EXPECT_FLOAT_EQ(c.rope_theta, 100000.0f);
  EXPECT_FLOAT_EQ(c.rms_eps, 1e-5f);
  EXPECT_EQ(m->tensors().size(), 272u);
  const auto& emb = m->require("token_embd.weight", {49152, 576});
  EXPECT_EQ(emb.dtype, cf::DType::Q8_0);
  EXPECT_EQ(m->require("blk.0.attn_k.weight", {192, 576}).dtype, cf::DType::Q4_1);
  EXPECT_EQ(m->require("blk.29.ffn_norm.weight", {576}).dtype, cf::DType::F32);
  const auto& tok = m->tokenizer_spec();
  EXPECT_EQ(tok.kind, cf::TokenizerSpec::Kind::ByteLevelBPE);
  EXPECT_EQ(tok.pre, "smollm");
  EXPECT_EQ(tok.tokens.size(), 49152u);
  EXPECT_EQ(tok.eos, 2);
  ASSERT_TRUE(m->chat_template());
  EXPECT_NE(m->chat_template()->find("<|im_start|>"), std::string::npos);
  EXPECT_NO_THROW(cf::check_weights_finite(*m));
}

}  // namespace

namespace {

// Truncated at every section boundary of a complete model file, and at random points: always a one-line
// cf::InputError naming the file, never a crash.
TEST(ModelFile, RejectsTruncatedModelFiles) {
  cf::test::TempDir dir;
  cf::test::GgufWriter w;
  const auto bytes = cf::test::tiny_model_gguf({}, &w);
  const auto& L = w.layout;
  std::vector<size_t> cuts = {0, 3, 4, 8, 16, 24, L.tensor_infos_begin, L.data_begin, L.end - 1};
  for (const size_t k : L.kv_starts) cuts.insert(cuts.end(), {k, k + 8, k + 9});
  for (const size_t v : L.kv_value_starts) cuts.insert(cuts.end(), {v, v + 4, v + 5});
  for (const size_t t : L.tensor_info_starts) cuts.insert(cuts.end(), {t, t + 8});
  for (const size_t d : L.tensor_dim_fields) cuts.push_back(d);
  for (const size_t o : L.tensor_offset_fields) cuts.insert(cuts.end(), {o, o + 8});
  std::mt19937 rng(21);
  for (int i = 0; i < 40; ++i) cuts.push_back(rng() % bytes.size());
  const std::string path = dir.file("cut.gguf");
  for (const size_t n : cuts) {
    ASSERT_LT(n, bytes.size());
    cf::test::write_file(path, std::vector<uint8_t>(bytes.begin(), bytes.begin() + long(n)));
    const std::string msg = expect_input_error([&] { cf::open_model_file(path); }, {path + ": "});
    EXPECT_FALSE(msg.empty()) << "cut at " << n;
  }
}

TEST(ModelFile, RejectsUnsupportedTensorType) {
  cf::test::TempDir dir;
  cf::test::GgufWriter w;
  auto bytes = cf::test::tiny_model_gguf({}, &w);
  const auto& tensors = w.tensors();
  size_t index = 0;
  while (tensors[index].name != "blk.0.attn_q.weight") ++index;
  cf::test::patch<uint32_t>(bytes, w.layout.tensor_type_fields[index], 6);  // Q5_0: smaller blocks, still in bounds
  cf::test::write_file(dir.file("q5.gguf"), bytes);
  expect_input_error([&] { cf::open_model_file(dir.file("q5.gguf")); },
                     {"q5.gguf: tensor 'blk.0.attn_q.weight' has type Q5_0, which is not supported"});
  cf::test::patch<uint32_t>(bytes, w.layout.tensor_type_fields[index], 77);
  cf::test::write_file(dir.file("t77.gguf"), bytes);
  expect_input_error([&] { cf::open_model_file(dir.file("t77.gguf")); }, {"unknown tensor type 77", "'blk.0.attn_q.weight'"});
}

}  // namespace
