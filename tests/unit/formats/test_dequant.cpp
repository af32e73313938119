#include <gtest/gtest.h>

#include <bit>
#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>

#include "clusterfusion/common/half.hpp"
#include "clusterfusion/common/json.hpp"
#include "clusterfusion/formats/gguf.hpp"
#include "clusterfusion/formats/tensor.hpp"
#include "test_util.hpp"

namespace {

cf::json::Value load_golden() {
  std::ifstream in(cf::test::data_path("dequant/golden.json"));
  std::stringstream ss;
  ss << in.rdbuf();
  return cf::json::parse(ss.str());
}

std::vector<uint8_t> from_hex(const std::string& hex) {
  std::vector<uint8_t> out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = uint8_t(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}

void expect_bits(const std::vector<float>& got, const cf::json::Value::Array& expected, const std::string& what) {
  ASSERT_EQ(got.size(), expected.size()) << what;
  int mismatches = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const auto want = uint32_t(expected[i].as_int());
    const auto have = std::bit_cast<uint32_t>(got[i]);
    if (want != have && mismatches++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << " (0x" << std::hex << have << "), expected "
                    << std::bit_cast<float>(want) << " (0x" << want << ")" << std::dec;
  }
  EXPECT_EQ(mismatches, 0) << what;
}

TEST(Dequant, BlockGeometry) {
  EXPECT_EQ(cf::dtype_row_bytes(cf::DType::Q4_1, 576), 18 * 20);
  EXPECT_EQ(cf::dtype_row_bytes(cf::DType::Q8_0, 64), 68);
  EXPECT_EQ(cf::dtype_row_bytes(cf::DType::BF16, 3), 6);
  EXPECT_THROW(cf::dtype_row_bytes(cf::DType::Q4_0, 33), cf::Error);
  for (int i = 0; i < cf::kDTypeCount; ++i) {
    const auto t = cf::DType(i);
    EXPECT_EQ(cf::dtype_from_name(cf::dtype_name(t)), t);
    EXPECT_EQ(cf::dtype_from_ggml(cf::ggml_type_of(t)), t);
    const auto* info = cf::ggml_type_info(cf::ggml_type_of(t));
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->block_bytes, cf::dtype_block_bytes(t));
    EXPECT_EQ(info->block_elems, cf::dtype_block_elems(t));
  }
  EXPECT_EQ(cf::dtype_from_name("Q3_K"), std::nullopt);
  EXPECT_EQ(cf::dtype_row_bytes(cf::DType::Q6_K, 512), 2 * 210);
  EXPECT_THROW(cf::dtype_row_bytes(cf::DType::Q4_K, 288), cf::Error);  // not a whole super-block
}

// Bit-exact against the python gguf package (scripts/make_dequant_golden.py).
TEST(Dequant, MatchesGgufPackageGoldens) {
  const auto doc = load_golden();
  const auto& cases = doc.at("cases").as_array();
  ASSERT_GE(cases.size(), 12u);
  for (const auto& c : cases) {
    const auto name = c.at("name").as_string();
    const auto type = cf::dtype_from_name(c.at("type").as_string());
    ASSERT_TRUE(type) << name;
    const auto bytes = from_hex(c.at("bytes_hex").as_string());
    const int64_t n = c.at("n").as_int();
    ASSERT_EQ(int64_t(bytes.size()), cf::dtype_row_bytes(*type, n)) << name;
    std::vector<float> out(static_cast<size_t>(n));
    cf::dequantize(*type, bytes.data(), out.data(), n);
    expect_bits(out, c.at("expected_bits").as_array(), name);
  }
}

TEST(Dequant, F16MatchesHalfHelperForEveryValue) {
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i);
  std::vector<float> out(all.size());
  cf::dequantize(cf::DType::F16, all.data(), out.data(), int64_t(all.size()));
  for (uint32_t i = 0; i < all.size(); ++i)
    ASSERT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(cf::f16_bits_to_float(uint16_t(i)))) << i;
}

TEST(Dequant, RowsOfATensor) {
  std::vector<uint8_t> q(2 * 2 * 34);
  for (size_t i = 0; i < q.size(); ++i) q[i] = uint8_t(i * 7);
  for (int b = 0; b < 4; ++b) {  // f16 scale 1.0 at every block
    q[size_t(b) * 34] = 0x00;
    q[size_t(b) * 34 + 1] = 0x3c;
  }
  cf::TensorRef t{"w", cf::DType::Q8_0, {2, 64}, q.data(), q.size()};
  EXPECT_EQ(t.row_bytes(), 68);
  std::vector<float> row1(64);
  cf::dequantize_rows(t, 1, 1, row1.data());
  EXPECT_EQ(row1[0], float(int8_t(q[70])));
  EXPECT_EQ(cf::dequantize_all(t).size(), 128u);
  EXPECT_THROW(cf::dequantize_rows(t, 1, 2, row1.data()), cf::Error);
  EXPECT_THROW(cf::dequantize_rows(t, -1, 1, row1.data()), cf::Error);
}

// The default model's tensors, dequantised through our GGUF reader, against the gguf package's rows.
TEST(Dequant, DefaultModelRowsMatchGgufPackage) {
  CF_REQUIRE_DEFAULT_MODEL(model);
  const auto doc = load_golden();
  const auto& samples = doc.at("model_samples").as_array();
  ASSERT_GE(samples.size(), 4u);
  const cf::GgufFile f(model);
  for (const auto& s : samples) {
    const auto& name = s.at("tensor").as_string();
    const auto* info = f.find_tensor(name);
    ASSERT_NE(info, nullptr) << name;
    const cf::TensorRef t = f.tensor_ref(*info);
    EXPECT_EQ(cf::dtype_name(t.dtype), s.at("type").as_string());
    ASSERT_EQ(t.cols(), s.at("cols").as_int());
    std::vector<float> row(size_t(t.cols()));
    cf::dequantize_rows(t, s.at("row").as_int(), 1, row.data());
    expect_bits(row, s.at("expected_bits").as_array(), name + " row " + std::to_string(s.at("row").as_int()));
  }
}

// Not a timed test (CI machines vary): prints throughput so regressions are visible in logs.
TEST(Dequant, ThroughputReport) {
  const int64_t n = int64_t(1) << 22;
  std::vector<uint8_t> q4(size_t(cf::dtype_row_bytes(cf::DType::Q4_1, n)), 0x11);
  std::vector<uint8_t> q8(size_t(cf::dtype_row_bytes(cf::DType::Q8_0, n)), 0x11);
  std::vector<float> out(static_cast<size_t>(n));
  for (const auto& [type, src] : {std::pair{cf::DType::Q4_1, &q4}, std::pair{cf::DType::Q8_0, &q8}}) {
    const auto t0 = std::chrono::steady_clock::now();
    cf::dequantize(type, src->data(), out.data(), n);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[ info ] dequantize %s: %.0f Melem/s\n", std::string(cf::dtype_name(type)).c_str(), double(n) / s / 1e6);
    EXPECT_TRUE(std::isfinite(out[n - 1]));
  }
}

}  // namespace
