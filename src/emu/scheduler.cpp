// The launch driver and the hub loop: clusters run one after another; within a cluster every CUDA thread is a fiber
// and the hub picks a random runnable fiber after every device-API call. Copies land late (see deliver_policy).
// Also here: page protection of shared memory and the SIGSEGV handler that turns faults into reports.
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "emulator.hpp"

namespace cf::dev::emu {

__thread const ThreadIds* tls_ids = nullptr;
Launch* g_launch = nullptr;
__thread Thread* g_current = nullptr;

namespace {

// A pending copy older than this many hub iterations may land early, at random; younger ones wait until no thread
// can run, so a consumer that reads before waiting sees the poison.
constexpr uint64_t kEarlyDeliveryAge = 512;
constexpr uint32_t kEarlyDeliveryOneIn = 32;
constexpr uint64_t kLivelockPolls = 1u << 20;  // consecutive polls (nanosleep, failed try_wait) without progress

std::mutex g_launch_mutex;  // launches are serialised process-wide
pthread_t g_launch_thread;
LaunchStats g_last_stats;
uint64_t g_lose_remote_arrival = 0;  // for the next launch (lose_remote_arrival)

// ---- watchdog: a spin loop that never reaches a device-API call cannot be detected by the scheduler ----------------
// Never destroyed: the detached watchdog thread waits on them until the process ends (glibc's condition-variable
// destructor would wait for it at exit).
struct WatchState {
  std::mutex mutex;
  std::condition_variable cv;
  Launch* launch = nullptr;
};
WatchState& watch_state() {
  static WatchState* state = new WatchState();
  return *state;
}

double watchdog_seconds() {
  const char* env = std::getenv("CF_EMU_WATCHDOG_S");
  if (env == nullptr || *env == '\0') return 120.0;
  return std::strtod(env, nullptr);
}

void watchdog_main() {
  WatchState& w = watch_state();
  std::unique_lock<std::mutex> lock(w.mutex);
  const Launch* watched = nullptr;
  uint64_t last_progress = 0;
  auto last_change = std::chrono::steady_clock::now();
  for (;;) {
    w.cv.wait_for(lock, std::chrono::seconds(1));
    const double limit = watchdog_seconds();
    const auto now = std::chrono::steady_clock::now();
    if (w.launch == nullptr || limit <= 0) {
      watched = nullptr;
      continue;
    }
    const uint64_t progress = w.launch->progress.load(std::memory_order_relaxed);
    if (w.launch != watched || progress != last_progress) {
      watched = w.launch;
      last_progress = progress;
      last_change = now;
      continue;
    }
    if (std::chrono::duration<double>(now - last_change).count() > limit) {
      std::fprintf(stderr,
                   "cf_emu watchdog: kernel '%s' made no progress for %.0f s: a thread spins without reaching a "
                   "device-API call (a spin on plain memory?) or only re-polls. Aborting (CF_EMU_WATCHDOG_S=0 "
                   "disables this).\n",
                   w.launch->name.c_str(), limit);
      std::fflush(stderr);
      std::abort();
    }
  }
}

void start_watchdog_once() {
  static std::once_flag once;
  std::call_once(once, [] { std::thread(watchdog_main).detach(); });
}

// ---- fault handler -----------------------------------------------------------------------------------------------
struct sigaction g_old_segv, g_old_bus;
constexpr size_t kAltStackBytes = 64 * 1024;

void chain(int sig, siginfo_t* info, void* uctx) {
  const struct sigaction& old = sig == SIGSEGV ? g_old_segv : g_old_bus;
  if ((old.sa_flags & SA_SIGINFO) != 0 && old.sa_sigaction != nullptr) {
    old.sa_sigaction(sig, info, uctx);
    return;
  }
  if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN && old.sa_handler != nullptr) {
    old.sa_handler(sig);
    return;
  }
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigaction(sig, &dfl, nullptr);  // return and fault again: default action
}

bool fault_is_write(void* uctx) {
#if defined(__x86_64__)
  return (static_cast<ucontext_t*>(uctx)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#else
  (void)uctx;
  return false;
#endif
}

uintptr_t fault_pc(void* uctx) {
#if defined(__x86_64__)
  return uintptr_t(static_cast<ucontext_t*>(uctx)->uc_mcontext.gregs[REG_RIP]);
#else
  (void)uctx;
  return 0;
#endif
}

std::string pc_string(uintptr_t pc) {
  if (pc == 0) return "";
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(pc), &info) != 0 && info.dli_fname != nullptr) {
    const char* base = std::strrchr(info.dli_fname, '/');
    return std::string(" [pc ") + (base ? base + 1 : info.dli_fname) + "+" +
           hex(pc - reinterpret_cast<uintptr_t>(info.dli_fbase)) + "]";
  }
  return " [pc " + hex(pc) + "]";
}

