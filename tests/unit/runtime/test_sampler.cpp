// Sampler properties: greedy is argmax, each filter restricts the support as specified, sampling follows the
// distribution, the same seed reproduces the same tokens, the repetition penalty works within its window.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "clusterfusion/reference/ops.hpp"
#include "clusterfusion/runtime/rng.hpp"
#include "clusterfusion/runtime/sampler.hpp"

namespace {

std::vector<float> random_logits(int n, uint64_t seed, float scale = 4.0f) {
  cf::Rng rng(seed);
  std::vector<float> l(static_cast<size_t>(n));
  for (auto& x : l) x = rng.uniform(-scale, scale);
  return l;
}

TEST(Sampler, GreedyIsArgmax) {
  cf::Sampler s({});
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const auto logits = random_logits(1000, seed);
    EXPECT_EQ(s.sample(logits, {}), cf::ref::argmax(logits.data(), 1000));
  }
}

TEST(Sampler, SameSeedSameTokensOtherSeedOtherTokens) {
  cf::SamplerConfig c;
  c.temperature = 1.0f;
  c.seed = 42;
  const auto logits = random_logits(500, 1, 1.0f);  // flat: many likely tokens
  auto draw = [&](uint64_t seed) {
    c.seed = seed;
    cf::Sampler s(c);
    std::vector<int32_t> out;
    for (int i = 0; i < 50; ++i) out.push_back(s.sample(logits, {}));
    return out;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
}

TEST(Sampler, TopKRestrictsSupportToKMostLikely) {
  cf::SamplerConfig c;
  c.temperature = 1.0f;
  c.top_k = 5;
  const auto logits = random_logits(300, 2, 1.0f);
  std::vector<int> order(300);
  for (int i = 0; i < 300; ++i) order[size_t(i)] = i;
  std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[size_t(a)] > logits[size_t(b)]; });
  const std::set<int32_t> top5(order.begin(), order.begin() + 5);
  cf::Sampler s(c);
  std::set<int32_t> seen;
  for (int i = 0; i < 2000; ++i) seen.insert(s.sample(logits, {}));
  EXPECT_EQ(seen, top5);  // every one of the 5 appears, nothing else does
  const auto d = s.distribution(logits, {});
  ASSERT_EQ(d.size(), 5u);
  double total = 0;
  for (const auto& x : d) total += x.prob;
  EXPECT_NEAR(total, 1.0, 1e-6);
}

TEST(Sampler, TopPKeepsSmallestPrefixReachingP) {
  // Probabilities 0.5, 0.25, 0.125, 0.0625, ...: top-p 0.8 needs the first three (0.875).
  std::vector<float> logits;
  for (int i = 0; i < 10; ++i) logits.push_back(-float(i) * std::log(2.0f));
  cf::SamplerConfig c;
  c.temperature = 1.0f;
  c.top_p = 0.8f;
  cf::Sampler s(c);
  const auto d = s.distribution(logits, {});
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(d[0].token, 0);
  EXPECT_EQ(d[2].token, 2);
  EXPECT_NEAR(d[0].prob, 0.5 / 0.875, 1e-5);
}

TEST(Sampler, TopPBeyondTheFirstSortedBlock) {
  // 1000 nearly equal tokens: top-p 0.9 needs ~900 of them, more than the sampler sorts first.
  auto logits = random_logits(1000, 3, 0.01f);
  cf::SamplerConfig c;
  c.temperature = 1.0f;
  c.top_p = 0.9f;
  const auto d = cf::Sampler(c).distribution(logits, {});
  EXPECT_GT(d.size(), 850u);
  EXPECT_LT(d.size(), 950u);
  for (size_t i = 1; i < d.size(); ++i) EXPECT_GE(d[i - 1].prob, d[i].prob);
}

TEST(Sampler, MinPDropsTokensBelowFractionOfTheBest) {
  const std::vector<float> logits = {0.0f, std::log(0.5f), std::log(0.2f), std::log(0.05f)};
  cf::SamplerConfig c;
  c.temperature = 1.0f;
  c.min_p = 0.1f;  // keeps p >= 0.1 * p_max: relative weights 1, 0.5, 0.2 stay, 0.05 goes
  const auto d = cf::Sampler(c).distribution(logits, {});
  ASSERT_EQ(d.size(), 3u);
  EXPECT_NEAR(d[0].prob, 1.0 / 1.7, 1e-5);
}

TEST(Sampler, TemperatureScalesLogits) {
  const std::vector<float> logits = {0.0f, 1.0f};
  cf::SamplerConfig c;
  c.temperature = 0.5f;
  const auto d = cf::Sampler(c).distribution(logits, {});
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].token, 1);
  EXPECT_NEAR(d[0].prob, 1.0 / (1.0 + std::exp(-2.0)), 1e-6);  // logit difference 1 / T = 2
}

