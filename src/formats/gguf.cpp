// GGUF reader. Every read goes through Cursor, which checks the bytes are there; every count is checked against
// the bytes left before anything is reserved, so memory stays proportional to the file size.
#include "clusterfusion/formats/gguf.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "clusterfusion/common/error.hpp"
#include "mapped_file.hpp"

static_assert(std::endian::native == std::endian::little, "the GGUF reader assumes a little-endian host");

namespace cf {

namespace {
constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr int kMaxDims = 4;

// Block geometry of every ggml type (ggml.c's type traits; the python gguf package's GGML_QUANT_SIZES).
constexpr GgmlTypeInfo kGgmlTypes[] = {
    {0, "F32", 1, 4},           {1, "F16", 1, 2},          {2, "Q4_0", 32, 18},       {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},        {7, "Q5_1", 32, 24},       {8, "Q8_0", 32, 34},       {9, "Q8_1", 32, 40},
    {10, "Q2_K", 256, 84},      {11, "Q3_K", 256, 110},    {12, "Q4_K", 256, 144},    {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},     {15, "Q8_K", 256, 292},    {16, "IQ2_XXS", 256, 66},  {17, "IQ2_XS", 256, 74},
    {18, "IQ3_XXS", 256, 98},   {19, "IQ1_S", 256, 50},    {20, "IQ4_NL", 32, 18},    {21, "IQ3_S", 256, 110},
    {22, "IQ2_S", 256, 82},     {23, "IQ4_XS", 256, 136},  {24, "I8", 1, 1},          {25, "I16", 1, 2},
    {26, "I32", 1, 4},          {27, "I64", 1, 8},         {28, "F64", 1, 8},         {29, "IQ1_M", 256, 56},
    {30, "BF16", 1, 2},         {34, "TQ1_0", 256, 54},    {35, "TQ2_0", 256, 66},    {39, "MXFP4", 32, 17},
};

// Bytes of one scalar element, 0 for string/array.
uint64_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::Bool: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    case GgufType::String: case GgufType::Array: return 0;
  }
  return 0;
}

bool known_type(uint32_t t) { return t <= uint32_t(GgufType::F64); }

template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

std::string hex_offset(uint64_t off) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(off));
  return buf;
}
}  // namespace

std::string_view gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::U8: return "u8";
    case GgufType::I8: return "i8";
    case GgufType::U16: return "u16";
    case GgufType::I16: return "i16";
    case GgufType::U32: return "u32";
    case GgufType::I32: return "i32";
    case GgufType::F32: return "f32";
    case GgufType::Bool: return "bool";
    case GgufType::String: return "string";
    case GgufType::Array: return "array";
    case GgufType::U64: return "u64";
    case GgufType::I64: return "i64";
    case GgufType::F64: return "f64";
  }
  return "unknown";
}

const GgmlTypeInfo* ggml_type_info(uint32_t id) {
  for (const auto& t : kGgmlTypes)
    if (t.id == id) return &t;
  return nullptr;
}

std::string ggml_type_name(uint32_t id) {
  const auto* t = ggml_type_info(id);
  return t ? std::string(t->name) : "type " + std::to_string(id);
}

std::optional<DType> dtype_from_ggml(uint32_t id) {
  switch (id) {
    case 0: return DType::F32;
    case 1: return DType::F16;
    case 30: return DType::BF16;
    case 8: return DType::Q8_0;
    case 2: return DType::Q4_0;
    case 3: return DType::Q4_1;
    case 12: return DType::Q4_K;
    case 13: return DType::Q5_K;
    case 14: return DType::Q6_K;
    default: return std::nullopt;
  }
}

uint32_t ggml_type_of(DType t) {
  switch (t) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::BF16: return 30;
    case DType::Q8_0: return 8;
    case DType::Q4_0: return 2;
    case DType::Q4_1: return 3;
    case DType::Q4_K: return 12;
    case DType::Q5_K: return 13;
    case DType::Q6_K: return 14;
  }
  CF_CHECK(false, "ggml_type_of: unknown DType");
  return 0;
}

// ---- GgufValue -----------------------------------------------------------------------------------------------

bool GgufValue::is_integer() const {
  switch (type_) {
    case GgufType::U8: case GgufType::I8: case GgufType::U16: case GgufType::I16: case GgufType::U32:
    case GgufType::I32: case GgufType::U64: case GgufType::I64: return true;
    default: return false;
  }
}

