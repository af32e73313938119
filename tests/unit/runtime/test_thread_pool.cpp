// The thread pool: every index visited exactly once in grain-aligned chunks, every thread takes part, a slow chunk
// does not hold up the rest, exceptions are rethrown in the caller.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
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

TEST(ThreadPool, ChunksRunOnEveryThreadAndExceptionsAreRethrown) {
  cf::ThreadPool pool(3);
  std::atomic<int> mask{0};
  for (int round = 0; round < 200 && mask.load() != 7; ++round) {
    pool.parallel_for(1200, 1, [&](int64_t, int64_t, int w) {
      mask |= 1 << w;
      std::this_thread::sleep_for(std::chrono::microseconds(50));  // long enough for every thread to claim one
    });
  }
  EXPECT_EQ(mask.load(), 7);  // the workers take part
  EXPECT_THROW(pool.parallel_for(100, 1, [](int64_t begin, int64_t, int) {
    if (begin == 0) throw std::runtime_error("chunk 0 failed");
  }),
               std::runtime_error);
  std::atomic<int64_t> after{0};
  pool.parallel_for(100, 1, [&](int64_t begin, int64_t end, int) { after += end - begin; });  // still usable
  EXPECT_EQ(after.load(), 100);
}

// A thread that is slow (here: busy in its first chunk for a long time) does not keep the others from finishing the
// rest of the loop: every other chunk is claimed by whoever is free.
TEST(ThreadPool, ASlowChunkDoesNotHoldTheOthers) {
  cf::ThreadPool pool(2);
  std::atomic<int> by_others{0};
  const int64_t chunks = 2 * cf::ThreadPool::kChunksPerThread;
  pool.parallel_for(chunks, 1, [&](int64_t begin, int64_t, int) {
    if (begin == 0) {
      while (by_others.load() < chunks - 1) std::this_thread::yield();  // waits for all the other chunks
    } else {
      ++by_others;
    }
  });
  EXPECT_EQ(by_others.load(), chunks - 1);
}

// Many short jobs in a row (the shape of a forward pass) with workers that sleep in between, to exercise the
// hand-over between spinning, sleeping and waking.
TEST(ThreadPool, ManyJobsWithPausesBetweenThem) {
  cf::ThreadPool pool(4);
  int64_t total = 0;
  for (int job = 0; job < 300; ++job) {
    std::atomic<int64_t> sum{0};
    pool.parallel_for(64, 1, [&](int64_t begin, int64_t end, int) {
      for (int64_t i = begin; i < end; ++i) sum += i;
    });
    total += sum.load();
    if (job % 50 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));  // past the spin time
  }
  EXPECT_EQ(total, 300 * (63 * 64 / 2));
}

}  // namespace
