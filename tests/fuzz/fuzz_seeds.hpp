// Seed inputs of every fuzz target, built in memory (used by cf_fuzz_seeds and by the regression test, which runs
// every seed through its entry point in the normal unit suite).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace cf::fuzz {

struct Seed {
  std::string target;
  std::string name;
  std::vector<uint8_t> bytes;
};

// Valid inputs of every target. The default model's trimmed metadata is included when the model is installed.
std::vector<Seed> make_seeds();

// A complete, valid one-layer Llama GGUF of a few KB with every supported tensor type (F32, F16, BF16, Q8_0, Q4_0,
// Q4_1). arch "llama" or "qwen2" (q/k/v biases); spm: the tiny SentencePiece vocabulary instead of byte-level BPE.
std::vector<uint8_t> micro_model_gguf(const std::string& arch = "llama", bool spm = false);

// The default model's metadata (vocabulary trimmed to its first `keep_tokens` tokens and the merges among them,
// no tensors), or empty when the model is not installed.
std::vector<uint8_t> default_model_metadata_gguf(size_t keep_tokens = 1024);

}  // namespace cf::fuzz
