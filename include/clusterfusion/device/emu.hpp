// Host (emulator) implementation of the device API: every operation calls into the CPU emulator (src/emu, target
// cf_emu), which runs one fiber per CUDA thread and checks each operation. Include api.hpp, not this file.
// Each function takes a trailing std::source_location defaulted to the call site, so reports name the kernel line;
// kernels never pass it. Signatures otherwise equal cuda.hpp's. The emulator's entry points take it by reference:
// AddressSanitizer's call-mode checks (the access checks' sanitizer builds) are not re-issued after a call that gets
// an aggregate by value, which would hide the second of two accesses to one address around a barrier.
#pragma once
#if !defined(CF_DEVICE_API_INSIDE)
#error "include clusterfusion/device/api.hpp instead of emu.hpp"
#endif

#include <cstdint>
#include <cstring>
#include <source_location>
#include <string>
#include <type_traits>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/common/half.hpp"
#include "clusterfusion/device/tensor_map.hpp"
#include "clusterfusion/device/types.hpp"

namespace cf::dev {

// What went wrong in an emulated launch; the message says the rest (kernel, block, thread, operation, location).
enum class EmuErrorKind : uint8_t {
  Deadlock,            // no thread can make progress (all wait); the message lists what each group waits on
  Livelock,            // threads only spin (try_wait/nanosleep) and nothing changes
  BarrierDivergence,   // block/cluster/named barrier or warp collective not reached alike by the threads it names
  BarrierExit,         // a thread exited while a barrier it belongs to still needs it
  MbarrierMisuse,      // use before init / before the init is visible, count or tx-count out of range, ...
  AsyncCopyMisuse,     // bad bulk/TMA copy arguments, overlapping in-flight destinations, block exit with copies
  InFlightAccess,      // read/write of shared memory that an unfinished bulk/TMA copy is writing
  SmemOutOfBounds,     // outside the block's dynamic shared memory
  DsmemInvalid,        // DSMEM access out of range, to an exited block, or before the cluster barrier that
                       // guarantees the peer has started
  GlobalOutOfBounds,   // past the end of a DeviceBuffer
  Misaligned,          // vector access or copy address not aligned as the hardware requires
  WarpCollective,      // shuffle/vote misuse (mask without self, reading an exited or non-member lane, ...)
  KernelException,     // the kernel threw a C++ exception
  InvalidUse,          // any other API misuse (bad id, bad rank, ...)
  // the access checks (plain loads/stores seen through compiler instrumentation; the launch runs on after them)
  DataRace,            // two accesses to the same bytes, one a write, by different threads, neither ordered first
  AsyncProxy,          // a bulk copy reads shared memory a thread wrote with no fence_proxy_async in between
  UninitializedRead,   // shared memory (or declared scratch) read before anything wrote it in this launch
  PhaseAliasing,       // an mbarrier wait returned for a phase this thread had already waited for there
};
const char* to_string(EmuErrorKind kind);

class EmuError : public Error {
 public:
  EmuError(EmuErrorKind kind, std::string message) : Error(std::move(message)), kind_(kind) {}
  EmuErrorKind kind() const { return kind_; }

