#include "mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <signal.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "clusterfusion/common/error.hpp"

namespace cf {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

std::string file_type_text(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISDIR(mode)) return "a folder";
  return "not a regular file";
}

// ---- SIGBUS guard -------------------------------------------------------------------------------------------------
// A table of mapped ranges the handler may repair. Slots are claimed with a compare-and-swap and read by the handler
// with plain atomic loads: nothing in the handler allocates, locks or calls anything but mmap(2) and sigaction(2).

struct Guard {
  std::atomic<int> state{0};  // 0 free, 1 being set up or released, 2 active
  std::atomic<uintptr_t> begin{0}, end{0};
  std::atomic<int> truncated{0};
};
constexpr int kGuardSlots = 8192;  // more than a folder's shards (kMaxShards), each mapping also holds a descriptor
Guard g_guards[kGuardSlots];
struct sigaction g_previous_sigbus;
uintptr_t g_page_size = 4096;

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
  for (Guard& g : g_guards) {
    if (g.state.load(std::memory_order_acquire) != 2) continue;
    const uintptr_t begin = g.begin.load(std::memory_order_relaxed), end = g.end.load(std::memory_order_relaxed);
    if (addr < begin || addr >= end) continue;
    // Everything from the faulting page on lies past the file's new end: zeros instead, and a note for the owner.
    const uintptr_t page = addr & ~(g_page_size - 1);
    void* p = ::mmap(reinterpret_cast<void*>(page), end - page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p == MAP_FAILED) break;
    g.truncated.store(1, std::memory_order_relaxed);
    return;
  }
  // Not ours: whatever handled SIGBUS before us.
  if (g_previous_sigbus.sa_flags & SA_SIGINFO) {
    g_previous_sigbus.sa_sigaction(sig, info, context);
  } else if (g_previous_sigbus.sa_handler != SIG_DFL && g_previous_sigbus.sa_handler != SIG_IGN) {
    g_previous_sigbus.sa_handler(sig);
  } else {
    // Default action: returning re-runs the faulting access, which now terminates the process as it would have.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigemptyset(&dfl.sa_mask);
    ::sigaction(SIGBUS, &dfl, nullptr);
  }
}

void install_sigbus_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    g_page_size = uintptr_t(::sysconf(_SC_PAGESIZE));
    struct sigaction sa {};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    ::sigemptyset(&sa.sa_mask);
    ::sigaction(SIGBUS, &sa, &g_previous_sigbus);
  });
}

int claim_guard(const void* data, size_t size) {
  install_sigbus_handler();
  for (int i = 0; i < kGuardSlots; ++i) {
    int expected = 0;
    if (!g_guards[i].state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) continue;
    g_guards[i].begin.store(reinterpret_cast<uintptr_t>(data), std::memory_order_relaxed);
    g_guards[i].end.store(reinterpret_cast<uintptr_t>(data) + size, std::memory_order_relaxed);
    g_guards[i].truncated.store(0, std::memory_order_relaxed);
    g_guards[i].state.store(2, std::memory_order_release);
    return i;
  }
  return -1;
}

void release_guard(int slot) {
  if (slot < 0) return;
  g_guards[slot].state.store(1, std::memory_order_release);
  g_guards[slot].state.store(0, std::memory_order_release);
}

int64_t nanoseconds(const timespec& t) { return int64_t(t.tv_sec) * 1000000000 + t.tv_nsec; }

// File timestamps come from the kernel's coarse clock, which advances once per tick (a few ms): a write within the
// tick in which we take our snapshot would leave them unchanged. Waiting until the clock has moved past the file's
// timestamps (at most a tick, and only for a file modified this very tick) makes every later write visible.
void wait_past(int64_t stamp_ns) {
  for (int i = 0; i < 50; ++i) {
    timespec now {};
    ::clock_gettime(CLOCK_REALTIME_COARSE, &now);
    if (nanoseconds(now) > stamp_ns) return;
    const timespec millisecond{0, 1000000};
    ::nanosleep(&millisecond, nullptr);
  }
}

}  // namespace

PathKind path_kind(const std::string& path) {
  if (path.empty()) throw InputError("'': no such file or directory (empty path)");
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) return PathKind::Missing;
    if (err == ENOTDIR) throw InputError(path + ": a part of the path before the last name is a file, not a folder");
    throw InputError(path + ": " + errno_text(err));
  }
  if (S_ISREG(st.st_mode)) return PathKind::File;
  if (S_ISDIR(st.st_mode)) return PathKind::Directory;
  return PathKind::Other;
}