const Copy* find_inflight(const Cta& c, uint32_t off) {
  for (const Copy& cp : g_launch->cluster.pending)
    if (cp.dst == &c && off >= cp.dst_off && off < cp.dst_off + cp.bytes) return &cp;
  return nullptr;
}

const char* copy_name(CopyKind k) {
  switch (k) {
    case CopyKind::G2S: return "bulk_copy_g2s";
    case CopyKind::S2Peer: return "bulk_copy_s2peer";
    case CopyKind::Tma2d: return "tma_load_2d";
  }
  return "copy";
}

void open_temporarily(uint32_t slot, View view, int64_t page) {
  SmemArena& arena = SmemArena::instance();
  TempOpen e;
  e.slot = slot;
  e.view = view;
  if (page >= 0 && page < int64_t(arena.data_pages())) {
    e.page = uint32_t(page);
    arena.protect(slot, view, e.page, e.page + 1, true);
  } else {  // a guard page of the window
    e.global = true;
    e.addr = reinterpret_cast<uintptr_t>(arena.data_start(slot, view)) + uintptr_t(page * int64_t(arena.page()));
    mprotect(reinterpret_cast<void*>(e.addr), arena.page(), PROT_READ | PROT_WRITE);
  }
  g_launch->temp_open.push_back(e);
}

void record_dsmem_access(Cta& target, const Thread* t) {
  const uint32_t a = t->cta->rank;
  target.access_seq[a] = next_seq();
  target.access_phase[a] = g_launch->cluster.cbar_phase + (t->cluster_arrived ? 1 : 0);
  target.accessor[a] = t->index;
  target.accessor_loc[a] = t->last_loc;
}

bool handle_fault(uintptr_t addr, bool is_write, uintptr_t pc) {
  Launch& L = *g_launch;
  Thread* t = g_current;
  if (t == nullptr) return false;
  const char* rw = is_write ? "write" : "read";
  const std::string after = " (after " + std::string(t->last_op) + " at " + where(t->last_loc) + ")" + pc_string(pc);
  SmemArena& arena = SmemArena::instance();
  if (arena.contains(addr)) {
    const SmemArena::Where w = arena.locate(addr);
    Cluster& cl = L.cluster;
    const bool dsmem = w.view == View::Dsmem;
    if (w.slot >= cl.size) {
      report(dsmem ? EmuErrorKind::DsmemInvalid : EmuErrorKind::SmemOutOfBounds,
             describe(t) + ": " + rw + " of shared-memory window " + std::to_string(w.slot) +
                 ", which belongs to no block of this cluster (size " + std::to_string(cl.size) + ")" + after);
      open_temporarily(w.slot, w.view, w.page);
      return true;
    }
    Cta& c = cl.ctas[w.slot];
    const std::string whose = dsmem ? "block rank " + std::to_string(c.rank) + "'s shared memory (DSMEM)"
                                    : "this block's shared memory";
    if (w.offset < 0 || w.offset >= int64_t(c.smem_bytes)) {
      const std::string pos = w.offset < 0 ? std::to_string(-w.offset) + " bytes before the start"
                                           : "offset " + std::to_string(w.offset) + ", " +
                                                 std::to_string(w.offset - int64_t(c.smem_bytes)) +
                                                 " bytes past the end";
      report(dsmem ? EmuErrorKind::DsmemInvalid : EmuErrorKind::SmemOutOfBounds,
             describe(t) + ": " + rw + " out of bounds of " + whose + " (" + std::to_string(c.smem_bytes) +
                 " bytes): " + pos + after);
      open_temporarily(w.slot, w.view, w.page);
      return true;
    }
    const uint32_t off = uint32_t(w.offset);
    if (c.exited) {
      report(EmuErrorKind::DsmemInvalid, describe(t) + ": " + rw + " of " + whose + " at offset " +
                                             std::to_string(off) + " after that block exited (a missing final "
                                                                   "cluster_sync()?)" +
                                             after);
      open_temporarily(w.slot, w.view, w.page);
      return true;
    }
    if (dsmem && !cl.window_open) {
      report(EmuErrorKind::DsmemInvalid,
             describe(t) + ": " + rw + " of " + whose + " at offset " + std::to_string(off) +
                 " before any cluster barrier completed, so the peer may not have started; call cluster_sync() "
                 "(or cluster_arrive() + cluster_wait()) first" +
                 after);
      open_temporarily(w.slot, w.view, w.page);
      return true;
    }
    const uint32_t page = uint32_t(w.page);
    if (c.inflight_pages[page] > 0) {
      if (const Copy* cp = find_inflight(c, off)) {
        report(EmuErrorKind::InFlightAccess,
               describe(t) + ": " + rw + " of " + whose + " at offset " + std::to_string(off) +
                   ", inside the destination [" + std::to_string(cp->dst_off) + ", " +
                   std::to_string(cp->dst_off + cp->bytes) + ") of an in-flight " + copy_name(cp->kind) +
                   " issued by " + describe(&cl.threads[cp->issuer]) + " at " + where(cp->loc) +
                   ": wait on its mbarrier first (and do not reuse a buffer before its consumers are done)" + after);
        open_temporarily(w.slot, w.view, w.page);
        return true;
      }
      // A neighbour of an in-flight destination on the same page: let this fiber through until it switches.
      ++L.stats.protection_faults;
      if (dsmem) record_dsmem_access(c, t);
      open_temporarily(w.slot, w.view, w.page);
      return true;
    }
    if (dsmem) {  // first touch of this page since the last cluster barrier: note who accessed the peer
      record_dsmem_access(c, t);
      c.armed[page] = 1;
      refresh_pages(c, View::Dsmem, page, page + 1);
      return true;
    }
    open_temporarily(w.slot, w.view, w.page);
    return true;
  }
  GlobalBlock block;
  if (find_global_guard(addr, &block)) {
    report(EmuErrorKind::GlobalOutOfBounds,
           describe(t) + ": global-memory " + rw + " " + std::to_string(addr - block.data - block.bytes) +
               " bytes past the end of a " + std::to_string(block.bytes) + "-byte DeviceBuffer" + after);
    TempOpen e;
    e.global = true;
    e.addr = block.guard;
    mprotect(reinterpret_cast<void*>(block.guard), size_t(sysconf(_SC_PAGESIZE)), PROT_READ | PROT_WRITE);
    L.temp_open.push_back(e);
    return true;
  }
  if (L.stacks != nullptr && L.stacks->is_guard(addr)) {
    char msg[512];
    const int n = std::snprintf(msg, sizeof msg,
                                "cf_emu: kernel '%s': fiber stack overflow in %s (stack %zu KB; set CF_EMU_STACK_KB "
                                "higher or use fewer local arrays). Aborting.\n",
                                L.name.c_str(), describe(t).c_str(), L.stacks->stack_size() / 1024);
    if (n > 0) (void)!write(2, msg, size_t(n));
    std::abort();
  }
  return false;
}