 private:
  EmuErrorKind kind_;
};

namespace emu {
using SrcLoc = std::source_location;

// Per-thread ids, filled by the emulator before it runs a thread (read by the inline id functions below).
struct ThreadIds {
  Dim3 thread_idx, block_idx, block_dim, grid_dim, cluster_dim, cluster_idx, cluster_grid_dim, block_idx_in_cluster;
  uint32_t thread_rank = 0, lane = 0, cluster_rank = 0, cluster_size = 1;
  uint8_t* smem = nullptr;
  uint32_t smem_bytes = 0;
};
extern __thread const ThreadIds* tls_ids;
[[noreturn]] void outside_kernel();
inline const ThreadIds& ids() {
  const ThreadIds* p = tls_ids;
  if (p == nullptr) outside_kernel();
  return *p;
}

enum class WarpOp : uint8_t { Sync, ShflIdx, ShflXor, ShflDown, ShflUp, Ballot, Any, All, Mma };

// One lane's operands of an mma.sync (the collective's value is a pointer to this).
struct MmaOperands {
  const uint32_t* a;  // 4 registers
  const uint32_t* b;  // 2 registers
  const float* c;     // 4
  float* d;           // 4
  bool bf16;
};

void block_sync(const SrcLoc& loc);
void named_barrier(uint32_t id, uint32_t thread_count, bool wait, const SrcLoc& loc);
void cluster_arrive(bool relaxed, const SrcLoc& loc);
void cluster_wait(const SrcLoc& loc);
void* map_shared_rank(const void* p, uint32_t rank, const SrcLoc& loc);
uint64_t warp_collective(WarpOp op, uint32_t mask, uint64_t value, int32_t arg, int32_t width, const SrcLoc& loc);

void mbar_init(void* bar, uint32_t count, const SrcLoc& loc);
void mbar_arrive(void* bar, uint32_t tx_bytes, bool with_tx, const SrcLoc& loc);
void mbar_expect_tx(void* bar, uint32_t tx_bytes, const SrcLoc& loc);
void mbar_arrive_remote(void* bar, uint32_t rank, uint32_t tx_bytes, bool with_tx, const SrcLoc& loc);
bool mbar_try_wait(void* bar, uint32_t parity, bool until_done, const SrcLoc& loc);
void mbar_inval(void* bar, const SrcLoc& loc);
void fence(const char* what, const SrcLoc& loc);

void bulk_copy_g2s(void* dst, const void* src, uint32_t bytes, void* bar, const SrcLoc& loc);
void bulk_copy_s2peer(void* dst, const void* src, uint32_t bytes, void* bar, uint32_t rank, const SrcLoc& loc);
void tma_load_2d(void* dst, const TensorMap& map, int32_t x, int32_t y, void* bar, const SrcLoc& loc);

void nanosleep(uint32_t ns, const SrcLoc& loc);
uint64_t globaltimer_ns(const SrcLoc& loc);
enum class AtomicOp : uint8_t { Add, MaxU32, MaxI32, MaxU64, MinU32, MinI32, Exch, Cas, FlagLoad, FlagStore };
// the whole read-modify-write of `bytes` (4 or 8) at p, in the emulator: returns the old value
uint64_t atomic_rmw(void* p, AtomicOp op, uint32_t bytes, uint64_t v, uint64_t compare, const SrcLoc& loc);
void vector_access(const void* p, uint32_t bytes, bool global_nc, const SrcLoc& loc);  // alignment / space checks
}  // namespace emu
}  // namespace cf::dev

// The device API of the emulator build (its own namespace: types.hpp).
namespace cf::dev::inline CF_BUILD_NAMESPACE {

// ---- element types -----------------------------------------------------------------------------------------------
using f16 = cf::half;
using bf16 = cf::bfloat16;
struct alignas(4) f16x2 {
  f16 x, y;
};
struct alignas(4) bf16x2 {
  bf16 x, y;
};

// ---- ids and dims --------------------------------------------------------------------------------------------------
inline Dim3 thread_idx() { return emu::ids().thread_idx; }
inline Dim3 block_idx() { return emu::ids().block_idx; }
inline Dim3 block_dim() { return emu::ids().block_dim; }
inline Dim3 grid_dim() { return emu::ids().grid_dim; }
inline uint32_t thread_rank() { return emu::ids().thread_rank; }
inline uint32_t lane_id() { return emu::ids().lane; }
inline Dim3 cluster_dim() { return emu::ids().cluster_dim; }
inline Dim3 cluster_idx() { return emu::ids().cluster_idx; }
inline Dim3 cluster_grid_dim() { return emu::ids().cluster_grid_dim; }
inline Dim3 block_idx_in_cluster() { return emu::ids().block_idx_in_cluster; }
inline uint32_t block_rank_in_cluster() { return emu::ids().cluster_rank; }
inline uint32_t cluster_size() { return emu::ids().cluster_size; }

// ---- shared memory -----------------------------------------------------------------------------------------------
inline uint8_t* dynamic_smem() { return emu::ids().smem; }
inline uint32_t dynamic_smem_size() { return emu::ids().smem_bytes; }
template <typename T>
inline T* map_shared_rank(T* p, uint32_t rank, emu::SrcLoc loc = emu::SrcLoc::current()) {
  return static_cast<T*>(emu::map_shared_rank(p, rank, loc));
}

// ---- barriers ----------------------------------------------------------------------------------------------------
inline void block_sync(emu::SrcLoc loc = emu::SrcLoc::current()) { emu::block_sync(loc); }
inline void syncwarp(uint32_t mask = kFullMask, emu::SrcLoc loc = emu::SrcLoc::current()) {
  emu::warp_collective(emu::WarpOp::Sync, mask, 0, 0, kWarpSize, loc);
}
inline void named_barrier_sync(uint32_t id, uint32_t thread_count, emu::SrcLoc loc = emu::SrcLoc::current()) {
  emu::named_barrier(id, thread_count, true, loc);
}
inline void named_barrier_arrive(uint32_t id, uint32_t thread_count, emu::SrcLoc loc = emu::SrcLoc::current()) {
  emu::named_barrier(id, thread_count, false, loc);
}
inline void cluster_arrive(emu::SrcLoc loc = emu::SrcLoc::current()) { emu::cluster_arrive(false, loc); }
inline void cluster_arrive_relaxed(emu::SrcLoc loc = emu::SrcLoc::current()) { emu::cluster_arrive(true, loc); }
inline void cluster_wait(emu::SrcLoc loc = emu::SrcLoc::current()) { emu::cluster_wait(loc); }
inline void cluster_sync(emu::SrcLoc loc = emu::SrcLoc::current()) {
  emu::cluster_arrive(false, loc);
  emu::cluster_wait(loc);
}

// ---- mbarrier ----------------------------------------------------------------------------------------------------
struct alignas(8) Mbarrier {
  uint64_t raw_;  // the emulator keeps the state aside, keyed by this object's address

