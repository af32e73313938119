// Barriers (block, named, cluster), warp collectives, DSMEM address mapping and the small scheduling points
// (fences, atomics, nanosleep, vector-access checks).
#include <algorithm>
#include <cstring>

#include "emulator.hpp"

namespace cf::dev::emu {

namespace {

bool same_loc(const SrcLoc& a, const SrcLoc& b) {
  return a.line() == b.line() && std::strcmp(a.file_name(), b.file_name()) == 0;
}

const Thread* first_exited(const Cta& c) {
  for (uint32_t i = 0; i < c.num_threads; ++i)
    if (c.threads[i].state == RunState::Done) return &c.threads[i];
  return nullptr;
}

const Thread* first_exited(const Cluster& cl) {
  for (const Thread& t : cl.threads)
    if (t.state == RunState::Done) return &t;
  return nullptr;
}

void complete_barrier(BlockBarrier& b, Thread* self) {
  b.arrived = 0;
  ++b.generation;
  const uint64_t s = next_seq();
  for (Thread* w : b.waiters) {
    w->last_sync_seq = s;
    wake(w);
  }
  b.waiters.clear();
  if (self != nullptr) self->last_sync_seq = s;
}

void complete_cluster_phase(Cluster& cl) {
  cl.cbar_arrived = 0;
  cl.cbar_exited_arrived = 0;
  ++cl.cbar_phase;
  const uint64_t s = next_seq();
  cl.cbar_completed_seq = s;
  on_cluster_phase_complete(cl);
  for (Thread* w : cl.cbar_waiters) wake(w);
  cl.cbar_waiters.clear();
}

const char* warp_op_name(WarpOp op) {
  switch (op) {
    case WarpOp::Sync: return "syncwarp";
    case WarpOp::ShflIdx: return "shfl_sync";
    case WarpOp::ShflXor: return "shfl_xor_sync";
    case WarpOp::ShflDown: return "shfl_down_sync";
    case WarpOp::ShflUp: return "shfl_up_sync";
    case WarpOp::Ballot: return "ballot_sync";
    case WarpOp::Any: return "any_sync";
    case WarpOp::All: return "all_sync";
    case WarpOp::Mma: return "mma_m16n8k16";
  }
  return "warp op";
}

float half_of(uint32_t reg, int which, bool bf16) {
  const auto bits = uint16_t(which == 0 ? reg & 0xffffu : reg >> 16);
  return bf16 ? cf::bf16_bits_to_float(bits) : cf::f16_bits_to_float(bits);
}

// D = A B + C over the fragments of all 32 lanes (layout in api.hpp), accumulated in fp32 in k order.
void complete_mma(WarpGroup* g) {
  float a[16][16], b[16][8], c[16][8];
  for (uint32_t lane = 0; lane < 32; ++lane) {
    const auto* ops = reinterpret_cast<const MmaOperands*>(uintptr_t(g->values[lane]));
    const uint32_t row = lane / 4, col = 2 * (lane % 4);
    for (int h = 0; h < 2; ++h) {
      a[row][col + h] = half_of(ops->a[0], h, ops->bf16);
      a[row + 8][col + h] = half_of(ops->a[1], h, ops->bf16);
      a[row][col + 8 + h] = half_of(ops->a[2], h, ops->bf16);
      a[row + 8][col + 8 + h] = half_of(ops->a[3], h, ops->bf16);
      b[col + h][row] = half_of(ops->b[0], h, ops->bf16);
      b[col + 8 + h][row] = half_of(ops->b[1], h, ops->bf16);
      c[row][col + h] = ops->c[h];
      c[row + 8][col + h] = ops->c[2 + h];
    }
  }
  for (uint32_t lane = 0; lane < 32; ++lane) {
    const auto* ops = reinterpret_cast<const MmaOperands*>(uintptr_t(g->values[lane]));
    const uint32_t row = lane / 4, col = 2 * (lane % 4);
    const uint32_t rows[4] = {row, row, row + 8, row + 8}, cols[4] = {col, col + 1, col, col + 1};
    for (int i = 0; i < 4; ++i) {
      float acc = c[rows[i]][cols[i]];
      for (int k = 0; k < 16; ++k) acc += a[rows[i]][k] * b[k][cols[i]];
      ops->d[i] = acc;
    }
  }
}

// All lanes of the group that will ever arrive have arrived: compute every lane's result and release them.
void complete_group(Warp& w, WarpGroup* g) {
  const uint32_t width = uint32_t(g->width);
  if (g->op == WarpOp::Mma) {
    if (g->arrived != kFullMask) {
      report(EmuErrorKind::WarpCollective,
             describe(g->lanes[__builtin_ctz(g->arrived)]) + ": mma_m16n8k16 at " + where(g->loc) +
                 " needs all 32 lanes of the warp, but lanes " + hex(~g->arrived) + " have exited");
    } else {
      complete_mma(g);
    }
  }
  uint32_t ballot = 0;
  for (uint32_t l = 0; l < 32; ++l)
    if (((g->arrived >> l) & 1u) != 0 && g->values[l] != 0) ballot |= 1u << l;
  for (uint32_t lane = 0; lane < 32; ++lane) {
    if (((g->arrived >> lane) & 1u) == 0) continue;
    Thread* t = g->lanes[lane];
    uint64_t result = 0;
    switch (g->op) {
      case WarpOp::Sync:
      case WarpOp::Mma: break;
      case WarpOp::Ballot: result = ballot; break;
      case WarpOp::Any: result = ballot != 0; break;
      case WarpOp::All: result = ballot == g->arrived; break;
      case WarpOp::ShflIdx:
      case WarpOp::ShflXor:
      case WarpOp::ShflDown:
      case WarpOp::ShflUp: {
        const uint32_t seg_lo = lane & ~(width - 1);
        const uint32_t in_seg = lane & (width - 1);
        const int32_t arg = g->args[lane];
        uint32_t src = lane;
        if (g->op == WarpOp::ShflIdx) {
          src = seg_lo | (uint32_t(arg) & (width - 1));
        } else if (g->op == WarpOp::ShflUp) {
          if (uint32_t(arg) <= in_seg) src = lane - uint32_t(arg);
        } else if (g->op == WarpOp::ShflDown) {
          if (uint64_t(in_seg) + uint32_t(arg) < width) src = lane + uint32_t(arg);
        } else {  // xor: lanes of later segments are out of reach (own value)
          const uint32_t x = lane ^ (uint32_t(arg) & 31u);
          if (x <= (seg_lo | (width - 1))) src = x;
        }
        if (src != lane) {
          const std::string who = describe(t) + ": " + warp_op_name(g->op) + " at " + where(g->loc) + " reads lane " +
                                  std::to_string(src);
          if (((g->mask >> src) & 1u) == 0) {
            report(EmuErrorKind::WarpCollective, who + ", which is not in the mask " + hex(g->mask) +
                                                     " (its value is undefined)");
          } else if (((g->arrived >> src) & 1u) == 0) {
            report(EmuErrorKind::WarpCollective,
                   who + ", which has exited (or does not exist in this partial warp); its value is undefined");
          }
        }
        result = g->values[src];
        break;
      }
    }
    t->collective_result = result;
  }
  next_seq();
  for (uint32_t lane = 0; lane < 32; ++lane)
    if (((g->arrived >> lane) & 1u) != 0) wake(g->lanes[lane]);
  // return the group to the pool
  Cluster& cl = g_launch->cluster;
  for (auto it = w.groups.begin(); it != w.groups.end(); ++it) {
    if (it->get() == g) {
      cl.group_pool.push_back(std::move(*it));
      w.groups.erase(it);
      break;
    }
  }
}

}  // namespace

// ---- block barriers ----------------------------------------------------------------------------------------------
void block_sync(SrcLoc loc) {
  Thread* t = enter(loc, "block_sync");
  Cta& c = *t->cta;
  BlockBarrier& b = c.bar0;
  if (c.live < c.num_threads) {
    fail(EmuErrorKind::BarrierExit, t, loc, "block_sync",
         describe(first_exited(c)) + " already exited, so this block_sync can never complete (bar.sync waits for "
                                     "every thread of the block; exit only after the last block_sync)");
  }
  const uint64_t tag = b.generation + 1;
  if (b.warp_loc_gen[t->warp] != tag) {
    b.warp_loc_gen[t->warp] = tag;
    b.warp_loc[t->warp] = loc;
  } else if (!same_loc(b.warp_loc[t->warp], loc)) {
    fail(EmuErrorKind::BarrierDivergence, t, loc, "block_sync",
         "lanes of warp " + std::to_string(t->warp) + " reached different block_sync calls in the same barrier phase " +
             "(another lane is at " + where(b.warp_loc[t->warp]) +
             "); bar.sync is .aligned: the whole warp must execute the same block_sync");
  }
  if (b.arrived == 0) b.loc = loc;
  ++b.arrived;
  next_seq();
  if (b.arrived == b.expected) {
    complete_barrier(b, t);
    yield(t);
    return;
  }
  const uint64_t gen = b.generation;
  b.waiters.push_back(t);
  while (b.generation == gen) block(t, WaitKind::BlockSync, &b, 0, loc);
}

void named_barrier(uint32_t id, uint32_t thread_count, bool wait, SrcLoc loc) {
  const char* op = wait ? "named_barrier_sync" : "named_barrier_arrive";
  Thread* t = enter(loc, op);
  Cta& c = *t->cta;
  if (id == 0 || id > kMaxNamedBarrier)
    fail(EmuErrorKind::InvalidUse, t, loc, op,
         "barrier id " + std::to_string(id) + " must be in 1..15 (0 is block_sync's)");
  if (thread_count == 0 || thread_count % kWarpSize != 0 || thread_count > c.num_threads)
    fail(EmuErrorKind::InvalidUse, t, loc, op,
         "thread count " + std::to_string(thread_count) + " must be a positive multiple of 32, at most the block's " +
             std::to_string(c.num_threads));
  BlockBarrier& b = c.named[id];
  if (b.arrived == 0) {
    b.expected = thread_count;
    b.loc = loc;
  } else if (b.expected != thread_count) {
    fail(EmuErrorKind::BarrierDivergence, t, loc, op,
         "barrier " + std::to_string(id) + " is in use with thread count " + std::to_string(b.expected) +
             " (first arrival at " + where(b.loc) + "), this call says " + std::to_string(thread_count));
  }
  ++b.arrived;
  next_seq();
  if (b.arrived == b.expected) {
    complete_barrier(b, wait ? t : nullptr);
    yield(t);
    return;
  }
  if (!wait) {
    yield(t);
    return;
  }
  const uint64_t gen = b.generation;
  b.waiters.push_back(t);
  while (b.generation == gen) block(t, WaitKind::NamedBarrier, &b, id, loc);
}

// ---- cluster barrier ---------------------------------------------------------------------------------------------
void cluster_arrive(bool relaxed, SrcLoc loc) {
  const char* op = relaxed ? "cluster_arrive_relaxed" : "cluster_arrive";
  Thread* t = enter(loc, op);
  Cluster& cl = g_launch->cluster;
  if (t->cluster_arrived)
    fail(EmuErrorKind::InvalidUse, t, loc, op,
         "this thread already arrived at the cluster barrier and has not waited; call cluster_wait() between two "
         "arrivals");
  if (cl.exited > cl.cbar_exited_arrived)
    fail(EmuErrorKind::BarrierExit, t, loc, op,
         describe(first_exited(cl)) + " exited without arriving, so this cluster barrier phase can never complete "
                                      "(it waits for every thread of every block of the cluster)");
  t->cluster_arrived = true;
  t->cluster_arrive_phase = cl.cbar_phase;
  ++cl.cbar_arrived;
  next_seq();
  if (cl.cbar_arrived == cl.threads.size()) complete_cluster_phase(cl);
  yield(t);
}

void cluster_wait(SrcLoc loc) {
  Thread* t = enter(loc, "cluster_wait");
  Cluster& cl = g_launch->cluster;
  if (!t->cluster_arrived)
    fail(EmuErrorKind::InvalidUse, t, loc, "cluster_wait",
         "cluster_wait without a preceding cluster_arrive by this thread");
  bool switched = false;
  while (cl.cbar_phase <= t->cluster_arrive_phase) {
    cl.cbar_waiters.push_back(t);
    block(t, WaitKind::ClusterWait, &cl, 0, loc);
    switched = true;
  }
  t->cluster_arrived = false;
  t->last_cluster_sync_seq = std::max(t->last_cluster_sync_seq, cl.cbar_completed_seq);
  t->last_sync_seq = std::max(t->last_sync_seq, cl.cbar_completed_seq);
  if (!switched) yield(t);
}

void on_cluster_phase_complete(Cluster& cl) {
  cl.window_open = true;
  for (Cta& c : cl.ctas) {
    if (c.exited || std::none_of(c.armed.begin(), c.armed.end(), [](uint8_t a) { return a != 0; })) continue;
    std::fill(c.armed.begin(), c.armed.end(), 0);
    refresh_pages(c, View::Dsmem, 0, uint32_t(c.armed.size()));
  }
}

// ---- warp collectives --------------------------------------------------------------------------------------------
uint64_t warp_collective(WarpOp op, uint32_t mask, uint64_t value, int32_t arg, int32_t width, SrcLoc loc) {
  const char* name = warp_op_name(op);
  Thread* t = enter(loc, name);
  const uint32_t lane = t->ids.lane;
  const uint32_t bit = 1u << lane;
  Cta& c = *t->cta;
  Warp& w = c.warps[t->warp];
  if ((mask & bit) == 0)
    fail(EmuErrorKind::WarpCollective, t, loc, name,
         "the mask " + hex(mask) + " does not include the calling lane " + std::to_string(lane));
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    fail(EmuErrorKind::WarpCollective, t, loc, name,
         "width " + std::to_string(width) + " must be a power of two in [1, 32]");
  WarpGroup* g = nullptr;
  for (auto& gp : w.groups) {
    // Groups with other (even overlapping) masks may wait meanwhile: lanes 16-31 in syncwarp(full) while lanes
    // 0-15 shuffle among themselves is legal; a cycle shows up as a deadlock.
    if (gp->mask == mask) {
      g = gp.get();
      break;
    }
  }
  if (g == nullptr) {
    Cluster& cl = g_launch->cluster;
    std::unique_ptr<WarpGroup> fresh;
    if (!cl.group_pool.empty()) {
      fresh = std::move(cl.group_pool.back());
      cl.group_pool.pop_back();
    } else {
      fresh = std::make_unique<WarpGroup>();
    }
    fresh->op = op;
    fresh->mask = mask;
    fresh->arrived = 0;
    fresh->width = width;
    fresh->loc = loc;
    g = fresh.get();
    w.groups.push_back(std::move(fresh));
  } else if (g->op != op || g->width != width) {
    fail(EmuErrorKind::WarpCollective, t, loc, name,
         "other lanes of mask " + hex(mask) + " wait in " + warp_op_name(g->op) + " (width " +
             std::to_string(g->width) + ") at " + where(g->loc) + ": all lanes of a mask must meet at the same "
                                                                  "collective");
  }
  g->values[lane] = value;
  g->args[lane] = arg;
  g->lanes[lane] = t;
  g->arrived |= bit;
  if (((g->arrived | w.exited) & mask) == mask) {
    complete_group(w, g);
    check_abort(t);
    yield(t);
    return t->collective_result;
  }
  block(t, WaitKind::Warp, g, mask, loc);
  return t->collective_result;
}

// ---- DSMEM mapping -----------------------------------------------------------------------------------------------
void* map_shared_rank(const void* p, uint32_t rank, SrcLoc loc) {
  Thread* t = enter(loc, "map_shared_rank");
  Cluster& cl = g_launch->cluster;
  const Cta& own = *t->cta;
  if (rank >= cl.size)
    fail(EmuErrorKind::DsmemInvalid, t, loc, "map_shared_rank",
         "rank " + std::to_string(rank) + " is outside the cluster of " + std::to_string(cl.size) + " blocks");
  const auto a = reinterpret_cast<uintptr_t>(p);
  const auto base = reinterpret_cast<uintptr_t>(own.smem);
  uint64_t off = 0;
  if (a >= base && a <= base + own.smem_bytes) {
    off = a - base;
  } else {
    SmemArena& arena = SmemArena::instance();
    bool ok = false;
    if (arena.contains(a)) {
      const SmemArena::Where w = arena.locate(a);
      ok = w.slot < cl.size && w.offset >= 0 && w.offset <= int64_t(cl.ctas[w.slot].smem_bytes);
      off = uint64_t(w.offset);
    }
    if (!ok)
      fail(EmuErrorKind::DsmemInvalid, t, loc, "map_shared_rank",
           "pointer " + hex(a) + " is not in the shared memory of a block of this cluster");
  }
  if (rank == own.rank) return own.smem + off;
  return cl.ctas[rank].dsmem + off;
}

// ---- small scheduling points -------------------------------------------------------------------------------------
void fence(const char* what, SrcLoc loc) {
  Thread* t = enter(loc, what);
  yield(t);
}

void nanosleep(uint32_t /*ns*/, SrcLoc loc) {
  Thread* t = enter(loc, "nanosleep");
  note_poll();
  yield(t);
}

uint64_t globaltimer_ns(SrcLoc loc) {
  (void)enter(loc, "globaltimer_ns");  // a read, not a scheduling point: reading the clock changes no schedule
  return g_launch->iter + g_launch->stall_ns;
}

void atomic_point(const void* /*p*/, SrcLoc loc) {
  Thread* t = enter(loc, "atomic");
  yield(t);
}

void vector_access(const void* p, uint32_t bytes, bool global_nc, SrcLoc loc) {
  const char* op = global_nc ? "load16_global_nc" : "load16/store16";
  Thread* t = enter(loc, op);
  const auto a = reinterpret_cast<uintptr_t>(p);
  if (a % bytes != 0)
    fail(EmuErrorKind::Misaligned, t, loc, op,
         "address " + hex(a) + " is not " + std::to_string(bytes) + "-byte aligned (a misaligned-address fault on "
                                                                   "the GPU)");
  if (global_nc && SmemArena::instance().contains(a))
    fail(EmuErrorKind::InvalidUse, t, loc, op,
         "address " + hex(a) + " is in shared memory; ld.global.nc reads global memory only (use load16)");
}

// ---- exits -------------------------------------------------------------------------------------------------------
void on_thread_exit(Thread* t) {
  Cta& c = *t->cta;
  Cluster& cl = g_launch->cluster;
  Warp& w = c.warps[t->warp];
  const uint32_t bit = 1u << t->ids.lane;
  w.exited |= bit;
  for (size_t i = 0; i < w.groups.size();) {
    WarpGroup* g = w.groups[i].get();
    if ((g->mask & bit) != 0 && ((g->arrived | w.exited) & g->mask) == g->mask) {
      complete_group(w, g);  // removes it from w.groups
      continue;
    }
    ++i;
  }
  if (c.bar0.arrived > 0)
    report(EmuErrorKind::BarrierExit,
           describe(t) + " exited while " + std::to_string(c.bar0.arrived) + " threads of its block wait at block_sync at " +
               where(c.bar0.loc) + " (bar.sync waits for every thread of the block; exit only after the last one)");
  for (uint32_t id = 1; id <= kMaxNamedBarrier; ++id) {
    const BlockBarrier& b = c.named[id];
    if (b.arrived == 0) continue;
    const uint32_t needed = b.expected - b.arrived;
    const uint32_t available = c.live - uint32_t(b.waiters.size());
    if (available < needed)
      report(EmuErrorKind::BarrierExit,
             describe(t) + " exited and named barrier " + std::to_string(id) + " (first arrival at " + where(b.loc) +
                 ") can no longer collect its " + std::to_string(b.expected) + " threads");
  }
  if (t->cluster_arrived && t->cluster_arrive_phase == cl.cbar_phase) {
    ++cl.cbar_exited_arrived;
  } else if (cl.cbar_arrived > 0) {
    report(EmuErrorKind::BarrierExit,
           describe(t) + " exited without arriving at the cluster barrier at which " + std::to_string(cl.cbar_arrived) +
               " threads have arrived (it waits for every thread of every block of the cluster)");
  }
}

std::string describe_wait(const Thread* t) {
  const Cta& c = *t->cta;
  switch (t->wait) {
    case WaitKind::BlockSync:
      return "block_sync (" + std::to_string(c.bar0.arrived) + " of " + std::to_string(c.bar0.expected) +
             " threads arrived)";
    case WaitKind::NamedBarrier: {
      const BlockBarrier& b = c.named[t->wait_arg];
      return "named_barrier_sync " + std::to_string(t->wait_arg) + " (" + std::to_string(b.arrived) + " of " +
             std::to_string(b.expected) + " arrived)";
    }
    case WaitKind::ClusterWait: {
      const Cluster& cl = g_launch->cluster;
      return "cluster_wait (" + std::to_string(cl.cbar_arrived) + " of " + std::to_string(cl.threads.size()) +
             " cluster threads arrived)";
    }
    case WaitKind::Mbarrier: {
      const auto* m = static_cast<const MbarState*>(t->wait_obj);
      return std::string(t->last_op) + "(parity " + std::to_string(t->wait_parity) + ") on " +
             describe_mbar(c, t->wait_arg, *m);
    }
    case WaitKind::Warp: {
      const auto* g = static_cast<const WarpGroup*>(t->wait_obj);
      return std::string(warp_op_name(g->op)) + " with mask " + hex(g->mask) + " (lanes " + hex(g->arrived) +
             " arrived)";
    }
    case WaitKind::None: break;
  }
  return "nothing";
}

}  // namespace cf::dev::emu
