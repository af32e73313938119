// Safetensors reader (see safetensors.hpp) and the Hugging Face -> GGUF-style tensor name mapping.
#include "clusterfusion/formats/safetensors.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/json.hpp"
#include "clusterfusion/model/weight_table.hpp"
#include "mapped_file.hpp"

namespace cf {

namespace {
struct StDType {
  std::string_view name;
  int64_t bytes;
};
// Every dtype the format defines; only F32/F16/BF16 can become model tensors.
constexpr StDType kStDTypes[] = {
    {"F64", 8}, {"F32", 4}, {"F16", 2},     {"BF16", 2},    {"I64", 8},     {"I32", 4},      {"I16", 2},
    {"I8", 1},  {"U64", 8}, {"U32", 4},     {"U16", 2},     {"U8", 1},      {"BOOL", 1},     {"F8_E4M3", 1},
    {"F8_E5M2", 1},
};
}  // namespace

int64_t SafetensorsTensor::numel() const {
  int64_t n = 1;
  for (const int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile::SafetensorsFile(const std::string& path) {
  path_ = path;
  mapping_ = MappedFile::open(path);
  base_ = mapping_->data();
  size_ = mapping_->size();
  parse_mapped(*mapping_, [&] { parse(); });
}

void SafetensorsFile::check_unchanged() const {
  if (mapping_) mapping_->check_unchanged();
}

SafetensorsFile SafetensorsFile::from_memory(std::string name, const uint8_t* data, size_t size) {
  SafetensorsFile f;
  f.path_ = std::move(name);
  static const uint8_t empty = 0;
  f.base_ = data ? data : &empty;
  f.size_ = data ? size : 0;
  f.parse();
  return f;
}

void SafetensorsFile::parse() {
  auto fail = [&](const std::string& what, const std::string& where) -> void {
    throw InputError(path_ + ": " + what + " (" + where + ")");
  };
  if (size_ < 8) fail("truncated: " + std::to_string(size_) + " bytes, expected at least the 8-byte header length", "header");
  uint64_t header_len;
  std::memcpy(&header_len, base_, 8);
  if (header_len > kMaxHeaderBytes)
    fail("header length " + std::to_string(header_len) + " exceeds the limit of " + std::to_string(kMaxHeaderBytes) +
             " bytes (not a safetensors file?)", "header");
  if (header_len > size_ - 8)
    fail("header length " + std::to_string(header_len) + " exceeds the " + std::to_string(size_ - 8) +
             " bytes after it (file truncated?)", "header");
  if (header_len < 2) fail("header length " + std::to_string(header_len) + " is too small for a JSON object", "header");
  data_offset_ = 8 + header_len;
  const uint64_t data_size = size_ - data_offset_;

  const std::string_view text(reinterpret_cast<const char*>(base_ + 8), size_t(header_len));
  // Upper bound on the number of JSON values: each array/object element follows '[', '{' or ','.
  const auto separators = uint64_t(json_value_bound(text));
  if (separators > header_len / kMinBytesPerValue + 16)
    fail("header holds too many JSON values for its size (" + std::to_string(separators) + " separators in " +
             std::to_string(header_len) + " bytes)", "header");
  json::Value doc;
  try {
    json::ParseLimits limits;
    limits.max_depth = 16;
    limits.max_values = kMaxHeaderValues;
    doc = json::parse(text, limits);
  } catch (const InputError& e) {
    fail(std::string("bad JSON header: ") + e.what(), "header");
  }
  if (!doc.is_object()) fail("header is not a JSON object", "header");

  const auto& entries = doc.as_object();
  tensors_.reserve(entries.size());
  for (const auto& [name, value] : entries) {
    if (name == "__metadata__") {
      if (!value.is_object()) fail("__metadata__ is not an object", "header");
      for (const auto& [k, v] : value.as_object()) {
        if (!v.is_string()) fail("__metadata__ value for " + quote_text(k) + " is not a string", "header");
        metadata_.emplace_back(k, v.as_string());
      }
      continue;
    }
    const std::string where = "tensor " + quote_text(name);
    if (name.empty()) fail("empty tensor name", "header");
    if (!value.is_object()) fail("entry is not an object", where);
    SafetensorsTensor t;
    t.name = name;
    const auto* dtype = value.find("dtype");
    if (!dtype || !dtype->is_string()) fail("missing or non-string dtype", where);
    t.dtype = dtype->as_string();
    for (const auto& d : kStDTypes)
      if (d.name == t.dtype) t.dtype_bytes = d.bytes;
    if (t.dtype_bytes == 0) fail("unknown dtype " + quote_text(t.dtype), where);

    const auto* shape = value.find("shape");
    if (!shape || !shape->is_array()) fail("missing or non-array shape", where);
    if (shape->as_array().size() > kMaxDims)
      fail("shape has " + std::to_string(shape->as_array().size()) + " dimensions (at most " + std::to_string(kMaxDims) + ")", where);
    uint64_t numel = 1;
    for (const auto& d : shape->as_array()) {
      if (!d.is_integer() || d.as_int() < 0) fail("shape entries must be non-negative integers", where);
      const auto dim = uint64_t(d.as_int());
      if (dim != 0 && numel > uint64_t(std::numeric_limits<int64_t>::max()) / dim) fail("element count overflows", where);
      numel *= dim;
      t.shape.push_back(int64_t(dim));
    }
    const auto* offsets = value.find("data_offsets");
    if (!offsets || !offsets->is_array() || offsets->as_array().size() != 2 || !offsets->as_array()[0].is_integer() ||
        !offsets->as_array()[1].is_integer() || offsets->as_array()[0].as_int() < 0 || offsets->as_array()[1].as_int() < 0)
      fail("data_offsets must be [begin, end] with non-negative integers", where);
    t.begin = uint64_t(offsets->as_array()[0].as_int());
    t.end = uint64_t(offsets->as_array()[1].as_int());
    if (t.begin > t.end)
      fail("data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "] end before they begin", where);
    if (t.end > data_size)
      fail("data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "] exceed the data section of " +
               std::to_string(data_size) + " bytes (file truncated?)", where);
    if (numel > std::numeric_limits<uint64_t>::max() / uint64_t(t.dtype_bytes) || t.end - t.begin != numel * uint64_t(t.dtype_bytes))
      fail("data_offsets span " + std::to_string(t.end - t.begin) + " bytes, but shape " + std::to_string(numel) +
               " elements x " + std::to_string(t.dtype_bytes) + " bytes needs " + std::to_string(numel * uint64_t(t.dtype_bytes)), where);
    t.data = base_ + data_offset_ + t.begin;
    if (!index_.emplace(t.name, tensors_.size()).second) fail("duplicate tensor name", where);
    tensors_.push_back(std::move(t));
  }

  std::vector<const SafetensorsTensor*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const auto& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i - 1]->end > by_offset[i]->begin)
      fail("data overlaps tensor " + quote_text(by_offset[i - 1]->name), "tensor " + quote_text(by_offset[i]->name));
}

