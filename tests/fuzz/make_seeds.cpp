// Writes the seed corpora of every fuzz target: valid files built with the test writers (tests/unit/formats), the
// small real tokenizers of tests/data/tokenizer, and, when installed, the default model's metadata with its
// vocabulary trimmed. Usage: cf_fuzz_seeds <out_dir>  (creates <out_dir>/<target>/<seed>); cf_fuzz_seeds --list
// prints the targets.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "clusterfusion/common/half.hpp"
#include "clusterfusion/common/json.hpp"
#include "clusterfusion/formats/gguf.hpp"
#include "clusterfusion/tokenizer/tokenizer.hpp"
#include "fuzz_seeds.hpp"
#include "fuzz_targets.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <out_dir> | --list\n", argv[0]);
    return 2;
  }
  if (std::string(argv[1]) == "--list") {
    for (const auto& t : cf::fuzz::targets()) std::printf("%-15s %.*s\n", std::string(t.name).c_str(), int(t.what.size()), t.what.data());
    return 0;
  }
  try {
    const auto seeds = cf::fuzz::make_seeds();
    size_t n = 0;
    for (const auto& s : seeds) {
      const auto dir = std::filesystem::path(argv[1]) / s.target;
      std::filesystem::create_directories(dir);
      std::ofstream out(dir / s.name, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(s.bytes.data()), std::streamsize(s.bytes.size()));
      if (!out) throw std::runtime_error("cannot write " + (dir / s.name).string());
      ++n;
    }
    std::printf("wrote %zu seeds under %s\n", n, argv[1]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cf_fuzz_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
