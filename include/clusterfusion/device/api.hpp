// The device API: everything a clusterfusion kernel uses that is specific to the GPU. Kernels are ordinary C++ in
// headers; compiled by nvcc (sm_90a) every call below is one PTX instruction or CUDA intrinsic (cuda.hpp), compiled by
// the host compiler it runs on the CPU emulator, which checks it (emu.hpp, src/emu, docs/emulator.md).
//
// Writing a kernel for both builds
//   template <int kStages> CF_GLOBAL void my_kernel(const CF_GRID_CONSTANT MyParams p) { ... }
//   launched with dev::launch(cfg, my_kernel<2>, params) (launch.hpp).
//   - No static __shared__: all shared memory comes from dynamic_smem() (128-byte aligned, LaunchConfig::smem_bytes
//     long), carved by the kernel with named offsets. The same carve in every CTA keeps offsets equal across the
//     cluster, which the peer operations (map_shared_rank, bulk_copy_s2peer, arrive_remote) rely on.
//   - Use only this API for ids, barriers, shuffles, async copies, atomics, fences; plain C++ for arithmetic and
//     ordinary loads/stores (global memory, own shared memory, and DSMEM through map_shared_rank pointers).
//   - No grid-wide spin waits (the emulator runs clusters one after another), no float atomics in default paths.
//
// Contract (both builds; the emulator reports violations as cf::dev::EmuError)
// ids (Dim3 = {x,y,z}):
//   thread_idx() block_idx() block_dim() grid_dim()      threadIdx / blockIdx / blockDim / gridDim
//   thread_rank()   linear thread index in the block (x fastest); warp_id() = thread_rank()/32; lane_id()
//   num_threads() num_warps()
//   cluster_dim() (%cluster_nctaid)  cluster_idx() (%clusterid)  cluster_grid_dim() (%nclusterid)
//   block_idx_in_cluster() (%cluster_ctaid)  block_rank_in_cluster() (%cluster_ctarank, x fastest)  cluster_size()
// shared memory:
//   uint8_t* dynamic_smem()            this CTA's dynamic shared memory; dynamic_smem_size() its size in bytes
//   T* map_shared_rank(T* p, rank)     mapa: p (into this CTA's smem) as seen in CTA `rank` of the cluster (DSMEM);
//                                      plain loads/stores/atomics through it. Only valid after a cluster barrier
//                                      has completed since launch (all peers started) and until the peer exits.
// barriers:
//   block_sync()                       __syncthreads (bar.sync 0): every thread of the block, same place per warp
//   syncwarp(mask = kFullMask)         __syncwarp
//   named_barrier_sync(id, n) / named_barrier_arrive(id, n)    bar.sync / bar.arrive, id 1..15, n % 32 == 0
//   cluster_arrive()                   barrier.cluster.arrive.release.aligned (every thread of every CTA)
//   cluster_arrive_relaxed()           .relaxed: no memory ordering (e.g. the start-up barrier)
//   cluster_wait()                     barrier.cluster.wait.acquire.aligned (after this thread's arrive)
//   cluster_sync()                     arrive + wait. Call it once at kernel start before any DSMEM access, and at
//                                      the end so no CTA exits while peers may still touch its shared memory.
// mbarrier (struct Mbarrier, 8 bytes in shared memory, carved like any buffer):
//   init(count)                        mbarrier.init: phase 0, `count` arrivals per phase (1 .. 2^20-1). One thread;
//                                      then fence_mbarrier_init() + block_sync() (or cluster_sync() when peers use
//                                      it) before any other thread touches it.
//   arrive()                           mbarrier.arrive (release, cta)
//   arrive_expect_tx(bytes)            expect `bytes` more async-copy bytes this phase, then arrive
//   expect_tx(bytes)                   expect bytes without arriving
//   arrive_remote(rank)                arrive (release, cluster) on the barrier at the same offset in CTA `rank`
//   arrive_expect_tx_remote(bytes, rank)  the same with expect-tx: a sender announces its push on the receiver
//   try_wait(parity) -> bool           mbarrier.try_wait.parity (acquire, cluster): true once the phase with this
//                                      parity has completed (may return false spuriously; loop on it)
//   wait(parity)                       loop on try_wait. Phase k has parity k & 1; a fresh barrier is in phase 0,
//                                      so wait(0) waits for the first completion and wait(1) returns at once.
//   inval()                            mbarrier.inval, before the memory is reused for anything else
//   fence_mbarrier_init()              fence.mbarrier_init.release.cluster
//   A phase completes when all `count` arrivals happened and its tx-count (expected minus delivered bytes) is 0.
// async copies (one thread issues; completion is signalled on an mbarrier; data is visible after waiting on it):
//   bulk_copy_g2s(dst_smem, src_global, bytes, bar)      cp.async.bulk global -> this CTA's smem; dst/src 16-byte
//                                      aligned, bytes a multiple of 16; completes `bytes` on bar (this CTA)
//   bulk_copy_s2peer(dst_smem, src_smem, bytes, bar, rank) cp.async.bulk.shared::cluster.shared::cta: from this
//                                      CTA's src into CTA `rank` at dst's offset, completing `bytes` on the barrier
//                                      at bar's offset in CTA `rank` (the DSMEM push). dst/bar are given as this
//                                      CTA's addresses of the same carve. src must stay unchanged until the peer's
//                                      barrier completes (the sender learns that only from the peer).
//   tma_load_2d(dst_smem, map, x, y, bar)  cp.async.bulk.tensor.2d: box at column x, row y of `map`
//                                      (tensor_map.hpp) into dst (128-byte aligned), out-of-bounds elements zero;
//                                      always completes tma_box_bytes(...) bytes. x * element size must be a
//                                      multiple of 16 bytes (x may be negative or past the edge; y is free):
//                                      otherwise the GPU raises cudaErrorIllegalInstruction
//   fence_proxy_async()                fence.proxy.async.shared::cta: between generic stores to shared memory
//                                      and a later bulk copy that reads (or overwrites) the same bytes
//   Never read or write a destination before its barrier phase completes; never reuse it for the next copy before
//   every consumer is done (use an "empty" mbarrier per stage).
// fences, atomics, misc:
//   threadfence_block() threadfence() fence_cluster() (fence.acq_rel.cluster)   nanosleep(ns)
//   globaltimer_ns()                   %globaltimer: wall time in ns (bounded waits). The emulator's is a virtual
//                                      clock that advances only while no thread of the cluster can make progress
//                                      (docs/emulator.md), so a wait that would complete never sees time pass
//   atomic_add (u32, i32, u64), atomic_max (u32, i32, u64), atomic_min (u32, i32), atomic_exch (u32), atomic_cas
//   (u32): return old value
//   load_flag(p) / store_flag(p, v) (u32)  ld.volatile / st.volatile of a flag polled without synchronisation (an
//                                      abort flag): relaxed, they order nothing; the emulator checks them as atomics
// warp (width a power of two <= 32; every non-exited lane named in mask must call with the same mask):
//   shfl_sync(mask, v, src_lane, width) shfl_xor_sync(mask, v, lane_mask, width)
//   shfl_down_sync(mask, v, delta, width) shfl_up_sync(mask, v, delta, width)   any trivially copyable v <= 8 bytes
//   ballot_sync(mask, pred) -> uint32_t   any_sync / all_sync(mask, pred) -> bool
// tensor cores (one warp, all 32 lanes; g = lane / 4, t = lane % 4; registers hold two 16-bit values, the lower
//   column/k index in the low half):
//   mma_m16n8k16_f16(d[4], a[4], b[2], c[4]) / mma_m16n8k16_bf16(...)   mma.sync.aligned.m16n8k16.row.col, D = A B + C
//   in fp32. A 16x16 (m x k): a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..];
//   B 16x8 (k x n): b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]; C, D 16x8: {c0,c1} = C[g][2t..2t+1], {c2,c3} =
//   C[g+8][2t..2t+1]. d may alias c.
// vectors: struct U32x4 {x,y,z,w}; load16(p) / store16(p, v) (16-byte aligned, any space);
//   load16_global_nc(p) (ld.global.nc.L1::no_allocate: read-only global data, e.g. streamed weights)
// fp16/bf16: f16, bf16 (__half, __nv_bfloat16 / cf::half, cf::bfloat16), pairs f16x2, bf16x2 (.x low, .y high);
//   to_float(f16|bf16|float), from_float<T>(float) (round to nearest even), struct Float2 {x, y},
//   to_float2(f16x2|bf16x2), from_float2<T2>(lo, hi), to_bits(pair) -> uint32_t, from_bits<T2>(uint32_t)
#pragma once

#include "clusterfusion/device/tensor_map.hpp"
#include "clusterfusion/device/types.hpp"

#define CF_DEVICE_API_INSIDE 1
#if defined(CF_DEVICE_CUDA)
#include "clusterfusion/device/cuda.hpp"
#else
#include "clusterfusion/device/emu.hpp"
#endif
#undef CF_DEVICE_API_INSIDE

namespace cf::dev::inline CF_BUILD_NAMESPACE {

CF_DEVICE uint32_t num_threads() { return block_dim().x * block_dim().y * block_dim().z; }
CF_DEVICE uint32_t warp_id() { return thread_rank() / kWarpSize; }
CF_DEVICE uint32_t num_warps() { return (num_threads() + kWarpSize - 1) / kWarpSize; }

}  // namespace cf::dev::inline CF_BUILD_NAMESPACE