TEST(Sampler, DrawsFollowTheDistribution) {
  const std::vector<float> logits = {std::log(0.6f), std::log(0.3f), std::log(0.1f)};
  cf::SamplerConfig c;
  c.temperature = 1.0f;
  c.seed = 9;
  cf::Sampler s(c);
  std::map<int32_t, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[s.sample(logits, {})];
  EXPECT_NEAR(counts[0] / double(n), 0.6, 0.02);
  EXPECT_NEAR(counts[1] / double(n), 0.3, 0.02);
  EXPECT_NEAR(counts[2] / double(n), 0.1, 0.01);
}

TEST(Sampler, RepetitionPenaltyWithinWindowOnly) {
  const std::vector<float> logits = {2.0f, 1.9f, -1.0f};
  cf::SamplerConfig c;
  c.repeat_penalty = 1.5f;
  c.repeat_window = 2;
  cf::Sampler s(c);  // greedy
  const std::vector<int32_t> recent_has_0 = {0, 2};
  EXPECT_EQ(s.sample(logits, recent_has_0), 1);  // 2.0 / 1.5 < 1.9
  const std::vector<int32_t> zero_outside_window = {0, 2, 2};
  EXPECT_EQ(s.sample(logits, zero_outside_window), 0);
  // Negative logits are pushed down (multiplied), not up.
  cf::SamplerConfig sc;
  sc.temperature = 1.0f;
  sc.repeat_penalty = 2.0f;
  const auto d_pen = cf::Sampler(sc).distribution(logits, std::vector<int32_t>{2});
  const auto d_none = cf::Sampler(sc).distribution(logits, {});
  auto prob_of = [](const auto& d, int32_t t) {
    for (const auto& x : d)
      if (x.token == t) return x.prob;
    return 0.0f;
  };
  EXPECT_LT(prob_of(d_pen, 2), prob_of(d_none, 2));
}

TEST(Sampler, InvalidSettingsAreInputErrors) {
  cf::SamplerConfig c;
  c.top_p = 0.0f;
  EXPECT_THROW(cf::Sampler{c}, cf::InputError);
  c = {};
  c.temperature = -1.0f;
  EXPECT_THROW(cf::Sampler{c}, cf::InputError);
  c = {};
  c.min_p = 1.0f;
  EXPECT_THROW(cf::Sampler{c}, cf::InputError);
  c = {};
  c.top_k = -3;
  EXPECT_THROW(cf::Sampler{c}, cf::InputError);
  c = {};
  c.repeat_penalty = 0.0f;
  EXPECT_THROW(cf::Sampler{c}, cf::InputError);
}

// --repeat-penalty 1e-38 used to be accepted: a seen token's logit divided by it became Inf, the softmax NaN, and every
// seed drew the same last candidate. Penalties are bounded now, and logits near the float range stay finite.
TEST(Sampler, RepeatPenaltyIsBoundedAndHugeLogitsStayFinite) {
  for (const float bad : {1e-38f, 0.0099f, 100.5f, 1e30f}) {
    cf::SamplerConfig c;
    c.repeat_penalty = bad;
    EXPECT_THROW(cf::Sampler{c}, cf::InputError) << bad;
  }
  std::vector<float> logits(64);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = (i % 2 ? 1.0f : -1.0f) * (3e38f / 64.0f) * float(i + 1);
  const std::vector<int32_t> recent = {1, 2, 3, 5, 8, 13, 21, 34, 55};
  for (const float penalty : {cf::kMinRepeatPenalty, cf::kMaxRepeatPenalty}) {
    cf::SamplerConfig c;
    c.temperature = 1e38f;  // logits 1e37 apart differ by e^-0.1: many candidates get a share
    c.top_p = 1.0f;
    c.repeat_penalty = penalty;
    const auto dist = cf::Sampler(c).distribution(logits, recent);
    double total = 0;
    for (const auto& x : dist) {
      EXPECT_TRUE(std::isfinite(x.prob)) << penalty;
      total += x.prob;
    }
    EXPECT_NEAR(total, 1.0, 1e-4) << penalty;
    std::set<int32_t> drawn;
    for (uint64_t seed = 0; seed < 16; ++seed) {
      c.seed = seed;
      drawn.insert(cf::Sampler(c).sample(logits, recent));
    }
    EXPECT_GT(drawn.size(), 4u) << "the seed must matter";
  }
}

TEST(Rng, ReproducibleAndRoughlyUniform) {
  cf::Rng a(5), b(5), c(6);
  EXPECT_EQ(a.next_u64(), b.next_u64());
  EXPECT_NE(a.next_u64(), c.next_u64());
  double sum = 0;
  int buckets[10] = {};
  for (int i = 0; i < 100000; ++i) {
    const float u = a.uniform();
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
    ++buckets[a.below(10)];
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.01);
  for (int k = 0; k < 10; ++k) EXPECT_NEAR(buckets[k], 10000, 500) << k;
}

}  // namespace
