// CUDA (nvcc, sm_90a) implementation of the device API: one thin named wrapper per PTX instruction or intrinsic,
// no state, no checks. Include api.hpp, not this file. Every function here has a twin with the same signature in
// emu.hpp; the contract (semantics, preconditions) is documented in api.hpp.
#pragma once
#if !defined(CF_DEVICE_API_INSIDE)
#error "include clusterfusion/device/api.hpp instead of cuda.hpp"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "clusterfusion/device/tensor_map.hpp"
#include "clusterfusion/device/types.hpp"

namespace cf::dev::inline CF_BUILD_NAMESPACE {

// ---- element types -----------------------------------------------------------------------------------------------
using f16 = __half;
using bf16 = __nv_bfloat16;
using f16x2 = __half2;
using bf16x2 = __nv_bfloat162;

// ---- ids and dims --------------------------------------------------------------------------------------------------
namespace ptx {
CF_DEVICE uint32_t cluster_ctarank() {
  uint32_t r;
  asm("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}
CF_DEVICE uint32_t cluster_nctarank() {
  uint32_t r;
  asm("mov.u32 %0, %%cluster_nctarank;" : "=r"(r));
  return r;
}
CF_DEVICE Dim3 cluster_ctaid() {
  uint32_t x, y, z;
  asm("mov.u32 %0, %%cluster_ctaid.x;" : "=r"(x));
  asm("mov.u32 %0, %%cluster_ctaid.y;" : "=r"(y));
  asm("mov.u32 %0, %%cluster_ctaid.z;" : "=r"(z));
  return {x, y, z};
}
CF_DEVICE Dim3 cluster_nctaid() {
  uint32_t x, y, z;
  asm("mov.u32 %0, %%cluster_nctaid.x;" : "=r"(x));
  asm("mov.u32 %0, %%cluster_nctaid.y;" : "=r"(y));
  asm("mov.u32 %0, %%cluster_nctaid.z;" : "=r"(z));
  return {x, y, z};
}
CF_DEVICE Dim3 clusterid() {
  uint32_t x, y, z;
  asm("mov.u32 %0, %%clusterid.x;" : "=r"(x));
  asm("mov.u32 %0, %%clusterid.y;" : "=r"(y));
  asm("mov.u32 %0, %%clusterid.z;" : "=r"(z));
  return {x, y, z};
}
CF_DEVICE Dim3 nclusterid() {
  uint32_t x, y, z;
  asm("mov.u32 %0, %%nclusterid.x;" : "=r"(x));
  asm("mov.u32 %0, %%nclusterid.y;" : "=r"(y));
  asm("mov.u32 %0, %%nclusterid.z;" : "=r"(z));
  return {x, y, z};
}
CF_DEVICE uint32_t laneid() {
  uint32_t r;
  asm("mov.u32 %0, %%laneid;" : "=r"(r));
  return r;
}
// 32-bit shared::cta address of a generic pointer into this CTA's shared memory.
CF_DEVICE uint32_t smem_addr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }
// mapa.shared::cluster: the shared::cluster address of the same offset in CTA `rank`.
CF_DEVICE uint32_t mapa_shared(uint32_t smem_address, uint32_t rank) {
  uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(smem_address), "r"(rank));
  return r;
}
}  // namespace ptx

CF_DEVICE Dim3 thread_idx() { return {threadIdx.x, threadIdx.y, threadIdx.z}; }
CF_DEVICE Dim3 block_idx() { return {blockIdx.x, blockIdx.y, blockIdx.z}; }
CF_DEVICE Dim3 block_dim() { return {blockDim.x, blockDim.y, blockDim.z}; }
CF_DEVICE Dim3 grid_dim() { return {gridDim.x, gridDim.y, gridDim.z}; }
CF_DEVICE uint32_t thread_rank() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }
CF_DEVICE uint32_t lane_id() { return ptx::laneid(); }
CF_DEVICE Dim3 cluster_dim() { return ptx::cluster_nctaid(); }
CF_DEVICE Dim3 cluster_idx() { return ptx::clusterid(); }
CF_DEVICE Dim3 cluster_grid_dim() { return ptx::nclusterid(); }
CF_DEVICE Dim3 block_idx_in_cluster() { return ptx::cluster_ctaid(); }
CF_DEVICE uint32_t block_rank_in_cluster() { return ptx::cluster_ctarank(); }
CF_DEVICE uint32_t cluster_size() { return ptx::cluster_nctarank(); }

