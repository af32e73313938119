// The clusterfusion binary, run as a user would: help for every command, and one-line errors with exit code 2 for a
// bad command line and 1 for bad files.
#include <gtest/gtest.h>

#include "cli_runner.hpp"
#include "clusterfusion/common/json.hpp"
#include "clusterfusion/runtime/backend.hpp"

namespace {

using cf::test::count_lines;
using cf::test::Result;
using cf::test::run_cli;

TEST(Cli, HelpForEveryCommand) {
  for (const std::string cmd : {"--help", "help", "generate --help", "chat --help", "info --help", "tokenize --help",
                                "generate -h", "-q generate --help"}) {
    const Result r = run_cli(cmd);
    EXPECT_EQ(r.exit_code, 0) << cmd << ": " << r.err;
    EXPECT_NE(r.out.find("usage: clusterfusion"), std::string::npos) << cmd;
  }
  const Result g = run_cli("generate --help");
  for (const char* option : {"--prompt", "--max-tokens", "--temp", "--top-k", "--top-p", "--min-p", "--repeat-penalty",
                             "--seed", "--system", "--template", "--raw", "--model", "--backend", "--threads",
                             "--logprobs"})
    EXPECT_NE(g.out.find(option), std::string::npos) << option;
  const Result t = run_cli("tokenize --help");
  for (const char* option : {"--prompt", "--special", "--bos", "--no-bos", "--chat", "--ids", "--model"})
    EXPECT_NE(t.out.find(option), std::string::npos) << option;
}

TEST(Cli, UsageErrorsExitWithCode2AndOneLine) {
  struct Case {
    std::string args, expected;
  };
  std::vector<Case> cases = {Case{"", "missing command"}, Case{"frobnicate", "unknown command 'frobnicate'"},
                        Case{"generate --bogus", "unknown option '--bogus'"},
                        Case{"generate -p hi -n", "-n: missing value N"},
                        Case{"generate -p hi -n many", "-n: expected an integer, got 'many'"},
                        Case{"generate -p hi --temp hot", "--temp: expected a number"},
                        Case{"generate -p hi --top-p 1.5", "--top-p: must be in (0, 1]"},
                        Case{"generate -p hi --template vicuna", "unknown chat template 'vicuna'"},
                        Case{"generate -p hi --backend tpu", "unknown backend 'tpu'"},
                        Case{"generate", "missing -p TEXT"}, Case{"generate --raw=yes -p x", "--raw takes no value"},
                        Case{"generate -p hi -t -1", "-t: expected an integer in 0..256"},
                        Case{"info a.gguf b.gguf", "unexpected argument 'b.gguf'"},
                        Case{"--bogus generate -p hi", "unknown option '--bogus'"},
                        Case{"generate -p hi --repeat-penalty 1e-38", "--repeat-penalty: must be in [0.01, 100]"},
                        Case{"generate -p hi --logprobs 21", "--logprobs: expected an integer in 0..20"},
                        Case{"generate -p hi --cpu-arithmetic fp8", "--cpu-arithmetic: 'fp8' (expected f32, int16 or int8)"},
                        Case{"tokenize --chat --special -p x", "--chat tokenizes as the chat template does"}};
  // A GPU backend this build or machine cannot run is a usage error naming the reason (checked before loading).
  for (const char* gpu : {"cuda", "cuda-unfused"})
    if (const std::string why = cf::backend_unavailable_reason(gpu); !why.empty())
      cases.push_back(Case{std::string("generate -p hi --backend ") + gpu, std::string("--backend ") + gpu + ": " + why});
  for (const Case& c : cases) {
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


// ---- the tiny DeepSeek-V2 model (tests/data/deepseek, goldens by scripts/record_deepseek_golden.py) ----------------

// The token ids of a --logprobs run.
std::vector<int64_t> generated_ids(const std::string& out) {
  std::vector<int64_t> ids;
  size_t begin = 0;
  for (size_t end; (end = out.find('\n', begin)) != std::string::npos; begin = end + 1)
    ids.push_back(cf::json::parse(out.substr(begin, end - begin)).at("id").as_int());
  return ids;
}

// `generate --raw --temp 0` from the GGUF and from the HF folder print the same tokens, which are llama.cpp F32's
// greedy continuation (no step of these prompts is a near tie: tests/data/golden/deepseek/README.md).
TEST(CliDeepseek, GgufAndFolderGenerateLlamaCppsGreedyTokens) {
  const std::string data = std::string(CF_SOURCE_DIR) + "/tests/data/";
  const auto golden = cf::json::parse(cf::test::read_file(data + "golden/deepseek/tiny_mla.json"));
  int compared = 0;
  for (const auto& p : golden.at("prompts").as_array()) {
    const std::string prompt = p.at("prompt").as_string();
    if (prompt.find_first_of("'\n\\") != std::string::npos) continue;  // kept simple to quote
    std::vector<int64_t> want;
    for (const auto& t : p.at("f32_greedy").at("generated_tokens").as_array()) want.push_back(t.as_int());
    const std::string args = " --raw --temp 0 -n " + std::to_string(want.size()) + " -t 2 -q --logprobs 0 -p '" + prompt + "'";
    const Result gguf = run_cli("generate -m " + data + "deepseek/tiny_mla.gguf" + args);
    const Result folder = run_cli("generate -m " + data + "deepseek/tiny_mla/" + args);
    ASSERT_EQ(gguf.exit_code, 0) << gguf.err;
    ASSERT_EQ(folder.exit_code, 0) << folder.err;
    EXPECT_EQ(gguf.out, folder.out) << prompt;
    EXPECT_EQ(generated_ids(gguf.out), want) << prompt;
    ++compared;
  }
  EXPECT_GE(compared, 3);
}

TEST(CliDeepseek, InfoShowsTheMlaAndMoeConfiguration) {
  const std::string model = std::string(CF_SOURCE_DIR) + "/tests/data/deepseek/tiny_mla_qlora.gguf";
  const Result r = run_cli("info " + model);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* want : {"MLA attention", "q through q_lora_rank 56", "48 values per token and layer", "yarn ",
                           "6 routed experts (top 2, greedy, width 16), 2 shared", "scaled by 2.5",
                           "blk.2.ffn_gate_exps.weight"})
    EXPECT_NE(r.out.find(want), std::string::npos) << want;
  // Both GPU backends run DeepSeek-V2 models; without a usable GPU the availability error comes first, one line,
  // before the model is loaded.
  for (const char* gpu : {"cuda", "cuda-unfused"}) {
    const Result run = run_cli("generate -m " + model + " --backend " + gpu + " -p hi -n 2");
    const std::string unavailable = cf::backend_unavailable_reason(gpu);
    if (unavailable.empty()) {
      EXPECT_EQ(run.exit_code, 0) << gpu << ": " << run.err;
      continue;
    }
    EXPECT_NE(run.exit_code, 0) << gpu;
    EXPECT_EQ(count_lines(run.err), 1) << gpu << ": " << run.err;
    EXPECT_NE(run.err.find(std::string("--backend ") + gpu + ": " + unavailable), std::string::npos) << run.err;
  }
}

}  // namespace
