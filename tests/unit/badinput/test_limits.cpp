// Huge vocabularies, dimensions and texts are refused with the limit named; loading stays linear in the number of
// tensors however many a file lists.
#include <gtest/gtest.h>

#include <chrono>

#include "badinput_util.hpp"
#include "clusterfusion/formats/gguf.hpp"
#include "clusterfusion/model/config.hpp"
#include "clusterfusion/formats/model_file.hpp"
#include "clusterfusion/tokenizer/tokenizer.hpp"
#include "clusterfusion/runtime/chat_template.hpp"
#include "gguf_writer.hpp"
#include "test_util.hpp"

namespace {
using cf::badinput::expect_clean_refusal;
using cf::test::GgufWriter;

TEST(Limits, VocabularyOverTheCap) {
  const size_t n = cf::Tokenizer::kMaxVocab + 1;
  // GGUF: 2^21 + 1 one-byte tokens.
  GgufWriter w;
  w.add_string("tokenizer.ggml.model", "gpt2");
  w.add_string_array("tokenizer.ggml.tokens", std::vector<std::string>(n, "a"));
  const auto b = w.build();
  const auto f = cf::GgufFile::from_memory("big.gguf", b.data(), b.size());
  expect_clean_refusal([&] { (void)cf::tokenizer_spec_from_gguf(f); }, "tokenizer.ggml.tokens has 2097153 entries (limit 2097152)");
  // tokenizer.model: 2^21 + 1 empty pieces (2 bytes each).
  std::string proto;
  for (size_t i = 0; i < n; ++i) proto += std::string("\x0a\x00", 2);
  expect_clean_refusal([&] { (void)cf::tokenizer_spec_from_sentencepiece_bytes(proto, "big.model"); }, "more than 2097152 pieces");
  // tokenizer.json: an id far beyond the vocabulary is refused before it sizes anything.
  const std::string json = R"({"model":{"type":"BPE","vocab":{"a":2097151},"merges":[]},"pre_tokenizer":{"type":"ByteLevel"}})";
  expect_clean_refusal([&] { (void)cf::tokenizer_spec_from_hf_json_text(json, "big.json"); }, "has id 2097151 in a vocabulary of 1 tokens");
}

TEST(Limits, AbsurdConfigJson) {
  const std::string base = R"("model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,)"
                           R"("num_attention_heads":4,"vocab_size":600)";
  const std::pair<std::string, std::string> cases[] = {
      {R"("vocab_size":2147483647)", "vocab = 2147483647"},
      {R"("vocab_size":2147483648)", "vocab_size"},
      {R"("hidden_size":1048576)", "hidden = 1048576"},
      {R"("num_hidden_layers":-3)", "num_hidden_layers"},
      {R"("num_hidden_layers":1e300)", "num_hidden_layers"},
      {R"("num_hidden_layers":"2")", "num_hidden_layers"},
      {R"("num_attention_heads":0)", "num_attention_heads = 0"},
      {R"("head_dim":100000)", "head_dim"},
      {R"("max_position_embeddings":99999999999)", "max_position_embeddings"},
      {R"("rope_theta":1e999)", "number out of range"},
      {R"("rope_theta":-1)", "rope_theta"},
      {R"("rms_norm_eps":0)", "rms_eps"},
      {R"("intermediate_size":null)", "intermediate_size"},
  };
  for (const auto& [field, expected] : cases) {
    SCOPED_TRACE(field);
    // The field after the base ones: a duplicate key, and find() returns the last of duplicates (as Python's json).
    const std::string text = "{" + base + "," + field + "}";
    expect_clean_refusal([&] { (void)cf::config_from_hf_json(cf::json::parse(text), "config.json"); }, expected);
  }
}

