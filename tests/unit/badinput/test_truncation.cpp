// Truncation at every section boundary of every file a Hugging Face model folder holds, counts in a GGUF header that
// are off by one or two, and a tensor found in two shards: each is a clean refusal naming the file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "badinput_util.hpp"
#include "clusterfusion/formats/model_file.hpp"
#include "clusterfusion/formats/safetensors.hpp"
#include "fuzz_seeds.hpp"
#include "gguf_writer.hpp"
#include "safetensors_writer.hpp"
#include "test_util.hpp"

namespace {
namespace fs = std::filesystem;
using cf::badinput::expect_clean_refusal;

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Cut points of a JSON text: the start, the end, and just after every structural character (sampled evenly when
// there are many), so each nesting level and each kind of token is cut somewhere.
std::vector<size_t> json_cuts(const std::string& text, size_t max_cuts = 60) {
  std::vector<size_t> all;
  for (size_t i = 0; i < text.size(); ++i)
    if (std::string_view("{}[],:\"").find(text[i]) != std::string_view::npos) all.push_back(i + 1);
  std::set<size_t> cuts{0, 1, text.size() - 1};
  for (size_t k = 0; k < max_cuts && !all.empty(); ++k) cuts.insert(all[k * all.size() / max_cuts]);
  cuts.erase(text.size());
  return {cuts.begin(), cuts.end()};
}

// Cut points of a safetensors file: inside and at the end of the length field, inside the header, at the start of
// the data section and at the first and last byte of every tensor.
std::vector<size_t> safetensors_cuts(const fs::path& p) {
  const cf::SafetensorsFile f(p.string());
  const size_t size = fs::file_size(p);
  std::set<size_t> cuts{0, 4, 7, 8, 9, size_t(f.data_offset()) / 2, size_t(f.data_offset()) - 1, size_t(f.data_offset())};
  for (const auto& t : f.tensors()) {
    cuts.insert(size_t(f.data_offset() + t.begin));
    if (t.end > t.begin) cuts.insert(size_t(f.data_offset() + t.end - 1));
  }
  cuts.erase(size);
  return {cuts.begin(), cuts.end()};
}

void truncate_to(const fs::path& p, const std::string& original, size_t n) {
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(original.data(), std::streamsize(n));
}

TEST(Truncation, EveryFileOfAHuggingFaceFolder) {
  cf::test::TempDir dir;
  for (const bool sharded : {false, true}) {
    const fs::path d = dir.path() / (sharded ? "sharded" : "single");
    cf::test::TinyHfOptions o;
    o.sharded = sharded;
    cf::test::write_tiny_hf_model(d, "tiny_smollm", o);
    ASSERT_NO_THROW(cf::open_model_file(d.string()));
    size_t cases = 0;
    for (const auto& entry : fs::directory_iterator(d)) {
      const fs::path p = entry.path();
      const std::string original = read(p);
      const bool safetensors = p.extension() == ".safetensors";
      for (const size_t n : safetensors ? safetensors_cuts(p) : json_cuts(original)) {
        SCOPED_TRACE(p.filename().string() + " cut to " + std::to_string(n) + " of " + std::to_string(original.size()));
        truncate_to(p, original, n);
        expect_clean_refusal([&] { cf::open_model_file(d.string()); }, p.filename().string());
        ++cases;
      }
      truncate_to(p, original, original.size());
    }
    EXPECT_GT(cases, 150u);
    ASSERT_NO_THROW(cf::open_model_file(d.string()));  // restored
  }
}

// kv_count and tensor_count off by one or two in either direction: the parser reads the neighbouring section as the
// wrong thing, which must end in a refusal (never in a model that silently lacks or invents something).
TEST(Truncation, GgufCountsThatLie) {
  cf::test::TempDir dir;
  const auto good = cf::fuzz::micro_model_gguf();
  const std::string path = dir.file("lie.gguf");
  for (const size_t field : {size_t(8), size_t(16)}) {  // tensor_count, kv_count
    uint64_t count;
    std::memcpy(&count, good.data() + field, 8);
    for (const int delta : {-2, -1, 1, 2}) {
      SCOPED_TRACE((field == 8 ? "tensor_count " : "kv_count ") + std::to_string(delta));
      auto bad = good;
      cf::test::patch<uint64_t>(bad, field, count + uint64_t(int64_t(delta)));
      cf::test::write_file(path, bad);
      expect_clean_refusal([&] { cf::open_model_file(path); }, path);
    }
  }
}

// Every section boundary of a complete GGUF model (the engine suite cuts its tiny model the same way; this one has
// every tensor type, so every block size is cut) plus a file cut inside each tensor's data.
TEST(Truncation, GgufModelInsideEveryTensor) {
  cf::test::TempDir dir;
  const auto good = cf::fuzz::micro_model_gguf("qwen2");
  const auto f = cf::GgufFile::from_memory("m", good.data(), good.size());
  const std::string path = dir.file("cut.gguf");
  for (const auto& t : f.tensors()) {
    const size_t begin = size_t(t.data - good.data());
    for (const size_t n : {begin, begin + size_t(t.nbytes) / 2, begin + size_t(t.nbytes) - 1}) {
      SCOPED_TRACE(t.name + " cut at " + std::to_string(n));
      cf::test::write_file(path, std::vector<uint8_t>(good.begin(), good.begin() + long(n)));
      expect_clean_refusal([&] { cf::open_model_file(path); }, path);
    }
  }
}

// Without an index, a tensor stored in two shards is ambiguous: refused, naming the second file.
TEST(Truncation, TensorInTwoShards) {
  cf::test::TempDir dir;
  const fs::path d = dir.path() / "m";
  cf::test::TinyHfOptions o;
  o.sharded = true;
  cf::test::write_tiny_hf_model(d, "tiny_smollm", o);
  fs::remove(d / "model.safetensors.index.json");
  ASSERT_NO_THROW(cf::open_model_file(d.string()));
  std::mt19937 rng(1);
  const auto extra = cf::test::safetensors_bytes(
      {{"model.norm.weight", "F32", {64}, cf::test::random_tensor_bytes("F32", 64, rng)}});
  cf::test::write_file((d / "model-00003-of-00003.safetensors").string(), extra);
  const auto msg = expect_clean_refusal([&] { cf::open_model_file(d.string()); }, "model-00003-of-00003.safetensors");
  EXPECT_NE(msg.find("more than one shard"), std::string::npos) << msg;
}

}  // namespace
