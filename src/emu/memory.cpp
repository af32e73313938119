#include "memory.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>
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
  span_shift_ = 0;
  while ((size_t(1) << span_shift_) < data_bytes + 2 * page_) ++span_shift_;
  const size_t view_span = size_t(1) << span_shift_;
  const size_t total = view_span * kMaxSlots * 2;
  // Over-reserve by one span so that the windows start at a multiple of the span (an address's slot and view are
  // then bits of its offset from lo_).
  void* mem = mmap(nullptr, total + view_span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) throw Error("cf_emu: cannot reserve " + std::to_string(total) + " bytes for shared memory");
  lo_ = (reinterpret_cast<uintptr_t>(mem) + view_span - 1) & ~uintptr_t(view_span - 1);
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
  return reinterpret_cast<uint8_t*>(lo_ + ((size_t(slot) * 2 + size_t(v)) << span_shift_) + page_);
}

void SmemArena::configure(uint32_t slot, uint32_t bytes) {
  const size_t data_bytes = size_t(data_pages_) * page_;
  const size_t rounded = (size_t(bytes) + kDynamicSmemAlign - 1) / kDynamicSmemAlign * kDynamicSmemAlign;
  base_offset_[slot] = uint32_t(data_bytes - rounded);
}

SmemArena::Where SmemArena::locate(uintptr_t addr) const {
  const size_t rel = addr - lo_;
  const size_t span_index = rel >> span_shift_;
  const size_t in_span = rel & ((size_t(1) << span_shift_) - 1);
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
  bool in_region = false;
};
Slot g_blocks[kMaxBlocks];
std::mutex g_blocks_mutex;
size_t g_blocks_high = 0;  // slots [0, high) may be live
const size_t g_page = size_t(sysconf(_SC_PAGESIZE));

// The region: reserved once (the largest of a few sizes the system grants), carved first-fit in whole pages.
struct Region {
  uintptr_t lo = 0;
  size_t span = 0;
  std::map<uintptr_t, size_t> free;                        // start -> bytes, coalesced
  std::vector<std::pair<uintptr_t, uintptr_t>> scratch;  // declared scratch ranges, sorted
};
Region& region() {  // under g_blocks_mutex
  static Region* r = [] {
    auto* reg = new Region();
    for (size_t gib : {16, 4, 1}) {
      const size_t bytes = gib << 30;
      void* mem = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (mem == MAP_FAILED) continue;
      reg->lo = reinterpret_cast<uintptr_t>(mem);
      reg->span = bytes;
      reg->free[reg->lo] = bytes;
      break;
    }
    return reg;
  }();
  return *r;
}

uintptr_t region_take(Region& r, size_t bytes) {
  for (auto it = r.free.begin(); it != r.free.end(); ++it) {
    if (it->second < bytes) continue;
    const uintptr_t at = it->first;
    const size_t left = it->second - bytes;
    r.free.erase(it);
    if (left > 0) r.free[at + bytes] = left;
    return at;
  }
  return 0;
}

void region_give(Region& r, uintptr_t at, size_t bytes) {
  auto next = r.free.lower_bound(at);
  if (next != r.free.end() && at + bytes == next->first) {
    bytes += next->second;
    next = r.free.erase(next);
  }
  if (next != r.free.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == at) {
      prev->second += bytes;
      return;
    }
  }
  r.free[at] = bytes;
}
}  // namespace

GlobalRegion global_region() {
  const std::lock_guard<std::mutex> lock(g_blocks_mutex);
  const Region& r = region();
  return {r.lo, r.span};
}

