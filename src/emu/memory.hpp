// Memory the emulator hands to kernels, laid out so that bad accesses fault (and the fault handler reports them):
//
// Shared memory: one window per CTA slot of a cluster (16 slots). Each slot's bytes live in a memfd mapped twice:
// the Local view (what dynamic_smem() returns to the CTA's own threads) and the Dsmem view (what map_shared_rank()
// returns to peers). Each view is [guard page][data pages][guard page]; a CTA's smem ends exactly at the trailing
// guard page (start = end - round_up(size, 128)), so the first byte past the end faults. The two views get their
// own page protections: the scheduler closes a peer's Dsmem view until the cluster barrier that guarantees the
// peer started, after the peer exited, and arms it page by page to observe accesses; in-flight copy destinations
// are closed in both views.
//
// Global memory (DeviceBuffer): each allocation ends right before a guard page.
#pragma once
#include <cstddef>
#include <cstdint>

namespace cf::dev::emu {

enum class View : uint8_t { Local = 0, Dsmem = 1 };
inline constexpr uint32_t kMaxSlots = 16;

class SmemArena {
 public:
  static SmemArena& instance();  // created on first use, never destroyed

  size_t page() const { return page_; }
  uint32_t data_pages() const { return data_pages_; }

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
    int64_t page;    // data page index; -1: leading guard; data_pages(): trailing guard
  };
  Where locate(uintptr_t addr) const;  // requires contains(addr)

  // Sets the protection of data pages [page_lo, page_hi) of one view.
  void protect(uint32_t slot, View v, uint32_t page_lo, uint32_t page_hi, bool accessible) const;

 private:
  SmemArena();
  size_t page_ = 4096;
  uint32_t data_pages_ = 0;
  size_t view_span_ = 0;  // bytes per view: guard + data + guard
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

}  // namespace cf::dev::emu
