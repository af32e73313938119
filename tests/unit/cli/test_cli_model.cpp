// The clusterfusion binary on the default model (skipped when it is absent): streamed greedy generation with a
// summary, chat over piped stdin, info.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "cli_runner.hpp"
#include "clusterfusion/common/json.hpp"

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

// ---- against recorded llama.cpp / numpy outputs (tests/data/golden, scripts/record_golden.py) --------------------

cf::json::Value golden(const std::string& file) {
  return cf::json::parse(cf::test::read_file(std::string(CF_SOURCE_DIR) + "/tests/data/golden/" + file));
}

// --logprobs output: the ids and, per step, id -> logprob of the listed tokens.
struct Steps {
  std::vector<int64_t> ids;
  std::vector<std::map<int64_t, double>> logprobs;
};
Steps parse_steps(const std::string& out) {
  Steps s;
  for (size_t at = 0; at < out.size();) {
    const size_t end = out.find('\n', at);
    const auto step = cf::json::parse(out.substr(at, end - at));
    at = end == std::string::npos ? out.size() : end + 1;
    s.ids.push_back(step.at("id").as_int());
    std::map<int64_t, double> lp;
    for (const auto& t : step.at("top_logprobs").as_array()) lp[t.at("id").as_int()] = t.at("logprob").as_number();
    s.logprobs.push_back(std::move(lp));
  }
  return s;
}

// --temp 0 is plain greedy decoding: the free-running tokens equal llama.cpp's greedy tokens (its F32 run, which our
// cpu backend reproduces) up to the first near tie. Before, the default --repeat-penalty 1.1 applied under --temp 0
// and the text left llama.cpp's after a few tokens. The log-probabilities of --logprobs are the fp64 oracle's
// (logit - log-sum-exp) at each of its top-10 tokens.
TEST(CliWithModel, GreedyAndLogprobsMatchTheRecordedReferences) {
  if (!std::filesystem::exists(default_model())) GTEST_SKIP() << "default model absent: run scripts/setup.sh";
  const auto doc = golden("greedy.json");
  const auto& p = doc.at("prompts").as_array()[0];  // prose_en: plain text, no quotes, no BOS
  ASSERT_EQ(p.at("kind").as_string(), "text");
  const std::string prompt = p.at("prompt").as_string();
  ASSERT_EQ(prompt.find('\''), std::string::npos);
  const Result r = run_cli("generate --raw -p '" + prompt + "' -n 24 --temp 0 --logprobs 20 -q -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Steps steps = parse_steps(r.out);
  const auto& f32 = p.at("f32_greedy");
  const auto& expected = f32.at("generated_tokens").as_array();
  const auto& margins = f32.at("top2_margin_fp64").as_array();
  size_t comparable = 0;
  while (comparable < steps.ids.size() && comparable < expected.size() && margins[comparable].as_number() >= 2e-3)
    ++comparable;
  ASSERT_GE(comparable, 12u) << "the recorded run has an early near tie";
  for (size_t j = 0; j < comparable; ++j) EXPECT_EQ(steps.ids[j], expected[j].as_int()) << "token " << j;

  // Rows of the references: row n_prompt - 1 + j predicts generated token j of the Q4_1 run, which the F32 run (and
  // ours) follows for same_as_q4_1_steps tokens.
  const size_t n_prompt = p.at("prompt_tokens").as_array().size();
  const size_t aligned = std::min<size_t>(comparable, size_t(f32.at("same_as_q4_1_steps").as_int()));
  const auto& top_ids = p.at("llama_cpp_q4_1").at("top_ids").as_array();
  const auto& oracle = p.at("numpy_fp64");
  size_t checked = 0;
  for (size_t j = 0; j < aligned; ++j) {
    const size_t row = n_prompt - 1 + j;
    const double lse = oracle.at("lse").as_array()[row].as_number();
    const auto& ids = top_ids[row].as_array();
    const auto& logits = oracle.at("logits_at_top_ids").as_array()[row].as_array();
    for (size_t k = 0; k < ids.size(); ++k) {
      const auto it = steps.logprobs[j].find(ids[k].as_int());
      ASSERT_NE(it, steps.logprobs[j].end()) << "token " << j << ": id " << ids[k].as_int() << " not in our top 20";
      EXPECT_NEAR(it->second, logits[k].as_number() - lse, 3e-3) << "token " << j << ", id " << ids[k].as_int();
      ++checked;
    }
  }
  EXPECT_GE(checked, 100u);
}

// tokenize --ids (text on stdin, --special where llama.cpp parsed special tokens) gives llama.cpp's ids for every
// recorded tricky string.
TEST(CliWithModel, TokenizeMatchesLlamaCpp) {
  if (!std::filesystem::exists(default_model())) GTEST_SKIP() << "default model absent: run scripts/setup.sh";
  const auto doc = golden("tokenize.json");
  size_t n = 0;
  for (const auto& c : doc.at("strings").as_array()) {
    std::string expected = "[";
    for (const auto& id : c.at("ids").as_array()) expected += (expected.size() > 1 ? ", " : "") + std::to_string(id.as_int());
    expected += "]\n";
    const Result r = run_cli(std::string("tokenize --ids -q") + (c.at("parse_special").as_bool() ? " --special" : ""), "",
                             c.at("text").as_string());
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, expected) << "text: " << c.at("text").as_string();
    ++n;
  }
  EXPECT_GE(n, 40u);
}

}  // namespace