void on_fault(int sig, siginfo_t* info, void* uctx) {
  if (g_launch != nullptr && pthread_equal(pthread_self(), g_launch_thread) &&
      handle_fault(reinterpret_cast<uintptr_t>(info->si_addr), fault_is_write(uctx), fault_pc(uctx)))
    return;
  chain(sig, info, uctx);
}

void install_fault_handler_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_old_segv);
    sigaction(SIGBUS, &sa, &g_old_bus);
  });
}

// ---- helpers -----------------------------------------------------------------------------------------------------
std::string dim_str(const Dim3& d, const Dim3& extent) {
  if (extent.y == 1 && extent.z == 1) return std::to_string(d.x);
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}

std::string ranges(const std::vector<uint32_t>& sorted) {
  std::string out;
  for (size_t i = 0; i < sorted.size();) {
    size_t j = i;
    while (j + 1 < sorted.size() && sorted[j + 1] == sorted[j] + 1) ++j;
    if (!out.empty()) out += ",";
    out += std::to_string(sorted[i]);
    if (j > i) out += "-" + std::to_string(sorted[j]);
    i = j + 1;
  }
  return out;
}

uint64_t resolve_seed(const LaunchConfig& cfg) {
  if (cfg.emu_seed != 0) return cfg.emu_seed;
  if (const char* env = std::getenv("CF_EMU_SEED"); env != nullptr && *env != '\0') {
    const uint64_t v = std::strtoull(env, nullptr, 0);
    if (v != 0) return v;
  }
  return 1;
}

void restore_temp_open(Launch& L) {
  if (L.temp_open.empty()) return;
  Cluster& cl = L.cluster;
  for (const TempOpen& e : L.temp_open) {
    if (e.global) {
      mprotect(reinterpret_cast<void*>(e.addr), size_t(sysconf(_SC_PAGESIZE)), PROT_NONE);
    } else if (e.slot < cl.size) {
      refresh_pages(cl.ctas[e.slot], e.view, e.page, e.page + 1);
    } else {
      SmemArena::instance().protect(e.slot, e.view, e.page, e.page + 1, false);
    }
  }
  L.temp_open.clear();
}

