#include <gtest/gtest.h>

#include <random>

#include "clusterfusion/common/json.hpp"
#include "clusterfusion/formats/model_file.hpp"
#include "clusterfusion/formats/safetensors.hpp"
#include "clusterfusion/tokenizer/tokenizer.hpp"
#include "safetensors_writer.hpp"
#include "test_util.hpp"

namespace {
using cf::test::expect_input_error;
using cf::test::StTensor;

cf::SafetensorsFile parse(const std::vector<uint8_t>& b, size_t size = SIZE_MAX) {
  return cf::SafetensorsFile::from_memory("m.safetensors", b.data(), std::min(size, b.size()));
}

std::vector<StTensor> two_tensors() {
  std::mt19937 rng(1);
  return {{"a", "F32", {2, 3}, cf::test::random_tensor_bytes("F32", 6, rng)},
          {"b", "BF16", {4}, cf::test::random_tensor_bytes("BF16", 4, rng)}};
}

TEST(Safetensors, ReadsTensorsAndMetadata) {
  const auto t = two_tensors();
  const auto bytes = cf::test::safetensors_bytes(t);
  const auto f = parse(bytes);
  ASSERT_EQ(f.tensors().size(), 2u);
  const auto* a = f.find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->dtype, "F32");
  EXPECT_EQ(a->end - a->begin, 24u);
  EXPECT_EQ(f.metadata().size(), 1u);
  const auto ref = f.tensor_ref(*f.find("b"), "canon.b");
  EXPECT_EQ(ref.name, "canon.b");
  EXPECT_EQ(ref.dtype, cf::DType::BF16);
  const auto values = cf::dequantize_all(ref);
  float first;
  std::memcpy(&first, t[0].data.data(), 4);
  EXPECT_EQ(cf::dequantize_all(f.tensor_ref(*a, "a"))[0], first);
  EXPECT_EQ(values[1], cf::bf16_bits_to_float(uint16_t(t[1].data[2] | (t[1].data[3] << 8))));
}

TEST(Safetensors, CanonicalNames) {
  EXPECT_EQ(cf::canonical_tensor_name("model.layers.12.self_attn.q_proj.weight"), "blk.12.attn_q.weight");
  EXPECT_EQ(cf::canonical_tensor_name("model.layers.0.self_attn.k_proj.bias"), "blk.0.attn_k.bias");
  EXPECT_EQ(cf::canonical_tensor_name("model.layers.3.mlp.down_proj.weight"), "blk.3.ffn_down.weight");
  EXPECT_EQ(cf::canonical_tensor_name("model.layers.3.post_attention_layernorm.weight"), "blk.3.ffn_norm.weight");
  EXPECT_EQ(cf::canonical_tensor_name("model.embed_tokens.weight"), "token_embd.weight");
  EXPECT_EQ(cf::canonical_tensor_name("lm_head.weight"), "output.weight");
  EXPECT_EQ(cf::canonical_tensor_name("model.layers.03.mlp.up_proj.weight"), std::nullopt);
  EXPECT_EQ(cf::canonical_tensor_name("model.layers.x.mlp.up_proj.weight"), std::nullopt);
  EXPECT_EQ(cf::canonical_tensor_name("model.layers.1.self_attn.rotary_emb.inv_freq"), std::nullopt);
}

