// GPU twin of tests/emu/primitives/test_types_ops.cpp (skips without a Hopper GPU).
// fp16/bf16, max/min, an order-sensitive user op, reduce-to-root and the softmax-state merge.
#include <gtest/gtest.h>

#include "gpu_test.hpp"
#include "kernels/suite.hpp"

namespace cf::test {
namespace {

TEST(ClusterReduceGpu, HalfTypesMaxMinAndUserOp) {
  REQUIRE_HOPPER();
  EXPECT_EQ(join(types_and_ops()), "");
}

TEST(ClusterReduceGpu, ReduceToRootAndSoftmaxMerge) {
  REQUIRE_HOPPER();
  EXPECT_EQ(join(root_and_softmax()), "");
}

}  // namespace
}  // namespace cf::test
