// Positive tests of every device-API operation on the emulator, each across several schedule seeds: results must
// equal host-computed expectations (kernels/checks.hpp; the GPU binary holds the hardware to the same checks).
#include <gtest/gtest.h>

#include "kernels/checks.hpp"

namespace cf::test {
namespace {

constexpr uint64_t kSeeds[] = {1, 2, 3, 0x5eed};

TEST(EmuApi, IdsAndDims) {
  for (uint64_t seed : kSeeds) {
    const dev::Dim3 grid{4, 2, 2}, cluster{2, 2, 1}, block{8, 4, 2};
    EXPECT_EQ(check_ids(run_ids(grid, cluster, block, 256, seed), grid, cluster, block, 256), "") << "seed " << seed;
  }
  const dev::Dim3 grid{6}, cluster{3}, block{40};  // partial last warp
  EXPECT_EQ(check_ids(run_ids(grid, cluster, block, 0), grid, cluster, block, 0), "");
}

TEST(EmuApi, BlockSyncAndNamedBarriers) {
  for (uint64_t seed : kSeeds) EXPECT_EQ(run_barriers(3, 128, seed), expected_barriers(3, 128)) << "seed " << seed;
}

TEST(EmuApi, ClusterBarrierDsmemAndDsmemAtomics) {
  for (uint64_t seed : kSeeds) {
    EXPECT_EQ(check_dsmem(run_dsmem(2, 4, 64, seed), 2, 4, 64), "") << "seed " << seed;
    EXPECT_EQ(check_dsmem(run_dsmem(1, 2, 32, seed), 1, 2, 32), "") << "seed " << seed;
  }
}

TEST(EmuApi, NonPortableClusterOf16) { EXPECT_EQ(check_dsmem(run_dsmem(1, 16, 32), 1, 16, 32), ""); }

TEST(EmuApi, MbarrierPhasesTryWaitAndRemoteArrive) {
  for (uint64_t seed : kSeeds) {
    EXPECT_EQ(check_mbarrier(run_mbarrier(2, 2, 96, seed), 4, 96), "") << "seed " << seed;
    EXPECT_EQ(check_mbarrier(run_mbarrier(1, 1, 64, seed), 1, 64), "") << "seed " << seed;
  }
}

TEST(EmuApi, BulkCopyGlobalToSharedAndDsmemPush) {
  for (uint64_t seed : kSeeds) {
    const auto src = bulk_input(8, 100);
    EXPECT_EQ(run_bulk(2, 4, 64, 100, src, seed), expected_bulk(src, 2, 4, 100)) << "seed " << seed;
    EXPECT_EQ(run_bulk<true>(2, 4, 64, 100, src, seed), expected_bulk(src, 2, 4, 100)) << "seed " << seed;
  }
  const auto src = bulk_input(1, 2048);  // a push larger than a page
  EXPECT_EQ(run_bulk(1, 1, 128, 2048, src), expected_bulk(src, 1, 1, 2048));
}

TEST(EmuApi, TmaLoad2dWithOutOfBoundsZeroFill) {
  const uint32_t width = 50, height = 37, stride = 56;  // row stride 112 bytes
  const auto m = tma_matrix(width, height, stride);
  const std::vector<int32_t> coords = {0, 0, 16, 8, 40, 0, 0, 33, 44, 34, -5, -3, 48, -7, -20, 10, 60, 40};
  for (uint64_t seed : kSeeds)
    EXPECT_EQ(run_tma(m, width, height, stride, coords, seed), expected_tma(m, width, height, stride, coords))
        << "seed " << seed;
}

TEST(EmuApi, WarpShufflesAndVotes) {
  for (uint64_t seed : kSeeds) EXPECT_EQ(check_warp(run_warp(seed)), "") << "seed " << seed;
}

TEST(EmuApi, VectorsHalfConversionsAndAtomics) {
  const auto in = vector_input(96);
  for (uint64_t seed : kSeeds) EXPECT_EQ(check_vector(run_vector(in, 96, seed), in, 96), "") << "seed " << seed;
}

TEST(EmuApi, MmaM16n8k16FragmentsAndMath) {
  for (bool bf16 : {false, true}) {
    const MmaData m = mma_data(bf16);
    for (uint64_t seed : kSeeds) {
      const auto d = bf16 ? run_mma<true>(m.a, m.b, m.c, 2, seed) : run_mma<false>(m.a, m.b, m.c, 2, seed);
      EXPECT_EQ(check_mma(d, m, bf16, 2), "") << (bf16 ? "bf16" : "f16") << " seed " << seed;
    }
  }
}

TEST(EmuApi, MatvecPipelineMatchesReference) {
  const MatvecData d = matvec_data();
  for (uint64_t seed : kSeeds) EXPECT_EQ(check_matvec(run_matvec(d.w, d.x, seed), d), "") << "seed " << seed;
}

TEST(EmuApi, SameSeedSameSchedule) {
  const MatvecData d = matvec_data();
  (void)run_matvec(d.w, d.x, 42);
  const auto first = dev::emu::last_launch_stats();
  (void)run_matvec(d.w, d.x, 42);
  const auto second = dev::emu::last_launch_stats();
  EXPECT_EQ(first.switches, second.switches);
  EXPECT_EQ(first.seed, 42u);
  (void)run_matvec(d.w, d.x, 43);
  EXPECT_NE(dev::emu::last_launch_stats().switches, 0u);
}

}  // namespace
}  // namespace cf::test
