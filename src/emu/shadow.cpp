// The access checks: shadow memory, the per-access algorithm (FastTrack-style epochs with read sets and per-byte
// splitting), copies, the exit rule, the atomics model. See shadow.hpp.
#include "shadow.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "emulator.hpp"

namespace cf::dev::emu {

HookState g_hook;

namespace {


constexpr uint32_t kChunkShift = 12;  // global shadow: 4 KB of memory per chunk, made on first touch
constexpr uint32_t kChunkWords = (1u << kChunkShift) / 4;
constexpr uint32_t kTouchShift = 8;   // smem: blocks of 256 bytes noted when a peer thread touches them

// ---- shadow storage ---------------------------------------------------------------------------------------------
void* map_zeroed(size_t bytes) {
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) throw std::bad_alloc();
  return mem;
}

struct SmemShadow {
  Word* words = nullptr;  // kMaxSmemPerBlock / 4
  uint32_t gen = 0;       // the cluster using the slot
  CellPool pool;
  std::vector<uint8_t> touched;  // per 256-byte block: accessed by a thread of another block
};
SmemShadow g_smem[kMaxSlots];
uint32_t g_smem_gen = 0;

Word** g_chunks = nullptr;  // over the DeviceBuffer region, one pointer per 4 KB (address space, touched sparsely)
uint32_t g_global_gen = 0;
CellPool g_global_pool;

// A fresh word of shared memory (undefined) or of a DeviceBuffer (defined unless declared scratch).
inline Word& smem_word(SmemShadow& sh, uint64_t i) {
  Word& w = sh.words[i];
  if (w.gen != sh.gen) w = Word{{}, sh.gen, 0, 0, 0};
  return w;
}

uint8_t scratch_bytes(uintptr_t word_addr) {  // bytes of the word inside declared scratch ranges
  const auto& ranges = g_launch->globals.scratch;
  if (ranges.empty()) return 0;
  uint8_t mask = 0;
  for (int k = 0; k < 4; ++k) {
    const uintptr_t b = word_addr + uintptr_t(k);
    auto r = std::upper_bound(ranges.begin(), ranges.end(), b,
                              [](uintptr_t a, const std::pair<uintptr_t, uintptr_t>& x) { return a < x.first; });
    if (r != ranges.begin() && b < (r - 1)->second) mask = uint8_t(mask | (1u << k));
  }
  return mask;
}

inline Word& global_word(uintptr_t a) {  // a: inside the region
  const uintptr_t rel = a - g_hook.global_lo;
  Word*& chunk = g_chunks[rel >> kChunkShift];
  if (chunk == nullptr) chunk = static_cast<Word*>(map_zeroed(kChunkWords * sizeof(Word)));
  Word& w = chunk[(rel & ((uintptr_t(1) << kChunkShift) - 1)) >> 2];
  if (w.gen != g_global_gen) w = Word{{}, g_global_gen, uint8_t(0xfu & ~scratch_bytes(a & ~uintptr_t(3))), 0, 0};
  return w;
}

// ---- sites ------------------------------------------------------------------------------------------------------
const uintptr_t g_anchor = reinterpret_cast<uintptr_t>(&checked_access);
constexpr int64_t kPcRange = 0x40000000;

}  // namespace

uint32_t pc_site(const void* pc) {
  const int64_t delta = int64_t(reinterpret_cast<uintptr_t>(pc)) - int64_t(g_anchor);
  if (delta <= -kPcRange || delta >= kPcRange) return 0;
  return uint32_t(delta + kPcRange);
}

namespace {

uintptr_t site_pc(uint32_t site) { return uintptr_t(int64_t(g_anchor) + int64_t(site) - kPcRange); }

// ---- CellPool -------------------------------------------------------------------------------------------------------
}  // namespace

uint32_t CellPool::new_set() {
  if (!free_sets_.empty()) {
    const uint32_t i = free_sets_.back();
    free_sets_.pop_back();
    sets_[i].clear();
    return i;
  }
  if (used_sets_ == sets_.size()) sets_.emplace_back();
  sets_[used_sets_].clear();
  return used_sets_++;
}
void CellPool::free_set(uint32_t i) { free_sets_.push_back(i); }
uint32_t CellPool::new_split() {
  if (!free_splits_.empty()) {
    const uint32_t i = free_splits_.back();
    free_splits_.pop_back();
    return i;
  }
  if (used_splits_ == splits_.size()) splits_.emplace_back();
  return used_splits_++;
}
void CellPool::free_split(uint32_t i) { free_splits_.push_back(i); }
void CellPool::clear() {  // everything free again, the vectors' memory kept
  used_sets_ = 0;
  used_splits_ = 0;
  free_sets_.clear();
  free_splits_.clear();
}

