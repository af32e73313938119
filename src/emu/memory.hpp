// Memory the emulator hands to kernels, laid out so that bad accesses fault (and the fault handler reports them) and
// so that the access checks (shadow.hpp) can tell with one subtraction which memory an address belongs to:
//
// Shared memory: one window per CTA slot of a cluster (16 slots). Each slot's bytes live in a memfd mapped twice:
// the Local view (what dynamic_smem() returns to the CTA's own threads) and the Dsmem view (what map_shared_rank()
// returns to peers). Each view is [guard page][data pages][guard pages] in a span of a power-of-two size; a CTA's
// smem ends at the trailing guard page rounded to 128 bytes (start = end - round_up(size, 128)), so the first byte
// past the rounded end faults; the access checks report the first byte past the exact end. The scheduler closes a
// peer's Dsmem view until the cluster barrier that guarantees the peer started and after the peer exited.
//
// Global memory (DeviceBuffer): allocations are carved from one reserved region of address space, each ending right
// before an inaccessible guard page (16-byte rounded). Allocations that do not fit the region get their own mapping
// and are checked by their guard page only.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace cf::dev::emu {

enum class View : uint8_t { Local = 0, Dsmem = 1 };
inline constexpr uint32_t kMaxSlots = 16;

class SmemArena {
 public:
  static SmemArena& instance();  // created on first use, never destroyed

  size_t page() const { return page_; }
  uint32_t data_pages() const { return data_pages_; }
  uintptr_t lo() const { return lo_; }
  size_t span() const { return hi_ - lo_; }
  uint32_t span_shift() const { return span_shift_; }  // log2 of the bytes of one view

  // Sets where slot's smem starts for a CTA of `bytes` bytes (applies to both views).
  void configure(uint32_t slot, uint32_t bytes);
  uint8_t* base(uint32_t slot, View v) const { return data_start(slot, v) + base_offset_[slot]; }
  uint32_t base_offset(uint32_t slot) const { return base_offset_[slot]; }
  uint32_t first_page(uint32_t slot) const { return uint32_t(base_offset_[slot] / page_); }
  uint8_t* data_start(uint32_t slot, View v) const;

  bool contains(uintptr_t addr) const { return addr >= lo_ && addr < hi_; }
  struct Where {
    uint32_t slot;
    View view;
    int64_t offset;  // from the slot's smem base (negative: before it)
    int64_t page;    // data page index; -1: leading guard; >= data_pages(): trailing guard
  };
  Where locate(uintptr_t addr) const;  // requires contains(addr)

  // Sets the protection of data pages [page_lo, page_hi) of one view.
  void protect(uint32_t slot, View v, uint32_t page_lo, uint32_t page_hi, bool accessible) const;

 private:
  SmemArena();
  size_t page_ = 4096;
  uint32_t data_pages_ = 0;
  uint32_t span_shift_ = 0;
  uintptr_t lo_ = 0, hi_ = 0;
  uint32_t base_offset_[kMaxSlots] = {};
};

// Registry of DeviceBuffer allocations, read by the fault handler (no locks there).
struct GlobalBlock {
  uintptr_t data = 0;   // first byte handed out
  size_t bytes = 0;     // requested size
  uintptr_t guard = 0;  // the guard page's address
};
bool find_global_guard(uintptr_t addr, GlobalBlock* out);  // addr inside some allocation's guard page
bool find_global_block(uintptr_t addr, GlobalBlock* out);  // addr inside some allocation's data or guard

// The reserved region DeviceBuffers are carved from: [lo, lo + span). span is 0 when no region could be reserved.
struct GlobalRegion {
  uintptr_t lo = 0;
  size_t span = 0;
};
GlobalRegion global_region();

// The live allocations inside the region, sorted by address, and the scratch ranges declared on them (a launch takes
// this copy under the registry's lock, so allocations on other threads during a launch do not disturb it).
struct GlobalSnapshot {
  std::vector<GlobalBlock> blocks;
  std::vector<std::pair<uintptr_t, uintptr_t>> scratch;  // [begin, end), sorted, disjoint
};
void snapshot_globals(GlobalSnapshot* out);

}  // namespace cf::dev::emu
