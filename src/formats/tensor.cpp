// DType facts (block sizes, names) and TensorRef helpers.
#include "clusterfusion/formats/tensor.hpp"

#include <array>

#include "clusterfusion/common/error.hpp"

namespace cf {

namespace {
struct DTypeInfo {
  DType type;
  std::string_view name;
  int64_t block_elems;
  int64_t block_bytes;
};
// Block layouts are ggml's (see the DType comments in tensor.hpp).
constexpr std::array<DTypeInfo, kDTypeCount> kDTypes = {{
    {DType::F32, "F32", 1, 4},
    {DType::F16, "F16", 1, 2},
    {DType::BF16, "BF16", 1, 2},
    {DType::Q8_0, "Q8_0", 32, 34},
    {DType::Q4_0, "Q4_0", 32, 18},
    {DType::Q4_1, "Q4_1", 32, 20},
    {DType::Q4_K, "Q4_K", 256, 144},
    {DType::Q5_K, "Q5_K", 256, 176},
    {DType::Q6_K, "Q6_K", 256, 210},
}};

const DTypeInfo& info(DType t) {
  const auto i = size_t(t);
  CF_CHECK(i < kDTypes.size(), "unknown DType " + std::to_string(i));
  return kDTypes[i];
}
}  // namespace

std::string_view dtype_name(DType t) { return info(t).name; }

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto& d : kDTypes)
    if (d.name == name) return d.type;
  return std::nullopt;
}

int64_t dtype_block_elems(DType t) { return info(t).block_elems; }
int64_t dtype_block_bytes(DType t) { return info(t).block_bytes; }

int64_t dtype_row_bytes(DType t, int64_t n) {
  const auto& d = info(t);
  CF_CHECK(n >= 0 && n % d.block_elems == 0,
           "dtype_row_bytes: " + std::to_string(n) + " elements is not a whole number of " + std::string(d.name) +
               " blocks");
  return n / d.block_elems * d.block_bytes;
}

int64_t TensorRef::numel() const {
  int64_t n = 1;
  for (const int64_t d : shape) n *= d;
  return n;
}

int64_t TensorRef::rows() const {
  int64_t n = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) n *= shape[i];
  return n;
}

int64_t TensorRef::cols() const { return shape.empty() ? 1 : shape.back(); }

std::string TensorRef::shape_string() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

void dequantize_rows(const TensorRef& t, int64_t row_begin, int64_t row_count, float* dst) {
  CF_CHECK(row_begin >= 0 && row_count >= 0 && row_begin <= t.rows() && row_count <= t.rows() - row_begin,
           "dequantize_rows: rows [" + std::to_string(row_begin) + ", +" + std::to_string(row_count) +
               ") outside tensor '" + t.name + "' with " + std::to_string(t.rows()) + " rows");
  CF_CHECK(t.data != nullptr || row_count == 0, "dequantize_rows: tensor '" + t.name + "' has no data");
  dequantize(t.dtype, t.row_data(row_begin), dst, row_count * t.cols());
}

std::vector<float> dequantize_all(const TensorRef& t) {
  std::vector<float> out(size_t(t.numel()));
  dequantize_rows(t, 0, t.rows(), out.data());
  return out;
}

}  // namespace cf