  void init(uint32_t arrival_count, emu::SrcLoc loc = emu::SrcLoc::current()) {
    emu::mbar_init(this, arrival_count, loc);
  }
  void arrive(emu::SrcLoc loc = emu::SrcLoc::current()) { emu::mbar_arrive(this, 0, false, loc); }
  void arrive_expect_tx(uint32_t tx_bytes, emu::SrcLoc loc = emu::SrcLoc::current()) {
    emu::mbar_arrive(this, tx_bytes, true, loc);
  }
  void expect_tx(uint32_t tx_bytes, emu::SrcLoc loc = emu::SrcLoc::current()) {
    emu::mbar_expect_tx(this, tx_bytes, loc);
  }
  void arrive_remote(uint32_t cta_rank, emu::SrcLoc loc = emu::SrcLoc::current()) {
    emu::mbar_arrive_remote(this, cta_rank, 0, false, loc);
  }
  void arrive_expect_tx_remote(uint32_t tx_bytes, uint32_t cta_rank, emu::SrcLoc loc = emu::SrcLoc::current()) {
    emu::mbar_arrive_remote(this, cta_rank, tx_bytes, true, loc);
  }
  bool try_wait(uint32_t parity, emu::SrcLoc loc = emu::SrcLoc::current()) {
    return emu::mbar_try_wait(this, parity, false, loc);
  }
  void wait(uint32_t parity, emu::SrcLoc loc = emu::SrcLoc::current()) { emu::mbar_try_wait(this, parity, true, loc); }
  void inval(emu::SrcLoc loc = emu::SrcLoc::current()) { emu::mbar_inval(this, loc); }
};

inline void fence_mbarrier_init(emu::SrcLoc loc = emu::SrcLoc::current()) { emu::fence("fence_mbarrier_init", loc); }

// ---- bulk async copies and TMA -----------------------------------------------------------------------------------
inline void bulk_copy_g2s(void* dst_smem, const void* src_global, uint32_t bytes, Mbarrier& bar,
                          emu::SrcLoc loc = emu::SrcLoc::current()) {
  emu::bulk_copy_g2s(dst_smem, src_global, bytes, &bar, loc);
}
inline void bulk_copy_s2peer(void* dst_smem, const void* src_smem, uint32_t bytes, Mbarrier& bar, uint32_t cta_rank,
                             emu::SrcLoc loc = emu::SrcLoc::current()) {
  emu::bulk_copy_s2peer(dst_smem, src_smem, bytes, &bar, cta_rank, loc);
}
inline void tma_load_2d(void* dst_smem, const TensorMap& map, int32_t x, int32_t y, Mbarrier& bar,
                        emu::SrcLoc loc = emu::SrcLoc::current()) {
  emu::tma_load_2d(dst_smem, map, x, y, &bar, loc);
}
inline void fence_proxy_async(emu::SrcLoc loc = emu::SrcLoc::current()) { emu::fence("fence_proxy_async", loc); }

// ---- memory fences, atomics, sleep -------------------------------------------------------------------------------
inline void threadfence_block(emu::SrcLoc loc = emu::SrcLoc::current()) { emu::fence("threadfence_block", loc); }
inline void threadfence(emu::SrcLoc loc = emu::SrcLoc::current()) { emu::fence("threadfence", loc); }
inline void fence_cluster(emu::SrcLoc loc = emu::SrcLoc::current()) { emu::fence("fence_cluster", loc); }
inline void nanosleep(uint32_t ns, emu::SrcLoc loc = emu::SrcLoc::current()) { emu::nanosleep(ns, loc); }
inline uint64_t globaltimer_ns(emu::SrcLoc loc = emu::SrcLoc::current()) { return emu::globaltimer_ns(loc); }

namespace detail {
template <typename T>
inline T atomic_op(T* p, emu::AtomicOp op, T v, T compare, emu::SrcLoc loc) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8);
  uint64_t bits = 0, cmp = 0;
  std::memcpy(&bits, &v, sizeof(T));
  std::memcpy(&cmp, &compare, sizeof(T));
  const uint64_t old = emu::atomic_rmw(p, op, uint32_t(sizeof(T)), bits, cmp, loc);
  T out;
  std::memcpy(&out, &old, sizeof(T));
  return out;
}
}  // namespace detail
inline uint32_t atomic_add(uint32_t* p, uint32_t v, emu::SrcLoc loc = emu::SrcLoc::current()) {
  return detail::atomic_op(p, emu::AtomicOp::Add, v, 0u, loc);
}
inline int32_t atomic_add(int32_t* p, int32_t v, emu::SrcLoc loc = emu::SrcLoc::current()) {
  return detail::atomic_op(p, emu::AtomicOp::Add, v, 0, loc);
}
inline uint64_t atomic_add(uint64_t* p, uint64_t v, emu::SrcLoc loc = emu::SrcLoc::current()) {
  return detail::atomic_op(p, emu::AtomicOp::Add, v, uint64_t(0), loc);
}
inline uint32_t atomic_max(uint32_t* p, uint32_t v, emu::SrcLoc loc = emu::SrcLoc::current()) {
  return detail::atomic_op(p, emu::AtomicOp::MaxU32, v, 0u, loc);
}
inline int32_t atomic_max(int32_t* p, int32_t v, emu::SrcLoc loc = emu::SrcLoc::current()) {
  return detail::atomic_op(p, emu::AtomicOp::MaxI32, v, 0, loc);
}
inline uint64_t atomic_max(uint64_t* p, uint64_t v, emu::SrcLoc loc = emu::SrcLoc::current()) {
  return detail::atomic_op(p, emu::AtomicOp::MaxU64, v, uint64_t(0), loc);
}
inline uint32_t atomic_min(uint32_t* p, uint32_t v, emu::SrcLoc loc = emu::SrcLoc::current()) {
  return detail::atomic_op(p, emu::AtomicOp::MinU32, v, 0u, loc);
}
inline int32_t atomic_min(int32_t* p, int32_t v, emu::SrcLoc loc = emu::SrcLoc::current()) {
  return detail::atomic_op(p, emu::AtomicOp::MinI32, v, 0, loc);
}
inline uint32_t atomic_exch(uint32_t* p, uint32_t v, emu::SrcLoc loc = emu::SrcLoc::current()) {
  return detail::atomic_op(p, emu::AtomicOp::Exch, v, 0u, loc);
}
inline uint32_t atomic_cas(uint32_t* p, uint32_t compare, uint32_t v, emu::SrcLoc loc = emu::SrcLoc::current()) {
  return detail::atomic_op(p, emu::AtomicOp::Cas, v, compare, loc);
}
// volatile flag accesses are relaxed atomics here: they race with nothing and order nothing (no fence)
inline uint32_t load_flag(const uint32_t* p, emu::SrcLoc loc = emu::SrcLoc::current()) {
  return detail::atomic_op(const_cast<uint32_t*>(p), emu::AtomicOp::FlagLoad, 0u, 0u, loc);
}
inline void store_flag(uint32_t* p, uint32_t v, emu::SrcLoc loc = emu::SrcLoc::current()) {
  (void)detail::atomic_op(p, emu::AtomicOp::FlagStore, v, 0u, loc);
}