TEST(Limits, TextOverTheTokenizerLimit) {
  const auto tok = cf::Tokenizer::create(
      cf::tokenizer_spec_from_hf_json(cf::test::data_path("tokenizer/tiny_smollm/tokenizer.json")));
  const std::string text(cf::Tokenizer::kMaxTextBytes + 1, 'a');
  expect_clean_refusal([&] { (void)tok->encode(text, false, false); }, "exceeds the tokenizer limit of 67108864 bytes");
}

// A model file listing 1024 layers plus 200k unused tensors: every lookup of a needed tensor used to scan the whole
// list (1024 x 9 x 200k comparisons). Loading must cost about what parsing the file costs.
TEST(Limits, ManyTensorsLoadInLinearTime) {
  const int layers = 1024, junk = 200000;
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_u32("llama.block_count", layers);
  w.add_u32("llama.context_length", 8);
  w.add_u32("llama.embedding_length", 2);
  w.add_u32("llama.feed_forward_length", 1);
  w.add_u32("llama.attention.head_count", 1);
  w.add_f32("llama.rope.freq_base", 1e4f);
  w.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.add_string("tokenizer.ggml.model", "gpt2");
  w.add_string_array("tokenizer.ggml.tokens", {"a"});
  w.add_string_array("tokenizer.ggml.merges", {"a a"});
  auto tensor = [&](const std::string& name, std::vector<uint64_t> ne) {
    uint64_t n = 1;
    for (const auto d : ne) n *= d;
    w.add_f32_tensor(name, std::move(ne), std::vector<float>(n, 0.5f));
  };
  for (int j = 0; j < junk; ++j) tensor("unused." + std::to_string(j), {1});
  tensor("token_embd.weight", {2, 1});
  tensor("output_norm.weight", {2});
  for (int l = 0; l < layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    for (const char* n : {"attn_norm.weight", "ffn_norm.weight"}) tensor(p + n, {2});
    for (const char* n : {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight"}) tensor(p + n, {2, 2});
    for (const char* n : {"ffn_gate.weight", "ffn_up.weight"}) tensor(p + n, {2, 1});
    tensor(p + "ffn_down.weight", {1, 2});
  }
  const auto bytes = w.build();
  cf::test::TempDir dir;
  const std::string path = dir.file("many.gguf");
  cf::test::write_file(path, bytes);
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const auto parsed = cf::GgufFile(path);
  const auto t1 = clock::now();
  const auto model = cf::open_model_file(path);
  const auto t2 = clock::now();
  EXPECT_EQ(model->config().n_layers, layers);
  EXPECT_EQ(model->tensors().size(), size_t(junk + 2 + 9 * layers));
  const double parse_s = std::chrono::duration<double>(t1 - t0).count();
  const double open_s = std::chrono::duration<double>(t2 - t1).count();
  std::printf("[ info ] %zu tensors: parse %.3f s, open_model_file %.3f s\n", model->tensors().size(), parse_s, open_s);
  // open = parse + a TensorRef per tensor + indexed lookups: a few parses' worth. The linear scans took ~10x.
  EXPECT_LT(open_s, 5 * parse_s + 0.05);
}

// The chat template comes from the model file. Detecting ChatML's default system prompt searched for the end of
// every "<|im_start|>system" opener from scratch: quadratic, ~8 s for this 1 MB, hours for a 16 MB template.
TEST(Limits, HugeChatTemplateIsDetectedInLinearTime) {
  std::string jinja;
  while (jinja.size() < (size_t(1) << 20)) jinja += "<|im_start|>system\n{";
  jinja += "<|im_end|><|im_start|>system\nThe literal.<|im_end|>";
  const auto t0 = std::chrono::steady_clock::now();
  const auto t = cf::ChatTemplate::detect(jinja);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(t.format(), cf::ChatFormat::ChatML);
  ASSERT_TRUE(t.default_system());
  EXPECT_EQ(*t.default_system(), "The literal.");
  std::printf("[ info ] 1 MB template detected in %.3f s\n", s);
  EXPECT_LT(s, 2.0);  // linear: ~1 ms (~10 ms under ASan)
}

}  // namespace
