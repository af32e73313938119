#include <gtest/gtest.h>

#include "kernels/checks.hpp"

namespace cf::test {
namespace {
using prim::Strategy;
using prim::Transport;

TEST(Smoke, FewConfigs) {
  CollectiveRun run;
  run.seed = 1;
  EXPECT_EQ((check_sweep<4, float, Strategy::Linear, Transport::Pull, Kind::AllReduce>(run, 1)), "");
  EXPECT_EQ((check_sweep<4, float, Strategy::Linear, Transport::Push, Kind::AllReduce>(run, 1)), "");
  EXPECT_EQ((check_sweep<5, float, Strategy::Tree, Transport::Pull, Kind::AllReduce>(run, 1)), "");
  EXPECT_EQ((check_sweep<5, float, Strategy::Tree, Transport::Push, Kind::AllReduce>(run, 1)), "");
  EXPECT_EQ((check_sweep<3, float, Strategy::Linear, Transport::Pull, Kind::AllGather>(run, 1)), "");
  EXPECT_EQ((check_sweep<3, float, Strategy::Linear, Transport::Push, Kind::AllGather>(run, 1)), "");
  EXPECT_EQ((check_sweep<6, float, Strategy::Tree, Transport::Pull, Kind::AllGather>(run, 1)), "");
  EXPECT_EQ((check_sweep<6, float, Strategy::Tree, Transport::Push, Kind::AllGather>(run, 1)), "");
}

}  // namespace
}  // namespace cf::test
