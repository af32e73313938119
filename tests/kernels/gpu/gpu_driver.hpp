// The GPU side of the kernel-test harness's driver (harness/driver.hpp): a case at a model's shapes against the CPU
// reference, then a second run and CUDA-graph replays that must give the same bits; the phase trace of a case.
#pragma once
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "gpu_test.hpp"
#include "harness/driver.hpp"

namespace cf::test {

// One checked run of a launch (outputs poisoned first, the status checked after): its outputs.
template <typename Launch>
auto run_checked(Launch& launch) {
  launch.poison();
  launch.run(nullptr, 0);
  launch.plan.check_status();
  return launch.result();
}

// The case against the reference (timing the reference), then a rerun and, with graph_check, CUDA-graph replays
// of the same plan: the same bits (the kernels' counters reset themselves; the attention's append rewrites the same
// k / v).
template <typename Op, typename T>
void check_on_gpu(const typename Op::Case& c, bool graph_check) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto in = make_inputs<T>(c);
  const auto o = make_oracle<T>(c, in);
  const double t_ref = seconds_since(t0);
  typename Op::Launch launch(c, in);
  const typename Op::Result r = run_checked(launch);
  const CheckReport rep = check_result<T>(c, in, o, r);
  EXPECT_TRUE(rep.ok) << rep.message;
  std::printf("%s: %s; reference %.1f s; %s\n", c.name.c_str(), launch.describe().c_str(), t_ref, rep.message.c_str());

  EXPECT_TRUE(Op::same_bits(run_checked(launch), r)) << "second run differs";
  if (graph_check) {
    replay_in_graph([&](cudaStream_t stream) { launch.run(stream, 0); }, [&] { launch.poison(); },
                    [&](cudaStream_t stream) { launch.plan.check_status(stream); });
    if (::testing::Test::HasFatalFailure()) return;
    EXPECT_TRUE(Op::same_bits(launch.result(), r)) << "CUDA-graph replay differs";
  }
}

template <typename Op>
void check_on_gpu_any(const typename Op::Case& c, bool graph_check = false) {
  with_element_type(c.dtype, [&]<typename T>() { check_on_gpu<Op, T>(c, graph_check); });
}

// The hang path on the hardware: the case's plan with a 1 µs wait budget (expect_prompt_timeout: the launch ends
// promptly, the timeout names the kernel's wait, no copy is left in flight, the plan refuses further launches), then
// a fresh plan on the same context gives the right answer.
template <typename Op>
void expect_prompt_timeout_then_recovery(const typename Op::Case& c, const std::string& kernel) {
  typename Op::Case tiny = c;
  tiny.wait_budget_us = 1;
  const auto in = with_element_type(c.dtype, [&]<typename T>() { return make_inputs<T>(c); });
  typename Op::Launch launch(tiny, in);
  expect_prompt_timeout(kernel, [&] { launch.run(nullptr, 0); }, [&] { launch.plan.check_status(); });
  check_on_gpu_any<Op>(c);
}

// An interval of a kernel's phase trace: from one trace point to another.
struct TraceInterval {
  const char* name;
  int from, to;
};

// Where the time goes: the case's plan made with `trace`, 3 warm-up and 10 timed stream-ordered calls, then the
// median and the slowest CTA of each interval (SM clock). No reference, no assertion on time: the numbers are for the
// kernels' docs; the test fails only if the trace is missing or out of order.
template <typename Op>
void print_phase_trace(const typename Op::Case& c, int slots, const std::vector<TraceInterval>& intervals) {
  const auto in = with_element_type(c.dtype, [&]<typename T>() { return make_inputs<T>(c); });
  typename Op::Case traced = c;
  traced.trace = true;
  typename Op::Launch launch(traced, in);
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  ASSERT_EQ(cudaEventCreate(&e0), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&e1), cudaSuccess);
  for (int i = 0; i < 3; ++i) launch.run(nullptr, 0);  // warm-up (the attention appends the same k / v again)
  constexpr int kTimed = 10;
  ASSERT_EQ(cudaEventRecord(e0), cudaSuccess);
  for (int i = 0; i < kTimed; ++i) launch.run(nullptr, 0);
  ASSERT_EQ(cudaEventRecord(e1), cudaSuccess);
  launch.plan.check_status();
  float ms = 0.0f;
  ASSERT_EQ(cudaEventElapsedTime(&ms, e0, e1), cudaSuccess);
  (void)cudaEventDestroy(e0);
  (void)cudaEventDestroy(e1);
  const std::vector<uint64_t> tr = launch.plan.read_trace();
  ASSERT_EQ(tr.size() % size_t(slots), 0u);
  const size_t ctas = tr.size() / size_t(slots);
  int clock_khz = 0;
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0) != cudaSuccess || clock_khz <= 0)
    clock_khz = 1980000;  // H100 SXM's peak, when the device does not say
  const double us_per_cycle = 1e3 / double(clock_khz);
  std::string line = c.name + ": " + launch.describe() + "; stream-ordered launch " +
                     std::to_string(1e3 * ms / kTimed).substr(0, 6) + " us/call\n  phase (us at " +
                     std::to_string(clock_khz / 1000) + " MHz): median / slowest CTA\n";
  for (const TraceInterval& iv : intervals) {
    std::vector<double> v;
    for (size_t cta = 0; cta < ctas; ++cta) {
      const uint64_t a = tr[cta * size_t(slots) + size_t(iv.from)], b = tr[cta * size_t(slots) + size_t(iv.to)];
      EXPECT_GE(b, a) << c.name << " " << iv.name << " CTA " << cta;
      v.push_back(double(b - a) * us_per_cycle);
    }
    std::sort(v.begin(), v.end());
    char buf[96];
    std::snprintf(buf, sizeof buf, "  %-10s %8.2f / %8.2f\n", iv.name, v[v.size() / 2], v.back());
    line += buf;
  }
  std::printf("%s", line.c_str());
}

}  // namespace cf::test
