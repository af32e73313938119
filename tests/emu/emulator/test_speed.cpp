// Speed of the emulator (issue item 6): a 4-CTA x 128-thread cluster streaming a 576x576 fp16 matrix through a
// 2-stage mbarrier pipeline must run in well under a second. The measured figure is printed.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>

#include "kernels/checks.hpp"

namespace cf::test {
namespace {

#if defined(CF_SANITIZE)
constexpr double kLimitSeconds = 20.0;  // sanitizer builds run the ucontext fibers and instrumented code
#else
constexpr double kLimitSeconds = 1.0;
#endif

TEST(EmuSpeed, MatvecPipeline576x576UnderOneSecond) {
  const MatvecData d = matvec_data();
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<float> y = run_matvec(d.w, d.x, 1);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto stats = dev::emu::last_launch_stats();
  EXPECT_EQ(check_matvec(y, d), "");
  std::printf("matvec 576x576 fp16, 1 cluster of 4 CTAs x 128 threads, 2-stage TMA pipeline: %.1f ms "
              "(launch %.1f ms, %llu fiber switches, %llu copies, %llu protection faults)\n",
              seconds * 1e3, stats.seconds * 1e3, static_cast<unsigned long long>(stats.switches),
              static_cast<unsigned long long>(stats.copies),
              static_cast<unsigned long long>(stats.protection_faults));
  RecordProperty("milliseconds", int(seconds * 1e3));
  EXPECT_LT(seconds, kLimitSeconds);
}

}  // namespace
}  // namespace cf::test