std::string path_kind_text(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return errno_text(errno);
  return file_type_text(st.st_mode);
}

ReadOnlyFile::ReadOnlyFile(const std::string& path) : path_(path) {
  if (path.empty()) throw InputError("'': no such file or directory (empty path)");
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd_ < 0) {
    const int err = errno;
    if (err == ENOTDIR) throw InputError(path + ": a part of the path before the last name is a file, not a folder");
    throw InputError(path + ": cannot open (" + errno_text(err) + ")");
  }
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    ::close(fd_);
    throw InputError(path + ": cannot stat (" + errno_text(err) + ")");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd_);
    throw InputError(path + ": not a regular file (" + file_type_text(st.st_mode) + ")");
  }
  // Regular files never block; reads below want the ordinary semantics anyway.
  ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) & ~O_NONBLOCK);
  size_ = uint64_t(st.st_size);
}

ReadOnlyFile::~ReadOnlyFile() {
  if (fd_ >= 0) ::close(fd_);
}

std::string ReadOnlyFile::read_prefix(size_t n) const {
  std::string out(n, '\0');
  size_t done = 0;
  while (done < n) {
    const ssize_t got = ::pread(fd_, out.data() + done, n - done, off_t(done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw InputError(path_ + ": read failed (" + errno_text(errno) + ")");
    if (got == 0) break;
    done += size_t(got);
  }
  out.resize(done);
  return out;
}

std::string ReadOnlyFile::read_all(size_t max_bytes) const {
  if (size_ > max_bytes)
    throw InputError(path_ + ": file is " + std::to_string(size_) + " bytes, more than the " +
                     std::to_string(max_bytes) + " allowed");
  // One byte more than expected tells a file that grew while it was read.
  std::string text = read_prefix(size_t(size_) + 1);
  if (text.size() != size_)
    throw InputError(path_ + ": the file changed size while it was being read (" + std::to_string(size_) + " -> " +
                     (text.size() > size_ ? "more" : std::to_string(text.size())) + " bytes)");
  return text;
}

MappedFile::Snapshot MappedFile::snapshot_of(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw InputError(path + ": cannot stat (" + errno_text(errno) + ")");
  return {uint64_t(st.st_size), nanoseconds(st.st_mtim), nanoseconds(st.st_ctim), uint64_t(st.st_nlink)};
}

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
  ReadOnlyFile file(path);
  if (file.size() == 0) throw InputError(path + ": file is empty");
  std::shared_ptr<MappedFile> m(new MappedFile());
  m->path_ = path;
  m->fd_ = ::dup(file.fd());
  if (m->fd_ < 0) throw InputError(path + ": cannot open (" + errno_text(errno) + ")");
  const Snapshot first = snapshot_of(m->fd_, path);
  wait_past(std::max(first.mtime_ns, first.ctime_ns));
  m->at_open_ = snapshot_of(m->fd_, path);
  if (m->at_open_.size == 0) throw InputError(path + ": file is empty");
  const auto size = size_t(m->at_open_.size);
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, m->fd_, 0);
  if (p == MAP_FAILED)
    throw InputError(path + ": cannot map " + std::to_string(size) + " bytes (" + errno_text(errno) + ")");
  m->data_ = static_cast<const uint8_t*>(p);
  m->size_ = size;
  m->guard_ = claim_guard(p, size);
  if (m->guard_ < 0) throw InputError(path + ": too many files mapped at once");
  return m;
}

MappedFile::~MappedFile() {
  release_guard(guard_);
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
  if (fd_ >= 0) ::close(fd_);
}

std::string MappedFile::change() const {
  if (guard_ >= 0 && g_guards[guard_].truncated.load(std::memory_order_relaxed))
    return "was truncated while it was being read";
  const Snapshot now = snapshot_of(fd_, path_);
  if (now.size != at_open_.size)
    return "changed size while it was being read (" + std::to_string(at_open_.size) + " -> " +
           std::to_string(now.size) + " bytes)";
  const bool status_changed = now.ctime_ns != at_open_.ctime_ns && now.links == at_open_.links;
  if (now.mtime_ns != at_open_.mtime_ns || status_changed) return "was modified while it was being read";
  return {};
}

void MappedFile::check_unchanged() const {
  const std::string why = change();
  if (!why.empty()) throw InputError(path_ + ": the file " + why + "; load it again once it is complete");
}

std::string read_text_file(const std::string& path, size_t max_bytes) { return ReadOnlyFile(path).read_all(max_bytes); }

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
