#include "device_layout.hpp"

#include <algorithm>
#include <thread>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/half.hpp"

namespace cf::device_layout {

namespace {

// Rows per thread below which a conversion stays on the calling thread.
constexpr int64_t kMinRowsPerThread = 64;

}  // namespace

Storage choose_storage(const ModelWeights& w) {
  bool all_bf16 = true;
  w.for_each_matrix([&](const WeightEntry&, const WeightMatrix& m) { all_bf16 = all_bf16 && m.dtype == DType::BF16; });
  return all_bf16 ? Storage::BF16 : Storage::F16;
}

const char* storage_name(Storage s) { return s == Storage::F16 ? "fp16" : "bf16"; }

uint16_t to_bits(float x, Storage s) { return s == Storage::F16 ? float_to_f16_bits(x) : float_to_bf16_bits(x); }

void convert_rows(const WeightMatrix& m, int64_t first, int64_t count, Storage s, uint16_t* out) {
  CF_CHECK(first >= 0 && count >= 0 && first + count <= m.rows, "convert_rows: rows out of range of " + m.name);
  const int64_t cols = m.cols;
  auto work = [&](int64_t begin, int64_t end) {
    std::vector<float> row(size_t(cols > 0 ? cols : 1));
    for (int64_t r = begin; r < end; ++r) {
      m.dequantize_rows(first + r, 1, row.data());
      uint16_t* dst = out + r * cols;
      for (int64_t i = 0; i < cols; ++i) dst[i] = to_bits(row[size_t(i)], s);
    }
  };
  const int64_t threads =
      std::clamp<int64_t>(count / kMinRowsPerThread, 1, std::max(1u, std::thread::hardware_concurrency()));
  if (threads == 1) {
    work(0, count);
    return;
  }
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work, count * t / threads, count * (t + 1) / threads);
  work(0, count / threads);
  for (auto& t : pool) t.join();
}

std::vector<uint16_t> convert_stacked(const std::vector<const WeightMatrix*>& parts, Storage s) {
  int64_t rows = 0;
  for (const WeightMatrix* m : parts) {
    CF_CHECK(m->cols == parts.front()->cols, "convert_stacked: " + m->name + " has " + std::to_string(m->cols) +
                                                 " columns, " + parts.front()->name + " " +
                                                 std::to_string(parts.front()->cols));
    rows += m->rows;
  }
  std::vector<uint16_t> out(size_t(rows * parts.front()->cols));
  int64_t row = 0;
  for (const WeightMatrix* m : parts) {
    convert_rows(*m, 0, m->rows, s, out.data() + row * m->cols);
    row += m->rows;
  }
  return out;
}

std::vector<uint16_t> convert_vector(const std::vector<float>& v, Storage s) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = to_bits(v[i], s);
  return out;
}

std::vector<uint16_t> convert_qkv_bias(const LayerWeights& l, Storage s) {
  if (l.q_bias.empty()) return {};
  std::vector<float> all(l.q_bias);
  all.insert(all.end(), l.k_bias.begin(), l.k_bias.end());
  all.insert(all.end(), l.v_bias.begin(), l.v_bias.end());
  return convert_vector(all, s);
}

ModelWeights rounded_copy(const ModelWeights& w, Storage s) {
  const DType t = s == Storage::F16 ? DType::F16 : DType::BF16;
  auto round_vector = [&](const std::vector<float>& v) {
    std::vector<float> out(v.size());
    for (size_t i = 0; i < v.size(); ++i)
      out[i] = s == Storage::F16 ? f16_bits_to_float(float_to_f16_bits(v[i])) : bf16_bits_to_float(float_to_bf16_bits(v[i]));
    return out;
  };
  ModelWeights r;
  r.config = w.config;
  r.layers.resize(w.layers.size());
  for (const WeightEntry& e : weight_table(w.config)) {
    if (e.form == WeightForm::Vector)
      r.vector(e) = round_vector(w.vector(e));
    else if (!w.matrix(e).empty())
      r.matrix(e) = convert_matrix(w.matrix(e), t);
  }
  return r;
}

}  // namespace cf::device_layout