TEST(Safetensors, RejectsCorruptHeaders) {
  const auto t = two_tensors();
  const auto good = cf::test::safetensors_bytes(t);
  auto bad = good;
  cf::test::patch<uint64_t>(bad, 0, 1ull << 40);
  expect_input_error([&] { parse(bad); }, {"m.safetensors: header length 1099511627776 exceeds the limit"});
  cf::test::patch<uint64_t>(bad, 0, good.size());
  expect_input_error([&] { parse(bad); }, {"exceeds the", "bytes after it (file truncated?)"});
  expect_input_error([&] { parse(good, 5); }, {"truncated: 5 bytes"});
  auto header = [&](const std::string& h, std::initializer_list<std::string> fragments) {
    const auto b = cf::test::safetensors_bytes(t, h);
    expect_input_error([&] { parse(b); }, fragments);
  };
  header("{\"a\":", {"bad JSON header", "json:"});
  header("[1,2]", {"header is not a JSON object"});
  header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[24,28]}}",
         {"duplicate tensor name", "'a'"});
  header("{\"a\":{\"dtype\":\"F33\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", {"unknown dtype 'F33'", "tensor 'a'"});
  header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,28]}}", {"span 28 bytes", "needs 24"});
  header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[8,1000000]}}", {"exceed the data section"});
  header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[24,0]}}", {"end before they begin"});
  header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[16,24]}}",
         {"data overlaps tensor 'a'", "tensor 'b'"});
  header("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2,3],\"data_offsets\":[0,24]}}", {"non-negative integers"});
  header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,24]}}", {"element count overflows"});
  header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3]}}", {"data_offsets must be [begin, end]"});
  header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24.5]}}", {"data_offsets must be"});
  header("{\"a\":[]}", {"entry is not an object"});
  header("{\"__metadata__\":{\"k\":1}}", {"__metadata__ value for 'k' is not a string"});
  header("[" + std::string(4000, ',') + "]", {"too many JSON values"});
  // Supported only as model tensors: F32, F16, BF16.
  const auto i64 = cf::test::safetensors_bytes({{"idx", "I64", {2}, std::vector<uint8_t>(16)}});
  const auto f = parse(i64);
  expect_input_error([&] { (void)f.tensor_ref(f.tensors()[0], "idx"); }, {"'idx' has unsupported dtype I64 (supported: F32, F16, BF16)"});
}

TEST(Safetensors, SurvivesTruncationAndCorruption) {
  const auto good = cf::test::safetensors_bytes(two_tensors());
  for (size_t n = 0; n < good.size(); ++n) {
    try {
      const auto f = parse(good, n);
      for (const auto& t : f.tensors()) (void)cf::dequantize_all(f.tensor_ref(t, t.name));
    } catch (const cf::InputError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("m.safetensors: ", 0), 0u) << e.what();
    }
  }
  std::mt19937 rng(9);
  for (int iter = 0; iter < 2000; ++iter) {
    auto bad = good;
    bad[rng() % bad.size()] = uint8_t(rng());
    try {
      const auto f = parse(bad);
      for (const auto& t : f.tensors()) (void)cf::dequantize_all(f.tensor_ref(t, t.name));
    } catch (const cf::InputError&) {
    }
  }
}

// ---- Hugging Face model folders ---------------------------------------------------------------------------------

TEST(HfModel, OpensSingleFileFolder) {
  cf::test::TempDir dir;
  const auto model_dir = dir.path() / "tiny";
  cf::test::write_tiny_hf_model(model_dir, "tiny_smollm");
  const auto m = cf::open_model_file(model_dir.string());
  EXPECT_EQ(m->format(), "safetensors");
  EXPECT_EQ(m->gguf(), nullptr);
  const auto& c = m->config();
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.hidden, 64);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.vocab, 600);
  EXPECT_EQ(c.max_context, 512);
  EXPECT_EQ(c.rope_style, cf::RopeStyle::NeoX);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(m->require("blk.1.attn_k.weight", {32, 64}).dtype, cf::DType::BF16);
  EXPECT_EQ(m->require("blk.1.attn_norm.weight", {64}).dtype, cf::DType::F32);
  const auto& spec = m->tokenizer_spec();
  EXPECT_EQ(spec.pre, "smollm");
  const auto tok = cf::Tokenizer::create(spec);
  EXPECT_EQ(tok->token_text(spec.bos), "<|im_start|>");
  EXPECT_TRUE(tok->is_end_of_generation(2));
  EXPECT_TRUE(tok->is_end_of_generation(0));  // generation_config.json lists [2, 0]
  ASSERT_TRUE(m->chat_template());
  // A .safetensors file path opens the same model.
  const auto m2 = cf::open_model_file((model_dir / "model.safetensors").string());
  EXPECT_EQ(m2->tensors().size(), m->tensors().size());
}