namespace {

// ---- the access being checked -----------------------------------------------------------------------------------
enum class Space : uint8_t { Smem, Dsmem, Global };

struct Access {
  Thread* t;
  uint32_t me;  // agent in this space
  Clock own;
  uint32_t site;
  bool write;
  Space space;
  uint32_t cta;                       // shared memory: the owner's rank
  const GlobalBlock* block;           // global: the buffer
  uintptr_t base;                     // address of byte 0 of the space (for offsets)
  CellPool* pool;
  uint32_t threads;                   // cluster threads (agents at or above: async units)
  bool copy = false;                  // the access is a copy's, at its issue (site: the copy)
  struct Undefined {                  // a read's undefined bytes
    uint64_t start = 0;               // offset of the access
    uint16_t mask = 0;                // bytes [start, start + 16)
    bool beyond = false;              // undefined bytes past those
    uint64_t first = ~0ull;
  }* undefined = nullptr;
};

// The cell holds no read, or only reads by `me`.
bool reads_only_by(const Cell& c, uint32_t me) { return c.r_agent != kReadSet && (c.r_clock == 0 || c.r_agent == me); }

constexpr size_t kPruneReadSet = 8;  // a read set this large drops the reads ordered before a new one

[[gnu::always_inline]] inline bool hb(const Access& x, uint32_t agent, Clock c) {
  if (c == 0 || agent == x.me) return true;
  if (x.space != Space::Global) return x.t->clock.at(agent) >= c;
  const uint32_t cluster = agent >> 16, tid = agent & 0xffffu;
  if (cluster == g_launch->cluster.serial) return x.t->clock.at(tid) >= c;
  return x.t->clock.foreign && x.t->clock.foreign->at(cluster, tid) >= c;
}

bool is_async(const Access& x, uint32_t agent) { return x.space != Space::Global && agent >= x.threads; }

std::string site_text(uint32_t site) {
  if (site == 0) return "?";
  if (site >= kApiSite) {
    const SiteInfo& s = g_launch->sites[site - kApiSite];
    return where(s.loc);
  }
  return "\x01" + hex(site_pc(site)) + "\x02";  // resolved by symbolise_sites()
}

std::string space_text(const Access& x) {
  switch (x.space) {
    case Space::Smem: return "this block's shared memory";
    case Space::Dsmem: return "block rank " + std::to_string(x.cta) + "'s shared memory (DSMEM)";
    case Space::Global: return "a " + std::to_string(x.block->bytes) + "-byte DeviceBuffer";
  }
  return "memory";
}

std::string agent_text(const Access& x, uint32_t agent) {
  if (x.space == Space::Global) return describe_agent(agent >> 16, agent & 0xffffu);
  return describe(&g_launch->cluster.threads[agent]);
}

const SiteInfo& api_site(uint32_t site) { return g_launch->sites[site - kApiSite]; }

std::string copy_text(const SiteInfo& s) {
  return std::string(s.op) + " issued by " + describe_agent(s.cluster, s.thread) + " at " + where(s.loc);
}

std::string range_text(uint32_t off, uint32_t bytes) {
  return "[" + std::to_string(off) + ", " + std::to_string(off + bytes) + ")";
}

// A conflict between the access x (at byte offset `off`) and an earlier access of `agent`.
void conflict(const Access& x, uint64_t off, uint32_t agent, uint32_t site, bool prev_write) {
  const bool async = is_async(x, agent);
  const EmuErrorKind kind =
      async || (x.copy && x.write) ? EmuErrorKind::InFlightAccess : EmuErrorKind::DataRace;
  if (!note(kind, x.site, site)) return;
  const char* rw = x.write ? "write" : "read";
  std::string msg = describe(x.t) + ": " + rw + " of " + space_text(x) + " at offset " + std::to_string(off) +
                    " at " + site_text(x.site);
  if (x.copy) {
    const SiteInfo& s = api_site(x.site);
    msg = describe(x.t) + ": the " + s.op + " issued at " + where(s.loc) + (x.write ? " overwrites " : " reads ") +
          space_text(x) + " at offset " + std::to_string(off) + ", which " + agent_text(x, agent) + " " +
          (prev_write ? "wrote" : "read") + " at " + site_text(site) + " without that access being ordered before "
          "the copy's issue" +
          (x.write ? " (a buffer refilled before its consumers are done: wait on its \"empty\" mbarrier first)"
                   : " (a missing barrier between writing the data and issuing the copy)");
  } else if (async && site >= kApiSite) {
    const SiteInfo& s = api_site(site);
    if (prev_write) {
      msg += ", inside the destination " + range_text(s.off, s.bytes) + " of an in-flight " + copy_text(s) +
             " that this thread is not ordered after: wait on its mbarrier first (and do not reuse a buffer before "
             "its consumers are done)";
    } else {
      msg += ": these bytes are the source of the " + copy_text(s) +
             ", which was modified before the copy completed as far as this thread knows (the sender may reuse it "
             "only after the receiver signals that its mbarrier completed)";
    }
  } else {
    msg += " races with the " + std::string(prev_write ? "write" : "read") + " by " + agent_text(x, agent) + " at " +
           site_text(site) + ": no barrier, mbarrier wait, cluster barrier or warp collective orders the two";
  }
  report_first(kind, msg);
}

void report_uninit(Thread* t, const UninitRead& u) {
  if (!note(EmuErrorKind::UninitializedRead, u.site, 0)) return;
  Access x{};
  x.t = t;
  x.space = Space(u.space);
  x.cta = u.cta;
  x.block = u.block;
  const std::string what = x.space == Space::Global
                               ? "it is declared scratch and this launch has not written it"
                               : "nothing wrote it in this launch (shared memory starts undefined)";
  report_first(EmuErrorKind::UninitializedRead, describe(t) + ": read of " + space_text(x) + " at " +
                                                    site_text(u.site) + ": byte " + std::to_string(u.first) +
                                                    " is uninitialised: " + what);
}

// A read found undefined bytes: reported now, or (up to 16 bytes) held to see whether the thread only copies them.
void pend_uninit(const Access& x, uintptr_t a, size_t bytes, const Access::Undefined& undefined) {
  UninitRead& u = x.t->uninit;
  u = UninitRead{};
  u.size = uint8_t(bytes);
  u.space = uint8_t(x.space);
  u.undefined = undefined.mask;
  u.cta = x.cta;
  u.site = x.site;
  u.block = x.block;
  u.first = undefined.first;
  if (bytes > 16 || undefined.beyond) {
    report_uninit(x.t, u);
    return;
  }
  u.state = 1;
  std::memcpy(u.bytes, reinterpret_cast<const void*>(a), bytes);
}

// ---- one cell -------------------------------------------------------------------------------------------------------
void read_cell(const Access& x, Cell& c, uint64_t off) {
  if (c.r_agent == x.me && c.r_clock == x.own) return;
  if (!hb(x, c.w_agent, c.w_clock)) conflict(x, off, c.w_agent, c.w_site, true);
  if (c.r_agent == kReadSet) {  // sorted by agent
    std::vector<ReadEntry>& set = x.pool->set(c.r_clock);
    auto at = std::lower_bound(set.begin(), set.end(), x.me,
                               [](const ReadEntry& e, uint32_t agent) { return e.agent < agent; });
    if (at != set.end() && at->agent == x.me) {
      at->clock = x.own;
      at->site = x.site;
      return;
    }
    if (set.size() >= kPruneReadSet) {  // drop the reads ordered before this one (this read stands for them)
      std::erase_if(set, [&](const ReadEntry& e) { return hb(x, e.agent, e.clock); });
      if (set.empty()) {
        x.pool->free_set(c.r_clock);
        c.r_agent = x.me;
        c.r_clock = x.own;
        c.r_site = x.site;
        return;
      }
      at = std::lower_bound(set.begin(), set.end(), x.me,
                            [](const ReadEntry& e, uint32_t agent) { return e.agent < agent; });
    }
    set.insert(at, {x.me, x.own, x.site});
    return;
  }
  if (c.r_clock == 0 || c.r_agent == x.me || hb(x, c.r_agent, c.r_clock)) {
    c.r_agent = x.me;
    c.r_clock = x.own;
    c.r_site = x.site;
    return;
  }
  const uint32_t i = x.pool->new_set();
  const ReadEntry earlier{c.r_agent, c.r_clock, c.r_site}, now{x.me, x.own, x.site};
  if (earlier.agent < now.agent) {
    x.pool->set(i).assign({earlier, now});
  } else {
    x.pool->set(i).assign({now, earlier});
  }
  c.r_agent = kReadSet;
  c.r_clock = i;
}

void write_cell(const Access& x, Cell& c, uint64_t off) {
  if (c.w_agent == x.me && c.w_clock == x.own && reads_only_by(c, x.me)) return;
  if (!hb(x, c.w_agent, c.w_clock)) conflict(x, off, c.w_agent, c.w_site, true);
  if (c.r_agent == kReadSet) {
    for (const ReadEntry& e : x.pool->set(c.r_clock))
      if (!hb(x, e.agent, e.clock)) conflict(x, off, e.agent, e.site, false);
    x.pool->free_set(c.r_clock);
  } else if (!hb(x, c.r_agent, c.r_clock)) {
    conflict(x, off, c.r_agent, c.r_site, false);
  }
  c = Cell{x.me, x.own, 0, 0, x.site, 0};
}

// ---- one word ---------------------------------------------------------------------------------------------------
Cell* split_word(CellPool& pool, Word& w) {
  const uint32_t i = pool.new_split();
  Cell* b = pool.split(i);
  for (int k = 0; k < 4; ++k) {
    b[k] = w.cell;
    if (w.cell.r_agent == kReadSet) {
      const uint32_t s = pool.new_set();
      pool.set(s) = pool.set(w.cell.r_clock);
      b[k].r_clock = s;
    }
  }
  if (w.cell.r_agent == kReadSet) pool.free_set(w.cell.r_clock);
  w.cell.w_agent = i;
  w.flags |= kSplit;
  return b;
}

void free_cell(CellPool& pool, const Cell& c) {
  if (c.r_agent == kReadSet) pool.free_set(c.r_clock);
}

// A part of a word accessed without changing its history (an access this thread already made in this epoch).
bool partial_is_noop(const Access& x, const Cell& c) {
  if (x.write) return c.w_agent == x.me && c.w_clock == x.own && reads_only_by(c, x.me);
  return c.r_agent == x.me && c.r_clock == x.own;
}

// Bytes `mask` of the word at byte offset `off` of its space.
void access_word(const Access& x, Word& w, uint32_t mask, uint64_t off) {
  if ((w.flags & kInFlight) != 0) {
    // the writer is the copy (its async unit): the cell already says so; make sure it is reported even when this
    // thread is ordered after the copy's completion phase but the copy has not landed (a wrong phase count)
    if (hb(x, w.cell.w_agent, w.cell.w_clock)) conflict(x, off, w.cell.w_agent, w.cell.w_site, true);
  }
  if (!x.write && (w.init & mask) != mask && x.undefined != nullptr) {
    for (uint32_t k = 0; k < 4; ++k) {
      if ((((~w.init & mask) >> k) & 1u) == 0) continue;
      const uint64_t rel = off + k - x.undefined->start;
      if (rel < 16) {
        x.undefined->mask = uint16_t(x.undefined->mask | (1u << rel));
      } else {
        x.undefined->beyond = true;
      }
      x.undefined->first = std::min(x.undefined->first, off + k);
    }
  }
  if ((w.flags & kSplit) == 0) {
    if (mask == 0xfu || partial_is_noop(x, w.cell)) {
      if (x.write) {
        write_cell(x, w.cell, off);
        w.init |= uint8_t(mask);
      } else {
        read_cell(x, w.cell, off);
      }
      return;
    }
    split_word(*x.pool, w);
  }
  const uint32_t split = w.cell.w_agent;
  Cell* b = x.pool->split(split);
  for (uint32_t k = 0; k < 4; ++k) {
    if (((mask >> k) & 1u) == 0) continue;
    if (x.write) {
      write_cell(x, b[k], off + k);
    } else {
      read_cell(x, b[k], off + k);
    }
  }
  if (x.write) {
    w.init |= uint8_t(mask);
    if (mask == 0xfu) {  // the four cells are the same write again: back to one cell
      for (int k = 0; k < 4; ++k) free_cell(*x.pool, b[k]);
      w.cell = b[0];
      x.pool->free_split(split);
      w.flags &= uint8_t(~kSplit);
    }
  }
}

// Bytes [off, off + bytes) of a block's shared memory.
void access_range(const Access& x, SmemShadow& sh, uint64_t off, uint32_t bytes) {
  const uint64_t end = off + bytes;
  for (uint64_t w = off >> 2; w < (end + 3) >> 2; ++w) {
    const uint64_t lo = std::max(off, w * 4), hi = std::min(end, w * 4 + 4);
    const uint32_t mask = ((1u << (hi - lo)) - 1u) << (lo - w * 4);
    access_word(x, smem_word(sh, w), mask, w * 4);
  }
}

// ---- shared memory ------------------------------------------------------------------------------------------------
void bounds_smem(Thread* t, const Cta& c, bool dsmem, int64_t off, size_t bytes, bool write, uint32_t site) {
  if (!note(dsmem ? EmuErrorKind::DsmemInvalid : EmuErrorKind::SmemOutOfBounds, site, 0)) return;
  const std::string whose = dsmem ? "block rank " + std::to_string(c.rank) + "'s shared memory (DSMEM)"
                                  : "this block's shared memory";
  const std::string pos =
      off < 0 ? std::to_string(-off) + " bytes before the start"
              : "offset " + std::to_string(std::max<int64_t>(off, c.smem_bytes)) + ", " +
                    std::to_string(std::max<int64_t>(off - int64_t(c.smem_bytes), 0)) + " bytes past the end";
  report_first(dsmem ? EmuErrorKind::DsmemInvalid : EmuErrorKind::SmemOutOfBounds,
               describe(t) + ": " + (write ? "write" : "read") + " out of bounds of " + whose + " (" +
                   std::to_string(c.smem_bytes) + " bytes): " + pos + " (a " + std::to_string(bytes) +
                   "-byte access at " + site_text(site) + ")");
}

void smem_access(Thread* t, uintptr_t a, size_t bytes, bool write, const void* pc) {
  const uintptr_t rel = a - g_hook.arena_lo;
  const uint32_t span_index = uint32_t(rel >> g_hook.span_shift);
  const uint32_t slot = span_index >> 1;
  const bool dsmem = (span_index & 1u) != 0;
  Cluster& cl = g_launch->cluster;
  if (slot >= cl.size) return;  // no block there: the page is closed, the fault handler reports it
  Cta& c = cl.ctas[slot];
  if (c.exited) return;  // closed as well
  const uintptr_t base = reinterpret_cast<uintptr_t>(dsmem ? c.dsmem : c.smem);
  const int64_t off = int64_t(a) - int64_t(base);
  const uint32_t site = pc_site(pc);
  if (off < 0 || off + int64_t(bytes) > int64_t(c.smem_bytes)) {
    bounds_smem(t, c, dsmem, off, bytes, write, site);
    if (off < 0 || off >= int64_t(c.smem_bytes)) return;
    bytes = size_t(int64_t(c.smem_bytes) - off);
  }
  SmemShadow& sh = g_smem[slot];
  if (dsmem) {
    if (t->clock.at(cl.cbar_agent) == 0 && note(EmuErrorKind::DsmemInvalid, site, 0))
      report_first(EmuErrorKind::DsmemInvalid,
                   describe(t) + ": " + (write ? "write" : "read") + " of block rank " + std::to_string(c.rank) +
                       "'s shared memory (DSMEM) at offset " + std::to_string(off) + " at " + site_text(site) +
                       " before any cluster barrier completed as far as this thread knows, so the peer may not have "
                       "started; call cluster_sync() (or cluster_arrive() + cluster_wait()) first");
    for (uint64_t b = uint64_t(off) >> kTouchShift; b <= (uint64_t(off) + bytes - 1) >> kTouchShift; ++b)
      sh.touched[b] = 1;
  }
  ++g_launch->stats.checked_accesses;
  Access::Undefined undefined{uint64_t(off)};
  Access x{t, t->clock.tid, t->clock.own, site, write, dsmem ? Space::Dsmem : Space::Smem, c.rank, nullptr,
           base, &sh.pool, uint32_t(cl.threads.size())};
  x.undefined = &undefined;
  access_range(x, sh, uint64_t(off), uint32_t(bytes));
  if (undefined.mask != 0 || undefined.beyond) pend_uninit(x, a, bytes, undefined);
}

// ---- global memory --------------------------------------------------------------------------------------------------
const GlobalBlock* find_block(uintptr_t a) {
  const std::vector<GlobalBlock>& blocks = g_launch->globals.blocks;
  auto it = std::upper_bound(blocks.begin(), blocks.end(), a,
                             [](uintptr_t v, const GlobalBlock& b) { return v < b.data; });
  if (it == blocks.begin()) return nullptr;
  return &*(it - 1);
}

void bounds_global(Thread* t, const GlobalBlock* b, uintptr_t a, size_t bytes, bool write, uint32_t site) {
  if (!note(EmuErrorKind::GlobalOutOfBounds, site, 0)) return;
  std::string what;
  if (b != nullptr && a < b->data + b->bytes + 4096) {
    what = std::to_string(std::max(a, b->data + b->bytes) - b->data - b->bytes) + " bytes past the end of a " +
           std::to_string(b->bytes) + "-byte DeviceBuffer";
  } else {
    what = "at " + hex(a) + ", outside every DeviceBuffer";
  }
  report_first(EmuErrorKind::GlobalOutOfBounds, describe(t) + ": global-memory " + (write ? "write" : "read") + " " +
                                                    what + " (a " + std::to_string(bytes) + "-byte access at " +
                                                    site_text(site) + ")");
}

void global_access(Thread* t, uintptr_t a, size_t bytes, bool write, const void* pc) {
  if (g_launch->cluster.serial > 0xffffu) return;  // agents name 2^16 clusters: later ones go unchecked
  const GlobalBlock* b = find_block(a);
  const uint32_t site = pc_site(pc);
  if (b == nullptr || a + bytes > b->data + b->bytes) {
    bounds_global(t, b, a, bytes, write, site);
    if (b == nullptr || a >= b->data + b->bytes) return;
    bytes = size_t(b->data + b->bytes - a);
  }
  ++g_launch->stats.checked_accesses;
  const uint32_t me = (g_launch->cluster.serial << 16) | t->clock.tid;
  Access::Undefined undefined{a - b->data};
  Access x{t, me, t->clock.own, site, write, Space::Global, 0, b, b->data, &g_global_pool,
           uint32_t(g_launch->cluster.threads.size())};
  x.undefined = &undefined;
  // word by word: a word's chunk comes from its address in the region
  const uintptr_t end = a + bytes;
  for (uintptr_t w = a & ~uintptr_t(3); w < end; w += 4) {
    const uintptr_t lo = std::max(a, w), hi = std::min(end, w + 4);
    const uint32_t mask = ((1u << (hi - lo)) - 1u) << (lo - w);
    access_word(x, global_word(w), mask, w - b->data);
  }
  if (undefined.mask != 0 || undefined.beyond) pend_uninit(x, a, bytes, undefined);
}

// The shadow word of byte a (shared or DeviceBuffer memory in bounds), else null.
Word* shadow_word(uintptr_t a) {
  if (a - g_hook.arena_lo < g_hook.arena_span) {
    const uint32_t span_index = uint32_t((a - g_hook.arena_lo) >> g_hook.span_shift);
    Cluster& cl = g_launch->cluster;
    const uint32_t slot = span_index >> 1;
    if (slot >= cl.size || cl.ctas[slot].exited) return nullptr;
    const Cta& c = cl.ctas[slot];
    const int64_t off = int64_t(a) - int64_t(reinterpret_cast<uintptr_t>((span_index & 1u) ? c.dsmem : c.smem));
    if (off < 0 || off >= int64_t(c.smem_bytes)) return nullptr;
    return &smem_word(g_smem[slot], uint64_t(off) >> 2);
  }
  if (a - g_hook.global_lo < g_hook.global_span) {
    const GlobalBlock* b = find_block(a);
    if (b == nullptr || a >= b->data + b->bytes) return nullptr;
    return &global_word(a);
  }
  return nullptr;
}

// The store after an uninitialised read: a copy of the bytes read (the destination inherits their undefined bytes)
// or a use of them (reported).
void finish_copy(Thread* t) {
  UninitRead& u = t->uninit;
  u.state = 0;
  const bool in_bounds = shadow_word(u.dst) != nullptr && shadow_word(u.dst + u.size - 1) != nullptr;
  // only into shared memory or declared scratch: anything else is the kernel's output (the bytes leave it)
  bool kept_inside = u.dst - g_hook.arena_lo < g_hook.arena_span;
  if (!kept_inside && in_bounds) {
    kept_inside = true;
    for (uint32_t i = 0; i < u.size && kept_inside; ++i) {
      const uintptr_t b = u.dst + i;
      kept_inside = ((scratch_bytes(b & ~uintptr_t(3)) >> (b & 3u)) & 1u) != 0;
    }
  }
  if (!in_bounds || !kept_inside || std::memcmp(reinterpret_cast<const void*>(u.dst), u.bytes, u.size) != 0) {
    report_uninit(t, u);
    return;
  }
  for (uint32_t i = 0; i < u.size; ++i) {
    if (((u.undefined >> i) & 1u) == 0) continue;
    Word* w = shadow_word(u.dst + i);
    w->init = uint8_t(w->init & ~(1u << ((u.dst + i) & 3u)));
  }
}

}  // namespace