// ---- shared memory -----------------------------------------------------------------------------------------------
CF_DEVICE uint8_t* dynamic_smem() {
  extern __shared__ __align__(128) uint8_t cf_dev_dynamic_smem[];
  return cf_dev_dynamic_smem;
}
CF_DEVICE uint32_t dynamic_smem_size() {
  uint32_t r;
  asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(r));
  return r;
}

// mapa (generic): the same shared-memory location in the cluster's CTA `rank` (DSMEM).
template <typename T>
CF_DEVICE T* map_shared_rank(T* p, uint32_t rank) {
  uint64_t out;
  asm volatile("mapa.u64 %0, %1, %2;" : "=l"(out) : "l"(reinterpret_cast<uint64_t>(p)), "r"(rank));
  return reinterpret_cast<T*>(out);
}

// ---- barriers ----------------------------------------------------------------------------------------------------
CF_DEVICE void block_sync() { __syncthreads(); }
CF_DEVICE void syncwarp(uint32_t mask = kFullMask) { __syncwarp(mask); }
CF_DEVICE void named_barrier_sync(uint32_t id, uint32_t thread_count) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(thread_count) : "memory");
}
CF_DEVICE void named_barrier_arrive(uint32_t id, uint32_t thread_count) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(thread_count) : "memory");
}
CF_DEVICE void cluster_arrive() { asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory"); }
CF_DEVICE void cluster_arrive_relaxed() { asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory"); }
CF_DEVICE void cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory"); }
CF_DEVICE void cluster_sync() {
  cluster_arrive();
  cluster_wait();
}

// ---- mbarrier ----------------------------------------------------------------------------------------------------
struct alignas(8) Mbarrier {
  uint64_t raw_;  // hardware state; only the methods below touch it

  CF_DEVICE void init(uint32_t arrival_count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(ptx::smem_addr(this)), "r"(arrival_count)
                 : "memory");
  }
  CF_DEVICE void arrive() {
    asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];" ::"r"(ptx::smem_addr(this)) : "memory");
  }
  CF_DEVICE void arrive_expect_tx(uint32_t tx_bytes) {
    asm volatile("mbarrier.arrive.expect_tx.release.cta.shared::cta.b64 _, [%0], %1;" ::"r"(ptx::smem_addr(this)),
                 "r"(tx_bytes)
                 : "memory");
  }
  CF_DEVICE void expect_tx(uint32_t tx_bytes) {
    asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;" ::"r"(ptx::smem_addr(this)),
                 "r"(tx_bytes)
                 : "memory");
  }
  CF_DEVICE void arrive_remote(uint32_t cta_rank) {
    const uint32_t remote = ptx::mapa_shared(ptx::smem_addr(this), cta_rank);
    asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];" ::"r"(remote) : "memory");
  }
  CF_DEVICE void arrive_expect_tx_remote(uint32_t tx_bytes, uint32_t cta_rank) {
    const uint32_t remote = ptx::mapa_shared(ptx::smem_addr(this), cta_rank);
    asm volatile("mbarrier.arrive.expect_tx.release.cluster.shared::cluster.b64 _, [%0], %1;" ::"r"(remote),
                 "r"(tx_bytes)
                 : "memory");
  }
  CF_DEVICE bool try_wait(uint32_t parity) {
    uint32_t done;
    asm volatile(
        "{\n\t.reg .pred p;\n\t"
        "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n\t"
        "selp.u32 %0, 1, 0, p;\n\t}"
        : "=r"(done)
        : "r"(ptx::smem_addr(this)), "r"(parity)
        : "memory");
    return done != 0;
  }
  CF_DEVICE void wait(uint32_t parity) {
    while (!try_wait(parity)) {
    }
  }
  CF_DEVICE void inval() {
    asm volatile("mbarrier.inval.shared::cta.b64 [%0];" ::"r"(ptx::smem_addr(this)) : "memory");
  }
};

