// A small fixed pool of worker threads for data-parallel loops. The caller takes part as worker 0.
//
// parallel_for splits a range into chunks (about kChunksPerThread per thread) that the caller and the workers claim
// one at a time, so a thread that the operating system has descheduled (a machine shared with other work) holds up
// only the chunk it is running, not a fixed share of the loop; a worker that has not woken up yet simply claims
// nothing. Which thread runs a chunk varies from run to run: callers make each chunk's result independent of the
// thread (the cpu backend does), so results do not depend on the thread count or on the schedule.
// Idle workers spin briefly (the jobs of one forward pass come every few microseconds), yielding the core to any
// other runnable thread, then sleep.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <thread>
#include <type_traits>
#include <vector>

namespace cf {

class ThreadPool {
 public:
  static constexpr int kChunksPerThread = 4;
  static constexpr int64_t kMaxChunks = 0xffff;

  explicit ThreadPool(int n_threads);  // n_threads >= 1; 0 means std::thread::hardware_concurrency()
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(begin, end, worker) for chunks covering [0, n) exactly once, each made of whole `grain`-sized units
  // (the last may be partial), worker = the index (0 .. size()-1) of the thread running it. Returns when all are
  // done; an exception thrown by fn is rethrown here (the first one; the other chunks still run).
  template <typename Fn>
  void parallel_for(int64_t n, int64_t grain, Fn&& fn) {
    if (n <= 0) return;
    const int64_t units = (n + grain - 1) / grain;
    const int64_t max_chunks = std::min<int64_t>(int64_t(n_threads_) * kChunksPerThread, kMaxChunks);
    const int64_t units_per_chunk = (units + max_chunks - 1) / max_chunks;
    const int64_t chunks = (units + units_per_chunk - 1) / units_per_chunk;
    if (n_threads_ == 1 || chunks == 1) {
      fn(int64_t(0), n, 0);
      return;
    }
    using F = std::remove_reference_t<Fn>;
    Job job;
    job.context = &fn;
    job.call = [](const void* context, int64_t begin, int64_t end, int worker) {
      (*static_cast<F*>(const_cast<void*>(context)))(begin, end, worker);
    };
    job.n = n;
    job.chunk = units_per_chunk * grain;
    job.chunks = chunks;
    execute(job);
  }

 private:
  struct Job {
    const void* context = nullptr;
    void (*call)(const void* context, int64_t begin, int64_t end, int worker) = nullptr;
    int64_t n = 0, chunk = 0, chunks = 0;
  };
  void execute(const Job& job);
  void run_chunks(uint32_t generation, int worker);
  void worker_loop(int worker);

  int n_threads_;
  std::vector<std::thread> threads_;
  Job job_;
  std::atomic<uint32_t> generation_{0};  // bumped for every job (and to stop)
  // (generation << 32) | (chunks << 16) | next unclaimed chunk: a thread holding an outdated value can tell without
  // reading job_, which the caller may be rewriting.
  std::atomic<uint64_t> claim_{0};
  std::atomic<int> done_{0};  // chunks finished in the current job
  std::atomic<int> sleepers_{0};         // workers blocked in generation_.wait
  std::atomic<bool> caller_sleeping_{false};
  std::atomic<bool> stop_{false};
  std::atomic<bool> has_error_{false};
  std::exception_ptr error_;
};

}  // namespace cf