bool GgufValue::is_float() const { return type_ == GgufType::F32 || type_ == GgufType::F64; }

namespace {
std::optional<int64_t> int_from(GgufType t, const uint8_t* p) {
  switch (t) {
    case GgufType::U8: return load<uint8_t>(p);
    case GgufType::I8: return load<int8_t>(p);
    case GgufType::U16: return load<uint16_t>(p);
    case GgufType::I16: return load<int16_t>(p);
    case GgufType::U32: return load<uint32_t>(p);
    case GgufType::I32: return load<int32_t>(p);
    case GgufType::I64: return load<int64_t>(p);
    case GgufType::U64: {
      const auto v = load<uint64_t>(p);
      if (v > uint64_t(std::numeric_limits<int64_t>::max())) return std::nullopt;
      return int64_t(v);
    }
    default: return std::nullopt;
  }
}

std::optional<double> float_from(GgufType t, const uint8_t* p) {
  if (t == GgufType::F32) return load<float>(p);
  if (t == GgufType::F64) return load<double>(p);
  if (const auto i = int_from(t, p)) return double(*i);
  return std::nullopt;
}
}  // namespace

std::optional<int64_t> GgufValue::to_int() const { return is_integer() ? int_from(type_, raw_) : std::nullopt; }

std::optional<double> GgufValue::to_float() const {
  return (is_integer() || is_float()) ? float_from(type_, raw_) : std::nullopt;
}

std::optional<bool> GgufValue::to_bool() const {
  if (type_ != GgufType::Bool) return std::nullopt;
  return raw_[0] != 0;
}

std::optional<std::string_view> GgufValue::to_string() const {
  if (type_ != GgufType::String) return std::nullopt;
  return str_;
}

std::optional<int64_t> GgufValue::int_at(uint64_t i) const {
  CF_CHECK(is_array() && i < count_ && scalar_size(elem_type_) > 0, "GgufValue::int_at: not a numeric array element");
  return int_from(elem_type_, raw_ + i * scalar_size(elem_type_));
}

double GgufValue::float_at(uint64_t i) const {
  CF_CHECK(is_array() && i < count_ && scalar_size(elem_type_) > 0, "GgufValue::float_at: not a numeric array element");
  return *float_from(elem_type_ == GgufType::Bool ? GgufType::U8 : elem_type_, raw_ + i * scalar_size(elem_type_));
}

std::string_view GgufValue::string_at(uint64_t i) const {
  CF_CHECK(is_array() && elem_type_ == GgufType::String && i < count_, "GgufValue::string_at: not a string element");
  return strings_[size_t(i)];
}

const GgufValue& GgufValue::array_at(uint64_t i) const {
  CF_CHECK(is_array() && elem_type_ == GgufType::Array && i < count_, "GgufValue::array_at: not an array element");
  return arrays_[size_t(i)];
}

namespace {
std::string clip(std::string_view s, size_t max_chars) {
  std::string out = "\"";
  size_t n = 0;
  for (const char ch : s) {
    if (n++ == max_chars) return out + "...\"";
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\n') out += "\\n";
    else if (c < 0x20 || c == 0x7f) out += '?';
    else out += char(c);
  }
  return out + "\"";
}

std::string number_text(GgufType t, const uint8_t* p) {
  if (t == GgufType::Bool) return p[0] ? "true" : "false";
  if (t == GgufType::F32 || t == GgufType::F64) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.9g", *float_from(t, p));
    return buf;
  }
  if (t == GgufType::U64) return std::to_string(load<uint64_t>(p));
  return std::to_string(*int_from(t, p));
}
}  // namespace

std::string GgufValue::display(size_t max_items, size_t max_chars) const {
  if (type_ == GgufType::String) return clip(str_, max_chars);
  if (type_ != GgufType::Array) return number_text(type_, raw_);
  std::string out = "[";
  const uint64_t shown = std::min<uint64_t>(count_, max_items);
  for (uint64_t i = 0; i < shown; ++i) {
    if (i) out += ", ";
    if (elem_type_ == GgufType::String) out += clip(strings_[i], max_chars);
    else if (elem_type_ == GgufType::Array) out += arrays_[i].display(max_items, max_chars);
    else out += number_text(elem_type_, raw_ + i * scalar_size(elem_type_));
  }
  if (shown < count_) out += ", ... (" + std::to_string(count_) + " items)";
  return out + "]";
}

