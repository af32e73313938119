// The ClusterReduceScatter cases, run by tests/emu/primitives/test_reduce_scatter.cpp and its GPU twin (kept apart
// from suite.hpp so the other test files do not compile these kernels).
#pragma once
#include <string>
#include <vector>

#include "kernels/reduce_scatter_kernels.hpp"
#include "kernels/suite.hpp"

namespace cf::test {

inline std::string both(const std::string& a, const std::string& b) {
  return a.empty() ? b : b.empty() ? a : a + "\n" + b;
}

// ClusterReduceScatter: compile-time and run-time cluster sizes, even and uneven (empty, unaligned) ownership,
// every type, an order-sensitive op, the softmax merge, 50 back-to-back calls, 10 schedule seeds.
inline Failures reduce_scatter_cases() {
  Failures f;
  auto sweep = [](auto sample) {
    std::vector<uint32_t> seq = sample;
    seq.insert(seq.end(), sample.rbegin(), sample.rend());
    return seq;
  };
  const auto f32 = sweep(sample_counts<float>()), f16 = sweep(sample_counts<dev::f16>());
  auto name = [](const char* what, uint32_t n) { return std::string(what) + " n=" + std::to_string(n); };
  for_each_cluster_size<2, 4>([&]<uint32_t N>() {
    run_case(f, name("rs compile-time N", N), [&] {
      return both(check_reduce_scatter<N, float>(N, f32, RsMode::AllReduce, 4, 64, 1, 50 + N),
                  check_reduce_scatter<N, float>(N, f32, RsMode::SkewedInPlace, 1, 64, 2, 60 + N));
    });
  });
  run_case(f, name("rs compile-time N", 16), [&] {
    return check_reduce_scatter<16, float>(16, f32, RsMode::SkewedInPlace, 4, 64, 3, 77);
  });
  for (uint32_t n = 2; n <= 16; ++n) {
    run_case(f, name("rs runtime N", n), [&] {
      return both(check_reduce_scatter<0, float>(n, f32, RsMode::AllReduce, 4, 64, n, 80 + n),
                  check_reduce_scatter<0, float>(n, f32, RsMode::SkewedInPlace, 1, 64, n + 1, 100 + n));
    });
  }
  run_case(f, "rs types and ops", [&] {
    return both(both(check_reduce_scatter<0, dev::f16>(3, f16, RsMode::SkewedInPlace, 1, 64, 4, 121),
                     check_reduce_scatter<0, dev::bf16>(6, f16, RsMode::AllReduce, 8, 96, 5, 122)),
                both(check_reduce_scatter<0, float, SkewedSum>(7, f32, RsMode::SkewedInPlace, 1, 64, 6, 123),
                     check_reduce_scatter<0, float, prim::Max>(5, f32, RsMode::SeparateDst, 4, 64, 7, 124)));
  });
  for (uint32_t n : {2u, 5u, 8u, 16u})
    run_case(f, name("rs softmax", n), [&] { return check_reduce_scatter_softmax<0>(n, 6, 8, 130 + n); });
  run_case(f, name("rs softmax compile-time", 4), [&] { return check_reduce_scatter_softmax<4>(4, 6, 9, 140); });
  std::vector<uint32_t> fifty;
  for (uint32_t i = 0; i < 50; ++i) fifty.push_back(std::vector<uint32_t>{1, 4, 60, 256, 0, 33, 1024, 7}[i % 8]);
  run_case(f, "rs 50 calls", [&] {
    return both(check_reduce_scatter<0, float>(5, fifty, RsMode::SkewedInPlace, 1, 64, 10, 150),
                check_reduce_scatter<4, float>(4, fifty, RsMode::AllReduce, 4, 64, 11, 151));
  });
  for (uint64_t seed = 1; seed <= kScheduleSeeds; ++seed)
    run_case(f, "rs seed " + std::to_string(seed), [&] {
      return check_reduce_scatter<0, float>(5, f32, RsMode::SkewedInPlace, 1, 64, seed, 160);
    });
  return f;
}

}  // namespace cf::test
