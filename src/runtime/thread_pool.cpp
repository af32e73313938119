#include "clusterfusion/runtime/thread_pool.hpp"

#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CF_CPU_RELAX() _mm_pause()
#else
#define CF_CPU_RELAX() ((void)0)
#endif

namespace cf {

namespace {
// How long an idle worker spins before sleeping: long enough to bridge the gaps between the jobs of one forward
// pass, short enough not to burn a shared core between tokens.
constexpr auto kSpinTime = std::chrono::microseconds(200);
// Busy-wait iterations before yielding the core: when other processes share the cores, a thread waiting for a
// preempted peer must give it the core rather than spin through its time slice.
constexpr int kPauseSpins = 256;

template <typename Sleep>
void pause_or_sleep(int spins, std::chrono::steady_clock::time_point spin_until, Sleep&& sleep) {
  if (spins < kPauseSpins) {
    CF_CPU_RELAX();
  } else if (std::chrono::steady_clock::now() < spin_until) {
    std::this_thread::yield();
  } else {
    sleep();
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

void ThreadPool::worker_loop(int worker) {
  uint32_t seen = 0;
  while (true) {
    // Wait for a new generation: spin for a while, then sleep on the atomic.
    const auto spin_until = std::chrono::steady_clock::now() + kSpinTime;
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen) {
      pause_or_sleep(++spins, spin_until, [&] { generation_.wait(seen, std::memory_order_acquire); });
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    try {
      (*job_)(worker);
    } catch (...) {
      if (!has_error_.exchange(true)) error_ = std::current_exception();
    }
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
  }
}

void ThreadPool::run(const std::function<void(int)>& job) {
  if (n_threads_ == 1) {
    job(0);
    return;
  }
  job_ = &job;
  has_error_.store(false);
  error_ = nullptr;
  pending_.store(uint32_t(n_threads_ - 1), std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  std::exception_ptr own_error;
  try {
    job(0);
  } catch (...) {
    own_error = std::current_exception();
  }
  const auto spin_until = std::chrono::steady_clock::now() + kSpinTime;
  int spins = 0;
  for (uint32_t left; (left = pending_.load(std::memory_order_acquire)) != 0;) {
    pause_or_sleep(++spins, spin_until, [&] { pending_.wait(left, std::memory_order_acquire); });
  }
  job_ = nullptr;
  if (own_error) std::rethrow_exception(own_error);
  if (has_error_.load()) std::rethrow_exception(error_);
}

}  // namespace cf