std::vector<int64_t> GgufTensorInfo::shape() const {
  std::vector<int64_t> s;
  for (uint32_t i = n_dims; i-- > 0;) s.push_back(ne[i]);
  return s;
}

// ---- parser ----------------------------------------------------------------------------------------------------

class GgufParser {
 public:
  explicit GgufParser(GgufFile& f) : f_(f) {}

  void run() {
    where_ = "header";
    if (f_.size_ < 4 || load<uint32_t>(f_.base_) != kGgufMagic) {
      std::string got = f_.size_ >= 4 ? quote_text(std::string_view(reinterpret_cast<const char*>(f_.base_), 4)) : "a file of " + std::to_string(f_.size_) + " bytes";
      fail_at(0, "not a GGUF file: expected magic 'GGUF', found " + got);
    }
    pos_ = 4;
    f_.version_ = u32("version");
    if (f_.version_ != 2 && f_.version_ != 3) {
      std::string hint;
      if (f_.version_ == 1) hint = "; version 1 files are obsolete, re-convert the model";
      else if (__builtin_bswap32(f_.version_) == 2 || __builtin_bswap32(f_.version_) == 3) hint = "; big-endian files are not supported";
      fail_at(4, "unsupported GGUF version " + std::to_string(f_.version_) + " (expected 2 or 3" + hint + ")");
    }
    const uint64_t tensor_count = u64("tensor_count");
    const uint64_t kv_count = u64("kv_count");
    // Minimum encoded sizes bound the counts: a kv is >= 8 (key length) + 1 (key) + 4 (type) + 1 (value) bytes; a
    // tensor info >= 8 + 1 (name) + 4 (n_dims) + 8 (ne[0]) + 4 (type) + 8 (offset).
    check_count(kv_count, 14, "kv_count");
    check_count(tensor_count, 33, "tensor_count");

    f_.kv_.reserve(size_t(kv_count));
    for (uint64_t i = 0; i < kv_count; ++i) {
      where_ = "metadata entry #" + std::to_string(i);
      const size_t key_pos = pos_;
      const std::string_view key = str("key", GgufFile::kMaxKeyBytes);
      if (key.empty()) fail_at(key_pos, "empty metadata key");
      where_ = "metadata " + quote_text(key) + " (entry #" + std::to_string(i) + ")";
      GgufValue v;
      value(v, type_code("value type"), 0);
      if (!f_.kv_index_.emplace(std::string(key), f_.kv_.size()).second) fail_at(key_pos, "duplicate metadata key");
      f_.kv_.emplace_back(std::string(key), std::move(v));
    }

    if (const auto* a = f_.find("general.alignment")) {
      where_ = "metadata 'general.alignment'";
      if (a->type() != GgufType::U32) fail_at(pos_, "general.alignment is " + std::string(gguf_type_name(a->type())) + ", expected u32");
      const uint64_t al = *a->to_int();
      if (al == 0 || !std::has_single_bit(al) || al > GgufFile::kMaxAlignment)
        fail_at(pos_, "general.alignment = " + std::to_string(al) + ", expected a power of two <= " + std::to_string(GgufFile::kMaxAlignment));
      f_.alignment_ = al;
    }

    f_.tensors_.reserve(size_t(tensor_count));
    for (uint64_t i = 0; i < tensor_count; ++i) tensor_info(i);

    // The data section starts at the next multiple of the alignment after the tensor infos.
    where_ = "data section";
    const uint64_t data_start = (uint64_t(pos_) + f_.alignment_ - 1) / f_.alignment_ * f_.alignment_;
    f_.data_offset_ = data_start;
    if (tensor_count > 0 && data_start > f_.size_)
      fail_at(pos_, "data section would start at " + hex_offset(data_start) + ", past the end of the file (" + std::to_string(f_.size_) + " bytes)");
    const uint64_t data_size = data_start <= f_.size_ ? f_.size_ - data_start : 0;
    for (auto& t : f_.tensors_) {
      where_ = "tensor " + quote_text(t.name);
      if (t.offset > data_size || t.nbytes > data_size - t.offset)
        fail_at(data_start, "tensor data [" + std::to_string(t.offset) + ", +" + std::to_string(t.nbytes) +
                                ") lies outside the data section of " + std::to_string(data_size) + " bytes (file truncated?)");
      t.data = f_.base_ + data_start + t.offset;
    }
    // No two tensors may share bytes.
    std::vector<const GgufTensorInfo*> by_offset;
    by_offset.reserve(f_.tensors_.size());
    for (const auto& t : f_.tensors_) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
      const auto* prev = by_offset[i - 1];
      const auto* cur = by_offset[i];
      if (prev->offset + prev->nbytes > cur->offset) {
        where_ = "tensor " + quote_text(cur->name);
        fail_at(data_start + cur->offset, "tensor data overlaps tensor " + quote_text(prev->name));
      }
    }
  }

 private:
  [[noreturn]] void fail_at(uint64_t offset, const std::string& what) const {
    throw InputError(f_.path_ + ": " + what + " (" + where_ + ", offset " + hex_offset(offset) + ")");
  }

  size_t left() const { return f_.size_ - pos_; }

  const uint8_t* take(uint64_t n, std::string_view what) {
    if (n > left())
      fail_at(pos_, "truncated: " + std::string(what) + " needs " + std::to_string(n) + " bytes, " + std::to_string(left()) + " left in the file");
    const uint8_t* p = f_.base_ + pos_;
    pos_ += size_t(n);
    return p;
  }
  uint32_t u32(std::string_view what) { return load<uint32_t>(take(4, what)); }
  uint64_t u64(std::string_view what) { return load<uint64_t>(take(8, what)); }

  std::string_view str(std::string_view what, uint64_t max_len) {
    const size_t len_pos = pos_;
    const uint64_t len = u64(std::string(what) + " length");
    if (len > left())
      fail_at(len_pos, std::string(what) + " length " + std::to_string(len) + " exceeds the " + std::to_string(left()) + " bytes left in the file");
    if (len > max_len) fail_at(len_pos, std::string(what) + " length " + std::to_string(len) + " exceeds the limit of " + std::to_string(max_len));
    return {reinterpret_cast<const char*>(take(len, what)), size_t(len)};
  }

  void check_count(uint64_t count, uint64_t min_bytes_each, std::string_view what) {
    if (count > left() / min_bytes_each)
      fail_at(pos_, std::string(what) + " = " + std::to_string(count) + " cannot fit in the " + std::to_string(left()) + " bytes left in the file");
  }

  GgufType type_code(std::string_view what) {
    const size_t at = pos_;
    const uint32_t t = u32(what);
    if (!known_type(t)) fail_at(at, "unknown " + std::string(what) + " " + std::to_string(t) + " (expected 0..12)");
    return GgufType(t);
  }

  void value(GgufValue& v, GgufType type, int depth) {
    v.type_ = type;
    if (type == GgufType::String) {
      v.str_ = str("string value", std::numeric_limits<uint64_t>::max());
      return;
    }
    if (type != GgufType::Array) {
      const size_t at = pos_;
      v.raw_ = take(scalar_size(type), gguf_type_name(type));
      if (type == GgufType::Bool && *v.raw_ > 1) fail_at(at, "bool value " + std::to_string(*v.raw_) + " (expected 0 or 1)");
      return;
    }
    if (depth >= GgufFile::kMaxArrayDepth)
      fail_at(pos_, "arrays nested deeper than " + std::to_string(GgufFile::kMaxArrayDepth) + " levels");
    v.elem_type_ = type_code("array element type");
    const size_t count_pos = pos_;
    v.count_ = u64("array length");
    const uint64_t elem_min = v.elem_type_ == GgufType::String ? 8 : v.elem_type_ == GgufType::Array ? 12 : scalar_size(v.elem_type_);
    if (v.count_ > left() / elem_min)
      fail_at(count_pos, "array of " + std::to_string(v.count_) + " " + std::string(gguf_type_name(v.elem_type_)) +
                             " elements cannot fit in the " + std::to_string(left()) + " bytes left in the file");
    if (v.elem_type_ == GgufType::String) {
      v.strings_.reserve(size_t(v.count_));
      for (uint64_t i = 0; i < v.count_; ++i) v.strings_.push_back(str("string element", std::numeric_limits<uint64_t>::max()));
    } else if (v.elem_type_ == GgufType::Array) {
      nested_arrays_ += v.count_;
      if (nested_arrays_ > GgufFile::kMaxNestedArrays)
        fail_at(count_pos, "more than " + std::to_string(GgufFile::kMaxNestedArrays) + " nested arrays in the metadata");
      v.arrays_.resize(size_t(v.count_));
      for (auto& item : v.arrays_) value(item, GgufType::Array, depth + 1);
    } else {
      const size_t at = pos_;
      v.raw_ = take(v.count_ * elem_min, "array elements");
      if (v.elem_type_ == GgufType::Bool)
        for (uint64_t i = 0; i < v.count_; ++i)
          if (v.raw_[i] > 1) fail_at(at + i, "bool array element " + std::to_string(v.raw_[i]) + " (expected 0 or 1)");
    }
  }

  void tensor_info(uint64_t index) {
    where_ = "tensor info #" + std::to_string(index);
    GgufTensorInfo t;
    const size_t name_pos = pos_;
    const std::string_view name = str("tensor name", GgufFile::kMaxTensorNameBytes);
    if (name.empty()) fail_at(name_pos, "empty tensor name");
    t.name = std::string(name);
    where_ = "tensor " + quote_text(name) + " (info #" + std::to_string(index) + ")";
    const size_t dims_pos = pos_;
    t.n_dims = u32("n_dims");
    if (t.n_dims < 1 || t.n_dims > kMaxDims) fail_at(dims_pos, "n_dims = " + std::to_string(t.n_dims) + " (expected 1..4)");
    uint64_t numel = 1;
    for (uint32_t d = 0; d < t.n_dims; ++d) {
      const size_t at = pos_;
      const uint64_t ne = u64("dimension");
      if (ne == 0 || ne > uint64_t(std::numeric_limits<int64_t>::max()))
        fail_at(at, "dimension " + std::to_string(d) + " = " + std::to_string(int64_t(ne)) + " (expected > 0)");
      if (numel > uint64_t(std::numeric_limits<int64_t>::max()) / ne)
        fail_at(at, "element count overflows (dimension " + std::to_string(d) + " = " + std::to_string(ne) + ")");
      numel *= ne;
      t.ne[d] = int64_t(ne);
    }
    const size_t type_pos = pos_;
    t.ggml_type = u32("tensor type");
    const GgmlTypeInfo* ti = ggml_type_info(t.ggml_type);
    if (!ti) fail_at(type_pos, "unknown tensor type " + std::to_string(t.ggml_type));
    if (t.ne[0] % ti->block_elems != 0)
      fail_at(dims_pos, "row length " + std::to_string(t.ne[0]) + " is not a multiple of the " + std::string(ti->name) +
                            " block size " + std::to_string(ti->block_elems));
    // nbytes = numel / block_elems * block_bytes, overflow-checked (it must also fit in the file, checked later).
    const uint64_t blocks = numel / uint64_t(ti->block_elems);
    if (blocks > std::numeric_limits<uint64_t>::max() / uint64_t(ti->block_bytes)) fail_at(dims_pos, "tensor byte size overflows");
    t.nbytes = blocks * uint64_t(ti->block_bytes);
    if (t.nbytes > f_.size_)
      fail_at(dims_pos, "tensor needs " + std::to_string(t.nbytes) + " bytes, more than the whole file (" + std::to_string(f_.size_) + " bytes)");
    const size_t off_pos = pos_;
    t.offset = u64("tensor data offset");
    if (t.offset % f_.alignment_ != 0)
      fail_at(off_pos, "data offset " + std::to_string(t.offset) + " is not a multiple of the alignment " + std::to_string(f_.alignment_));
    if (!f_.tensor_index_.emplace(t.name, f_.tensors_.size()).second) fail_at(name_pos, "duplicate tensor name");
    f_.tensors_.push_back(std::move(t));
  }

  GgufFile& f_;
  size_t pos_ = 0;
  std::string where_;
  uint64_t nested_arrays_ = 0;
};

