// prim::bounded_wait on the emulator: a wait whose peer never arrives expires (the emulator's clock jumps only while
// the cluster is stuck), records its site and block, and raises the CTA's abort flag so that the CTA's other waits
// return at once; a wait that completes is never cut short; an unbounded wait on the same hang is a deadlock report.
#include <gtest/gtest.h>

#include <vector>

#include "clusterfusion/device/api.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/device/launch.hpp"
#include "clusterfusion/primitives/bounded_wait.hpp"

namespace cf::test {
namespace {

namespace dev = cf::dev;
namespace prim = cf::prim;

struct WaitParams {
  uint64_t* status;     // the launch's timeout word (null: unbounded waits)
  uint32_t* ok;         // [2 ctas][threads]: the first wait's result
  uint32_t* second_ok;  // [2 ctas][threads]: a wait on a barrier nobody arrives on, after the first
  uint64_t budget_ns;
  int peer_arrives;
};

constexpr uint32_t kThreads = 64;
constexpr uint32_t kSite = 7;

// CTA 0 waits for CTA 1's remote arrival on `ready` (count 1), then every thread waits on `never` (count 1, no
// arrival ever: with the abort flag up it returns at once). CTA 1 arrives if p.peer_arrives and waits on nothing.
CF_GLOBAL void wait_kernel(const CF_GRID_CONSTANT WaitParams p) {
  uint8_t* smem = dev::dynamic_smem();
  auto* ready = reinterpret_cast<dev::Mbarrier*>(smem);
  auto* never = ready + 1;
  auto* abort = reinterpret_cast<uint32_t*>(smem + 16);
  const uint32_t tid = dev::thread_rank(), rank = dev::block_rank_in_cluster();
  if (tid == 0) {
    ready->init(1);
    never->init(1);
    *abort = 0;
    dev::fence_mbarrier_init();
  }
  dev::cluster_sync();
  const prim::WaitLimit limit{p.status, p.budget_ns, kSite, abort};
  const uint32_t at = rank * kThreads + tid;
  if (rank == 1) {
    if (tid == 0 && p.peer_arrives) ready->arrive_remote(0);
    p.ok[at] = 1;
    p.second_ok[at] = 1;
  } else {
    p.ok[at] = prim::bounded_wait(*ready, 0, limit) ? 1 : 0;
    p.second_ok[at] = p.ok[at] ? 1 : (prim::bounded_wait(*never, 0, limit, 1) ? 1 : 0);
  }
  dev::cluster_sync();
}

struct Outcome {
  uint64_t status = 0;
  std::vector<uint32_t> ok, second_ok;
};

Outcome run(bool peer_arrives, bool bounded) {
  dev::DeviceBuffer<uint64_t> status(1);
  dev::DeviceBuffer<uint32_t> ok(2 * kThreads), second_ok(2 * kThreads);
  const WaitParams p{bounded ? status.data() : nullptr, ok.data(), second_ok.data(), 5'000'000, peer_arrives ? 1 : 0};
  dev::LaunchConfig cfg;
  cfg.grid = {2};
  cfg.cluster = {2};
  cfg.block = {kThreads};
  cfg.smem_bytes = 128;
  cfg.name = "bounded_wait_test";
  dev::launch(cfg, wait_kernel, p);
  return {status.download()[0], ok.download(), second_ok.download()};
}

TEST(BoundedWait, CompletedWaitIsNeverCutShort) {
  const Outcome o = run(/*peer_arrives=*/true, /*bounded=*/true);
  EXPECT_EQ(o.status, 0u);
  for (uint32_t v : o.ok) EXPECT_EQ(v, 1u);
}

TEST(BoundedWait, PeerThatNeverArrivesExpiresAndAbortsTheCta) {
  const Outcome o = run(/*peer_arrives=*/false, /*bounded=*/true);
  ASSERT_NE(o.status, 0u);
  EXPECT_EQ(prim::timeout_code(o.status), kSite);  // the first wait, not the second (code kSite + 1): it began first
  EXPECT_EQ(prim::timeout_block(o.status), 0u);
  for (uint32_t t = 0; t < kThreads; ++t) {
    EXPECT_EQ(o.ok[t], 0u) << "thread " << t;
    EXPECT_EQ(o.second_ok[t], 0u) << "thread " << t;
    EXPECT_EQ(o.ok[kThreads + t], 1u);
  }
}

TEST(BoundedWait, UnboundedWaitOnTheSameHangIsADeadlock) {
  try {
    (void)run(/*peer_arrives=*/false, /*bounded=*/false);
    ADD_FAILURE() << "no emulator error";
  } catch (const dev::EmuError& e) {
    EXPECT_EQ(e.kind(), dev::EmuErrorKind::Deadlock) << e.what();
  }
}

// The status word keeps the likeliest cause: a wait on something outside the CTA's own threads over a consequence
// wait, then the earlier start; 0 is "none" and never wins.
TEST(BoundedWait, StatusWordOrdersTheExpiries) {
  const uint64_t early = prim::timeout_status(false, 1 << 20, 5, 3), late = prim::timeout_status(false, 9 << 20, 6, 4);
  const uint64_t consequence = prim::timeout_status(true, 0, 1, 2);
  EXPECT_GT(early, late);
  EXPECT_GT(late, consequence);
  EXPECT_GT(consequence, 0u);
  EXPECT_EQ(prim::timeout_code(early), 5u);
  EXPECT_EQ(prim::timeout_block(early), 3u);
  EXPECT_EQ(prim::timeout_code(consequence), 1u);
  EXPECT_EQ(prim::timeout_block(consequence), 2u);
}

}  // namespace
}  // namespace cf::test
