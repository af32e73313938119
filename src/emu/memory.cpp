#include "memory.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/device/types.hpp"

namespace cf::dev::emu {

// ---- shared memory windows ---------------------------------------------------------------------------------------
SmemArena& SmemArena::instance() {
  static SmemArena* arena = new SmemArena();  // leaked on purpose: the fault handler may run during exit
  return *arena;
}

SmemArena::SmemArena() {
  page_ = size_t(sysconf(_SC_PAGESIZE));
  data_pages_ = uint32_t((kMaxSmemPerBlock + page_ - 1) / page_);
  const size_t data_bytes = size_t(data_pages_) * page_;
  view_span_ = data_bytes + 2 * page_;
  const size_t total = view_span_ * kMaxSlots * 2;
  void* mem = mmap(nullptr, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) throw Error("cf_emu: cannot reserve " + std::to_string(total) + " bytes for shared memory");
  lo_ = reinterpret_cast<uintptr_t>(mem);
  hi_ = lo_ + total;
  for (uint32_t slot = 0; slot < kMaxSlots; ++slot) {
    const int fd = memfd_create("cf_emu_smem", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, off_t(data_bytes)) != 0)
      throw Error("cf_emu: memfd_create/ftruncate for shared memory failed");
    for (View v : {View::Local, View::Dsmem}) {
      void* at = data_start(slot, v);
      if (mmap(at, data_bytes, PROT_NONE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED)
        throw Error("cf_emu: cannot map a shared-memory view");
    }
    close(fd);
    base_offset_[slot] = uint32_t(data_bytes);
  }
}

uint8_t* SmemArena::data_start(uint32_t slot, View v) const {
  return reinterpret_cast<uint8_t*>(lo_ + (size_t(slot) * 2 + size_t(v)) * view_span_ + page_);
}

void SmemArena::configure(uint32_t slot, uint32_t bytes) {
  const size_t data_bytes = size_t(data_pages_) * page_;
  const size_t rounded = (size_t(bytes) + kDynamicSmemAlign - 1) / kDynamicSmemAlign * kDynamicSmemAlign;
  base_offset_[slot] = uint32_t(data_bytes - rounded);
}

SmemArena::Where SmemArena::locate(uintptr_t addr) const {
  const size_t rel = addr - lo_;
  const size_t span_index = rel / view_span_;
  const size_t in_span = rel % view_span_;
  Where w{};
  w.slot = uint32_t(span_index / 2);
  w.view = View(span_index % 2);
  w.page = int64_t(in_span / page_) - 1;
  w.offset = int64_t(in_span) - int64_t(page_) - int64_t(base_offset_[w.slot]);
  return w;
}

void SmemArena::protect(uint32_t slot, View v, uint32_t page_lo, uint32_t page_hi, bool accessible) const {
  if (page_lo >= page_hi) return;
  uint8_t* at = data_start(slot, v) + size_t(page_lo) * page_;
  mprotect(at, size_t(page_hi - page_lo) * page_, accessible ? PROT_READ | PROT_WRITE : PROT_NONE);
}

// ---- global memory -----------------------------------------------------------------------------------------------
namespace {
constexpr size_t kMaxBlocks = 16384;
struct Slot {
  std::atomic<bool> live{false};
  GlobalBlock block;
  void* mapping = nullptr;
  size_t mapping_bytes = 0;
};
Slot g_blocks[kMaxBlocks];
std::mutex g_blocks_mutex;
size_t g_blocks_high = 0;  // slots [0, high) may be live
const size_t g_page = size_t(sysconf(_SC_PAGESIZE));
}  // namespace

void* alloc_global(size_t bytes) {
  const size_t page = g_page;
  const size_t rounded = (bytes + 15) / 16 * 16;
  const size_t data_pages = (rounded + page - 1) / page;
  const size_t total = (data_pages + 1) * page;
  void* mem = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) throw Error("DeviceBuffer: cannot allocate " + std::to_string(bytes) + " bytes");
  const uintptr_t guard = reinterpret_cast<uintptr_t>(mem) + data_pages * page;
  mprotect(reinterpret_cast<void*>(guard), page, PROT_NONE);
  const uintptr_t data = guard - rounded;
  const std::lock_guard<std::mutex> lock(g_blocks_mutex);
  for (size_t i = 0; i < kMaxBlocks; ++i) {
    Slot& s = g_blocks[i];
    if (s.live.load(std::memory_order_relaxed)) continue;
    s.block = GlobalBlock{data, bytes, guard};
    s.mapping = mem;
    s.mapping_bytes = total;
    s.live.store(true, std::memory_order_release);
    if (i + 1 > g_blocks_high) g_blocks_high = i + 1;
    return reinterpret_cast<void*>(data);
  }
  munmap(mem, total);
  throw Error("DeviceBuffer: more than " + std::to_string(kMaxBlocks) + " live buffers in the emulator");
}

void free_global(void* p) {
  const auto data = reinterpret_cast<uintptr_t>(p);
  const std::lock_guard<std::mutex> lock(g_blocks_mutex);
  for (size_t i = 0; i < g_blocks_high; ++i) {
    Slot& s = g_blocks[i];
    if (s.live.load(std::memory_order_relaxed) && s.block.data == data) {
      s.live.store(false, std::memory_order_release);
      munmap(s.mapping, s.mapping_bytes);
      return;
    }
  }
}

bool find_global_block(uintptr_t addr, GlobalBlock* out) {
  const size_t page = g_page;
  for (size_t i = 0; i < kMaxBlocks && i < g_blocks_high + 1; ++i) {
    const Slot& s = g_blocks[i];
    if (!s.live.load(std::memory_order_acquire)) continue;
    if (addr >= s.block.data && addr < s.block.guard + page) {
      *out = s.block;
      return true;
    }
  }
  return false;
}

bool find_global_guard(uintptr_t addr, GlobalBlock* out) {
  const size_t page = g_page;
  GlobalBlock b;
  if (find_global_block(addr, &b) && addr >= b.guard && addr < b.guard + page) {
    *out = b;
    return true;
  }
  return false;
}

}  // namespace cf::dev::emu