// ---- warp shuffles and votes -------------------------------------------------------------------------------------
namespace detail {
template <typename T>
inline T warp_shuffle(emu::WarpOp op, uint32_t mask, T v, int32_t arg, int32_t width, emu::SrcLoc loc) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffle: trivially copyable, at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = emu::warp_collective(op, mask, bits, arg, width, loc);
  T out;
  std::memcpy(static_cast<void*>(&out), &bits, sizeof(T));
  return out;
}
}  // namespace detail
template <typename T>
inline T shfl_sync(uint32_t mask, T v, int src_lane, int width = kWarpSize, emu::SrcLoc loc = emu::SrcLoc::current()) {
  return detail::warp_shuffle(emu::WarpOp::ShflIdx, mask, v, src_lane, width, loc);
}
template <typename T>
inline T shfl_xor_sync(uint32_t mask, T v, int lane_mask, int width = kWarpSize,
                       emu::SrcLoc loc = emu::SrcLoc::current()) {
  return detail::warp_shuffle(emu::WarpOp::ShflXor, mask, v, lane_mask, width, loc);
}
template <typename T>
inline T shfl_down_sync(uint32_t mask, T v, unsigned delta, int width = kWarpSize,
                        emu::SrcLoc loc = emu::SrcLoc::current()) {
  return detail::warp_shuffle(emu::WarpOp::ShflDown, mask, v, int32_t(delta), width, loc);
}
template <typename T>
inline T shfl_up_sync(uint32_t mask, T v, unsigned delta, int width = kWarpSize,
                      emu::SrcLoc loc = emu::SrcLoc::current()) {
  return detail::warp_shuffle(emu::WarpOp::ShflUp, mask, v, int32_t(delta), width, loc);
}
inline uint32_t ballot_sync(uint32_t mask, bool predicate, emu::SrcLoc loc = emu::SrcLoc::current()) {
  return uint32_t(emu::warp_collective(emu::WarpOp::Ballot, mask, predicate ? 1 : 0, 0, kWarpSize, loc));
}
inline bool any_sync(uint32_t mask, bool predicate, emu::SrcLoc loc = emu::SrcLoc::current()) {
  return emu::warp_collective(emu::WarpOp::Any, mask, predicate ? 1 : 0, 0, kWarpSize, loc) != 0;
}
inline bool all_sync(uint32_t mask, bool predicate, emu::SrcLoc loc = emu::SrcLoc::current()) {
  return emu::warp_collective(emu::WarpOp::All, mask, predicate ? 1 : 0, 0, kWarpSize, loc) != 0;
}