void settle_uninit(Thread* t) {
  if (t->uninit.state == 0) return;
  if (t->uninit.state == 2) {
    finish_copy(t);
  } else {
    t->uninit.state = 0;
    if (g_hook.on) report_uninit(t, t->uninit);
  }
}

// ---- the instrumentation entry point ------------------------------------------------------------------------------
void checked_access(Thread* t, uintptr_t a, size_t bytes, bool write, const void* pc, bool smem) {
  if (bytes == 0) return;
  bool copy_store = false;
  if (t->uninit.state == 1 && write && bytes == t->uninit.size) {
    copy_store = true;  // decided after the store, at the thread's next access or API call
  } else if (t->uninit.state != 0) {
    settle_uninit(t);
  }
  if (smem) {
    smem_access(t, a, bytes, write, pc);
  } else {
    global_access(t, a, bytes, write, pc);
  }
  if (copy_store) {
    t->uninit.state = 2;
    t->uninit.dst = a;
  }
}

// ---- launch lifetime ----------------------------------------------------------------------------------------------
namespace {
std::atomic<int> g_checks_setting{-1};  // -1: not set, use $CF_EMU_CHECKS (default on)
}  // namespace

void set_access_checks(bool on) { g_checks_setting.store(on ? 1 : 0); }

bool access_checks_enabled() {
  const int set = g_checks_setting.load();
  if (set >= 0) return set != 0;
  const char* env = std::getenv("CF_EMU_CHECKS");
  return env == nullptr || (std::strcmp(env, "0") != 0 && std::strcmp(env, "off") != 0);
}

