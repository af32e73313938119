// fp16/bf16, max/min, an order-sensitive user op, reduce-to-root and the softmax-state merge.
#include <gtest/gtest.h>

#include "kernels/suite.hpp"

namespace cf::test {
namespace {

TEST(ClusterReduce, HalfTypesMaxMinAndUserOp) {
  EXPECT_EQ(join(types_and_ops()), "");
}

TEST(ClusterReduce, ReduceToRootAndSoftmaxMerge) {
  EXPECT_EQ(join(root_and_softmax()), "");
}

}  // namespace
}  // namespace cf::test
