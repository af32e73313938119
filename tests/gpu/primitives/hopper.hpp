// Skips a GPU test cleanly unless a CUDA device of compute capability >= 9.0 is present.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdio>

#include "clusterfusion/device/launch.hpp"

namespace cf::test {
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
}  // namespace cf::test

#define REQUIRE_HOPPER() \
  if (!cf::test::hopper_available()) GTEST_SKIP() << "no CUDA device of compute capability >= 9.0"
