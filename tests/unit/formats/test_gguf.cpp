#include <gtest/gtest.h>

#include <random>

#include "clusterfusion/formats/gguf.hpp"
#include "gguf_writer.hpp"
#include "test_util.hpp"

namespace {
using cf::GgufFile;
using cf::GgufType;
using cf::test::expect_input_error;
using cf::test::GgufTypeCode;
using cf::test::GgufWriter;


// A file with one of every metadata type and two tensors; the last tensor ends exactly at the end of the file.
GgufWriter rich_writer() {
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_raw("k.u8", GgufTypeCode::U8, {200});
  w.add_raw("k.i8", GgufTypeCode::I8, {0xff});
  w.add_raw("k.u16", GgufTypeCode::U16, {0x34, 0x12});
  w.add_raw("k.i16", GgufTypeCode::I16, {0xfe, 0xff});
  w.add_u32("k.u32", 4000000000u);
  w.add_i32("k.i32", -5);
  w.add_f32("k.f32", 1.5f);
  w.add_bool("k.bool", true);
  w.add_u64("k.u64", 1ull << 40);
  w.add_raw("k.i64", GgufTypeCode::I64, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff});
  w.add_f64("k.f64", -0.25);
  w.add_string_array("k.strings", {"a", "", "b\xc3\xa9"});
  w.add_array<int32_t>("k.ints", GgufTypeCode::I32, {1, -2, 3});
  w.add_array<float>("k.floats", GgufTypeCode::F32, {0.5f, 2.0f});
  // Nested: array of 2 arrays: [u8 x2], [string x1].
  std::vector<uint8_t> nested;
  cf::test::put<uint32_t>(nested, uint32_t(GgufTypeCode::Array));
  cf::test::put<uint64_t>(nested, 2);
  cf::test::put<uint32_t>(nested, uint32_t(GgufTypeCode::U8));
  cf::test::put<uint64_t>(nested, 2);
  nested.push_back(7);
  nested.push_back(9);
  cf::test::put<uint32_t>(nested, uint32_t(GgufTypeCode::String));
  cf::test::put<uint64_t>(nested, 1);
  cf::test::put_string(nested, "deep");
  w.add_raw("k.nested", GgufTypeCode::Array, nested);
  std::vector<float> a(16), b(8 * 4);
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(i);
  for (size_t i = 0; i < b.size(); ++i) b[i] = -float(i);
  w.add_f32_tensor("a", {16}, a);
  w.add_f32_tensor("b", {8, 4}, b);
  return w;
}

GgufFile parse(const std::vector<uint8_t>& bytes, size_t size = SIZE_MAX) {
  return GgufFile::from_memory("mem.gguf", bytes.data(), std::min(size, bytes.size()));
}

TEST(Gguf, ReadsEveryMetadataTypeAndTensors) {
  auto w = rich_writer();
  const auto bytes = w.build();
  const GgufFile f = parse(bytes);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset(), w.layout.data_begin);
  EXPECT_EQ(f.metadata().size(), 16u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("k.u8"), 200);
  EXPECT_EQ(f.get_int("k.i8"), -1);
  EXPECT_EQ(f.get_int("k.u16"), 0x1234);
  EXPECT_EQ(f.get_int("k.i16"), -2);
  EXPECT_EQ(f.get_int("k.u32"), 4000000000ll);
  EXPECT_EQ(f.get_int("k.i32"), -5);
  EXPECT_EQ(f.get_float("k.f32"), 1.5);
  EXPECT_EQ(f.get_bool("k.bool"), true);
  EXPECT_EQ(f.get_int("k.u64"), 1ll << 40);
  EXPECT_EQ(f.get_int("k.i64"), -1);
  EXPECT_EQ(f.get_float("k.f64"), -0.25);
  EXPECT_EQ(f.get_float("k.i32"), -5.0);  // integers convert to floats
  EXPECT_EQ(f.get_string_array("k.strings"), (std::vector<std::string>{"a", "", "b\xc3\xa9"}));
  EXPECT_EQ(f.get_int_array("k.ints"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(f.get_float_array("k.floats"), (std::vector<float>{0.5f, 2.0f}));
  const auto* nested = f.find("k.nested");
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->size(), 2u);
  EXPECT_EQ(nested->array_at(0).int_at(1), 9);
  EXPECT_EQ(nested->array_at(1).string_at(0), "deep");
  EXPECT_EQ(nested->display(), "[[7, 9], [\"deep\"]]");
  EXPECT_EQ(f.find("missing"), nullptr);
  EXPECT_EQ(f.get_int("missing"), std::nullopt);

  ASSERT_EQ(f.tensors().size(), 2u);
  const auto* tb = f.find_tensor("b");
  ASSERT_NE(tb, nullptr);
  EXPECT_EQ(tb->shape(), (std::vector<int64_t>{4, 8}));
  EXPECT_EQ(tb->nbytes, 128u);
  const cf::TensorRef ref = f.tensor_ref(*tb);
  EXPECT_EQ(ref.rows(), 4);
  EXPECT_EQ(ref.cols(), 8);
  const auto values = cf::dequantize_all(ref);
  EXPECT_EQ(values[9], -9.0f);
  EXPECT_EQ(bytes.size(), w.layout.end);
}

