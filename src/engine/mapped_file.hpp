// Read-only memory mapping of a whole file (internal to cf_engine).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

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

// Error-message helper: s quoted, with control and non-ASCII bytes escaped and long text clipped.
std::string quote_text(std::string_view s, size_t max_chars = 80);

}  // namespace cf
