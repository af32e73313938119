// The clusterfusion binary, run as a user would: help for every command, one-line errors with exit code 2 for a bad
// command line and 1 for bad files, and (when the default model is present) a short greedy generation.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace {

struct Result {
  int exit_code = -1;
  std::string out, err;
};

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Runs the CLI with a shell-quoted argument string; env is prepended as VAR=value assignments.
Result run_cli(const std::string& args, const std::string& env = "", const std::string& stdin_text = "") {
  static int counter = 0;
  const auto dir = std::filesystem::temp_directory_path() / ("cf_test_cli_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string tag = std::to_string(counter++);
  const auto out = dir / ("out" + tag), err = dir / ("err" + tag), in = dir / ("in" + tag);
  std::ofstream(in) << stdin_text;
  const std::string cmd = env + " " + CF_CLI_PATH + " " + args + " <" + in.string() + " >" + out.string() + " 2>" + err.string();
  const int status = std::system(cmd.c_str());
  Result r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(out);
  r.err = read_file(err);
  std::filesystem::remove_all(dir);
  return r;
}

int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

TEST(Cli, HelpForEveryCommand) {
  for (const std::string cmd : {"--help", "help", "generate --help", "chat --help", "info --help", "generate -h"}) {
    const Result r = run_cli(cmd);
    EXPECT_EQ(r.exit_code, 0) << cmd << ": " << r.err;
    EXPECT_NE(r.out.find("usage: clusterfusion"), std::string::npos) << cmd;
  }
  const Result g = run_cli("generate --help");
  for (const char* option : {"--prompt", "--max-tokens", "--temp", "--top-k", "--top-p", "--min-p", "--repeat-penalty",
                             "--seed", "--system", "--template", "--raw", "--model", "--backend", "--threads"})
    EXPECT_NE(g.out.find(option), std::string::npos) << option;
}

TEST(Cli, UsageErrorsExitWithCode2AndOneLine) {
  struct Case {
    std::string args, expected;
  };
  for (const Case& c : {Case{"", "missing command"}, Case{"frobnicate", "unknown command 'frobnicate'"},
                        Case{"generate --bogus", "unknown option '--bogus'"},
                        Case{"generate -p hi -n", "-n: missing value N"},
                        Case{"generate -p hi -n many", "-n: expected an integer, got 'many'"},
                        Case{"generate -p hi --temp hot", "--temp: expected a number"},
                        Case{"generate -p hi --top-p 1.5", "--top-p: must be in (0, 1]"},
                        Case{"generate -p hi --template vicuna", "unknown chat template 'vicuna'"},
                        Case{"generate -p hi --backend cuda", "--backend cuda: not built yet"},
                        Case{"generate -p hi --backend tpu", "unknown backend 'tpu'"},
                        Case{"generate", "missing -p TEXT"}, Case{"generate --raw=yes -p x", "--raw takes no value"},
                        Case{"generate -p hi -t -1", "-t: expected an integer in 0..256"},
                        Case{"info a.gguf b.gguf", "unexpected argument 'b.gguf'"}}) {
    const Result r = run_cli(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args << ": " << r.err;
    EXPECT_NE(r.err.find(c.expected), std::string::npos) << c.args << ": " << r.err;
    EXPECT_EQ(r.err.rfind("clusterfusion: "), r.err.find("clusterfusion: ")) << "one error line: " << r.err;
  }
}

TEST(Cli, MissingOrBadModelFilesExitWithCode1) {
  const Result missing = run_cli("generate -p hi -m /nonexistent/model.gguf");
  EXPECT_EQ(missing.exit_code, 1) << missing.err;
  EXPECT_NE(missing.err.find("/nonexistent/model.gguf"), std::string::npos) << missing.err;
  EXPECT_EQ(count_lines(missing.err), 1) << missing.err;

  const auto bad = std::filesystem::temp_directory_path() / ("cf_test_cli_bad_" + std::to_string(getpid()) + ".gguf");
  std::ofstream(bad) << "this is not a model";
  const Result garbage = run_cli("info " + bad.string());
  std::filesystem::remove(bad);
  EXPECT_EQ(garbage.exit_code, 1) << garbage.err;
  EXPECT_NE(garbage.err.find(bad.string()), std::string::npos) << garbage.err;
  EXPECT_EQ(count_lines(garbage.err), 1) << garbage.err;
}

TEST(Cli, MissingDefaultModelSaysToRunSetup) {
  const auto empty = std::filesystem::temp_directory_path() / ("cf_test_cli_cache_" + std::to_string(getpid()));
  std::filesystem::create_directories(empty);
  const Result r = run_cli("generate -p hi", "CF_CACHE_DIR=" + empty.string());
  std::filesystem::remove_all(empty);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("scripts/setup.sh"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(empty.string() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"), std::string::npos) << r.err;
}

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
