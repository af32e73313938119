// Shared by the GPU test suites (label gpu): skipping cleanly without a Hopper GPU, timing the host reference,
// checking that a plan's launch replays from a CUDA graph, and comparing a fused kernel with cuda-unfused.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "clusterfusion/common/half.hpp"
#include "clusterfusion/device/launch.hpp"
#include "clusterfusion/reference/tolerance.hpp"

namespace cf::test {

// The fused kernels' wait budget in the *Sanitizer* cases: compute-sanitizer's tools slow a kernel 10-1000x, so the
// default (20 ms, PlanConfig::wait_budget_us) would cut legitimate waits short there.
inline constexpr int64_t kSanitizerWaitBudgetUs = 30'000'000;

// The hang path on the hardware: `run` launches a plan whose wait budget is 1 us, so real waits expire (a weight
// tile takes longer to land) and the abort path runs for real: the launch must end promptly, `check` (the plan's
// check_status) name a timed-out wait of `kernel` with no copy left in flight (the drain), and `run` be refused
// afterwards. (If no wait happened to expire, only the promptness is checked.)
inline void expect_prompt_timeout(const std::string& kernel, const std::function<void()>& run,
                                  const std::function<void()>& check) {
  const auto t0 = std::chrono::steady_clock::now();
  run();
  std::string message;
  try {
    check();
  } catch (const std::exception& e) {
    message = e.what();
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s with a 1 us wait budget: %.3f s, %s\n", kernel.c_str(), secs,
              message.empty() ? "(no wait expired)" : message.c_str());
  EXPECT_LT(secs, 1.0);
  if (message.empty()) return;
  EXPECT_NE(message.find(kernel + ": a wait inside the kernel timed out after 1 us"), std::string::npos) << message;
  EXPECT_EQ(message.find("still in flight"), std::string::npos) << message;
  EXPECT_ANY_THROW(run());
}

// True when a CUDA device of compute capability >= 9.0 is present; prints the device once.
inline bool hopper_available() {
  if (!cf::dev::device_available()) return false;
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return false;
  static bool printed = false;
  if (!printed) {
    std::printf("device: %s, compute capability %d.%d, %d SMs\n", prop.name, prop.major, prop.minor,
                prop.multiProcessorCount);
    printed = true;
  }
  return prop.major >= 9;
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Captures launch(stream) once into a CUDA graph on a fresh non-blocking stream, calls poison() (e.g. fills the
// outputs with 0xFF on the legacy stream) and synchronises, replays the graph `replays` times, then calls
// check_status(stream). The caller compares the outputs afterwards (return early on HasFatalFailure()).
inline void replay_in_graph(const std::function<void(cudaStream_t)>& launch, const std::function<void()>& poison,
                            const std::function<void(cudaStream_t)>& check_status, int replays = 3) {
  struct Resources {
    cudaStream_t stream = nullptr;
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    ~Resources() {
      if (exec) (void)cudaGraphExecDestroy(exec);
      if (graph) (void)cudaGraphDestroy(graph);
      if (stream) (void)cudaStreamDestroy(stream);
    }
  } r;
  ASSERT_EQ(cudaStreamCreateWithFlags(&r.stream, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(r.stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  launch(r.stream);
  ASSERT_EQ(cudaStreamEndCapture(r.stream, &r.graph), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&r.exec, r.graph, 0), cudaSuccess);
  poison();
  cf::dev::synchronize();  // poison() may run on the legacy stream; `stream` does not wait for it
  for (int i = 0; i < replays; ++i) ASSERT_EQ(cudaGraphLaunch(r.exec, r.stream), cudaSuccess);
  check_status(r.stream);
}

// A fused kernel against cuda-unfused on the same inputs (T = cf::half or cf::bfloat16 storage bits): residual_out
// bit-identical, and the fused output's max error against the fp32 reference not above the policy's factor times the
// baseline's (or atol); prints both errors and the largest difference between the two.
template <typename T>
void expect_not_worse_than_unfused(const std::string& name, const std::vector<uint16_t>& fused_out,
                                   const std::vector<uint16_t>& fused_res, const std::vector<uint16_t>& unfused_out,
                                   const std::vector<uint16_t>& unfused_res, const std::vector<float>& out_ref) {
  EXPECT_EQ(fused_res, unfused_res) << "residual_out differs between fused and cuda-unfused";
  ASSERT_EQ(fused_out.size(), unfused_out.size());
  std::vector<float> yf(fused_out.size()), yu(unfused_out.size());
  double max_diff = 0.0;
  for (size_t i = 0; i < yf.size(); ++i) {
    yf[i] = to_float(T::from_bits(fused_out[i]));
    yu[i] = to_float(T::from_bits(unfused_out[i]));
    max_diff = std::max(max_diff, double(std::fabs(yf[i] - yu[i])));
  }
  const ref::ToleranceReport tf = ref::check_tolerance<T>(yf, out_ref), tu = ref::check_tolerance<T>(yu, out_ref);
  std::printf("%s: fused vs cuda-unfused max |diff| %.3g; fused max error %.3g (%lld out of bound), unfused %.3g "
              "(%lld out of bound)\n",
              name.c_str(), max_diff, tf.max_abs_error, (long long)tf.n_out_of_bound, tu.max_abs_error,
              (long long)tu.n_out_of_bound);
  EXPECT_LE(tf.max_abs_error, std::max(ref::kNaiveErrorFactor * tu.max_abs_error, tf.atol))
      << "fused error vs cuda-unfused error";
}

}  // namespace cf::test

#define REQUIRE_HOPPER() \
  if (!cf::test::hopper_available()) GTEST_SKIP() << "no CUDA device of compute capability >= 9.0"