// Virtual time one stall may last before it is reported as a deadlock (far past any wait budget).
constexpr uint64_t kMaxStallNs = uint64_t(60) * 1000 * 1000 * 1000;
constexpr uint64_t kFirstStallStepNs = 1000;

bool wake_timed_waiters(Launch& L) {
  if (L.seq == L.timeout_progress) {
    // Nothing changed since the last round: only the passing of time can end the stall (a bounded wait expiring).
    if (L.stalled_ns >= kMaxStallNs) return false;  // a real deadlock
    L.stall_step_ns = L.stall_step_ns == 0 ? kFirstStallStepNs : 2 * L.stall_step_ns;
    L.stall_ns += L.stall_step_ns;
    L.stalled_ns += L.stall_step_ns;
  } else {
    L.stall_step_ns = 0;
    L.stalled_ns = 0;
  }
  L.timeout_progress = L.seq;
  bool any = false;
  for (Thread& t : L.cluster.threads) {
    if (t.state != RunState::Blocked || !t.timed_wait) continue;
    if (t.wait == WaitKind::Mbarrier) {
      auto* m = static_cast<MbarState*>(const_cast<void*>(t.wait_obj));
      m->waiters.erase(std::remove(m->waiters.begin(), m->waiters.end(), &t), m->waiters.end());
    }
    t.timed_out = true;
    wake(&t);
    any = true;
  }
  return any;
}

void report_deadlock(Launch& L) {
  Cluster& cl = L.cluster;
  struct Group {
    std::string what;
    uint32_t rank;
    std::vector<uint32_t> threads;
  };
  std::vector<Group> groups;
  for (Thread& t : cl.threads) {
    if (t.state != RunState::Blocked) continue;
    const std::string what = describe_wait(&t) + " at " + where(t.wait_loc);
    auto it = std::find_if(groups.begin(), groups.end(),
                           [&](const Group& g) { return g.rank == t.cta->rank && g.what == what; });
    if (it == groups.end()) {
      groups.push_back({what, t.cta->rank, {}});
      it = groups.end() - 1;
    }
    it->threads.push_back(t.ids.thread_rank);
  }
  std::string msg = "no thread can make progress and no copy is in flight; waiting: ";
  constexpr size_t kShown = 6;
  for (size_t i = 0; i < groups.size() && i < kShown; ++i) {
    const Group& g = groups[i];
    if (i > 0) msg += "; ";
    msg += "block rank " + std::to_string(g.rank) + " thread" + (g.threads.size() > 1 ? "s " : " ") +
           ranges(g.threads) + ": " + g.what;
  }
  if (groups.size() > kShown) msg += "; (+" + std::to_string(groups.size() - kShown) + " more groups)";
  if (cl.exited > 0) msg += "; " + std::to_string(cl.exited) + " threads have exited";
  report(EmuErrorKind::Deadlock, msg);
}

void fiber_main(void* arg) {
  auto* t = static_cast<Thread*>(arg);
  Launch& L = *g_launch;
  fiber_entered(L.hub);
  try {
    check_abort(t);
    L.invoke(L.bound);
  } catch (const KernelAbort&) {
  } catch (const std::exception& e) {
    report(EmuErrorKind::KernelException, describe(t) + ": the kernel threw '" + e.what() + "' (after " +
                                              t->last_op + " at " + where(t->last_loc) + ")");
  } catch (...) {
    report(EmuErrorKind::KernelException, describe(t) + ": the kernel threw a non-standard exception");
  }
  t->state = RunState::Done;
  fiber_switch(t->ctx, L.hub, true);
  std::abort();  // a finished fiber is never resumed
}

void run_thread(Launch& L, Thread* t) {
  g_current = t;
  tls_ids = &t->ids;
  t->state = RunState::Running;
  t->started = true;
  ++L.stats.switches;
  fiber_switch(L.hub, t->ctx, false);
  g_current = nullptr;
  tls_ids = nullptr;
  Cluster& cl = L.cluster;
  if (t->state == RunState::Done) {
    if (L.failed) return;
    next_seq();
    --cl.live;
    ++cl.exited;
    Cta& c = *t->cta;
    --c.live;
    on_thread_exit(t);
    if (c.live == 0 && !L.failed) {
      on_cta_exit(c);
      c.exited = true;
      refresh_cta(c);
    }
  } else if (t->state == RunState::Running) {
    t->state = RunState::Runnable;
    cl.runnable.push_back(t);
  }
}

