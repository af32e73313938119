// Reference MoE FFN (reference/moe.hpp) against the float64 numpy oracle's recorded layers (reference_cases.json):
// router probabilities, chosen experts (greedy and group-limited), their weights (renormalised or scaled), the output;
// that only the chosen experts are read; the shape check.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "clusterfusion/reference/moe.hpp"
#include "deepseek_cases.hpp"

namespace {

using cf::test::deepseek_cases;
using cf::test::expect_close;
using cf::test::numbers;

TEST(RefMoe, RoutingMatchesTheOracle) {
  for (const auto& c : deepseek_cases().at("moe").as_array()) {
    const std::string name = c.at("name").as_string();
    const auto s = cf::test::moe_shape(c);
    ASSERT_EQ(s.check(), "") << name;
    const cf::test::MoeCaseWeights<float> w(c);
    const auto x = cf::test::grid_tensor<float>(c.at("x"));
    const auto& e = c.at("expected");
    const auto probs = numbers(e.at("probs"));
    const auto weights = numbers(e.at("weights"));
    const auto& ids = e.at("ids").as_array();
    for (size_t t = 0; t < ids.size(); ++t) {
      std::vector<float> p(size_t(s.n_experts));
      cf::ref::matvec(w.router.data(), x.data() + t * size_t(s.hidden), p.data(), s.n_experts, s.hidden);
      cf::ref::softmax(p.data(), p.data(), s.n_experts);
      expect_close(p, std::vector<double>(probs.begin() + long(t) * s.n_experts,
                                          probs.begin() + long(t + 1) * s.n_experts), 0.0, 1e-6, name + " probs");
      const auto r = cf::ref::moe_route(x.data() + t * size_t(s.hidden), w.router.data(), s);
      ASSERT_EQ(r.ids.size(), size_t(s.top_k));
      for (int k = 0; k < s.top_k; ++k) {
        EXPECT_EQ(r.ids[size_t(k)], ids[t].as_array()[size_t(k)].as_int()) << name << " token " << t << " rank " << k;
        EXPECT_NEAR(r.weights[size_t(k)], weights[t * size_t(s.top_k) + size_t(k)], 2e-6 * s.routed_scaling_factor)
            << name << " token " << t << " rank " << k;
      }
    }
  }
}

TEST(RefMoe, OutputMatchesTheOracle) {
  for (const auto& c : deepseek_cases().at("moe").as_array()) {
    const auto s = cf::test::moe_shape(c);
    const cf::test::MoeCaseWeights<float> w(c);
    const auto x = cf::test::grid_tensor<float>(c.at("x"));
    std::vector<float> out(x.size());
    for (size_t t = 0; t * size_t(s.hidden) < x.size(); ++t)
      cf::ref::moe_ffn(x.data() + t * size_t(s.hidden), w.view(), s, out.data() + t * size_t(s.hidden));
    expect_close(out, numbers(c.at("expected").at("out")), 0.0, 3e-6, c.at("name").as_string());
  }
}

TEST(RefMoe, WeightStorageTypeDoesNotChangeTheMath) {
  for (const auto& c : deepseek_cases().at("moe").as_array()) {
    const auto s = cf::test::moe_shape(c);
    const auto x = cf::test::grid_tensor<float>(c.at("x"));
    const auto run = [&](const auto& w) {
      std::vector<float> out(x.size());
      for (size_t t = 0; t * size_t(s.hidden) < x.size(); ++t)
        cf::ref::moe_ffn(x.data() + t * size_t(s.hidden), w.view(), s, out.data() + t * size_t(s.hidden));
      return out;
    };
    const auto f = run(cf::test::MoeCaseWeights<float>(c));
    EXPECT_EQ(run(cf::test::MoeCaseWeights<cf::half>(c)), f);
    EXPECT_EQ(run(cf::test::MoeCaseWeights<cf::bfloat16>(c)), f);
  }
}

// Experts that are not chosen are never read: poisoning them with NaN changes nothing.
TEST(RefMoe, ReadsOnlyTheChosenExperts) {
  for (const auto& c : deepseek_cases().at("moe").as_array()) {
    const auto s = cf::test::moe_shape(c);
    const auto x = cf::test::grid_tensor<float>(c.at("x"));
    const cf::test::MoeCaseWeights<float> clean(c);
    std::vector<float> want(size_t(s.hidden)), got(size_t(s.hidden));
    const auto r = cf::ref::moe_ffn(x.data(), clean.view(), s, want.data());
    std::vector<float> poison(size_t(s.hidden) * s.expert_ffn, std::numeric_limits<float>::quiet_NaN());
    auto experts = clean.experts;
    for (int e = 0; e < s.n_experts; ++e)
      if (std::find(r.ids.begin(), r.ids.end(), e) == r.ids.end()) experts[size_t(e)] = {poison.data(), poison.data(), poison.data()};
    cf::ref::MoeWeights<float> w = clean.view();
    w.experts = experts.data();
    cf::ref::moe_ffn(x.data(), w, s, got.data());
    EXPECT_EQ(got, want) << c.at("name").as_string();
  }
}

// Six experts, two chosen: enough to see ties, renormalisation and groups.
cf::ref::MoeShape six_experts_top2() {
  cf::ref::MoeShape s;
  s.hidden = 1;
  s.n_experts = 6;
  s.expert_ffn = 1;
  s.top_k = 2;
  return s;
}

TEST(RefMoe, SelectionRules) {
  auto s = six_experts_top2();
  const float p[6] = {0.1f, 0.3f, 0.05f, 0.3f, 0.2f, 0.05f};
  auto r = cf::ref::select_experts(p, s);
  EXPECT_EQ(r.ids, (std::vector<int>{1, 3}));  // tie: the lower id first
  EXPECT_FLOAT_EQ(r.weights[0], 0.3f);
  s.norm_topk_prob = true;
  s.routed_scaling_factor = 2.0f;  // renormalise, then scale (llama.cpp's / DeepSeek-V3's order)
  r = cf::ref::select_experts(p, s);
  EXPECT_FLOAT_EQ(r.weights[0], 1.0f);
  EXPECT_FLOAT_EQ(r.weights[1], 1.0f);
  // groups {0,1,2} (best 0.3) and {3,4,5} (best 0.3): topk_group 1 keeps the first (stable order on ties)
  s = six_experts_top2();
  s.method = cf::ref::TopkMethod::GroupLimitedGreedy;
  s.n_group = 2;
  s.topk_group = 1;
  const float q[6] = {0.1f, 0.25f, 0.05f, 0.3f, 0.2f, 0.1f};
  r = cf::ref::select_experts(q, s);
  EXPECT_EQ(r.ids, (std::vector<int>{3, 4}));  // the second group holds the best expert; greedy would take 3, 1
}

TEST(RefMoe, ShapeCheck) {
  cf::ref::MoeShape s;
  s.hidden = 16;
  s.n_experts = 8;
  s.top_k = 3;
  s.expert_ffn = 4;
  EXPECT_EQ(s.check(), "");
  auto too_many = s;
  too_many.top_k = 9;
  EXPECT_NE(too_many.check().find("num_experts_per_tok"), std::string::npos);
  auto groups = s;
  groups.method = cf::ref::TopkMethod::GroupLimitedGreedy;
  groups.n_group = 3;
  EXPECT_NE(groups.check().find("n_group"), std::string::npos);
  groups.n_group = 4;
  groups.topk_group = 5;
  EXPECT_NE(groups.check().find("topk_group"), std::string::npos);
  groups.topk_group = 1;  // 2 experts eligible, 3 wanted
  EXPECT_NE(groups.check().find("exceeds"), std::string::npos);
  groups.topk_group = 2;
  EXPECT_EQ(groups.check(), "");
  auto scale = s;
  scale.routed_scaling_factor = 0.0f;
  EXPECT_NE(scale.check().find("routed_scaling_factor"), std::string::npos);
}

}  // namespace
