// A small fixed pool of worker threads for data-parallel loops. The caller takes part as worker 0. Work is split
// by a fixed rule (contiguous near-equal ranges), never by who is free first, and every item is computed by the
// same code whichever worker runs it: results do not depend on the thread count.
// Workers spin briefly after each job (jobs come every few microseconds during decoding), then sleep.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <thread>
#include <vector>

namespace cf {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // n_threads >= 1; 0 means std::thread::hardware_concurrency()
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls job(worker) for worker = 0 .. size()-1 concurrently; returns when all have returned.
  // An exception thrown by a job is rethrown here (the first one).
  void run(const std::function<void(int worker)>& job);

  // Splits [0, n) into size() contiguous ranges of whole `grain`-sized units (the last may be partial) and calls
  // fn(begin, end, worker) for each non-empty one.
  template <typename Fn>
  void parallel_for(int64_t n, int64_t grain, Fn&& fn) {
    const int64_t units = (n + grain - 1) / grain;
    if (n_threads_ == 1 || units <= 1) {
      if (n > 0) fn(int64_t(0), n, 0);
      return;
    }
    run([&](int worker) {
      const int64_t begin = std::min(n, units * worker / n_threads_ * grain);
      const int64_t end = std::min(n, units * (worker + 1) / n_threads_ * grain);
      if (begin < end) fn(begin, end, worker);
    });
  }

 private:
  void worker_loop(int worker);
  int n_threads_;
  std::vector<std::thread> threads_;
  const std::function<void(int)>* job_ = nullptr;
  std::atomic<uint32_t> generation_{0};
  std::atomic<uint32_t> pending_{0};
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;
  std::atomic<bool> has_error_{false};
};

}  // namespace cf
