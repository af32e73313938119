// Micro-benchmark of the cluster collectives (include/clusterfusion/primitives): latency of one fp32 sum all-reduce
// across an N-CTA cluster, measured inside one kernel over many back-to-back calls, for N = 2, 4, 8, 16 and
// 256 B .. 64 KB per CTA, for every strategy/transport of ClusterReduce, the zero-copy reduce-scatter + all-gather of
// ClusterReduceScatter, and an all-reduce through global memory (L2).
//
//   cf_bench_cluster_collectives [--json PATH] [--iters N]
//
// Per call each CTA (128 threads) refills its buffer in shared memory with integer-valued data that depends on the
// call index (so no call can reuse a previous result), then all-reduces it. One cluster runs alone on the GPU, so
// the figures are latencies. Thread 0 of rank 0 reads %globaltimer after the warm-up calls and after the timed
// calls; ns/call = elapsed / calls. "net" subtracts the refill-only loop (same kernel without the collective). Every
// run checks the last call's result on every rank against the exact host sum. Waits are bounded (a stuck handshake
// sets a flag and the run is reported as failed) and the host gives every launch 10 s before it exits, so the
// program never hangs; it takes a few seconds.
//
// The global-memory path is written to be fair: double-buffered slots in global memory ([parity][rank][count]),
// 16-byte L2 stores (st.global.cg), one release counter per parity (threadfence + atomicAdd by one thread, polled
// with ld.acquire.gpu), then 16-byte L2 loads (ld.global.cg) of all N slots combined in rank order. Like the DSMEM
// path it needs no acknowledgement round (each call signals every rank) and no grid-wide barrier.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/device/launch.hpp"
#include "clusterfusion/primitives/cluster_reduce.hpp"
#include "clusterfusion/primitives/cluster_reduce_scatter.hpp"

#ifndef CF_GIT_SHA
#define CF_GIT_SHA "unknown"
#endif