// ---- GgufFile ----------------------------------------------------------------------------------------------------

GgufFile::GgufFile(const std::string& path) {
  path_ = path;
  mapping_ = MappedFile::open(path);
  base_ = mapping_->data();
  size_ = mapping_->size();
  parse_mapped(*mapping_, [&] { parse(); });
}

void GgufFile::check_unchanged() const {
  if (mapping_) mapping_->check_unchanged();
}

GgufFile GgufFile::from_memory(std::string name, const uint8_t* data, size_t size) {
  GgufFile f;
  f.path_ = std::move(name);
  static const uint8_t empty = 0;
  f.base_ = data ? data : &empty;
  f.size_ = data ? size : 0;
  f.parse();
  return f;
}

bool GgufFile::has_magic(const std::string& path) { return ReadOnlyFile(path).read_prefix(4) == "GGUF"; }

void GgufFile::parse() { GgufParser(*this).run(); }

const GgufValue* GgufFile::find(std::string_view key) const {
  const auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

void GgufFile::type_error(std::string_view key, const GgufValue& v, std::string_view expected) const {
  std::string got(gguf_type_name(v.type()));
  if (v.is_array()) got += " of " + std::string(gguf_type_name(v.elem_type()));
  throw InputError(path_ + ": metadata " + quote_text(key) + " is " + got + ", expected " + std::string(expected));
}

std::optional<std::string> GgufFile::get_string(std::string_view key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  if (const auto s = v->to_string()) return std::string(*s);
  type_error(key, *v, "string");
}

std::optional<int64_t> GgufFile::get_int(std::string_view key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_integer()) type_error(key, *v, "an integer");
  const auto i = v->to_int();
  if (!i) throw InputError(path_ + ": metadata " + quote_text(key) + " = " + v->display() + " is out of range");
  return i;
}

