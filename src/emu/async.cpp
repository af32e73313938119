// mbarriers and the asynchronous copies that complete on them (bulk global->shared, bulk shared->peer shared,
// 2D TMA loads). A copy poisons its destination (0xFF) and closes its pages at issue; it lands later (scheduler.cpp
// decides when), after checking the poison is intact, and then completes its bytes on the mbarrier.
#include <algorithm>
#include <cstring>

#include "emulator.hpp"

namespace cf::dev::emu {

namespace {

bool overlaps(uint32_t a, uint32_t a_bytes, uint32_t b, uint32_t b_bytes) { return a < b + b_bytes && b < a + a_bytes; }

const char* copy_name(CopyKind k) {
  switch (k) {
    case CopyKind::G2S: return "bulk_copy_g2s";
    case CopyKind::S2Peer: return "bulk_copy_s2peer";
    case CopyKind::Tma2d: return "tma_load_2d";
  }
  return "copy";
}

std::string range_str(uint32_t off, uint32_t bytes) {
  return "[" + std::to_string(off) + ", " + std::to_string(off + bytes) + ")";
}

// The pages of [off, off+bytes) of c's smem, as data-page indices of its window.
void page_range(const Cta& c, uint32_t off, uint32_t bytes, uint32_t* lo, uint32_t* hi) {
  const SmemArena& arena = SmemArena::instance();
  const size_t abs = arena.base_offset(c.rank) + size_t(off);
  *lo = uint32_t(abs / arena.page());
  *hi = uint32_t((abs + bytes + arena.page() - 1) / arena.page());
}

void complete_phase(MbarState& m) {
  ++m.phase;
  m.pending = m.count;
  m.tx = 0;
  m.completed_seq = next_seq();
  m.completed_remote_seq = m.remote_seq;
  m.remote_seq.fill(0);
  for (Thread* w : m.waiters) wake(w);
  m.waiters.clear();
}

// After an arrival or a tx change: complete the phase, or report a tx-count that went below zero for good.
// Returns false (after report()) on misuse.
bool settle(const Cta& c, uint32_t off, MbarState& m, const std::string& cause) {
  if (m.pending != 0) return true;
  if (m.tx == 0) {
    complete_phase(m);
  } else if (m.tx < 0) {
    report(EmuErrorKind::MbarrierMisuse,
           cause + ": tx-count underflow on the mbarrier at block rank " + std::to_string(c.rank) + " offset " +
               std::to_string(off) + ": all " + std::to_string(m.count) + " arrivals of phase " +
               std::to_string(m.phase) + " are in and " + std::to_string(-m.tx) +
               " more bytes completed than were expected (arrive_expect_tx/expect_tx byte count too small?)");
    return false;
  }
  return true;
}

MbarState& barrier_at(Thread* t, Cta& owner, uint32_t off, SrcLoc loc, const char* op, bool remote) {
  if (off % 8 != 0)
    fail(EmuErrorKind::Misaligned, t, loc, op, "mbarrier at offset " + std::to_string(off) + " is not 8-byte aligned");
  auto it = owner.mbars.find(off);
  const std::string where_bar = "the mbarrier at block rank " + std::to_string(owner.rank) + " offset " +
                                std::to_string(off);
  if (it == owner.mbars.end() || !it->second.valid)
    fail(EmuErrorKind::MbarrierMisuse, t, loc, op,
         where_bar + (it == owner.mbars.end() ? " was never initialized" : " was invalidated") +
             " (init(count) it in one thread, then fence_mbarrier_init() and block_sync()/cluster_sync())");
  MbarState& m = it->second;
  if (t->index != m.initializer) {
    const uint64_t known = remote ? t->last_cluster_sync_seq : std::max(t->last_sync_seq, t->last_cluster_sync_seq);
    if (known < m.init_seq)
      fail(EmuErrorKind::MbarrierMisuse, t, loc, op,
           where_bar + " was initialized by " + describe(&g_launch->cluster.threads[m.initializer]) + " at " +
               where(m.init_loc) + ", but no " + (remote ? "cluster barrier" : "block_sync or cluster barrier") +
               " has ordered that init before this use (missing fence_mbarrier_init() + " +
               (remote ? "cluster_sync()" : "block_sync()") + " after init?)");
  }
  return m;
}

MbarState& local_barrier(Thread* t, void* bar, SrcLoc loc, const char* op, uint32_t* off_out) {
  const uint32_t off = local_offset(t, bar, 8, loc, op, "mbarrier");
  *off_out = off;
  return barrier_at(t, *t->cta, off, loc, op, false);
}

void add_tx(Thread* t, MbarState& m, uint32_t bytes, SrcLoc loc, const char* op) {
  if (bytes > kMaxMbarrierCount)
    fail(EmuErrorKind::MbarrierMisuse, t, loc, op,
         "tx byte count " + std::to_string(bytes) + " exceeds the mbarrier limit 2^20-1");
  m.tx += bytes;
  if (m.tx > int64_t(kMaxMbarrierCount))
    fail(EmuErrorKind::MbarrierMisuse, t, loc, op,
         "the phase's tx-count " + std::to_string(m.tx) + " exceeds the mbarrier limit 2^20-1");
}

void arrive_one(Thread* t, Cta& owner, uint32_t off, MbarState& m, SrcLoc loc, const char* op) {
  if (m.pending <= 0)
    fail(EmuErrorKind::MbarrierMisuse, t, loc, op,
         "arrival beyond the expected count " + std::to_string(m.count) + " in phase " + std::to_string(m.phase) +
             " of the mbarrier at block rank " + std::to_string(owner.rank) + " offset " + std::to_string(off) +
             " (the phase still waits for " + std::to_string(m.tx) + " tx bytes)");
  --m.pending;
  next_seq();
  if (!settle(owner, off, m, describe(t) + ": " + op + " at " + where(loc))) throw KernelAbort{};
}

void pass_wait(Thread* t, const MbarState& m) {
  t->last_sync_seq = std::max(t->last_sync_seq, m.completed_seq);
  Cta& c = *t->cta;
  for (uint32_t r = 0; r < kMaxSlots; ++r) c.ordered_seq[r] = std::max(c.ordered_seq[r], m.completed_remote_seq[r]);
}

void check_copy_shape(Thread* t, const void* dst, const void* src, uint32_t bytes, SrcLoc loc, const char* op) {
  if (bytes == 0 || bytes % kBulkCopyAlign != 0)
    fail(EmuErrorKind::AsyncCopyMisuse, t, loc, op,
         "size " + std::to_string(bytes) + " must be a non-zero multiple of 16 bytes");
  if (reinterpret_cast<uintptr_t>(dst) % kBulkCopyAlign != 0 || reinterpret_cast<uintptr_t>(src) % kBulkCopyAlign != 0)
    fail(EmuErrorKind::Misaligned, t, loc, op,
         "destination " + hex(reinterpret_cast<uintptr_t>(dst)) + " and source " +
             hex(reinterpret_cast<uintptr_t>(src)) + " must be 16-byte aligned");
}

void check_peer(Thread* t, uint32_t rank, SrcLoc loc, const char* op) {
  Cluster& cl = g_launch->cluster;
  if (rank >= cl.size)
    fail(EmuErrorKind::DsmemInvalid, t, loc, op,
         "rank " + std::to_string(rank) + " is outside the cluster of " + std::to_string(cl.size) + " blocks");
  if (rank == t->cta->rank) return;
  if (!cl.window_open)
    fail(EmuErrorKind::DsmemInvalid, t, loc, op,
         "targets block rank " + std::to_string(rank) +
             " before any cluster barrier completed, so it may not have started; call cluster_sync() first");
  if (cl.ctas[rank].exited)
    fail(EmuErrorKind::DsmemInvalid, t, loc, op,
         "targets block rank " + std::to_string(rank) + ", which has exited (a missing final cluster_sync()?)");
}

void issue(Thread* t, Copy&& cp, MbarState& m, SrcLoc loc, const char* op) {
  Cluster& cl = g_launch->cluster;
  Cta& d = *cp.dst;
  for (const Copy& o : cl.pending) {
    if (o.dst == &d && overlaps(o.dst_off, o.bytes, cp.dst_off, cp.bytes))
      fail(EmuErrorKind::AsyncCopyMisuse, t, loc, op,
           "destination " + range_str(cp.dst_off, cp.bytes) + " of block rank " + std::to_string(d.rank) +
               " overlaps the destination " + range_str(o.dst_off, o.bytes) + " of an in-flight " +
               copy_name(o.kind) + " issued by " + describe(&cl.threads[o.issuer]) + " at " + where(o.loc) +
               " (a buffer reused before its previous copy completed and its consumers were done?)");
  }
  for (const auto& [off, bar] : d.mbars) {
    if (bar.valid && overlaps(off, 8, cp.dst_off, cp.bytes))
      fail(EmuErrorKind::AsyncCopyMisuse, t, loc, op,
           "destination " + range_str(cp.dst_off, cp.bytes) + " covers the mbarrier at offset " + std::to_string(off));
  }
  uint32_t lo = 0, hi = 0;
  page_range(d, cp.dst_off, cp.bytes, &lo, &hi);
  for (uint32_t p = lo; p < hi; ++p) ++d.inflight_pages[p];
  raw_fill(d, cp.dst_off, 0xff, cp.bytes);  // poison until it lands
  refresh_pages(d, View::Local, lo, hi);
  refresh_pages(d, View::Dsmem, lo, hi);
  ++m.inflight;
  cp.issuer = t->index;
  cp.loc = loc;
  cp.issue_iter = g_launch->iter;
  cl.pending.push_back(std::move(cp));
  next_seq();
  yield(t);
}

}  // namespace

std::string describe_mbar(const Cta& c, uint32_t off, const MbarState& m) {
  return "the mbarrier at block rank " + std::to_string(c.rank) + " offset " + std::to_string(off) + " (phase " +
         std::to_string(m.phase) + ": " + std::to_string(m.pending) + " of " + std::to_string(m.count) +
         " arrivals pending, tx-count " + std::to_string(m.tx) + ", " + std::to_string(m.inflight) +
         " copies in flight)";
}

// ---- mbarrier ----------------------------------------------------------------------------------------------------
void mbar_init(void* bar, uint32_t count, SrcLoc loc) {
  const char* op = "Mbarrier::init";
  Thread* t = enter(loc, op);
  Cta& c = *t->cta;
  const uint32_t off = local_offset(t, bar, 8, loc, op, "mbarrier");
  if (off % 8 != 0) fail(EmuErrorKind::Misaligned, t, loc, op, "mbarrier must be 8-byte aligned");
  if (count == 0 || count > kMaxMbarrierCount)
    fail(EmuErrorKind::MbarrierMisuse, t, loc, op,
         "arrival count " + std::to_string(count) + " is outside [1, 2^20-1]");
  MbarState& m = c.mbars[off];
  if (m.valid)
    fail(EmuErrorKind::MbarrierMisuse, t, loc, op,
         "the mbarrier at offset " + std::to_string(off) + " is already initialized (by " +
             describe(&g_launch->cluster.threads[m.initializer]) + " at " + where(m.init_loc) +
             "); call inval() before initializing it again");
  for (const Copy& o : g_launch->cluster.pending)
    if (o.dst == &c && overlaps(o.dst_off, o.bytes, off, 8))
      fail(EmuErrorKind::InFlightAccess, t, loc, op,
           "the mbarrier at offset " + std::to_string(off) + " lies inside the destination of an in-flight copy");
  m = MbarState{};
  m.valid = true;
  m.count = count;
  m.pending = count;
  m.initializer = t->index;
  m.init_loc = loc;
  m.init_seq = next_seq();
  yield(t);
}

void mbar_arrive(void* bar, uint32_t tx_bytes, bool with_tx, SrcLoc loc) {
  const char* op = with_tx ? "Mbarrier::arrive_expect_tx" : "Mbarrier::arrive";
  Thread* t = enter(loc, op);
  uint32_t off = 0;
  MbarState& m = local_barrier(t, bar, loc, op, &off);
  if (with_tx) add_tx(t, m, tx_bytes, loc, op);
  arrive_one(t, *t->cta, off, m, loc, op);
  yield(t);
}

void mbar_expect_tx(void* bar, uint32_t tx_bytes, SrcLoc loc) {
  const char* op = "Mbarrier::expect_tx";
  Thread* t = enter(loc, op);
  uint32_t off = 0;
  MbarState& m = local_barrier(t, bar, loc, op, &off);
  add_tx(t, m, tx_bytes, loc, op);
  next_seq();
  if (!settle(*t->cta, off, m, describe(t) + ": " + op + " at " + where(loc))) throw KernelAbort{};
  yield(t);
}

void mbar_arrive_remote(void* bar, uint32_t rank, uint32_t tx_bytes, bool with_tx, SrcLoc loc) {
  const char* op = with_tx ? "Mbarrier::arrive_expect_tx_remote" : "Mbarrier::arrive_remote";
  Thread* t = enter(loc, op);
  const uint32_t off = local_offset(t, bar, 8, loc, op, "mbarrier (this block's address of the peer's barrier)");
  check_peer(t, rank, loc, op);
  Cta& target = g_launch->cluster.ctas[rank];
  const bool remote = rank != t->cta->rank;
  MbarState& m = barrier_at(t, target, off, loc, op, remote);
  Launch& L = *g_launch;
  if (remote && ++L.remote_arrivals == L.lose_remote_arrival) {  // fault injection: this peer never arrives
    yield(t);
    return;
  }
  if (remote) m.remote_seq[t->cta->rank] = next_seq();
  if (with_tx) add_tx(t, m, tx_bytes, loc, op);
  arrive_one(t, target, off, m, loc, op);
  yield(t);
}

bool mbar_try_wait(void* bar, uint32_t parity, bool until_done, SrcLoc loc) {
  const char* op = until_done ? "Mbarrier::wait" : "Mbarrier::try_wait";
  Thread* t = enter(loc, op);
  uint32_t off = 0;
  MbarState& m = local_barrier(t, bar, loc, op, &off);
  if (parity > 1) fail(EmuErrorKind::InvalidUse, t, loc, op, "parity " + std::to_string(parity) + " must be 0 or 1");
  auto done = [&] { return (m.phase & 1u) != parity; };
  if (done()) {
    pass_wait(t, m);
    yield(t);
    return true;
  }
  t->wait_parity = parity;
  for (;;) {
    m.waiters.push_back(t);
    const bool woke = block(t, WaitKind::Mbarrier, &m, off, loc, !until_done);
    if (done()) {
      pass_wait(t, m);
      return true;
    }
    if (!woke) {
      note_poll();
      return false;
    }
  }
}

void mbar_inval(void* bar, SrcLoc loc) {
  const char* op = "Mbarrier::inval";
  Thread* t = enter(loc, op);
  uint32_t off = 0;
  MbarState& m = local_barrier(t, bar, loc, op, &off);
  if (!m.waiters.empty())
    fail(EmuErrorKind::MbarrierMisuse, t, loc, op,
         std::to_string(m.waiters.size()) + " threads still wait on the mbarrier at offset " + std::to_string(off));
  if (m.inflight > 0)
    fail(EmuErrorKind::AsyncCopyMisuse, t, loc, op,
         std::to_string(m.inflight) + " copies in flight still complete on the mbarrier at offset " +
             std::to_string(off));
  m.valid = false;
  next_seq();
  yield(t);
}

// ---- copies ------------------------------------------------------------------------------------------------------
void bulk_copy_g2s(void* dst, const void* src, uint32_t bytes, void* bar, SrcLoc loc) {
  const char* op = "bulk_copy_g2s";
  Thread* t = enter(loc, op);
  check_copy_shape(t, dst, src, bytes, loc, op);
  const uint32_t dst_off = local_offset(t, dst, bytes, loc, op, "destination");
  uint32_t bar_off = 0;
  MbarState& m = local_barrier(t, bar, loc, op, &bar_off);
  const auto s = reinterpret_cast<uintptr_t>(src);
  if (SmemArena::instance().contains(s))
    fail(EmuErrorKind::InvalidUse, t, loc, op,
         "the source is a shared-memory address; bulk_copy_g2s reads global memory (bulk_copy_s2peer copies "
         "between blocks)");
  GlobalBlock gb;
  if (find_global_block(s, &gb) && s + bytes > gb.data + gb.bytes)
    fail(EmuErrorKind::GlobalOutOfBounds, t, loc, op,
         "the source [" + hex(s) + ", +" + std::to_string(bytes) + ") runs " +
             std::to_string(s + bytes - gb.data - gb.bytes) + " bytes past the end of a " + std::to_string(gb.bytes) +
             "-byte DeviceBuffer");
  Copy cp;
  cp.kind = CopyKind::G2S;
  cp.dst = t->cta;
  cp.dst_off = dst_off;
  cp.bytes = bytes;
  cp.bar_off = bar_off;
  cp.src_global = static_cast<const uint8_t*>(src);
  issue(t, std::move(cp), m, loc, op);
}

void bulk_copy_s2peer(void* dst, const void* src, uint32_t bytes, void* bar, uint32_t rank, SrcLoc loc) {
  const char* op = "bulk_copy_s2peer";
  Thread* t = enter(loc, op);
  check_copy_shape(t, dst, src, bytes, loc, op);
  check_peer(t, rank, loc, op);
  Cluster& cl = g_launch->cluster;
  Cta& own = *t->cta;
  const uint32_t dst_off = local_offset(t, dst, bytes, loc, op, "destination (this block's address of the buffer)");
  const uint32_t src_off = local_offset(t, src, bytes, loc, op, "source");
  const uint32_t bar_off = local_offset(t, bar, 8, loc, op, "mbarrier (this block's address of the peer's barrier)");
  Cta& target = cl.ctas[rank];
  MbarState& m = barrier_at(t, target, bar_off, loc, op, rank != own.rank);
  if (rank == own.rank && overlaps(src_off, bytes, dst_off, bytes))
    fail(EmuErrorKind::AsyncCopyMisuse, t, loc, op,
         "source " + range_str(src_off, bytes) + " and destination " + range_str(dst_off, bytes) + " overlap");
  for (const Copy& o : cl.pending) {
    if (o.dst == &own && overlaps(o.dst_off, o.bytes, src_off, bytes))
      fail(EmuErrorKind::InFlightAccess, t, loc, op,
           "the source " + range_str(src_off, bytes) + " is inside the destination " + range_str(o.dst_off, o.bytes) +
               " of an in-flight " + copy_name(o.kind) + " issued by " + describe(&cl.threads[o.issuer]) + " at " +
               where(o.loc) + " (wait on its mbarrier first)");
  }
  Copy cp;
  cp.kind = CopyKind::S2Peer;
  cp.dst = &target;
  cp.dst_off = dst_off;
  cp.bytes = bytes;
  cp.bar_off = bar_off;
  cp.src_cta = &own;
  cp.src_off = src_off;
  cp.snapshot.resize(bytes);
  raw_read(own, src_off, cp.snapshot.data(), bytes);
  issue(t, std::move(cp), m, loc, op);
}

void tma_load_2d(void* dst, const TensorMap& map, int32_t x, int32_t y, void* bar, SrcLoc loc) {
  const char* op = "tma_load_2d";
  Thread* t = enter(loc, op);
  if (map.magic != TensorMap::kMagic)
    fail(EmuErrorKind::InvalidUse, t, loc, op, "the tensor map was not made by make_tensor_map_2d");
  if (reinterpret_cast<uintptr_t>(dst) % kTmaSmemAlign != 0)
    fail(EmuErrorKind::Misaligned, t, loc, op,
         "destination " + hex(reinterpret_cast<uintptr_t>(dst)) + " must be 128-byte aligned");
  // Hopper raises an illegal instruction when the box's first column is not at a 16-byte boundary of the row
  // (checked on an H100: any x * element size not a multiple of 16, in or out of bounds, negative or not).
  const int64_t column_bytes = int64_t(x) * dtype_bytes(map.dtype);
  if (column_bytes % kTmaColumnAlign != 0)
    fail(EmuErrorKind::Misaligned, t, loc, op,
         "box column x = " + std::to_string(x) + " is " + std::to_string(column_bytes) +
             " bytes into the row; x * element size (" + std::to_string(dtype_bytes(map.dtype)) +
             " B) must be a multiple of 16 bytes (the GPU raises an illegal instruction)");
  const uint32_t bytes = map.box_bytes();
  const uint32_t dst_off = local_offset(t, dst, bytes, loc, op, "destination box");
  uint32_t bar_off = 0;
  MbarState& m = local_barrier(t, bar, loc, op, &bar_off);
  Copy cp;
  cp.kind = CopyKind::Tma2d;
  cp.dst = t->cta;
  cp.dst_off = dst_off;
  cp.bytes = bytes;
  cp.bar_off = bar_off;
  cp.map = map;
  cp.x = x;
  cp.y = y;
  issue(t, std::move(cp), m, loc, op);
}

void deliver(size_t index) {
  Launch& L = *g_launch;
  Cluster& cl = L.cluster;
  Copy cp = std::move(cl.pending[index]);
  if (index + 1 != cl.pending.size()) cl.pending[index] = std::move(cl.pending.back());
  cl.pending.pop_back();
  Cta& d = *cp.dst;
  const std::string what = std::string(copy_name(cp.kind)) + " issued by " + describe(&cl.threads[cp.issuer]) +
                           " at " + where(cp.loc);

  std::vector<uint8_t> data(cp.bytes);
  raw_read(d, cp.dst_off, data.data(), cp.bytes);
  const auto touched = std::find_if(data.begin(), data.end(), [](uint8_t b) { return b != 0xff; });
  if (touched != data.end()) {
    report(EmuErrorKind::InFlightAccess,
           "block rank " + std::to_string(d.rank) + "'s shared memory at offset " +
               std::to_string(cp.dst_off + uint32_t(touched - data.begin())) + " was written while the " + what +
               " was in flight into " + range_str(cp.dst_off, cp.bytes));
    return;
  }
  switch (cp.kind) {
    case CopyKind::G2S: std::memcpy(data.data(), cp.src_global, cp.bytes); break;
    case CopyKind::S2Peer: {
      if (!cp.src_cta->exited) {
        raw_read(*cp.src_cta, cp.src_off, data.data(), cp.bytes);
        if (std::memcmp(data.data(), cp.snapshot.data(), cp.bytes) != 0) {
          report(EmuErrorKind::InFlightAccess,
                 "the source " + range_str(cp.src_off, cp.bytes) + " of the " + what +
                     " was modified before the copy completed (the sender may reuse it only after the receiver "
                     "signals that its mbarrier completed)");
          return;
        }
      }
      std::memcpy(data.data(), cp.snapshot.data(), cp.bytes);
      break;
    }
    case CopyKind::Tma2d: {
      const TensorMap& map = cp.map;
      const uint32_t elem = dtype_bytes(map.dtype);
      const uint32_t row_bytes = map.box_width * elem;
      const auto* base = static_cast<const uint8_t*>(map.base);
      std::fill(data.begin(), data.end(), uint8_t(0));
      for (uint32_t r = 0; r < map.box_height; ++r) {
        const int64_t gy = int64_t(cp.y) + r;
        if (gy < 0 || gy >= int64_t(map.height)) continue;
        const int64_t x0 = std::max<int64_t>(cp.x, 0);
        const int64_t x1 = std::min<int64_t>(int64_t(cp.x) + map.box_width, int64_t(map.width));
        if (x1 <= x0) continue;
        std::memcpy(data.data() + size_t(r) * row_bytes + size_t(x0 - cp.x) * elem,
                    base + size_t(gy) * map.row_stride_bytes + size_t(x0) * elem, size_t(x1 - x0) * elem);
      }
      break;
    }
  }
  uint32_t lo = 0, hi = 0;
  page_range(d, cp.dst_off, cp.bytes, &lo, &hi);
  for (uint32_t p = lo; p < hi; ++p) --d.inflight_pages[p];
  raw_write(d, cp.dst_off, data.data(), cp.bytes);
  refresh_pages(d, View::Local, lo, hi);
  refresh_pages(d, View::Dsmem, lo, hi);
  ++L.stats.copies;

  MbarState& m = d.mbars[cp.bar_off];
  --m.inflight;
  m.tx -= cp.bytes;
  next_seq();
  settle(d, cp.bar_off, m, "the " + what + " completing " + std::to_string(cp.bytes) + " bytes");
}

// ---- block exit --------------------------------------------------------------------------------------------------
void on_cta_exit(Cta& c) {
  Cluster& cl = g_launch->cluster;
  for (const Copy& cp : cl.pending) {
    if (cp.dst == &c || cp.src_cta == &c) {
      report(EmuErrorKind::AsyncCopyMisuse,
             "block rank " + std::to_string(c.rank) + " exited while the " + copy_name(cp.kind) + " issued by " +
                 describe(&cl.threads[cp.issuer]) + " at " + where(cp.loc) + (cp.dst == &c ? " into" : " from") +
                 " its shared memory was still in flight (wait on its mbarrier before exiting)");
      return;
    }
  }
  for (uint32_t a = 0; a < cl.size; ++a) {
    if (c.access_seq[a] == 0 || c.access_seq[a] <= c.ordered_seq[a] || cl.cbar_phase > c.access_phase[a]) continue;
    report(EmuErrorKind::DsmemInvalid,
           "block rank " + std::to_string(c.rank) + " exited while its shared memory was still in use by block rank " +
               std::to_string(a) + ": " + describe(&cl.threads[c.accessor[a]]) + " accessed it (after " +
               where(c.accessor_loc[a]) + ") with no cluster barrier or mbarrier handshake between that access and "
               "this exit (end the kernel with cluster_sync())");
    return;
  }
}

}  // namespace cf::dev::emu
