// Read-only memory mapping of a whole file (internal to cf_formats).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/json.hpp"

namespace cf {

// What a path names, from stat(2) (symbolic links followed). Missing only for "no such file"; every other failure
// (a loop of symbolic links, a path through a regular file, a name too long, a folder that cannot be searched) is a
// cf::InputError naming the path and the reason.
enum class PathKind { Missing, File, Directory, Other };
PathKind path_kind(const std::string& path);
// "a FIFO", "a character device", ... for messages about a path that is neither a regular file nor a folder.
std::string path_kind_text(const std::string& path);

// A regular file opened for reading. The open never blocks: a FIFO or a device is refused (after the open, so a file
// swapped for a FIFO between a check and the open is refused too). cf::InputError("<path>: <why>").
class ReadOnlyFile {
 public:
  explicit ReadOnlyFile(const std::string& path);
  ~ReadOnlyFile();
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;

  int fd() const { return fd_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Up to n bytes from the start (fewer when the file is shorter).
  std::string read_prefix(size_t n) const;
  // The whole file, refusing more than max_bytes.
  std::string read_all(size_t max_bytes) const;

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

// Read-only memory mapping of a whole file, guarded against the file changing underneath:
// - a file truncated while it is mapped would raise SIGBUS on the next read past its new end (a crash). A SIGBUS
//   handler (installed once, chained to any earlier one) maps zero pages over the rest of the range instead and
//   marks the mapping truncated: reads go on and see zeros, and check_unchanged() reports it;
// - a file written while it is read gives a mix of old and new bytes: the size and the modification time are compared
//   with the ones seen at open, and the status-change time too (tools such as `cp -p` put the old modification time
//   back) unless only the link count changed (a file renamed over ours leaves our copy intact). A file modified in
//   the current clock tick is looked at again once the clock has moved on, so that a later write is visible.
// Loaders call check_unchanged() when they are done reading, and before reporting a parse error (which zeros or new
// bytes could have caused). The file descriptor stays open for fstat(2).
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
  const std::string& path() const { return path_; }

  // Empty when the file is as it was when mapped, else why not ("was truncated while it was being read", ...).
  std::string change() const;
  // cf::InputError("<path>: the file <change()>; ...") when it changed.
  void check_unchanged() const;

 private:
  struct Snapshot {
    uint64_t size = 0;
    int64_t mtime_ns = 0, ctime_ns = 0;
    uint64_t links = 0;
  };
  static Snapshot snapshot_of(int fd, const std::string& path);
  MappedFile() = default;
  std::string path_;
  int fd_ = -1;
  Snapshot at_open_;
  int guard_ = -1;  // slot in the SIGBUS guard table
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Runs a parser over a mapped file; when it refuses the bytes and the file changed meanwhile, the change is the
// error (zeros or a half-written file made the parser trip), not what the parser tripped over.
template <class Parse>
void parse_mapped(const MappedFile& file, Parse&& parse) {
  try {
    parse();
  } catch (const InputError&) {
    file.check_unchanged();
    throw;
  }
}

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