std::optional<double> GgufFile::get_float(std::string_view key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  if (const auto d = v->to_float()) return d;
  type_error(key, *v, "a number");
}

std::optional<bool> GgufFile::get_bool(std::string_view key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  if (const auto b = v->to_bool()) return b;
  type_error(key, *v, "bool");
}

std::optional<std::vector<std::string>> GgufFile::get_string_array(std::string_view key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_array() || v->elem_type() != GgufType::String) type_error(key, *v, "array of string");
  std::vector<std::string> out;
  out.reserve(size_t(v->size()));
  for (uint64_t i = 0; i < v->size(); ++i) out.emplace_back(v->string_at(i));
  return out;
}

std::optional<std::vector<int64_t>> GgufFile::get_int_array(std::string_view key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_array() || scalar_size(v->elem_type()) == 0 || v->elem_type() == GgufType::F32 ||
      v->elem_type() == GgufType::F64 || v->elem_type() == GgufType::Bool)
    type_error(key, *v, "array of integers");
  std::vector<int64_t> out;
  out.reserve(size_t(v->size()));
  for (uint64_t i = 0; i < v->size(); ++i) {
    const auto x = v->int_at(i);
    if (!x) throw InputError(path_ + ": metadata " + quote_text(key) + " element " + std::to_string(i) + " is out of range");
    out.push_back(*x);
  }
  return out;
}