// Unwinds every fiber that has started and not finished (after an error), so destructors on their stacks run.
void abort_fibers(Launch& L) {
  for (Thread& t : L.cluster.threads) {
    if (t.state == RunState::Done) continue;
    if (!t.started) {
      t.state = RunState::Done;
      continue;
    }
    g_current = &t;
    tls_ids = &t.ids;
    t.state = RunState::Running;
    fiber_switch(L.hub, t.ctx, false);
    g_current = nullptr;
    tls_ids = nullptr;
  }
}

void setup_cluster(Launch& L, const Dim3& cidx) {
  Cluster& cl = L.cluster;
  const LaunchConfig& cfg = L.cfg;
  const Dim3 cdim = cfg.cluster;
  const uint32_t n_cta = uint32_t(cdim.volume());
  const uint32_t n_thr = uint32_t(cfg.block.volume());
  const uint32_t n_warps = (n_thr + kWarpSize - 1) / kWarpSize;
  SmemArena& arena = SmemArena::instance();
  const Dim3 cgrid{cfg.grid.x / cdim.x, cfg.grid.y / cdim.y, cfg.grid.z / cdim.z};

  cl.idx = cidx;
  cl.size = n_cta;
  cl.ctas.clear();
  cl.ctas.resize(n_cta);
  cl.threads.clear();
  cl.threads.resize(size_t(n_cta) * n_thr);
  cl.live = n_cta * n_thr;
  cl.exited = 0;
  cl.cbar_arrived = 0;
  cl.cbar_exited_arrived = 0;
  cl.cbar_phase = 0;
  cl.cbar_waiters.clear();
  cl.cbar_completed_seq = 0;
  cl.window_open = false;
  cl.runnable.clear();
  cl.pending.clear();

  for (uint32_t r = 0; r < n_cta; ++r) {
    Cta& c = cl.ctas[r];
    c.rank = r;
    c.idx_in_cluster = Dim3{r % cdim.x, (r / cdim.x) % cdim.y, r / (cdim.x * cdim.y)};
    c.block_idx = Dim3{cidx.x * cdim.x + c.idx_in_cluster.x, cidx.y * cdim.y + c.idx_in_cluster.y,
                       cidx.z * cdim.z + c.idx_in_cluster.z};
    c.smem_bytes = uint32_t(cfg.smem_bytes);
    arena.configure(r, c.smem_bytes);
    c.smem = arena.base(r, View::Local);
    c.dsmem = arena.base(r, View::Dsmem);
    c.num_threads = n_thr;
    c.live = n_thr;
    c.threads = &cl.threads[size_t(r) * n_thr];
    c.bar0.expected = n_thr;
    c.bar0.warp_loc.assign(n_warps, SrcLoc{});
    c.bar0.warp_loc_gen.assign(n_warps, 0);
    c.warps.resize(n_warps);
    if (n_thr % kWarpSize != 0) c.warps.back().exited = ~((1u << (n_thr % kWarpSize)) - 1u);
    c.inflight_pages.assign(arena.data_pages(), 0);
    c.armed.assign(arena.data_pages(), 0);
    // Fresh shared memory holds garbage on a GPU: fill it with 0xFF (NaN in fp16/bf16/fp32).
    arena.protect(r, View::Local, arena.first_page(r), arena.data_pages(), true);
    std::memset(c.smem, 0xff, c.smem_bytes);
    refresh_cta(c);
    for (uint32_t i = 0; i < n_thr; ++i) {
      Thread& t = c.threads[i];
      t.cta = &c;
      t.index = r * n_thr + i;
      t.warp = i / kWarpSize;
      ThreadIds& ids = t.ids;
      ids.thread_idx = Dim3{i % cfg.block.x, (i / cfg.block.x) % cfg.block.y, i / (cfg.block.x * cfg.block.y)};
      ids.block_idx = c.block_idx;
      ids.block_dim = cfg.block;
      ids.grid_dim = cfg.grid;
      ids.cluster_dim = cdim;
      ids.cluster_idx = cidx;
      ids.cluster_grid_dim = cgrid;
      ids.block_idx_in_cluster = c.idx_in_cluster;
      ids.thread_rank = i;
      ids.lane = i % kWarpSize;
      ids.cluster_rank = r;
      ids.cluster_size = n_cta;
      ids.smem = c.smem;
      ids.smem_bytes = c.smem_bytes;
      t.stack = L.stacks->acquire();
      fiber_prepare(t.ctx, t.stack, fiber_main, &t);
      cl.runnable.push_back(&t);
    }
  }
  for (uint32_t r = n_cta; r < kMaxSlots; ++r) {  // windows of no block in this cluster: closed
    arena.protect(r, View::Local, 0, arena.data_pages(), false);
    arena.protect(r, View::Dsmem, 0, arena.data_pages(), false);
  }
  L.stats.threads += cl.threads.size();
}

