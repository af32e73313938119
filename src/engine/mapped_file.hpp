// Read-only memory mapping of a whole file (internal to cf_engine).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "clusterfusion/common/json.hpp"

namespace cf {

class MappedFile {
 public:
  // Maps `path` read-only. cf::InputError("<path>: <why>") when it cannot be opened, is not a regular file, or is
  // empty (an empty file is a valid mapping of nothing, but never a valid model file).
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Reads a whole (small) text file, refusing files over max_bytes. cf::InputError naming the path on failure.
std::string read_text_file(const std::string& path, size_t max_bytes);

// Upper bound on the number of values in a JSON text (every array/object element follows '[', '{' or ','). The JSON
// tree costs ~100 bytes per value, so callers refuse texts with more than one value per few bytes before parsing.
size_t json_value_bound(std::string_view text);

// Values allowed in a config-style JSON file: real ones hold at most ~10^5 (a 90k-tensor weight_map); the cap keeps
// a hostile file's tree under ~150 MB.
inline constexpr size_t kMaxConfigJsonValues = size_t(1) << 20;

// Reads and parses a small JSON file (config.json, tokenizer_config.json, ...): at most max_bytes, at most one value
// per 3 bytes and kMaxConfigJsonValues in all; errors are cf::InputError("<path>: ...").
json::Value parse_json_file(const std::string& path, size_t max_bytes);

// Error-message helper: s quoted, with control and non-ASCII bytes escaped and long text clipped.
std::string quote_text(std::string_view s, size_t max_chars = 80);

}  // namespace cf
