// Launch-configuration validation (Hopper limits) and the emulator's reports for misuse outside the planted-bug
// suite: exceptions, misaligned vectors, cluster-barrier misuse, spin loops, deadlock report format.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "kernels/checks.hpp"

namespace cf::test {
namespace {

using dev::EmuError;
using dev::EmuErrorKind;

struct NoParams {
  uint32_t* out;
};
CF_GLOBAL void empty_kernel(const CF_GRID_CONSTANT NoParams) {}

dev::LaunchConfig config(dev::Dim3 grid, dev::Dim3 cluster, dev::Dim3 block, size_t smem = 0) {
  dev::LaunchConfig cfg;
  cfg.grid = grid;
  cfg.cluster = cluster;
  cfg.block = block;
  cfg.smem_bytes = smem;
  cfg.name = "probe";
  return cfg;
}

std::string launch_error(const dev::LaunchConfig& cfg) {
  try {
    dev::launch(cfg, empty_kernel, NoParams{nullptr});
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(EmuLaunch, ValidConfigurationsRun) {
  EXPECT_EQ(launch_error(config({8}, {8}, {1024}, dev::kMaxSmemPerBlock)), "");
  EXPECT_EQ(launch_error(config({4, 4, 2}, {2, 2, 2}, {8, 8, 16})), "");
  auto big = config({16}, {16}, {32});
  big.allow_nonportable_cluster = true;
  EXPECT_EQ(launch_error(big), "");
}

TEST(EmuLaunch, HopperLimitsAreEnforced) {
  EXPECT_NE(launch_error(config({9}, {9}, {32})).find("more than 8 needs allow_nonportable_cluster"),
            std::string::npos);
  auto too_big = config({17}, {17}, {32});
  too_big.allow_nonportable_cluster = true;
  EXPECT_NE(launch_error(too_big).find("the hardware maximum is 16"), std::string::npos);
  EXPECT_NE(launch_error(config({1}, {1}, {1025})).find("at most 1024 per block"), std::string::npos);
  EXPECT_NE(launch_error(config({1}, {1}, {1, 1, 65})).find("z <= 64"), std::string::npos);
  EXPECT_NE(launch_error(config({1}, {1}, {32}, dev::kMaxSmemPerBlock + 1)).find("exceeds Hopper's 227 KB"),
            std::string::npos);
  EXPECT_NE(launch_error(config({6}, {4}, {32})).find("not a multiple of the cluster"), std::string::npos);
  EXPECT_NE(launch_error(config({0}, {1}, {32})).find("at least 1"), std::string::npos);
  EXPECT_NE(launch_error(config({1}, {1}, {32})), "launch 'probe'");
  EXPECT_NE(launch_error(config({9}, {9}, {32})).find("launch 'probe'"), std::string::npos);
}

TEST(EmuLaunch, TensorMapRequirementsAreEnforced) {
  dev::DeviceBuffer<uint16_t> m(64 * 64);
  auto error = [&](const void* base, uint64_t w, uint64_t h, uint64_t stride, uint32_t bw, uint32_t bh) {
    try {
      (void)dev::make_tensor_map_2d(base, dev::DType::F16, w, h, stride, bw, bh);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(error(m.data(), 64, 64, 128, 16, 16), "");
  EXPECT_NE(error(reinterpret_cast<const uint8_t*>(m.data()) + 2, 8, 8, 128, 8, 8).find("16-byte aligned"),
            std::string::npos);
  EXPECT_NE(error(m.data(), 64, 64, 120, 16, 16).find("multiple of 16"), std::string::npos);
  EXPECT_NE(error(m.data(), 64, 64, 64, 16, 16).find("smaller than a row"), std::string::npos);
  EXPECT_NE(error(m.data(), 64, 64, 128, 4, 16).find("box row"), std::string::npos);
  EXPECT_NE(error(m.data(), 64, 64, 128, 16, 257).find("[1, 256]"), std::string::npos);
}

template <typename Fn>
EmuError expect_report(Fn&& fn) {
  try {
    fn();
  } catch (const EmuError& e) {
    return e;
  }
  ADD_FAILURE() << "no report";
  return EmuError(EmuErrorKind::InvalidUse, "");
}

CF_GLOBAL void throwing_kernel(const CF_GRID_CONSTANT NoParams) {
  if (dev::thread_rank() == 5) throw std::runtime_error("boom");
  dev::block_sync();
}
TEST(EmuReports, KernelExceptionIsReported) {
  const EmuError e = expect_report([] { dev::launch(config({1}, {1}, {32}), throwing_kernel, NoParams{nullptr}); });
  EXPECT_EQ(e.kind(), EmuErrorKind::KernelException);
  EXPECT_NE(std::string(e.what()).find("thread 5 (warp 0 lane 5): the kernel threw 'boom'"), std::string::npos)
      << e.what();
  EXPECT_NE(dynamic_cast<const Error*>(&e), nullptr);
}

TEST(EmuReports, DeviceApiOutsideAKernelThrows) { EXPECT_THROW((void)dev::thread_idx(), Error); }

CF_GLOBAL void misaligned_kernel(const CF_GRID_CONSTANT NoParams) {
  (void)dev::load16(dev::dynamic_smem() + 8);
}
TEST(EmuReports, MisalignedVectorAccess) {
  const EmuError e =
      expect_report([] { dev::launch(config({1}, {1}, {32}, 64), misaligned_kernel, NoParams{nullptr}); });
  EXPECT_EQ(e.kind(), EmuErrorKind::Misaligned);
  EXPECT_NE(std::string(e.what()).find("not 16-byte aligned"), std::string::npos) << e.what();
  EXPECT_NE(std::string(e.what()).find("test_launch.cpp:"), std::string::npos) << e.what();
}

CF_GLOBAL void cluster_wait_first_kernel(const CF_GRID_CONSTANT NoParams) { dev::cluster_wait(); }
CF_GLOBAL void double_init_kernel(const CF_GRID_CONSTANT NoParams) {
  auto* bar = reinterpret_cast<dev::Mbarrier*>(dev::dynamic_smem());
  if (dev::thread_rank() == 0) {
    bar->init(1);
    bar->init(1);
  }
}
CF_GLOBAL void bad_rank_kernel(const CF_GRID_CONSTANT NoParams) {
  dev::cluster_sync();
  (void)dev::map_shared_rank(dev::dynamic_smem(), 2);
}
TEST(EmuReports, ApiMisuse) {
  EmuError e = expect_report([] { dev::launch(config({2}, {2}, {32}), cluster_wait_first_kernel, NoParams{}); });
  EXPECT_NE(std::string(e.what()).find("cluster_wait without a preceding cluster_arrive"), std::string::npos);
  e = expect_report([] { dev::launch(config({1}, {1}, {32}, 64), double_init_kernel, NoParams{}); });
  EXPECT_EQ(e.kind(), EmuErrorKind::MbarrierMisuse);
  EXPECT_NE(std::string(e.what()).find("already initialized"), std::string::npos) << e.what();
  e = expect_report([] { dev::launch(config({2}, {2}, {32}, 64), bad_rank_kernel, NoParams{}); });
  EXPECT_EQ(e.kind(), EmuErrorKind::DsmemInvalid);
  EXPECT_NE(std::string(e.what()).find("rank 2 is outside the cluster of 2 blocks"), std::string::npos) << e.what();
}

CF_GLOBAL void try_wait_spin_kernel(const CF_GRID_CONSTANT NoParams) {
  auto* bar = reinterpret_cast<dev::Mbarrier*>(dev::dynamic_smem());
  if (dev::thread_rank() == 0) bar->init(1);
  dev::block_sync();
  while (!bar->try_wait(0)) {  // nobody ever arrives
  }
}
CF_GLOBAL void nanosleep_spin_kernel(const CF_GRID_CONSTANT NoParams p) {
  while (*reinterpret_cast<volatile uint32_t*>(p.out) == 0) dev::nanosleep(100);  // nobody ever sets it
}
TEST(EmuReports, SpinLoopsEndInAReportNotAHang) {
  EmuError e = expect_report([] { dev::launch(config({1}, {1}, {64}, 64), try_wait_spin_kernel, NoParams{}); });
  EXPECT_EQ(e.kind(), EmuErrorKind::Deadlock);
  EXPECT_NE(std::string(e.what()).find("threads 0-63: Mbarrier::try_wait(parity 0)"), std::string::npos) << e.what();
  dev::DeviceBuffer<uint32_t> flag(4);
  e = expect_report([&] { dev::launch(config({1}, {1}, {32}), nanosleep_spin_kernel, NoParams{flag.data()}); });
  EXPECT_EQ(e.kind(), EmuErrorKind::Livelock);
}

CF_GLOBAL void many_groups_kernel(const CF_GRID_CONSTANT NoParams) {
  auto* bar = reinterpret_cast<dev::Mbarrier*>(dev::dynamic_smem());
  if (dev::thread_rank() == 0) {
    bar->init(1);
    dev::fence_mbarrier_init();
  }
  dev::cluster_sync();
  const uint32_t w = dev::warp_id();
  if (w == 0) {
    bar->wait(0);  // nobody arrives
  } else if (w == 1 && dev::lane_id() < 16) {
    dev::syncwarp();  // the other half of the warp is in block_sync
  } else {
    dev::block_sync();
  }
}
TEST(EmuReports, DeadlockReportListsWhatEachGroupWaitsOn) {
  const EmuError e =
      expect_report([] { dev::launch(config({4}, {4}, {96}, 64), many_groups_kernel, NoParams{}); });
  const std::string msg = e.what();
  EXPECT_EQ(e.kind(), EmuErrorKind::Deadlock) << msg;
  EXPECT_NE(msg.find("kernel 'probe'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("block rank 0 threads 0-31: Mbarrier::wait(parity 0) on the mbarrier at block rank 0 offset 0"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("block rank 0 threads 32-47: syncwarp with mask 0xffffffff (lanes 0xffff arrived)"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("block rank 0 threads 48-95: block_sync (48 of 96 threads arrived)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(+"), std::string::npos) << "groups beyond the sixth are counted, not listed: " << msg;
}

// Recurses with 1 KB frames until the fiber stack's guard page is hit.
uint32_t deep(uint32_t depth) {
  volatile uint8_t frame[1024];
  frame[0] = uint8_t(depth);
  return depth == 0 ? frame[0] : deep(depth - 1) + frame[0];
}
CF_GLOBAL void stack_overflow_kernel(const CF_GRID_CONSTANT NoParams p) {
  if (dev::thread_rank() == 3) *p.out = deep(1u << 20);
}
TEST(EmuReportsDeathTest, FiberStackOverflowAbortsWithAMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  dev::DeviceBuffer<uint32_t> out(4);
  EXPECT_DEATH(dev::launch(config({1}, {1}, {32}), stack_overflow_kernel, NoParams{out.data()}),
               "fiber stack overflow in block 0 \\(cluster rank 0\\), thread 3");
}

}  // namespace
}  // namespace cf::test