void run_cluster(Launch& L, const Dim3& cidx) {
  setup_cluster(L, cidx);
  Cluster& cl = L.cluster;
  for (;;) {
    restore_temp_open(L);
    if (L.failed || cl.live == 0) break;
    ++L.iter;
    if (!cl.pending.empty() && L.rng.one_in(kEarlyDeliveryOneIn)) {
      const size_t i = L.rng.below(uint32_t(cl.pending.size()));
      if (L.iter - cl.pending[i].issue_iter >= kEarlyDeliveryAge) {
        deliver(i);
        continue;
      }
    }
    if (cl.runnable.empty()) {
      if (!cl.pending.empty()) {
        deliver(L.rng.below(uint32_t(cl.pending.size())));
        continue;
      }
      if (wake_timed_waiters(L)) continue;
      report_deadlock(L);
      break;
    }
    const size_t i = L.rng.below(uint32_t(cl.runnable.size()));
    Thread* t = cl.runnable[i];
    cl.runnable[i] = cl.runnable.back();
    cl.runnable.pop_back();
    run_thread(L, t);
  }
  restore_temp_open(L);
  if (L.failed) {
    abort_fibers(L);
  } else if (!cl.pending.empty()) {
    const Copy& cp = cl.pending.front();
    report(EmuErrorKind::AsyncCopyMisuse, std::string("kernel finished with ") + copy_name(cp.kind) + " issued by " +
                                              describe(&cl.threads[cp.issuer]) + " at " + where(cp.loc) +
                                              " still in flight");
  }
  for (Thread& t : cl.threads) L.stacks->release(t.stack);
  // Leave no window open for the next cluster or launch.
  SmemArena& arena = SmemArena::instance();
  for (uint32_t r = 0; r < cl.size; ++r) {
    arena.protect(r, View::Local, 0, arena.data_pages(), false);
    arena.protect(r, View::Dsmem, 0, arena.data_pages(), false);
  }
  ++L.stats.clusters;
}

}  // namespace

// ---- services used by the other translation units -----------------------------------------------------------------
void outside_kernel() {
  throw Error("cf::dev: a device-API function was called outside a kernel launch (host code must not call it)");
}

}  // namespace cf::dev::emu

namespace cf::dev {
const char* to_string(EmuErrorKind kind) {
  switch (kind) {
    case EmuErrorKind::Deadlock: return "deadlock";
    case EmuErrorKind::Livelock: return "livelock";
    case EmuErrorKind::BarrierDivergence: return "divergent barrier";
    case EmuErrorKind::BarrierExit: return "barrier left by an exited thread";
    case EmuErrorKind::MbarrierMisuse: return "mbarrier misuse";
    case EmuErrorKind::AsyncCopyMisuse: return "async copy misuse";
    case EmuErrorKind::InFlightAccess: return "access to an in-flight copy";
    case EmuErrorKind::SmemOutOfBounds: return "shared memory out of bounds";
    case EmuErrorKind::DsmemInvalid: return "invalid DSMEM access";
    case EmuErrorKind::GlobalOutOfBounds: return "global memory out of bounds";
    case EmuErrorKind::Misaligned: return "misaligned access";
    case EmuErrorKind::WarpCollective: return "warp collective misuse";
    case EmuErrorKind::KernelException: return "kernel exception";
    case EmuErrorKind::InvalidUse: return "invalid use";
  }
  return "error";
}
}  // namespace cf::dev

