// GPU twin of tests/emu/primitives/test_reuse.cpp (skips without a Hopper GPU).
// Back-to-back calls (the reuse handshake), ten schedule seeds, thread groups, two clusters, in-place gather.
#include <gtest/gtest.h>

#include "gpu_test.hpp"
#include "kernels/suite.hpp"

namespace cf::test {
namespace {

TEST(ClusterCollectivesGpu, ReuseSeedsGroupsAndInPlace) {
  REQUIRE_HOPPER();
  EXPECT_EQ(join(reuse_and_groups()), "");
}

}  // namespace
}  // namespace cf::test