CF_DEVICE void fence_mbarrier_init() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }

// ---- bulk async copies and TMA -----------------------------------------------------------------------------------
CF_DEVICE void bulk_copy_g2s(void* dst_smem, const void* src_global, uint32_t bytes, Mbarrier& bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                   ptx::smem_addr(dst_smem)),
               "l"(src_global), "r"(bytes), "r"(ptx::smem_addr(&bar))
               : "memory");
}
CF_DEVICE void bulk_copy_s2peer(void* dst_smem, const void* src_smem, uint32_t bytes, Mbarrier& bar,
                                uint32_t cta_rank) {
  const uint32_t remote_dst = ptx::mapa_shared(ptx::smem_addr(dst_smem), cta_rank);
  const uint32_t remote_bar = ptx::mapa_shared(ptx::smem_addr(&bar), cta_rank);
  asm volatile("cp.async.bulk.shared::cluster.shared::cta.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                   remote_dst),
               "r"(ptx::smem_addr(src_smem)), "r"(bytes), "r"(remote_bar)
               : "memory");
}
CF_DEVICE void tma_load_2d(void* dst_smem, const TensorMap& map, int32_t x, int32_t y, Mbarrier& bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(
          ptx::smem_addr(dst_smem)),
      "l"(reinterpret_cast<uint64_t>(&map)), "r"(x), "r"(y), "r"(ptx::smem_addr(&bar))
      : "memory");
}
CF_DEVICE void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }

// ---- memory fences, atomics, sleep -------------------------------------------------------------------------------
CF_DEVICE void threadfence_block() { __threadfence_block(); }
CF_DEVICE void threadfence() { __threadfence(); }
CF_DEVICE void fence_cluster() { asm volatile("fence.acq_rel.cluster;" ::: "memory"); }
CF_DEVICE void nanosleep(uint32_t ns) { __nanosleep(ns); }
CF_DEVICE uint64_t globaltimer_ns() {
  uint64_t ns;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));
  return ns;
}

CF_DEVICE uint32_t atomic_add(uint32_t* p, uint32_t v) { return atomicAdd(p, v); }
CF_DEVICE int32_t atomic_add(int32_t* p, int32_t v) { return atomicAdd(p, v); }
CF_DEVICE uint64_t atomic_add(uint64_t* p, uint64_t v) {
  return atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}
CF_DEVICE uint32_t atomic_max(uint32_t* p, uint32_t v) { return atomicMax(p, v); }
CF_DEVICE int32_t atomic_max(int32_t* p, int32_t v) { return atomicMax(p, v); }
CF_DEVICE uint64_t atomic_max(uint64_t* p, uint64_t v) {
  return atomicMax(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
}
CF_DEVICE uint32_t atomic_min(uint32_t* p, uint32_t v) { return atomicMin(p, v); }
CF_DEVICE int32_t atomic_min(int32_t* p, int32_t v) { return atomicMin(p, v); }
CF_DEVICE uint32_t atomic_exch(uint32_t* p, uint32_t v) { return atomicExch(p, v); }
CF_DEVICE uint32_t atomic_cas(uint32_t* p, uint32_t compare, uint32_t v) { return atomicCAS(p, compare, v); }
CF_DEVICE uint32_t load_flag(const uint32_t* p) { return *static_cast<const volatile uint32_t*>(p); }
CF_DEVICE void store_flag(uint32_t* p, uint32_t v) { *static_cast<volatile uint32_t*>(p) = v; }

// ---- warp shuffles and votes -------------------------------------------------------------------------------------
namespace detail {
template <typename T, typename Shuffle>
CF_DEVICE T shuffle_words(T v, Shuffle shuffle) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffle: trivially copyable, at most 8 bytes");
  constexpr int kWords = (sizeof(T) + 3) / 4;
  uint32_t words[kWords] = {};
  __builtin_memcpy(words, &v, sizeof(T));
  CF_UNROLL
  for (int i = 0; i < kWords; ++i) words[i] = shuffle(words[i]);
  T out;
  __builtin_memcpy(&out, words, sizeof(T));
  return out;
}
}  // namespace detail

