// Shared by the GPU test suites (label gpu): skipping cleanly without a Hopper GPU, timing the host reference, and
// checking that a plan's launch replays from a CUDA graph.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <functional>

#include "clusterfusion/device/launch.hpp"

namespace cf::test {

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

}  // namespace cf::test

#define REQUIRE_HOPPER() \
  if (!cf::test::hopper_available()) GTEST_SKIP() << "no CUDA device of compute capability >= 9.0"
