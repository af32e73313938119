// GPU twin of tests/emu/primitives/test_sweep_reduce.cpp (skips without a Hopper GPU).
// All-reduce (fp32 sum) on every cluster size 2..16, every strategy and transport, sizes 1 element .. 16 KB.
#include <gtest/gtest.h>

#include "gpu_test.hpp"
#include "kernels/suite.hpp"

namespace cf::test {
namespace {

TEST(ClusterReduceGpu, AllReduceEveryClusterSize2to8) {
  REQUIRE_HOPPER();
  EXPECT_EQ(join(sweep_cluster_sizes<2, 8, float, Kind::AllReduce>(1)), "");
}

TEST(ClusterReduceGpu, AllReduceEveryClusterSize9to16) {
  REQUIRE_HOPPER();
  EXPECT_EQ(join(sweep_cluster_sizes<9, 16, float, Kind::AllReduce>(2)), "");
}

}  // namespace
}  // namespace cf::test