namespace {
namespace dev = cf::dev;
namespace prim = cf::prim;

constexpr uint32_t kThreads = 128;
constexpr uint32_t kWarmupCalls = 50;
constexpr uint32_t kMaxPolls = 1u << 20;  // a healthy wait takes a few polls; this gives up well inside 10 s
constexpr uint64_t kWaitBudgetNs = 1'000'000'000;  // an mbarrier wait of a collective gives up after 1 s
constexpr double kLaunchTimeoutS = 10.0;
constexpr uint32_t kRepeats = 3;  // launches per configuration; the median is reported

enum class Method : uint8_t { LinearPull, LinearPush, TreePull, TreePush, ReduceScatter, Global, RefillOnly };
constexpr size_t kDsmemMethods = 5;  // the methods before Global; each table group is kDsmemMethods + 1 rows
const char* method_name(Method m) {
  switch (m) {
    case Method::LinearPull: return "linear/pull";
    case Method::LinearPush: return "linear/push";
    case Method::TreePull: return "tree/pull";
    case Method::TreePush: return "tree/push";
    case Method::ReduceScatter: return "rs+ag/inplace";
    case Method::Global: return "global (L2)";
    case Method::RefillOnly: return "refill only";
  }
  return "?";
}

struct BenchParams {
  uint32_t count;            // floats per CTA
  uint32_t calls;            // timed calls (after kWarmupCalls)
  float* out;                // [N][count]: every rank's buffer after the last call
  unsigned long long* elapsed_ns;
  uint64_t* timeout;         // set when a bounded wait gave up
  float* global_slots;       // Global: [2][N][count]
  uint32_t* counters;        // Global: [2], zero at launch
};

template <uint32_t N, Method M>
struct Bench {
  static constexpr prim::Strategy kStrategy =
      (M == Method::TreePull || M == Method::TreePush) ? prim::Strategy::Tree : prim::Strategy::Linear;
  static constexpr prim::Transport kTransport =
      (M == Method::LinearPush || M == Method::TreePush) ? prim::Transport::Push : prim::Transport::Pull;
  using Reduce = std::conditional_t<M == Method::ReduceScatter, prim::ClusterReduceScatter<N, float>,
                                    prim::ClusterReduce<N, float, kStrategy, kTransport>>;
  static constexpr bool kCollective = M != Method::Global && M != Method::RefillOnly;
  CF_HOST_DEVICE static uint32_t workspace(uint32_t count) {
    if constexpr (M == Method::ReduceScatter) {
      return prim::detail::round_up(Reduce::workspace_bytes(), 128);
    } else {
      return kCollective ? prim::detail::round_up(Reduce::workspace_bytes(count), 128) : 0;
    }
  }
  CF_DEVICE static Reduce make(uint8_t* smem, const BenchParams& p);
  CF_HOST_DEVICE static uint32_t smem_bytes(uint32_t count) { return workspace(count) + count * 4; }
};

template <uint32_t N, Method M>
CF_DEVICE typename Bench<N, M>::Reduce Bench<N, M>::make(uint8_t* smem, const BenchParams& p) {
  const prim::WaitLimit limit{p.timeout, kWaitBudgetNs};
  if constexpr (M == Method::ReduceScatter) {
    return Reduce(smem, prim::ThreadGroup::block(), limit);
  } else {
    return Reduce(smem, p.count, prim::ThreadGroup::block(), limit);
  }
}

__device__ __forceinline__ uint32_t load_acquire_gpu(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// The input of rank r, element e, call i: small integers, so every sum is exact in fp32.
__host__ __device__ __forceinline__ float input_value(uint32_t rank, uint32_t e, uint32_t call) {
  return float((rank * 7u + e * 3u + call) & 15u);
}

template <uint32_t N, Method M>
__global__ void __launch_bounds__(kThreads, 1) bench_kernel(const __grid_constant__ BenchParams p) {
  using B = Bench<N, M>;
  uint8_t* smem = dev::dynamic_smem();
  float* buf = reinterpret_cast<float*>(smem + B::workspace(p.count));
  const uint32_t t = dev::thread_rank(), rank = dev::block_rank_in_cluster();
  const uint32_t vectors = p.count / 4;
  typename B::Reduce reduce = B::make(smem, p);
  if constexpr (B::kCollective) reduce.init();
  dev::cluster_sync();
  uint64_t start = 0;
  const uint32_t total = kWarmupCalls + p.calls;
  for (uint32_t call = 0; call < total; ++call) {
    if (call == kWarmupCalls && t == 0) start = dev::globaltimer_ns();
    for (uint32_t v = t; v < vectors; v += kThreads) {
      const uint32_t e = 4 * v;
      reinterpret_cast<float4*>(buf)[v] = make_float4(input_value(rank, e, call), input_value(rank, e + 1, call),
                                                      input_value(rank, e + 2, call), input_value(rank, e + 3, call));
    }
    dev::block_sync();
    if constexpr (B::kCollective) {
      reduce.all_reduce(buf, p.count, prim::Sum{});
    } else if constexpr (M == Method::Global) {
      const uint32_t parity = call & 1u, use = call >> 1;
      float* slots = p.global_slots + size_t(parity) * N * p.count;
      float4* mine = reinterpret_cast<float4*>(slots + size_t(rank) * p.count);
      for (uint32_t v = t; v < vectors; v += kThreads) __stcg(mine + v, reinterpret_cast<float4*>(buf)[v]);
      dev::block_sync();
      if (t == 0) {
        dev::threadfence();
        atomicAdd(p.counters + parity, 1u);
        uint32_t polls = 0;
        while (load_acquire_gpu(p.counters + parity) < N * (use + 1)) {
          if (++polls > kMaxPolls) {
            *static_cast<volatile uint64_t*>(p.timeout) = 1u;
            break;
          }
        }
      }
      dev::block_sync();
      for (uint32_t v = t; v < vectors; v += kThreads) {
        float4 acc = __ldcg(reinterpret_cast<const float4*>(slots) + v);
        CF_UNROLL
        for (uint32_t q = 1; q < N; ++q) {
          const float4 x = __ldcg(reinterpret_cast<const float4*>(slots + size_t(q) * p.count) + v);
          acc.x += x.x;
          acc.y += x.y;
          acc.z += x.z;
          acc.w += x.w;
        }
        reinterpret_cast<float4*>(buf)[v] = acc;
      }
      dev::block_sync();
    }
  }
  if (t == 0 && rank == 0) *p.elapsed_ns = dev::globaltimer_ns() - start;
  for (uint32_t e = t; e < p.count; e += kThreads) p.out[size_t(rank) * p.count + e] = buf[e];
  dev::cluster_sync();
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    std::fprintf(stderr, "error: %s: %s\n", what, cudaGetErrorString(err));
    std::exit(2);
  }
}

// Waits for the launch with a deadline; a stuck kernel cannot be killed, so the process exits (context torn down).
void wait_or_exit(const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(kLaunchTimeoutS);
  for (;;) {
    const cudaError_t err = cudaStreamQuery(nullptr);
    if (err == cudaSuccess) return;
    if (err != cudaErrorNotReady) check(err, what);
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "error: %s did not finish within %.0f s; exiting\n", what, kLaunchTimeoutS);
      std::fflush(stdout);
      std::_Exit(3);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

struct Result {
  uint32_t n = 0, bytes = 0;
  Method method = Method::LinearPull;
  bool ran = false, correct = false, timed_out = false;
  double ns_per_call = 0, net_ns = 0;
  std::string note;
};

template <uint32_t N, Method M>
Result run_one(uint32_t bytes, uint32_t calls) {
  using B = Bench<N, M>;
  Result r;
  r.n = N;
  r.bytes = bytes;
  r.method = M;
  const uint32_t count = bytes / 4;
  if (B::smem_bytes(count) > dev::kMaxSmemPerBlock) {
    r.note = "n/a: needs " + std::to_string(B::smem_bytes(count) / 1024) + " KB smem";
    return r;
  }
  dev::DeviceBuffer<float> out(size_t(N) * count), slots(M == Method::Global ? size_t(2) * N * count : 1);
  dev::DeviceBuffer<unsigned long long> elapsed(1);
  dev::DeviceBuffer<uint64_t> timeout(1);
  dev::DeviceBuffer<uint32_t> counters(2);
  BenchParams p{count, calls, out.data(), elapsed.data(), timeout.data(), slots.data(), counters.data()};
  dev::LaunchConfig cfg;
  cfg.grid = {N};
  cfg.cluster = {N};
  cfg.block = {kThreads};
  cfg.smem_bytes = B::smem_bytes(count);
  cfg.allow_nonportable_cluster = N > dev::kMaxPortableClusterSize;
  cfg.name = "bench_cluster_collectives";
  std::vector<double> times;
  bool correct = true;
  for (uint32_t rep = 0; rep < kRepeats; ++rep) {
    counters.fill_bytes(0);
    timeout.fill_bytes(0);
    out.fill_bytes(0xff);
    try {
      dev::launch(cfg, bench_kernel<N, M>, p);
    } catch (const cf::Error& e) {  // e.g. a 16-CTA cluster with this much shared memory cannot be placed
      (void)cudaGetLastError();
      r.note = std::string("n/a: launch failed: ") + e.what();
      return r;
    }
    wait_or_exit(method_name(M));
    check(cudaGetLastError(), "kernel");
    if (timeout.download()[0] != 0) r.timed_out = true;
    times.push_back(double(elapsed.download()[0]) / calls);
    if (M != Method::RefillOnly) {
      const std::vector<float> got = out.download();
      const uint32_t last = kWarmupCalls + calls - 1;
      for (uint32_t rank = 0; rank < N && correct; ++rank)
        for (uint32_t e = 0; e < count; ++e) {
          float want = 0;
          for (uint32_t q = 0; q < N; ++q) want += input_value(q, e, last);
          if (got[size_t(rank) * count + e] != want) {
            correct = false;
            r.note = "wrong result at rank " + std::to_string(rank) + " element " + std::to_string(e);
            break;
          }
        }
    }
  }
  std::sort(times.begin(), times.end());
  r.ran = true;
  r.correct = correct && !r.timed_out;
  if (r.timed_out) r.note = "a wait timed out";
  r.ns_per_call = times[times.size() / 2];
  return r;
}

template <uint32_t N>
void run_cluster_size(const std::vector<uint32_t>& sizes, uint32_t calls, std::vector<Result>& results) {
  for (uint32_t bytes : sizes) {
    const Result refill = run_one<N, Method::RefillOnly>(bytes, calls);
    std::vector<Result> row = {run_one<N, Method::LinearPull>(bytes, calls),
                               run_one<N, Method::LinearPush>(bytes, calls),
                               run_one<N, Method::TreePull>(bytes, calls),
                               run_one<N, Method::TreePush>(bytes, calls),
                               run_one<N, Method::ReduceScatter>(bytes, calls),
                               run_one<N, Method::Global>(bytes, calls)};
    for (Result& r : row) {
      r.net_ns = r.ns_per_call - refill.ns_per_call;
      results.push_back(r);
    }
  }
}

std::string size_name(uint32_t bytes) {
  return bytes >= 1024 ? std::to_string(bytes / 1024) + " KB" : std::to_string(bytes) + " B";
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  uint32_t calls = 1000;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else if (a == "--iters" && i + 1 < argc) {
      calls = uint32_t(std::max(1, std::atoi(argv[++i])));
    } else {
      std::fprintf(stderr, "usage: %s [--json PATH] [--iters CALLS]\n", argv[0]);
      return a == "--help" || a == "-h" ? 0 : 1;
    }
  }
  if (!dev::device_available()) {
    std::printf("no CUDA device: nothing to measure\n");
    return 0;
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  if (prop.major < 9) {
    std::printf("device %s is compute capability %d.%d; the collectives need Hopper (9.0)\n", prop.name, prop.major,
                prop.minor);
    return 0;
  }
  int clock_khz = 0, mem_clock_khz = 0;
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0);
  cudaDeviceGetAttribute(&mem_clock_khz, cudaDevAttrMemoryClockRate, 0);
  std::printf("cluster collectives: fp32 sum all-reduce, one cluster of N CTAs x %u threads, %u timed calls per "
              "launch (after %u warm-up), median of %u launches\n",
              kThreads, calls, kWarmupCalls, kRepeats);
  std::printf("device: %s, %d SMs, SM clock %d MHz, memory clock %d MHz, git %s\n\n", prop.name,
              prop.multiProcessorCount, clock_khz / 1000, mem_clock_khz / 1000, CF_GIT_SHA);

  const std::vector<uint32_t> sizes = {256, 1024, 4096, 16384, 65536};
  std::vector<Result> results;
  run_cluster_size<2>(sizes, calls, results);
  run_cluster_size<4>(sizes, calls, results);
  run_cluster_size<8>(sizes, calls, results);
  run_cluster_size<16>(sizes, calls, results);

  // Table: one row per (N, size, method); speed-up against the global path of the same (N, size), on net times.
  std::printf("%3s %7s  %-12s %10s %10s %12s  %s\n", "N", "bytes", "method", "ns/call", "net ns", "vs global", "check");
  bool all_correct = true;
  for (size_t i = 0; i < results.size(); i += kDsmemMethods + 1) {
    const Result& global = results[i + kDsmemMethods];
    for (size_t j = 0; j <= kDsmemMethods; ++j) {
      const Result& r = results[i + j];
      if (!r.ran) {
        std::printf("%3u %7s  %-12s %10s %10s %12s  %s\n", r.n, size_name(r.bytes).c_str(), method_name(r.method), "-",
                    "-", "-", r.note.c_str());
        continue;
      }
      all_correct = all_correct && r.correct;
      char ratio[32] = "";
      if (j < kDsmemMethods && global.ran && r.net_ns > 0) std::snprintf(ratio, sizeof(ratio), "%.2fx", global.net_ns / r.net_ns);
      std::printf("%3u %7s  %-12s %10.0f %10.0f %12s  %s\n", r.n, size_name(r.bytes).c_str(), method_name(r.method),
                  r.ns_per_call, r.net_ns, ratio, r.correct ? "ok" : ("FAILED: " + r.note).c_str());
    }
    std::printf("\n");
  }

  // Best DSMEM method per (N, size) and the goals of issue 5.
  std::printf("best DSMEM method per cluster size and buffer size (net ns; speed-up vs global):\n");
  bool goal_ratio = true;
  double n4_4k = -1;
  std::string best_json;
  for (size_t i = 0; i < results.size(); i += kDsmemMethods + 1) {
    const Result* best = nullptr;
    for (size_t j = 0; j < kDsmemMethods; ++j) {
      const Result& r = results[i + j];
      if (r.ran && r.correct && (best == nullptr || r.net_ns < best->net_ns)) best = &r;
    }
    const Result& global = results[i + kDsmemMethods];
    if (best == nullptr) continue;
    const double ratio = global.net_ns / best->net_ns;
    goal_ratio = goal_ratio && ratio >= 1.5;
    if (best->n == 4 && best->bytes == 4096) n4_4k = best->net_ns;
    std::printf("  N=%-2u %6s: %-12s %7.0f ns  %.2fx\n", best->n, size_name(best->bytes).c_str(),
                method_name(best->method), best->net_ns, ratio);
    char line[256];
    std::snprintf(line, sizeof(line), "%s{\"n\": %u, \"bytes\": %u, \"method\": \"%s\", \"net_ns\": %.1f, \"speedup\": %.3f}",
                  best_json.empty() ? "" : ", ", best->n, best->bytes, method_name(best->method), best->net_ns, ratio);
    best_json += line;
  }
  std::printf("\ngoal: N=4, 4 KB all-reduce <= 800 ns: %s (%.0f ns)\n", n4_4k >= 0 && n4_4k <= 800 ? "met" : "NOT met",
              n4_4k);
  std::printf("goal: best DSMEM method >= 1.5x the global path at every N and size: %s\n",
              goal_ratio ? "met" : "NOT met");
  std::printf("results %s\n", all_correct ? "all correct" : "HAVE FAILURES");

  if (!json_path.empty()) {
    FILE* f = std::fopen(json_path.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "error: cannot write %s\n", json_path.c_str());
      return 1;
    }
    std::fprintf(f, "{\n  \"benchmark\": \"cluster_collectives\",\n  \"device\": \"%s\",\n  \"sms\": %d,\n",
                 prop.name, prop.multiProcessorCount);
    std::fprintf(f, "  \"sm_clock_mhz\": %d,\n  \"git_sha\": \"%s\",\n  \"threads_per_cta\": %u,\n", clock_khz / 1000,
                 CF_GIT_SHA, kThreads);
    std::fprintf(f, "  \"timed_calls\": %u,\n  \"warmup_calls\": %u,\n  \"launches_median_of\": %u,\n", calls,
                 kWarmupCalls, kRepeats);
    std::fprintf(f, "  \"results\": [\n");
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(f,
                   "    {\"n\": %u, \"bytes\": %u, \"method\": \"%s\", \"ran\": %s, \"correct\": %s, "
                   "\"ns_per_call\": %.1f, \"net_ns\": %.1f, \"note\": \"%s\"}%s\n",
                   r.n, r.bytes, method_name(r.method), r.ran ? "true" : "false", r.correct ? "true" : "false",
                   r.ns_per_call, r.net_ns, r.note.c_str(), i + 1 < results.size() ? "," : "");
    }
    std::fprintf(f, "  ],\n  \"best\": [%s],\n", best_json.c_str());
    std::fprintf(f, "  \"goal_n4_4kb_ns\": %.1f,\n  \"goal_n4_4kb_met\": %s,\n  \"goal_1p5x_everywhere_met\": %s,\n",
                 n4_4k, n4_4k >= 0 && n4_4k <= 800 ? "true" : "false", goal_ratio ? "true" : "false");
    std::fprintf(f, "  \"all_correct\": %s\n}\n", all_correct ? "true" : "false");
    std::fclose(f);
    std::printf("wrote %s\n", json_path.c_str());
  }
  return all_correct ? 0 : 1;
}