void checks_begin_launch(Launch& L) {
  static uint64_t generations = 0;
  L.generation = ++generations;
  SmemArena& arena = SmemArena::instance();
  g_hook.arena_lo = arena.lo();
  g_hook.arena_span = arena.span();
  g_hook.span_shift = arena.span_shift();
  const GlobalRegion region = global_region();
  g_hook.global_lo = region.lo;
  g_hook.global_span = region.span;
  if (g_chunks == nullptr && region.span > 0)
    g_chunks = static_cast<Word**>(map_zeroed((region.span >> kChunkShift) * sizeof(Word*)));
  if (g_smem[0].words == nullptr) {
    for (SmemShadow& s : g_smem) {
      s.words = static_cast<Word*>(map_zeroed(kMaxSmemPerBlock / 4 * sizeof(Word)));
      s.touched.assign((kMaxSmemPerBlock >> kTouchShift) + 1, 0);
    }
  }
  snapshot_globals(&L.globals);
  ++g_global_gen;
  g_global_pool.clear();
  g_hook.on = L.checks;
}

void checks_end_launch(Launch& /*L*/) { g_hook.on = false; }

void checks_begin_cluster(Launch& L) {
  Cluster& cl = L.cluster;
  cl.agents = uint32_t(cl.threads.size());
  cl.cbar_agent = cl.agents++;
  ++g_smem_gen;
  for (uint32_t r = 0; r < cl.size; ++r) {
    SmemShadow& s = g_smem[r];
    s.gen = g_smem_gen;  // every word of the slot is fresh (undefined, no accesses)
    std::fill(s.touched.begin(), s.touched.end(), uint8_t(0));
    s.pool.clear();
  }
  for (Thread& t : cl.threads) t.clock.reset(t.index);
  if (L.checks && !L.failed) g_hook.on = true;
}

