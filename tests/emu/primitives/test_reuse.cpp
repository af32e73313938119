// Back-to-back calls (the reuse handshake), ten schedule seeds, thread groups, two clusters, in-place gather.
#include <gtest/gtest.h>

#include "kernels/suite.hpp"

namespace cf::test {
namespace {

TEST(ClusterCollectives, ReuseSeedsGroupsAndInPlace) {
  EXPECT_EQ(join(reuse_and_groups()), "");
}

}  // namespace
}  // namespace cf::test
