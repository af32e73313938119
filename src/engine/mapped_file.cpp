#include "mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "clusterfusion/common/error.hpp"

namespace cf {

namespace {
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};
}  // namespace

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(path + ": cannot open (" + std::strerror(errno) + ")");
  FdCloser closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw InputError(path + ": cannot stat (" + std::strerror(errno) + ")");
  if (!S_ISREG(st.st_mode)) throw InputError(path + ": not a regular file");
  if (st.st_size == 0) throw InputError(path + ": file is empty");
  const auto size = size_t(st.st_size);
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) throw InputError(path + ": cannot map " + std::to_string(size) + " bytes (" + std::strerror(errno) + ")");
  std::shared_ptr<MappedFile> m(new MappedFile());
  m->data_ = static_cast<const uint8_t*>(p);
  m->size_ = size;
  return m;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

std::string read_text_file(const std::string& path, size_t max_bytes) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw InputError(path + ": cannot open (" + std::strerror(errno) + ")");
  if (!S_ISREG(st.st_mode)) throw InputError(path + ": not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open (" + std::strerror(errno) + ")");
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) throw InputError(path + ": cannot determine the file size");
  if (uint64_t(size) > max_bytes)
    throw InputError(path + ": file is " + std::to_string(size) + " bytes, more than the " + std::to_string(max_bytes) +
                     " allowed");
  in.seekg(0, std::ios::beg);
  std::string text(size_t(size), '\0');
  if (size > 0 && !in.read(text.data(), size)) throw InputError(path + ": read failed");
  return text;
}

size_t json_value_bound(std::string_view text) {
  size_t n = 1;
  for (const char c : text) n += (c == ',' || c == '[' || c == '{');
  return n;
}

json::Value parse_json_file(const std::string& path, size_t max_bytes) {
  const std::string text = read_text_file(path, max_bytes);
  if (json_value_bound(text) > text.size() / 3 + 64) throw InputError(path + ": too many JSON values for the file size");
  try {
    json::ParseLimits limits;
    limits.max_bytes = max_bytes;
    limits.max_values = kMaxConfigJsonValues;
    return json::parse(text, limits);
  } catch (const InputError& e) {
    throw InputError(path + ": " + e.what());
  }
}

std::string quote_text(std::string_view s, size_t max_chars) {
  static const char* hex = "0123456789abcdef";
  std::string out = "'";
  size_t shown = 0;
  for (const char ch : s) {
    if (shown++ == max_chars) {
      out += "...";
      break;
    }
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
      out += char(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out + "'";
}

}  // namespace cf