void checks_off() { g_hook.on = false; }

// ---- synchronisation --------------------------------------------------------------------------------------------
void release_to(Thread* t, SyncClock& s) {
  s.release(t->clock);
  ++t->clock.own;
}

void fence_proxy(Thread* t) {
  ThreadClock& c = t->clock;
  c.proxy_fences.push_back(c.own);
  c.proxy_base = c.base;
  c.proxy_own = c.own;
  ++c.own;
}

namespace {
// t's knowledge at its last release fence, cluster by cluster
ForeignRef release_side(const ThreadClock& c) {
  auto* f = new Foreign{1, {}};
  f->entries.emplace_back(g_launch->cluster.serial, vc_with(c.rel_base, c.tid, c.rel_own));
  ForeignRef own(f);
  return foreign_join(own, c.rel_foreign);
}
}  // namespace

void fence_memory(Thread* t) {
  ThreadClock& c = t->clock;
  if (c.acquired) {  // acquire: what the atomics since the last fence read
    const uint32_t serial = g_launch->cluster.serial;
    auto* rest = new Foreign{1, {}};
    for (const auto& [cluster, vc] : c.acquired->entries) {
      if (cluster == serial)
        c.base = vc_join(c.base, vc);
      else
        rest->entries.emplace_back(cluster, vc);
    }
    ForeignRef others(rest);
    if (!others->entries.empty()) c.foreign = foreign_join(c.foreign, others);
    c.acquired.reset();
  }
  c.has_release = true;  // release: remembered cheaply, built at the next atomic
  c.rel_base = c.base;
  c.rel_own = c.own;
  c.rel_foreign = c.foreign;
  ++c.own;
}

