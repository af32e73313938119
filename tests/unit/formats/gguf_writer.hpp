// A small GGUF writer for tests and fuzz seed corpora. It writes valid files by default and records where each
// section starts so tests can truncate or patch them to build hostile files.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace cf::test {

// GGUF metadata value type codes.
enum class GgufTypeCode : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9, U64 = 10, I64 = 11,
  F64 = 12,
};

// ggml tensor type codes used by tests.
inline constexpr uint32_t kGgmlF32 = 0, kGgmlF16 = 1, kGgmlQ4_0 = 2, kGgmlQ4_1 = 3, kGgmlQ8_0 = 8, kGgmlBF16 = 30;
inline constexpr uint32_t kGgmlQ4_K = 12, kGgmlQ5_K = 13, kGgmlQ6_K = 14;

inline void put_bytes(std::vector<uint8_t>& out, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  out.insert(out.end(), b, b + n);
}
template <class T>
void put(std::vector<uint8_t>& out, T v) {
  put_bytes(out, &v, sizeof v);
}
inline void put_string(std::vector<uint8_t>& out, std::string_view s) {
  put<uint64_t>(out, s.size());
  put_bytes(out, s.data(), s.size());
}
template <class T>
void patch(std::vector<uint8_t>& bytes, size_t offset, T v) {
  if (offset + sizeof v > bytes.size()) throw std::logic_error("patch outside the buffer");
  std::memcpy(bytes.data() + offset, &v, sizeof v);
}

class GgufWriter {
 public:
  struct Tensor {
    std::string name;
    uint32_t type = kGgmlF32;
    std::vector<uint64_t> ne;  // GGUF order (innermost first)
    std::vector<uint8_t> data;
    std::optional<uint64_t> offset;  // forced offset (relative to the data section); default: next aligned slot
  };
  // Where things landed in the last build().
  struct Layout {
    size_t version = 4, tensor_count = 8, kv_count = 16, kv_begin = 24;
    std::vector<size_t> kv_starts;           // each key's length field
    std::vector<size_t> kv_value_starts;     // each value's type field
    size_t tensor_infos_begin = 0;
    std::vector<size_t> tensor_info_starts;  // each name's length field
    std::vector<size_t> tensor_offset_fields;
    std::vector<size_t> tensor_type_fields;
    std::vector<size_t> tensor_dim_fields;   // first ne field of each tensor
    size_t data_begin = 0;
    size_t end = 0;
  };

  uint32_t version = 3;
  uint64_t alignment = 32;  // used for layout; add the general.alignment key yourself to change it in the file
  std::optional<uint64_t> tensor_count_override, kv_count_override;

  // Metadata: the value bytes are written as given after the type code.
  void add_raw(std::string key, GgufTypeCode type, std::vector<uint8_t> value_bytes) {
    kvs_.push_back({std::move(key), uint32_t(type), std::move(value_bytes)});
  }
  void add_u32(std::string key, uint32_t v) { add_scalar(std::move(key), GgufTypeCode::U32, v); }
  void add_i32(std::string key, int32_t v) { add_scalar(std::move(key), GgufTypeCode::I32, v); }
  void add_u64(std::string key, uint64_t v) { add_scalar(std::move(key), GgufTypeCode::U64, v); }
  void add_f32(std::string key, float v) { add_scalar(std::move(key), GgufTypeCode::F32, v); }
  void add_f64(std::string key, double v) { add_scalar(std::move(key), GgufTypeCode::F64, v); }
  void add_bool(std::string key, bool v) { add_scalar(std::move(key), GgufTypeCode::Bool, uint8_t(v)); }
  void add_string(std::string key, std::string_view v) {
    std::vector<uint8_t> b;
    put_string(b, v);
    add_raw(std::move(key), GgufTypeCode::String, std::move(b));
  }
  void add_string_array(std::string key, const std::vector<std::string>& items) {
    std::vector<uint8_t> b;
    put<uint32_t>(b, uint32_t(GgufTypeCode::String));
    put<uint64_t>(b, items.size());
    for (const auto& s : items) put_string(b, s);
    add_raw(std::move(key), GgufTypeCode::Array, std::move(b));
  }
  template <class T>
  void add_array(std::string key, GgufTypeCode elem, const std::vector<T>& items) {
    std::vector<uint8_t> b;
    put<uint32_t>(b, uint32_t(elem));
    put<uint64_t>(b, items.size());
    for (const T& x : items) put<T>(b, x);
    add_raw(std::move(key), GgufTypeCode::Array, std::move(b));
  }

  void add_tensor(std::string name, uint32_t type, std::vector<uint64_t> ne, std::vector<uint8_t> data,
                  std::optional<uint64_t> offset = std::nullopt) {
    tensors_.push_back({std::move(name), type, std::move(ne), std::move(data), offset});
  }
  // An F32 tensor from values (GGUF order dims).
  void add_f32_tensor(std::string name, std::vector<uint64_t> ne, const std::vector<float>& values) {
    std::vector<uint8_t> b;
    put_bytes(b, values.data(), values.size() * sizeof(float));
    add_tensor(std::move(name), kGgmlF32, std::move(ne), std::move(b));
  }
  std::vector<Tensor>& tensors() { return tensors_; }

  std::vector<uint8_t> build() {
    std::vector<uint8_t> out;
    layout = {};
    put_bytes(out, "GGUF", 4);
    put<uint32_t>(out, version);
    put<uint64_t>(out, tensor_count_override.value_or(tensors_.size()));
    put<uint64_t>(out, kv_count_override.value_or(kvs_.size()));
    for (const auto& kv : kvs_) {
      layout.kv_starts.push_back(out.size());
      put_string(out, kv.key);
      layout.kv_value_starts.push_back(out.size());
      put<uint32_t>(out, kv.type);
      put_bytes(out, kv.value.data(), kv.value.size());
    }
    layout.tensor_infos_begin = out.size();
    std::vector<uint64_t> offsets;
    uint64_t next = 0;
    for (const auto& t : tensors_) {
      const uint64_t off = t.offset.value_or(next);
      offsets.push_back(off);
      next = align(std::max<uint64_t>(next, off + t.data.size()));
      layout.tensor_info_starts.push_back(out.size());
      put_string(out, t.name);
      put<uint32_t>(out, uint32_t(t.ne.size()));
      layout.tensor_dim_fields.push_back(out.size());
      for (const uint64_t d : t.ne) put<uint64_t>(out, d);
      layout.tensor_type_fields.push_back(out.size());
      put<uint32_t>(out, t.type);
      layout.tensor_offset_fields.push_back(out.size());
      put<uint64_t>(out, off);
    }
    out.resize(align(out.size()), 0);
    layout.data_begin = out.size();
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const size_t at = layout.data_begin + offsets[i];
      if (out.size() < at + tensors_[i].data.size()) out.resize(at + tensors_[i].data.size(), 0);
      std::memcpy(out.data() + at, tensors_[i].data.data(), tensors_[i].data.size());
    }
    if (!tensors_.empty()) out.resize(align(out.size()), 0);
    layout.end = out.size();
    return out;
  }

  Layout layout;

 private:
  struct Kv {
    std::string key;
    uint32_t type;
    std::vector<uint8_t> value;
  };
  template <class T>
  void add_scalar(std::string key, GgufTypeCode type, T v) {
    std::vector<uint8_t> b;
    put<T>(b, v);
    add_raw(std::move(key), type, std::move(b));
  }
  uint64_t align(uint64_t x) const { return (x + alignment - 1) / alignment * alignment; }

  std::vector<Kv> kvs_;
  std::vector<Tensor> tensors_;
};

inline void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

}  // namespace cf::test