void* alloc_global(size_t bytes) {
  const size_t page = g_page;
  const size_t rounded = (bytes + 15) / 16 * 16;
  const size_t data_pages = (rounded + page - 1) / page;
  const size_t total = (data_pages + 1) * page;
  const std::lock_guard<std::mutex> lock(g_blocks_mutex);
  Region& r = region();
  void* mem = MAP_FAILED;
  bool in_region = false;
  if (const uintptr_t at = r.span > 0 ? region_take(r, total) : 0; at != 0) {
    // the data pages become memory; the guard page stays part of the PROT_NONE reservation
    mem = mmap(reinterpret_cast<void*>(at), data_pages * page, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (mem == MAP_FAILED) region_give(r, at, total);
    in_region = mem != MAP_FAILED;
  }
  if (mem == MAP_FAILED) {
    mem = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) throw Error("DeviceBuffer: cannot allocate " + std::to_string(bytes) + " bytes");
    mprotect(static_cast<uint8_t*>(mem) + data_pages * page, page, PROT_NONE);
  }
  const uintptr_t guard = reinterpret_cast<uintptr_t>(mem) + data_pages * page;
  const uintptr_t data = guard - rounded;
  for (size_t i = 0; i < kMaxBlocks; ++i) {
    Slot& s = g_blocks[i];
    if (s.live.load(std::memory_order_relaxed)) continue;
    s.block = GlobalBlock{data, bytes, guard};
    s.mapping = mem;
    s.mapping_bytes = total;
    s.in_region = in_region;
    s.live.store(true, std::memory_order_release);
    if (i + 1 > g_blocks_high) g_blocks_high = i + 1;
    return reinterpret_cast<void*>(data);
  }
  if (in_region) {
    mmap(mem, data_pages * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
    region_give(r, reinterpret_cast<uintptr_t>(mem), total);
  } else {
    munmap(mem, total);
  }
  throw Error("DeviceBuffer: more than " + std::to_string(kMaxBlocks) + " live buffers in the emulator");
}

void free_global(void* p) {
  const auto data = reinterpret_cast<uintptr_t>(p);
  const std::lock_guard<std::mutex> lock(g_blocks_mutex);
  for (size_t i = 0; i < g_blocks_high; ++i) {
    Slot& s = g_blocks[i];
    if (s.live.load(std::memory_order_relaxed) && s.block.data == data) {
      s.live.store(false, std::memory_order_release);
      Region& r = region();
      const uintptr_t lo = s.block.data, hi = s.block.data + s.block.bytes;
      std::erase_if(r.scratch, [&](const auto& range) { return range.first >= lo && range.second <= hi; });
      if (s.in_region) {  // back to reserved address space (drops the pages)
        mmap(s.mapping, s.mapping_bytes - g_page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
             -1, 0);
        region_give(r, reinterpret_cast<uintptr_t>(s.mapping), s.mapping_bytes);
      } else {
        munmap(s.mapping, s.mapping_bytes);
      }
      return;
    }
  }
}

void declare_scratch_range(const void* p, size_t bytes) {
  if (bytes == 0) return;
  const auto lo = reinterpret_cast<uintptr_t>(p);
  const std::lock_guard<std::mutex> lock(g_blocks_mutex);
  bool inside = false;
  for (size_t i = 0; i < g_blocks_high && !inside; ++i) {
    const Slot& s = g_blocks[i];
    inside = s.live.load(std::memory_order_relaxed) && lo >= s.block.data && lo + bytes <= s.block.data + s.block.bytes;
  }
  if (!inside)
    throw InputError("declare_scratch: [" + std::to_string(lo) + ", +" + std::to_string(bytes) +
                     ") is not inside one DeviceBuffer");
  Region& r = region();
  r.scratch.emplace_back(lo, lo + bytes);
  std::sort(r.scratch.begin(), r.scratch.end());
  // merge overlapping or touching ranges
  std::vector<std::pair<uintptr_t, uintptr_t>> merged;
  for (const auto& range : r.scratch) {
    if (!merged.empty() && range.first <= merged.back().second)
      merged.back().second = std::max(merged.back().second, range.second);
    else
      merged.push_back(range);
  }
  r.scratch = std::move(merged);
}

void snapshot_globals(GlobalSnapshot* out) {
  out->blocks.clear();
  const std::lock_guard<std::mutex> lock(g_blocks_mutex);
  const Region& r = region();
  for (size_t i = 0; i < g_blocks_high; ++i) {
    const Slot& s = g_blocks[i];
    if (s.live.load(std::memory_order_relaxed) && s.in_region) out->blocks.push_back(s.block);
  }
  std::sort(out->blocks.begin(), out->blocks.end(),
            [](const GlobalBlock& a, const GlobalBlock& b) { return a.data < b.data; });
  out->scratch = r.scratch;
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