template <typename T>
CF_DEVICE T shfl_sync(uint32_t mask, T v, int src_lane, int width = kWarpSize) {
  return detail::shuffle_words(v, [&](uint32_t w) { return __shfl_sync(mask, w, src_lane, width); });
}
template <typename T>
CF_DEVICE T shfl_xor_sync(uint32_t mask, T v, int lane_mask, int width = kWarpSize) {
  return detail::shuffle_words(v, [&](uint32_t w) { return __shfl_xor_sync(mask, w, lane_mask, width); });
}
template <typename T>
CF_DEVICE T shfl_down_sync(uint32_t mask, T v, unsigned delta, int width = kWarpSize) {
  return detail::shuffle_words(v, [&](uint32_t w) { return __shfl_down_sync(mask, w, delta, width); });
}
template <typename T>
CF_DEVICE T shfl_up_sync(uint32_t mask, T v, unsigned delta, int width = kWarpSize) {
  return detail::shuffle_words(v, [&](uint32_t w) { return __shfl_up_sync(mask, w, delta, width); });
}
CF_DEVICE uint32_t ballot_sync(uint32_t mask, bool predicate) { return __ballot_sync(mask, predicate); }
CF_DEVICE bool any_sync(uint32_t mask, bool predicate) { return __any_sync(mask, predicate) != 0; }
CF_DEVICE bool all_sync(uint32_t mask, bool predicate) { return __all_sync(mask, predicate) != 0; }

// ---- 16-byte vector access ---------------------------------------------------------------------------------------
struct alignas(16) U32x4 {
  uint32_t x, y, z, w;
};
CF_DEVICE U32x4 load16(const void* p) {
  const uint4 v = *reinterpret_cast<const uint4*>(p);
  return {v.x, v.y, v.z, v.w};
}
CF_DEVICE void store16(void* p, U32x4 v) { *reinterpret_cast<uint4*>(p) = make_uint4(v.x, v.y, v.z, v.w); }
CF_DEVICE U32x4 load16_global_nc(const void* p) {
  U32x4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// ---- tensor cores: mma.sync m16n8k16 (fp32 accumulate) -----------------------------------------------------------
CF_DEVICE void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %11, %12, %13};"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
CF_DEVICE void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %11, %12, %13};"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

// ---- fp16 / bf16 -------------------------------------------------------------------------------------------------
struct Float2 {
  float x, y;
};
CF_DEVICE float to_float(float v) { return v; }
CF_DEVICE float to_float(f16 v) { return __half2float(v); }
CF_DEVICE float to_float(bf16 v) { return __bfloat162float(v); }
template <typename T>
CF_DEVICE T from_float(float v);
template <>
CF_DEVICE float from_float<float>(float v) {
  return v;
}
template <>
CF_DEVICE f16 from_float<f16>(float v) {
  return __float2half_rn(v);
}
template <>
CF_DEVICE bf16 from_float<bf16>(float v) {
  return __float2bfloat16_rn(v);
}
CF_DEVICE Float2 to_float2(f16x2 v) {
  const float2 f = __half22float2(v);
  return {f.x, f.y};
}
CF_DEVICE Float2 to_float2(bf16x2 v) {
  const float2 f = __bfloat1622float2(v);
  return {f.x, f.y};
}
template <typename T2>
CF_DEVICE T2 from_float2(float lo, float hi);
template <>
CF_DEVICE f16x2 from_float2<f16x2>(float lo, float hi) {
  return __floats2half2_rn(lo, hi);
}
template <>
CF_DEVICE bf16x2 from_float2<bf16x2>(float lo, float hi) {
  return __floats2bfloat162_rn(lo, hi);
}
template <typename T>
CF_DEVICE uint32_t to_bits(T pair) {
  static_assert(sizeof(T) == 4);
  uint32_t b;
  __builtin_memcpy(&b, &pair, 4);
  return b;
}
template <typename T>
CF_DEVICE T from_bits(uint32_t b) {
  static_assert(sizeof(T) == 4);
  T pair;
  __builtin_memcpy(&pair, &b, 4);
  return pair;
}

}  // namespace cf::dev::inline CF_BUILD_NAMESPACE
