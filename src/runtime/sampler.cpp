#include "clusterfusion/runtime/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "clusterfusion/common/error.hpp"

namespace cf {

namespace {
// Most of a softmax's mass sits in its top few hundred tokens: sort those first and fall back to a full sort only
// when top-p needs more.
constexpr size_t kFirstSortSize = 256;

int32_t greedy(std::span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[size_t(best)]) best = int32_t(i);
  return best;
}
}  // namespace

namespace {
std::string number_text(float x) {
  std::ostringstream s;
  s << x;
  return s.str();
}
}  // namespace

void SamplerConfig::validate() const {
  auto fail = [](const std::string& m) { throw InputError(m); };
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) fail("--temp: must be >= 0, got " + std::to_string(temperature));
  if (top_k < 0) fail("--top-k: must be >= 0 (0 = off), got " + std::to_string(top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f)) fail("--top-p: must be in (0, 1], got " + std::to_string(top_p));
  if (!(min_p >= 0.0f && min_p < 1.0f)) fail("--min-p: must be in [0, 1), got " + std::to_string(min_p));
  if (!(repeat_penalty >= kMinRepeatPenalty && repeat_penalty <= kMaxRepeatPenalty))
    fail("--repeat-penalty: must be in [" + number_text(kMinRepeatPenalty) + ", " + number_text(kMaxRepeatPenalty) +
         "] (1 = off), got " + number_text(repeat_penalty));
  if (repeat_window < 0) fail("--repeat-window: must be >= 0, got " + std::to_string(repeat_window));
}

std::string SamplerConfig::summary() const {
  std::ostringstream s;
  if (temperature <= 0.0f) {
    s << "greedy";
  } else {
    s << "temp " << temperature << ", top-k " << top_k << ", top-p " << top_p << ", min-p " << min_p << ", seed " << seed;
  }
  if (repeat_penalty != 1.0f) s << ", repeat-penalty " << repeat_penalty << " over " << repeat_window;
  return s.str();
}

Sampler::Sampler(const SamplerConfig& config) : config_(config), rng_(config.seed) { config_.validate(); }

void Sampler::penalize(std::vector<float>& logits, std::span<const int32_t> recent) const {
  if (config_.repeat_penalty == 1.0f || config_.repeat_window == 0) return;
  const size_t window = std::min(recent.size(), size_t(config_.repeat_window));
  std::vector<int32_t> seen(recent.end() - long(window), recent.end());
  std::sort(seen.begin(), seen.end());
  seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
  for (int32_t t : seen) {
    if (t < 0 || size_t(t) >= logits.size()) continue;
    float& l = logits[size_t(t)];
    // Always towards "less likely"; in double and clamped, so that a logit near the float range stays finite.
    const double penalized = l > 0.0f ? double(l) / config_.repeat_penalty : double(l) * config_.repeat_penalty;
    l = float(std::clamp(penalized, -double(std::numeric_limits<float>::max()), double(std::numeric_limits<float>::max())));
  }
}

std::vector<Sampler::Candidate> Sampler::distribution(std::span<const float> logits_in,
                                                      std::span<const int32_t> recent) const {
  if (config_.temperature <= 0.0f) return {};
  std::vector<float> logits(logits_in.begin(), logits_in.end());
  penalize(logits, recent);
  const size_t n = logits.size();
  std::vector<Candidate> c(n);
  for (size_t i = 0; i < n; ++i) c[i] = {int32_t(i), logits[i]};  // prob holds the logit until softmax
  auto more_likely = [](const Candidate& a, const Candidate& b) {
    return a.prob > b.prob || (a.prob == b.prob && a.token < b.token);
  };
  // Sort the head (the top-k, or the first kFirstSortSize); keep the rest unsorted behind it for now.
  size_t sorted = config_.top_k > 0 ? std::min(n, size_t(config_.top_k)) : std::min(n, kFirstSortSize);
  std::partial_sort(c.begin(), c.begin() + long(sorted), c.end(), more_likely);
  if (config_.top_k > 0) c.resize(sorted);

  // Softmax with temperature over everything still a candidate (the max is c[0]).
  const float max_logit = c[0].prob;
  double total = 0.0;
  for (auto& x : c) {
    x.prob = std::exp((x.prob - max_logit) / config_.temperature);
    total += x.prob;
  }
  for (auto& x : c) x.prob = float(x.prob / total);

  if (config_.top_p < 1.0f) {
    auto cut_at = [&](size_t limit) -> size_t {  // first prefix of the sorted head reaching top_p, or 0
      double cum = 0.0;
      for (size_t i = 0; i < limit; ++i) {
        cum += c[i].prob;
        if (cum >= config_.top_p) return i + 1;
      }
      return 0;
    };
    size_t keep = cut_at(sorted);
    if (keep == 0 && sorted < c.size()) {
      std::sort(c.begin(), c.end(), more_likely);
      sorted = c.size();
      keep = cut_at(sorted);
    }
    if (keep == 0) keep = c.size();  // rounding left the total just under top_p: keep everything
    c.resize(keep);
    sorted = std::min(sorted, keep);
  }
  if (config_.min_p > 0.0f) {
    const float threshold = config_.min_p * c[0].prob;
    c.erase(std::remove_if(c.begin() + 1, c.end(), [&](const Candidate& x) { return x.prob < threshold; }), c.end());
  }
  if (sorted < c.size()) std::sort(c.begin(), c.end(), more_likely);
  // Renormalise what is left.
  double kept = 0.0;
  for (const auto& x : c) kept += x.prob;
  for (auto& x : c) x.prob = float(x.prob / kept);
  return c;
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> recent) {
  CF_CHECK(!logits.empty(), "sampler: empty logits");
  if (config_.temperature <= 0.0f) {
    if (config_.repeat_penalty == 1.0f) return greedy(logits);
    std::vector<float> penalized(logits.begin(), logits.end());
    penalize(penalized, recent);
    return greedy(penalized);
  }
  const std::vector<Candidate> c = distribution(logits, recent);
  const double u = rng_.uniform_double();
  double cum = 0.0;
  for (const auto& x : c) {
    cum += x.prob;
    if (u < cum) return x.token;
  }
  return c.back().token;
}

}  // namespace cf
