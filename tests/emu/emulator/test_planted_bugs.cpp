// The planted-bug suite: every classic bug is reported (kind and message checked) under several schedule seeds,
// and its fixed twin runs clean and computes the right result under the same seeds. PlantedBugTest: the protocol
// checks of the device API; AccessCheckTest: the access checks (races, async-proxy fences, uninitialised reads,
// exact bounds, .aligned barriers, the exit rule, phase aliasing: kernels/planted_races.hpp).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "kernels/checks.hpp"
#include "kernels/planted_races.hpp"

namespace cf::test {
namespace {

using dev::EmuError;
using dev::EmuErrorKind;

constexpr uint64_t kSeeds[] = {1, 2, 3, 4, 5, 99};

struct PlantedBug {
  const char* name;
  std::function<void(uint64_t)> run_bug;
  std::function<std::string(uint64_t)> run_twin;  // "" when the twin's output is right
  EmuErrorKind kind;
  std::vector<std::string> message_parts;  // all must appear in the report
};

std::string ones(const std::vector<uint32_t>& out) {
  return first_difference(out, std::vector<uint32_t>(bugs::kThreads, 1), "out");
}

std::vector<PlantedBug> planted_bugs() {
  using namespace bugs;
  auto ramp = [](uint32_t add) {
    std::vector<uint32_t> v(kThreads);
    for (uint32_t t = 0; t < kThreads; ++t) v[t] = t + add;
    return v;
  };
  auto lanes_xor16 = [] {
    std::vector<uint32_t> v(kThreads);
    for (uint32_t t = 0; t < kThreads; ++t) v[t] = (t % 32) + ((t % 32) ^ 16u);
    return v;
  };
  return {
      {"DsmemReadBeforeClusterSync", [](uint64_t s) { run_dsmem_before_cluster_sync<true>(s); },
       [](uint64_t s) { return first_difference(run_dsmem_before_cluster_sync<false>(s), expected_peer_values(), "out"); },
       EmuErrorKind::DsmemInvalid, {"before any cluster barrier completed", "cluster_sync()"}},
      {"MbarrierUsedBeforeInitIsSynced", [](uint64_t s) { run_mbarrier_init_unsynced<true>(s); },
       [](uint64_t s) { return ones(run_mbarrier_init_unsynced<false>(s)); }, EmuErrorKind::MbarrierMisuse,
       {"mbarrier at block rank 0 offset 0", "init"}},
      {"ExpectTxTooSmall", [](uint64_t s) { run_expect_tx_mismatch<-16>(s, copy_input()); },
       [](uint64_t s) { return first_difference(run_expect_tx_mismatch<0>(s, copy_input()), copy_input(), "out"); },
       EmuErrorKind::MbarrierMisuse, {"tx-count underflow", "16 more bytes"}},
      {"ExpectTxTooLarge", [](uint64_t s) { run_expect_tx_mismatch<16>(s, copy_input()); },
       [](uint64_t s) { return first_difference(run_expect_tx_mismatch<0>(s, copy_input()), copy_input(), "out"); },
       EmuErrorKind::Deadlock, {"Mbarrier::wait(parity 0)", "tx-count 16"}},
      {"TmaTileReadBeforeItsBarrier", [](uint64_t s) { run_tma_read_early<true>(s, tile_matrix()); },
       [](uint64_t s) { return first_difference(run_tma_read_early<false>(s, tile_matrix()), expected_tile(), "out"); },
       EmuErrorKind::InFlightAccess, {"read of this block's shared memory", "in-flight tma_load_2d"}},
      {"TmaBoxOffByOne", [](uint64_t s) { run_tma_box_off_by_one<true>(s, tile_matrix()); },
       [](uint64_t s) {
         return first_difference(run_tma_box_off_by_one<false>(s, tile_matrix()), expected_tile(), "out");
       },
       EmuErrorKind::SmemOutOfBounds, {"tma_load_2d", "destination box", "past the end"}},
      {"TmaBoxColumnNotOn16Bytes", [](uint64_t s) { run_tma_unaligned_column<true>(s, tile_matrix()); },
       [](uint64_t s) {
         return first_difference(run_tma_unaligned_column<false>(s, tile_matrix()), expected_tile(), "out");
       },
       EmuErrorKind::Misaligned, {"tma_load_2d", "box column x = 4", "8 bytes into the row", "multiple of 16"}},
      {"DsmemWriteWhilePeerExits", [](uint64_t s) { run_dsmem_after_exit<true>(s); },
       [ramp](uint64_t s) { return first_difference(run_dsmem_after_exit<false>(s), ramp(42), "out"); },
       EmuErrorKind::DsmemInvalid, {"block rank 1", "exited"}},
      {"DivergentBlockSync", [](uint64_t s) { run_block_sync_bug<true, false>(s); },
       [](uint64_t s) { return first_difference(run_block_sync_bug<false, false>(s), expected_neighbour(5, 0), "out"); },
       EmuErrorKind::BarrierDivergence, {"reached different block_sync calls", ".aligned"}},
      {"WarpExitsBeforeBlockSync", [](uint64_t s) { run_block_sync_bug<true, true>(s); },
       [](uint64_t s) { return first_difference(run_block_sync_bug<false, true>(s), expected_neighbour(5, 0), "out"); },
       EmuErrorKind::BarrierExit, {"exited", "block_sync"}},
      {"ShuffleWithInactiveLanes", [](uint64_t s) { run_shuffle_inactive_lanes<true>(s); },
       [lanes_xor16](uint64_t s) { return first_difference(run_shuffle_inactive_lanes<false>(s), lanes_xor16(), "out"); },
       EmuErrorKind::WarpCollective, {"shfl_xor_sync", "which has exited"}},
      {"WaitOnPhaseThatNeverCompletes", [](uint64_t s) { run_mbarrier_wait_bug<true, false>(s); },
       [](uint64_t s) { return ones(run_mbarrier_wait_bug<false, false>(s)); }, EmuErrorKind::Deadlock,
       {"threads 0-63: Mbarrier::wait(parity 1)", "phase 1"}},
      {"ArrivalCountMismatch", [](uint64_t s) { run_mbarrier_wait_bug<true, true>(s); },
       [](uint64_t s) { return ones(run_mbarrier_wait_bug<false, true>(s)); }, EmuErrorKind::Deadlock,
       {"32 of 64 arrivals pending"}},
      {"ExitWithCopyInFlight", [](uint64_t s) { run_exit_with_copy_in_flight<true>(s, copy_input()); },
       [](uint64_t s) {
         return first_difference(run_exit_with_copy_in_flight<false>(s, copy_input()), copy_input(), "out");
       },
       EmuErrorKind::AsyncCopyMisuse, {"exited while the bulk_copy_g2s", "still in flight"}},
      {"SharedMemoryOnePastTheEnd", [](uint64_t s) { run_out_of_bounds<true, false>(s); },
       [](uint64_t s) { return first_difference(run_out_of_bounds<false, false>(s), expected_neighbour(1, 1), "out"); },
       EmuErrorKind::SmemOutOfBounds, {"thread 63", "write out of bounds", "0 bytes past the end"}},
      {"GlobalMemoryOnePastTheEnd", [](uint64_t s) { run_out_of_bounds<true, true>(s); },
       [ramp](uint64_t s) { return first_difference(run_out_of_bounds<false, true>(s), ramp(1), "out"); },
       EmuErrorKind::GlobalOutOfBounds, {"thread 63", "past the end of a 256-byte DeviceBuffer"}},
      {"PushSourceReusedTooEarly", [](uint64_t s) { run_push_source_reused<true>(s); },
       [](uint64_t s) { return first_difference(run_push_source_reused<false>(s), expected_push(), "out"); },
       EmuErrorKind::InFlightAccess, {"bulk_copy_s2peer", "was modified before the copy completed"}},
      {"PipelineStageRefilledBeforeConsumed",
       [](uint64_t s) {
         const MatvecData d = matvec_data();
         run_matvec<MatvecBug::SkipEmptyWait>(d.w, d.x, s);
       },
       [](uint64_t s) {
         const MatvecData d = matvec_data();
         return check_matvec(run_matvec<MatvecBug::None>(d.w, d.x, s), d);
       },
       EmuErrorKind::InFlightAccess, {"the tma_load_2d issued at", "overwrites", "without that access being ordered"}},
      {"PipelineWaitWithWrongParity",
       [](uint64_t s) {
         const MatvecData d = matvec_data();
         run_matvec<MatvecBug::WrongParity>(d.w, d.x, s);
       },
       [](uint64_t s) {
         const MatvecData d = matvec_data();
         return check_matvec(run_matvec<MatvecBug::None>(d.w, d.x, s), d);
       },
       EmuErrorKind::InFlightAccess, {"in-flight tma_load_2d"}},
  };
}

std::vector<PlantedBug> planted_access_bugs() {
  using namespace races;
  auto same = [](auto run, std::vector<uint32_t> want) {
    return [run, want](uint64_t s) { return first_difference(run(s), want, "out"); };
  };
  return {
      {"SharedMemoryRaceWithoutBlockSync", [](uint64_t s) { run_smem_race<true>(s); },
       same(run_smem_race<false>, expected_smem_race()), EmuErrorKind::DataRace,
       {"this block's shared memory", "races with the", "planted_races.hpp:"}},
      {"DsmemBufferOverwrittenWhilePeerReads", [](uint64_t s) { run_dsmem_overwrite<true>(s); },
       same(run_dsmem_overwrite<false>, ramp0(kThreads)),
       EmuErrorKind::DataRace, {"shared memory", "races with the", "cluster rank 0", "cluster rank 1"}},
      {"TwoCtasWriteOnePeerSlot", [](uint64_t s) { run_dsmem_same_slot<true>(s); },
       same(run_dsmem_same_slot<false>, expected_same_slot()), EmuErrorKind::DataRace,
       {"write of block rank 0's shared memory (DSMEM)", "races with the write by"}},
      {"TwoClustersWriteOneGlobalElement", [](uint64_t s) { run_global_race<true>(s); },
       same(run_global_race<false>, expected_global_race()), EmuErrorKind::DataRace,
       {"write of a 512-byte DeviceBuffer", "races with the write by block 0"}},
      {"RemoteArriveBeforeTheData", [](uint64_t s) { run_remote_arrive_early<true>(s); },
       same(run_remote_arrive_early<false>, expected_remote_arrive()),
       EmuErrorKind::DataRace, {"shared memory", "races with the", "cluster rank 0", "cluster rank 1"}},
      {"WarpReadsWithoutSyncwarp", [](uint64_t s) { run_warp_race<true>(s); },
       same(run_warp_race<false>, expected_warp_race()), EmuErrorKind::DataRace, {"races with the"}},
      {"LastBlockWithoutFences", [](uint64_t s) { run_last_block<true>(s); },
       same(run_last_block<false>, std::vector<uint32_t>{10}), EmuErrorKind::DataRace,
       {"read of a 16-byte DeviceBuffer", "races with the write by block"}},
      {"PushWithoutProxyFence", [](uint64_t s) { run_push_unfenced<true>(s); },
       same(run_push_unfenced<false>, expected_push_unfenced()), EmuErrorKind::AsyncProxy,
       {"bulk_copy_s2peer", "no fence_proxy_async"}},
      {"GatherDropsTheTail", [](uint64_t s) { run_gather_tail<true>(s); },
       same(run_gather_tail<false>, expected_gather()), EmuErrorKind::UninitializedRead,
       {"read of this block's shared memory at kernels/planted_races.hpp:", "is uninitialised"}},
      {"ScratchReadBeforeWritten", [](uint64_t s) { run_scratch_unwritten<true>(s); },
       same(run_scratch_unwritten<false>, std::vector<uint32_t>{10}), EmuErrorKind::UninitializedRead,
       {"byte 12 is uninitialised", "declared scratch"}},
      {"SharedMemoryPastItsExactEnd", [](uint64_t s) { run_smem_exact_end<true>(s); },
       same(run_smem_exact_end<false>, ramp1(kOddSmemWords)), EmuErrorKind::SmemOutOfBounds,
       {"thread 50", "write out of bounds", "(200 bytes)", "0 bytes past the end"}},
      {"DeviceBufferPastItsExactEnd", [](uint64_t s) { run_buffer_exact_end<true>(s); },
       same(run_buffer_exact_end<false>, ramp1(kOddBufferWords)), EmuErrorKind::GlobalOutOfBounds,
       {"thread 3", "0 bytes past the end of a 12-byte DeviceBuffer"}},
      {"ClusterSyncDivergentInAWarp", [](uint64_t s) { run_cluster_sync_divergent<true>(s); },
       same(run_cluster_sync_divergent<false>, ramp1(kThreads)), EmuErrorKind::BarrierDivergence,
       {"different cluster barrier calls", ".aligned"}},
      {"NamedBarrierDivergentInAWarp", [](uint64_t s) { run_named_barrier_divergent<true>(s); },
       same(run_named_barrier_divergent<false>, ramp1(kThreads)), EmuErrorKind::BarrierDivergence,
       {"different named barrier 1 calls", ".aligned"}},
      {"ExitBeforePushConfirmed", [](uint64_t s) { run_push_exit_unconfirmed<true>(s); },
       same(run_push_exit_unconfirmed<false>, expected_pushed()), EmuErrorKind::AsyncCopyMisuse,
       {"block rank 0 exited while the bulk_copy_s2peer", "from its shared memory"}},
      {"DsmemReadBetweenArriveAndWaitThenExit", [](uint64_t s) { run_read_between_arrive_and_wait<true>(s); },
       same(run_read_between_arrive_and_wait<false>, expected_arrive_wait()), EmuErrorKind::DsmemInvalid,
       {"exited"}},
      {"RingWaitWithStaleParity", [](uint64_t s) { run_stale_parity<true>(s); },
       same(run_stale_parity<false>, ring_input()), EmuErrorKind::PhaseAliasing,
       {"Mbarrier::wait(parity 0)", "returned for phase 0", "already waited for"}},
      {"FlagPolledWithPlainLoads", [](uint64_t s) { run_polled_flag<true>(s); },
       same(run_polled_flag<false>, std::vector<uint32_t>(kThreads, 1)), EmuErrorKind::DataRace,
       {"this block's shared memory at offset 0", "races with the"}},
  };
}

void PrintTo(const PlantedBug& bug, std::ostream* os) { *os << bug.name; }

class PlantedBugTest : public testing::TestWithParam<PlantedBug> {};

TEST_P(PlantedBugTest, BugIsReportedAndTwinRunsClean) {
  const PlantedBug& bug = GetParam();
  for (uint64_t seed : kSeeds) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    try {
      bug.run_bug(seed);
      ADD_FAILURE() << bug.name << ": the planted bug was not reported";
    } catch (const EmuError& e) {
      const std::string msg = e.what();
      if (seed == kSeeds[0] && std::getenv("CF_PRINT_REPORTS") != nullptr) std::printf("%s\n", msg.c_str());
      EXPECT_EQ(e.kind(), bug.kind) << msg;
      EXPECT_NE(msg.find("seed " + std::to_string(seed)), std::string::npos) << msg;
      for (const std::string& part : bug.message_parts) EXPECT_NE(msg.find(part), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << "reports are one line: " << msg;
    }
    try {
      EXPECT_EQ(bug.run_twin(seed), "");
    } catch (const EmuError& e) {
      ADD_FAILURE() << bug.name << " twin: " << e.what();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Emulator, PlantedBugTest, testing::ValuesIn(planted_bugs()),
                         [](const testing::TestParamInfo<PlantedBug>& info) { return std::string(info.param.name); });
INSTANTIATE_TEST_SUITE_P(AccessChecks, PlantedBugTest, testing::ValuesIn(planted_access_bugs()),
                         [](const testing::TestParamInfo<PlantedBug>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace cf::test