void atomic_sync(Thread* t, const void* p) {
  if (!g_hook.on) return;
  ThreadClock& c = t->clock;
  ForeignRef& loc = g_launch->atomics[reinterpret_cast<uintptr_t>(p)];
  if (loc) c.acquired = foreign_join(c.acquired, loc);
  if (c.has_release) loc = foreign_join(loc, release_side(c));
}

// ---- copies ---------------------------------------------------------------------------------------------------------
namespace {

void note_unconfirmed(Cta& c, uint32_t agent, Clock clock, uint32_t site, bool source) {
  for (Unconfirmed& u : c.unconfirmed) {
    if (u.agent == agent && u.source == source) {
      if (clock >= u.clock) u = {agent, clock, site, source};
      return;
    }
  }
  c.unconfirmed.push_back({agent, clock, site, source});
}

// The issuing thread's view of one word of the copy's destination (earlier accesses must happen before the issue).
void issue_dst_word(const Access& x, Word& w, uint64_t off, uint8_t init) {
  auto check = [&](const Cell& cell) {
    if (!hb(x, cell.w_agent, cell.w_clock)) conflict(x, off, cell.w_agent, cell.w_site, true);
    if (cell.r_agent == kReadSet) {
      for (const ReadEntry& e : x.pool->set(cell.r_clock))
        if (!hb(x, e.agent, e.clock)) conflict(x, off, e.agent, e.site, false);
    } else if (!hb(x, cell.r_agent, cell.r_clock)) {
      conflict(x, off, cell.r_agent, cell.r_site, false);
    }
  };
  if ((w.flags & kSplit) != 0) {
    const uint32_t split = w.cell.w_agent;
    Cell* b = x.pool->split(split);
    for (int k = 0; k < 4; ++k) {
      check(b[k]);
      free_cell(*x.pool, b[k]);
    }
    x.pool->free_split(split);
  } else {
    check(w.cell);
    free_cell(*x.pool, w.cell);
  }
  w.cell = Cell{x.me, x.own, 0, 0, x.site, 0};
  w.flags = kInFlight;
  w.init = init;
}

// Records a read in a cell regardless of the order (the copy's read, which no access needs checking against).
void add_read(CellPool& pool, Cell& cell, const ReadEntry& r) {
  if (cell.r_agent == kReadSet) {
    std::vector<ReadEntry>& set = pool.set(cell.r_clock);
    auto at = std::lower_bound(set.begin(), set.end(), r.agent,
                               [](const ReadEntry& e, uint32_t agent) { return e.agent < agent; });
    if (at != set.end() && at->agent == r.agent) {
      *at = r;
    } else {
      set.insert(at, r);
    }
  } else if (cell.r_clock == 0 || cell.r_agent == r.agent) {
    cell.r_agent = r.agent;
    cell.r_clock = r.clock;
    cell.r_site = r.site;
  } else {
    const uint32_t i = pool.new_set();
    const ReadEntry earlier{cell.r_agent, cell.r_clock, cell.r_site};
    if (earlier.agent < r.agent) {
      pool.set(i).assign({earlier, r});
    } else {
      pool.set(i).assign({r, earlier});
    }
    cell.r_agent = kReadSet;
    cell.r_clock = i;
  }
}

// A generic write (agent, clock) is published to the async proxy for a copy `issuer` issues now: a fence_proxy_async of
// the writer after the write that happens before the issue, or one of the issuer after which the write happened.
bool published(Thread* issuer, uint32_t agent, Clock clock) {
  const ThreadClock& ic = issuer->clock;
  if (agent == ic.tid ? clock <= ic.proxy_own : (ic.proxy_base && ic.proxy_base->at(agent) >= clock)) return true;
  const std::vector<Clock>& fences = g_launch->cluster.threads[agent].clock.proxy_fences;
  const auto f = std::lower_bound(fences.begin(), fences.end(), clock);
  return f != fences.end() && *f <= ic.at(agent);
}

// The source word of a DSMEM push, read by the copy: its writes must happen before the issue and, when a thread wrote
// it (generic proxy), before a fence_proxy_async that happens before the issue.
uint8_t issue_src_word(const Access& x, Word& w, uint64_t off, uint32_t reader, Clock clock) {
  auto check = [&](Cell& cell, uint64_t at) {
    if (!hb(x, cell.w_agent, cell.w_clock)) {
      conflict(x, at, cell.w_agent, cell.w_site, true);
    } else if (cell.w_clock != 0 && cell.w_agent < x.threads) {
      if (!published(x.t, cell.w_agent, cell.w_clock) && note(EmuErrorKind::AsyncProxy, x.site, cell.w_site))
        report_first(EmuErrorKind::AsyncProxy,
                     describe(x.t) + ": the " + api_site(x.site).op + " issued at " + where(api_site(x.site).loc) +
                         " reads this block's shared memory at offset " +
                         std::to_string(at) + ", which " + agent_text(x, cell.w_agent) + " wrote at " +
                         site_text(cell.w_site) + " through the generic proxy with no fence_proxy_async ordered "
                         "between that write and the copy (the copy may read stale bytes: fence after writing, then "
                         "synchronise, then issue)");
    }
    // the copy reads until its completion: a later write must be ordered after that
    add_read(*x.pool, cell, {reader, clock, x.site});
  };
  if ((w.flags & kSplit) != 0) {
    Cell* b = x.pool->split(w.cell.w_agent);
    for (int k = 0; k < 4; ++k) check(b[k], off + k);
  } else {
    check(w.cell, off);
  }
  return w.init;
}

}  // namespace