TEST(HfModel, OpensShardedQwen2WithSentencePieceModel) {
  cf::test::TempDir dir;
  const auto model_dir = dir.path() / "sharded";
  cf::test::TinyHfOptions o;
  o.sharded = true;
  o.model_type = "qwen2";
  o.dtype = "F16";
  o.tied = false;
  o.tokenizer_model_only = true;
  o.vocab = 700;
  cf::test::write_tiny_hf_model(model_dir, "tiny_spm", o);
  const auto m = cf::open_model_file(model_dir.string());
  EXPECT_EQ(m->config().arch, "qwen2");
  EXPECT_TRUE(m->config().qkv_bias);
  EXPECT_FALSE(m->config().tied_embeddings);
  EXPECT_EQ(m->require("output.weight", {700, 64}).dtype, cf::DType::F16);
  EXPECT_EQ(m->require("blk.0.attn_q.bias", {64}).dtype, cf::DType::F16);
  EXPECT_EQ(m->tokenizer_spec().kind, cf::TokenizerSpec::Kind::SentencePiece);
  EXPECT_EQ(m->tensors().size(), 2u + 1u + 2u * 12u);
}

TEST(HfModel, RejectsBrokenFolders) {
  cf::test::TempDir dir;
  int case_id = 0;
  auto make = [&](const cf::test::TinyHfOptions& o, const std::string& tokenizer = "tiny_smollm") {
    const auto d = dir.path() / ("m" + std::to_string(case_id++));
    cf::test::write_tiny_hf_model(d, tokenizer, o);
    return d;
  };
  cf::test::TinyHfOptions o;
  o.skip_tensor = "model.layers.1.mlp.up_proj.weight";
  auto d = make(o);
  expect_input_error([&] { cf::open_model_file(d.string()); }, {d.string(), "missing tensor 'blk.1.ffn_up.weight'"});
  o = {};
  o.tied = false;
  o.skip_tensor = "lm_head.weight";
  d = make(o);
  expect_input_error([&] { cf::open_model_file(d.string()); }, {"missing tensor 'output.weight' (lm_head.weight)"});
  o = {};
  o.extra_config = ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0}";
  d = make(o);
  expect_input_error([&] { cf::open_model_file(d.string()); }, {"config.json: rope_scaling is not supported"});
  o = {};
  o.model_type = "gpt_neox";
  d = make(o);
  expect_input_error([&] { cf::open_model_file(d.string()); }, {"unsupported model_type 'gpt_neox'"});
  o = {};
  o.dtype = "I32";
  d = make(o);
  expect_input_error([&] { cf::open_model_file(d.string()); }, {"model.safetensors: tensor 'model.embed_tokens.weight' has unsupported dtype I32"});

  d = make({});
  std::filesystem::remove(d / "tokenizer.json");
  expect_input_error([&] { cf::open_model_file(d.string()); }, {"missing tokenizer (expected tokenizer.json or tokenizer.model)"});
  d = make({});
  std::filesystem::remove(d / "config.json");
  expect_input_error([&] { cf::open_model_file(d.string()); }, {"missing config.json"});
  d = make({});
  cf::test::write_text(d / "config.json", "{\"model_type\": \"llama\", ");
  expect_input_error([&] { cf::open_model_file(d.string()); }, {"config.json: json:"});

  cf::test::TinyHfOptions sharded;
  sharded.sharded = true;
  d = make(sharded);
  cf::test::write_text(d / "model.safetensors.index.json", "{\"weight_map\":{\"model.norm.weight\":\"../evil.safetensors\"}}");
  expect_input_error([&] { cf::open_model_file(d.string()); }, {"must name a file in the same folder"});
  cf::test::write_text(d / "model.safetensors.index.json", "{\"weight_map\":{\"model.ghost.weight\":\"model-00001-of-00002.safetensors\"}}");
  expect_input_error([&] { cf::open_model_file(d.string()); }, {"lists tensor 'model.ghost.weight'", "does not contain it"});
  cf::test::write_text(d / "model.safetensors.index.json", "{\"weight_map\":{\"x\":\"missing.safetensors\"}}");
  expect_input_error([&] { cf::open_model_file(d.string()); }, {"missing.safetensors: cannot open"});
}

}  // namespace
