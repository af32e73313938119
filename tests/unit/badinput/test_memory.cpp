// Memory stays proportional to the input: each hostile input is loaded in a child process whose address space is
// capped (RLIMIT_AS) at what it holds now plus a budget of 48 MB + 64 bytes per input byte. A loader that sizes
// anything from a count in the file instead of from the bytes present dies of std::bad_alloc there and fails the
// test. (AddressSanitizer reserves terabytes of shadow address space, so sanitizer builds skip this.)
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <new>

#include "badinput_util.hpp"
#include "clusterfusion/formats/gguf.hpp"
#include "clusterfusion/model/config.hpp"
#include "clusterfusion/formats/safetensors.hpp"
#include "clusterfusion/tokenizer/tokenizer.hpp"
#include "gguf_writer.hpp"
#include "safetensors_writer.hpp"

namespace {

size_t address_space_in_use() {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0;
  statm >> pages;
  return pages * size_t(::sysconf(_SC_PAGESIZE));
}

enum ChildExit { kRefusedOrAccepted = 0, kOutOfMemory = 3, kOtherException = 4 };

// Runs fn in a child limited to the current address space + budget; returns the child's exit code (or 128 + signal).
int run_limited(const std::function<void()>& fn, size_t budget) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const size_t limit = address_space_in_use() + budget;
    const rlimit r{limit, limit};
    ::setrlimit(RLIMIT_AS, &r);
    int code = kRefusedOrAccepted;
    try {
      fn();
    } catch (const cf::InputError&) {
    } catch (const std::bad_alloc&) {
      code = kOutOfMemory;
    } catch (...) {
      code = kOtherException;
    }
    std::_Exit(code);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

struct Hostile {
  std::string name;
  std::vector<uint8_t> bytes;
  std::function<void(const std::vector<uint8_t>&)> load;
};

std::string text_of(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

std::vector<Hostile> hostile_inputs() {
  using cf::test::GgufTypeCode;
  std::vector<Hostile> out;
  auto gguf_load = [](const std::vector<uint8_t>& b) {
    const auto f = cf::GgufFile::from_memory("h.gguf", b.data(), b.size());
    for (const auto& kv : f.metadata()) (void)kv.second.display();
    (void)cf::tokenizer_spec_from_gguf(f);
  };
  auto tokenizer_json_load = [](const std::vector<uint8_t>& b) {
    (void)cf::Tokenizer::create(cf::tokenizer_spec_from_hf_json_text(text_of(b), "h.json"));
  };
  // A token id near the vocabulary cap in a 100-byte tokenizer.json (sized 2^21 strings before the fix: 72 MB).
  out.push_back({"tokenizer.json id 2^21-1",
                 cf::badinput::bytes_of(R"({"model":{"type":"BPE","vocab":{"a":2097151},"merges":[]},"pre_tokenizer":{"type":"ByteLevel"}})"),
                 tokenizer_json_load});
  // The densest JSON the density check lets through: 1M empty arrays in 3 MB.
  {
    std::string t = "[";
    for (int i = 0; i < 1000000; ++i) t += "[],";
    out.push_back({"tokenizer.json of 1M empty arrays", cf::badinput::bytes_of(t + "[]]"), tokenizer_json_load});
  }
  // Counts that claim more than the file holds.
  {
    cf::test::GgufWriter w;
    w.add_string("tokenizer.ggml.model", "gpt2");
    std::vector<uint8_t> v;
    cf::test::put<uint32_t>(v, uint32_t(GgufTypeCode::String));
    cf::test::put<uint64_t>(v, uint64_t(1) << 40);
    w.add_raw("tokenizer.ggml.tokens", GgufTypeCode::Array, v);
    out.push_back({"GGUF string array claiming 2^40 items", w.build(), gguf_load});
  }
  {
    cf::test::GgufWriter w;
    w.kv_count_override = uint64_t(1) << 50;
    w.tensor_count_override = uint64_t(1) << 50;
    out.push_back({"GGUF kv_count 2^50", w.build(), gguf_load});
  }
  // 2^20 nested arrays (the cap) of 12 bytes each, and 1M empty strings: real allocations, proportional to the file.
  {
    cf::test::GgufWriter w;
    std::vector<uint8_t> v;
    cf::test::put<uint32_t>(v, uint32_t(GgufTypeCode::Array));
    cf::test::put<uint64_t>(v, uint64_t(1) << 20);
    for (int i = 0; i < (1 << 20); ++i) {
      cf::test::put<uint32_t>(v, uint32_t(GgufTypeCode::U8));
      cf::test::put<uint64_t>(v, 0);
    }
    w.add_raw("nested", GgufTypeCode::Array, v);
    out.push_back({"GGUF 2^20 nested arrays", w.build(), gguf_load});
  }
  {
    cf::test::GgufWriter w;
    w.add_string("tokenizer.ggml.model", "gpt2");
    w.add_string_array("tokenizer.ggml.tokens", std::vector<std::string>(1 << 20));
    out.push_back({"GGUF 1M empty tokens", w.build(), gguf_load});
  }
  // tokenizer.model: a piece count far beyond the cap, each piece 2 bytes.
  {
    std::string proto;
    for (int i = 0; i < (1 << 21) + 5; ++i) proto += std::string("\x0a\x00", 2);
    out.push_back({"tokenizer.model with 2^21+5 pieces", cf::badinput::bytes_of(proto), [](const std::vector<uint8_t>& b) {
                     (void)cf::tokenizer_spec_from_sentencepiece_bytes(text_of(b), "h.model");
                   }});
  }
  // safetensors: a 16 MB header of small tensors (the header cap), and shapes claiming 2^62 elements.
  {
    std::string h = "{";
    for (int i = 0; h.size() < (size_t(15) << 20); ++i)
      h += "\"t" + std::to_string(i) + "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,0]},";
    h += "\"z\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}}";
    out.push_back({"safetensors 15 MB header", cf::test::safetensors_bytes({}, h), [](const std::vector<uint8_t>& b) {
                     (void)cf::SafetensorsFile::from_memory("h.safetensors", b.data(), b.size());
                   }});
  }
  return out;
}

TEST(Memory, HostileInputsStayWithinBudget) {
#if defined(CF_SANITIZE) || defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "RLIMIT_AS cannot be used with AddressSanitizer's shadow memory";
#endif
  for (const auto& h : hostile_inputs()) {
    const size_t budget = (size_t(48) << 20) + 64 * h.bytes.size();
    const int code = run_limited([&] { h.load(h.bytes); }, budget);
    EXPECT_EQ(code, kRefusedOrAccepted) << h.name << " (" << h.bytes.size() << " bytes, budget " << (budget >> 20)
                                        << " MB): " << (code == kOutOfMemory ? "out of memory" : "crashed or threw");
  }
}

// The guard itself works: an allocation far over the budget is seen as out of memory.
TEST(Memory, BudgetIsEnforced) {
#if defined(CF_SANITIZE) || defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "RLIMIT_AS cannot be used with AddressSanitizer's shadow memory";
#endif
  EXPECT_EQ(run_limited([] { std::vector<char> v(size_t(512) << 20, 1); }, size_t(64) << 20), kOutOfMemory);
}

}  // namespace