std::optional<std::vector<float>> GgufFile::get_float_array(std::string_view key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_array() || scalar_size(v->elem_type()) == 0 || v->elem_type() == GgufType::Bool)
    type_error(key, *v, "array of numbers");
  std::vector<float> out;
  out.reserve(size_t(v->size()));
  for (uint64_t i = 0; i < v->size(); ++i) out.push_back(float(v->float_at(i)));
  return out;
}

std::string GgufFile::require_string(std::string_view key) const {
  auto s = get_string(key);
  if (!s) throw InputError(path_ + ": missing metadata " + quote_text(key));
  return std::move(*s);
}

int64_t GgufFile::require_int(std::string_view key) const {
  const auto i = get_int(key);
  if (!i) throw InputError(path_ + ": missing metadata " + quote_text(key));
  return *i;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

TensorRef GgufFile::tensor_ref(const GgufTensorInfo& info) const {
  const auto dtype = dtype_from_ggml(info.ggml_type);
  if (!dtype)
    throw InputError(path_ + ": tensor " + quote_text(info.name) + " has type " + ggml_type_name(info.ggml_type) +
                     ", which is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K)");
  TensorRef t;
  t.name = info.name;
  t.dtype = *dtype;
  t.shape = info.shape();
  t.data = info.data;
  t.nbytes = size_t(info.nbytes);
  return t;
}

}  // namespace cf