void checks_copy_issue(Thread* t, Copy& cp, MbarState& m) {
  Launch& L = *g_launch;
  Cluster& cl = L.cluster;
  static const char* const kNames[] = {"bulk_copy_g2s", "bulk_copy_s2peer", "tma_load_2d"};
  SiteInfo s;
  s.op = kNames[int(cp.kind)];
  s.loc = cp.loc;
  s.cluster = cl.serial;
  s.thread = cp.issuer;
  s.cta = cp.dst->rank;
  s.off = cp.dst_off;
  s.bytes = cp.bytes;
  L.sites.push_back(s);
  cp.site = kApiSite + uint32_t(L.sites.size() - 1);
  cp.agent = m.agent;
  cp.clock = Clock(m.phase + 1);
  if (!g_hook.on) return;
  const uint32_t threads = uint32_t(cl.threads.size());
  std::vector<uint8_t> init(cp.bytes / 4, 0xf);
  if (cp.kind == CopyKind::S2Peer) {
    Cta& src = *cp.src_cta;
    SmemShadow& sh = g_smem[src.rank];
    const Access x{t, t->clock.tid, t->clock.own, cp.site, false, Space::Smem, src.rank, nullptr,
                   reinterpret_cast<uintptr_t>(src.smem), &sh.pool, threads, true};
    for (uint32_t i = 0; i < cp.bytes / 4; ++i)
      init[i] = issue_src_word(x, smem_word(sh, cp.src_off / 4 + i), cp.src_off + 4 * i, cp.agent, cp.clock);
    note_unconfirmed(src, cp.agent, cp.clock, cp.site, true);
  }
  Cta& dst = *cp.dst;
  SmemShadow& sh = g_smem[dst.rank];
  const bool peer = &dst != t->cta;
  const Access x{t, t->clock.tid, t->clock.own, cp.site, true, peer ? Space::Dsmem : Space::Smem, dst.rank, nullptr,
                 reinterpret_cast<uintptr_t>(dst.smem), &sh.pool, threads, true};
  for (uint32_t i = 0; i < cp.bytes / 4; ++i) {
    Word& w = smem_word(sh, cp.dst_off / 4 + i);
    issue_dst_word(x, w, cp.dst_off + 4 * i, init[i]);
    w.cell.w_agent = cp.agent;  // written by the copy's async unit, at the phase it completes
    w.cell.w_clock = cp.clock;
  }
  if (peer)
    for (uint64_t b = cp.dst_off >> kTouchShift; b <= (uint64_t(cp.dst_off) + cp.bytes - 1) >> kTouchShift; ++b)
      sh.touched[b] = 1;
  note_unconfirmed(dst, cp.agent, cp.clock, cp.site, false);
}