const SafetensorsTensor* SafetensorsFile::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

TensorRef SafetensorsFile::tensor_ref(const SafetensorsTensor& t, std::string canonical_name) const {
  const auto dtype = dtype_from_name(t.dtype);
  if (!dtype || (*dtype != DType::F32 && *dtype != DType::F16 && *dtype != DType::BF16))
    throw InputError(path_ + ": tensor " + quote_text(t.name) + " has unsupported dtype " + t.dtype +
                     " (supported: F32, F16, BF16)");
  TensorRef r;
  r.name = std::move(canonical_name);
  r.dtype = *dtype;
  r.shape = t.shape;
  r.data = t.data;
  r.nbytes = size_t(t.end - t.begin);
  return r;
}

std::optional<std::string> canonical_tensor_name(std::string_view n) {
  for (const WeightSlotInfo& slot : weight_slots())
    if (!slot.per_layer && n == slot.hf_name) return std::string(slot.gguf_name);
  constexpr std::string_view layers = "model.layers.";
  if (n.substr(0, layers.size()) != layers) return std::nullopt;
  n.remove_prefix(layers.size());
  const size_t dot = n.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot > 6) return std::nullopt;
  int layer = 0;
  const auto [end, ec] = std::from_chars(n.data(), n.data() + dot, layer);
  if (ec != std::errc() || end != n.data() + dot || (dot > 1 && n[0] == '0')) return std::nullopt;
  const std::string_view rest = n.substr(dot + 1);
  for (const WeightSlotInfo& slot : weight_slots()) {
    if (!slot.per_layer || slot.hf_name.empty()) continue;
    if (rest == slot.hf_name) return "blk." + std::to_string(layer) + "." + std::string(slot.gguf_name);
    // one expert of a stacked slot: "mlp.experts.<e>.gate_proj.weight"
    const size_t star = slot.hf_name.find('*');
    if (star == std::string_view::npos) continue;
    const std::string_view head = slot.hf_name.substr(0, star), tail = slot.hf_name.substr(star + 1);
    if (rest.size() <= head.size() + tail.size() || rest.substr(0, head.size()) != head ||
        rest.substr(rest.size() - tail.size()) != tail)
      continue;
    const std::string_view digits = rest.substr(head.size(), rest.size() - head.size() - tail.size());
    int expert = 0;
    const auto [at, code] = std::from_chars(digits.data(), digits.data() + digits.size(), expert);
    if (code != std::errc() || at != digits.data() + digits.size() || digits.size() > 6 ||
        (digits.size() > 1 && digits[0] == '0'))
      continue;
    return expert_tensor_name(slot.slot, layer, expert);
  }
  return std::nullopt;
}

}  // namespace cf
