// GPU twin of tests/emu/primitives/test_sweep_gather.cpp (skips without a Hopper GPU).
// All-gather (fp32) on every cluster size 2..16, every strategy and transport, sizes 1 element .. 16 KB,
// bit-exact, with sentinel guards after the gathered data.
#include <gtest/gtest.h>

#include "gpu_test.hpp"
#include "kernels/suite.hpp"

namespace cf::test {
namespace {

TEST(ClusterGatherGpu, AllGatherEveryClusterSize2to8) {
  REQUIRE_HOPPER();
  EXPECT_EQ(join(sweep_cluster_sizes<2, 8, float, Kind::AllGather>(1)), "");
}

TEST(ClusterGatherGpu, AllGatherEveryClusterSize9to16) {
  REQUIRE_HOPPER();
  EXPECT_EQ(join(sweep_cluster_sizes<9, 16, float, Kind::AllGather>(2)), "");
}

}  // namespace
}  // namespace cf::test
