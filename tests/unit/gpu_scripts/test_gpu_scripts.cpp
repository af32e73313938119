// bench/gpu_first.sh's dry run and bench/gpu_summary.py (docs/gpu-runs.md), without a GPU: a fake nvidia-smi that
// lists no device makes the run a dry run on any machine.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "clusterfusion/common/json.hpp"

namespace cf::test {
namespace {

namespace fs = std::filesystem;

struct CommandResult {
  int status = -1;
  std::string output;
};

CommandResult run_command(const std::string& command) {
  CommandResult r;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) r.output.append(buf, n);
  const int raw = pclose(pipe);
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return r;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct TempDir {
  fs::path path;
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "cf_gpu_scripts_XXXXXX").string();
    path = mkdtemp(templ.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

const fs::path kRoot = CF_SOURCE_DIR;

// A value of the summary's fixed grid: [model][bN][kv] (then the leaf's key, if any).
const json::Value& cell(const json::Value& table, const char* model, const char* batch, const char* kv) {
  return table.at(model).at(batch).at(kv);
}

TEST(GpuFirst, DryRunFailsEveryStepAtOnceAndWritesTheSummary) {
  TempDir t;
  fs::create_directories(t.path / "bin");
  {
    std::ofstream smi(t.path / "bin" / "nvidia-smi");
    smi << "#!/bin/sh\nexit 9\n";
  }
  fs::permissions(t.path / "bin" / "nvidia-smi", fs::perms::owner_all);
  const std::string env = "PATH='" + (t.path / "bin").string() + ":'\"$PATH\" OUT='" + (t.path / "out").string() +
                          "' CF_GPU_WORK='" + (t.path / "work").string() + "'";
  const CommandResult r = run_command("cd '" + kRoot.string() + "' && " + env + " timeout 120 bash bench/gpu_first.sh");
  EXPECT_EQ(r.status, 1) << r.output;  // steps failed
  EXPECT_NE(r.output.find("---- facts: ok"), std::string::npos) << r.output;
  for (const char* step : {"configure", "build", "smoke", "attention", "e2e", "tests", "memcheck", "deepseek", "peer-mla",
                           "deepseek-tests", "rest-ffn"})
    EXPECT_NE(r.output.find(std::string("---- ") + step + ": failed (no CUDA GPU (nvidia-smi lists no GPU))"),
              std::string::npos)
        << step << "\n" << r.output;
  std::vector<fs::path> summaries;
  for (const auto& e : fs::directory_iterator(t.path / "out"))
    if (e.path().string().ends_with("-nogpu-summary.json")) summaries.push_back(e.path());
  ASSERT_EQ(summaries.size(), 1u) << r.output;
  const json::Value s = json::parse(read_file(summaries[0]));
  EXPECT_EQ(s.at("schema").as_string(), "clusterfusion-gpu-summary/1");
  EXPECT_EQ(s.at("device").as_string(), "nogpu");
  EXPECT_TRUE(cell(s.at("attention_us"), "llama2-7b", "b1", "1024").at("ours").is_null());
  EXPECT_TRUE(cell(s.at("tpot_ms"), "llama3-8b", "b16", "16384").at("cuda-unfused").is_null());
  EXPECT_TRUE(cell(s.at("peer").at("tpot_ms"), "llama2-7b", "b4", "4096").is_null());
  EXPECT_TRUE(s.at("deepseek_us").at("mla").at("b16").at("16384").at("ours").is_null());
  EXPECT_TRUE(s.at("deepseek_us").at("moe").at("b1").at("cuda-unfused").is_null());
  EXPECT_TRUE(s.at("read_gb_s").is_null());
  EXPECT_TRUE(s.at("tests").at("failed").is_null());
  EXPECT_TRUE(s.at("plans").at("attention").at("llama2-7b").at("b1").is_null());
  EXPECT_NE(s.at("sanitizers").at("racecheck").as_string().find("no CUDA GPU"), std::string::npos);
  EXPECT_GE(s.at("steps").as_array().size(), 10u);
  EXPECT_TRUE(fs::exists(t.path / "out" / "gpu_first.txt"));
  EXPECT_TRUE(fs::exists(t.path / "out" / "extras.tar.gz"));
}

// The summary of the first GPU run's committed logs (bench/results/2026-11-26-b4022ab-h100-*.json): the numbers
// that run printed, in the schema's places.
TEST(GpuSummary, ReadsTheFirstRunsLogs) {
  TempDir t;
  const fs::path work = t.path / "work", out = t.path / "out";
  fs::create_directories(work / "peer_attn");
  fs::create_directories(out);
  const fs::path results = kRoot / "bench" / "results";
  fs::copy_file(results / "2026-11-26-b4022ab-h100-bench.json", out / "attention.json");
  fs::copy_file(results / "2026-11-26-b4022ab-h100-peer.json", work / "peer_attn" / "peer.json");
  fs::copy_file(results / "2026-11-26-b4022ab-h100-bench_ffn.json", work / "ffn.json");
  {
    std::ofstream steps(work / "steps.tsv");
    steps << "memcheck\tfailed\t12\texit 99; 12 s\n"
          << "racecheck\tok\t30\t30 s\n"
          << "synccheck\ttimeout\t90\tkilled after 90 s\n";
  }
  const CommandResult r = run_command("python3 '" + (kRoot / "bench" / "gpu_summary.py").string() + "' --work '" +
                                      work.string() + "' --out '" + out.string() + "' --name s.json");
  ASSERT_EQ(r.status, 0) << r.output;
  const json::Value s = json::parse(read_file(out / "s.json"));
  const json::Value& a = cell(s.at("attention_us"), "llama2-7b", "b1", "1024");
  EXPECT_DOUBLE_EQ(a.at("ours").as_number(), 172.61);  // the run's fused row
  EXPECT_DOUBLE_EQ(a.at("cuda-unfused").as_number(), 90.25);
  EXPECT_DOUBLE_EQ(cell(s.at("attention_us"), "llama3-8b", "b16", "16384").at("cuda-unfused").as_number(), 763.52);
  EXPECT_DOUBLE_EQ(cell(s.at("peer").at("attention_us"), "llama2-7b", "b1", "1024").as_number(), 99.19);  // fastest
  EXPECT_DOUBLE_EQ(s.at("read_gb_s").as_number(), 2903.8);
  EXPECT_EQ(s.at("sanitizers").at("memcheck").as_string(), "errors found");
  EXPECT_EQ(s.at("sanitizers").at("racecheck").as_string(), "clean");
  EXPECT_EQ(s.at("sanitizers").at("synccheck").as_string(), "timeout: killed after 90 s");
  EXPECT_TRUE(fs::exists(out / "peer.json"));
}

// deepseek.json (cf_bench_deepseek_blocks' rows, as the deepseek step writes them): the fp16 rows that ran land in
// deepseek_us; bf16, failed and malformed rows are left out; an unreadable file leaves every cell null.
TEST(GpuSummary, ReadsTheDeepseekBlockRows) {
  TempDir t;
  const fs::path work = t.path / "work", out = t.path / "out";
  fs::create_directories(work);
  fs::create_directories(out);
  {
    std::ofstream ds(out / "deepseek.json");
    ds << R"({"settings": {}, "rows": [
      {"block": "mla", "dtype": "fp16", "batch": 1, "kv_len": 4096, "impl": "fused", "status": "ok", "us_median": 41.237},
      {"block": "mla", "dtype": "fp16", "batch": 1, "kv_len": 4096, "impl": "cuda-unfused", "status": "ok",
       "us_median": 88.5},
      {"block": "mla", "dtype": "bf16", "batch": 16, "kv_len": 1024, "impl": "fused", "status": "ok", "us_median": 7},
      {"block": "moe", "dtype": "fp16", "batch": 16, "kv_len": 0, "impl": "fused", "status": "ok", "us_median": 120.004},
      {"block": "moe", "dtype": "fp16", "batch": 1, "kv_len": 0, "impl": "cuda-unfused", "status": "failed",
       "message": "x"},
      {"block": "moe", "dtype": "fp16", "batch": 1, "kv_len": 0, "impl": "fused", "status": "ok", "us_median": "fast"},
      "not a row"]})";
  }
  const std::string command = "python3 '" + (kRoot / "bench" / "gpu_summary.py").string() + "' --work '" +
                              work.string() + "' --out '" + out.string() + "' --name s.json --print";
  const CommandResult r = run_command(command);
  ASSERT_EQ(r.status, 0) << r.output;
  const json::Value s = json::parse(read_file(out / "s.json"));
  const json::Value& mla = s.at("deepseek_us").at("mla");
  const json::Value& moe = s.at("deepseek_us").at("moe");
  EXPECT_DOUBLE_EQ(mla.at("b1").at("4096").at("ours").as_number(), 41.24);
  EXPECT_DOUBLE_EQ(mla.at("b1").at("4096").at("cuda-unfused").as_number(), 88.5);
  EXPECT_TRUE(mla.at("b16").at("1024").at("ours").is_null());  // bf16
  EXPECT_DOUBLE_EQ(moe.at("b16").at("ours").as_number(), 120.0);
  EXPECT_TRUE(moe.at("b1").at("cuda-unfused").is_null());  // failed
  EXPECT_TRUE(moe.at("b1").at("ours").is_null());          // no number
  EXPECT_NE(r.output.find("mla b1 kv4096"), std::string::npos) << r.output;

  std::ofstream(out / "deepseek.json") << "{ truncated";
  ASSERT_EQ(run_command(command).status, 0);
  const json::Value again = json::parse(read_file(out / "s.json"));
  EXPECT_TRUE(again.at("deepseek_us").at("mla").at("b1").at("4096").at("ours").is_null());
}

}  // namespace
}  // namespace cf::test
