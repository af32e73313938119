// Safetensors reader: memory-maps the file read-only and validates the header before anything looks at it.
// Layout: u64 little-endian header length N, N bytes of JSON {"name": {"dtype": "F16", "shape": [..],
// "data_offsets": [begin, end]}, ..., "__metadata__": {string: string}}, then the data section (offsets relative
// to it). Checked: N against a cap and the file size, the JSON (strict, bounded), every dtype, shape, offset pair
// (inside the data section, end - begin == numel * dtype size), no two tensors overlapping, no duplicate names.
// Errors: cf::InputError("<path>: <what> (<where>)").
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "clusterfusion/formats/gguf.hpp"  // StringMap
#include "clusterfusion/formats/tensor.hpp"

namespace cf {

class MappedFile;

struct SafetensorsTensor {
  std::string name;   // as in the file (Hugging Face naming)
  std::string dtype;  // "F32", "BF16", "I64", ...
  int64_t dtype_bytes = 0;
  std::vector<int64_t> shape;  // row-major, outermost first
  uint64_t begin = 0, end = 0;  // byte range within the data section
  const uint8_t* data = nullptr;

  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Real headers are a few hundred KB at most. The JSON tree costs ~100 bytes per value, so the cap and a cheap
  // pre-count of values (at most one per kMinBytesPerValue header bytes) bound memory for hostile headers.
  static constexpr uint64_t kMaxHeaderBytes = uint64_t(16) << 20;
  static constexpr uint64_t kMinBytesPerValue = 4;
  // ~10 values per tensor: room for 10^5 tensors in one file, a tree of at most ~150 MB.
  static constexpr size_t kMaxHeaderValues = size_t(1) << 20;
  static constexpr size_t kMaxDims = 8;

  explicit SafetensorsFile(const std::string& path);
  // Parses bytes owned by the caller (kept alive while this object lives); `name` is used in errors.
  static SafetensorsFile from_memory(std::string name, const uint8_t* data, size_t size);

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const SafetensorsTensor* find(std::string_view name) const;
  const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }
  uint64_t data_offset() const { return data_offset_; }

  // A TensorRef under `canonical_name`; cf::InputError naming the tensor when its dtype is not F32, F16 or BF16.
  TensorRef tensor_ref(const SafetensorsTensor& t, std::string canonical_name) const;
  // As GgufFile::check_unchanged.
  void check_unchanged() const;

 private:
  SafetensorsFile() = default;
  void parse();

  std::string path_;
  std::shared_ptr<const MappedFile> mapping_;  // when this object owns its bytes
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  uint64_t data_offset_ = 0;
  std::vector<SafetensorsTensor> tensors_;
  StringMap<size_t> index_;
  std::vector<std::pair<std::string, std::string>> metadata_;
};

// Canonical (GGUF-style) name of a Hugging Face Llama/Qwen2 tensor name, e.g.
// "model.layers.3.self_attn.q_proj.weight" -> "blk.3.attn_q.weight"; nullopt for names with no canonical form.
std::optional<std::string> canonical_tensor_name(std::string_view hf_name);

}  // namespace cf
