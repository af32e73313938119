// The fused decoder attention block on the emulator against cf::ref::attention_block.
#include <gtest/gtest.h>

#include <chrono>

#include "clusterfusion/device/launch.hpp"
#include "harness.hpp"

namespace cf::test::da {
namespace {

template <typename T>
void run_and_check(const Case& c, uint64_t emu_seed = 0) {
  const HostInputs in = make_inputs<T>(c);
  const Oracle o = make_oracle<T>(c, in);
  const auto t0 = std::chrono::steady_clock::now();
  const RunResult r = run_case(c, in, emu_seed);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto stats = dev::emu::last_launch_stats();
  std::printf("%s: %.2f s, %llu switches, %llu copies\n", c.name.c_str(), secs, (unsigned long long)stats.switches,
              (unsigned long long)stats.copies);
  const CheckReport rep = check_result<T>(c, in, o, r);
  EXPECT_TRUE(rep.ok) << rep.message;
  if (rep.ok) std::printf("  %s\n", rep.message.c_str());
}

void run_any(const Case& c, uint64_t emu_seed = 0) {
  if (c.dtype == dev::DType::F16) run_and_check<half>(c, emu_seed);
  else run_and_check<bfloat16>(c, emu_seed);
}

TEST(DecoderAttentionEmu, SmallMhaHd64) {
  Case c;
  c.name = "mha_hd64";
  run_any(c);
}

}  // namespace
}  // namespace cf::test::da
