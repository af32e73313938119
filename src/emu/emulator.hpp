// Internal state of the CPU emulator: a launch runs its clusters one after another; a cluster's threads are fibers
// scheduled by a hub loop (scheduler.cpp) in a seeded random order, switching at every device-API call.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/device/launch.hpp"
#include "fiber.hpp"
#include "memory.hpp"

namespace cf::dev::emu {

struct Thread;
struct Cta;
struct Cluster;
struct Launch;

// Thrown inside a fiber to unwind it once the launch has failed; caught at the fiber's entry. Not a std::exception,
// so kernel code catching std::exception cannot swallow it.
struct KernelAbort {};

enum class RunState : uint8_t { Runnable, Running, Blocked, Done };
enum class WaitKind : uint8_t { None, BlockSync, NamedBarrier, ClusterWait, Mbarrier, Warp };

struct Thread {
  ThreadIds ids;
  Cta* cta = nullptr;
  uint32_t index = 0;  // in the cluster: rank * threads_per_block + thread_rank
  uint32_t warp = 0;
  FiberContext ctx;
  Stack stack;
  RunState state = RunState::Runnable;
  bool started = false;

  // What a blocked thread waits for (deadlock reports).
  WaitKind wait = WaitKind::None;
  const void* wait_obj = nullptr;
  uint32_t wait_arg = 0;
  uint32_t wait_parity = 0;
  SrcLoc wait_loc;
  bool timed_wait = false;  // in try_wait: may be woken without the phase completing
  bool timed_out = false;

  SrcLoc last_loc;  // the last device-API call (reports of faults between calls)
  const char* last_op = "kernel start";

