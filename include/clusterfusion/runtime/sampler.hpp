// Token sampling: greedy, temperature, top-k, top-p, min-p, repetition penalty over a window of recent tokens.
// Reproducible: the same seed and inputs give the same tokens on every platform (own RNG, own sampling code).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "clusterfusion/common/error.hpp"
#include "clusterfusion/runtime/rng.hpp"

namespace cf {

// A penalty beyond these only multiplies logits towards overflow (1e-38 made them Inf and the sample garbage).
inline constexpr float kMinRepeatPenalty = 0.01f, kMaxRepeatPenalty = 100.0f;

struct SamplerConfig {
  float temperature = 0.0f;    // <= 0: greedy (argmax after the repetition penalty)
  int top_k = 0;               // keep the k most likely tokens; 0 = off
  float top_p = 1.0f;          // keep the smallest set whose probability reaches top_p; 1 = off
  float min_p = 0.0f;          // drop tokens below min_p * p(most likely); 0 = off
  float repeat_penalty = 1.0f; // > 1 discourages tokens seen in the window; 1 = off; within [1/100, 100]
  int repeat_window = 64;      // how many recent tokens the penalty looks at
  uint64_t seed = 0;

  // Throws cf::InputError naming the field when a value is out of range.
  void validate() const;
  std::string summary() const;
};

class Sampler {
 public:
  explicit Sampler(const SamplerConfig& config);
  const SamplerConfig& config() const { return config_; }

  // Picks the next token from one row of logits; `recent` are the tokens so far (the last repeat_window count).
  int32_t sample(std::span<const float> logits, std::span<const int32_t> recent);

  // The candidate distribution before the random draw (tokens and probabilities, most likely first), exposed so
  // tests can check each filter. Empty for greedy.
  struct Candidate {
    int32_t token;
    float prob;
  };
  std::vector<Candidate> distribution(std::span<const float> logits, std::span<const int32_t> recent) const;

 private:
  void penalize(std::vector<float>& logits, std::span<const int32_t> recent) const;
  SamplerConfig config_;
  Rng rng_;
};

}  // namespace cf
