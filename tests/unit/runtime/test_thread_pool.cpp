// The thread pool: every index visited exactly once, fixed contiguous ranges, exceptions rethrown in the caller.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "clusterfusion/runtime/thread_pool.hpp"

namespace {

TEST(ThreadPool, ParallelForCoversEachIndexOnceInGrainAlignedRanges) {
  for (int threads : {1, 2, 3, 7}) {
    cf::ThreadPool pool(threads);
    for (int64_t n : {0, 1, 15, 16, 17, 1000}) {
      std::vector<std::atomic<int>> hits(size_t(n) + 1);
      pool.parallel_for(n, 16, [&](int64_t begin, int64_t end, int worker) {
        EXPECT_EQ(begin % 16, 0);
        EXPECT_GE(worker, 0);
        EXPECT_LT(worker, threads);
        for (int64_t i = begin; i < end; ++i) hits[size_t(i)]++;
      });
      for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[size_t(i)].load(), 1) << threads << " " << n << " " << i;
    }
  }
}

TEST(ThreadPool, RunCallsEveryWorkerAndRethrows) {
  cf::ThreadPool pool(3);
  for (int round = 0; round < 100; ++round) {
    std::atomic<int> mask{0};
    pool.run([&](int w) { mask |= 1 << w; });
    ASSERT_EQ(mask.load(), 7);
  }
  EXPECT_THROW(pool.run([](int w) {
    if (w == 2) throw std::runtime_error("worker 2 failed");
  }),
               std::runtime_error);
  std::atomic<int> after{0};
  pool.run([&](int) { after++; });  // still usable
  EXPECT_EQ(after.load(), 3);
}

}  // namespace
