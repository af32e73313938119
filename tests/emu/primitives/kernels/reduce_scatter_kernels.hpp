// Test kernel and checks for ClusterReduceScatter (zero-copy reduce-scatter / all-gather with caller-defined
// ownership, compile-time or run-time cluster size), shared by the emulator and GPU tests. Every call's full buffer
// after reduce_scatter + all_gather must equal, bit for bit on every rank, the rank-order reduction (the Linear
// reference of checks.hpp); the softmax mode compares with a direct softmax.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "clusterfusion/primitives/cluster_reduce_scatter.hpp"
#include "kernels/checks.hpp"

namespace cf::test {

enum class RsMode : uint32_t {
  AllReduce,        // all_reduce(buf): even segments, in place
  SkewedInPlace,    // reduce_scatter(buf -> buf + own segment) + all_gather(buf), uneven (some empty) segments
  SeparateDst,      // reduce_scatter(buf -> dst + own segment) + all_gather(dst), uneven record-aligned segments
};

// Uneven ownership: rank q starts at floor(q^2 count / n^2) rounded down to `align` (so early ranks own little or
// nothing, the last rank most).
struct SkewSegments {
  uint32_t count = 0, n = 1, align = 1;
  CF_HOST_DEVICE uint32_t operator()(uint32_t q) const {
    if (q >= n) return count;
    const uint32_t b = uint32_t(uint64_t(q) * q * count / (uint64_t(n) * n));
    return b / align * align;
  }
};

struct RsParams {
  const void* in;   // [calls][n][capacity]
  void* out;        // [calls][n][capacity]
  const uint32_t* counts;
  uint64_t* timeout_flag;
  uint32_t calls, capacity, mode, align;
};

inline constexpr uint32_t kRsDataOffset = 128;

template <uint32_t N, typename T, typename Op>
CF_GLOBAL void reduce_scatter_kernel(const CF_GRID_CONSTANT RsParams p) {
  using RS = prim::ClusterReduceScatter<N, T>;
  uint8_t* smem = dev::dynamic_smem();
  T* buf = reinterpret_cast<T*>(smem + kRsDataOffset);
  T* dst = buf + prim::detail::round_up(p.capacity, 16 / sizeof(T));
  const uint32_t t = dev::thread_rank(), nt = dev::num_threads();
  RS rs(smem, prim::ThreadGroup::block(), prim::WaitLimit{p.timeout_flag});
  rs.init();
  dev::cluster_sync();
  const uint32_t n = rs.size(), rank = rs.rank();
  for (uint32_t call = 0; call < p.calls; ++call) {
    const uint32_t count = p.counts[call];
    const size_t slot = size_t(call) * n + rank;
    const T* in = static_cast<const T*>(p.in) + slot * p.capacity;
    T* out = static_cast<T*>(p.out) + slot * p.capacity;
    for (uint32_t e = t; e < count; e += nt) buf[e] = in[e];  // the calls sync the group first
    T* result = buf;
    if (p.mode == uint32_t(RsMode::AllReduce)) {
      if constexpr (!prim::VectorOp<Op>) rs.all_reduce(buf, count, Op{});
    } else {
      const SkewSegments seg{count, n, p.align};
      result = p.mode == uint32_t(RsMode::SkewedInPlace) ? buf : dst;
      rs.reduce_scatter(buf, result + seg(rank), count, seg, Op{});
      rs.all_gather(result, count, seg);
      rs.wait_peers_done();  // peers may still read our own segment of result (and buf) until this returns
    }
    for (uint32_t e = t; e < count; e += nt) out[e] = result[e];  // each thread rewrites only what it read
  }
  dev::cluster_sync();
}

template <uint32_t N, typename T, typename Op = prim::Sum>
std::vector<BitsOf<T>> run_reduce_scatter(uint32_t n, const std::vector<BitsOf<T>>& in,
                                          const std::vector<uint32_t>& counts, uint32_t capacity, RsMode mode,
                                          uint32_t align, uint32_t threads, uint64_t seed) {
  using Bits = BitsOf<T>;
  dev::DeviceBuffer<Bits> in_dev(in.size()), out_dev(in.size());
  in_dev.upload(in);
  dev::DeviceBuffer<uint32_t> counts_dev(counts.size());
  counts_dev.upload(counts);
#if defined(CF_DEVICE_CUDA)
  dev::DeviceBuffer<uint64_t> timeout(1);
  uint64_t* timeout_flag = timeout.data();
#else
  uint64_t* timeout_flag = nullptr;
#endif
  const RsParams p{in_dev.data(), out_dev.data(), counts_dev.data(), timeout_flag, uint32_t(counts.size()), capacity,
                   uint32_t(mode), align};
  dev::LaunchConfig cfg;
  cfg.grid = {n};
  cfg.cluster = {n};
  cfg.block = {threads};
  cfg.smem_bytes = kRsDataOffset + 2 * prim::detail::round_up(capacity, 16 / sizeof(T)) * sizeof(T);
  cfg.allow_nonportable_cluster = n > dev::kMaxPortableClusterSize;
  cfg.name = "reduce_scatter_test";
  cfg.emu_seed = seed;
  dev::launch(cfg, reduce_scatter_kernel<N, T, Op>, p);
  dev::synchronize();
#if defined(CF_DEVICE_CUDA)
  if (timeout.download()[0] != 0) throw Error("reduce_scatter_test: an mbarrier wait timed out (protocol bug)");
#endif
  return out_dev.download();
}

// Every call's buffer on every rank must equal the rank-order reduction, bit for bit.
template <uint32_t N, typename T, typename Op = prim::Sum>
std::string check_reduce_scatter(uint32_t n, const std::vector<uint32_t>& counts, RsMode mode, uint32_t align,
                                 uint32_t threads, uint64_t seed, uint32_t data_seed) {
  uint32_t capacity = 0;
  for (uint32_t c : counts) capacity = std::max(capacity, c);
  const uint32_t calls = uint32_t(counts.size());
  const auto in = random_input<T>(size_t(calls) * n * capacity, data_seed);
  const auto out = run_reduce_scatter<N, T, Op>(n, in, counts, capacity, mode, align, threads, seed);
  const std::string config = std::string("reduce_scatter ") + type_name<T>() + " n=" + std::to_string(n) +
                             (N == 0 ? " (runtime)" : "") + " mode " + std::to_string(int(mode)) + " align " +
                             std::to_string(align) + " seed " + std::to_string(seed) + ": ";
  std::vector<float> x(n);
  for (uint32_t call = 0; call < calls; ++call)
    for (uint32_t e = 0; e < counts[call]; ++e) {
      for (uint32_t q = 0; q < n; ++q) x[q] = bits_to_float<T>(in[(size_t(call) * n + q) * capacity + e]);
      const auto want = reference_reduce<T, Op>(prim::Strategy::Linear, n, x);
      for (uint32_t r = 0; r < n; ++r) {
        const auto got = out[(size_t(call) * n + r) * capacity + e];
        if (got != want)
          return config + "call " + std::to_string(call) + " (count " + std::to_string(counts[call]) + ") rank " +
                 std::to_string(r) + " element " + std::to_string(e) + ": " + bits_string(got) + ", want " +
                 bits_string(want);
      }
    }
  return "";
}

// The softmax merge through reduce_scatter into a separate dst + all_gather, record-aligned uneven ownership.
template <uint32_t N>
std::string check_reduce_scatter_softmax(uint32_t n, uint32_t calls, uint64_t seed, uint32_t data_seed) {
  const SoftmaxCase c = softmax_case(n, calls, data_seed);
  const std::vector<uint32_t> counts(calls, kSoftmaxCount);
  const auto out = run_reduce_scatter<N, float, prim::SoftmaxMerge<kSoftmaxDim>>(
      n, c.states, counts, kSoftmaxCount, RsMode::SeparateDst, SoftmaxTestState::kFloats, 64, seed);
  const std::string config = "reduce_scatter softmax n=" + std::to_string(n) + " seed " + std::to_string(seed) + ": ";
  for (uint32_t call = 0; call < calls; ++call) {
    const uint32_t* rank0 = out.data() + size_t(call) * n * kSoftmaxCount;
    for (uint32_t r = 1; r < n; ++r)
      if (std::memcmp(rank0, rank0 + r * kSoftmaxCount, kSoftmaxCount * 4) != 0)
        return config + "call " + std::to_string(call) + ": rank " + std::to_string(r) + " differs from rank 0";
    for (uint32_t h = 0; h < kSoftmaxHeads; ++h) {
      const float* rec = reinterpret_cast<const float*>(rank0) + h * SoftmaxTestState::kFloats;
      const std::vector<double>& want = c.expected[size_t(call) * kSoftmaxHeads + h];
      for (uint32_t i = 0; i < kSoftmaxDim; ++i) {
        const double got = double(rec[4 + i]) / double(rec[1]);
        if (!(std::fabs(got - want[i]) <= 2e-6 + 1e-5 * std::fabs(want[i])))
          return config + "call " + std::to_string(call) + " head " + std::to_string(h) + " o[" +
                 std::to_string(i) + "] = " + std::to_string(got) + ", want " + std::to_string(want[i]);
      }
    }
  }
  return "";
}

}  // namespace cf::test