TEST(Gguf, TypedGettersRejectWrongTypes) {
  auto w = rich_writer();
  const auto bytes = w.build();
  const GgufFile f = parse(bytes);
  expect_input_error([&] { (void)f.get_string("k.u32"); }, {"mem.gguf", "'k.u32'", "u32", "expected string"});
  expect_input_error([&] { (void)f.get_int("k.f32"); }, {"'k.f32'", "expected an integer"});
  expect_input_error([&] { (void)f.get_bool("k.i8"); }, {"expected bool"});
  expect_input_error([&] { (void)f.get_string_array("k.ints"); }, {"array of i32", "expected array of string"});
  expect_input_error([&] { (void)f.get_int_array("k.strings"); }, {"expected array of integers"});
  expect_input_error([&] { (void)f.require_string("nope"); }, {"mem.gguf: missing metadata 'nope'"});
}

TEST(Gguf, AcceptsVersion2AndCustomAlignment) {
  GgufWriter w;
  w.version = 2;
  w.alignment = 64;
  w.add_u32("general.alignment", 64);
  w.add_f32_tensor("x", {16}, std::vector<float>(16, 1.0f));
  w.add_f32_tensor("y", {16}, std::vector<float>(16, 2.0f));
  const auto bytes = w.build();
  const GgufFile f = parse(bytes);
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset() % 64, 0u);
  EXPECT_EQ(f.find_tensor("y")->offset, 64u);
}

TEST(Gguf, OpensFilesAndChecksMagic) {
  cf::test::TempDir dir;
  auto w = rich_writer();
  cf::test::write_file(dir.file("ok.gguf"), w.build());
  const GgufFile f(dir.file("ok.gguf"));
  EXPECT_EQ(f.path(), dir.file("ok.gguf"));
  EXPECT_EQ(f.tensors().size(), 2u);
  EXPECT_TRUE(GgufFile::has_magic(dir.file("ok.gguf")));
  cf::test::write_file(dir.file("empty.gguf"), {});
  expect_input_error([&] { GgufFile g(dir.file("empty.gguf")); }, {"empty.gguf", "empty"});
  EXPECT_FALSE(GgufFile::has_magic(dir.file("empty.gguf")));
  expect_input_error([&] { GgufFile g(dir.file("absent.gguf")); }, {"absent.gguf", "cannot open"});
  expect_input_error([&] { GgufFile g(dir.path().string()); }, {"not a regular file"});
}

TEST(Gguf, RejectsBadHeaders) {
  auto w = rich_writer();
  auto bytes = w.build();
  auto bad = bytes;
  bad[0] = 'X';
  expect_input_error([&] { parse(bad); }, {"mem.gguf", "not a GGUF file", "'XGUF'", "header"});
  bad = bytes;
  cf::test::patch<uint32_t>(bad, 4, 1);
  expect_input_error([&] { parse(bad); }, {"unsupported GGUF version 1", "obsolete"});
  cf::test::patch<uint32_t>(bad, 4, 0x03000000);
  expect_input_error([&] { parse(bad); }, {"big-endian"});
  cf::test::patch<uint32_t>(bad, 4, 4);
  expect_input_error([&] { parse(bad); }, {"unsupported GGUF version 4"});
  bad = bytes;
  cf::test::patch<uint64_t>(bad, 16, ~0ull);
  expect_input_error([&] { parse(bad); }, {"kv_count", "cannot fit"});
  bad = bytes;
  cf::test::patch<uint64_t>(bad, 8, 1ull << 40);
  expect_input_error([&] { parse(bad); }, {"tensor_count", "cannot fit"});
  expect_input_error([&] { parse(bytes, 3); }, {"not a GGUF file", "3 bytes"});
}