// ---- tensor cores: mma.sync m16n8k16 (fp32 accumulate) -----------------------------------------------------------
inline void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                             emu::SrcLoc loc = emu::SrcLoc::current()) {
  emu::MmaOperands ops{a, b, c, d, false};
  emu::warp_collective(emu::WarpOp::Mma, kFullMask, reinterpret_cast<uintptr_t>(&ops), 0, kWarpSize, loc);
}
inline void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                              emu::SrcLoc loc = emu::SrcLoc::current()) {
  emu::MmaOperands ops{a, b, c, d, true};
  emu::warp_collective(emu::WarpOp::Mma, kFullMask, reinterpret_cast<uintptr_t>(&ops), 0, kWarpSize, loc);
}

// ---- 16-byte vector access ---------------------------------------------------------------------------------------
struct alignas(16) U32x4 {
  uint32_t x, y, z, w;
};
inline U32x4 load16(const void* p, emu::SrcLoc loc = emu::SrcLoc::current()) {
  if ((reinterpret_cast<uintptr_t>(p) & 15u) != 0) emu::vector_access(p, 16, false, loc);
  U32x4 v;
  std::memcpy(&v, p, 16);
  return v;
}
inline void store16(void* p, U32x4 v, emu::SrcLoc loc = emu::SrcLoc::current()) {
  if ((reinterpret_cast<uintptr_t>(p) & 15u) != 0) emu::vector_access(p, 16, false, loc);
  std::memcpy(p, &v, 16);
}
inline U32x4 load16_global_nc(const void* p, emu::SrcLoc loc = emu::SrcLoc::current()) {
  emu::vector_access(p, 16, true, loc);
  U32x4 v;
  std::memcpy(&v, p, 16);
  return v;
}

// ---- fp16 / bf16 -------------------------------------------------------------------------------------------------
struct Float2 {
  float x, y;
};
inline float to_float(float v) { return v; }
inline float to_float(f16 v) { return float(v); }
inline float to_float(bf16 v) { return float(v); }
template <typename T>
inline T from_float(float v) {
  return T(v);
}
inline Float2 to_float2(f16x2 v) { return {float(v.x), float(v.y)}; }
inline Float2 to_float2(bf16x2 v) { return {float(v.x), float(v.y)}; }
template <typename T2>
inline T2 from_float2(float lo, float hi) {
  T2 out;
  out.x = decltype(out.x)(lo);
  out.y = decltype(out.y)(hi);
  return out;
}
template <typename T>
inline uint32_t to_bits(T pair) {
  static_assert(sizeof(T) == 4);
  uint32_t b;
  std::memcpy(&b, &pair, 4);
  return b;
}
template <typename T>
inline T from_bits(uint32_t b) {
  static_assert(sizeof(T) == 4);
  T pair;
  std::memcpy(static_cast<void*>(&pair), &b, 4);
  return pair;
}

}  // namespace cf::dev::inline CF_BUILD_NAMESPACE
