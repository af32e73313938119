// All-reduce (fp32 sum) on every cluster size 2..16, every strategy and transport, sizes 1 element .. 16 KB.
#include <gtest/gtest.h>

#include "kernels/suite.hpp"

namespace cf::test {
namespace {

TEST(ClusterReduce, AllReduceEveryClusterSize2to8) {
  EXPECT_EQ(join(sweep_cluster_sizes<2, 8, float, Kind::AllReduce>(1)), "");
}

TEST(ClusterReduce, AllReduceEveryClusterSize9to16) {
  EXPECT_EQ(join(sweep_cluster_sizes<9, 16, float, Kind::AllReduce>(2)), "");
}

}  // namespace
}  // namespace cf::test
