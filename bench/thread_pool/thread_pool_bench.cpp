// Cost of one parallel_for of the thread pool (the barrier the cpu backend pays ~5 times per layer): median
// microseconds per call of an empty job, and of a job of `work` microseconds of arithmetic (measured on one core
// first) split over the threads, with its overhead over work / threads. With --stress N, N busy processes share the
// cores meanwhile.
//   cf_bench_thread_pool [--threads 1,2] [--calls 20000] [--work 20] [--stress N]
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/runtime/thread_pool.hpp"
#include "common/args.hpp"

namespace {

using Clock = std::chrono::steady_clock;

// A fixed amount of dependent arithmetic (`steps` steps): the same work whatever the schedule.
double busy(int64_t steps, double seed) {
  double x = seed;
  for (int64_t i = 0; i < steps; ++i) x = x * 1.0000001 + 1e-9;
  return x;
}

// Steps of busy() per microsecond on this core (best of a few tries).
double steps_per_us() {
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = Clock::now();
    volatile double sink = busy(1000000, 1.0);
    (void)sink;
    best = std::max(best, 1e6 / std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  return best;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) try {
  std::vector<int> threads_list = {1, 2};
  int calls = 20000, stress = 0;
  double work = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw cf::InputError(a + ": missing value");
      return argv[++i];
    };
    if (a == "--threads") {
      threads_list.clear();
      for (const auto& t : cf::bench::split_list(value())) threads_list.push_back(cf::bench::parse_int(t, "--threads", 1, 256));
    } else if (a == "--calls") {
      calls = cf::bench::parse_int(value(), "--calls", 10, 10000000);
    } else if (a == "--work") {
      work = cf::bench::parse_int(value(), "--work", 0, 100000);
    } else if (a == "--stress") {
      stress = cf::bench::parse_int(value(), "--stress", 0, 256);
    } else {
      throw cf::InputError("unknown argument '" + a + "' (usage: --threads 1,2 --calls N --work US --stress N)");
    }
  }
  std::vector<pid_t> busy_children;
  for (int s = 0; s < stress; ++s) {
    const pid_t pid = fork();
    if (pid == 0) {
      volatile unsigned long spin = 0;
      for (;;) spin = spin + 1;
    }
    busy_children.push_back(pid);
  }
  const double rate = steps_per_us();
  std::printf("# thread pool: %d calls per measurement, %d busy processes alongside; the work is a fixed amount of "
              "arithmetic that takes %.0f us on one idle core\n", calls, stress, work);
  std::printf("| threads | empty job us | %.0f us of work: us per call | overhead us |\n|---:|---:|---:|---:|\n", work);
  for (const int threads : threads_list) {
    cf::ThreadPool pool(threads);
    std::vector<double> empty, loaded;
    std::atomic<double> sink{0};
    for (int c = 0; c < calls; ++c) {
      const auto t0 = Clock::now();
      pool.parallel_for(threads * cf::ThreadPool::kChunksPerThread, 1, [](int64_t, int64_t, int) {});
      empty.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    const int chunks = threads * cf::ThreadPool::kChunksPerThread;
    for (int c = 0; c < calls / 10; ++c) {
      const auto t0 = Clock::now();
      pool.parallel_for(chunks, 1, [&](int64_t begin, int64_t end, int) {
        const double x = busy(int64_t(work * rate * double(end - begin) / chunks), 1.0) * 1e-30;
        if (x > 1.0) sink += x;  // never: keeps the work from being optimised away
      });
      loaded.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    std::printf("| %d | %.2f | %.2f | %.2f |\n", threads, median(empty), median(loaded),
                median(loaded) - work / threads + sink.load());
  }
  for (const pid_t pid : busy_children) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "cf_bench_thread_pool: %s\n", e.what());
  return 1;
}
