// The access checks' behaviour around the reports (the planted-bug suite covers what they find): they keep
// collecting after the first finding, can be switched off, count what they checked, reject bad scratch ranges and
// hold across launches (shadow state of one launch never leaks into the next).
#include <gtest/gtest.h>

#include <string>

#include "kernels/checks.hpp"
#include "kernels/planted_races.hpp"

namespace cf::test {
namespace {

using dev::EmuError;
using dev::EmuErrorKind;

// Two bugs at two places: a read of shared memory nothing wrote (thread 0 reads s[n]) and a race (thread t reads
// s[t + 1] while thread t + 1 writes it).
CF_GLOBAL void two_bugs(const CF_GRID_CONSTANT bugs::OutParams p) {
  auto* s = reinterpret_cast<uint32_t*>(dev::dynamic_smem());
  const uint32_t t = dev::thread_rank(), n = dev::num_threads();
  if (t == 0) p.out[n] = s[n] + 1;
  s[t] = 0;
  dev::block_sync();
  s[t] = t;
  p.out[t] = s[(t + 1) % n];
}

std::string run_two_bugs() {
  dev::DeviceBuffer<uint32_t> out(65);
  try {
    dev::launch(bugs::config("two_bugs", 1, 1, 64, 65 * 4, 3), two_bugs, bugs::OutParams{out.data(), nullptr});
  } catch (const EmuError& e) {
    return e.what();
  }
  return "";
}

TEST(EmuChecks, KeepCollectingAfterTheFirstReport) {
  const std::string msg = run_two_bugs();
  EXPECT_NE(msg.find("uninitialised read: block 0 (cluster rank 0), thread 0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("more at other sites: "), std::string::npos) << msg;
  EXPECT_NE(msg.find(" data race; "), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_GT(dev::emu::last_launch_stats().reports, 2u);
}

TEST(EmuChecks, CanBeSwitchedOffAndOn) {
  dev::emu::set_access_checks(false);
  EXPECT_EQ(run_two_bugs(), "");
  EXPECT_EQ(dev::emu::last_launch_stats().checked_accesses, 0u);
  dev::emu::set_access_checks(true);
  EXPECT_NE(run_two_bugs(), "");
  EXPECT_GT(dev::emu::last_launch_stats().checked_accesses, 128u);
}

TEST(EmuChecks, ShadowStateStartsFreshEveryLaunch) {
  // the same clean launch twice: nothing of the first (its writes, its reads) counts in the second
  for (int i = 0; i < 2; ++i)
    EXPECT_EQ(first_difference(races::run_smem_race<false>(uint64_t(i + 1)), races::expected_smem_race(), "out"), "");
  // a scratch buffer written by one launch is undefined again in the next
  dev::DeviceBuffer<uint32_t> out(1), partial(4);
  dev::declare_scratch(partial.data(), partial.bytes());
  const races::LastBlockParams params{out.data(), partial.data(), nullptr};
  dev::launch(bugs::config("scratch", 4, 4, 32, 0, 1), races::scratch_unwritten<false>, params);
  try {
    dev::launch(bugs::config("scratch", 4, 4, 32, 0, 1), races::scratch_unwritten<true>, params);
    ADD_FAILURE() << "the second launch read scratch the first one wrote, and was not reported";
  } catch (const EmuError& e) {
    EXPECT_EQ(e.kind(), EmuErrorKind::UninitializedRead) << e.what();
  }
}

TEST(EmuChecks, ScratchMustLieInOneBuffer) {
  dev::DeviceBuffer<uint32_t> a(8);
  EXPECT_THROW(dev::declare_scratch(a.data() + 4, 32), InputError);
  uint32_t host[4];
  EXPECT_THROW(dev::declare_scratch(host, sizeof host), InputError);
  dev::declare_scratch(a.data() + 4, 16);  // the last four elements
}

}  // namespace
}  // namespace cf::test
