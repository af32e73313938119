// The device-API tests on a real GPU: the kernels of tests/emu/emulator/kernels compiled by nvcc for sm_90a and
// checked against the same host expectations as on the emulator; the fixed twins of the planted bugs must run
// clean. Skips cleanly without a Hopper GPU.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "kernels/checks.hpp"
#include "kernels/planted_races.hpp"

namespace cf::test {
namespace {

bool hopper_available() {
  if (!dev::device_available()) return false;
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return false;
  static bool printed = false;
  if (!printed) {
    std::printf("device: %s, compute capability %d.%d, %d SMs\n", prop.name, prop.major, prop.minor,
                prop.multiProcessorCount);
    printed = true;
  }
  return prop.major >= 9;
}

#define REQUIRE_HOPPER() \
  if (!hopper_available()) GTEST_SKIP() << "no CUDA device of compute capability >= 9.0"

TEST(GpuApi, IdsAndDims) {
  REQUIRE_HOPPER();
  const dev::Dim3 grid{4, 2, 2}, cluster{2, 2, 1}, block{8, 4, 2};
  EXPECT_EQ(check_ids(run_ids(grid, cluster, block, 256), grid, cluster, block, 256), "");
  const dev::Dim3 grid1{6}, cluster1{3}, block1{40};
  EXPECT_EQ(check_ids(run_ids(grid1, cluster1, block1, 0), grid1, cluster1, block1, 0), "");
}

TEST(GpuApi, BlockSyncAndNamedBarriers) {
  REQUIRE_HOPPER();
  EXPECT_EQ(run_barriers(3, 128), expected_barriers(3, 128));
}

TEST(GpuApi, ClusterBarrierDsmemAndDsmemAtomics) {
  REQUIRE_HOPPER();
  EXPECT_EQ(check_dsmem(run_dsmem(2, 4, 64), 2, 4, 64), "");
  EXPECT_EQ(check_dsmem(run_dsmem(1, 2, 32), 1, 2, 32), "");
}

TEST(GpuApi, NonPortableClusterOf16) {
  REQUIRE_HOPPER();
  EXPECT_EQ(check_dsmem(run_dsmem(1, 16, 32), 1, 16, 32), "");
}

TEST(GpuApi, MbarrierPhasesTryWaitAndRemoteArrive) {
  REQUIRE_HOPPER();
  EXPECT_EQ(check_mbarrier(run_mbarrier(2, 2, 96), 4, 96), "");
  EXPECT_EQ(check_mbarrier(run_mbarrier(1, 1, 64), 1, 64), "");
}

TEST(GpuApi, BulkCopyGlobalToSharedAndDsmemPush) {
  REQUIRE_HOPPER();
  const auto src = bulk_input(8, 100);
  EXPECT_EQ(run_bulk(2, 4, 64, 100, src), expected_bulk(src, 2, 4, 100));
  EXPECT_EQ(run_bulk<true>(2, 4, 64, 100, src), expected_bulk(src, 2, 4, 100));
  const auto big = bulk_input(1, 2048);
  EXPECT_EQ(run_bulk(1, 1, 128, 2048, big), expected_bulk(big, 1, 1, 2048));
}

TEST(GpuApi, TmaLoad2dWithOutOfBoundsZeroFill) {
  REQUIRE_HOPPER();
  const uint32_t width = 50, height = 37, stride = 56;
  const auto m = tma_matrix(width, height, stride);
  // Boxes inside, over each edge, at negative coordinates and wholly outside; every x on a 16-byte boundary
  // (a multiple of 8 fp16), which the hardware requires (the planted bug TmaBoxColumnNotOn16Bytes is the other case).
  const std::vector<int32_t> coords = {0, 0, 16, 8, 40, 0, 0, 33, 40, 34, -8, -3, 48, -7, -24, 10, 64, 40};
  EXPECT_EQ(run_tma(m, width, height, stride, coords), expected_tma(m, width, height, stride, coords));
}

TEST(GpuApi, WarpShufflesAndVotes) {
  REQUIRE_HOPPER();
  EXPECT_EQ(check_warp(run_warp()), "");
}

TEST(GpuApi, VectorsHalfConversionsAndAtomics) {
  REQUIRE_HOPPER();
  const auto in = vector_input(96);
  EXPECT_EQ(check_vector(run_vector(in, 96), in, 96), "");
}

TEST(GpuApi, MmaM16n8k16FragmentsAndMath) {
  REQUIRE_HOPPER();
  for (bool bf16 : {false, true}) {
    const MmaData m = mma_data(bf16);
    const auto d = bf16 ? run_mma<true>(m.a, m.b, m.c, 2) : run_mma<false>(m.a, m.b, m.c, 2);
    EXPECT_EQ(check_mma(d, m, bf16, 2), "") << (bf16 ? "bf16" : "f16");
  }
}

TEST(GpuApi, MatvecPipelineMatchesReference) {
  REQUIRE_HOPPER();
  const MatvecData d = matvec_data();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(check_matvec(run_matvec(d.w, d.x), d), "");
}

TEST(GpuPlantedBugTwins, RunCleanWithTheRightResult) {
  REQUIRE_HOPPER();
  using namespace bugs;
  EXPECT_EQ(first_difference(run_dsmem_before_cluster_sync<false>(0), expected_peer_values(), "dsmem"), "");
  EXPECT_EQ(first_difference(run_mbarrier_init_unsynced<false>(0), std::vector<uint32_t>(kThreads, 1), "init"), "");
  EXPECT_EQ(first_difference(run_expect_tx_mismatch<0>(0, copy_input()), copy_input(), "expect_tx"), "");
  EXPECT_EQ(first_difference(run_tma_read_early<false>(0, tile_matrix()), expected_tile(), "tma"), "");
  EXPECT_EQ(first_difference(run_tma_box_off_by_one<false>(0, tile_matrix()), expected_tile(), "tma box"), "");
  EXPECT_EQ(first_difference(run_tma_unaligned_column<false>(0, tile_matrix()), expected_tile(), "tma column"), "");
  std::vector<uint32_t> ramp42(kThreads), ramp1(kThreads), xor16(kThreads);
  for (uint32_t t = 0; t < kThreads; ++t) {
    ramp42[t] = 42 + t;
    ramp1[t] = t + 1;
    xor16[t] = (t % 32) + ((t % 32) ^ 16u);
  }
  EXPECT_EQ(first_difference(run_dsmem_after_exit<false>(0), ramp42, "dsmem after exit"), "");
  EXPECT_EQ(first_difference(run_block_sync_bug<false, false>(0), expected_neighbour(5, 0), "block_sync"), "");
  EXPECT_EQ(first_difference(run_block_sync_bug<false, true>(0), expected_neighbour(5, 0), "exit"), "");
  EXPECT_EQ(first_difference(run_shuffle_inactive_lanes<false>(0), xor16, "shuffle"), "");
  EXPECT_EQ(first_difference(run_mbarrier_wait_bug<false, false>(0), std::vector<uint32_t>(kThreads, 1), "phase"),
            "");
  EXPECT_EQ(first_difference(run_mbarrier_wait_bug<false, true>(0), std::vector<uint32_t>(kThreads, 1), "count"), "");
  EXPECT_EQ(first_difference(run_exit_with_copy_in_flight<false>(0, copy_input()), copy_input(), "copy"), "");
  EXPECT_EQ(first_difference(run_out_of_bounds<false, false>(0), expected_neighbour(1, 1), "smem"), "");
  EXPECT_EQ(first_difference(run_out_of_bounds<false, true>(0), ramp1, "global"), "");
  EXPECT_EQ(first_difference(run_push_source_reused<false>(0), expected_push(), "push"), "");
}

// The fixed twins of the access checks' planted bugs (kernels/planted_races.hpp).
TEST(GpuPlantedBugTwins, AccessCheckTwinsRunCleanWithTheRightResult) {
  REQUIRE_HOPPER();
  using namespace races;
  EXPECT_EQ(first_difference(run_smem_race<false>(0), expected_smem_race(), "smem race"), "");
  EXPECT_EQ(first_difference(run_dsmem_overwrite<false>(0), ramp0(kThreads), "dsmem overwrite"), "");
  EXPECT_EQ(first_difference(run_dsmem_same_slot<false>(0), expected_same_slot(), "same slot"), "");
  EXPECT_EQ(first_difference(run_global_race<false>(0), expected_global_race(), "global race"), "");
  EXPECT_EQ(first_difference(run_remote_arrive_early<false>(0), expected_remote_arrive(), "remote arrive"), "");
  EXPECT_EQ(first_difference(run_warp_race<false>(0), expected_warp_race(), "warp race"), "");
  EXPECT_EQ(first_difference(run_last_block<false>(0), std::vector<uint32_t>{10}, "last block"), "");
  EXPECT_EQ(first_difference(run_push_unfenced<false>(0), expected_push_unfenced(), "push fence"), "");
  EXPECT_EQ(first_difference(run_gather_tail<false>(0), expected_gather(), "gather tail"), "");
  EXPECT_EQ(first_difference(run_scratch_unwritten<false>(0), std::vector<uint32_t>{10}, "scratch"), "");
  EXPECT_EQ(first_difference(run_smem_exact_end<false>(0), ramp1(kOddSmemWords), "smem end"), "");
  EXPECT_EQ(first_difference(run_buffer_exact_end<false>(0), ramp1(kOddBufferWords), "buffer end"), "");
  EXPECT_EQ(first_difference(run_cluster_sync_divergent<false>(0), ramp1(kThreads), "cluster_sync"), "");
  EXPECT_EQ(first_difference(run_named_barrier_divergent<false>(0), ramp1(kThreads), "named barrier"), "");
  EXPECT_EQ(first_difference(run_push_exit_unconfirmed<false>(0), expected_pushed(), "push exit"), "");
  EXPECT_EQ(first_difference(run_read_between_arrive_and_wait<false>(0), expected_arrive_wait(), "arrive/wait"), "");
  EXPECT_EQ(first_difference(run_stale_parity<false>(0), ring_input(), "ring"), "");
  EXPECT_EQ(first_difference(run_polled_flag<false>(0), std::vector<uint32_t>(kThreads, 1), "flag"), "");
}

struct StaticSmemParams {
  uint32_t* out;
};
__global__ void static_smem_kernel(const __grid_constant__ StaticSmemParams p) {
  __shared__ uint32_t forbidden[32];
  forbidden[threadIdx.x] = threadIdx.x;
  __syncthreads();
  p.out[threadIdx.x] = forbidden[31 - threadIdx.x];
}

TEST(GpuLaunch, ValidationAndStaticSharedMemoryRule) {
  REQUIRE_HOPPER();
  dev::DeviceBuffer<uint32_t> out(32);
  dev::LaunchConfig cfg;
  cfg.grid = {1};
  cfg.block = {32};
  cfg.name = "static_smem";
  try {
    dev::launch(cfg, static_smem_kernel, StaticSmemParams{out.data()});
    ADD_FAILURE() << "a kernel with static __shared__ memory was launched";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("static __shared__"), std::string::npos) << e.what();
  }
  cfg.cluster = {9};
  cfg.grid = {9};
  EXPECT_THROW(dev::launch(cfg, static_smem_kernel, StaticSmemParams{out.data()}), InputError);
}

}  // namespace
}  // namespace cf::test
