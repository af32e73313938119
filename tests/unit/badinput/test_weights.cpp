// NaN and Inf in weights of every storage type are found by check_weights_finite, naming the tensor and the row.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>

#include "badinput_util.hpp"
#include "clusterfusion/common/half.hpp"
#include "clusterfusion/formats/gguf.hpp"
#include "clusterfusion/formats/model_file.hpp"
#include "fuzz_seeds.hpp"
#include "gguf_writer.hpp"
#include "test_util.hpp"

namespace {
using cf::badinput::expect_clean_refusal;

// Poisons one value (or block scale) of a tensor of the micro model in row `row`.
struct Poison {
  std::string tensor;
  size_t byte_in_row;  // offset of the poisoned element / scale inside the row
  std::vector<uint8_t> value;
  const char* what;
};

TEST(Weights, NonFiniteValuesOfEveryTypeAreFound) {
  const uint16_t f16_nan = 0x7e00, f16_inf = 0x7c00, bf16_ninf = 0xff80;
  const auto le16 = [](uint16_t v) { return std::vector<uint8_t>{uint8_t(v), uint8_t(v >> 8)}; };
  const Poison cases[] = {
      {"output_norm.weight", 4 * 7, {0x00, 0x00, 0x80, 0x7f}, "F32 +Inf"},
      {"blk.0.attn_norm.weight", 2 * 3, le16(f16_nan), "F16 NaN"},
      {"blk.0.attn_output.weight", 2 * 5, le16(bf16_ninf), "BF16 -Inf"},
      {"blk.0.attn_k.weight", 0, le16(f16_inf), "Q8_0 scale"},
      {"token_embd.weight", 0, le16(f16_nan), "Q4_0 scale"},
      {"blk.0.ffn_up.weight", 2, le16(f16_inf), "Q4_1 minimum"},
      {"blk.0.ffn_down.weight", 2 * 31, le16(f16_inf), "F16 last column"},
  };
  cf::test::TempDir dir;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto bytes = cf::fuzz::micro_model_gguf();
    const auto f = cf::GgufFile::from_memory("m", bytes.data(), bytes.size());
    const auto* info = f.find_tensor(c.tensor);
    ASSERT_NE(info, nullptr);
    const auto ref = f.tensor_ref(*info);
    const int64_t row = ref.rows() - 1;
    const size_t at = size_t(info->data - bytes.data()) + size_t(row * ref.row_bytes()) + c.byte_in_row;
    std::memcpy(bytes.data() + at, c.value.data(), c.value.size());
    const std::string path = dir.file("poisoned.gguf");
    cf::test::write_file(path, bytes);
    const auto m = cf::open_model_file(path);  // loading does not scan weights ...
    expect_clean_refusal([&] { cf::check_weights_finite(*m); },  // ... the check does
                         "'" + c.tensor + "' holds NaN or Inf (row " + std::to_string(row) + ")");
  }
}

// Finite but huge values (1e30 passed the check and overflowed the forward pass into NaN logits: an empty reply with
// exit 0). Plain values of magnitude 65520 or more (fp16 rounds them to infinity) are refused; 65504 passes.
TEST(Weights, HugeFiniteValuesAreRefused) {
  const auto le32 = [](float v) {
    std::vector<uint8_t> b(4);
    std::memcpy(b.data(), &v, 4);
    return b;
  };
  const auto le16 = [](uint16_t v) { return std::vector<uint8_t>{uint8_t(v), uint8_t(v >> 8)}; };
  const Poison refused[] = {
      {"output_norm.weight", 4 * 2, le32(1e30f), "F32 1e30"},
      {"output_norm.weight", 4 * 2, le32(-65520.0f), "F32 -65520"},
      {"blk.0.attn_output.weight", 2 * 5, le16(cf::float_to_bf16_bits(1e30f)), "BF16 1e30"},
      {"blk.0.attn_output.weight", 2 * 5, le16(cf::float_to_bf16_bits(65536.0f)), "BF16 65536"},
  };
  const Poison accepted[] = {
      {"output_norm.weight", 4 * 2, le32(65504.0f), "F32 65504"},
      {"output_norm.weight", 4 * 2, le32(-65519.99f), "F32 -65519.99"},
      {"blk.0.attn_output.weight", 2 * 5, le16(cf::float_to_bf16_bits(-65280.0f)), "BF16 -65280"},
      {"blk.0.attn_norm.weight", 2 * 3, le16(0x7bff), "F16 65504"},
  };
  cf::test::TempDir dir;
  auto poisoned = [&](const Poison& c, int64_t& row) {
    auto bytes = cf::fuzz::micro_model_gguf();
    const auto f = cf::GgufFile::from_memory("m", bytes.data(), bytes.size());
    const auto* info = f.find_tensor(c.tensor);
    EXPECT_NE(info, nullptr);
    const auto ref = f.tensor_ref(*info);
    row = ref.rows() - 1;
    const size_t at = size_t(info->data - bytes.data()) + size_t(row * ref.row_bytes()) + c.byte_in_row;
    std::memcpy(bytes.data() + at, c.value.data(), c.value.size());
    const std::string path = dir.file("huge.gguf");
    cf::test::write_file(path, bytes);
    return cf::open_model_file(path);
  };
  for (const auto& c : refused) {
    SCOPED_TRACE(c.what);
    int64_t row = 0;
    const auto m = poisoned(c, row);
    expect_clean_refusal([&] { cf::check_weights_finite(*m); },
                         "'" + c.tensor + "' holds a value of magnitude 65520 or more (row " + std::to_string(row) + ")");
  }
  for (const auto& c : accepted) {
    SCOPED_TRACE(c.what);
    int64_t row = 0;
    EXPECT_NO_THROW(cf::check_weights_finite(*poisoned(c, row)));
  }
}

// Evidence for where the check runs by default: its cost on the default model (printed, not asserted).
TEST(Weights, CheckCostOnTheDefaultModel) {
  CF_REQUIRE_DEFAULT_MODEL(path);
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const auto m = cf::open_model_file(path);
  const auto t1 = clock::now();
  cf::check_weights_finite(*m);
  const auto t2 = clock::now();
  size_t bytes = 0;
  for (const auto& t : m->tensors()) bytes += t.nbytes;
  std::printf("[ info ] open_model_file %.1f ms, check_weights_finite %.1f ms over %.1f MB of weights\n",
              std::chrono::duration<double, std::milli>(t1 - t0).count(),
              std::chrono::duration<double, std::milli>(t2 - t1).count(), double(bytes) / 1e6);
}

}  // namespace
