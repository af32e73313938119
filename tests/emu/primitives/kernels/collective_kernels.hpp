// Test kernels for the cluster collectives (include/clusterfusion/primitives), compiled by g++ for the emulator
// tests (tests/emu/primitives) and by nvcc for the GPU twin (tests/gpu/primitives). One kernel runs a sequence of
// calls of one collective inside one launch (back-to-back, changing counts and data), copying every call's result
// out to global memory; the host side (checks.hpp) compares them with host references.
#pragma once
#include <cstdint>
#include <type_traits>
#include <vector>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/device/launch.hpp"
#include "clusterfusion/primitives/cluster_gather.hpp"
#include "clusterfusion/primitives/cluster_reduce.hpp"
#include "clusterfusion/primitives/softmax_state.hpp"

namespace cf::test {
namespace dev = cf::dev;
namespace prim = cf::prim;

enum class Kind : uint8_t { AllReduce, ReduceToRoot, AllGather };

inline constexpr uint32_t kGatherGuard = 16;  // sentinel elements checked after each gathered result

struct CollectiveParams {
  const void* in;            // [clusters][calls][N][capacity] elements
  void* out;                 // [clusters][calls][N][out_stride] elements
  const uint32_t* counts;    // [calls]
  uint64_t* timeout_flag;    // null on the emulator
  uint32_t calls, capacity, out_stride;
  uint32_t group_first, group_size;  // group_size 0: the whole block; else threads [first, first+size), barrier 1
  uint32_t in_place;         // gather: src is dst + rank * count
  uint32_t sentinel;         // gather: destination fill (low bits for 16-bit types)
};

template <typename T>
using BitsOf = std::conditional_t<sizeof(T) == 4, uint32_t, uint16_t>;

template <typename T>
CF_DEVICE T from_bits_t(uint32_t bits) {
  const BitsOf<T> b = BitsOf<T>(bits);
  return __builtin_bit_cast(T, b);
}

template <uint32_t N, typename T, prim::Strategy S, prim::Transport X, Kind K, typename Op>
struct CollectiveTraits {
  using Collective = std::conditional_t<K == Kind::AllGather, prim::ClusterGather<N, T, S, X>,
                                        prim::ClusterReduce<N, T, S, X>>;
  static constexpr uint32_t workspace(uint32_t capacity) {
    return prim::detail::round_up(Collective::workspace_bytes(capacity), 128);
  }
  static constexpr uint32_t padded(uint32_t elems) { return prim::detail::round_up(elems, 16 / sizeof(T)); }
  static constexpr uint32_t smem_bytes(uint32_t capacity) {
    const uint32_t data = K == Kind::AllGather ? padded(capacity) + N * capacity + kGatherGuard : capacity;
    return workspace(capacity) + data * uint32_t(sizeof(T));
  }
  static constexpr uint32_t out_stride(uint32_t capacity) {
    return K == Kind::AllGather ? N * capacity + kGatherGuard : capacity;
  }
};

template <uint32_t N, typename T, prim::Strategy S, prim::Transport X, Kind K, typename Op>
CF_GLOBAL void collective_kernel(const CF_GRID_CONSTANT CollectiveParams p) {
  using Tr = CollectiveTraits<N, T, S, X, K, Op>;
  uint8_t* smem = dev::dynamic_smem();
  T* data = reinterpret_cast<T*>(smem + Tr::workspace(p.capacity));
  const uint32_t t = dev::thread_rank(), rank = dev::block_rank_in_cluster();
  const uint32_t cluster = dev::cluster_idx().x;
  const bool whole = p.group_size == 0;
  const bool in_group = whole || (t >= p.group_first && t < p.group_first + p.group_size);
  const prim::ThreadGroup g =
      whole ? prim::ThreadGroup::block() : prim::ThreadGroup::range(p.group_first, p.group_size, 1);
  typename Tr::Collective coll(smem, p.capacity, g, prim::WaitLimit{p.timeout_flag});
  if (in_group) coll.init();
  dev::cluster_sync();  // mbarriers initialised, every CTA started
  if (in_group) {
    for (uint32_t call = 0; call < p.calls; ++call) {
      const uint32_t count = p.counts[call];
      const size_t slot = (size_t(cluster) * p.calls + call) * N + rank;
      const T* in = static_cast<const T*>(p.in) + slot * p.capacity;
      T* out = static_cast<T*>(p.out) + slot * p.out_stride;
      if constexpr (K == Kind::AllGather) {
        T* dst = data + Tr::padded(p.capacity);
        T* src = p.in_place ? dst + rank * count : data;
        for (uint32_t e = g.rank; e < N * count + kGatherGuard; e += g.size) dst[e] = from_bits_t<T>(p.sentinel);
        g.sync();
        for (uint32_t e = g.rank; e < count; e += g.size) src[e] = in[e];
        g.sync();
        coll.all_gather(src, dst, count);
        for (uint32_t e = g.rank; e < N * count + kGatherGuard; e += g.size) out[e] = dst[e];
      } else {
        for (uint32_t e = g.rank; e < count; e += g.size) data[e] = in[e];
        g.sync();
        if constexpr (K == Kind::AllReduce) {
          coll.all_reduce(data, count, Op{});
        } else {
          coll.reduce_to_root(data, count, call % N, Op{});
        }
        for (uint32_t e = g.rank; e < count; e += g.size) out[e] = data[e];
      }
      g.sync();  // everyone read the result before the next call's input overwrites it
    }
  }
  dev::cluster_sync();  // no CTA exits while peers may still read its workspace
}

struct CollectiveRun {
  uint32_t clusters = 1;
  uint32_t threads = 64;
  uint32_t group_first = 0, group_size = 0;
  bool in_place = false;
  uint64_t seed = 0;
};

// in: [clusters][calls][N][capacity] element bits; returns [clusters][calls][N][out_stride] element bits.
template <uint32_t N, typename T, prim::Strategy S, prim::Transport X, Kind K, typename Op = prim::Sum>
std::vector<BitsOf<T>> run_collective(const std::vector<BitsOf<T>>& in, const std::vector<uint32_t>& counts,
                                      uint32_t capacity, uint32_t sentinel, const CollectiveRun& run) {
  using Tr = CollectiveTraits<N, T, S, X, K, Op>;
  using Bits = BitsOf<T>;
  const uint32_t calls = uint32_t(counts.size());
  dev::DeviceBuffer<Bits> in_dev(in.size());
  in_dev.upload(in);
  dev::DeviceBuffer<Bits> out_dev(size_t(run.clusters) * calls * N * Tr::out_stride(capacity));
  dev::DeviceBuffer<uint32_t> counts_dev(counts.size());
  counts_dev.upload(counts);
#if defined(CF_DEVICE_CUDA)
  dev::DeviceBuffer<uint64_t> timeout(1);  // bounded waits on the GPU: a protocol bug fails instead of hanging
  uint64_t* timeout_flag = timeout.data();
#else
  uint64_t* timeout_flag = nullptr;  // the emulator reports deadlocks itself
#endif
  CollectiveParams p{};
  p.in = in_dev.data();
  p.out = out_dev.data();
  p.counts = counts_dev.data();
  p.timeout_flag = timeout_flag;
  p.calls = calls;
  p.capacity = capacity;
  p.out_stride = Tr::out_stride(capacity);
  p.group_first = run.group_first;
  p.group_size = run.group_size;
  p.in_place = run.in_place ? 1u : 0u;
  p.sentinel = sentinel;
  dev::LaunchConfig cfg;
  cfg.grid = {run.clusters * N};
  cfg.cluster = {N};
  cfg.block = {run.threads};
  cfg.smem_bytes = Tr::smem_bytes(capacity);
  cfg.allow_nonportable_cluster = N > dev::kMaxPortableClusterSize;
  cfg.name = "collective_test";
  cfg.emu_seed = run.seed;
  dev::launch(cfg, collective_kernel<N, T, S, X, K, Op>, p);
  dev::synchronize();
#if defined(CF_DEVICE_CUDA)
  if (timeout.download()[0] != 0) throw Error("collective_test: an mbarrier wait timed out (protocol bug)");
#endif
  return out_dev.download();
}

}  // namespace cf::test