namespace cf::dev::emu {

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string where(SrcLoc loc) {
  const char* file = loc.file_name();
  if (file == nullptr || *file == '\0') return "?";
  // keep the last two path components
  const char* last = std::strrchr(file, '/');
  const char* shown = file;
  if (last != nullptr) {
    const char* prev = last;
    while (prev > file && *(prev - 1) != '/') --prev;
    shown = prev > file ? prev : file;
    if (prev == file && *file == '/') shown = last + 1;
  }
  return std::string(shown) + ":" + std::to_string(loc.line());
}

std::string describe(const Thread* t) {
  if (t == nullptr) return "the emulator";
  const ThreadIds& ids = t->ids;
  return "block " + dim_str(ids.block_idx, ids.grid_dim) + " (cluster rank " + std::to_string(ids.cluster_rank) +
         "), thread " + dim_str(ids.thread_idx, ids.block_dim) + " (warp " + std::to_string(t->warp) + " lane " +
         std::to_string(ids.lane) + ")";
}

void report(EmuErrorKind kind, const std::string& what) {
  Launch& L = *g_launch;
  if (L.failed) return;
  L.failed = true;
  L.error_kind = kind;
  L.error = "cf_emu: kernel '" + L.name + "' (seed " + std::to_string(L.seed) + "): " + cf::dev::to_string(kind) +
            ": " + what;
}

void fail(EmuErrorKind kind, const Thread* t, SrcLoc loc, const char* op, const std::string& detail) {
  report(kind, describe(t) + ": " + op + " at " + where(loc) + ": " + detail);
  throw KernelAbort{};
}

Thread* enter(SrcLoc loc, const char* op) {
  Thread* t = g_current;
  if (t == nullptr) outside_kernel();
  t->last_loc = loc;
  t->last_op = op;
  check_abort(t);
  return t;
}

void check_abort(Thread* /*t*/) {
  if (g_launch->failed) throw KernelAbort{};
}

void yield(Thread* t) {
  fiber_switch(t->ctx, g_launch->hub, false);
  check_abort(t);
}

bool block(Thread* t, WaitKind kind, const void* obj, uint32_t arg, SrcLoc loc, bool timed) {
  t->state = RunState::Blocked;
  t->wait = kind;
  t->wait_obj = obj;
  t->wait_arg = arg;
  t->wait_loc = loc;
  t->timed_wait = timed;
  t->timed_out = false;
  fiber_switch(t->ctx, g_launch->hub, false);
  t->wait = WaitKind::None;
  t->timed_wait = false;
  check_abort(t);
  return !t->timed_out;
}

void wake(Thread* t) {
  if (t->state != RunState::Blocked) return;
  t->state = RunState::Runnable;
  g_launch->cluster.runnable.push_back(t);
}

uint64_t next_seq() {
  Launch& L = *g_launch;
  L.poll_streak = 0;
  L.progress.fetch_add(1, std::memory_order_relaxed);
  return ++L.seq;
}

void note_poll() {
  Launch& L = *g_launch;
  if (++L.poll_streak > kLivelockPolls) {
    Thread* t = g_current;
    fail(EmuErrorKind::Livelock, t, t->last_loc, t->last_op,
         "threads only poll (try_wait returning false, nanosleep) and nothing else happens");
  }
}

void refresh_pages(Cta& c, View v, uint32_t page_lo, uint32_t page_hi) {
  SmemArena& arena = SmemArena::instance();
  const Cluster& cl = g_launch->cluster;
  const uint32_t first = arena.first_page(c.rank);
  auto open = [&](uint32_t p) {
    if (c.exited || p < first || c.inflight_pages[p] > 0) return false;
    if (v == View::Dsmem) return cl.window_open && c.armed[p] != 0;
    return true;
  };
  uint32_t run_start = page_lo;
  while (run_start < page_hi) {
    const bool state = open(run_start);
    uint32_t run_end = run_start + 1;
    while (run_end < page_hi && open(run_end) == state) ++run_end;
    arena.protect(c.rank, v, run_start, run_end, state);
    run_start = run_end;
  }
}

void refresh_cta(Cta& c) {
  const uint32_t pages = SmemArena::instance().data_pages();
  refresh_pages(c, View::Local, 0, pages);
  refresh_pages(c, View::Dsmem, 0, pages);
}

namespace {
template <typename F>
void raw_access(Cta& c, uint32_t off, uint32_t bytes, F&& f) {
  if (bytes == 0) return;
  SmemArena& arena = SmemArena::instance();
  const size_t abs = arena.base_offset(c.rank) + size_t(off);
  const uint32_t lo = uint32_t(abs / arena.page());
  const uint32_t hi = uint32_t((abs + bytes + arena.page() - 1) / arena.page());
  arena.protect(c.rank, View::Local, lo, hi, true);
  f(c.smem + off);
  refresh_pages(c, View::Local, lo, hi);
}
}  // namespace

void raw_write(Cta& c, uint32_t off, const void* src, uint32_t bytes) {
  raw_access(c, off, bytes, [&](uint8_t* p) { std::memcpy(p, src, bytes); });
}
void raw_fill(Cta& c, uint32_t off, uint8_t value, uint32_t bytes) {
  raw_access(c, off, bytes, [&](uint8_t* p) { std::memset(p, value, bytes); });
}
void raw_read(Cta& c, uint32_t off, void* dst, uint32_t bytes) {
  raw_access(c, off, bytes, [&](uint8_t* p) { std::memcpy(dst, p, bytes); });
}

uint32_t local_offset(Thread* t, const void* p, uint32_t bytes, SrcLoc loc, const char* op, const char* what) {
  const Cta& c = *t->cta;
  const auto a = reinterpret_cast<uintptr_t>(p);
  const auto base = reinterpret_cast<uintptr_t>(c.smem);
  if (a >= base && a < base + c.smem_bytes && a + bytes > base + c.smem_bytes) {
    fail(EmuErrorKind::SmemOutOfBounds, t, loc, op,
         std::string(what) + " [" + std::to_string(a - base) + ", " + std::to_string(a - base + bytes) +
             ") extends " + std::to_string(a + bytes - base - c.smem_bytes) +
             " bytes past the end of this block's dynamic shared memory (" + std::to_string(c.smem_bytes) +
             " bytes)");
  }
  if (a < base || a + bytes > base + c.smem_bytes || a + bytes < a) {
    std::string detail = std::string(what) + " [" + hex(a) + ", +" + std::to_string(bytes) +
                         ") is not inside this block's dynamic shared memory (" + std::to_string(c.smem_bytes) +
                         " bytes at " + hex(base) + ")";
    if (SmemArena::instance().contains(a)) {
      const SmemArena::Where w = SmemArena::instance().locate(a);
      if (w.view == View::Dsmem) detail += "; pass this block's own address, not a map_shared_rank() pointer";
    }
    fail(EmuErrorKind::InvalidUse, t, loc, op, detail);
  }
  return uint32_t(a - base);
}

// ---- the launch ----------------------------------------------------------------------------------------------------
void run_launch(const LaunchConfig& cfg, KernelInvoker invoke, const void* bound) {
  const std::lock_guard<std::mutex> lock(g_launch_mutex);
  install_fault_handler_once();
  start_watchdog_once();
  static StackPool* stacks = new StackPool();  // kept for the life of the process: stacks are reused

  auto L = std::make_unique<Launch>();
  L->cfg = cfg;
  L->name = cfg.name != nullptr ? cfg.name : "kernel";
  L->invoke = invoke;
  L->bound = bound;
  L->seed = resolve_seed(cfg);
  L->rng.state = L->seed * 0x2545f4914f6cdd1dull;
  L->stacks = stacks;
  L->stats.seed = L->seed;
  L->lose_remote_arrival = g_lose_remote_arrival;
  g_lose_remote_arrival = 0;

  // The fault handler runs on its own stack: fiber stacks are small and a stack overflow must be reportable.
  static thread_local std::vector<uint8_t> alt_stack(kAltStackBytes);
  stack_t alt{}, old_alt{};
  alt.ss_sp = alt_stack.data();
  alt.ss_size = alt_stack.size();
  sigaltstack(&alt, &old_alt);

  g_launch_thread = pthread_self();
  g_launch = L.get();
  {
    const std::lock_guard<std::mutex> watch(watch_state().mutex);
    watch_state().launch = L.get();
  }
  const auto t0 = std::chrono::steady_clock::now();
  const Dim3 cdim = cfg.cluster;
  const Dim3 cgrid{cfg.grid.x / cdim.x, cfg.grid.y / cdim.y, cfg.grid.z / cdim.z};
  try {
    for (uint32_t cz = 0; cz < cgrid.z && !L->failed; ++cz)
      for (uint32_t cy = 0; cy < cgrid.y && !L->failed; ++cy)
        for (uint32_t cx = 0; cx < cgrid.x && !L->failed; ++cx) run_cluster(*L, Dim3{cx, cy, cz});
  } catch (...) {
    g_launch = nullptr;
    sigaltstack(&old_alt, nullptr);
    const std::lock_guard<std::mutex> watch(watch_state().mutex);
    watch_state().launch = nullptr;
    throw;
  }
  L->stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  g_last_stats = L->stats;
  g_launch = nullptr;
  sigaltstack(&old_alt, nullptr);
  {
    const std::lock_guard<std::mutex> watch(watch_state().mutex);
    watch_state().launch = nullptr;
  }
  if (L->failed) throw EmuError(L->error_kind, L->error);
}

void lose_remote_arrival(uint64_t nth) {
  const std::lock_guard<std::mutex> lock(g_launch_mutex);
  g_lose_remote_arrival = nth;
}

LaunchStats last_launch_stats() {
  const std::lock_guard<std::mutex> lock(g_launch_mutex);
  return g_last_stats;
}

}  // namespace cf::dev::emu
