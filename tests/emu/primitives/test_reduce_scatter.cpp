// ClusterReduceScatter: zero-copy reduce-scatter / all-gather with caller-defined ownership, compile-time and
// run-time cluster sizes.
#include <gtest/gtest.h>

#include "kernels/reduce_scatter_suite.hpp"

namespace cf::test {
namespace {

TEST(ClusterReduceScatter, OwnershipClusterSizesTypesSoftmaxAndReuse) { EXPECT_EQ(join(reduce_scatter_cases()), ""); }

}  // namespace
}  // namespace cf::test
