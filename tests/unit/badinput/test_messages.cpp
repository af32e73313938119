// Hostile text inside files (newlines, escape sequences, invalid UTF-8, very long strings) reaches error messages
// only quoted, escaped and clipped; names and text from files stay printable; non-UTF-8 metadata still loads and
// decodes to valid UTF-8.
#include <gtest/gtest.h>

#include <filesystem>

#include "badinput_util.hpp"
#include "clusterfusion/formats/gguf.hpp"
#include "clusterfusion/model/config.hpp"
#include "clusterfusion/formats/model_file.hpp"
#include "clusterfusion/formats/safetensors.hpp"
#include "clusterfusion/tokenizer/tokenizer.hpp"
#include "fuzz_seeds.hpp"
#include "gguf_writer.hpp"
#include "safetensors_writer.hpp"
#include "test_util.hpp"

namespace {
namespace fs = std::filesystem;
using cf::badinput::expect_clean_refusal;
using cf::test::GgufWriter;

// Newline, carriage return, ESC (a terminal colour sequence), a NUL, invalid UTF-8, then 5000 more bytes.
const std::string kHostile = "x\ny\r\x1b[31mred\x00\xff\xfe\xc0\xaf" + std::string(5000, 'z');
// The same for JSON strings (escaped, valid UTF-8 at the JSON level: U+001B, U+0000 ...).
const std::string kHostileJson = R"(x\ny\r\u001b[31mred\u0000\u00ff)" + std::string(5000, 'z');

cf::GgufFile parse(const std::vector<uint8_t>& b) { return cf::GgufFile::from_memory("hostile.gguf", b.data(), b.size()); }

TEST(Messages, GgufTextIsQuotedAndClipped) {
  // Key names (in every parse error's "where"), duplicate keys, tensor names.
  {
    GgufWriter w;
    w.add_u32(kHostile, 1);
    w.add_u32(kHostile, 2);
    const auto b = w.build();
    expect_clean_refusal([&] { parse(b); }, "hostile.gguf: duplicate metadata key");
  }
  {
    GgufWriter w;
    w.add_raw(kHostile.substr(0, 200), cf::test::GgufTypeCode(99), {});
    const auto b = w.build();
    expect_clean_refusal([&] { parse(b); }, "unknown value type 99");
  }
  {
    GgufWriter w;
    w.add_tensor(kHostile.substr(0, 1000), 11 /* Q3_K */, {256}, std::vector<uint8_t>(110));
    const auto b = w.build();
    const auto f = parse(b);
    expect_clean_refusal([&] { (void)f.tensor_ref(f.tensors()[0]); }, "Q3_K");
    GgufWriter dup;
    dup.add_f32_tensor(kHostile.substr(0, 1000), {2}, {1, 2});
    dup.add_f32_tensor(kHostile.substr(0, 1000), {2}, {1, 2});
    const auto d = dup.build();
    expect_clean_refusal([&] { parse(d); }, "duplicate tensor name");
  }
  // Strings the config and tokenizer loaders echo.
  const std::pair<std::string, std::string> echoed[] = {
      {"general.architecture", "unsupported architecture"},
      {"tokenizer.ggml.model", "unsupported tokenizer model"},
      {"tokenizer.ggml.pre", "unsupported pre-tokenizer"},
      {"llama.rope.scaling.type", "RoPE scaling"},
  };
  for (const auto& [key, what] : echoed) {
    SCOPED_TRACE(key);
    const auto good = cf::fuzz::micro_model_gguf();
    const auto f0 = parse(good);
    GgufWriter w;
    // Rebuild the micro model's metadata with the one key replaced (tensors are not needed for these errors).
    for (const auto& [k, v] : f0.metadata())
      if (k != key && v.type() == cf::GgufType::String) w.add_string(k, *v.to_string());
      else if (k != key && v.type() == cf::GgufType::U32) w.add_u32(k, uint32_t(*v.to_int()));
      else if (k != key && v.type() == cf::GgufType::F32) w.add_f32(k, float(*v.to_float()));
      else if (k != key && v.is_array() && v.elem_type() == cf::GgufType::String) w.add_string_array(k, *f0.get_string_array(k));
    w.add_string(key, kHostile);
    const auto b = w.build();
    const auto f = parse(b);
    expect_clean_refusal([&] {
      (void)cf::config_from_gguf(f);
      (void)cf::tokenizer_spec_from_gguf(f);
    }, what);
  }
}

TEST(Messages, JsonTextIsQuotedAndClipped) {
  // config.json
  for (const std::string field : {"model_type", "hidden_act"}) {
    // The hostile field last: find() returns the last of duplicate keys.
    const std::string text = R"({"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,)"
                             R"("num_attention_heads":4,"vocab_size":600,")" + field + R"(":")" + kHostileJson + "\"}";
    const auto doc = cf::json::parse(text);
    expect_clean_refusal([&] { (void)cf::config_from_hf_json(doc, "config.json"); }, "config.json");
  }
  // tokenizer.json: model type, normaliser type, pre-tokenizer, a token name.
  const std::string base = R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"ByteLevel"}})";
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {R"("type":"BPE")", R"("type":")" + kHostileJson + "\""},
           {R"("pre_tokenizer":{"type":"ByteLevel"})", R"("pre_tokenizer":{"type":"ByteLevel"},"normalizer":{"type":")" + kHostileJson + "\"}"},
           {R"("vocab":{"a":0})", R"("vocab":{")" + kHostileJson + R"(":-1})"},
           {R"("vocab":{"a":0})", R"("vocab":{")" + kHostileJson + R"(":7})"}}) {
    std::string text = base;
    text.replace(text.find(from), from.size(), to);
    expect_clean_refusal([&] { (void)cf::tokenizer_spec_from_hf_json_text(text, "tokenizer.json"); }, "tokenizer.json");
  }
  // safetensors: tensor name and dtype.
  const std::string header = "{\"" + kHostileJson + "\":{\"dtype\":\"" + kHostileJson + "\",\"shape\":[1],\"data_offsets\":[0,4]}}";
  const auto st = cf::test::safetensors_bytes({{"ignored", "F32", {1}, std::vector<uint8_t>(4)}}, header);
  expect_clean_refusal([&] { (void)cf::SafetensorsFile::from_memory("h.safetensors", st.data(), st.size()); }, "h.safetensors");
}

