// GPU twin of tests/emu/primitives/test_reduce_scatter.cpp (skips without a Hopper GPU).
// ClusterReduceScatter: zero-copy reduce-scatter / all-gather with caller-defined ownership, compile-time and
// run-time cluster sizes.
#include <gtest/gtest.h>

#include "gpu_test.hpp"
#include "kernels/reduce_scatter_suite.hpp"

namespace cf::test {
namespace {

TEST(ClusterReduceScatterGpu, OwnershipClusterSizesTypesSoftmaxAndReuse) {
  REQUIRE_HOPPER();
  EXPECT_EQ(join(reduce_scatter_cases()), "");
}

}  // namespace
}  // namespace cf::test