TEST(Gguf, RejectsTruncationAtEveryByte) {
  auto w = rich_writer();
  const auto bytes = w.build();
  for (size_t n = 0; n < bytes.size(); ++n) {
    try {
      parse(bytes, n);
      ADD_FAILURE() << "accepted a file truncated to " << n << " of " << bytes.size() << " bytes";
    } catch (const cf::InputError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("mem.gguf: ", 0), 0u) << e.what();
    }
  }
}

TEST(Gguf, RejectsLyingMetadata) {
  auto w = rich_writer();
  const auto bytes = w.build();
  const auto& L = w.layout;
  auto bad = bytes;
  cf::test::patch<uint64_t>(bad, L.kv_starts[0], 1ull << 62);  // key length
  expect_input_error([&] { parse(bad); }, {"key length", "exceeds", "metadata entry #0"});
  bad = bytes;
  cf::test::patch<uint64_t>(bad, L.kv_starts[0], 0);
  expect_input_error([&] { parse(bad); }, {"empty metadata key"});
  bad = bytes;
  cf::test::patch<uint32_t>(bad, L.kv_value_starts[1], 13);  // value type
  expect_input_error([&] { parse(bad); }, {"unknown value type 13", "'k.u8'"});
  bad = bytes;
  cf::test::patch<uint64_t>(bad, L.kv_value_starts[0] + 4, ~0ull - 3);  // string length near 2^64
  expect_input_error([&] { parse(bad); }, {"string value length", "exceeds", "'general.architecture'"});
  bad = bytes;
  cf::test::patch<uint64_t>(bad, L.kv_value_starts[12] + 8, 1ull << 61);  // k.strings count
  expect_input_error([&] { parse(bad); }, {"array of 2305843009213693952 string elements cannot fit", "'k.strings'"});
  bad = bytes;
  cf::test::patch<uint64_t>(bad, L.kv_value_starts[13] + 8, (~0ull) / 2);  // k.ints count: count*4 overflows
  expect_input_error([&] { parse(bad); }, {"cannot fit", "'k.ints'"});
  bad = bytes;
  cf::test::patch<uint32_t>(bad, L.kv_value_starts[13] + 4, 99);  // array element type
  expect_input_error([&] { parse(bad); }, {"unknown array element type 99"});
  bad = bytes;
  bad[L.kv_value_starts[8] + 4] = 2;  // bool = 2
  expect_input_error([&] { parse(bad); }, {"bool value 2"});
}

TEST(Gguf, RejectsDuplicateKeysAndDeepNesting) {
  GgufWriter w;
  w.add_u32("a", 1);
  w.add_u32("a", 2);
  auto bytes = w.build();
  expect_input_error([&] { parse(bytes); }, {"duplicate metadata key", "'a'"});

  GgufWriter deep;
  std::vector<uint8_t> v;
  for (int i = 0; i < 20; ++i) {
    cf::test::put<uint32_t>(v, uint32_t(GgufTypeCode::Array));
    cf::test::put<uint64_t>(v, 1);
  }
  cf::test::put<uint32_t>(v, uint32_t(GgufTypeCode::U8));
  cf::test::put<uint64_t>(v, 0);
  deep.add_raw("deep", GgufTypeCode::Array, v);
  bytes = deep.build();
  expect_input_error([&] { parse(bytes); }, {"nested deeper than 8"});
}

TEST(Gguf, RejectsBadAlignment) {
  for (const uint32_t al : {0u, 3u, 48u, 1u << 30}) {
    GgufWriter w;
    w.add_u32("general.alignment", al);
    const auto bytes = w.build();
    expect_input_error([&] { parse(bytes); }, {"general.alignment = " + std::to_string(al), "power of two"});
  }
  GgufWriter w;
  w.add_u64("general.alignment", 32);
  const auto bytes = w.build();
  expect_input_error([&] { parse(bytes); }, {"general.alignment is u64, expected u32"});
}

