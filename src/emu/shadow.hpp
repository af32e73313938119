// Shadow memory and the access checks (docs/emulator.md, "What it reports"). Every plain load and store of kernel code
// reaches on_access() through compiler instrumentation (access_hooks.cpp: the entry points of -fsanitize=thread, or
// AddressSanitizer's call-mode checks in sanitizer builds); the bulk/TMA copies reach it from async.cpp.
//
// Shadow state per 4 bytes (Word) of shared memory (per CTA slot, reached through either view) and of DeviceBuffer
// memory (in 64 KB chunks, made on first touch in a launch):
//   - the last write and the last read(s) as epochs (agent, clock) with the access's site (a code address, or an
//     API call for copies); concurrent reads from several agents go to a read set; accesses to parts of a word by
//     different agents split it into per-byte cells (4 cells), merged again by the next whole-word write
//   - init bits (one per byte: written in this launch, or defined before it: global memory not declared scratch)
//   - a generation: words of an earlier cluster or launch read as fresh, so nothing is cleared between launches
//   - in-flight: an async copy will write these bytes (issued, not landed)
// A conflicting pair (at least one write, different agents) neither of which happens before the other is a data race;
// a read whose write was a copy not ordered before it is an access to an in-flight copy (the copy may not have landed
// on the GPU, whether or not it has in the emulator); a read of bytes without init bits is an uninitialised read; a
// copy reading shared memory that a thread wrote without a fence_proxy_async between is an async-proxy race.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "hb.hpp"

namespace cf::dev::emu {

struct Thread;
struct Cta;
struct Copy;
struct MbarState;
struct Launch;

inline constexpr uint32_t kReadSet = 0xffffffffu;  // Cell::r_agent: r_clock indexes the space's read sets

struct Cell {
  uint32_t w_agent, w_clock;  // last write; clock 0: none
  uint32_t r_agent, r_clock;  // last read; clock 0: none
  uint32_t w_site, r_site;
};

struct Word {
  Cell cell;      // valid for all 4 bytes unless split (then cell.w_agent is the index of the 4 per-byte cells)
  uint32_t gen;   // the cluster (shared memory) or launch (global) that last touched it: older words are fresh
  uint8_t init;
  uint8_t flags;
  uint16_t unused;
};
inline constexpr uint8_t kInFlight = 1;
inline constexpr uint8_t kSplit = 2;

struct ReadEntry {
  uint32_t agent, clock, site;
};

// Read sets and split cells of one memory space (a CTA's shared memory, the launch's global memory).
class CellPool {
 public:
  uint32_t new_set();
  std::vector<ReadEntry>& set(uint32_t i) { return sets_[i]; }
  void free_set(uint32_t i);
  uint32_t new_split();
  Cell* split(uint32_t i) { return splits_[i].b; }
  void free_split(uint32_t i);
  void clear();

 private:
  struct Four {
    Cell b[4];
  };
  std::vector<std::vector<ReadEntry>> sets_;  // [0, used_sets_) handed out since clear()
  std::vector<uint32_t> free_sets_;
  uint32_t used_sets_ = 0;
  std::vector<Four> splits_;
  std::vector<uint32_t> free_splits_;
  uint32_t used_splits_ = 0;
};

// An uninitialised read not reported yet. Copying undefined bytes is not a use of them (padding moved with the data
// it pads): when the thread's next access stores the same number of bytes and they turn out to be the bytes it read,
// the destination inherits the undefined bytes instead of a report. Anything else first reports the read.
struct GlobalBlock;
struct UninitRead {
  uint8_t state = 0;  // 0: none; 1: read; 2: stored right after (at dst), to be compared with `bytes`
  uint8_t size = 0;
  uint8_t space = 0;
  uint16_t undefined = 0;  // per byte of the read
  uint32_t cta = 0;
  uint32_t site = 0;
  const GlobalBlock* block = nullptr;
  uint64_t first = 0;  // offset of the first undefined byte (the report)
  uintptr_t dst = 0;
  uint8_t bytes[16] = {};
};
void settle_uninit(Thread* t);  // at every API call and at the thread's exit

// Site encodings: 0 unknown; below kApiSite a code address (relative to an anchor in this binary); from kApiSite an
// index into the launch's table of API sites (copies).
inline constexpr uint32_t kApiSite = 0x80000000u;
uint32_t pc_site(const void* pc);

// ---- the launch's lifetime ------------------------------------------------------------------------------------------
bool access_checks_enabled();  // set_access_checks() / $CF_EMU_CHECKS
void checks_begin_launch(Launch& L);
void checks_end_launch(Launch& L);
void checks_begin_cluster(Launch& L);  // after setup_cluster: fresh shadow for the cluster's shared memory
void checks_cta_exit(Cta& c);          // accesses by peers and copies not ordered before the block's exit
void checks_off();                     // after a report that ends the launch

// ---- synchronisation (the caller then advances t's own clock where it released) -------------------------------
void release_to(Thread* t, SyncClock& s);  // s.release(t) and t->clock.own++
void fence_proxy(Thread* t);
void fence_memory(Thread* t);  // threadfence*, fence_cluster: acquire what atomics read, remember the release side
void atomic_sync(Thread* t, const void* p);  // an atomic RMW on p (after fences: release/acquire through p)

// ---- copies ---------------------------------------------------------------------------------------------------------
// At issue (after the argument checks): checks the destination's earlier accesses and the source's writes, marks the
// destination in flight (written by the barrier's async unit at the phase it will complete) and the source read.
void checks_copy_issue(Thread* t, Copy& cp, MbarState& m);
void checks_copy_land(const Copy& cp, const MbarState& m);  // clears in-flight

// Resolves the code addresses embedded in a report message (symbolised at the end of the launch, off the fibers).
std::string symbolise_sites(const std::string& message);

// ---- the instrumentation entry point (access_hooks.cpp) ---------------------------------------------------------
// What every instrumented access reads first: most accesses (host code, the fiber's stack, kernel parameters) are
// neither shared nor DeviceBuffer memory and return after two compares.
struct HookState {
  uintptr_t arena_lo = 0, arena_span = 0;    // shared-memory windows
  uintptr_t global_lo = 0, global_span = 0;  // the DeviceBuffer region
  uint32_t span_shift = 0;
  bool on = false;  // a launch with checks is running and has not failed for good
};
extern HookState g_hook;
extern __thread Thread* g_current __attribute__((tls_model("initial-exec")));
void checked_access(Thread* t, uintptr_t a, size_t bytes, bool write, const void* pc, bool smem);

inline void on_access(const void* p, size_t bytes, bool write, const void* pc) {
  Thread* t = g_current;
  if (t == nullptr || !g_hook.on) return;
  const auto a = reinterpret_cast<uintptr_t>(p);
  const bool smem = a - g_hook.arena_lo < g_hook.arena_span;
  if (!smem && a - g_hook.global_lo >= g_hook.global_span) return;
  checked_access(t, a, bytes, write, pc, smem);
}

}  // namespace cf::dev::emu