void checks_copy_land(const Copy& cp, const MbarState& m) {
  if (!g_hook.on) return;
  SmemShadow& sh = g_smem[cp.dst->rank];
  const Clock clock = Clock(m.phase + 1);  // the phase its bytes complete (later than planned on a tx mistake)
  for (uint32_t i = 0; i < cp.bytes / 4; ++i) {
    Word& w = smem_word(sh, cp.dst_off / 4 + i);
    if ((w.flags & kInFlight) == 0) continue;
    w.flags &= uint8_t(~kInFlight);
    if (w.cell.w_agent == cp.agent && w.cell.w_clock < clock) w.cell.w_clock = clock;
  }
}

// ---- the exit rule ----------------------------------------------------------------------------------------------
void checks_cta_exit(Cta& c) {
  if (!g_hook.on) return;
  Cluster& cl = g_launch->cluster;
  SyncClock all;
  for (uint32_t i = 0; i < c.num_threads; ++i) all.release(c.threads[i].clock);
  const FrozenRef exit = all.freeze();
  auto known = [&](uint32_t agent) { return exit->vc ? exit->vc->at(agent) : Clock(0); };
  for (const Unconfirmed& u : c.unconfirmed) {
    if (known(u.agent) >= u.clock) continue;
    if (!note(EmuErrorKind::AsyncCopyMisuse, u.site, 0)) continue;
    const SiteInfo& s = api_site(u.site);
    report_first(EmuErrorKind::AsyncCopyMisuse,
                 "block rank " + std::to_string(c.rank) + " exited while the " + copy_text(s) +
                     (u.source ? " from" : " into") + " its shared memory was still in flight as far as its threads "
                     "know: " +
                     (u.source ? "none of them learned that the receiver's mbarrier phase completed (wait for the "
                                 "receiver's acknowledgement before exiting)"
                               : "none of them waited for its mbarrier phase (wait on its mbarrier before exiting)"));
  }
  const uint32_t tpb = c.num_threads, threads = uint32_t(cl.threads.size());
  SmemShadow& sh = g_smem[c.rank];
  auto peer_unordered = [&](uint32_t agent, Clock clock) {
    return clock != 0 && agent < threads && agent / tpb != c.rank && known(agent) < clock;
  };
  auto exit_report = [&](uint32_t agent, uint32_t site, bool write, uint64_t off) {
    if (!note(EmuErrorKind::DsmemInvalid, site, 0)) return;
    report_first(EmuErrorKind::DsmemInvalid,
                 "block rank " + std::to_string(c.rank) + " exited while its shared memory was still in use by block "
                 "rank " + std::to_string(agent / tpb) + ": " + describe(&cl.threads[agent]) + " " +
                     (write ? "wrote" : "read") + " offset " + std::to_string(off) + " at " + site_text(site) +
                     " with no cluster barrier or mbarrier handshake between that access and this exit (end the "
                     "kernel with cluster_sync())");
  };
  auto check_cell = [&](const Cell& cell, uint64_t off) {
    if (peer_unordered(cell.w_agent, cell.w_clock)) exit_report(cell.w_agent, cell.w_site, true, off);
    if (cell.r_agent == kReadSet) {
      for (const ReadEntry& e : sh.pool.set(cell.r_clock))
        if (peer_unordered(e.agent, e.clock)) exit_report(e.agent, e.site, false, off);
    } else if (peer_unordered(cell.r_agent, cell.r_clock)) {
      exit_report(cell.r_agent, cell.r_site, false, off);
    }
  };
  const uint32_t words = (c.smem_bytes + 3) / 4;
  for (uint32_t b = 0; b < sh.touched.size(); ++b) {
    if (sh.touched[b] == 0) continue;
    const uint32_t w_end = std::min(words, (b + 1) << (kTouchShift - 2));
    for (uint32_t w = b << (kTouchShift - 2); w < w_end; ++w) {
      const Word& word = sh.words[w];
      if (word.gen != sh.gen) continue;
      if ((word.flags & kSplit) != 0) {
        const Cell* cells = sh.pool.split(word.cell.w_agent);
        for (int k = 0; k < 4; ++k) check_cell(cells[k], 4 * w + k);
      } else {
        check_cell(word.cell, 4 * w);
      }
    }
  }
}

}  // namespace cf::dev::emu
