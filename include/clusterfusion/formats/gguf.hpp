// GGUF (v2 and v3) reader: memory-maps the file read-only and validates the header, every metadata value, every
// tensor info and the data section before anything else looks at it. Hostile files cannot make it read out of bounds
// or allocate more than a small multiple of the file size. Errors: cf::InputError("<path>: <what> (<where>)").
//
// Layout (little-endian): "GGUF", u32 version, u64 tensor_count, u64 kv_count, kv_count x {string key, u32 type,
// value}, tensor_count x {string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset}, padding to
// general.alignment (default 32), data section; tensor offsets are relative to the data section and aligned.
// Strings are u64 length + bytes; arrays are u32 element type + u64 count + elements (arrays may nest).
#pragma once
#include <array>
#include <functional>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "clusterfusion/formats/tensor.hpp"

namespace cf {

class MappedFile;

// Hash for string-keyed maps that are looked up with string_view (no temporary strings).
struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
template <class V>
using StringMap = std::unordered_map<std::string, V, StringViewHash, std::equal_to<>>;

enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9, U64 = 10, I64 = 11,
  F64 = 12,
};
std::string_view gguf_type_name(GgufType t);  // "u32", "string", "array", ...

// ggml tensor types: names and block geometry of every type ggml defines (so files with types we cannot compute
// with still open and list), and the mapping to the DTypes we dequantise.
struct GgmlTypeInfo {
  uint32_t id;
  std::string_view name;  // "F32", "Q4_K", ...
  int64_t block_elems;
  int64_t block_bytes;
};
const GgmlTypeInfo* ggml_type_info(uint32_t id);  // nullptr when unknown
std::string ggml_type_name(uint32_t id);          // the name, or "type <id>"
std::optional<DType> dtype_from_ggml(uint32_t id);
uint32_t ggml_type_of(DType t);

// One metadata value. Points into the mapped file (valid while its GgufFile lives).
class GgufValue {
 public:
  GgufType type() const { return type_; }
  bool is_array() const { return type_ == GgufType::Array; }
  bool is_integer() const;  // u8..i64 scalar
  bool is_float() const;    // f32 / f64 scalar
  GgufType elem_type() const { return elem_type_; }  // arrays only
  uint64_t size() const { return count_; }           // arrays: element count

  // Scalar conversions; nullopt when the type does not fit (or an unsigned value exceeds int64).
  std::optional<int64_t> to_int() const;
  std::optional<double> to_float() const;  // f32/f64, and integers
  std::optional<bool> to_bool() const;
  std::optional<std::string_view> to_string() const;

  // Array elements (i < size(), type per elem_type(); wrong type or index throws cf::Error).
  std::optional<int64_t> int_at(uint64_t i) const;
  double float_at(uint64_t i) const;
  std::string_view string_at(uint64_t i) const;
  const GgufValue& array_at(uint64_t i) const;

  // Short human-readable form for `clusterfusion info`: scalars as is, strings quoted and clipped, arrays as
  // "[a, b, ... (n items)]".
  std::string display(size_t max_items = 6, size_t max_chars = 60) const;

 private:
  friend class GgufParser;
  GgufType type_ = GgufType::U8;
  GgufType elem_type_ = GgufType::U8;
  uint64_t count_ = 0;
  const uint8_t* raw_ = nullptr;  // scalar bytes, or the packed elements of a numeric array
  std::string_view str_;
  std::vector<std::string_view> strings_;  // array of strings
  std::vector<GgufValue> arrays_;          // array of arrays
};

struct GgufTensorInfo {
  std::string name;
  uint32_t ggml_type = 0;
  uint32_t n_dims = 0;
  std::array<int64_t, 4> ne{1, 1, 1, 1};  // GGUF order: ne[0] is the contiguous (innermost) dimension
  uint64_t offset = 0;                    // relative to the data section
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;

  int64_t numel() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  std::vector<int64_t> shape() const;  // row-major, outermost first (ne reversed), as TensorRef::shape
};

class GgufFile {
 public:
  // Caps on top of "fits in the file": they bound memory and recursion for hostile files.
  static constexpr uint64_t kMaxKeyBytes = 65535;
  static constexpr uint64_t kMaxTensorNameBytes = 1024;
  static constexpr int kMaxArrayDepth = 8;
  static constexpr uint64_t kMaxNestedArrays = uint64_t(1) << 20;  // total arrays-of-arrays elements
  static constexpr uint64_t kMaxAlignment = uint64_t(1) << 20;
  static constexpr uint64_t kDefaultAlignment = 32;

  // Maps and parses a file.
  explicit GgufFile(const std::string& path);
  // Parses bytes owned by the caller (kept alive by the caller while this object lives); `name` is used in errors.
  static GgufFile from_memory(std::string name, const uint8_t* data, size_t size);
  // True when the first bytes are the GGUF magic (cheap check for format dispatch). cf::InputError when the path
  // cannot be opened or is not a regular file (never blocks on a FIFO).
  static bool has_magic(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // file offset of the data section
  size_t file_size() const { return size_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(std::string_view key) const;
  // Typed getters: nullopt when the key is absent; cf::InputError("<path>: metadata '<key>' is <type>, expected
  // <what>") when present with the wrong type.
  std::optional<std::string> get_string(std::string_view key) const;
  std::optional<int64_t> get_int(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::vector<std::string>> get_string_array(std::string_view key) const;
  std::optional<std::vector<int64_t>> get_int_array(std::string_view key) const;
  std::optional<std::vector<float>> get_float_array(std::string_view key) const;
  // Same, but a missing key throws cf::InputError("<path>: missing metadata '<key>'").
  std::string require_string(std::string_view key) const;
  int64_t require_int(std::string_view key) const;

  // Tensors in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  // A TensorRef over the mapped data; cf::InputError when the ggml type is not one we dequantise.
  TensorRef tensor_ref(const GgufTensorInfo& info) const;
  // cf::InputError("<path>: the file was truncated / modified while it was being read ...") when the mapped file
  // changed since it was opened (its bytes read since then may be zeros or a mix); nothing for from_memory.
  void check_unchanged() const;

 private:
  friend class GgufParser;
  GgufFile() = default;
  void parse();
  [[noreturn]] void type_error(std::string_view key, const GgufValue& v, std::string_view expected) const;

  std::string path_;
  std::shared_ptr<const MappedFile> mapping_;  // when this object owns its bytes
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  StringMap<size_t> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  StringMap<size_t> tensor_index_;
};

}  // namespace cf