// Shard names come from the index file and end up in messages: control characters are refused like a path.
TEST(Messages, ShardNamesFromTheIndexArePrintable) {
  cf::test::TempDir dir;
  const fs::path d = dir.path() / "m";
  cf::test::TinyHfOptions o;
  o.sharded = true;
  cf::test::write_tiny_hf_model(d, "tiny_smollm", o);
  cf::test::write_text(d / "model.safetensors.index.json",
                       R"({"weight_map":{"model.norm.weight":"evil\n\u001b[2Jname.safetensors"}})");
  const auto msg = expect_clean_refusal([&] { cf::open_model_file(d.string()); }, "model.safetensors.index.json");
  EXPECT_NE(msg.find("must name a file in the same folder"), std::string::npos) << msg;
}

// Metadata that is not UTF-8 (name, token pieces, chat template) loads; what is shown or decoded is valid UTF-8
// without control characters.
TEST(Messages, NonUtf8MetadataLoads) {
  const auto good = cf::fuzz::micro_model_gguf();
  const auto f0 = parse(good);
  GgufWriter w;
  for (const auto& [k, v] : f0.metadata()) {
    if (k == "general.name") {
      w.add_string(k, "evil\x1b[2J\xff\xfe name " + std::string(300, 'n'));
    } else if (k == "tokenizer.chat_template") {
      w.add_string(k, "<|im_start|>\xff\xc0{{ m.content }}");
    } else if (k == "tokenizer.ggml.tokens") {
      auto tokens = *f0.get_string_array(k);
      tokens.back() = "\xff\xfe\xed\xa0\x80";  // the last merge result becomes an invalid piece
      w.add_string_array(k, tokens);
    } else if (v.type() == cf::GgufType::String) {
      w.add_string(k, *v.to_string());
    } else if (v.type() == cf::GgufType::U32) {
      w.add_u32(k, uint32_t(*v.to_int()));
    } else if (v.type() == cf::GgufType::F32) {
      w.add_f32(k, float(*v.to_float()));
    } else if (v.type() == cf::GgufType::Bool) {
      w.add_bool(k, *v.to_bool());
    } else if (v.is_array() && v.elem_type() == cf::GgufType::String) {
      w.add_string_array(k, *f0.get_string_array(k));
    } else if (v.is_array()) {
      const auto ints = *f0.get_int_array(k);
      w.add_array<int32_t>(k, cf::test::GgufTypeCode::I32, std::vector<int32_t>(ints.begin(), ints.end()));
    }
  }
  for (const auto& t : f0.tensors())
    w.add_tensor(t.name, t.ggml_type, {uint64_t(t.ne[0]), uint64_t(t.ne[1])}, std::vector<uint8_t>(t.data, t.data + t.nbytes));
  // 1-D tensors were written with two dims above; rebuild them with their own shape.
  for (auto& t : w.tensors()) {
    const auto* info = f0.find_tensor(t.name);
    t.ne.assign(info->ne.begin(), info->ne.begin() + info->n_dims);
  }
  cf::test::TempDir dir;
  const std::string path = dir.file("nonutf8.gguf");
  cf::test::write_file(path, w.build());
  const auto m = cf::open_model_file(path);
  const std::string summary = m->config().summary();
  EXPECT_TRUE(cf::json::is_valid_utf8(summary)) << summary;
  EXPECT_EQ(summary.find('\x1b'), std::string::npos) << summary;
  EXPECT_LT(summary.size(), 1200u);
  ASSERT_TRUE(m->chat_template());
  const auto tok = cf::Tokenizer::create(m->tokenizer_spec());
  std::vector<int32_t> all(size_t(tok->vocab_size()));
  for (int32_t i = 0; i < tok->vocab_size(); ++i) all[size_t(i)] = i;
  EXPECT_TRUE(cf::json::is_valid_utf8(tok->decode(all)));
  // Prompts that are not UTF-8 encode, and decode to valid UTF-8 (U+FFFD for the bad bytes).
  const std::string prompt = "hi \xff\xfe\xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 end";
  const auto ids = tok->encode(prompt, false, false);
  const std::string back = tok->decode(ids);
  EXPECT_TRUE(cf::json::is_valid_utf8(back));
  EXPECT_NE(back.find("\xef\xbf\xbd"), std::string::npos) << back;
  EXPECT_EQ(back.substr(0, 3), "hi ");
}

}  // namespace
