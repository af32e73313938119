// Every input a fuzzer once crashed on (tests/fuzz/regressions/<target>/) and every seed goes through the same entry
// point as the fuzz binary: they must return normally (cf::InputError is caught inside; anything else fails here).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "clusterfusion/formats/gguf.hpp"
#include "clusterfusion/model/config.hpp"
#include "clusterfusion/formats/model_file.hpp"
#include "fuzz_seeds.hpp"
#include "fuzz_targets.hpp"

namespace {
namespace fs = std::filesystem;

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string s = ss.str();
  return {s.begin(), s.end()};
}

void run(const cf::fuzz::Target& t, const std::vector<uint8_t>& bytes, const std::string& what) {
  SCOPED_TRACE(std::string(t.name) + ": " + what);
  try {
    t.entry(bytes.data(), bytes.size());
  } catch (const std::exception& e) {
    ADD_FAILURE() << "escaped the entry point: " << e.what();
  }
}

TEST(FuzzRegressions, EveryRecordedInputPasses) {
  const fs::path root = fs::path(CF_SOURCE_DIR) / "tests/fuzz/regressions";
  size_t files = 0;
  for (const auto& t : cf::fuzz::targets()) {
    const fs::path dir = root / std::string(t.name);
    if (!fs::exists(dir)) continue;
    std::vector<fs::path> inputs;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file() && e.path().filename() != "README.md") inputs.push_back(e.path());
    std::sort(inputs.begin(), inputs.end());
    for (const auto& p : inputs) {
      run(t, read_bytes(p), p.filename().string());
      ++files;
    }
  }
  std::printf("[ info ] %zu recorded inputs\n", files);
  for (const auto& e : fs::directory_iterator(root)) {
    if (e.is_directory()) {
      EXPECT_NE(cf::fuzz::find_target(e.path().filename().string()), nullptr)
          << "regressions/" << e.path().filename().string() << " names no fuzz target";
    }
  }
}

TEST(FuzzRegressions, EverySeedPasses) {
  const auto seeds = cf::fuzz::make_seeds();
  for (const auto& t : cf::fuzz::targets()) {
    size_t n = 0;
    for (const auto& s : seeds)
      if (s.target == t.name) {
        run(t, s.bytes, s.name);
        ++n;
      }
    EXPECT_GT(n, 0u) << "no seeds for " << t.name;
  }
}

// The micro models are complete, valid models (so the fuzzer starts from inputs that reach every stage).
TEST(FuzzRegressions, MicroModelsAreValidModels) {
  for (const auto& [arch, spm] : {std::pair{"llama", false}, {"qwen2", false}, {"llama", true}}) {
    const auto bytes = cf::fuzz::micro_model_gguf(arch, spm);
    const auto f = cf::GgufFile::from_memory("micro.gguf", bytes.data(), bytes.size());
    const auto c = cf::config_from_gguf(f);
    EXPECT_EQ(c.arch, arch);
    EXPECT_EQ(c.n_layers, 1);
    const auto tok = cf::Tokenizer::create(cf::tokenizer_spec_from_gguf(f));
    EXPECT_EQ(tok->decode(tok->encode("hello world", false, false)), "hello world");
    const fs::path path = fs::temp_directory_path() / ("cf_micro_" + std::to_string(::getpid()) + ".gguf");
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    EXPECT_NO_THROW({
      const auto m = cf::open_model_file(path.string());
      cf::check_weights_finite(*m);
    });
    fs::remove(path);
  }
}

}  // namespace