  uint64_t last_sync_seq = 0;          // completion seq of the last barrier phase this thread passed
  uint64_t last_cluster_sync_seq = 0;  // same, cluster barriers only
  bool cluster_arrived = false;
  uint64_t cluster_arrive_phase = 0;
  uint64_t collective_result = 0;
};

struct BlockBarrier {  // block_sync (id 0) and named barriers 1..15
  uint32_t expected = 0;
  uint32_t arrived = 0;
  uint64_t generation = 0;
  std::vector<Thread*> waiters;
  SrcLoc loc;                          // first arrival of this generation
  std::vector<SrcLoc> warp_loc;        // block_sync: per warp, where its first lane arrived this generation
  std::vector<uint64_t> warp_loc_gen;  // generation + 1 when warp_loc is set
};

struct MbarState {
  bool valid = false;
  uint32_t count = 0;
  int64_t pending = 0;  // arrivals still needed this phase
  int64_t tx = 0;       // expected minus completed bytes this phase
  uint64_t phase = 0;   // completed phases
  uint32_t inflight = 0;
  std::vector<Thread*> waiters;
  uint32_t initializer = 0;  // thread index
  uint64_t init_seq = 0;
  SrcLoc init_loc;
  uint64_t completed_seq = 0;  // seq of the last phase completion
  std::array<uint64_t, kMaxSlots> remote_seq{};            // last remote arrival per CTA rank, current phase
  std::array<uint64_t, kMaxSlots> completed_remote_seq{};  // same, as of the last completed phase
};

struct WarpGroup {  // lanes meeting at one warp collective (same mask)
  WarpOp op = WarpOp::Sync;
  uint32_t mask = 0;
  uint32_t arrived = 0;
  int32_t width = 32;
  SrcLoc loc;
  std::array<uint64_t, 32> values{};
  std::array<int32_t, 32> args{};
  std::array<Thread*, 32> lanes{};
};

struct Warp {
  uint32_t exited = 0;  // lanes that exited (or do not exist in a partial last warp)
  std::vector<std::unique_ptr<WarpGroup>> groups;
};

enum class CopyKind : uint8_t { G2S, S2Peer, Tma2d };

struct Copy {
  CopyKind kind = CopyKind::G2S;
  Cta* dst = nullptr;
  uint32_t dst_off = 0, bytes = 0, bar_off = 0;
  const uint8_t* src_global = nullptr;
  Cta* src_cta = nullptr;
  uint32_t src_off = 0;
  std::vector<uint8_t> snapshot;  // S2Peer: the source bytes at issue
  TensorMap map{};
  int32_t x = 0, y = 0;
  uint32_t issuer = 0;  // thread index
  SrcLoc loc;
  uint64_t issue_iter = 0;
};

struct Cta {
  uint32_t rank = 0;
  Dim3 block_idx, idx_in_cluster;
  uint8_t* smem = nullptr;   // Local view base
  uint8_t* dsmem = nullptr;  // Dsmem view base
  uint32_t smem_bytes = 0;
  uint32_t num_threads = 0, live = 0;
  bool exited = false;
  Thread* threads = nullptr;  // num_threads consecutive entries of Cluster::threads
  BlockBarrier bar0;
  std::array<BlockBarrier, kMaxNamedBarrier + 1> named;
  std::unordered_map<uint32_t, MbarState> mbars;  // by smem offset
  std::vector<Warp> warps;
  std::vector<uint16_t> inflight_pages;  // in-flight copy destinations per data page
  std::vector<uint8_t> armed;            // Dsmem view pages opened since the last cluster barrier
  // DSMEM accesses to this CTA by each peer rank (observed at the first touch of a page per cluster phase).
  std::array<uint64_t, kMaxSlots> access_seq{}, access_phase{}, ordered_seq{};
  std::array<uint32_t, kMaxSlots> accessor{};
  std::array<SrcLoc, kMaxSlots> accessor_loc{};
};

struct Cluster {
  Dim3 idx;
  uint32_t size = 0;
  std::vector<Cta> ctas;
  std::vector<Thread> threads;
  uint32_t live = 0;
  uint32_t exited = 0;
  // cluster barrier
  uint32_t cbar_arrived = 0;
  uint32_t cbar_exited_arrived = 0;  // threads that arrived this phase and then exited
  uint64_t cbar_phase = 0;           // completed phases
  std::vector<Thread*> cbar_waiters;
  uint64_t cbar_completed_seq = 0;
  bool window_open = false;
  std::vector<Thread*> runnable;
  std::vector<Copy> pending;
  std::vector<std::unique_ptr<WarpGroup>> group_pool;
};

struct TempOpen {  // a page opened by the fault handler until the next hub entry
  bool global = false;
  uint32_t slot = 0;
  View view = View::Local;
  uint32_t page = 0;
  uintptr_t addr = 0;
};

struct Rng {
  uint64_t state = 0;
  uint64_t next() {  // splitmix64
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint32_t below(uint32_t n) { return uint32_t(((next() >> 32) * uint64_t(n)) >> 32); }
  bool one_in(uint32_t n) { return below(n) == 0; }
};

struct Launch {
  LaunchConfig cfg;
  std::string name;
  KernelInvoker invoke = nullptr;
  const void* bound = nullptr;
  uint64_t seed = 1;
  Rng rng;
  Cluster cluster;
  StackPool* stacks = nullptr;
  FiberContext hub;
  bool failed = false;
  EmuErrorKind error_kind = EmuErrorKind::InvalidUse;
  std::string error;
  uint64_t seq = 0;    // event sequence: every arrival, completion, copy, exit
  uint64_t iter = 0;   // hub iterations
  uint64_t poll_streak = 0;
  uint64_t timeout_progress = ~0ull;  // seq when timed waiters were last woken without progress
  // Virtual wall clock (dev::globaltimer_ns) = hub iterations (1 ns each: time passes with work, so waits that start
  // later read a later clock) + stall_ns. When the timed waiters were woken and nothing happened since (a stall), the
  // clock jumps by a step that doubles per consecutive stalled round: a bounded wait that can never complete
  // expires after a few rounds. A stall longer than kMaxStallNs is reported as a deadlock.
  uint64_t stall_ns = 0;
  uint64_t stall_step_ns = 0;   // 0: no stalled round since the last progress
  uint64_t stalled_ns = 0;      // virtual time spent in the current stall
  uint64_t lose_remote_arrival = 0;  // fault injection: the nth remote arrival of the launch is dropped (0: none)
  uint64_t remote_arrivals = 0;
  std::atomic<uint64_t> progress{0};  // read by the watchdog thread
  LaunchStats stats;
  std::vector<TempOpen> temp_open;
};

// ---- state shared by the emulator's translation units ------------------------------------------------------------
extern Launch* g_launch;           // the launch running on this process (launches are serialised)
extern __thread Thread* g_current;  // the thread whose fiber is running; null in the hub

// ---- scheduler services (scheduler.cpp) --------------------------------------------------------------------------
Thread* enter(SrcLoc loc, const char* op);  // every API call starts here: current thread, abort check
void check_abort(Thread* t);
void yield(Thread* t);  // stay runnable, let the scheduler pick
// Blocks until woken. Returns false only for a timed wait woken by the deadlock breaker (try_wait -> false).
bool block(Thread* t, WaitKind kind, const void* obj, uint32_t arg, SrcLoc loc, bool timed = false);
void wake(Thread* t);
uint64_t next_seq();
void note_poll();  // a call that does not count as progress (nanosleep, failed try_wait)

// Records the first error of the launch (later ones are dropped).
void report(EmuErrorKind kind, const std::string& what);
// report() + unwind the calling fiber.
[[noreturn]] void fail(EmuErrorKind kind, const Thread* t, SrcLoc loc, const char* op, const std::string& detail);
std::string describe(const Thread* t);  // "block (1,0,0) rank 1, thread 5 (warp 0 lane 5)"
std::string where(SrcLoc loc);           // "dir/file.hpp:42"
std::string hex(uint64_t v);

// Shared-memory page protection (scheduler.cpp).
void refresh_pages(Cta& c, View v, uint32_t page_lo, uint32_t page_hi);
void refresh_cta(Cta& c);
void raw_write(Cta& c, uint32_t off, const void* src, uint32_t bytes);  // emulator-side smem access
void raw_fill(Cta& c, uint32_t off, uint8_t value, uint32_t bytes);
void raw_read(Cta& c, uint32_t off, void* dst, uint32_t bytes);

// Offset of [p, p+bytes) in the calling thread's own smem, or fail(op) naming `what`.
uint32_t local_offset(Thread* t, const void* p, uint32_t bytes, SrcLoc loc, const char* op, const char* what);

// ---- sync.cpp / async.cpp hooks called by the scheduler --------------------------------------------------------
void on_thread_exit(Thread* t);   // barrier and warp bookkeeping (hub context)
void on_cta_exit(Cta& c);         // copies in flight, DSMEM accesses not ordered before the exit
void deliver(size_t pending_index);  // lands one pending copy (hub context)
void on_cluster_phase_complete(Cluster& cl);
std::string describe_wait(const Thread* t);  // for deadlock reports
std::string describe_mbar(const Cta& c, uint32_t off, const MbarState& m);

}  // namespace cf::dev::emu
