#include "clusterfusion/runtime/thread_pool.hpp"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CF_CPU_RELAX() _mm_pause()
#else
#define CF_CPU_RELAX() ((void)0)
#endif

namespace cf {

namespace {
// How long an idle thread spins before sleeping: long enough to bridge the gaps between the jobs of one forward pass
// and between tokens, short enough not to keep a shared core busy for nothing.
constexpr auto kSpinTime = std::chrono::microseconds(200);
// Busy-wait iterations between yields: when other processes share the cores, a waiting thread hands the core over
// rather than spinning through its time slice (the thread it waits for may be the one that needs it).
constexpr int kPausesPerYield = 64;

// Spins (pausing, yielding every kPausesPerYield) until done() or kSpinTime has passed; true if done().
template <typename Done>
bool spin_until(Done&& done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpinTime;
  for (int spins = 1;; ++spins) {
    if (done()) return true;
    if (spins % kPausesPerYield != 0) {
      CF_CPU_RELAX();
    } else {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::yield();
    }
  }
}
}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = int(std::max(1u, std::thread::hardware_concurrency()));
  n_threads_ = n_threads;
  for (int w = 1; w < n_threads_; ++w) threads_.emplace_back([this, w] { worker_loop(w); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::run_chunks(uint32_t generation, int worker) {
  for (uint64_t c = claim_.load(std::memory_order_acquire);;) {
    const uint32_t next = uint32_t(c & 0xffffu), chunks = uint32_t((c >> 16) & 0xffffu);
    if (uint32_t(c >> 32) != generation || next >= chunks) return;
    if (!claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    // Claimed: job_ stays this generation's job until every claimed chunk is done.
    const int64_t begin = int64_t(next) * job_.chunk;
    const int64_t end = std::min(job_.n, begin + job_.chunk);
    try {
      job_.call(job_.context, begin, end, worker);
    } catch (...) {
      if (!has_error_.exchange(true)) error_ = std::current_exception();
    }
    // After the last chunk's increment the caller may start the next job: only `chunks` (a local) is read here.
    if (done_.fetch_add(1) + 1 == int(chunks) && caller_sleeping_.load()) done_.notify_one();
    c = claim_.load(std::memory_order_acquire);
  }
}

void ThreadPool::worker_loop(int worker) {
  uint32_t seen = 0;
  while (true) {
    if (!spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; })) {
      // Sequentially consistent with execute(): either it sees this sleeper and notifies, or the wait sees the new
      // generation.
      sleepers_.fetch_add(1);
      generation_.wait(seen);
      sleepers_.fetch_sub(1);
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    run_chunks(seen, worker);
  }
}

void ThreadPool::execute(const Job& job) {
  job_ = job;
  has_error_.store(false);
  error_ = nullptr;
  done_.store(0, std::memory_order_relaxed);
  const uint32_t generation = generation_.load(std::memory_order_relaxed) + 1;
  claim_.store((uint64_t(generation) << 32) | (uint64_t(job.chunks) << 16), std::memory_order_release);
  generation_.store(generation);
  if (sleepers_.load() > 0) generation_.notify_all();
  run_chunks(generation, 0);
  const int chunks = int(job.chunks);
  if (!spin_until([&] { return done_.load(std::memory_order_acquire) == chunks; })) {
    caller_sleeping_.store(true);
    for (int d; (d = done_.load()) != chunks;) done_.wait(d);
    caller_sleeping_.store(false);
  }
  if (has_error_.load()) std::rethrow_exception(error_);
}

}  // namespace cf