TEST(Gguf, RejectsLyingTensorInfos) {
  auto w = rich_writer();
  const auto bytes = w.build();
  const auto& L = w.layout;
  auto bad = bytes;
  cf::test::patch<uint32_t>(bad, L.tensor_dim_fields[1] - 4, 5);  // n_dims
  expect_input_error([&] { parse(bad); }, {"n_dims = 5", "'b'"});
  cf::test::patch<uint32_t>(bad, L.tensor_dim_fields[1] - 4, 0);
  expect_input_error([&] { parse(bad); }, {"n_dims = 0"});
  bad = bytes;
  cf::test::patch<uint64_t>(bad, L.tensor_dim_fields[1], 0);
  expect_input_error([&] { parse(bad); }, {"dimension 0 = 0", "tensor 'b'"});
  bad = bytes;
  cf::test::patch<uint64_t>(bad, L.tensor_dim_fields[1], 1ull << 62);
  cf::test::patch<uint64_t>(bad, L.tensor_dim_fields[1] + 8, 1ull << 62);
  expect_input_error([&] { parse(bad); }, {"element count overflows"});
  bad = bytes;
  cf::test::patch<uint64_t>(bad, L.tensor_dim_fields[1], 1ull << 40);  // absurd but no overflow
  expect_input_error([&] { parse(bad); }, {"more than the whole file"});
  bad = bytes;
  cf::test::patch<uint32_t>(bad, L.tensor_type_fields[0], 4);  // a removed ggml type
  expect_input_error([&] { parse(bad); }, {"unknown tensor type 4", "'a'"});
  bad = bytes;
  cf::test::patch<uint32_t>(bad, L.tensor_type_fields[0], cf::test::kGgmlQ8_0);  // 16 is not a multiple of 32
  expect_input_error([&] { parse(bad); }, {"row length 16 is not a multiple of the Q8_0 block size 32"});
  bad = bytes;
  cf::test::patch<uint64_t>(bad, L.tensor_offset_fields[1], 7);
  expect_input_error([&] { parse(bad); }, {"data offset 7 is not a multiple of the alignment 32", "'b'"});
  bad = bytes;
  cf::test::patch<uint64_t>(bad, L.tensor_offset_fields[1], 1024);
  expect_input_error([&] { parse(bad); }, {"outside the data section", "'b'"});
  bad = bytes;
  cf::test::patch<uint64_t>(bad, L.tensor_offset_fields[1], ~0ull - 31);  // offset + size overflows
  expect_input_error([&] { parse(bad); }, {"outside the data section"});
  bad = bytes;
  cf::test::patch<uint64_t>(bad, L.tensor_offset_fields[1], 0);  // 'b' now overlaps 'a'
  expect_input_error([&] { parse(bad); }, {"overlaps tensor"});
  bad = bytes;
  cf::test::patch<uint64_t>(bad, L.tensor_info_starts[1], 1ull << 40);
  expect_input_error([&] { parse(bad); }, {"tensor name length", "exceeds"});
}

TEST(Gguf, RejectsDuplicateTensorNamesAndUnsupportedTypes) {
  GgufWriter w;
  w.add_f32_tensor("t", {8}, std::vector<float>(8));
  w.add_f32_tensor("t", {8}, std::vector<float>(8));
  auto bytes = w.build();
  expect_input_error([&] { parse(bytes); }, {"duplicate tensor name", "'t'"});

  GgufWriter q;
  q.add_tensor("k", 11 /* Q3_K */, {256}, std::vector<uint8_t>(110));
  bytes = q.build();
  const GgufFile f = parse(bytes);  // lists fine
  EXPECT_EQ(cf::ggml_type_name(f.tensors()[0].ggml_type), "Q3_K");
  expect_input_error([&] { (void)f.tensor_ref(f.tensors()[0]); }, {"'k'", "Q3_K", "not supported"});
}

TEST(Gguf, SurvivesRandomCorruption) {
  auto w = rich_writer();
  const auto bytes = w.build();
  std::mt19937 rng(1234);
  int accepted = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    auto bad = bytes;
    const int flips = 1 + int(rng() % 4);
    for (int i = 0; i < flips; ++i) bad[rng() % bad.size()] = uint8_t(rng());
    const size_t size = (rng() % 4 == 0) ? rng() % bad.size() : bad.size();
    try {
      const GgufFile f = parse(bad, size);
      for (const auto& kv : f.metadata()) (void)kv.second.display();
      for (const auto& t : f.tensors())
        if (cf::dtype_from_ggml(t.ggml_type)) (void)cf::dequantize_all(f.tensor_ref(t));
      ++accepted;
    } catch (const cf::InputError&) {
    }
  }
  EXPECT_GT(accepted, 0);  // some flips hit harmless bytes (values, tensor data)
}

}  // namespace
