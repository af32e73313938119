// The clusterfusion binary on the default model (skipped when it is absent): streamed greedy generation with a
// summary, chat over piped stdin, info.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "cli_runner.hpp"

namespace {

using cf::test::count_lines;
using cf::test::Result;
using cf::test::run_cli;

// ---- with the default model -------------------------------------------------------------------------------------

std::string default_model() {
  std::string dir;
  if (const char* d = std::getenv("CF_CACHE_DIR"); d && *d) dir = d;
  else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) dir = std::string(x) + "/clusterfusion";
  else dir = std::string(std::getenv("HOME") ? std::getenv("HOME") : ".") + "/.cache/clusterfusion";
  return dir + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

TEST(CliWithModel, GreedyGenerationStreamsTextAndASummary) {
  if (!std::filesystem::exists(default_model())) GTEST_SKIP() << "default model absent: run scripts/setup.sh";
  const Result r = run_cli("generate -p 'What is the capital of France?' -n 24 --temp 0 -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("Paris"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("generated: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tok/s"), std::string::npos) << r.err;
  // Same command, same output (greedy; and the sampler is seeded).
  EXPECT_EQ(run_cli("generate -p 'What is the capital of France?' -n 24 --temp 0 -t 1").out, r.out);
}

TEST(CliWithModel, ChatReadsOneTurnPerLineFromPipedInput) {
  if (!std::filesystem::exists(default_model())) GTEST_SKIP() << "default model absent: run scripts/setup.sh";
  const Result r = run_cli("chat -n 16 --temp 0 -q", "", "Hi! What is your name?\n\n/reset\nWhat is 2+2?\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(count_lines(r.out), 2) << r.out;  // one reply per (non-empty) turn
  EXPECT_EQ(r.err, "");                       // -q: nothing on stderr
}

TEST(CliWithModel, InfoPrintsConfigAndTensorTable) {
  if (!std::filesystem::exists(default_model())) GTEST_SKIP() << "default model absent: run scripts/setup.sh";
  const Result r = run_cli("info");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("blk.29.ffn_down.weight"), std::string::npos);
  EXPECT_NE(r.out.find("Q4_1"), std::string::npos);
  EXPECT_NE(r.out.find("chat template: chatml"), std::string::npos);
}

}  // namespace
