// The collective test cases, written once and run by both the emulator tests (tests/emu/primitives/*.cpp) and the
// GPU tests (tests/gpu/primitives/*.cu). Each returns the list of failures (empty: pass). Cases are grouped so
// that each test file instantiates a bounded number of kernels.
#pragma once
#include <string>
#include <vector>

#include "kernels/checks.hpp"

namespace cf::test {

using Failures = std::vector<std::string>;

// Schedule seeds per reuse case: 10 (the determinism requirement); 4 under the sanitizers, where the emulator is
// about ten times slower.
#if defined(CF_SANITIZE)
inline constexpr uint64_t kScheduleSeeds = 4;
#else
inline constexpr uint64_t kScheduleSeeds = 10;
#endif

inline void note(Failures& f, const std::string& failure) {
  if (!failure.empty()) f.push_back(failure);
}
// Runs one check; an exception (an emulator report, a CUDA launch error) becomes a failure naming the case, so the
// remaining cases still run.
template <typename Check>
void run_case(Failures& f, const std::string& name, Check check) {
  try {
    note(f, check());
  } catch (const std::exception& e) {
    f.push_back(name + ": " + e.what());
  }
}
template <uint32_t N, typename T, prim::Strategy S, prim::Transport X, Kind K>
std::string case_name(const CollectiveRun& run) {
  static const char* kinds[] = {"all_reduce", "reduce_to_root", "all_gather"};
  return std::string(kinds[int(K)]) + " " + type_name<T>() + " N=" + std::to_string(N) + " " + strategy_name(S) +
         "/" + transport_name(X) + " seed " + std::to_string(run.seed) + " threads " + std::to_string(run.threads);
}

inline std::string join(const Failures& f) {
  std::string s;
  for (const auto& x : f) s += x + "\n";
  return s;
}

// Runs `check` (a generic lambda taking <Strategy, Transport> as template arguments) for the four combinations.
template <typename F>
void for_each_schedule(F&& check) {
  check.template operator()<prim::Strategy::Linear, prim::Transport::Pull>();
  check.template operator()<prim::Strategy::Linear, prim::Transport::Push>();
  check.template operator()<prim::Strategy::Tree, prim::Transport::Pull>();
  check.template operator()<prim::Strategy::Tree, prim::Transport::Push>();
}

// Every schedule, sample sizes 1 element .. 16 KB (those that fit in shared memory), one after another in one
// launch, cluster sizes First..Last.
template <uint32_t First, uint32_t Last, typename T, Kind K, typename Op = prim::Sum>
Failures sweep_cluster_sizes(uint64_t seed) {
  Failures f;
  for_each_cluster_size<First, Last>([&]<uint32_t N>() {
    for_each_schedule([&]<prim::Strategy S, prim::Transport X>() {
      CollectiveRun run;
      run.seed = seed;
      run_case(f, case_name<N, T, S, X, K>(run),
               [&] { return check_sweep<N, T, S, X, K, Op>(run, 1000 * N + 7); });
    });
  });
  return f;
}

// An order-sensitive user op: any difference in association or operand order changes the bits.
struct SkewedSum {
  CF_HOST_DEVICE static float identity() { return 0.0f; }
  CF_HOST_DEVICE static float combine(float lower, float higher) { return 0.5f * lower + higher; }
};

// fp16/bf16 sums, max/min, a user op, on a few cluster sizes.
inline Failures types_and_ops() {
  Failures f;
  CollectiveRun run;
  run.seed = 3;
  for_each_schedule([&]<prim::Strategy S, prim::Transport X>() {
    run_case(f, case_name<3, dev::f16, S, X, Kind::AllReduce>(run),
             [&] { return check_sweep<3, dev::f16, S, X, Kind::AllReduce>(run, 11); });
    run_case(f, case_name<8, dev::f16, S, X, Kind::AllReduce>(run),
             [&] { return check_sweep<8, dev::f16, S, X, Kind::AllReduce>(run, 12); });
    run_case(f, case_name<5, dev::bf16, S, X, Kind::AllReduce>(run),
             [&] { return check_sweep<5, dev::bf16, S, X, Kind::AllReduce>(run, 13); });
    run_case(f, case_name<16, dev::bf16, S, X, Kind::AllReduce>(run),
             [&] { return check_sweep<16, dev::bf16, S, X, Kind::AllReduce>(run, 14); });
    run_case(f, case_name<6, float, S, X, Kind::AllReduce>(run),
             [&] { return check_sweep<6, float, S, X, Kind::AllReduce, prim::Max>(run, 15); });
    run_case(f, case_name<4, dev::bf16, S, X, Kind::AllReduce>(run),
             [&] { return check_sweep<4, dev::bf16, S, X, Kind::AllReduce, prim::Min>(run, 16); });
    run_case(f, case_name<7, float, S, X, Kind::AllReduce>(run),
             [&] { return check_sweep<7, float, S, X, Kind::AllReduce, SkewedSum>(run, 17); });
    run_case(f, case_name<8, float, S, X, Kind::AllReduce>(run),
             [&] { return check_sweep<8, float, S, X, Kind::AllReduce, SkewedSum>(run, 18); });
    run_case(f, case_name<3, dev::f16, S, X, Kind::AllGather>(run),
             [&] { return check_sweep<3, dev::f16, S, X, Kind::AllGather>(run, 19); });
    run_case(f, case_name<8, dev::bf16, S, X, Kind::AllGather>(run),
             [&] { return check_sweep<8, dev::bf16, S, X, Kind::AllGather>(run, 20); });
  });
  return f;
}

// Reduce-to-root (the root moves every call) and the softmax-state merge.
inline Failures root_and_softmax() {
  Failures f;
  CollectiveRun run;
  run.seed = 5;
  for_each_schedule([&]<prim::Strategy S, prim::Transport X>() {
    run_case(f, case_name<2, float, S, X, Kind::ReduceToRoot>(run),
             [&] { return check_sweep<2, float, S, X, Kind::ReduceToRoot>(run, 21); });
    run_case(f, case_name<6, float, S, X, Kind::ReduceToRoot>(run),
             [&] { return check_sweep<6, float, S, X, Kind::ReduceToRoot>(run, 22); });
    run_case(f, case_name<16, dev::f16, S, X, Kind::ReduceToRoot>(run),
             [&] { return check_sweep<16, dev::f16, S, X, Kind::ReduceToRoot>(run, 23); });
    run_case(f, case_name<2, float, S, X, Kind::AllReduce>(run),
             [&] { return check_softmax_merge<2, S, X>(6, run, 24); });
    run_case(f, case_name<4, float, S, X, Kind::AllReduce>(run),
             [&] { return check_softmax_merge<4, S, X>(6, run, 25); });
    run_case(f, case_name<7, float, S, X, Kind::AllReduce>(run),
             [&] { return check_softmax_merge<7, S, X>(6, run, 26); });
    run_case(f, case_name<16, float, S, X, Kind::AllReduce>(run),
             [&] { return check_softmax_merge<16, S, X>(6, run, 27); });
  });
  return f;
}

// Many calls back to back with changing data and counts (the reuse handshake), 10 schedule seeds, a thread group
// that is not the whole block, two clusters per launch, in-place gather.
inline Failures reuse_and_groups() {
  Failures f;
  std::vector<uint32_t> fifty;
  for (uint32_t i = 0; i < 50; ++i) fifty.push_back(std::vector<uint32_t>{1, 4, 60, 256, 0, 33, 1024, 7}[i % 8]);
  for_each_schedule([&]<prim::Strategy S, prim::Transport X>() {
    for (uint64_t seed = 1; seed <= kScheduleSeeds; ++seed) {
      CollectiveRun run;
      run.seed = seed;
      run_case(f, case_name<4, float, S, X, Kind::AllReduce>(run),
               [&] { return check_sweep<4, float, S, X, Kind::AllReduce>(run, 31); });
      run_case(f, case_name<7, float, S, X, Kind::AllReduce>(run),
               [&] { return check_sweep<7, float, S, X, Kind::AllReduce>(run, 32); });
      run_case(f, case_name<5, float, S, X, Kind::AllGather>(run),
               [&] { return check_sweep<5, float, S, X, Kind::AllGather>(run, 33); });
    }
    CollectiveRun run;
    run.seed = 9;
    run_case(f, case_name<4, float, S, X, Kind::AllReduce>(run),
             [&] { return check_collective<4, float, S, X, Kind::AllReduce>(fifty, 1024, run, 34); });
    run_case(f, case_name<13, float, S, X, Kind::AllReduce>(run),
             [&] { return check_collective<13, float, S, X, Kind::AllReduce>(fifty, 1024, run, 35); });
    run_case(f, case_name<6, float, S, X, Kind::AllGather>(run),
             [&] { return check_collective<6, float, S, X, Kind::AllGather>(fifty, 1024, run, 36); });
    run_case(f, case_name<13, float, S, X, Kind::ReduceToRoot>(run),
             [&] { return check_collective<13, float, S, X, Kind::ReduceToRoot>(fifty, 1024, run, 37); });
    CollectiveRun group = run;
    group.threads = 128;
    group.group_first = 32;
    group.group_size = 64;
    run_case(f, case_name<4, float, S, X, Kind::AllReduce>(group),
             [&] { return check_sweep<4, float, S, X, Kind::AllReduce>(group, 38); });
    run_case(f, case_name<5, float, S, X, Kind::AllGather>(group),
             [&] { return check_sweep<5, float, S, X, Kind::AllGather>(group, 39); });
    CollectiveRun two = run;
    two.clusters = 2;
    run_case(f, case_name<4, float, S, X, Kind::AllReduce>(two),
             [&] { return check_sweep<4, float, S, X, Kind::AllReduce>(two, 40); });
    CollectiveRun in_place = run;
    in_place.in_place = true;
    run_case(f, case_name<5, float, S, X, Kind::AllGather>(in_place),
             [&] { return check_sweep<5, float, S, X, Kind::AllGather>(in_place, 41); });
    run_case(f, case_name<8, dev::bf16, S, X, Kind::AllGather>(in_place),
             [&] { return check_sweep<8, dev::bf16, S, X, Kind::AllGather>(in_place, 42); });
  });
  return f;
}

}  // namespace cf::test
